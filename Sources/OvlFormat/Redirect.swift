/// `overlay.redirect`: where a renamed directory (or metacopy file) is found in the lower
/// layers.
public enum Redirect: Sendable, Equatable, CustomStringConvertible {
  /// One name, looked up in the parent's lower directories.
  case relative([UInt8])
  /// Components from the root of each lower layer.
  case absolute([[UInt8]])

  /// The kernel's `redirect_max` default: a rename that needs a longer redirect falls back
  /// to EXDEV.
  public static let maximumLength = 256

  public enum DecodeError: Error, Equatable {
    case empty, emptyComponent, slashInRelative, nulByte
  }

  /// Decodes a stored value with the kernel's validity rules (`ovl_get_redirect_xattr`):
  /// not empty; absolute values have no empty component (`//`, a trailing `/`, `/` alone);
  /// relative values contain no `/`. An invalid value makes lookup fail with EINVAL.
  public init(value: [UInt8]) throws(DecodeError) {
    guard !value.isEmpty else { throw .empty }
    // The kernel treats the value as a C string; a NUL would silently truncate it.
    guard !value.contains(0) else { throw .nulByte }
    if value[0] == UInt8(ascii: "/") {
      let components = value.dropFirst().split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
      guard components.allSatisfy({ !$0.isEmpty }) else { throw .emptyComponent }
      self = .absolute(components.map { Array($0) })
    } else {
      guard !value.contains(UInt8(ascii: "/")) else { throw .slashInRelative }
      self = .relative(value)
    }
  }

  public var value: [UInt8] {
    switch self {
    case .relative(let name): return name
    case .absolute(let components):
      var out: [UInt8] = []
      for c in components { out.append(UInt8(ascii: "/")); out += c }
      return out
    }
  }

  /// Whether the kernel would write this redirect (`redirect_max`).
  public var fitsKernelLimit: Bool { value.count <= Self.maximumLength }

  public var description: String { String(decoding: value, as: UTF8.self) }
}
