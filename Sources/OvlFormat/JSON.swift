/// A JSON value, for the OCI image layout files (`index.json`, manifests, configs) without
/// Foundation. Objects keep their members in order; numbers keep their text, so a value read
/// and written again keeps its digits.
public enum JSONValue: Sendable, Equatable {
  case object([JSONMember])
  case array([JSONValue])
  case string(String)
  /// The number's text, as read or as written (`JSONValue.integer` makes one).
  case number(String)
  case bool(Bool)
  case null

  public static func integer(_ value: some BinaryInteger) -> JSONValue { .number(String(value)) }

  /// The member `key` of an object (the last one if the key is repeated), else nil.
  public subscript(key: String) -> JSONValue? {
    guard case .object(let members) = self else { return nil }
    return members.last { $0.key == key }?.value
  }

  public var string: String? { if case .string(let s) = self { s } else { nil } }
  public var array: [JSONValue]? { if case .array(let a) = self { a } else { nil } }
  public var members: [JSONMember]? { if case .object(let m) = self { m } else { nil } }
  /// The value of a number written as an integer (no fraction or exponent) that fits.
  public var int64: Int64? { if case .number(let text) = self { Int64(text) } else { nil } }

  /// This object with member `key` set to `value`: replaced where it is (the first one: a
  /// parsed object has no repeated keys), else appended.
  /// Other values are returned unchanged.
  public func setting(_ key: String, _ value: JSONValue) -> JSONValue {
    guard case .object(var members) = self else { return self }
    if let i = members.firstIndex(where: { $0.key == key }) {
      members[i].value = value
    } else {
      members.append(JSONMember(key, value))
    }
    return .object(members)
  }
}

public struct JSONMember: Sendable, Equatable {
  public var key: String
  public var value: JSONValue
  public init(_ key: String, _ value: JSONValue) {
    self.key = key
    self.value = value
  }
}

// MARK: - Writing

extension JSONValue {
  /// How a value is written: always compact (no spaces), `/` not escaped, strings escaped
  /// as Foundation does (`\"`, `\\`, `\b \t \n \f \r`, other control characters as
  /// `\u00XX`, everything else, DEL and non-ASCII included, as UTF-8).
  public enum Dialect: Sendable {
    /// Members in the order they are in, numbers as they are.
    case plain
    /// As Foundation's `JSONEncoder` with `.sortedKeys` writes on Linux: members sorted by
    /// the keys' UTF-8 bytes.
    case jsonEncoder
    /// As Foundation's `JSONSerialization` with `.sortedKeys` writes what it parsed, on
    /// Linux: members in its collated order (`JSONText.collates(_:before:)`), numbers
    /// respelled as it does (`JSONText.serializationNumber(_:)`).
    case jsonSerialization
  }

  public func encoded(_ dialect: Dialect = .plain) -> [UInt8] {
    var out: [UInt8] = []
    write(into: &out, dialect)
    return out
  }

  func write(into out: inout [UInt8], _ dialect: Dialect) {
    switch self {
    case .object(let members):
      let ordered: [JSONMember]
      switch dialect {
      case .plain: ordered = members
      case .jsonEncoder: ordered = members.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
      case .jsonSerialization: ordered = members.sorted { JSONText.collates($0.key, before: $1.key) }
      }
      out.append(UInt8(ascii: "{"))
      for (i, m) in ordered.enumerated() {
        if i > 0 { out.append(UInt8(ascii: ",")) }
        JSONText.string(Array(m.key.utf8), into: &out, style: .foundation)
        out.append(UInt8(ascii: ":"))
        m.value.write(into: &out, dialect)
      }
      out.append(UInt8(ascii: "}"))
    case .array(let values):
      out.append(UInt8(ascii: "["))
      for (i, v) in values.enumerated() {
        if i > 0 { out.append(UInt8(ascii: ",")) }
        v.write(into: &out, dialect)
      }
      out.append(UInt8(ascii: "]"))
    case .string(let s): JSONText.string(Array(s.utf8), into: &out, style: .foundation)
    case .number(let text): out += Array((dialect == .jsonSerialization ? JSONText.serializationNumber(text) : text).utf8)
    case .bool(let b): out += Array((b ? "true" : "false").utf8)
    case .null: out += Array("null".utf8)
    }
  }
}

