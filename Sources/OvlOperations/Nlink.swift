import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

/// The kernel's `ovl_inode_lock` across processes: an flock on the index entry, held while
/// its link count is read, changed and stored. Taken before any directory lock.
/// The lock on an indexed inode that a change of its link count holds from `ovl_nlink_start`
/// to `ovl_nlink_end` (the kernel's `ovl_inode_lock`): an `flock` on the index entry, so
/// two ovltool processes never count and link the same inode at once. Released when its
/// owner goes out of scope (`withNlinkStarted`), after the change's `linkat`/`unlink`.
struct InodeLock: ~Copyable {
  /// The open index entry whose `flock` is the lock; closing it releases the lock. None for
  /// an entry that is not a regular file (opening a fifo blocks, a device opens the device;
  /// such hard links are rare and keep the directory locks only), and for one this user may
  /// not open (mode 0000 without CAP_DAC_OVERRIDE): the directory locks remain.
  private let fd: FD?

  init(_ entry: RealObject, path: String) throws(OvlError) {
    fd = entry.status.type == .regular ? try Self.lockedDescriptor(entry, path: path) : nil
  }

  private static func lockedDescriptor(_ entry: RealObject, path: String) throws(OvlError) -> FD? {
    do throws(Errno) {
      let opened = try FD.open(entry.name, in: entry.parent.fd, .readOnly)
      try opened.lock()
      return opened
    } catch .permissionDenied {
      return nil
    } catch {
      throw .system(call: "open+flock", path: path, errno: error)
    }
  }

  /// `body` run while the lock is held: the lock ends after it, however it ends.
  static func whileLocked<R>(_ entry: RealObject, path: String, _ body: () throws(OvlError) -> R) throws(OvlError) -> R {
    let lock = try InodeLock(entry, path: path)
    return try lock.holding(body)
  }

  private borrowing func holding<R>(_ body: () throws(OvlError) -> R) throws(OvlError) -> R { try body() }
}

/// An indexed inode whose overlay link count a change is about to move (`ovl_nlink_start`).
struct NlinkState {
  /// The index entry (`index/<hex>`), or nil for a directory index of nfs_export.
  let index: RealObject
  let isDirectory: Bool
  /// The overlay link count before the change.
  let links: Int
}

extension WriteSession {
  /// `ovl_need_index`: copy-up of this entry goes through the index (every lower object
  /// with nfs_export, else lower hard links).
  func needsIndex(_ entry: MergedEntry) -> Bool {
    guard index != nil, let lower = entry.lowers.first else { return false }
    if stack.options.nfsExport { return true }
    return lower.status.type != .directory && lower.status.links > 1
  }

  /// The entry's own name is in the upper layer (not only its index entry).
  func hasUpperAlias(_ entry: MergedEntry) -> Bool { entry.upper != nil && !isIndexAlias(entry) }

  /// The index entry of an upper entry (`OVL_INDEX`): `index/<hex of its origin>` when that
  /// is the same inode (for a directory with nfs_export: the directory index of its lower).
  func indexEntry(of entry: MergedEntry) throws(OvlError) -> RealObject? {
    guard let index, let upper = entry.upper else { return nil }
    if upper.parent === index { return upper }
    let name: [UInt8]
    if entry.isDirectory {
      guard stack.options.nfsExport, let lower = entry.lowers.first else { return nil }
      guard let handle = try? stack.encodeHandle(lower.parent, lower.name, upper: false) else { return nil }
      name = handle.indexName
    } else {
      let origin = try step("getxattr", describe(entry.path)) { () throws(Errno) in try upper.xattr(namespace.name(.origin)) }
      guard let origin, !origin.isEmpty else { return nil }
      name = Array(Hex.encode(origin).utf8)
    }
    let path = workPath + "/index/" + name.string
    guard let status = try step("statx", path, { () throws(Errno) in try index.fd.statIfPresent(name) }) else { return nil }
    if !entry.isDirectory && status.id != upper.status.id { return nil }
    if entry.isDirectory && status.type != .directory { return nil }
    return RealObject(layer: 0, parent: index, name: name, status: status)
  }

