import OvlStack
import Testing

/// The one merged-path type: its canonical form, the three parses and their refusals.
struct MergedPathTests {
  func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

  @Test func canonicalForm() throws {
    let p = try MergedPath(parsing: bytes("a//./b/"), .argument)
    #expect(p.bytes == bytes("/a/b"))
    #expect(p.components == [bytes("a"), bytes("b")])
    #expect(p.depth == 2 && p.name == bytes("b") && p.parent == MergedPath([bytes("a")]))
    #expect(p == MergedPath([bytes("a"), bytes("b")]))
    #expect(try MergedPath(parsing: bytes("/a/b"), .argument) == p)
    #expect(try MergedPath(parsing: bytes("/"), .argument) == .root)
    #expect(try MergedPath(parsing: bytes(""), .argument).isRoot)
    #expect(MergedPath.root.bytes.isEmpty && MergedPath.root.shown == "/" && MergedPath.root.slashed == bytes("/"))
    #expect(MergedPath.root.name == nil && MergedPath.root.parent == nil && MergedPath.root.depth == 0)
    #expect(p.shown == "/a/b" && p.slashed == bytes("/a/b"))
    #expect(MergedPath(slashed: bytes("/")) == .root && MergedPath(slashed: bytes("/a/b")) == p)
  }

  @Test func prefixesAndContainment() {
    let p = MergedPath([bytes("a"), bytes("b"), bytes("c")])
    #expect(p.prefix(0) == .root && p.prefix(1).bytes == bytes("/a") && p.prefix(2).bytes == bytes("/a/b") && p.prefix(3) == p && p.prefix(9) == p)
    #expect(MergedPath.root.appending(bytes("x")).bytes == bytes("/x"))
    #expect(p.prefix(2).contains(p) && p.contains(p) && MergedPath.root.contains(p))
    #expect(!p.contains(p.prefix(2)))
    #expect(!MergedPath([bytes("a"), bytes("b")]).contains(MergedPath([bytes("a"), bytes("bc")])))
  }

  @Test func dotDot() throws {
    #expect(throws: MergedPath.Problem.dotDot) { try MergedPath(parsing: bytes("a/../b"), .argument) }
    #expect(throws: MergedPath.Problem.dotDot) { try MergedPath(parsing: bytes("a/.."), .layerEntry) }
    #expect(try MergedPath(parsing: bytes("/a/b/../c"), .lenient).bytes == bytes("/a/c"))
    #expect(try MergedPath(parsing: bytes("/../../a"), .lenient).bytes == bytes("/a"))
    #expect(try MergedPath(parsing: bytes("a/.."), .lenient).isRoot)
  }

  @Test func layerEntryRefusals() throws {
    #expect(throws: MergedPath.Problem.absolute) { try MergedPath(parsing: bytes("/etc/passwd"), .layerEntry) }
    #expect(throws: MergedPath.Problem.nul) { try MergedPath(parsing: [0x61, 0, 0x62], .layerEntry) }
    #expect(try MergedPath(parsing: bytes("./a/./b/"), .layerEntry).bytes == bytes("/a/b"))
    #expect(try MergedPath(parsing: bytes("./"), .layerEntry).isRoot)
    let long = String(repeating: "n", count: 256)
    for mode in [MergedPath.Parsing.argument, .lenient, .layerEntry] {
      #expect(throws: MergedPath.Problem.nameTooLong) { try MergedPath(parsing: bytes("a/" + long), mode) }
    }
    #expect(try MergedPath(parsing: bytes(String(repeating: "n", count: 255)), .layerEntry).depth == 1)
  }

  @Test func orderIsByBytes() {
    let a = MergedPath([bytes("a")]), b = MergedPath([bytes("b")]), ab = MergedPath([bytes("a"), bytes("b")])
    #expect(a < b && a < ab && ab < b)
    #expect(Set([a, MergedPath([bytes("a")])]).count == 1)
  }
}