// MARK: - Reading

extension JSONValue {
  /// Why a text is not JSON, and the byte offset where that shows.
  public struct ParseError: Error, Equatable, CustomStringConvertible {
    public let offset: Int
    public let reason: String
    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
  }

  /// Parses one JSON text (RFC 8259): UTF-8, whitespace around tokens, escapes including
  /// `\uXXXX` surrogate pairs; a leading UTF-8 byte order mark is skipped. Rejected: trailing garbage, control characters or invalid
  /// UTF-8 in strings, lone surrogates, leading zeros, nesting deeper than 512.
  public init(parsing text: [UInt8]) throws(ParseError) {
    var parser = JSONParser(text)
    if text.starts(with: [0xEF, 0xBB, 0xBF]) { parser.i = 3 }
    parser.skipSpace()
    let value = try parser.value(depth: 0)
    parser.skipSpace()
    guard parser.i == text.count else { throw parser.error("unexpected text after the value") }
    self = value
  }
}

struct JSONParser {
  let s: [UInt8]
  var i = 0
  init(_ s: [UInt8]) { self.s = s }

  static let maximumDepth = 512

  func error(_ reason: String) -> JSONValue.ParseError { JSONValue.ParseError(offset: i, reason: reason) }

  mutating func skipSpace() {
    while i < s.count, s[i] == 0x20 || s[i] == 0x0A || s[i] == 0x0D || s[i] == 0x09 { i += 1 }
  }