  /// The overlay link count of an indexed inode: its `nlink` xattr relative to the upper
  /// (or lower) link count, else the upper's count (`ovl_get_nlink`). The xattr counts only
  /// where the lower is a hard link: with no lower, or a lower of one link, the kernel takes
  /// the upper's own count (so an nfs_export index entry of a single-link file, two upper
  /// links, survives the removal of its name as a regular file with `U+0`). `fallback` is
  /// `ovl_get_nlink`'s: what a count that cannot be read gives (nil: the upper's count, as
  /// the inode lookup passes it; 0 for the mount's orphan check).
  func overlayLinks(_ indexed: RealObject, lowerLinks: Int?, fallback: Int? = nil) throws(OvlError) -> Int {
    let path = workPath + "/index/" + indexed.name.string
    let upperLinks = Int(try step("statx", path) { () throws(Errno) in try indexed.parent.fd.stat(indexed.name).links })
    let fallback = fallback ?? upperLinks
    if lowerLinks == 1 { return fallback }
    let stored = try step("getxattr", path) { () throws(Errno) in try indexed.parent.fd.xattr(indexed.name, namespace.name(.nlink)) }
    guard let stored, let nlink = NlinkXattr(value: stored) else { return fallback }
    switch nlink.base {
    case .upper: return nlink.overlayLinks(baseLinks: upperLinks) ?? fallback
    case .lower: return lowerLinks.flatMap { nlink.overlayLinks(baseLinks: $0) } ?? fallback
    }
  }

  /// `ovl_nlink_start` … `ovl_nlink_end`: before a change that drops or adds a link of
  /// `target`'s inode, an indexed lower without an upper alias is copied up (to have an
  /// index entry to count on), the inode is locked, and the overlay link count is stored
  /// relative to the upper's; `body` gets the target looked up again and what `nlinkEnd`
  /// needs, and makes the change while the inode lock is held.
  func withNlinkStarted<R>(_ target: Target, _ body: (Target, NlinkState?) throws(OvlError) -> R) throws(OvlError) -> R {
    guard let entry = target.entry else { return try body(target, nil) }
    var target = target
    if needsIndex(entry) && !hasUpperAlias(entry) {
      try copyUpForChange(target.path)
      target = try relocate(target)
    }
    guard let entry = target.entry, let indexed = try indexEntry(of: entry) else { return try body(target, nil) }
    if entry.isDirectory { return try body(target, NlinkState(index: indexed, isDirectory: true, links: 0)) }
    let path = workPath + "/index/" + indexed.name.string
    return try InodeLock.whileLocked(indexed, path: path) { () throws(OvlError) -> R in
      // `ovl_get_nlink`'s lower: the one the lookup found, else the decoded origin.
      let lower = entry.lowers.first?.status ?? entry.upper.flatMap { stack.decodeOrigin(of: $0)?.status }
      let links: Int
      if lower?.links ?? 1 <= 1, let known = inodeLinks[indexed.status.id] {
        // The count only this session knows (a lower of one link: the layers say U+0).
        links = known
      } else {
        // A lower hard link: the `nlink` xattr, read under the inode lock, is the count —
        // another process may have changed it since this session last did.
        links = try overlayLinks(indexed, lowerLinks: lower.map { Int($0.links) })
      }
      try withLockedParent(indexed.parent, child: indexed.name, expected: indexed.status.id, path: path) { () throws(OvlError) in
        try setNlink(indexed, overlayLinks: links)
      }
      return try body(target, NlinkState(index: indexed, isDirectory: false, links: links))
    }
  }

