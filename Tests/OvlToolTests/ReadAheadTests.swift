import OvlSystem
import Testing

/// `ReadAhead`: every ticket's value comes back once, whether the thread computed it, is
/// computing it, or has not begun it (then the caller does); discarded jobs are not
/// returned; closing with jobs left stops the thread.
@Suite struct ReadAheadTests {
  @Test func everyTicketGivesItsValue() throws {
    let readAhead = try #require(ReadAhead<Int>())
    defer { readAhead.close() }
    let tickets = (0..<500).map { i in readAhead.push { i * i } }
    // Newest first on the thread, oldest first here: both ends meet in the middle.
    for (i, ticket) in tickets.enumerated() {
      #expect(readAhead.take(ticket) == i * i)
    }
  }

  @Test func discardedAndLeftJobs() throws {
    let readAhead = try #require(ReadAhead<[Int]>())
    var kept: [(Int, ReadAhead<[Int]>.Ticket)] = []
    for i in 0..<200 {
      let ticket = readAhead.push { Array(repeating: i, count: 64) }
      if i % 3 == 0 { readAhead.discard(ticket) } else { kept.append((i, ticket)) }
    }
    for (i, ticket) in kept.prefix(100) {
      #expect(readAhead.take(ticket) == Array(repeating: i, count: 64))
    }
    readAhead.close()  // the rest are never taken
  }
}
