/// `overlay.nlink`: the overlay link count of an indexed inode, relative to the upper
/// (`U`) or lower (`L`) inode's link count: `U+0`, `L-2`. ASCII, no NUL, at most 12 bytes.
public struct NlinkXattr: Sendable, Equatable, CustomStringConvertible {
  public enum Base: UInt8, Sendable { case upper = 0x55, lower = 0x4C }  // "U", "L"
  public var base: Base
  public var delta: Int

  public init(base: Base, delta: Int) { self.base = base; self.delta = delta }

  public static let maximumLength = 12

  /// Decodes like `ovl_get_nlink`: a base letter, a sign, decimal digits; nil when invalid
  /// (the kernel then falls back to the real link count).
  public init?(value: [UInt8]) {
    guard value.count >= 3, value.count <= Self.maximumLength, let base = Base(rawValue: value[0]) else { return nil }
    let sign = value[1]
    guard sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") else { return nil }
    var magnitude = 0
    for d in value[2...] {
      guard d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") else { return nil }
      magnitude = magnitude * 10 + Int(d - UInt8(ascii: "0"))
    }
    self.base = base
    self.delta = sign == UInt8(ascii: "-") ? -magnitude : magnitude
  }

  public var value: [UInt8] {
    [base.rawValue, delta < 0 ? UInt8(ascii: "-") : UInt8(ascii: "+")] + Array(String(abs(delta)).utf8)
  }

  /// The overlay link count given the real link count of the base inode; nil (fallback)
  /// when it is not positive.
  public func overlayLinks(baseLinks: Int) -> Int? {
    let n = baseLinks + delta
    return n > 0 ? n : nil
  }

  public var description: String { String(decoding: value, as: UTF8.self) }
}
