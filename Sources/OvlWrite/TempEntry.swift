import OvlStack
import OvlSystem

/// A named temporary object in the work dir. It removes itself when dropped, unless
/// `commit()` consumed it after it was published.
public struct TempEntry: ~Copyable {
  public let dir: LayerDir
  public let name: [UInt8]
  public let isDirectory: Bool
  private var published = false

  public init(dir: LayerDir, name: [UInt8], isDirectory: Bool) {
    self.dir = dir
    self.name = name
    self.isDirectory = isDirectory
  }

  /// The temp now has its final name: nothing to remove.
  public consuming func commit() { published = true }

  deinit {
    if !published { try? dir.fd.removeTree(name) }
  }
}
