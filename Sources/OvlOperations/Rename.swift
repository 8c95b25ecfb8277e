import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

extension WriteSession {
  /// rename(2) on the merged view (`ovl_rename`): `destination` is the new name; an existing
  /// destination is replaced where rename(2) replaces it. A lower or merged directory moves
  /// only with redirect_dir=on (else EXDEV, as the kernel answers and mv(1) then copies).
  ///
  /// `copy`: where the kernel answers EXDEV, do what mv(1) does then — copy the tree to the
  /// destination (modes, owners, xattrs, times; hard links inside it are not kept) and
  /// remove the source.
  public func rename(_ source: [UInt8], to destination: [UInt8], copy: Bool = false) throws(OvlError) {
    let from = try parse(source)
    let to = try parse(destination)
    try change { () throws(OvlError) in
      do throws(OvlError) {
        try renameOne(from, to)
      } catch where copy && error.errno == .improperLink {
        let new = try locate(to)
        if let existing = new.entry {
          // rename(2) would have replaced an empty directory; mv(1) removes it first.
          try requireEmpty(existing)
          try remove(to, mode: .recursive)
        }
        try copyTree(from, to)
        try remove(from, mode: .recursive)
      } catch {
        throw error
      }
    }
  }

  /// Copies a merged-view tree to a new place, as cp -a does (data, mode, owner, xattrs,
  /// mtime; a directory's time after its contents).
  private func copyTree(_ from: MergedPath, _ to: MergedPath) throws(OvlError) {
    let source = try locate(from)
    guard let entry = source.entry else {
      throw .format(path: source.shown, reason: "no such file or directory", errno: .noSuchFileOrDirectory)
    }
    let record = try stack.record(entry, hash: false)
    let status = record.status
    let toPath = to
    switch status.type {
    case .directory:
      try create(toPath, .directory, permissions: status.permissions)
      let dir = try stack.open(entry)
      let names = try stack.list(dir).filter { $0 != [0x2E] && $0 != [0x2E, 0x2E] }
      dir.forgetListing()
      for name in names { try copyTree(from.appending(name), to.appending(name)) }
    case .regular:
      try put(toPath, contents: .merged(from.bytes), attributes: ObjectAttributes(permissions: status.permissions))
    case .symlink:
      try create(toPath, .symlink(target: record.target ?? []))
    default:
      try create(toPath, .node(status.type, major: status.rdevMajor, minor: status.rdevMinor), permissions: status.permissions)
    }
    try setAttribute(toPath, .owner(uid: status.uid, gid: status.gid))
    if status.type != .symlink { try setAttribute(toPath, .mode(status.permissions)) }
    for (name, value) in record.xattrs { try setAttribute(toPath, .setXattr(name: name, value: value)) }
    try setAttribute(toPath, .times(status.mtime))
  }

  private func renameOne(_ from: MergedPath, _ to: MergedPath) throws(OvlError) {
    // renameat2's order: both parents, the source, the traps, then the types.
    let old = try locate(from)
    let new = try locate(to)
    guard let oldEntry = old.entry else {
      throw .format(path: old.shown, reason: "no such file or directory", errno: .noSuchFileOrDirectory)
    }
    if from == to { return }
    if from.contains(to) {
      throw .format(path: new.shown, reason: "cannot move a directory into itself", errno: .invalidArgument)
    }
    if to.contains(from) {
      throw .format(path: new.shown, reason: "directory not empty (it holds the source)", errno: .directoryNotEmpty)
    }
    let isDirectory = oldEntry.isDirectory
    if let newEntry = new.entry {
      if isDirectory && !newEntry.isDirectory { throw .format(path: new.shown, reason: "not a directory", errno: .notDirectory) }
      if !isDirectory && newEntry.isDirectory { throw .format(path: new.shown, reason: "is a directory", errno: .isDirectory) }
      // Two names of one inode: rename(2) does nothing.
      if let a = oldEntry.upper, let b = newEntry.upper, a.status.id == b.status.id { return }
    }
    // ovl_can_move: don't copy up directory trees.
    if isDirectory && isMergeOrLower(oldEntry) && stack.options.redirectMode != .on {
      throw .format(path: old.shown, reason: "a lower directory moves only with redirect_dir=on (mv --copy copies it)", errno: .improperLink)
    }
    if let newEntry = new.entry, newEntry.isDirectory, !(try isPureUpper(newEntry)) { try requireEmpty(newEntry) }

    // Which rename: leave a whiteout where the source still exists below; swap with a
    // whiteout at the destination (which then moves to the old name, or is removed).
    let lowerPositive = try stack.lowerPositive(old.name, in: old.parent, entry: oldEntry)
    let newWhiteoutBefore = new.entry == nil ? try new.parent.upper.flatMap { (dir) throws(OvlError) in try upperWhiteout(new.name, in: dir) } : nil
    var flags: RenameFlags = []
    var removeWhiteoutAfter = false
    if lowerPositive {
      flags = newWhiteoutBefore == nil ? .whiteout : .exchange
    } else if isDirectory && newWhiteoutBefore != nil {
      flags = .exchange
      removeWhiteoutAfter = true
    }

    try copyUpForChange(from)
    _ = try withUpperParent(new)
    // A replaced name's inode stays locked until the rename is done.
    try withNlinkStarted(try relocate(new)) { (located, nlink) throws(OvlError) in
      var target = located
      var source = try relocate(old)
      guard let moving = source.entry, let movingUpper = moving.upper, let oldParent = source.parent.upper,
        let newParent = target.parent.upper
      else {
        throw .format(path: old.shown, reason: "no upper object after copy-up", errno: .ioError)
      }
      if let replaced = target.entry, replaced.isDirectory, let upperDir = replaced.upper, !(try isPureUpper(replaced)) {
        // The destination dir may hold whiteouts: replace it by an empty opaque copy first.
        try clearEmpty(target.name, in: newParent, expected: upperDir.status, path: describe(target.path))
        target = try relocate(target)
        source = try relocate(old)
      }
      let sameDirectory = oldParent.fd.rawValue == newParent.fd.rawValue || source.parent.path == target.parent.path
      if !sameDirectory, try hasOrigin(moving) { try setImpure(newParent) }

      // The destination's upper: nil (free name), the whiteout, or the object replaced.
      let destinationStatus = try step("statx", describe(target.path)) { () throws(Errno) in try newParent.fd.statIfPresent(target.name) }
      if flags.contains(.exchange) && destinationStatus == nil {
        throw .staleChild(path: describe(target.path))
      }
      let path = describe(source.path)
      let targetPath = describe(target.path)
      // Both parents locked in the global order, the moving object and what is at the new
      // name (or that nothing is) verified.
      try withLockedParents(
        LockedChild(oldParent, child: source.name, expected: movingUpper.status.id, path: path),
        destinationStatus.map { LockedChild(newParent, child: target.name, expected: $0.id, path: targetPath) }
          ?? .free(newParent, child: target.name, path: targetPath)
      ) { () throws(OvlError) in
        if isMergeOrLower(moving) {
          try setRedirect(source, moving, sameDirectory: sameDirectory)
        } else if isDirectory, !(try isOpaque(movingUpper)), target.parent.isMerge {
          // A pure upper directory moved into a merged one must not merge with what is below.
          try step("setxattr", path) { () throws(Errno) in try oldParent.fd.setXattr(source.name, namespace.name(.opaque), Opaque.opaque.value) }
        }
        try step("renameat2", path) { () throws(Errno) in
          try oldParent.fd.rename(source.name, to: target.name, in: newParent.fd, flags: flags)
        }
      }
      if removeWhiteoutAfter {
        try step("unlink", path) { () throws(Errno) in try oldParent.fd.remove(source.name) }
      }
      touched(oldParent)
      touched(newParent)
      forgetDirectories(under: source.path)
      forgetDirectories(under: target.path)
      try nlinkEnd(nlink, removed: true)
    }
  }

