import OvlFormat
import OvlStack
import OvlSystem

/// Where a change builds what it publishes: `work/work`, or `work/index` with index=on (the
/// kernel then uses the index dir as its work dir). Every temp object of a command, of the
/// bulk apply and of fsck's repairs is made here, and published by one rename under the
/// locks of `withLockedParents`; whatever a crash leaves here is a `#` temp, which the next
/// mount (or `fsck -p`) removes.
public final class WorkArea {
  public let dir: LayerDir
  /// The dir as shown in messages (`/path/work/work`).
  public let shownPath: String
  /// Linking the shared whiteout failed other than with EMLINK: each whiteout is made
  /// anew (the kernel's `no_shared_whiteout`).
  public private(set) var noSharedWhiteout = false
  /// Whether an entry of the dir changed since `clearChanged()` (the dir needs an fsync).
  public private(set) var changed = false

  public init(dir: LayerDir, shownPath: String) {
    self.dir = dir
    self.shownPath = shownPath
  }

  /// `ovl_workdir_create`: the dir `name` (`work` or `index`) of the work root, mode 0000 as
  /// the kernel makes it, kept if it exists. A caller whom permission bits stop (a plain
  /// user: the kernel's mounter has its capabilities, this process has not) makes it, or an
  /// existing one of its own, mode 0700: it could not use a 0000 one, and the next mount
  /// empties the dir and makes it again with mode 0000 anyway.
  public static func open(_ name: String, in workRoot: LayerDir, workPath: String, create: Bool, credentials: Credentials) throws(OvlError) -> WorkArea {
    let bytes = Array(name.utf8)
    let path = workPath + "/" + name
    let mode: UInt32 = credentials.overridesPermissions ? 0 : 0o700
    if create {
      do {
        try workRoot.fd.makeDirectory(bytes, permissions: mode)
        try workRoot.fd.changeMode(bytes, permissions: mode)
      } catch .fileExists {
      } catch {
        throw .system(call: "mkdir", path: path, errno: error)
      }
    }
    do throws(Errno) {
      let fd = try FD.open(bytes, in: workRoot.fd, .directory)
      return WorkArea(dir: LayerDir(layer: 0, fd: fd, path: []), shownPath: path)
    } catch .permissionDenied where create {
      let owner = try step("statx", path) { () throws(Errno) in try workRoot.fd.stat(bytes).uid }
      if owner == credentials.uid && !credentials.overridesPermissions {
        // A 0000 dir a mount made, owned by this user: made usable, as above.
        try step("chmod", path) { () throws(Errno) in try workRoot.fd.changeMode(bytes, permissions: 0o700) }
      } else {
        // Left by another user's mount (root's, or one this user namespace does not map):
        // the kernel's next mount replaces it (`ovl_workdir_create` removes and makes it
        // again), and so does this session when it is empty; one with entries is refused.
        do throws(Errno) {
          try workRoot.fd.remove(bytes, directory: true)
          try workRoot.fd.makeDirectory(bytes, permissions: mode)
          try workRoot.fd.changeMode(bytes, permissions: mode)
        } catch {
          throw .format(path: path, reason: "not usable by this user (owner uid \(owner)) and not replaceable: \(error)", errno: .permissionDenied)
        }
      }
      let fd = try step("open", path) { () throws(Errno) in try FD.open(bytes, in: workRoot.fd, .directory) }
      return WorkArea(dir: LayerDir(layer: 0, fd: fd, path: []), shownPath: path)
    } catch {
      throw .system(call: "open", path: path, errno: error)
    }
  }

  public func shown(_ name: [UInt8]) -> String { shownPath + "/" + name.string }

  /// The lock of this dir in the global order, for `withLockedParents`.
  public func locked(_ name: [UInt8], expected: FileID?) -> LockedChild {
    LockedChild(dir, child: name, expected: expected, path: shown(name), isWorkDir: true)
  }

  public func markChanged() { changed = true }
  public func clearChanged() { changed = false }

  /// The shared whiteout (`ofs->whiteout`): whiteouts are hard links of it, as the kernel
  /// makes them, so thousands of whiteouts cost one inode. Unlike a mount's it has a fixed
  /// name and is kept for the next session (a mount's next start removes it).
  public static let whiteoutTemplate = Array("#ovltool-whiteout".utf8)

  /// A mount starts with a new shared whiteout (it empties the work dir).
  public func dropSharedWhiteout() {
    do throws(Errno) { try dir.fd.remove(Self.whiteoutTemplate) } catch {}
  }

