import OvlFormat
import OvlSystem
import OvlWrite

/// One namespace change, as a command line or a line of an `apply-script` names it.
public enum Change: Sendable {
  case remove([UInt8], RemoveMode, force: Bool)
  case makeDirectory([UInt8], permissions: UInt32?, parents: Bool)
  case put(FileContents, [UInt8], ObjectAttributes)
  case symlink(target: [UInt8], [UInt8])
  case makeNode([UInt8], FileType, major: UInt32, minor: UInt32, permissions: UInt32?)
  case rename([UInt8], [UInt8], copy: Bool)
  case link([UInt8], [UInt8])
  case attribute([UInt8], AttributeChange)
}

extension WriteSession {
  /// Applies one change.
  public func apply(_ change: Change) throws(OvlError) {
    switch change {
    case .remove(let path, let mode, let force): try remove(path, mode: mode, force: force)
    case .makeDirectory(let path, let permissions, let parents): try create(path, .directory, permissions: permissions, parents: parents)
    case .put(let contents, let path, let attributes): try put(path, contents: contents, attributes: attributes)
    case .symlink(let target, let path): try create(path, .symlink(target: target))
    case .makeNode(let path, let type, let major, let minor, let permissions):
      try create(path, .node(type, major: major, minor: minor), permissions: permissions)
    case .rename(let from, let to, let copy): try rename(from, to: to, copy: copy)
    case .link(let from, let to): try link(from, to: to)
    case .attribute(let path, let change): try setAttribute(path, change)
    }
  }
}

/// The `apply-script` language: one command per line with the command-line syntax of
/// `ovltool rm|mkdir|put|symlink|mknod|mv|ln|chmod|chown|touch|setxattr|rmxattr` (without
/// stack options). Words are separated by blanks; '…' and "…" quote, a backslash escapes
/// the next byte (in "…" too); `#` starts a comment. Bytes are kept as they are (names need
/// not be UTF-8).
public enum Script {
  public struct Line: Sendable {
    public let number: Int
    public let text: String
    public let changes: [Change]
  }

  /// Parses a whole script; the first bad line is an error naming its number.
  public static func parse(_ bytes: [UInt8]) throws(OvlError) -> [Line] {
    var lines: [Line] = []
    for (index, raw) in bytes.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() {
      let words: [[UInt8]]
      do {
        words = try split(Array(raw))
      } catch {
        throw .usage("line \(index + 1): \(error)")
      }
      guard !words.isEmpty else { continue }
      do {
        lines.append(Line(number: index + 1, text: String(decoding: raw, as: UTF8.self), changes: try parseCommand(words)))
      } catch {
        throw .usage("line \(index + 1): \(error)")
      }
    }
    return lines
  }

