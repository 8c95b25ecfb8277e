import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

extension WriteSession {
  /// Regular files: an O_TMPFILE in the work dir gets data and metadata, then its first
  /// name (`ovl_copy_up_tmpfile`); nothing is visible before it is complete. Returns false
  /// when another process published the same name first.
  func copyRegularFile(_ plan: CopyPlan, to name: [UInt8], in destination: LayerDir, indexNlink: [UInt8]? = nil) throws(OvlError) -> Bool {
    let where_ = describe(plan.entry.path)
    // Created with its final owner and mode where it can be (ours, no special bits, nothing
    // the umask cuts): two system calls fewer per file.
    let s = plan.status
    let direct = s.uid == caller.uid && s.gid == caller.gid && s.permissions & 0o7000 == 0 && s.permissions & umask == 0
    let created = direct ? ObjectAttributes.Created(owner: (s.uid, s.gid), permissions: s.permissions) : nil
    let temp = try step("open(O_TMPFILE)", workPath) { () throws(Errno) in try tempDir.fd.openTemporaryFile(permissions: created?.permissions ?? 0) }
    var flags: InodeFlags?
    if !plan.metacopy {
      let source = try stack.openData(plan.entry)
      // A file with every block allocated has no holes to look for.
      let dataStatus: FileStatus
      if plan.entry.lowers.count <= 1 && plan.entry.dataRedirect == nil {
        dataStatus = plan.status
      } else {
        dataStatus = try step("statx", where_) { () throws(Errno) in try source.stat() }
      }
      let method = try step("copy", where_) { () throws(Errno) in
        try temp.copyData(
          from: source, size: plan.status.size, tryClone: cloneWorks[plan.lower.layer] != false,
          mayHaveHoles: dataStatus.blocks * 512 < dataStatus.size)
      }
      if plan.entry.lowers.count <= 1 && plan.entry.dataRedirect == nil { flags = source.inodeFlags() }
      if method != .none { cloneWorks[plan.lower.layer] = method == .clone }
      // fsync=auto: the data is durable before the name appears.
      try step("fsync", where_) { () throws(Errno) in try temp.sync() }
    }
    let attributes = try metadata(plan, lowerFlags: flags)
    try located(where_) { () throws(FailedCall) in try attributes.apply(to: temp, created: created) }
    if let indexNlink {
      try step("fsetxattr", where_) { () throws(Errno) in try temp.setXattr(namespace.name(.nlink), indexNlink) }
    }
    return try withLockedParent(destination, child: name, expected: nil, path: where_) { () throws(OvlError) -> Bool in
      do throws(Errno) {
        try temp.link(as: name, in: destination.fd)
      } catch .fileExists {
        return false
      } catch {
        throw .system(call: "linkat", path: where_, errno: error)
      }
      return true
    }
  }

  /// Directories, symlinks and special files: a `#`-named temp in the work dir, completed,
  /// then renamed into place without replacing anything (`ovl_copy_up_workdir`).
  func copyByTemp(_ plan: CopyPlan, to name: [UInt8], in destination: LayerDir, indexedDirectory: Bool, indexNlink: [UInt8]? = nil) throws(OvlError) -> Bool {
    let where_ = describe(plan.entry.path)
    let status = plan.status
    let tempName = temporaryName()
    let tempPath = workPath + "/" + tempName.string
    try step("create", tempPath) { () throws(Errno) in
      switch status.type {
      case .directory: try tempDir.fd.makeDirectory(tempName, permissions: 0)
      case .symlink:
        let target = try plan.lower.parent.fd.readLink(plan.lower.name)
        try tempDir.fd.makeSymlink(tempName, target: target)
      default:
        try tempDir.fd.makeNode(tempName, type: status.type, permissions: 0, major: status.rdevMajor, minor: status.rdevMinor)
      }
    }
    let temp = TempEntry(dir: tempDir, name: tempName, isDirectory: status.type == .directory)
    let attributes = try metadata(plan)
    try located(tempPath) { () throws(FailedCall) in try attributes.apply(to: tempName, in: tempDir.fd, type: status.type) }
    if let indexNlink {
      try step("setxattr", tempPath) { () throws(Errno) in try tempDir.fd.setXattr(tempName, namespace.name(.nlink), indexNlink) }
    }
    // nfs_export: the directory's index entry comes right after the rename, not before it
    // as in `ovl_copy_up_workdir`: a crash between an index entry and its upper leaves the
    // lower directory an uncovered redirect (EIO), which the next mount whites out — the
    // directory gone. An upper with no index entry yet is fine for the kernel and fsck.
    // The handle is taken now: the renamed directory is the same inode.
    let upperHandle = indexedDirectory
      ? try step("name_to_handle_at", tempPath) { () throws(Errno) in try stack.encodeHandle(tempDir, tempName, upper: true).bytes }
      : nil
    let published = try work.publish(temp, as: name, in: destination, expected: nil, flags: .noReplace, path: where_)
    if published, let upperHandle { try createDirectoryIndex(plan, upperHandle: upperHandle) }
    return published
  }

  /// nfs_export: a copied-up directory gets `index/<hex of its origin>`, an empty dir of
  /// mode 0000 whose `upper` is the handle of the upper directory.
  func createDirectoryIndex(_ plan: CopyPlan, upperHandle: [UInt8]) throws(OvlError) {
    guard let index else { return }
    let hex = try step("name_to_handle_at", plan.entry.path.shown) { () throws(Errno) in
      try stack.encodeHandle(plan.lower.parent, plan.lower.name, upper: false).indexName
    }
    let indexTemp = temporaryName()
    try step("mkdir", workPath + "/index/" + indexTemp.string) { () throws(Errno) in
      try index.fd.makeDirectory(indexTemp, permissions: 0)
      try index.fd.setXattr(indexTemp, namespace.name(.upper), upperHandle)
      do throws(Errno) {
        try index.fd.rename(indexTemp, to: hex, in: index.fd, flags: .noReplace)
      } catch .fileExists {
        try index.fd.remove(indexTemp, directory: true)
      }
    }
  }
}