  mutating func value(depth: Int) throws(JSONValue.ParseError) -> JSONValue {
    guard depth < Self.maximumDepth else { throw error("nested too deeply") }
    guard i < s.count else { throw error("unexpected end") }
    switch s[i] {
    case UInt8(ascii: "{"):
      i += 1
      var members: [JSONMember] = []
      skipSpace()
      if i < s.count, s[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
      while true {
        skipSpace()
        guard i < s.count, s[i] == UInt8(ascii: "\"") else { throw error("expected a key") }
        let key = try string()
        skipSpace()
        guard i < s.count, s[i] == UInt8(ascii: ":") else { throw error("expected ':'") }
        i += 1
        skipSpace()
        let v = try value(depth: depth + 1)
        // A repeated key: the last value wins (as in Foundation's dictionaries).
        if let j = members.firstIndex(where: { $0.key == key }) { members[j].value = v } else { members.append(JSONMember(key, v)) }
        skipSpace()
        guard i < s.count else { throw error("unexpected end") }
        if s[i] == UInt8(ascii: ",") { i += 1; continue }
        if s[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
        throw error("expected ',' or '}'")
      }
    case UInt8(ascii: "["):
      i += 1
      var values: [JSONValue] = []
      skipSpace()
      if i < s.count, s[i] == UInt8(ascii: "]") { i += 1; return .array(values) }
      while true {
        skipSpace()
        values.append(try value(depth: depth + 1))
        skipSpace()
        guard i < s.count else { throw error("unexpected end") }
        if s[i] == UInt8(ascii: ",") { i += 1; continue }
        if s[i] == UInt8(ascii: "]") { i += 1; return .array(values) }
        throw error("expected ',' or ']'")
      }
    case UInt8(ascii: "\""):
      return .string(try string())
    case UInt8(ascii: "t"): try literal("true"); return .bool(true)
    case UInt8(ascii: "f"): try literal("false"); return .bool(false)
    case UInt8(ascii: "n"): try literal("null"); return .null
    case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
      return .number(try number())
    default:
      throw error("unexpected character")
    }
  }

  mutating func literal(_ word: StaticString) throws(JSONValue.ParseError) {
    let bytes = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
    guard s.count - i >= bytes.count, s[i..<(i + bytes.count)].elementsEqual(bytes) else { throw error("unexpected word") }
    i += bytes.count
  }

  mutating func digits() -> Int {
    let start = i
    while i < s.count, s[i] >= UInt8(ascii: "0"), s[i] <= UInt8(ascii: "9") { i += 1 }
    return i - start
  }

  mutating func number() throws(JSONValue.ParseError) -> String {
    let start = i
    if s[i] == UInt8(ascii: "-") { i += 1 }
    guard i < s.count, s[i] >= UInt8(ascii: "0"), s[i] <= UInt8(ascii: "9") else { throw error("expected a digit") }
    if s[i] == UInt8(ascii: "0") {
      i += 1
      if i < s.count, s[i] >= UInt8(ascii: "0"), s[i] <= UInt8(ascii: "9") { throw error("leading zero") }
    } else {
      _ = digits()
    }
    if i < s.count, s[i] == UInt8(ascii: ".") {
      i += 1
      guard digits() > 0 else { throw error("expected a digit after '.'") }
    }
    if i < s.count, s[i] == UInt8(ascii: "e") || s[i] == UInt8(ascii: "E") {
      i += 1
      if i < s.count, s[i] == UInt8(ascii: "+") || s[i] == UInt8(ascii: "-") { i += 1 }
      guard digits() > 0 else { throw error("expected a digit in the exponent") }
    }
    return String(decoding: s[start..<i], as: UTF8.self)
  }

  mutating func hex4() throws(JSONValue.ParseError) -> UInt32 {
    guard s.count - i >= 4 else { throw error("unexpected end in \\u") }
    var v: UInt32 = 0
    for _ in 0..<4 {
      guard let n = Hex.nibble(s[i]) else { throw error("expected 4 hex digits after \\u") }
      v = v << 4 | UInt32(n)
      i += 1
    }
    return v
  }

  /// A string, `i` at its opening quote.
  mutating func string() throws(JSONValue.ParseError) -> String {
    i += 1
    var out: [UInt8] = []
    while true {
      guard i < s.count else { throw error("unterminated string") }
      let b = s[i]
      if b == UInt8(ascii: "\"") { i += 1; break }
      if b < 0x20 { throw error("control character in a string") }
      if b >= 0x80 {
        let n = JSONText.validSequenceLength(s, i)
        guard n > 0 else { throw error("invalid UTF-8") }
        out += s[i..<(i + n)]
        i += n
        continue
      }
      if b != UInt8(ascii: "\\") { out.append(b); i += 1; continue }
      i += 1
      guard i < s.count else { throw error("unterminated string") }
      let e = s[i]
      i += 1
      switch e {
      case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
      case UInt8(ascii: "b"): out.append(0x08)
      case UInt8(ascii: "f"): out.append(0x0C)
      case UInt8(ascii: "n"): out.append(0x0A)
      case UInt8(ascii: "r"): out.append(0x0D)
      case UInt8(ascii: "t"): out.append(0x09)
      case UInt8(ascii: "u"):
        var scalar = try hex4()
        if scalar >= 0xD800 && scalar <= 0xDBFF {
          guard s.count - i >= 2, s[i] == UInt8(ascii: "\\"), s[i + 1] == UInt8(ascii: "u") else { throw error("lone surrogate") }
          i += 2
          let low = try hex4()
          guard low >= 0xDC00 && low <= 0xDFFF else { throw error("lone surrogate") }
          scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
        } else if scalar >= 0xDC00 && scalar <= 0xDFFF {
          throw error("lone surrogate")
        }
        guard let u = Unicode.Scalar(scalar) else { throw error("invalid \\u escape") }
        out += Array(String(Character(u)).utf8)
      default:
        i -= 1
        throw error("invalid escape")
      }
    }
    return String(decoding: out, as: UTF8.self)
  }
}

// MARK: - Strings

/// JSON string text from bytes, shared by the JSON-lines output and `JSONValue`.
public enum JSONText {
  public enum Style: Sendable {
    /// JSON lines (`tree --json`, fsck): every control byte and DEL as `\u00XX`.
    case lines
    /// Foundation's writers: `\b \t \n \f \r`, other control bytes as `\u00XX`, DEL as is.
    case foundation
  }

  static let hex: [UInt8] = Array("0123456789abcdef".utf8)

  /// A JSON string of raw bytes. Valid UTF-8 is kept; `"` and `\` are escaped; control bytes
  /// as `style` says; every byte of an invalid UTF-8 sequence becomes `\u00XX`.
  public static func string(_ bytes: [UInt8], into out: inout [UInt8], style: Style = .lines) {
    out.append(UInt8(ascii: "\""))
    var i = 0
    let n = bytes.count
    while i < n {
      let b = bytes[i]
      if b < 0x80 {
        if b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") {
          out.append(UInt8(ascii: "\\"))
          out.append(b)
        } else if b < 0x20 || (b == 0x7F && style == .lines) {
          escape(b, &out, style)
        } else {
          out.append(b)
        }
        i += 1
        continue
      }
      let length = validSequenceLength(bytes, i)
      if length == 0 {
        escape(b, &out, .lines)
        i += 1
      } else {
        out.append(contentsOf: bytes[i..<(i + length)])
        i += length
      }
    }
    out.append(UInt8(ascii: "\""))
  }

  static func escape(_ b: UInt8, _ out: inout [UInt8], _ style: Style) {
    if style == .foundation {
      let short: UInt8? =
        switch b {
        case 0x08: UInt8(ascii: "b")
        case 0x09: UInt8(ascii: "t")
        case 0x0A: UInt8(ascii: "n")
        case 0x0C: UInt8(ascii: "f")
        case 0x0D: UInt8(ascii: "r")
        default: nil
        }
      if let short {
        out += [UInt8(ascii: "\\"), short]
        return
      }
    }
    out += [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(b >> 4)], hex[Int(b & 0xF)]]
  }

