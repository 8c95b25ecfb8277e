/// A stored overlay file handle (`struct ovl_fb`), as kept in `origin`, `upper` and index
/// names:
///
///     off len field
///     0   1   version  0
///     1   1   magic    0xfb
///     2   1   len      21 + fid bytes
///     3   1   flags    0x01 big-endian fid, 0x02 any-endian, 0x04 fid of an upper inode
///     4   1   type     the filesystem's fid type (name_to_handle_at's handle_type)
///     5   16  uuid     s_uuid of the filesystem holding the inode (zeros with uuid=off)
///     21  n   fid      the filesystem's handle bytes
public struct FileHandle: Sendable, Hashable {
  public static let magic: UInt8 = 0xFB
  public static let headerLength = 21
  public static let flagBigEndian: UInt8 = 0x01
  public static let flagAnyEndian: UInt8 = 0x02
  public static let flagUpper: UInt8 = 0x04
  static let knownFlags: UInt8 = 0x07

  public var flags: UInt8
  public var type: UInt8
  public var uuid: [UInt8]
  public var fid: [UInt8]

  public init(flags: UInt8 = 0, type: UInt8, uuid: [UInt8], fid: [UInt8]) {
    self.flags = flags
    self.type = type
    self.uuid = uuid
    self.fid = fid
  }

  public var isUpper: Bool { flags & Self.flagUpper != 0 }

  /// The stored bytes (what `origin` holds and what index names hex-encode).
  public var bytes: [UInt8] {
    [0, Self.magic, UInt8(Self.headerLength + fid.count), flags, type] + uuid + fid
  }

  /// The index entry name: lower-case hex of the stored bytes.
  public var indexName: [UInt8] { Array(Hex.encode(bytes).utf8) }

  public enum DecodeError: Error, Equatable {
    /// Shorter than the header or than its own `len`: EINVAL.
    case badLength
    /// Not an overlay handle (magic is not 0xfb): EINVAL.
    case badMagic
  }

  /// What a stored handle means to the kernel (`ovl_check_fb_len`, `ovl_check_fh_len`).
  public enum Decoded: Sendable, Equatable {
    case handle(FileHandle)
    /// Empty `origin`: copied up, but the lower could not be encoded.
    case empty
    /// A handle this kernel cannot use (newer version, unknown flag, other endianness):
    /// treated as "origin unknown", not as an error.
    case unsupported
  }

  /// Decodes a stored value. Trailing bytes beyond `len` are ignored, as the kernel does.
  public static func decode(_ value: [UInt8], littleEndianHost: Bool = true) throws(DecodeError) -> Decoded {
    if value.isEmpty { return .empty }
    guard value.count >= headerLength else { throw .badLength }
    let length = Int(value[2])
    guard length <= value.count else { throw .badLength }
    guard value[1] == magic else { throw .badMagic }
    let flags = value[3]
    if value[0] != 0 || flags & ~knownFlags != 0 { return .unsupported }
    // `ovl_check_fb_len` lets a `len` below the header pass; such a handle decodes to nothing.
    if length < headerLength { return .unsupported }
    let bigEndian = flags & flagBigEndian != 0
    if flags & flagAnyEndian == 0 && bigEndian == littleEndianHost { return .unsupported }
    return .handle(FileHandle(flags: flags, type: value[4], uuid: Array(value[5..<21]), fid: Array(value[21..<length])))
  }

  /// Decodes an index entry name (hex of a stored handle). The kernel refuses names shorter
  /// than a header or not hex with EINVAL.
  public static func decode(indexName: [UInt8]) throws(DecodeError) -> Decoded {
    guard indexName.count >= 2 * headerLength, let bytes = Hex.decode(indexName) else { throw .badLength }
    return try decode(bytes)
  }
}

/// Lower-case hex, as the kernel writes index names and as `tree --json` prints values.
public enum Hex {
  static let digits: [UInt8] = Array("0123456789abcdef".utf8)

  public static func encode(_ bytes: some Sequence<UInt8>) -> String {
    var out: [UInt8] = []
    out.reserveCapacity(bytes.underestimatedCount * 2)
    for b in bytes {
      out.append(digits[Int(b >> 4)])
      out.append(digits[Int(b & 0xF)])
    }
    return String(decoding: out, as: UTF8.self)
  }

  /// Decodes hex digits (either case, as the kernel's `hex2bin`); nil if odd or not hex.
  public static func decode(_ text: [UInt8]) -> [UInt8]? {
    guard text.count % 2 == 0 else { return nil }
    var out: [UInt8] = []
    out.reserveCapacity(text.count / 2)
    var i = 0
    while i < text.count {
      guard let hi = nibble(text[i]), let lo = nibble(text[i + 1]) else { return nil }
      out.append(hi << 4 | lo)
      i += 2
    }
    return out
  }

  static func nibble(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
    default: nil
    }
  }
}
