import OvlFormat
import OvlStack
import OvlSystem

/// The upper root's `origin` (the top lower root) and the index dir's `upper` (the upper
/// root), which index=on mounts verify: after a copy or move of a layer they name other
/// inodes and the kernel fails with ESTALE. Repaired by pointing them at the real roots.
extension Checker {
  func checkLayerIdentity() {
    guard let upper = stack.upperRoot else { return }
    let rootEntry = try? entry([0x2E], in: upper)
    if let stored = rootEntry?.xattrs[.origin], let top = root(1) {
      checkRootHandle(stored, expected: { () throws(Errno) in try self.stack.encodeHandle(top, [0x2E], upper: false) },
        dir: upper, attribute: .origin, layer: 0, name: layerName(0), path: "/",
        what: "the upper root's origin", target: "the top lower root (\(stack.layerPaths[1]))")
    }
    if let value = rootEntry?.xattrs[.uuid], OverlayUUID(value: value) == nil {
      let attribute = ns.name(.uuid)
      report.found("invalid-uuid", layer: 0, name: layerName(0), path: "/",
        problem: "overlay uuid is \(value.count) bytes, not 16: the kernel ignores it", action: "remove it (a uuid=on mount writes a new one)",
        policy: .safe, severity: .warning
      ) { () throws(OvlError) in
        try step("removexattr", self.stack.layerPaths[0]) { () throws(Errno) in try upper.fd.removeXattr([0x2E], attribute) }
      }
    }
    guard let workRoot = stack.workRoot, let index = try? open(Array("index".utf8), in: workRoot) else { return }
    let indexEntry = try? entry([0x2E], in: index)
    for key in [OverlayXattr.upper, .origin] {
      // Kernels up to 4.13 kept the upper root's handle in the index dir's `origin`.
      guard let stored = indexEntry?.xattrs[key] else { continue }
      checkRootHandle(stored, expected: { () throws(Errno) in try self.stack.encodeHandle(upper, [0x2E], upper: true) },
        dir: index, attribute: key, layer: -1, name: workName, path: "/index",
        what: "the index dir's \(key.rawValue)", target: "the upper root (\(stack.layerPaths[0]))")
    }
  }

  func checkRootHandle(
    _ stored: [UInt8], expected: () throws(Errno) -> FileHandle, dir: LayerDir, attribute key: OverlayXattr,
    layer: Int, name: String, path: String, what: String, target: String
  ) {
    guard let handle = try? expected() else { return }
    if sameObject(stored, handle) { return }
    let attribute = ns.name(key)
    let value = handle.bytes
    let shown = layer == 0 ? stack.layerPaths[0] : (options.workDir ?? "") + path
    report.found("layer-identity", layer: layer, name: name, path: path,
      problem: "\(what) does not name \(target) (the layers were copied or moved): index=on mounts fail with ESTALE",
      action: "point it at \(target)", policy: .safe
    ) { () throws(OvlError) in
      try step("setxattr", shown) { () throws(Errno) in try dir.fd.setXattr([0x2E], attribute, value) }
    }
  }

  /// The same object: equal bytes, or equal but for a zero uuid (written with uuid=off).
  func sameObject(_ stored: [UInt8], _ handle: FileHandle) -> Bool {
    if stored == handle.bytes { return true }
    guard case .handle(let decoded)? = try? FileHandle.decode(stored) else { return false }
    return decoded.uuid.allSatisfy { $0 == 0 } && decoded.type == handle.type && decoded.fid == handle.fid
      && decoded.flags == handle.flags
  }
}
