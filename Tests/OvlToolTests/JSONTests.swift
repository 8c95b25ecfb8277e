import Foundation
import Testing
import OvlFormat

// The JSON codec and time stamps the OCI image layout is written with (OvlFormat, no
// Foundation), checked against Foundation's own writers where they must agree byte for byte.

@Suite struct JSONValueTests {
  static func parse(_ text: String) throws -> JSONValue { try JSONValue(parsing: Array(text.utf8)) }
  static func text(_ v: JSONValue, _ dialect: JSONValue.Dialect = .plain) -> String { String(decoding: v.encoded(dialect), as: UTF8.self) }

  @Test(arguments: [
    #"{}"#, #"[]"#, #""""#, #"0"#, #"-1"#, #"12.5e-3"#, #"true"#, #"false"#, #"null"#,
    #"{"a":[1,{"b":null},"c"],"d":{"e":{"f":[[]]}}}"#,
    #"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:00","size":12,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}"#,
    #"["a\"b\\c","/x/y","\u0000\u001f\b\t\n\f\r","é€😀"]"#,
  ])
  func compactTextRoundTrips(_ text: String) throws {
    let value = try Self.parse(text)
    #expect(Self.text(value) == text)
    #expect(try JSONValue(parsing: value.encoded()) == value)
  }

  @Test func whitespaceAndEscapesAreRead() throws {
    let value = try Self.parse(" \n\t{ \"a\" :\r\n [ 1 , \"\\u00e9\\ud83d\\ude00\\/\\\"\" ] , \"b\":{ } }\n ")
    #expect(value == .object([JSONMember("a", .array([.number("1"), .string("é😀/\"")])), JSONMember("b", .object([]))]))
    #expect(value["a"]?.array?.count == 2)
    #expect(value["b"]?.members == [])
    #expect(value["c"] == nil)
  }

  @Test func aByteOrderMarkIsSkipped() throws {
    #expect(try JSONValue(parsing: [0xEF, 0xBB, 0xBF] + Array("{}".utf8)) == .object([]))
  }

