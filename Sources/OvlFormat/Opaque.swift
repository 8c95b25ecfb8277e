/// `overlay.opaque`. The kernel reads it with a one-byte buffer: only the exact values `y`
/// and `x` mean anything; every other value (`yes`, `0`, empty) is ignored.
public enum Opaque: Sendable, Equatable {
  /// Lower layers below this directory are hidden.
  case opaque
  /// This (lower-layer) directory holds xattr whiteouts that readdir must filter.
  case xwhiteouts

  public init?(value: [UInt8]?) {
    guard let value, value.count == 1 else { return nil }
    switch value[0] {
    case UInt8(ascii: "y"): self = .opaque
    case UInt8(ascii: "x"): self = .xwhiteouts
    default: return nil
    }
  }

  public var value: [UInt8] { [self == .opaque ? UInt8(ascii: "y") : UInt8(ascii: "x")] }
}

/// `overlay.impure`: the one-byte value `y`; anything else is not impure.
public enum Impure {
  public static let value: [UInt8] = [UInt8(ascii: "y")]
  public static func isSet(_ value: [UInt8]?) -> Bool { value == Self.value }
}
