import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

extension WriteSession {
  /// `ovl_create_over_whiteout`'s last step: the complete temp is renamed over the whiteout
  /// at `name` — a directory by exchange, after which the whiteout, now under the temp name,
  /// is removed.
  func publishOverWhiteout(_ temp: consuming TempEntry, as name: [UInt8], in dir: LayerDir, whiteout: FileStatus, path: String) throws(OvlError) {
    let flags: RenameFlags = temp.isDirectory ? .exchange : []
    try work.publish(temp, as: name, in: dir, expected: whiteout.id, flags: flags, path: path)
  }

  /// `ovl_cleanup_and_whiteout`: a whiteout replaces `name` in `dir` in one rename — an
  /// exchange for a directory, whose old tree (empty or whiteouts only) is then removed
  /// from the temp dir. `expected` is the object at `name` (nil: the name must be free).
  func cleanupAndWhiteout(_ name: [UInt8], in dir: LayerDir, expected: FileStatus?, path: String) throws(OvlError) {
    try work.replaceWithWhiteout(name, in: dir, expected: expected, path: path)
    touched(dir)
  }

  /// Removes an upper object that has nothing below it to hide: under its parent's lock, the
  /// object verified; a directory that may hold whiteouts is first moved to the temp dir
  /// in one rename (the kernel's `ovl_clear_empty` + rmdir ends the same), then deleted.
  func removeUpper(_ name: [UInt8], in dir: LayerDir, expected: FileStatus, mayHoldWhiteouts: Bool, path: String) throws(OvlError) {
    if expected.type == .directory && mayHoldWhiteouts {
      try work.moveOutAndRemove(name, from: dir, expected: expected.id, path: path)
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
    let temp = try work.newDirectory()
    let tempName = temp.name
    let tempPath = work.shown(tempName)
    let source = RealObject(layer: 0, parent: dir, name: name, status: expected)
    for attribute in try step("listxattr", path, { () throws(Errno) in try source.xattrNames() }) where !namespace.isPrivate(attribute) {
      guard let value = try step("getxattr", path, { () throws(Errno) in try source.xattr(attribute) }) else { continue }
      try step("setxattr", tempPath) { () throws(Errno) in try tempDir.fd.setXattr(tempName, attribute, value) }
    }
    try step("setxattr", tempPath) { () throws(Errno) in try tempDir.fd.setXattr(tempName, namespace.name(.opaque), Opaque.opaque.value) }
    try step("fchownat", tempPath) { () throws(Errno) in try tempDir.fd.changeOwner(tempName, uid: expected.uid, gid: expected.gid) }
    try step("fchmodat", tempPath) { () throws(Errno) in try tempDir.fd.changeMode(tempName, permissions: expected.permissions) }
    try step("utimensat", tempPath) { () throws(Errno) in try tempDir.fd.setTimes(tempName, atime: expected.atime, mtime: expected.mtime) }
    try work.publish(temp, as: name, in: dir, expected: expected.id, flags: .exchange, path: path)
    forgetDirectories(under: MergedPath(upperLayerPath: dir.path).appending(name))
    touched(dir)
  }
}

extension WriteSession {
  /// Replaces the char 0/0 whiteout at `name` in the upper dir `dir` by an xattr whiteout
  /// (for layers that will be stored on an overlay, kernel ≥ 6.7) in one rename: an empty
  /// file with the `whiteout` xattr, built in the work dir, is renamed over the whiteout
  /// under both dirs' locks, the whiteout verified. The dir is marked `opaque=x` first unless
  /// it is opaque already (a marked dir with a char whiteout still hides the name), so a
  /// crash leaves one whiteout or the other, never the name uncovered.
  public func convertToXattrWhiteout(_ name: [UInt8], in dir: LayerDir, dirShown: String) throws(OvlError) {
    let shown = dirShown + "/" + name.string
    guard let status = try step("fstatat", shown, { () throws(Errno) in try dir.fd.statIfPresent(name) }), status.isWhiteoutDevice else { return }
    try prepareForChange()
    let opaque = try step("getxattr", dirShown) { () throws(Errno) in try dir.fd.xattr([0x2E], namespace.name(.opaque)) }
    if Opaque(value: opaque) != .opaque {
      try withLockedParent(dir, child: [], expected: nil, path: dirShown) { () throws(OvlError) in
        try step("setxattr", dirShown) { () throws(Errno) in try dir.fd.setXattr([0x2E], namespace.name(.opaque), Opaque.xwhiteouts.value) }
      }
    }
    let file = try step("open(O_TMPFILE)", work.shownPath) { () throws(Errno) in try tempDir.fd.openTemporaryFile(permissions: 0) }
    try step("fsetxattr", shown) { () throws(Errno) in try file.setXattr(namespace.name(.whiteout), []) }
    try work.publish(try work.name(file), as: name, in: dir, expected: status.id, flags: [], path: shown)
    touched(dir)
  }
}
