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
    case empty, emptyComponent, slashInRelative
  }

  /// Decodes a stored value with the kernel's validity rules (`ovl_get_redirect_xattr`):
  /// not empty; absolute values have no empty component (`//`, a trailing `/`, `/` alone);
  /// relative values contain no `/`. An invalid value makes lookup fail with EINVAL. The
  /// kernel reads the value as a C string: it ends at the first NUL.
  public init(value stored: [UInt8]) throws(DecodeError) {
    let value = Array(stored.prefix { $0 != 0 })
    guard !value.isEmpty else { throw .empty }
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
