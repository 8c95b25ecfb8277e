import OvlFormat
import OvlSystem

/// What an object gets besides its name and data, for every path that makes one: a copy-up
/// (`ovl_copy_up_metadata`), `put`, `create` and the bulk apply. Set in the kernel's order:
/// the size first (a truncate strips `security.capability`), the owner before the mode (a
/// chown clears setuid and setgid bits), an inherited ACL before the mode (which then cuts
/// its mask, as `posix_acl_create`), xattrs after both (a chown clears file capabilities),
/// flags, times last (every other change stamps them). nil: as the creation left it.
public struct ObjectAttributes: Sendable {
  public var owner: (uid: UInt32, gid: UInt32)?
  public var permissions: UInt32?
  /// In the order they are set.
  public var xattrs: [([UInt8], [UInt8])]
  public var atime: Int64?
  public var mtime: Int64?
  /// What a new object inherits from its parent (the default ACL as its access ACL).
  var inherited: [([UInt8], [UInt8])] = []
  /// Inode flags added (a copy-up's noatime and sync).
  var flags: InodeFlags = []
  /// A metacopy upper's size.
  var size: UInt64?
  /// `ovl_copy_xattr`'s tolerance: a filesystem without xattr support loses ordinary ones
  /// (not ACLs or security labels); `user.*` cannot be set on symlinks and devices.
  var xattrsBestEffort = false

  /// `mtime` sets the atime too, as tar and a layer do.
  public init(permissions: UInt32? = nil, owner: (uid: UInt32, gid: UInt32)? = nil, mtime: Int64? = nil, xattrs: [([UInt8], [UInt8])] = []) {
    self.owner = owner
    self.permissions = permissions
    self.mtime = mtime
    self.atime = mtime
    self.xattrs = xattrs
  }

  /// What the creation gave an object already: its owner and, where known, its mode.
  /// Calls that would set the same are left out (a file built as the caller with its final
  /// mode needs none).
  struct Created {
    var owner: (uid: UInt32, gid: UInt32)
    var permissions: UInt32?
  }

  /// Sets the attributes on an open (unnamed or just created) object.
  func apply(to fd: borrowing FD, created: Created? = nil) throws(FailedCall) {
    if let size { try calling("ftruncate") { () throws(Errno) in try fd.truncate(size: size) } }
    let chowned = try changeOwner(created) { (uid, gid) throws(Errno) in try fd.changeOwner(uid: uid, gid: gid) }
    for (name, value) in inherited { try calling("fsetxattr") { () throws(Errno) in try fd.setXattr(name, value) } }
    if let permissions = modeToSet(created, chowned: chowned) {
      try calling("fchmod") { () throws(Errno) in try fd.changeMode(permissions: permissions) }
    }
    for (name, value) in xattrs {
      try setXattr(name, special: false) { () throws(Errno) in try fd.setXattr(name, value) }
    }
    if !flags.isEmpty { try calling("FS_IOC_SETFLAGS") { () throws(Errno) in try fd.setInodeFlags(fd.inodeFlags().union(flags)) } }
    if let mtime { try calling("futimens") { () throws(Errno) in try fd.setTimes(atime: atime ?? mtime, mtime: mtime) } }
  }

  /// Sets the attributes on `name` in `dir` (a directory, symlink or special file made
  /// there), never following a symlink.
  func apply(to name: [UInt8], in dir: borrowing FD, type: FileType, created: Created? = nil) throws(FailedCall) {
    let chowned = try changeOwner(created) { (uid, gid) throws(Errno) in try dir.changeOwner(name, uid: uid, gid: gid) }
    for (attribute, value) in inherited { try calling("setxattr") { () throws(Errno) in try dir.setXattr(name, attribute, value) } }
    if type != .symlink, let permissions = modeToSet(created, chowned: chowned) {
      try calling("fchmodat") { () throws(Errno) in try dir.changeMode(name, permissions: permissions) }
    }
    let special = type != .regular && type != .directory
    for (attribute, value) in xattrs {
      try setXattr(attribute, special: special) { () throws(Errno) in try dir.setXattr(name, attribute, value) }
    }
    if !flags.isEmpty && type == .directory {
      try calling("FS_IOC_SETFLAGS") { () throws(Errno) in
        let fd = try FD.open(name, in: dir, .directory)
        try fd.setInodeFlags(fd.inodeFlags().union(flags))
      }
    }
    if let mtime { try calling("utimensat") { () throws(Errno) in try dir.setTimes(name, atime: atime ?? mtime, mtime: mtime) } }
  }

  /// Whether a chown was made.
  private func changeOwner(_ created: Created?, _ chown: (UInt32, UInt32) throws(Errno) -> Void) throws(FailedCall) -> Bool {
    guard let owner else { return false }
    if let created, created.owner == owner { return false }
    try calling("fchown") { () throws(Errno) in try chown(owner.uid, owner.gid) }
    return true
  }

  /// The mode to set: unless the creation gave it and no chown (of setuid or setgid bits)
  /// or inherited ACL changed it since.
  private func modeToSet(_ created: Created?, chowned: Bool) -> UInt32? {
    guard let permissions else { return nil }
    if let created, created.permissions == permissions, inherited.isEmpty, !chowned || permissions & 0o6000 == 0 { return nil }
    return permissions
  }

  private func setXattr(_ name: [UInt8], special: Bool, _ set: () throws(Errno) -> Void) throws(FailedCall) {
    guard xattrsBestEffort else {
      try calling("setxattr") { () throws(Errno) in try set() }
      return
    }
    do {
      try set()
    } catch .notSupported where !name.starts(with: Array("system.posix_acl".utf8)) && !name.starts(with: Array("security.".utf8)) {
    } catch .notPermitted where special && name.starts(with: Array("user.".utf8)) {
    } catch {
      throw FailedCall(call: "setxattr \(name.string)", errno: error)
    }
  }
}

/// A system call that failed, to be reported with the path of what it worked on (the
/// bulk path's background thread knows the call, its caller the path).
struct FailedCall: Error {
  let call: String
  let errno: Errno

  func located(_ path: String) -> OvlError { .system(call: call, path: path, errno: errno) }
}

@inline(__always)
func calling<R: ~Copyable>(_ name: String, _ body: () throws(Errno) -> R) throws(FailedCall) -> R {
  do { return try body() } catch { throw FailedCall(call: name, errno: error) }
}

/// `body`'s failed call, located at `path`.
@inline(__always)
func located<R: ~Copyable>(_ path: @autoclosure () -> String, _ body: () throws(FailedCall) -> R) throws(OvlError) -> R {
  do { return try body() } catch { throw error.located(path()) }
}