  public struct SyntaxError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
  }

  /// Shell-like word splitting.
  static func split(_ line: [UInt8]) throws(SyntaxError) -> [[UInt8]] {
    var words: [[UInt8]] = []
    var word: [UInt8] = []
    var inWord = false
    var i = 0
    while i < line.count {
      let c = line[i]
      switch c {
      case 0x20, 0x09, 0x0D:
        if inWord { words.append(word); word = []; inWord = false }
      case UInt8(ascii: "#") where !inWord:
        return words
      case UInt8(ascii: "\\"):
        i += 1
        guard i < line.count else { throw SyntaxError("a backslash ends the line") }
        word.append(line[i]); inWord = true
      case UInt8(ascii: "'"):
        inWord = true
        i += 1
        while i < line.count && line[i] != UInt8(ascii: "'") { word.append(line[i]); i += 1 }
        guard i < line.count else { throw SyntaxError("unterminated '") }
      case UInt8(ascii: "\""):
        inWord = true
        i += 1
        while i < line.count && line[i] != UInt8(ascii: "\"") {
          if line[i] == UInt8(ascii: "\\"), i + 1 < line.count { i += 1 }
          word.append(line[i]); i += 1
        }
        guard i < line.count else { throw SyntaxError("unterminated \"") }
      default:
        word.append(c); inWord = true
      }
      i += 1
    }
    if inWord { words.append(word) }
    return words
  }

  /// Options (`-x`, `-x VALUE`, `--long VALUE`) then operands.
  struct Arguments {
    var flags: Set<String> = []
    var values: [String: [UInt8]] = [:]
    var operands: [[UInt8]] = []
  }

  static func arguments(_ words: ArraySlice<[UInt8]>, flags: Set<String>, valued: Set<String>) throws(SyntaxError) -> Arguments {
    var result = Arguments()
    var i = words.startIndex
    var optionsDone = false
    while i < words.endIndex {
      let word = words[i]
      let text = word.string
      if !optionsDone && text == "--" {
        optionsDone = true
      } else if !optionsDone && text.count > 1 && text.hasPrefix("-") {
        if valued.contains(text) {
          i += 1
          guard i < words.endIndex else { throw SyntaxError("\(text) needs a value") }
          result.values[text] = words[i]
        } else if flags.contains(text) {
          result.flags.insert(text)
        } else if !text.hasPrefix("--"), text.dropFirst().allSatisfy({ flags.contains("-\($0)") }) {
          for c in text.dropFirst() { result.flags.insert("-\(c)") }  // -rf
        } else {
          throw SyntaxError("unknown option \(text)")
        }
      } else {
        result.operands.append(word)
      }
      i += 1
    }
    return result
  }

  static func parseCommand(_ words: [[UInt8]]) throws(SyntaxError) -> [Change] {
    let command = words[0].string
    let rest = words[1...]
    func exactly(_ a: Arguments, _ n: Int, _ usage: String) throws(SyntaxError) {
      if a.operands.count != n { throw SyntaxError("usage: \(usage)") }
    }
    switch command {
    case "rm":
      let a = try arguments(rest, flags: ["-r", "-R", "-f", "-d", "--recursive", "--force", "--dir"], valued: [])
      if a.operands.isEmpty { throw SyntaxError("usage: rm [-r] [-f] [-d] PATH...") }
      let mode: RemoveMode = a.flags.contains("-r") || a.flags.contains("-R") || a.flags.contains("--recursive") ? .recursive
        : a.flags.contains("-d") || a.flags.contains("--dir") ? .emptyDirectory : .file
      let force = a.flags.contains("-f") || a.flags.contains("--force")
      return a.operands.map { .remove($0, mode, force: force) }
    case "mkdir":
      let a = try arguments(rest, flags: ["-p", "--parents"], valued: ["-m", "--mode"])
      if a.operands.isEmpty { throw SyntaxError("usage: mkdir [-p] [-m MODE] PATH...") }
      let mode = try (a.values["-m"] ?? a.values["--mode"]).map { (m) throws(SyntaxError) in try parseMode(m) }
      let parents = a.flags.contains("-p") || a.flags.contains("--parents")
      return a.operands.map { .makeDirectory($0, permissions: mode, parents: parents) }
    case "put":
      let a = try arguments(rest, flags: [], valued: ["-m", "--mode", "--owner", "--mtime"])
      try exactly(a, 2, "put [-m MODE] [--owner UID:GID] [--mtime EPOCH] SRC PATH")
      if a.operands[0] == [UInt8(ascii: "-")] { throw SyntaxError("put - (standard input) is not possible in a script") }
      let attributes = ObjectAttributes(
        permissions: try (a.values["-m"] ?? a.values["--mode"]).map { (m) throws(SyntaxError) in try parseMode(m) },
        owner: try a.values["--owner"].map { (o) throws(SyntaxError) in try parseOwnerPair(o) },
        mtime: try a.values["--mtime"].map { (t) throws(SyntaxError) in try parseTime(t) })
      return [.put(.hostFile(a.operands[0].string), a.operands[1], attributes)]
    case "symlink":
      let a = try arguments(rest, flags: [], valued: [])
      try exactly(a, 2, "symlink TARGET PATH")
      return [.symlink(target: a.operands[0], a.operands[1])]
    case "mknod":
      let a = try arguments(rest, flags: [], valued: ["-m", "--mode"])
      let mode = try (a.values["-m"] ?? a.values["--mode"]).map { (m) throws(SyntaxError) in try parseMode(m) }
      guard a.operands.count >= 2 else { throw SyntaxError("usage: mknod [-m MODE] PATH p|c|b [MAJOR MINOR]") }
      let (type, major, minor) = try parseNode(Array(a.operands[1...]).map(\.string))
      return [.makeNode(a.operands[0], type, major: major, minor: minor, permissions: mode)]
    case "mv":
      let a = try arguments(rest, flags: ["--copy"], valued: [])
      try exactly(a, 2, "mv [--copy] SRC DST")
      return [.rename(a.operands[0], a.operands[1], copy: a.flags.contains("--copy"))]
    case "ln":
      let a = try arguments(rest, flags: [], valued: [])
      try exactly(a, 2, "ln SRC DST")
      return [.link(a.operands[0], a.operands[1])]
    case "chmod":
      let a = try arguments(rest, flags: [], valued: [])
      try exactly(a, 2, "chmod MODE PATH")
      return [.attribute(a.operands[1], .mode(try parseMode(a.operands[0])))]
    case "chown":
      let a = try arguments(rest, flags: [], valued: [])
      try exactly(a, 2, "chown UID[:GID] PATH")
      let (uid, gid) = try parseOwner(a.operands[0])
      return [.attribute(a.operands[1], .owner(uid: uid, gid: gid))]
    case "touch":
      let a = try arguments(rest, flags: [], valued: ["-d", "--date"])
      try exactly(a, 1, "touch [-d EPOCH[.NS]] PATH")
      let time = try (a.values["-d"] ?? a.values["--date"]).map { (t) throws(SyntaxError) in try parseTime(t) }
      return [.attribute(a.operands[0], .times(time))]
    case "setxattr":
      let a = try arguments(rest, flags: [], valued: [])
      try exactly(a, 3, "setxattr NAME VALUE PATH")
      return [.attribute(a.operands[2], .setXattr(name: a.operands[0], value: try parseValue(a.operands[1])))]
    case "rmxattr":
      let a = try arguments(rest, flags: [], valued: [])
      try exactly(a, 2, "rmxattr NAME PATH")
      return [.attribute(a.operands[1], .removeXattr(name: a.operands[0]))]
    default:
      throw SyntaxError("unknown command '\(command)'")
    }
  }

  /// An octal mode, at most 07777.
  public static func parseMode(_ word: [UInt8]) throws(SyntaxError) -> UInt32 {
    guard !word.isEmpty, word.count <= 5, let mode = UInt32(word.string, radix: 8), mode <= 0o7777 else {
      throw SyntaxError("mode '\(word.string)' is not an octal mode (e.g. 0755)")
    }
    return mode
  }

  /// `UID`, `UID:GID`, `:GID` (numeric: the image's names are not the host's).
  public static func parseOwner(_ word: [UInt8]) throws(SyntaxError) -> (UInt32?, UInt32?) {
    let parts = word.string.split(separator: ":", omittingEmptySubsequences: false)
    guard parts.count <= 2 else { throw SyntaxError("owner '\(word.string)' is not UID[:GID]") }
    func id(_ s: Substring) throws(SyntaxError) -> UInt32? {
      if s.isEmpty { return nil }
      guard let n = UInt32(s), n != UInt32.max else { throw SyntaxError("owner '\(word.string)': ids are numbers") }
      return n
    }
    let uid = try id(parts[0])
    let gid = parts.count == 2 ? try id(parts[1]) : nil
    if uid == nil && gid == nil { throw SyntaxError("owner '\(word.string)' names no id") }
    return (uid, gid)
  }

  static func parseOwnerPair(_ word: [UInt8]) throws(SyntaxError) -> (uid: UInt32, gid: UInt32) {
    let (uid, gid) = try parseOwner(word)
    guard let uid, let gid else { throw SyntaxError("--owner needs UID:GID") }
    return (uid, gid)
  }

  /// Seconds since the epoch with an optional fraction (`1700000000.5`), as ns.
  public static func parseTime(_ word: [UInt8]) throws(SyntaxError) -> Int64 {
    let text = word.string.hasPrefix("@") ? String(word.string.dropFirst()) : word.string
    let parts = text.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count <= 2, let seconds = Int64(parts[0]), seconds > -(1 << 33), seconds < (1 << 33) else {
      throw SyntaxError("time '\(word.string)' is not EPOCH[.NS]")
    }
    var ns: Int64 = 0
    if parts.count == 2 {
      let digits = parts[1]
      guard !digits.isEmpty, digits.count <= 9, digits.allSatisfy(\.isNumber), let n = Int64(digits) else {
        throw SyntaxError("time '\(word.string)' is not EPOCH[.NS]")
      }
      ns = n * Int64(pow10(9 - digits.count))
    }
    return seconds * 1_000_000_000 + (seconds < 0 ? -ns : ns)
  }

  private static func pow10(_ n: Int) -> Int { (0..<n).reduce(1) { r, _ in r * 10 } }

  /// `p`, `c MAJOR MINOR`, `b MAJOR MINOR`.
  public static func parseNode(_ words: [String]) throws(SyntaxError) -> (FileType, UInt32, UInt32) {
    switch words.first {
    case "p"?:
      guard words.count == 1 else { throw SyntaxError("a fifo has no device numbers") }
      return (.fifo, 0, 0)
    case "c"?, "b"?:
      guard words.count == 3, let major = UInt32(words[1]), let minor = UInt32(words[2]) else {
        throw SyntaxError("usage: mknod PATH c|b MAJOR MINOR")
      }
      if words[0] == "c" && major == 0 && minor == 0 {
        throw SyntaxError("c 0 0 is a whiteout; the kernel refuses to create one through the overlay (EPERM): use rm")
      }
      return (words[0] == "c" ? .character : .block, major, minor)
    default:
      throw SyntaxError("node type must be p, c or b")
    }
  }

  /// An xattr value: text, or `0x` + hex digits for bytes.
  public static func parseValue(_ word: [UInt8]) throws(SyntaxError) -> [UInt8] {
    guard word.starts(with: Array("0x".utf8)) else { return word }
    let hex = Array(word.dropFirst(2))
    guard hex.count % 2 == 0 else { throw SyntaxError("hex value '\(word.string)' has an odd number of digits") }
    var bytes: [UInt8] = []
    var i = 0
    while i < hex.count {
      guard let byte = UInt8(String(decoding: hex[i...(i + 1)], as: UTF8.self), radix: 16) else {
        throw SyntaxError("hex value '\(word.string)' is not hex")
      }
      bytes.append(byte)
      i += 2
    }
    return bytes
  }
}