  /// The length of the well-formed UTF-8 sequence starting at `i` (RFC 3629: no overlongs,
  /// no surrogates, at most U+10FFFF), or 0.
  public static func validSequenceLength(_ s: [UInt8], _ i: Int) -> Int {
    switch s[i] {
    case 0xC2...0xDF: return continuation(s, i + 1) ? 2 : 0
    case 0xE0: return continuation(s, i + 1, 0xA0) && continuation(s, i + 2) ? 3 : 0
    case 0xE1...0xEC, 0xEE...0xEF: return continuation(s, i + 1) && continuation(s, i + 2) ? 3 : 0
    case 0xED: return continuation(s, i + 1, 0x80, 0x9F) && continuation(s, i + 2) ? 3 : 0
    case 0xF0: return continuation(s, i + 1, 0x90) && continuation(s, i + 2) && continuation(s, i + 3) ? 4 : 0
    case 0xF1...0xF3: return continuation(s, i + 1) && continuation(s, i + 2) && continuation(s, i + 3) ? 4 : 0
    case 0xF4: return continuation(s, i + 1, 0x80, 0x8F) && continuation(s, i + 2) && continuation(s, i + 3) ? 4 : 0
    default: return 0
    }
  }

  @inline(__always)
  static func continuation(_ s: [UInt8], _ j: Int, _ lo: UInt8 = 0x80, _ hi: UInt8 = 0xBF) -> Bool {
    j < s.count && s[j] >= lo && s[j] <= hi
  }
}

// MARK: - Foundation's JSONSerialization

