import OvlFormat
import OvlStack
import OvlSystem

extension WriteSession {
  /// The shared whiteout in the temp dir (`ofs->whiteout`): whiteouts are hard links of it,
  /// as the kernel makes them, so thousands of whiteouts cost one inode. Unlike a mount's it
  /// has a fixed name and is kept for the next session (a mount's next start removes it).
  static let whiteoutTemplate = Array("#ovltool-whiteout".utf8)

  /// `ovl_whiteout`: a new whiteout under a temp name in the temp dir, ready to be renamed
  /// into place. EMLINK on the template makes the template itself the whiteout (a new one is
  /// made next time); any other link error stops the sharing.
  func makeWhiteoutTemp() throws(OvlError) -> TempEntry {
    let name = temporaryName()
    let path = workPath + "/" + name.string
    let template = Self.whiteoutTemplate
    while !noSharedWhiteout {
      do throws(Errno) {
        try tempDir.fd.link(template, as: name, in: tempDir.fd)
        return TempEntry(dir: tempDir, name: name, isDirectory: false)
      } catch .noSuchFileOrDirectory {
        do throws(Errno) {
          try tempDir.fd.makeWhiteout(template)
        } catch .fileExists {
        } catch {
          throw .system(call: "mknod", path: workPath + "/" + template.string, errno: error)
        }
      } catch .tooManyLinks {
        do throws(Errno) {
          try tempDir.fd.rename(template, to: name, in: tempDir.fd, flags: .noReplace)
          return TempEntry(dir: tempDir, name: name, isDirectory: false)
        } catch .noSuchFileOrDirectory {
          continue  // another process took it
        } catch {
          throw .system(call: "renameat2", path: path, errno: error)
        }
      } catch {
        noSharedWhiteout = true
      }
    }
    try step("mknod", path) { () throws(Errno) in try tempDir.fd.makeWhiteout(name) }
    return TempEntry(dir: tempDir, name: name, isDirectory: false)
  }

  /// The temp dir's lock, then `dir`'s with `child` verified to be `expected`: the global
  /// lock order of every change that moves a name between the two.
  func withTempDirAndParentLocked(
    _ dir: LayerDir, child: [UInt8], expected: FileID?, path: String, _ body: () throws(OvlError) -> Void
  ) throws(OvlError) {
    try withLockedParent(tempDir, child: [], expected: nil, path: workPath) { () throws(OvlError) in
      try withLockedParent(dir, child: child, expected: expected, path: path, body)
    }
  }

  /// `ovl_create_over_whiteout`'s last step: the complete temp is renamed over the whiteout
  /// at `name` — a directory by exchange, after which the whiteout, now under the temp name,
  /// is removed.
  func publishOverWhiteout(_ temp: consuming TempEntry, as name: [UInt8], in dir: LayerDir, whiteout: FileStatus, path: String) throws(OvlError) {
    let tempName = temp.name
    let exchange = temp.isDirectory
    try withTempDirAndParentLocked(dir, child: name, expected: whiteout.id, path: path) { () throws(OvlError) in
      try step("renameat2", path) { () throws(Errno) in try tempDir.fd.rename(tempName, to: name, in: dir.fd, flags: exchange ? .exchange : []) }
    }
    temp.commit()
    if exchange {
      try step("unlink", workPath + "/" + tempName.string) { () throws(Errno) in try tempDir.fd.remove(tempName) }
    }
    markDirty(tempDir)
  }

  /// `ovl_cleanup_and_whiteout`: a whiteout replaces `name` in `dir` in one rename — an
  /// exchange for a directory, whose old tree (empty or whiteouts only) is then removed
  /// from the temp dir. `expected` is the object at `name` (nil: the name must be free).
  func cleanupAndWhiteout(_ name: [UInt8], in dir: LayerDir, expected: FileStatus?, path: String) throws(OvlError) {
    let whiteout = try makeWhiteoutTemp()
    let isDirectory = expected?.type == .directory
    let flags: RenameFlags = expected == nil ? .noReplace : isDirectory ? .exchange : []
    try withTempDirAndParentLocked(dir, child: name, expected: expected?.id, path: path) { () throws(OvlError) in
      try step("renameat2", path) { () throws(Errno) in try tempDir.fd.rename(whiteout.name, to: name, in: dir.fd, flags: flags) }
    }
    let leftover = whiteout.name
    whiteout.commit()
    if isDirectory {
      try step("remove", workPath + "/" + leftover.string) { () throws(Errno) in try tempDir.fd.removeTree(leftover) }
    }
    touched(dir)
    markDirty(tempDir)
  }