  /// `ovl_whiteout`: a new whiteout under a temp name, ready to be renamed into place.
  /// EMLINK on the template makes the template itself the whiteout (a new one is made next
  /// time); any other link error stops the sharing. `shared: false` makes a whiteout of its
  /// own inode (what the kernel's index cleanup makes).
  public func newWhiteout(shared: Bool = true) throws(OvlError) -> TempEntry {
    let name = temporaryName()
    let template = Self.whiteoutTemplate
    markChanged()
    while shared && !noSharedWhiteout {
      do throws(Errno) {
        try dir.fd.link(template, as: name, in: dir.fd)
        return TempEntry(dir: dir, name: name, isDirectory: false)
      } catch .noSuchFileOrDirectory {
        do throws(Errno) {
          try dir.fd.makeWhiteout(template)
        } catch .fileExists {
        } catch {
          throw .system(call: "mknod", path: shown(template), errno: error)
        }
      } catch .tooManyLinks {
        do throws(Errno) {
          try dir.fd.rename(template, to: name, in: dir.fd, flags: .noReplace)
          return TempEntry(dir: dir, name: name, isDirectory: false)
        } catch .noSuchFileOrDirectory {
          continue  // another process took it
        } catch {
          throw .system(call: "renameat2", path: shown(name), errno: error)
        }
      } catch {
        noSharedWhiteout = true
      }
    }
    try step("mknod", shown(name)) { () throws(Errno) in try dir.fd.makeWhiteout(name) }
    return TempEntry(dir: dir, name: name, isDirectory: false)
  }

  /// A new empty directory (mode 0000 until its metadata is set) under a temp name.
  public func newDirectory() throws(OvlError) -> TempEntry {
    let name = temporaryName()
    markChanged()
    try step("mkdir", shown(name)) { () throws(Errno) in try dir.fd.makeDirectory(name, permissions: 0) }
    return TempEntry(dir: dir, name: name, isDirectory: true)
  }

  /// A complete O_TMPFILE made here gets a temp name, ready to be published over something
  /// (a new name on a free name needs none: `FD.link(as:in:)` of the target dir).
  public func name(_ file: borrowing FD) throws(OvlError) -> TempEntry {
    let name = temporaryName()
    markChanged()
    try step("linkat", shown(name)) { () throws(Errno) in try file.link(as: name, in: dir.fd) }
    return TempEntry(dir: dir, name: name, isDirectory: false)
  }

  /// The complete temp becomes `name` in `target` in one `renameat2` with `flags`, under the
  /// locks of both dirs, `name` verified to be `expected` (nil with `.noReplace`: free).
  /// With `.exchange` what was at `name` is now under the temp's name here, and is removed
  /// (a tree: a directory that held whiteouts). Returns false when `.noReplace` found the
  /// name taken (another process published first); the temp is then removed.
  @discardableResult
  public func publish(
    _ temp: consuming TempEntry, as name: [UInt8], in target: LayerDir, expected: FileID?, flags: RenameFlags, path: String
  ) throws(OvlError) -> Bool {
    let tempName = temp.name
    let published = try withLockedParents(locked(tempName, expected: nil), LockedChild(target, child: name, expected: expected, path: path)) {
      () throws(OvlError) -> Bool in
      do throws(Errno) {
        try dir.fd.rename(tempName, to: name, in: target.fd, flags: flags)
      } catch .fileExists where flags.contains(.noReplace) {
        return false
      } catch {
        throw .system(call: "renameat2", path: path, errno: error)
      }
      return true
    }
    markChanged()
    guard published else { return false }
    temp.commit()
    if flags.contains(.exchange) { try removeTree(tempName) }
    return true
  }

  /// `ovl_cleanup_and_whiteout`: a whiteout replaces `name` in `target` in one rename — an
  /// exchange for a directory, whose old tree is then removed from here. `expected` is the
  /// object at `name` (nil: the name must be free).
  public func replaceWithWhiteout(_ name: [UInt8], in target: LayerDir, expected: FileStatus?, path: String, shared: Bool = true) throws(OvlError) {
    let whiteout = try newWhiteout(shared: shared)
    let flags: RenameFlags = expected == nil ? .noReplace : expected?.type == .directory ? .exchange : []
    if try !publish(whiteout, as: name, in: target, expected: expected?.id, flags: flags, path: path) {
      throw .format(path: path, reason: "file exists", errno: .fileExists)
    }
  }

  /// Moves `name` out of `source` into this dir in one rename (the object verified to be
  /// `expected`) and removes it there: the way to delete a tree that may hold whiteouts, so
  /// that a crash midway leaves a temp here, never a half-removed tree in a layer.
  public func moveOutAndRemove(_ name: [UInt8], from source: LayerDir, expected: FileID, path: String) throws(OvlError) {
    let temp = temporaryName()
    try withLockedParents(locked(temp, expected: nil), LockedChild(source, child: name, expected: expected, path: path)) {
      () throws(OvlError) in
      try step("renameat2", path) { () throws(Errno) in try source.fd.rename(name, to: temp, in: dir.fd, flags: .noReplace) }
    }
    markChanged()
    try removeTree(temp)
  }

  /// Removes `name` here and everything under it, never following a symlink: only temps,
  /// which the kernel removes at mount anyway (a crash midway leaves a smaller one).
  public func removeTree(_ name: [UInt8]) throws(OvlError) {
    markChanged()
    try step("remove", shown(name)) { () throws(Errno) in try dir.fd.removeTree(name) }
  }
}
