import OvlOperations
import OvlSystem
import Testing

/// The apply-script language and the value parsers the commands share.
@Suite struct ScriptTests {
  static func words(_ line: String) throws -> [String] {
    guard let parsed = try Script.parse(Array(("rm " + line).utf8)).first?.changes else { return [] }
    return parsed.compactMap { change in
      if case .remove(let path, _, _) = change { return String(decoding: path, as: UTF8.self) }
      return nil
    }
  }

  @Test(arguments: [
    (#"a b"#, ["a", "b"]),
    (#"'a b' c"#, ["a b", "c"]),
    (#""a \" b" c"#, [#"a " b"#, "c"]),
    (#"a\ b"#, ["a b"]),
    (#"a # comment"#, ["a"]),
    (#"a#b"#, ["a#b"]),
    (#"'' x"#, ["", "x"]),
    ("a\tb", ["a", "b"]),
  ])
  func wordSplitting(_ line: String, _ expected: [String]) throws {
    #expect(try Self.words(line) == expected)
  }

  @Test func linesAndErrors() throws {
    let lines = try Script.parse(Array("# header\n\nmkdir -p -m 0750 /a/b\nrm -rf /x /y\nmv --copy /a /b\n".utf8))
    #expect(lines.map(\.number) == [3, 4, 5])
    #expect(lines[1].changes.count == 2)
    for bad in ["frob /x", "mkdir", "rm 'open", "chmod 9 /x", "put - /x", "mknod /x c 0 0", "chown a:b /x", "rm -z /x", "touch -d tomorrow /x"] {
      #expect(throws: OvlError.self, "\(bad)") { try Script.parse(Array(bad.utf8)) }
    }
    do {
      _ = try Script.parse(Array("mkdir /ok\nbogus\n".utf8))
      Issue.record("no error")
    } catch {
      #expect("\(error)".contains("line 2"))
    }
  }

  @Test func values() throws {
    #expect(try Script.parseMode(Array("0755".utf8)) == 0o755)
    #expect(try Script.parseMode(Array("4755".utf8)) == 0o4755)
    #expect(throws: Script.SyntaxError.self) { try Script.parseMode(Array("10000".utf8)) }
    #expect(try Script.parseOwner(Array("5:6".utf8)) == (5, 6))
    #expect(try Script.parseOwner(Array("5".utf8)) == (5, nil))
    #expect(try Script.parseOwner(Array(":6".utf8)) == (nil, 6))
    #expect(throws: Script.SyntaxError.self) { try Script.parseOwner(Array(":".utf8)) }
    #expect(try Script.parseTime(Array("1700000000".utf8)) == 1_700_000_000_000_000_000)
    #expect(try Script.parseTime(Array("@1700000000.5".utf8)) == 1_700_000_000_500_000_000)
    #expect(try Script.parseTime(Array("1.000000001".utf8)) == 1_000_000_001)
    #expect(throws: Script.SyntaxError.self) { try Script.parseTime(Array("1.0000000001".utf8)) }
    #expect(try Script.parseValue(Array("0x00ff".utf8)) == [0, 255])
    #expect(try Script.parseValue(Array("text".utf8)) == Array("text".utf8))
    #expect(throws: Script.SyntaxError.self) { try Script.parseValue(Array("0xf".utf8)) }
    #expect(try Script.parseNode(["p"]) == (.fifo, 0, 0))
    #expect(try Script.parseNode(["b", "7", "0"]) == (.block, 7, 0))
    #expect(throws: Script.SyntaxError.self) { try Script.parseNode(["c", "0", "0"]) }
  }
}
