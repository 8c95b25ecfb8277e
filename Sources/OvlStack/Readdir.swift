import OvlFormat
import OvlSystem

extension Stack {
  /// The names of a merged directory as the kernel's readdir returns them, sorted by their
  /// bytes. A merged directory lists each name once (its top-most occurrence) and drops
  /// whiteouts; a real (unmerged) directory is listed raw, whiteouts included.
  public func list(_ dir: MergedDir) throws(OvlError) -> [[UInt8]] {
    let layers = (dir.upper.map { [$0] } ?? []) + dir.lowers
    if dir.isReal, let only = layers.first {
      return try entries(of: only, dir).map(\.name).sorted(by: Self.byteOrder)
    }
    var seen = Set<[UInt8]>()
    var names: [[UInt8]] = []
    for layerDir in layers {
      let checkXwhiteouts = dir.xwhiteouts && layersWithXwhiteouts.contains(layerDir.layer)
      for entry in try entries(of: layerDir, dir) {
        guard seen.insert(entry.name).inserted else { continue }
        if entry.mayBeWhiteout || (checkXwhiteouts && entry.mayBeRegular) {
          guard let status = try statIfPresent(layerDir, entry.name, dir) else { continue }
          if status.isWhiteoutDevice { continue }
          if checkXwhiteouts && status.type == .regular && status.size == 0 {
            let object = RealObject(layer: layerDir.layer, parent: layerDir, name: entry.name, status: status)
            let whiteout = try step("listxattr", describe(layerDir.layer, dir.path + [0x2F] + entry.name)) {
              () throws(Errno) in try isWhiteout(object)
            }
            if whiteout { continue }
          }
        }
        names.append(entry.name)
      }
    }
    return names.sorted(by: Self.byteOrder)
  }

  private func statIfPresent(_ layerDir: LayerDir, _ name: [UInt8], _ dir: MergedDir) throws(OvlError) -> FileStatus? {
    do {
      return try layerDir.fd.stat(name)
    } catch .noSuchFileOrDirectory {
      return nil
    } catch {
      throw .system(call: "statx", path: describe(layerDir.layer, dir.path + [0x2F] + name), errno: error)
    }
  }

  private func entries(of layerDir: LayerDir, _ dir: MergedDir) throws(OvlError) -> [DirectoryEntry] {
    let list = try step("getdents64", describe(layerDir.layer, dir.path)) { () throws(Errno) in try layerDir.fd.entries() }
    layerDir.listed = Set(list.map(\.name))
    return list
  }

  /// Byte-wise order of names (memcmp, shorter first on a common prefix).
  public static func byteOrder(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.lexicographicallyPrecedes(b)
  }
}
