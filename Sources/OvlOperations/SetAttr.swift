import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

/// A metadata change of one object (`ovl_setattr`, `ovl_xattr_set`).
public enum AttributeChange: Sendable {
  /// chmod(2): permission bits (with setuid, setgid, sticky).
  case mode(UInt32)
  /// lchown(2); nil leaves the id as it is.
  case owner(uid: UInt32?, gid: UInt32?)
  /// utimensat(2) without following symlinks: atime and mtime, ns since the epoch (nil: now).
  case times(Int64?)
  /// lsetxattr(2) of the name the merged view shows (an overlay-namespace name is stored
  /// escaped, as the kernel stores it).
  case setXattr(name: [UInt8], value: [UInt8])
  /// lremovexattr(2).
  case removeXattr(name: [UInt8])
}

extension WriteSession {
  /// The system call's own checks, made before it looks at any file (`setxattr_copy`,
  /// `removexattr`): a name of 1...255 bytes (XATTR_NAME_MAX, else ERANGE) and a value of at
  /// most 64 KiB (XATTR_SIZE_MAX, else E2BIG). So nothing is copied up for an attribute
  /// that could never be set.
  static func checkXattrArguments(_ change: AttributeChange, _ path: [UInt8]) throws(OvlError) {
    let name: [UInt8]
    switch change {
    case .setXattr(let n, let value):
      name = n
      if value.count > 65536 {
        throw .format(path: path.string, reason: "an attribute value of \(value.count) bytes is over the 65536 the kernel accepts", errno: .argListTooLong)
      }
    case .removeXattr(let n): name = n
    default: return
    }
    if name.isEmpty || name.count > 255 {
      throw .format(path: path.string, reason: "an attribute name must have 1 to 255 bytes (this one has \(name.count))", errno: .outOfRange)
    }
  }

  /// What the kernel refuses this caller before it copies anything up (`chown_ok`,
  /// `chgrp_ok`, `inode_owner_or_capable`, `xattr_permission`), decided by the stack's
  /// credentials: an id the user namespace does not map (EINVAL); without CAP_CHOWN another
  /// owner, or a group the caller is not in, or any owner change of a file not the caller's
  /// (EPERM); without CAP_FOWNER a mode of a file not the caller's (EPERM); `trusted.*`
  /// without CAP_SYS_ADMIN in the initial namespace, `security.*` without any capability
  /// (EPERM).
  func checkPermitted(_ change: AttributeChange, _ entry: MergedEntry, _ shown: String) throws(OvlError) {
    let s = entry.status
    func denied(_ reason: String, _ errno: Errno = .notPermitted) -> OvlError { .format(path: shown, reason: reason, errno: errno) }
    switch change {
    case .owner(let uid, let gid):
      if let uid, !caller.maps(uid: uid) { throw denied("uid \(uid) has no mapping in this user namespace", .invalidArgument) }
      if let gid, !caller.maps(gid: gid) { throw denied("gid \(gid) has no mapping in this user namespace", .invalidArgument) }
      if caller.canChangeOwners { return }
      if let uid, uid != s.uid || s.uid != caller.uid { throw denied("only a process with CAP_CHOWN gives a file to another owner") }
      if let gid, gid != s.gid, s.uid != caller.uid || !caller.isMember(of: gid) {
        throw denied("only the owner may change the group, and only to one of its own groups (or a process with CAP_CHOWN)")
      }
    case .mode:
      if s.uid != caller.uid && !caller.capabilities.contains(.fowner) { throw denied("only the owner (or a process with CAP_FOWNER) changes the mode") }
    case .setXattr(let name, _), .removeXattr(let name):
      if name.starts(with: Array("trusted.".utf8)) && !caller.canUseTrustedXattrs {
        throw denied("trusted.* attributes need CAP_SYS_ADMIN in the initial user namespace")
      }
      if name.starts(with: Array("security.".utf8)) && caller.capabilities.isEmpty {
        throw denied("security.* attributes need a capability (CAP_SYS_ADMIN)")
      }
    case .times: return
    }
  }

