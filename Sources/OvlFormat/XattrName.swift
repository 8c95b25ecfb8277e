/// The overlay xattrs the kernel defines (the suffix after `trusted.overlay.` or
/// `user.overlay.`).
public enum OverlayXattr: String, CaseIterable, Sendable {
  case opaque, redirect, origin, impure, nlink, upper, uuid, metacopy, protattr, whiteout
}

/// Which namespace a stack keeps its overlay xattrs in: `trusted.overlay.*` by default,
/// `user.overlay.*` with the `userxattr` option.
public enum XattrNamespace: Sendable, Equatable {
  case trusted, user

  public var prefix: [UInt8] { Array((self == .trusted ? "trusted.overlay." : "user.overlay.").utf8) }
  /// `*.overlay.overlay.`: the escape for a nested overlay's own xattrs.
  public var escapedPrefix: [UInt8] { prefix + Array("overlay.".utf8) }

  /// The full attribute name of `key` in this namespace.
  public func name(_ key: OverlayXattr) -> [UInt8] { prefix + Array(key.rawValue.utf8) }

  /// Private names are the overlay's own: hidden from the merged view and never copied up.
  /// Escaped names (`*.overlay.overlay.*`) are not private.
  public func isPrivate(_ name: [UInt8]) -> Bool {
    name.starts(with: prefix) && !name.starts(with: escapedPrefix)
  }

  /// The name as the merged view shows it: private names are hidden (nil), escaped names
  /// lose one `overlay.`.
  public func viewName(_ name: [UInt8]) -> [UInt8]? {
    if name.starts(with: escapedPrefix) { return prefix + name[escapedPrefix.count...] }
    if name.starts(with: prefix) { return nil }
    return name
  }

  /// The name to store in a layer for an attribute the merged view shows as `name`: the
  /// inverse of `viewName` (an overlay-namespace name is escaped).
  public func layerName(_ name: [UInt8]) -> [UInt8] {
    name.starts(with: prefix) ? escapedPrefix + name[prefix.count...] : name
  }
}
