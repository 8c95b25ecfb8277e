/// `overlay.metacopy`: the upper holds metadata only; the data is in a lower layer. Empty,
/// or a versioned record with an fs-verity digest:
///
///     off len field
///     0   1   version      0
///     1   1   len          4 + digest bytes
///     2   1   flags        0
///     3   1   digest_algo  0 none, 1 sha256, 2 sha512
///     4   n   digest
public struct Metacopy: Sendable, Equatable {
  public enum DigestAlgorithm: UInt8, Sendable { case none = 0, sha256 = 1, sha512 = 2 }
  public var algorithm: DigestAlgorithm
  public var digest: [UInt8]

  public init(algorithm: DigestAlgorithm = .none, digest: [UInt8] = []) {
    self.algorithm = algorithm
    self.digest = digest
  }

  public enum DecodeError: Error, Equatable { case tooShort, badVersion, badLength, badFlags }

  /// Decodes like `ovl_check_metacopy_xattr`; a malformed value makes lookup fail EIO.
  public init(value: [UInt8]) throws(DecodeError) {
    if value.isEmpty { self.init(); return }
    guard value.count >= 4 else { throw .tooShort }
    guard value[0] == 0 else { throw .badVersion }
    guard Int(value[1]) == value.count else { throw .badLength }
    guard value[2] == 0 else { throw .badFlags }
    self.init(algorithm: DigestAlgorithm(rawValue: value[3]) ?? .none, digest: Array(value[4...]))
  }

  /// What the kernel writes: empty without a digest.
  public var value: [UInt8] {
    if algorithm == .none && digest.isEmpty { return [] }
    return [0, UInt8(4 + digest.count), 0, algorithm.rawValue] + digest
  }
}

/// `overlay.protattr`: the protected inode flags of a copied-up inode, kept as letters
/// (`a` append-only, then `i` immutable) instead of real flags.
public struct Protattr: OptionSet, Sendable {
  public let rawValue: UInt8
  public init(rawValue: UInt8) { self.rawValue = rawValue }
  public static let appendOnly = Protattr(rawValue: 1)
  public static let immutable = Protattr(rawValue: 2)
  public static let maximumLength = 32

  /// nil for an unknown letter or an empty value (the kernel warns and ignores it).
  public init?(value: [UInt8]) {
    guard !value.isEmpty, value.count <= Self.maximumLength else { return nil }
    var flags: Protattr = []
    for c in value {
      switch c {
      case UInt8(ascii: "a"): flags.insert(.appendOnly)
      case UInt8(ascii: "i"): flags.insert(.immutable)
      default: return nil
      }
    }
    self = flags
  }

  public var value: [UInt8] {
    (contains(.appendOnly) ? [UInt8(ascii: "a")] : []) + (contains(.immutable) ? [UInt8(ascii: "i")] : [])
  }
}

/// `overlay.uuid` on the upper root: the overlay's own 16-byte uuid.
public struct OverlayUUID: Sendable, Equatable {
  public let bytes: [UInt8]
  public init?(value: [UInt8]) {
    guard value.count == 16 else { return nil }
    bytes = value
  }
  public var isNull: Bool { bytes.allSatisfy { $0 == 0 } }
}

/// Whiteouts: a char device 0/0 (the kernel's form) or, for image builders, a zero-size
/// regular file with `overlay.whiteout` (an xattr whiteout).
public enum Whiteout {
  public static func isXattrWhiteout(isRegular: Bool, size: UInt64, hasWhiteoutXattr: Bool) -> Bool {
    isRegular && size == 0 && hasWhiteoutXattr
  }
}
