import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

/// A merged-view path resolved for a change: its parent directory and the entry under the
/// name (nil when the name is free or whited out).
struct Target {
  let path: MergedPath
  let name: [UInt8]
  let parent: MergedDir
  let entry: MergedEntry?

  var parentPath: MergedPath { parent.path }
  var shown: String { path.shown }
}

extension WriteSession {
  /// A merged-view path argument (`/a/b` or `a/b`, `.` dropped); `..` is refused, as the
  /// root has no parent inside the layers and a script's paths should say where they go.
  func parse(_ path: [UInt8], what: String = "a merged-view path") throws(OvlError) -> MergedPath {
    do {
      return try MergedPath(parsing: path, .argument)
    } catch .dotDot {
      throw .usage("\(path.string): '..' is not allowed in \(what)")
    } catch {
      throw .format(path: path.string, reason: "file name too long", errno: .fileNameTooLong)
    }
  }

  /// Looks `path` up in the merged view, every parent by the kernel's lookup.
  func locate(_ path: MergedPath) throws(OvlError) -> Target {
    guard let name = path.name, let parentPath = path.parent else {
      throw .format(path: "/", reason: "the root of the merged view cannot be created, removed or moved", errno: .resourceBusy)
    }
    let dir = try directory(parentPath)
    let entry = try stack.lookup(name, in: dir)
    // The kernel's lookup of the last component records a merged directory's origin too.
    if let entry, let upperParent = dir.upper { try fixOrigin(entry, parent: upperParent) }
    return Target(path: path, name: name, parent: dir, entry: entry)
  }

  /// The merged directory at `path`, from the cache where its deepest known ancestor is;
  /// directories in the upper layer are cached.
  func directory(_ path: MergedPath) throws(OvlError) -> MergedDir {
    let components = path.components
    var depth = components.count
    var dir: MergedDir?
    while depth > 0 {
      if let cached = directories[path.prefix(depth)] { dir = cached; break }
      depth -= 1
    }
    if dir == nil {
      if let root = directories[.root] {
        dir = root
      } else {
        let root = try stack.root()
        cacheDirectory(root, at: .root)
        dir = root
      }
    }
    guard var dir else { throw .format(path: "/", reason: "no root", errno: .ioError) }
    for component in components[depth...] {
      guard let entry = try stack.lookup(component, in: dir) else {
        throw .format(path: dir.path.appending(component).shown, reason: "no such file or directory", errno: .noSuchFileOrDirectory)
      }
      if entry.status.type == .symlink {
        throw .format(path: entry.path.shown, reason: "is a symlink: paths are resolved without following symlinks", errno: .tooManySymbolicLinkLevels)
      }
      guard entry.isDirectory else { throw .format(path: entry.path.shown, reason: "not a directory", errno: .notDirectory) }
      if let upperParent = dir.upper { try fixOrigin(entry, parent: upperParent) }
      dir = try stack.open(entry)
      if dir.upper != nil { cacheDirectory(dir, at: entry.path) }
    }
    return dir
  }

  /// Looks the target up again (after a copy-up or another change below its parent).
  func relocate(_ target: Target) throws(OvlError) -> Target { try locate(target.path) }

  /// `ovl_copy_up(dentry->d_parent)`: the target's parent is made an upper directory first;
  /// returns the target looked up again and the parent's upper directory.
  func withUpperParent(_ target: Target) throws(OvlError) -> (Target, LayerDir) {
    try prepareForChange()
    var target = target
    if target.parent.upper == nil {
      _ = try copyUp(target.parentPath, metacopy: false)
      target = try relocate(target)
    }
    guard let upperParent = target.parent.upper else {
      throw .format(path: target.parent.path.shown, reason: "no upper directory after copy-up", errno: .ioError)
    }
    return (target, upperParent)
  }

  /// Runs one namespace change. Caches that a change can make wrong are dropped first; the
  /// parents that copy-ups changed get their times back at the end, as the kernel restores
  /// them after each copy-up.
  func change<R>(_ body: () throws(OvlError) -> R) throws(OvlError) -> R {
    knownImpure.removeAll()
    let result = try body()
    try restoreParentTimes()
    return result
  }

  /// An upper directory whose entries this change modified: its new times stay (they are
  /// the change's, as on a mount) and it is fsynced at the end.
  func touched(_ dir: LayerDir) {
    // The work and index dirs share the upper root's key (their paths are empty too).
    if dir !== tempDir && dir !== index { parentTimes.removeValue(forKey: dir.path) }
    markDirty(dir)
  }

