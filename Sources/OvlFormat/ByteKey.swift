/// A byte string (a name or a path) as a set member or dictionary key: hashed in one pass
/// over its bytes. An `[UInt8]` hashes element by element, which shows where every entry
/// of a layer is looked up in sets of names.
public struct ByteKey: Hashable, Sendable {
  public let bytes: [UInt8]
  public init(_ bytes: [UInt8]) { self.bytes = bytes }

  public func hash(into hasher: inout Hasher) {
    bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
  }

  public static func == (a: ByteKey, b: ByteKey) -> Bool { a.bytes == b.bytes }
}
