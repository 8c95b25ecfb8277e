import OvlFormat
import OvlSystem

/// A path in the merged view, in its one canonical form: `/a/b`, each name after a `/`, no
/// `.`, `..`, empty or over-long name and no NUL; the root is the empty path (so a layer's
/// path plus a merged path is the real path of that entry in the layer). Every merged path
/// that ovltool handles — a command's argument, a layer entry's path, a merged directory's
/// or entry's own path, a cache key — is one of these.
public struct MergedPath: Hashable, Sendable, Comparable, CustomStringConvertible {
  /// `/a/b`; empty for the root.
  public let bytes: [UInt8]

  public static let root = MergedPath(canonical: [])

  /// What makes a path text not a merged path (the caller words the error).
  public enum Problem: Error, Equatable {
    case absolute, dotDot, nameTooLong, nul
  }

  /// How a parse treats a leading `/` and `..`.
  public enum Parsing {
    /// A command's argument: `/a/b` or `a/b`; `..` refused (the root has no parent inside
    /// the layers, and a script's paths should say where they go).
    case argument
    /// A path read back from what the user sees (`ls /a/../b`): `..` goes up by name.
    case lenient
    /// A layer entry's name: relative only, `..` refused, no NUL.
    case layerEntry
  }

  init(canonical bytes: [UInt8]) { self.bytes = bytes }

  /// The merged path of an object of the upper layer, from its path in that layer (the
  /// upper's names are the merged view's: `LayerDir.path` of layer 0).
  public init(upperLayerPath bytes: [UInt8]) { self.bytes = bytes }

  /// The path of `components` (names already valid: read from a directory, or parsed).
  public init(_ components: [[UInt8]]) {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(components.reduce(0) { $0 + 1 + $1.count })
    for c in components {
      bytes.append(UInt8(ascii: "/"))
      bytes += c
    }
    self.bytes = bytes
  }

  /// Parses `raw` (`a/./b/`, `//a//b`); empty names and `.` are dropped. One scan, no
  /// array per name (apply parses every entry of a layer).
  public init(parsing raw: [UInt8], _ mode: Parsing) throws(Problem) {
    let slash = UInt8(ascii: "/"), dot = UInt8(ascii: ".")
    if mode == .layerEntry && raw.first == slash { throw .absolute }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(raw.count + 1)
    let n = raw.count
    var start = 0
    while start < n {
      var end = start
      while end < n && raw[end] != slash { end += 1 }
      let length = end - start
      if length == 1 && raw[start] == dot {
        // `.`: nothing
      } else if length == 2 && raw[start] == dot && raw[start + 1] == dot {
        guard mode == .lenient else { throw .dotDot }
        if let last = bytes.lastIndex(of: slash) { bytes.removeSubrange(last...) }
      } else if length > 0 {
        if length > 255 { throw .nameTooLong }
        if mode == .layerEntry {
          for k in start..<end where raw[k] == 0 { throw .nul }
        }
        bytes.append(slash)
        bytes.append(contentsOf: raw[start..<end])
      }
      start = end + 1
    }
    self.bytes = bytes
  }

  public var isRoot: Bool { bytes.isEmpty }

  /// The names from the root down.
  public var components: [[UInt8]] {
    bytes.split(separator: UInt8(ascii: "/")).map { Array($0) }
  }

  /// How many names deep (0 for the root).
  public var depth: Int { bytes.reduce(0) { $0 + ($1 == UInt8(ascii: "/") ? 1 : 0) } }

  /// The last name; nil for the root.
  public var name: [UInt8]? {
    guard let slash = bytes.lastIndex(of: UInt8(ascii: "/")) else { return nil }
    return Array(bytes[(slash + 1)...])
  }

  /// The parent's path; nil for the root.
  public var parent: MergedPath? {
    guard let slash = bytes.lastIndex(of: UInt8(ascii: "/")) else { return nil }
    return MergedPath(canonical: Array(bytes[..<slash]))
  }

  /// This path and `name` below it.
  public func appending(_ name: [UInt8]) -> MergedPath {
    var bytes = self.bytes
    bytes.reserveCapacity(bytes.count + 1 + name.count)
    bytes.append(UInt8(ascii: "/"))
    bytes += name
    return MergedPath(canonical: bytes)
  }

  /// Its ancestor `depth` names deep (the root for 0; itself at its own depth or more).
  public func prefix(_ depth: Int) -> MergedPath {
    var seen = 0
    for (i, b) in bytes.enumerated() where b == UInt8(ascii: "/") {
      if seen == depth { return MergedPath(canonical: Array(bytes[..<i])) }
      seen += 1
    }
    return self
  }

  /// This path or one below it.
  public func contains(_ other: MergedPath) -> Bool {
    other.bytes.starts(with: bytes) && (other.bytes.count == bytes.count || other.bytes[bytes.count] == UInt8(ascii: "/"))
  }

  /// As shown to the user: `/a/b`, `/` for the root.
  public var shown: String { isRoot ? "/" : bytes.string }
  public var description: String { shown }

  /// `/a/b` with the root as `/`: the form tar paths and redirects are compared in.
  public var slashed: [UInt8] { isRoot ? [UInt8(ascii: "/")] : bytes }

  /// From the `slashed` form of a canonical path.
  public init(slashed bytes: [UInt8]) { self.bytes = bytes == [UInt8(ascii: "/")] ? [] : bytes }

  public static func < (a: MergedPath, b: MergedPath) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }
}