  /// The kernel's `OVL_TYPE_ORIGIN`: the upper has a lower counterpart it was copied from
  /// (a merged directory, or a non-directory with a decodable `origin`).
  func hasOrigin(_ entry: MergedEntry) throws(OvlError) -> Bool {
    guard let upper = entry.upper else { return false }
    if entry.isDirectory {
      // A non-indexed upper with nfs_export is not hashed by its lower (`ovl_hash_bylower`).
      return !entry.lowers.isEmpty && !(stack.options.nfsExport && !stack.options.index)
    }
    let origin = try step("getxattr", describe(entry.path)) { () throws(Errno) in try upper.xattr(namespace.name(.origin)) }
    return !(origin ?? []).isEmpty
  }

  /// `ovl_pure_upper`: an upper directory with nothing below that may hold whiteouts.
  func isPureUpper(_ entry: MergedEntry) throws(OvlError) -> Bool {
    guard let upper = entry.upper, entry.lowers.isEmpty else { return false }
    guard entry.isDirectory else { return true }
    return try step("listxattr", describe(entry.path)) { () throws(Errno) in
      !(try upper.xattrNames().contains(namespace.name(.origin)))
    }
  }

  /// `ovl_type_merge_or_lower`: a directory merged with (or only in) lower layers, or a
  /// non-directory whose data is still below (lower-only or metacopy).
  func isMergeOrLower(_ entry: MergedEntry) -> Bool {
    guard entry.upper != nil else { return true }
    return entry.isDirectory ? !entry.lowers.isEmpty : entry.upperIsMetacopy
  }

  /// `ovl_check_empty_dir`: a directory to remove or replace may hold nothing but whiteouts.
  func requireEmpty(_ entry: MergedEntry) throws(OvlError) {
    let dir = try stack.open(entry)
    let names = try stack.list(dir).filter { $0 != [0x2E] && $0 != [0x2E, 0x2E] }
    dir.forgetListing()
    if !names.isEmpty { throw .format(path: entry.path.shown, reason: "directory not empty", errno: .directoryNotEmpty) }
  }

  /// The upper name is a whiteout (the merged name is negative because of it).
  func upperWhiteout(_ name: [UInt8], in dir: LayerDir) throws(OvlError) -> FileStatus? {
    let path = describe(dir.path + [UInt8(ascii: "/")] + name)
    guard let status = try step("statx", path, { () throws(Errno) in try dir.fd.statIfPresent(name) }) else { return nil }
    let object = RealObject(layer: 0, parent: dir, name: name, status: status)
    return try step("listxattr", path) { () throws(Errno) in try stack.isWhiteoutObject(object) } ? status : nil
  }

  /// A copy-up for a change that does not write data: metadata only where metacopy=on.
  func copyUpForChange(_ path: MergedPath) throws(OvlError) {
    try prepareForChange()
    _ = try copyUp(path, metacopy: stack.options.metacopy)
  }

  /// How a new object in `parent` starts out (`posix_acl_create`): the mode the caller asked
  /// for, else the default less the umask — or, where the parent has a default ACL, the
  /// default cut by that ACL instead of the umask, with the access ACL (and for a directory
  /// the default ACL) the object inherits. A symlink has no ACLs.
  func newObjectMode(
    in parent: LayerDir, requested: UInt32?, default value: UInt32, isDirectory: Bool, isSymlink: Bool
  ) throws(OvlError) -> (permissions: UInt32, xattrs: [([UInt8], [UInt8])]) {
    let raw: [UInt8]?
    do {
      raw = isSymlink ? nil : try parent.fd.xattr(PosixACL.defaultName)
    } catch .notSupported {
      raw = nil
    } catch {
      throw .system(call: "getxattr", path: describe(parent.path), errno: error)
    }
    guard let raw, let acl = PosixACL(xattr: raw) else { return (requested ?? (value & ~umask), []) }
    let created = acl.create(mode: value, isDirectory: isDirectory)
    var xattrs: [([UInt8], [UInt8])] = []
    if let access = created.access { xattrs.append((PosixACL.accessName, access.xattrValue)) }
    if let inherited = created.default { xattrs.append((PosixACL.defaultName, inherited.xattrValue)) }
    return (requested ?? created.permissions, xattrs)
  }
}
