import OvlFormat

/// A declarative description of an overlay stack: layers and the entries in each.
///
///     # comment
///     options redirect_dir=on,metacopy=on     extra mount options (also: userxattr)
///     [upper]                                 then entries of the upper layer
///     dir /d mode=0750 uid=1 gid=2 opaque=y
///     file /d/f "text\n" mode=0644 xattr.user.k=v
///     file /big size=100000                   deterministic bytes
///     file /mc size=5 metacopy redirect=/x/y  a sparse metacopy upper
///     symlink /l target
///     whiteout /gone                          char 0/0
///     xwhiteout /gone2                        zero-size file with overlay.whiteout
///     fifo /p     char /c 1 3     block /b 7 0     socket /s
///     link /d/g /d/f                          a hard link to an entry of the same layer
///     [lower l1]                              lower layers, top-most first
///     [data d1]                               data-only layers (after `::`)
///
/// Values are bare words or "quoted" with \n \t \\ \" \xHH escapes. Attributes: mode=,
/// uid=, gid=, mtime=EPOCH[.NS]; overlay xattrs in the stack's namespace: opaque=,
/// redirect=, metacopy (or metacopy=HEX), origin=HEX, impure=, whiteout; any other xattr as
/// xattr.NAME=VALUE (VALUE may be 0xHEX). Missing parents are created as 0755 directories;
/// every mtime defaults to 1700000000.
public struct FixtureSpec: Sendable {
  public enum LayerKind: Sendable { case upper, lower, data }
  public struct Layer: Sendable {
    public var kind: LayerKind
    public var name: String
    public var entries: [Entry] = []
  }
  public enum EntryKind: String, Sendable {
    case dir, file, symlink, whiteout, xwhiteout, fifo, char, block, socket, link
  }
  public struct Entry: Sendable {
    public var kind: EntryKind
    public var path: [[UInt8]]
    public var arguments: [[UInt8]]
    public var attributes: [(String, [UInt8]?)]
    public var line: Int
  }

  public var options: [String] = []
  public var layers: [Layer] = []
  public var userxattr: Bool { options.contains { $0.split(separator: ",").contains("userxattr") } }

  public struct ParseError: Error, CustomStringConvertible {
    public let line: Int
    public let message: String
    public var description: String { "line \(line): \(message)" }
  }

  public init(parsing text: [UInt8]) throws(ParseError) {
    var lineNumber = 0
    for rawLine in text.split(separator: 0x0A, omittingEmptySubsequences: false) {
      lineNumber += 1
      let words = try Self.tokenize(Array(rawLine), line: lineNumber)
      guard let first = words.first else { continue }
      let keyword = String(decoding: first, as: UTF8.self)
      if keyword == "options" {
        options += words.dropFirst().map { String(decoding: $0, as: UTF8.self) }
        continue
      }
      if keyword.hasPrefix("[") {
        let header = words.map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ")
        guard header.hasSuffix("]") else { throw ParseError(line: lineNumber, message: "bad layer header '\(header)'") }
        let parts = header.dropFirst().dropLast().split(separator: " ").map(String.init)
        switch (parts.first, parts.count) {
        case ("upper", 1): layers.append(Layer(kind: .upper, name: "upper"))
        case ("lower", 2): layers.append(Layer(kind: .lower, name: parts[1]))
        case ("data", 2): layers.append(Layer(kind: .data, name: parts[1]))
        default: throw ParseError(line: lineNumber, message: "bad layer header '\(header)' ([upper], [lower NAME], [data NAME])")
        }
        continue
      }
      guard let kind = EntryKind(rawValue: keyword) else {
        throw ParseError(line: lineNumber, message: "unknown entry kind '\(keyword)'")
      }
      guard !layers.isEmpty else { throw ParseError(line: lineNumber, message: "entry before any [layer] header") }
      guard words.count >= 2 else { throw ParseError(line: lineNumber, message: "\(keyword) needs a path") }
      let path = words[1].split(separator: 0x2F).map { Array($0) }
      guard !path.isEmpty || kind == .dir else { throw ParseError(line: lineNumber, message: "empty path") }
      var arguments: [[UInt8]] = []
      var attributes: [(String, [UInt8]?)] = []
      for word in words.dropFirst(2) {
        if let eq = word.firstIndex(of: UInt8(ascii: "=")), Self.isAttributeKey(word[..<eq]) {
          attributes.append((String(decoding: word[..<eq], as: UTF8.self), Array(word[(eq + 1)...])))
        } else if Self.isFlag(word) {
          attributes.append((String(decoding: word, as: UTF8.self), nil))
        } else {
          arguments.append(word)
        }
      }
      layers[layers.count - 1].entries.append(Entry(kind: kind, path: path, arguments: arguments, attributes: attributes, line: lineNumber))
    }
    let uppers = layers.filter { $0.kind == .upper }.count
    guard uppers <= 1 else { throw ParseError(line: lineNumber, message: "more than one [upper]") }
    guard layers.contains(where: { $0.kind == .lower }) else {
      throw ParseError(line: lineNumber, message: "a stack needs at least one [lower NAME]")
    }
  }

  static let attributeKeys: Set<String> = ["mode", "uid", "gid", "mtime", "opaque", "redirect", "metacopy", "origin", "impure", "size", "nlink", "protattr", "upper", "uuid"]

  static func isAttributeKey(_ key: ArraySlice<UInt8>) -> Bool {
    let k = String(decoding: key, as: UTF8.self)
    return attributeKeys.contains(k) || k.hasPrefix("xattr.")
  }

  static func isFlag(_ word: [UInt8]) -> Bool {
    ["metacopy", "whiteout"].contains(String(decoding: word, as: UTF8.self))
  }

  /// Splits a line into words: bare words, or "quoted" strings with escapes; `#` starts a
  /// comment outside quotes. A quoted part may follow `key=`.
  static func tokenize(_ line: [UInt8], line number: Int) throws(ParseError) -> [[UInt8]] {
    var words: [[UInt8]] = []
    var current: [UInt8] = []
    var inWord = false
    var i = 0
    while i < line.count {
      let c = line[i]
      if c == UInt8(ascii: "\"") {
        inWord = true
        i += 1
        var closed = false
        while i < line.count {
          let q = line[i]
          if q == UInt8(ascii: "\"") { closed = true; i += 1; break }
          if q == UInt8(ascii: "\\"), i + 1 < line.count {
            let e = line[i + 1]
            switch e {
            case UInt8(ascii: "n"): current.append(0x0A); i += 2
            case UInt8(ascii: "t"): current.append(0x09); i += 2
            case UInt8(ascii: "x"):
              guard i + 3 < line.count, let v = Hex.decode(Array(line[(i + 2)...(i + 3)])) else {
                throw ParseError(line: number, message: "bad \\x escape")
              }
              current += v
              i += 4
            default: current.append(e); i += 2
            }
            continue
          }
          current.append(q)
          i += 1
        }
        guard closed else { throw ParseError(line: number, message: "unterminated quote") }
        continue
      }
      if c == UInt8(ascii: "#") && !inWord { break }
      if c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") || c == 0x0D {
        if inWord { words.append(current); current = []; inWord = false }
        i += 1
        continue
      }
      inWord = true
      current.append(c)
      i += 1
    }
    if inWord { words.append(current) }
    return words
  }
}