  /// `ovl_nlink_end` after a change that removed a name of the inode: when the overlay
  /// count reaches 0 the index entry goes (`ovl_cleanup_index`) — removed, or whited out
  /// with nfs_export so that an old file handle cannot open it again.
  func nlinkEnd(_ state: NlinkState?, removed: Bool) throws(OvlError) {
    guard let state, removed, let index else { return }
    let path = workPath + "/index/" + state.index.name.string
    if inodeLinks[state.index.status.id] != nil { inodeLinks[state.index.status.id] = state.links - 1 }
    if !state.isDirectory {
      guard state.links - 1 <= 0 else { return }
      let upperLinks = try step("statx", path) { () throws(Errno) in try index.fd.stat(state.index.name).links }
      if upperLinks != 1 {
        // "cleanup linked index": the count is off; the kernel sets it to the upper's minus
        // the index entry itself.
        try setNlink(state.index, overlayLinks: Int(upperLinks) - 1)
        return
      }
    }
    let status = try step("statx", path) { () throws(Errno) in try index.fd.stat(state.index.name) }
    if stack.options.nfsExport {
      try cleanupAndWhiteout(state.index.name, in: index, expected: status, path: path)
    } else {
      try withLockedParent(index, child: state.index.name, expected: status.id, path: path) { () throws(OvlError) in
        try step("unlink", path) { () throws(Errno) in try index.fd.remove(state.index.name, directory: status.type == .directory) }
      }
      markDirty(index)
    }
  }
}

extension WriteSession {
  /// `ovl_indexdir_cleanup` as a mount does it: a non-directory index entry with no name
  /// left but its own (one link) whose overlay count is 0 — its lower has one link, or its
  /// `nlink` says so (`ovl_get_nlink` with fallback 0) — is an orphan: whited out with
  /// nfs_export (a fresh whiteout, not a link of the shared one: the mount's index cleanup
  /// makes its own), else removed. An entry whose origin no longer decodes is left alone
  /// (the kernel deletes it as stale; fsck reports it).
  func cleanupOrphanIndexEntries() throws(OvlError) {
    guard let index else { return }
    let listing = try step("getdents64", workPath + "/index") { () throws(Errno) in try index.fd.entries() }
    for item in listing where !item.isDirectory && item.name.first != UInt8(ascii: "#") {
      let path = workPath + "/index/" + item.name.string
      guard let status = try step("statx", path, { () throws(Errno) in try index.fd.statIfPresent(item.name) }),
        status.type != .directory, !status.isWhiteoutDevice, status.links == 1
      else { continue }
      // An entry can vanish at any step (another process's `nlink_end` removes it): skipped.
      do throws(OvlError) {
        let object = RealObject(layer: 0, parent: index, name: item.name, status: status)
        guard let origin = stack.decodeOrigin(of: object) else { continue }
        let lowerLinks = Int(origin.status.links)
        guard try overlayLinks(object, lowerLinks: lowerLinks, fallback: 0) == 0 else { continue }
        // Between another process's `nlink_start` and `nlink_end` of this inode (it removed
        // a name and has yet to remove the entry) the count reads 0 too: decide again under
        // the inode's lock, which that process holds until it is done.
        try InodeLock.whileLocked(object, path: path) { () throws(OvlError) in
          try removeIfOrphan(item.name, id: status.id, lowerLinks: lowerLinks, in: index, path: path)
        }
      } catch where error.errno == .noSuchFileOrDirectory {
        continue
      }
    }
  }

  /// Removes (or with nfs_export whites out) the index entry `name` if it is still the
  /// inode `id` with one link and an overlay count of 0; the caller holds the inode's lock.
  private func removeIfOrphan(_ name: [UInt8], id: FileID, lowerLinks: Int, in index: LayerDir, path: String) throws(OvlError) {
    guard let now = try step("statx", path, { () throws(Errno) in try index.fd.statIfPresent(name) }),
      now.id == id, now.links == 1
    else { return }
    let current = RealObject(layer: 0, parent: index, name: name, status: now)
    guard try overlayLinks(current, lowerLinks: lowerLinks, fallback: 0) == 0 else { return }
    if stack.options.nfsExport {
      try work.replaceWithWhiteout(name, in: index, expected: now, path: path, shared: false)
    } else {
      try withLockedParent(index, child: name, expected: now.id, path: path) { () throws(OvlError) in
        try step("unlink", path) { () throws(Errno) in try index.fd.remove(name) }
      }
      markDirty(index)
    }
  }
}