extension JSONText {
  /// How `JSONSerialization` writes a number it parsed from `text` (valid JSON number
  /// text): integers as they are (`-0` as `0`); others as the `Double` they are nearest,
  /// shortest round-trip digits without a trailing `.0` (`1e3` → `1000`, `2.50` → `2.5`,
  /// `1e16` → `1e+16`), unless they have more than 17 significant digits, which it keeps
  /// as a `Decimal` (written as read here).
  public static func serializationNumber(_ text: String) -> String {
    let bytes = Array(text.utf8)
    let isInteger = !bytes.contains { $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") }
    if isInteger { return text == "-0" ? "0" : text }
    let mantissa = bytes.prefix { $0 != UInt8(ascii: "e") && $0 != UInt8(ascii: "E") }.filter { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    let significant = mantissa.drop { $0 == UInt8(ascii: "0") }.reversed().drop { $0 == UInt8(ascii: "0") }.count
    guard significant <= 17, let value = Double(text), value.isFinite else { return text }
    let description = value.description
    return description.hasSuffix(".0") ? String(description.dropLast(2)) : description
  }
}

// MARK: - Foundation's key order

extension JSONText {
  /// Whether key `a` goes before `b` in what Foundation's `JSONSerialization` writes with
  /// `.sortedKeys` on Linux (`Dialect.jsonSerialization`): it compares with `[.numeric, .caseInsensitive, .forcedOrdering]`
  /// through ICU's root collation. Emulated for ASCII: control characters are ignored;
  /// whitespace, punctuation and symbols come first in the collation's own order, then
  /// digit runs by numeric value, then letters case-blind; ties go to lower case first,
  /// then to the shorter digit run, then to the bytes. Other characters sort after `z`
  /// by code point (not what ICU does: they are rare in image config keys).
  public static func collates(_ a: String, before b: String) -> Bool {
    let x = CollationKey(a), y = CollationKey(b)
    if x.primary != y.primary { return x.primary.lexicographicallyPrecedes(y.primary) }
    if x.tertiary != y.tertiary { return x.tertiary.lexicographicallyPrecedes(y.tertiary) }
    if x.runLengths != y.runLengths { return x.runLengths.lexicographicallyPrecedes(y.runLengths) }
    return a.utf8.lexicographicallyPrecedes(b.utf8)
  }

  /// The root collation's order of ASCII whitespace, punctuation and symbols.
  static let symbolOrder: [UInt8] = Array("\t\n\u{0B}\u{0C}\r _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$".utf8)
  static let symbolWeight: [Int] = {
    var table = [Int](repeating: -1, count: 128)
    for (i, c) in symbolOrder.enumerated() { table[Int(c)] = i + 1 }
    return table
  }()

  struct CollationKey {
    /// Weights; a digit run is its value without leading zeros as `digitBase + count`
    /// then one weight per digit.
    var primary: [Int] = []
    /// 1 for an upper-case letter, 0 for anything else.
    var tertiary: [Int] = []
    var runLengths: [Int] = []

    static let digitBase = 1_000
    static let letterBase = 1_000_000
    static let otherBase = 2_000_000

    init(_ text: String) {
      let s = Array(text.utf8)
      var i = 0
      while i < s.count {
        let c = s[i]
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"):
          let start = i
          while i < s.count, s[i] >= UInt8(ascii: "0"), s[i] <= UInt8(ascii: "9") { i += 1 }
          let digits = s[start..<i].drop { $0 == UInt8(ascii: "0") }
          primary.append(Self.digitBase + digits.count)
          primary += digits.map { Self.digitBase + Int($0) }
          tertiary.append(0)
          runLengths.append(i - start)
          continue
        case UInt8(ascii: "a")...UInt8(ascii: "z"):
          primary.append(Self.letterBase + Int(c))
          tertiary.append(0)
        case UInt8(ascii: "A")...UInt8(ascii: "Z"):
          primary.append(Self.letterBase + Int(c | 0x20))
          tertiary.append(1)
        case 0..<0x80:
          let w = JSONText.symbolWeight[Int(c)]
          if w > 0 {
            primary.append(w)
            tertiary.append(0)
          }
        default:
          let n = max(JSONText.validSequenceLength(s, i), 1)
          var scalar = 0
          for b in s[i..<(i + n)] { scalar = scalar << 8 | Int(b) }
          primary.append(Self.otherBase + scalar)
          tertiary.append(0)
          i += n
          continue
        }
        i += 1
      }
    }
  }
}