  /// Changes metadata as the system call through a mount does: the object is copied up
  /// first — metadata only with metacopy=on — then changed in the upper layer.
  public func setAttribute(_ path: [UInt8], _ change: AttributeChange) throws(OvlError) {
    try Self.checkXattrArguments(change, path)
    try setAttribute(try parse(path), change, checked: true)
  }

  public func setAttribute(_ path: MergedPath, _ change: AttributeChange, checked: Bool = false) throws(OvlError) {
    if !checked { try Self.checkXattrArguments(change, path.bytes) }
    try self.change { () throws(OvlError) in
      let target = try locate(path)
      guard let entry = target.entry else {
        throw .format(path: target.shown, reason: "no such file or directory", errno: .noSuchFileOrDirectory)
      }
      if case .mode = change, entry.status.type == .symlink {
        throw .format(path: target.shown, reason: "a symlink has no mode of its own (chmod(2) would follow it)", errno: .notSupported)
      }
      switch change {
      case .setXattr(let name, _), .removeXattr(let name):
        // xattr_permission: user.* only on regular files and directories, checked before
        // the filesystem (and so before any copy-up).
        if name.starts(with: Array("user.".utf8)) && entry.status.type != .regular && !entry.isDirectory {
          throw .format(path: target.shown, reason: "user.* attributes exist only on regular files and directories", errno: .notPermitted)
        }
      default: break
      }
      try checkPermitted(change, entry, target.shown)
      if case .removeXattr(let name) = change, entry.upper == nil {
        // Nothing to remove: no copy-up (`ovl_xattr_set` checks the lower first).
        let present = try step("getxattr", target.shown) { () throws(Errno) in try entry.shown.xattr(namespace.layerName(name)) }
        if present == nil { throw .format(path: target.shown, reason: "no such attribute \(name.string)", errno: .noData) }
      }
      let current: Target
      if entry.upper != nil && !isIndexAlias(entry) && !(entry.upperIsMetacopy && !stack.options.metacopy) {
        // Up already, and so are its parents: nothing to copy up, nothing to look up again.
        try prepareForChange()
        current = target
      } else {
        try copyUpForChange(path)
        current = try relocate(target)
      }
      guard let upperObject = current.entry?.upper else {
        throw .format(path: target.shown, reason: "no upper object after copy-up", errno: .ioError)
      }
      let dir = upperObject.parent
      let name = upperObject.name
      let where_ = describe(current.path)
      // Under the parent's lock, the object verified to be the one copied up.
      try withLockedParent(dir, child: name, expected: upperObject.status.id, path: where_) { () throws(OvlError) in
        switch change {
        case .mode(let mode):
          try step("fchmodat", where_) { () throws(Errno) in try dir.fd.changeMode(name, permissions: mode) }
        case .owner(let uid, let gid):
          try step("fchownat", where_) { () throws(Errno) in try dir.fd.changeOwner(name, uid: uid ?? UInt32.max, gid: gid ?? UInt32.max) }
        case .times(let time?):
          try step("utimensat", where_) { () throws(Errno) in try dir.fd.setTimes(name, atime: time, mtime: time) }
        case .times(nil):
          try step("utimensat", where_) { () throws(Errno) in try dir.fd.touchNow(name) }
        case .setXattr(let attribute, let value):
          try step("lsetxattr", where_) { () throws(Errno) in try dir.fd.setXattr(name, namespace.layerName(attribute), value) }
        case .removeXattr(let attribute):
          do throws(Errno) {
            try dir.fd.removeXattr(name, namespace.layerName(attribute))
          } catch .noData {
            throw .format(path: target.shown, reason: "no such attribute \(attribute.string)", errno: .noData)
          } catch {
            throw .system(call: "lremovexattr", path: where_, errno: error)
          }
        }
      }
      markDirty(dir)
    }
  }
}