  private func isOpaque(_ object: RealObject) throws(OvlError) -> Bool {
    let value = try step("getxattr", describe(object.parent.path)) { () throws(Errno) in try object.xattr(namespace.name(.opaque)) }
    return Opaque(value: value) == .opaque
  }

  /// `ovl_set_redirect`: where the moved object's lower is found from now on. A redirect it
  /// has is kept when absolute, or when a relative one will do; relative (the old name) within
  /// one directory, absolute otherwise or for a lower hard link, built from each ancestor's own
  /// redirect so that it names the original lower path. Over 256 bytes: EXDEV.
  func setRedirect(_ target: Target, _ entry: MergedEntry, sameDirectory: Bool) throws(OvlError) {
    guard let upperObject = entry.upper else { return }
    let path = describe(target.path)
    let attribute = namespace.name(.redirect)
    let existing = try step("getxattr", path) { () throws(Errno) in try upperObject.parent.fd.xattr(upperObject.name, attribute) }
    let lowerLinks = entry.lowers.first?.status.links ?? 1
    let absolute = !sameDirectory || (!entry.isDirectory && lowerLinks > 1)
    if let existing, !existing.isEmpty, !absolute || existing.first == UInt8(ascii: "/") { return }
    var value: [UInt8]
    if absolute {
      value = try absoluteRedirect(target.path)
    } else {
      value = target.name
    }
    if value.count > 256 {
      throw .format(path: target.shown, reason: "redirect longer than 256 bytes (mv --copy copies instead)", errno: .improperLink)
    }
    try step("setxattr", path) { () throws(Errno) in try upperObject.parent.fd.setXattr(upperObject.name, attribute, value) }
  }

  /// `ovl_get_redirect(abs)`: from the object up to the root, each component replaced by that
  /// upper directory's own redirect; an absolute one ends the walk.
  private func absoluteRedirect(_ path: MergedPath) throws(OvlError) -> [UInt8] {
    let components = path.components
    // The redirect of every upper directory on the way (all of them are up by now).
    var redirects: [[UInt8]?] = []
    var dir = try step("open", upperPath) { () throws(Errno) in try FD.open([0x2E], in: upper.fd, .directory) }
    for (i, name) in components.enumerated() {
      let shown = describe(path.prefix(i + 1))
      redirects.append(try step("getxattr", shown) { () throws(Errno) in try dir.xattr(name, namespace.name(.redirect)) })
      if i < components.count - 1 {
        dir = try step("open", shown) { () throws(Errno) in try FD.open(name, in: dir, .directory) }
      }
    }
    var result: [UInt8] = []
    for (i, name) in components.enumerated().reversed() {
      let part = redirects[i].flatMap { $0.isEmpty ? nil : $0 } ?? name
      if part.first == UInt8(ascii: "/") { return part + result }
      result = [UInt8(ascii: "/")] + part + result
    }
    return result
  }
}