  @Test func repeatedKeyKeepsTheLastValue() throws {
    let value = try Self.parse(#"{"a":1,"b":2,"a":3}"#)
    #expect(Self.text(value) == #"{"a":3,"b":2}"#)
  }

  @Test func numbersKeepTheirText() throws {
    let value = try Self.parse("[0,-0,1e3,2.50,123456789012345678901234567890,9223372036854775807]")
    #expect(Self.text(value) == "[0,-0,1e3,2.50,123456789012345678901234567890,9223372036854775807]")
    #expect(value.array?.last?.int64 == Int64.max)
    #expect(value.array?[2].int64 == nil)
    #expect(JSONValue.integer(Int64.min) == .number("-9223372036854775808"))
  }

  @Test func settingReplacesInPlaceOrAppends() throws {
    let value = try Self.parse(#"{"a":1,"b":2}"#)
    #expect(Self.text(value.setting("a", .bool(true))) == #"{"a":true,"b":2}"#)
    #expect(Self.text(value.setting("c", .null)) == #"{"a":1,"b":2,"c":null}"#)
    #expect(JSONValue.array([]).setting("a", .null) == .array([]))
  }

  @Test(arguments: [
    "", " ", "{", "}", "[", "[1,]", "[1 2]", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{a:1}", "{\"a\" 1}",
    "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\u12G4\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"",
    "\"tab\there\"", "\"nl\nhere\"", "01", "-", "1.", ".5", "1e", "1e+", "+1", "--1", "0x10", "NaN", "Infinity",
    "tru", "nul", "falsey", "true false", "{} {}", "[\"a\"]x", "'a'", "[1,,2]", "\u{FEFF}",
  ])
  func malformedInputIsRejected(_ text: String) {
    #expect(throws: JSONValue.ParseError.self) { try Self.parse(text) }
  }

  @Test func invalidUTF8IsRejected() {
    for bad: [UInt8] in [[0x22, 0xFF, 0x22], [0x22, 0xC0, 0xAF, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0x22, 0xE2, 0x82, 0x22]] {
      #expect(throws: JSONValue.ParseError.self) { try JSONValue(parsing: bad) }
    }
  }

  @Test func deepNestingIsAnErrorNotACrash() throws {
    let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
    #expect(throws: JSONValue.ParseError.self) { try Self.parse(deep) }
    let ok = String(repeating: "[", count: 500) + String(repeating: "]", count: 500)
    _ = try Self.parse(ok)
  }

  @Test func errorsSayWhere() {
    let error = #expect(throws: JSONValue.ParseError.self) { try Self.parse(#"{"a":[1,2}"#) }
    #expect(error?.offset == 9)
    #expect(error?.description.contains("byte 9") == true)
  }

  @Test func stringEscapesAreFoundations() throws {
    var all = ""
    for c in 0..<0x80 { all.unicodeScalars.append(Unicode.Scalar(UInt8(c))) }
    all += "é€😀\u{2028}\u{FEFF}"
    let expected =
      ##""\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r\u000e\u000f\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"##
      + "\u{7F}é€😀\u{2028}\u{FEFF}\""
    #expect(Self.text(.string(all)) == expected)
    #expect(try Self.parse(expected) == .string(all))
  }

  // MARK: Against Foundation (what ovltool wrote before it stopped linking it)

  static let keyAlphabet = Array("aAbBzZ09 1_-.,/:~$#@[`^+|TtEe")

  static func randomKey(_ g: inout some RandomNumberGenerator) -> String {
    String((0..<Int.random(in: 0...6, using: &g)).map { _ in keyAlphabet.randomElement(using: &g)! })
  }

  @Test func configKeyOrderIsJSONSerializations() throws {
    var g = SystemRandomNumberGenerator()
    let realistic = [
      "80/tcp", "443/tcp", "8080/tcp", "53/udp", "Maintainer", "com.example.b", "com.example.A", "a_b", "a-b", "a9", "a10", "ab", "aB",
      "created", "created_by", "createdBy", "os", "os.version", "os.features", "Env", "Entrypoint", "ExposedPorts", "/data", "/var/lib/x",
      "a1", "a01", "a1b", "a01b", "x2y10", "x2y9", "", " ", "_", "-", "!", "~", "$", "0", "00", "1", "10",
    ]
    for round in 0..<300 {
      let keys = round == 0 ? realistic : (0..<12).map { _ in Self.randomKey(&g) }
      var dictionary: [String: Any] = [:]
      var members: [JSONMember] = []
      for (i, k) in keys.enumerated() where dictionary[k] == nil {
        dictionary[k] = i
        members.append(JSONMember(k, .integer(i)))
      }
      let foundation = try JSONSerialization.data(withJSONObject: dictionary, options: [.sortedKeys, .withoutEscapingSlashes])
      let ours = Self.text(.object(members.shuffled(using: &g)), .jsonSerialization)
      #expect(ours == String(decoding: foundation, as: UTF8.self), "keys \(keys)")
    }
  }

  @Test func indexKeyOrderIsJSONEncoders() throws {
    var g = SystemRandomNumberGenerator()
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    for _ in 0..<200 {
      var dictionary: [String: String] = [:]
      for _ in 0..<10 { dictionary[Self.randomKey(&g) + "é😀"] = Self.randomKey(&g) + "\n\"\\/\u{1}" }
      let ours = Self.text(.object(dictionary.map { JSONMember($0.key, .string($0.value)) }), .jsonEncoder)
      #expect(ours == String(decoding: try encoder.encode(dictionary), as: UTF8.self))
    }
  }

  @Test(arguments: [
    "0", "-0", "7", "-12", "9223372036854775807", "18446744073709551616", "-12345678901234567890", "3.5", "0.1", "1e300",
    "1.5e-7", "2.50", "1e3", "1E2", "-0.0", "0.0", "1.0e20", "1e16", "1e15", "0.30000000000000004", "100000000000000000000.5",
    "1.7976931348623157e308", "5e-324", "-1.5", "1e-5", "0.0001", "123.456e2", "1e21", "4.0e-2", "1.25e1",
  ])
  func numbersAreRespelledAsJSONSerializationDoes(_ text: String) throws {
    let foundation = try JSONSerialization.data(withJSONObject: try JSONSerialization.jsonObject(with: Data("[\(text)]".utf8)))
    #expect("[" + JSONText.serializationNumber(text) + "]" == String(decoding: foundation, as: UTF8.self))
  }

  @Test func aParsedConfigIsWrittenAsJSONSerializationWroteIt() throws {
    let config = #"""
      { "architecture" : "amd64", "os": "linux", "created": "2020-01-01T00:00:00.123456789Z",
        "config": {"Env": ["PATH=/usr/bin:/bin", "Q=\"q\"\\b\ttab\u00e9\ud83d\ude00 \u2028 \u007f \u0001"], "Cmd": ["/bin/sh"],
         "ExposedPorts": {"80/tcp": {}, "443/tcp": {}, "8080/tcp": {}, "53/udp": {}},
         "Labels": {"Maintainer": "x", "com.example.b": "1", "com.example.A": "2", "a_b": "", "a-b": "", "aB": "", "ab": "", "a10": "", "a9": ""},
         "Volumes": {"/var/lib/x": {}, "/data": {}}, "ArgsEscaped": true, "Memory": 0, "Weird": [1, -2, 3.5, 1e3, null, false, 2.50]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:00"]},
        "history": [{"created": "2020-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:abc in / ", "empty_layer": true, "comment": "ünïcode"}],
        "os.version": "", "variant": "v8", "author": "me <me@example.com>" }
      """#
    let foundation = try JSONSerialization.data(
      withJSONObject: try JSONSerialization.jsonObject(with: Data(config.utf8)), options: [.sortedKeys, .withoutEscapingSlashes])
    #expect(Self.text(try Self.parse(config), .jsonSerialization) == String(decoding: foundation, as: UTF8.self))
  }
}

@Suite struct TimestampTests {
  @Test(arguments: [
    (Int64(0), "1970-01-01T00:00:00Z"), (1_700_000_000, "2023-11-14T22:13:20Z"), (951_782_400, "2000-02-29T00:00:00Z"),
    (951_868_799, "2000-02-29T23:59:59Z"), (4_107_542_400, "2100-03-01T00:00:00Z"), (253_402_300_799, "9999-12-31T23:59:59Z"),
    (1_234_567_890, "2009-02-13T23:31:30Z"), (-1, "1969-12-31T23:59:59Z"),
  ])
  func iso8601(_ seconds: Int64, _ expected: String) {
    #expect(Timestamp.iso8601(seconds: seconds) == expected)
  }

  @Test func agreesWithFoundationOverFourCenturies() {
    let formatter = ISO8601DateFormatter()
    var g = SystemRandomNumberGenerator()
    for _ in 0..<5000 {
      let seconds = Int64.random(in: 0...253_402_300_799, using: &g)
      #expect(Timestamp.iso8601(seconds: seconds) == formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds))))
    }
  }

  @Test func civilDaysCountDayByDay() {
    // Each day is the one after the day before, from 1970 to 2400.
    var (y, m, d): (Int64, Int64, Int64) = (1970, 1, 1)
    for days in Int64(0)..<157_000 {
      if Timestamp.civil(days: days) != (y, m, d) {
        Issue.record("day \(days): \(Timestamp.civil(days: days)), not \((y, m, d))")
        return
      }
      let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
      let length: Int64 = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][Int(m - 1)]
      d += 1
      if d > length { d = 1; m += 1 }
      if m > 12 { m = 1; y += 1 }
    }
  }
}