  /// Removes an upper object that has nothing below it to hide: under its parent's lock, the
  /// object verified; a directory that may hold whiteouts is first moved to the temp dir
  /// in one rename (the kernel's `ovl_clear_empty` + rmdir ends the same), then deleted.
  func removeUpper(_ name: [UInt8], in dir: LayerDir, expected: FileStatus, mayHoldWhiteouts: Bool, path: String) throws(OvlError) {
    if expected.type == .directory && mayHoldWhiteouts {
      let temp = temporaryName()
      try withTempDirAndParentLocked(dir, child: name, expected: expected.id, path: path) { () throws(OvlError) in
        try step("renameat2", path) { () throws(Errno) in try dir.fd.rename(name, to: temp, in: tempDir.fd, flags: .noReplace) }
      }
      try step("remove", workPath + "/" + temp.string) { () throws(Errno) in try tempDir.fd.removeTree(temp) }
      markDirty(tempDir)
    } else {
      try withLockedParent(dir, child: name, expected: expected.id, path: path) { () throws(OvlError) in
        let call = expected.type == .directory ? "rmdir" : "unlink"
        try step(call, path) { () throws(Errno) in try dir.fd.remove(name, directory: expected.type == .directory) }
      }
    }
    touched(dir)
  }

  /// `ovl_clear_empty`: a merged directory that holds only whiteouts is replaced, in one
  /// exchange, by an empty opaque copy of itself (xattrs, owner, mode, times); the old one
  /// is removed from the temp dir. Used before a rename replaces the directory.
  func clearEmpty(_ name: [UInt8], in dir: LayerDir, expected: FileStatus, path: String) throws(OvlError) {
    let temp = temporaryName()
    let tempPath = workPath + "/" + temp.string
    try step("mkdir", tempPath) { () throws(Errno) in try tempDir.fd.makeDirectory(temp, permissions: 0) }
    let owner = TempEntry(dir: tempDir, name: temp, isDirectory: true)
    let source = RealObject(layer: 0, parent: dir, name: name, status: expected)
    for attribute in try step("listxattr", path, { () throws(Errno) in try source.xattrNames() }) where !namespace.isPrivate(attribute) {
      guard let value = try step("getxattr", path, { () throws(Errno) in try source.xattr(attribute) }) else { continue }
      try step("setxattr", tempPath) { () throws(Errno) in try tempDir.fd.setXattr(temp, attribute, value) }
    }
    try step("setxattr", tempPath) { () throws(Errno) in try tempDir.fd.setXattr(temp, namespace.name(.opaque), Opaque.opaque.value) }
    try step("fchownat", tempPath) { () throws(Errno) in try tempDir.fd.changeOwner(temp, uid: expected.uid, gid: expected.gid) }
    try step("fchmodat", tempPath) { () throws(Errno) in try tempDir.fd.changeMode(temp, permissions: expected.permissions) }
    try step("utimensat", tempPath) { () throws(Errno) in try tempDir.fd.setTimes(temp, atime: expected.atime, mtime: expected.mtime) }
    try withTempDirAndParentLocked(dir, child: name, expected: expected.id, path: path) { () throws(OvlError) in
      try step("renameat2", path) { () throws(Errno) in try tempDir.fd.rename(temp, to: name, in: dir.fd, flags: .exchange) }
    }
    owner.commit()
    forgetDirectories(under: dir.path + [UInt8(ascii: "/")] + name)
    try step("remove", tempPath) { () throws(Errno) in try tempDir.fd.removeTree(temp) }
    touched(dir)
    markDirty(tempDir)
  }
}
