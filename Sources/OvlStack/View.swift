import OvlFormat
import OvlSystem

/// One line of `tree --json`: an entry of the merged view with the attributes the kernel
/// shows for it.
public struct ViewRecord {
  public var path: [UInt8]
  public var status: FileStatus
  public var target: [UInt8]?
  /// Names as the view shows them (private names dropped, escaped names unescaped), sorted.
  public var xattrs: [([UInt8], [UInt8])]
  public var layer: Int
  public var sha256: [UInt8]?
}

extension Stack {
  /// The merged root as an entry (the upper root, else the top-most lower root).
  public func rootEntry(_ root: MergedDir) -> MergedEntry? {
    func object(_ dir: LayerDir) -> RealObject? {
      guard let status = try? dir.fd.stat() else { return nil }
      return RealObject(layer: dir.layer, parent: dir, name: [0x2E], status: status)
    }
    let upper = root.upper.flatMap(object)
    let lowers = root.lowers.compactMap(object)
    guard upper != nil || !lowers.isEmpty else { return nil }
    return MergedEntry(path: [], upper: upper, lowers: lowers, upperIsMetacopy: false, dataRedirect: nil, xwhiteouts: root.xwhiteouts)
  }

  /// Opens the file that holds an entry's data: the upper unless it is metacopy, else the
  /// lower data file (found by the lookup chain or, lazily, in the data-only layers).
  public func openData(_ entry: MergedEntry) throws(OvlError) -> FD {
    let shownPath = String(decoding: entry.path, as: UTF8.self)
    if let upper = entry.upper, !entry.upperIsMetacopy {
      return try step("open", describe(0, entry.path)) { () throws(Errno) in try upper.open(.readOnly) }
    }
    if let components = entry.dataRedirect {
      let relative = Redirect.absolute(components).value.dropFirst()
      for root in dataRoots {
        do {
          let fd = try FD.open(beneath: root.fd, path: Array(relative), .readOnly)
          let status = try fd.stat()
          guard status.type == .regular else { continue }
          return fd
        } catch .noSuchFileOrDirectory {
          continue
        } catch {
          throw .system(call: "openat2", path: describe(root.layer, Array(relative)), errno: error)
        }
      }
      throw .format(path: shownPath, reason: "lower data not found in the data-only layers", errno: .noSuchFileOrDirectory)
    }
    guard let data = entry.lowers.last else {
      throw .format(path: shownPath, reason: "no data", errno: .ioError)
    }
    return try step("open", describe(data.layer, entry.path)) { () throws(Errno) in try data.open(.readOnly) }
  }

  /// The record `tree`, `stat` and `ls --json` print for an entry.
  public func record(_ entry: MergedEntry, hash: Bool) throws(OvlError) -> ViewRecord {
    let shown = entry.shown
    let where_ = describe(shown.layer, entry.path)
    var xattrs: [([UInt8], [UInt8])] = []
    let names = try step("listxattr", where_) { () throws(Errno) in try shown.xattrNames() }
    for name in names {
      guard let viewName = namespace.viewName(name) else { continue }
      guard let value = try step("getxattr", where_, { () throws(Errno) in try shown.parent.fd.xattr(shown.name, name) }) else {
        continue
      }
      xattrs.append((viewName, value))
    }
    xattrs.sort { Stack.byteOrder($0.0, $1.0) }
    var target: [UInt8]?
    if shown.status.type == .symlink {
      target = try step("readlink", where_) { () throws(Errno) in try shown.parent.fd.readLink(shown.name) }
    }
    var digest: [UInt8]?
    if hash && shown.status.type == .regular {
      let fd = try openData(entry)
      digest = try step("read", where_) { () throws(Errno) in try fd.sha256() }
    }
    return ViewRecord(path: entry.path, status: shown.status, target: target, xattrs: xattrs, layer: shown.layer, sha256: digest)
  }

  /// The kernel keeps one overlay inode per real inode (`ovl_get_inode`, hashed by the
  /// top-most lower inode, or by the upper one) and refuses with ESTALE a later lookup that
  /// reaches the same inode with different layers (`ovl_verify_inode`): for instance a lower
  /// directory reached both by its own name and through an uncovered redirect. A walk meets
  /// entries in the same order as a walk of a fresh mount, so it reproduces that.
  func verifyInode(_ entry: MergedEntry) throws(OvlError) {
    let lower = entry.lowers.first?.status
    let upper = entry.upper?.status
    guard let key = inodeKey(entry, lower: lower, upper: upper) else { return }
    guard let existing = inodes[key] else {
      inodes[key] = (lower?.id, upper?.id)
      return
    }
    var matches = true
    if entry.isDirectory {
      if lower == nil && existing.lower != nil { matches = false }  // lower dir moved to upper
      if upper == nil && existing.upper != nil { matches = false }  // uncovered redirect origin
    }
    if let lower, existing.lower != lower.id { matches = false }
    if let upper, existing.upper != upper.id { matches = false }
    if !matches {
      throw fail(entry.path, "the same real inode is reached by another path (an uncovered redirect origin?)", .staleNFSFileHandle)
    }
  }

  /// `ovl_hash_bylower`: by the lower inode unless the lower hardlink is or will be broken
  /// on copy-up, or an upper without index under nfs_export; pure upper inodes by the upper.
  private func inodeKey(_ entry: MergedEntry, lower: FileStatus?, upper: FileStatus?) -> FileID? {
    guard let lower else { return upper?.id }
    var byLower = true
    if upperRoot != nil {
      if (upper != nil || !options.index) && lower.type != .directory && lower.links > 1 { byLower = false }
      if options.nfsExport && upper != nil { byLower = false }
    }
    return byLower ? lower.id : upper?.id
  }

  /// Walks the merged view under `entry` depth-first (children sorted by name bytes) and
  /// hands each record — or the error that stopped an entry — to `emit`. Memory stays
  /// bounded by the largest directory plus the depth.
  public func walk(
    _ entry: MergedEntry, dir: MergedDir?, hash: Bool,
    emit: (Result<ViewRecord, OvlError>, [UInt8]) -> Void
  ) {
    do throws(OvlError) {
      emit(.success(try record(entry, hash: hash)), entry.path)
    } catch {
      emit(.failure(error), entry.path)
      return
    }
    guard entry.isDirectory else { return }
    let merged: MergedDir
    let names: [[UInt8]]
    do throws(OvlError) {
      if let dir { merged = dir } else { merged = try open(entry) }
      names = try list(merged)
    } catch {
      emit(.failure(error), entry.path)
      return
    }
    for name in names {
      let childPath = entry.path + [UInt8(ascii: "/")] + name
      do throws(OvlError) {
        guard let child = try lookup(name, in: merged) else {
          emit(.failure(fail(childPath, "no such file or directory", .noSuchFileOrDirectory)), childPath)
          continue
        }
        try verifyInode(child)
        walk(child, dir: nil, hash: hash, emit: emit)
      } catch {
        emit(.failure(error), childPath)
      }
    }
  }
}
