import OvlFormat
import OvlSystem

/// The index directory (`workdir/index`, index=on): what the kernel verifies when it mounts
/// and what its lookup consults for lower hard links that were copied up.
extension Stack {
  /// The stored handle (`ovl_fb`) the kernel writes for `object`: its fs handle, the uuid
  /// of its filesystem (zeros with uuid=off), PATH_UPPER for upper inodes.
  public func encodeHandle(_ dir: LayerDir, _ name: [UInt8], upper: Bool) throws(Errno) -> FileHandle {
    let handle = try dir.fd.fileHandle(name)
    var uuid = [UInt8](repeating: 0, count: 16)
    if options.uuid != .off {
      uuid = try layerUUID(dir.layer)
    }
    return FileHandle(flags: upper ? FileHandle.flagUpper : 0, type: UInt8(truncatingIfNeeded: handle.type), uuid: uuid, fid: handle.bytes)
  }

  /// `s_uuid` of a layer's filesystem, read once per layer.
  public func layerUUID(_ layer: Int) throws(Errno) -> [UInt8] {
    if let known = uuids[layer] { return known }
    let root = layer == 0 ? upperRoot : lowerRootDir(layer)
    guard let root else { throw .noSuchFileOrDirectory }
    let uuid = try root.fd.filesystemUUID()
    uuids[layer] = uuid
    return uuid
  }

  /// `ovl_get_indexdir` and `ovl_indexdir_cleanup` as far as they make a mount fail: the
  /// upper root's `origin` must be the top lower root, the index dir's `upper` the upper
  /// root, every index name a valid handle, every non-directory entry an `origin`.
  func verifyIndexDirectory() throws(OvlError) {
    guard let index = indexDir, let upper = upperRoot, let top = lowerRoots.first else { return }
    let indexPath = (options.workDir ?? "") + "/index"
    func refuse(_ path: String, _ reason: String, _ errno: Errno) -> OvlError {
      .format(path: path, reason: "\(reason); the kernel refuses to mount this stack with index=on (try index=off)", errno: errno)
    }
    func check(_ dir: LayerDir, _ attribute: OverlayXattr, _ path: String, is expected: FileHandle) throws(OvlError) {
      let stored = try step("getxattr", path) { () throws(Errno) in try dir.fd.xattr([0x2E], namespace.name(attribute)) }
      guard let stored else { return }  // a first mount sets it
      if stored != expected.bytes {
        throw refuse(path, "\(namespace.name(attribute).string) does not match \(attribute == .origin ? "the top lower root" : "the upper root")", .staleNFSFileHandle)
      }
    }
    let rootHandle = try step("name_to_handle_at", layerPaths[1]) { () throws(Errno) in try encodeHandle(top, [0x2E], upper: false) }
    try check(upper, .origin, layerPaths[0], is: rootHandle)
    let upperHandle = try step("name_to_handle_at", layerPaths[0]) { () throws(Errno) in try encodeHandle(upper, [0x2E], upper: true) }
    try check(index, .upper, indexPath, is: upperHandle)

    let names = try step("getdents64", indexPath) { () throws(Errno) in try index.fd.entries() }
    for entry in names where entry.name.first != UInt8(ascii: "#") {
      let path = indexPath + "/" + entry.name.string
      let decoded: FileHandle.Decoded
      do {
        decoded = try FileHandle.decode(indexName: entry.name)
      } catch {
        throw refuse(path, "index name is not a valid file handle", .invalidArgument)
      }
      guard case .handle = decoded else { throw refuse(path, "index name is a handle of an unknown version", .noData) }
      guard let status = try step("statx", path, { () throws(Errno) in try index.fd.statIfPresent(entry.name) }) else { continue }
      if status.isWhiteoutDevice { continue }
      if status.type == .directory {
        guard options.nfsExport else { continue }
        let upperXattr = try step("getxattr", path) { () throws(Errno) in try index.fd.xattr(entry.name, namespace.name(.upper)) }
        if upperXattr == nil { throw refuse(path, "directory index entry without \(namespace.name(.upper).string)", .noData) }
        continue
      }
      let origin = try step("getxattr", path) { () throws(Errno) in try index.fd.xattr(entry.name, namespace.name(.origin)) }
      guard let origin else { throw refuse(path, "index entry without \(namespace.name(.origin).string)", .noData) }
      do {
        _ = try FileHandle.decode(origin)
      } catch {
        throw refuse(path, "invalid \(namespace.name(.origin).string)", .invalidArgument)
      }
    }
  }

  /// `ovl_lookup_index`: for a lower-only non-directory (every object with nfs_export) the
  /// index entry named by its handle is its upper inode, if the kernel copied up another
  /// alias of the same hard link.
  func lookupIndex(for origin: RealObject, isDirectory: Bool, path: [UInt8]) throws(OvlError) -> RealObject? {
    guard let index = indexDir, !isDirectory || options.nfsExport else { return nil }
    let handle: FileHandle
    do {
      handle = try encodeHandle(origin.parent, origin.name, upper: false)
    } catch {
      return nil  // the kernel cannot encode it either: no index
    }
    let name = handle.indexName
    guard let status = try step("statx", describe(0, index.path + [UInt8(ascii: "/")] + name), { () throws(Errno) in try index.fd.statIfPresent(name) }) else { return nil }
    if status.isWhiteoutDevice || status.type != origin.status.type {
      throw fail(path, "bad index found (index/\(name.string))", .ioError)
    }
    if isDirectory {
      throw fail(path, "suspected uncovered redirected dir found (index/\(name.string))", .ioError)
    }
    return RealObject(layer: 0, parent: index, name: name, status: status)
  }
}
