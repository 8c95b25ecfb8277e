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
  /// `st_ino` as the kernel shows it, when asked for: nil inside for a number the kernel
  /// makes up per mount (see `Stack.inodeNumber`).
  public var inode: UInt64??
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
    return MergedEntry(path: .root, upper: upper, lowers: lowers, upperIsMetacopy: false, dataRedirect: nil, lowerRedirected: false, xwhiteouts: root.xwhiteouts)
  }

  /// Opens the file that holds an entry's data: the upper unless it is metacopy, else the
  /// lower data file (found by the lookup chain or, lazily, in the data-only layers).
  public func openData(_ entry: MergedEntry) throws(OvlError) -> FD {
    let shownPath = entry.path.shown
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
  public func record(_ entry: MergedEntry, hash: Bool, inodes: Bool = false) throws(OvlError) -> ViewRecord {
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
    return ViewRecord(
      path: entry.path.bytes, status: shown.status, target: target, xattrs: xattrs, layer: shown.layer, sha256: digest,
      inode: inodes ? .some(inodeNumber(entry)) : nil)
  }

  /// The kernel keeps one overlay inode per real inode (`ovl_get_inode`, hashed by the
  /// top-most lower inode, or by the upper one) and refuses with ESTALE a later lookup that
  /// reaches the same inode with different layers (`ovl_verify_inode`): a lower directory
  /// reached both through an uncovered redirect and by its own path, or through two
  /// redirects. Only an entry whose lower was reached through a redirect can meet its inode
  /// twice, so only those are remembered: memory stays bounded by the redirects, not the
  /// tree. `walkRoot` is where the walk started; `verifyInode` must see entries in walk
  /// order.
  func verifyInode(_ entry: MergedEntry, walkRoot: [UInt8]) throws(OvlError) {
    let lower = entry.lowers.first
    guard let key = inodeKey(entry, lower: lower?.status, upper: entry.upper?.status) else { return }
    let mine = (lower: lower?.status.id, upper: entry.upper?.status.id)
    if let seen = redirectedInodes[key], !sameInode(seen, mine, isDirectory: entry.isDirectory) {
      throw staleInode(entry.path.bytes)
    }
    guard entry.lowerRedirected, let lower else { return }
    redirectedInodes[key] = mine
    // Its own path, if the walk met it before this entry, made the inode first.
    let own = lower.layerPath
    let insideWalk = walkRoot.isEmpty || own == walkRoot || own.starts(with: walkRoot + [UInt8(ascii: "/")])
    guard Self.walkOrder(own, entry.path.bytes), insideWalk,
      let first = try? resolve(text: own).entry, let firstLower = first.lowers.first,
      inodeKey(first, lower: firstLower.status, upper: first.upper?.status) == key
    else { return }
    let existing = (lower: Optional(firstLower.status.id), upper: first.upper?.status.id)
    if !sameInode(existing, mine, isDirectory: entry.isDirectory) { throw staleInode(entry.path.bytes) }
  }

  /// `ovl_verify_inode` in strict mode.
  private func sameInode(
    _ existing: (lower: FileID?, upper: FileID?), _ new: (lower: FileID?, upper: FileID?), isDirectory: Bool
  ) -> Bool {
    if isDirectory {
      if new.lower == nil && existing.lower != nil { return false }  // lower dir moved to upper
      if new.upper == nil && existing.upper != nil { return false }  // uncovered redirect origin
    }
    if let lower = new.lower, existing.lower != lower { return false }
    if let upper = new.upper, existing.upper != upper { return false }
    return true
  }

  private func staleInode(_ path: [UInt8]) -> OvlError {
    fail(path, "the same real inode is reached by another path (an uncovered redirect origin?)", .staleNFSFileHandle)
  }

  /// Depth-first walk order: component by component, names compared by their bytes.
  static func walkOrder(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    let ca = a.split(separator: UInt8(ascii: "/")), cb = b.split(separator: UInt8(ascii: "/"))
    for (x, y) in zip(ca, cb) where !x.elementsEqual(y) { return x.lexicographicallyPrecedes(y) }
    return ca.count < cb.count
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
    _ entry: MergedEntry, dir: MergedDir?, hash: Bool, inodes: Bool = false,
    emit: (Result<ViewRecord, OvlError>, [UInt8]) -> Void
  ) {
    walk(entry, dir: dir, hash: hash, inodes: inodes, walkRoot: entry.path.bytes, emit: emit)
  }

  private func walk(
    _ entry: MergedEntry, dir: MergedDir?, hash: Bool, inodes: Bool, walkRoot: [UInt8],
    emit: (Result<ViewRecord, OvlError>, [UInt8]) -> Void
  ) {
    // A directory is listed before its line is written: one that cannot be listed is an
    // error line only (as for a walk of a mount).
    var merged = dir
    var names: [[UInt8]] = []
    do throws(OvlError) {
      if entry.isDirectory {
        let opened: MergedDir
        if let merged { opened = merged } else { opened = try open(entry) }
        names = try list(opened)
        merged = opened
      }
      emit(.success(try record(entry, hash: hash, inodes: inodes)), entry.path.bytes)
    } catch {
      emit(.failure(error), entry.path.bytes)
      return
    }
    guard let merged else { return }
    for name in names {
      let childPath = entry.path.appending(name).bytes
      do throws(OvlError) {
        guard let child = try lookup(name, in: merged) else {
          emit(.failure(fail(childPath, "no such file or directory", .noSuchFileOrDirectory)), childPath)
          continue
        }
        try verifyInode(child, walkRoot: walkRoot)
        walk(child, dir: nil, hash: hash, inodes: inodes, walkRoot: walkRoot, emit: emit)
      } catch {
        emit(.failure(error), childPath)
      }
    }
  }
}
