import Glibc

/// One background thread that computes values before the caller asks for them, newest
/// request first: a depth-first walk pushes the subdirectories it will enter (the next one
/// last), and the thread reads the one the walk needs next while the walk checks the dir
/// it is in. `take` returns a value the thread has computed, waits for one it is
/// computing, and computes one the thread has not begun itself, so the caller never waits
/// behind work it does not need yet. The jobs must only read (they run in any order). At
/// most `limit` values wait to be taken (each may hold a descriptor and a dir's entries):
/// the thread runs ahead of the caller by that many jobs, not by all it was given.
/// The corresponding C functions are `pthread_create`, `pthread_mutex_*`, `pthread_cond_*`.
public final class ReadAhead<Value: Sendable>: @unchecked Sendable {
  public typealias Job = @Sendable () -> Value
  /// A pushed job, for `take`.
  public struct Ticket: Hashable, Sendable { let id: Int }

  private enum State {
    case waiting(Job)
    case running
    /// Running, and discarded: dropped when it finishes.
    case runningDiscarded
    case done(Value)
  }

  private var states: [Int: State] = [:]
  /// Tickets in push order; the thread takes the last one still waiting.
  private var stack: [Int] = []
  private var nextID = 0
  private var closing = false
  /// Values done and not yet taken, and how many may be.
  private var doneCount = 0
  private let limit: Int
  /// The thread waits for a job; the caller waits for one to finish: signalled only then.
  private var workerIdle = false
  private var callerWaiting = false
  private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
  /// Signalled for the thread (a job or closing) and for the caller (a job finished).
  private let work = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
  private let finished = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
  private var thread = pthread_t()
  private var started = false

  /// nil when the thread cannot be started (the caller then runs every job itself).
  public init?(limit: Int = 8) {
    self.limit = max(1, limit)
    pthread_mutex_init(mutex, nil)
    pthread_cond_init(work, nil)
    pthread_cond_init(finished, nil)
    // A C thread function cannot capture the generic parameter: it gets a plain closure.
    guard let thread = startThread({ [self] in runJobs() }) else { return nil }
    self.thread = thread
    started = true
  }

  /// Stops the thread after the job it is running; values not taken are dropped. Call
  /// once, before dropping the object.
  public func close() {
    pthread_mutex_lock(mutex)
    closing = true
    states = [:]
    doneCount = 0
    stack = []
    pthread_cond_signal(work)
    pthread_mutex_unlock(mutex)
    if started {
      pthread_join(thread, nil)
      started = false
    }
  }

  deinit {
    pthread_cond_destroy(work)
    pthread_cond_destroy(finished)
    pthread_mutex_destroy(mutex)
    work.deallocate()
    finished.deallocate()
    mutex.deallocate()
  }

  public func push(_ job: @escaping Job) -> Ticket {
    pthread_mutex_lock(mutex)
    defer { pthread_mutex_unlock(mutex) }
    let id = nextID
    nextID += 1
    states[id] = .waiting(job)
    stack.append(id)
    if workerIdle { pthread_cond_signal(work) }
    return Ticket(id: id)
  }

  /// The value of `ticket`'s job (each ticket is taken once).
  public func take(_ ticket: Ticket) -> Value {
    pthread_mutex_lock(mutex)
    while true {
      switch states[ticket.id] {
      case .done(let value):
        states[ticket.id] = nil
        tookValue()
        pthread_mutex_unlock(mutex)
        return value
      case .running, .runningDiscarded:
        callerWaiting = true
        pthread_cond_wait(finished, mutex)
      case .waiting(let job):
        states[ticket.id] = nil  // the thread skips it in the stack
        pthread_mutex_unlock(mutex)
        return job()
      case nil:
        preconditionFailure("ReadAhead: a ticket taken twice or after close")
      }
    }
  }

  /// Forgets `ticket`'s job: not run if it has not begun, its value dropped if it has.
  public func discard(_ ticket: Ticket) {
    pthread_mutex_lock(mutex)
    defer { pthread_mutex_unlock(mutex) }
    switch states[ticket.id] {
    case .running: states[ticket.id] = .runningDiscarded
    case .done:
      states[ticket.id] = nil
      tookValue()
    default: states[ticket.id] = nil
    }
  }

  /// A value done was taken or dropped (the mutex held): a thread held back by the limit
  /// goes on.
  private func tookValue() {
    doneCount -= 1
    if workerIdle && doneCount == limit - 1 { pthread_cond_signal(work) }
  }

  private func runJobs() {
    pthread_mutex_lock(mutex)
    while true {
      var job: Job?
      var id = 0
      while job == nil && !closing {
        guard doneCount < limit, let last = stack.popLast() else {
          workerIdle = true
          pthread_cond_wait(work, mutex)
          workerIdle = false
          continue
        }
        if case .waiting(let waiting) = states[last] {
          job = waiting
          id = last
        }
      }
      guard let job else { break }
      states[id] = .running
      pthread_mutex_unlock(mutex)
      let value = job()
      pthread_mutex_lock(mutex)
      switch states[id] {
      case .running:
        states[id] = .done(value)
        doneCount += 1
      case .runningDiscarded: states[id] = nil
      default: break  // closed
      }
      if callerWaiting {
        callerWaiting = false
        pthread_cond_signal(finished)
      }
    }
    pthread_mutex_unlock(mutex)
  }
}

