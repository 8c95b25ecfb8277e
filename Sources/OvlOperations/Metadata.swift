import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

/// Everything a copied-up object gets besides its data (`ovl_copy_up_metadata`), decided
/// from the lower object before anything is written.
struct Metadata {
  var uid: UInt32
  var gid: UInt32
  var permissions: UInt32
  /// In the order they are set; `security.capability` last (a chown would strip it).
  var xattrs: [([UInt8], [UInt8])] = []
  /// noatime and sync are copied as real flags; append-only and immutable only as
  /// `protattr` (real ones would block overlay's own later changes).
  var flags: InodeFlags = []
  var size: UInt64?
  var atime: Int64
  var mtime: Int64
}

extension WriteSession {
  /// `lowerFlags`: the lower's inode flags when the caller has read them already.
  func metadata(_ plan: CopyPlan, lowerFlags: InodeFlags? = nil) throws(OvlError) -> Metadata {
    let lower = plan.lower
    let s = lower.status
    let path = describe(plan.entry.path)
    var m = Metadata(uid: s.uid, gid: s.gid, permissions: s.permissions, atime: s.atime, mtime: s.mtime)
    var capability: ([UInt8], [UInt8])?
    let names = try step("listxattr", path) { () throws(Errno) in try lower.xattrNames() }
    for name in names where !namespace.isPrivate(name) && !xattrCopySkips(name) {
      guard let value = try step("getxattr", path, { () throws(Errno) in try lower.parent.fd.xattr(lower.name, name) }) else { continue }
      if name == Array("security.capability".utf8) { capability = (name, value); continue }
      m.xattrs.append((name, value))
    }
    if s.type == .regular || s.type == .directory {
      let flags: InodeFlags
      if let lowerFlags {
        flags = lowerFlags
      } else {
        flags = try step("open", path) { () throws(Errno) in
          try lower.open(s.type == .directory ? .directory : .readOnly).inodeFlags()
        }
      }
      var protected: Protattr = []
      if flags.contains(.appendOnly) { protected.insert(.appendOnly) }
      if flags.contains(.immutable) { protected.insert(.immutable) }
      if !protected.isEmpty { m.xattrs.append((namespace.name(.protattr), protected.value)) }
      m.flags = flags.intersection([.noAtime, .sync])
    }
    if let origin = plan.origin { m.xattrs.append((namespace.name(.origin), origin)) }
    if plan.metacopy {
      m.xattrs.append((namespace.name(.metacopy), Metacopy().value))
      m.size = s.size
    }
    if let capability { m.xattrs.append(capability) }
    return m
  }

  /// Applies metadata to an unnamed temp file: owner, mode (chown clears setuid/setgid, so
  /// it goes first), xattrs, flags, size, times.
  /// `created`: the owner and mode the file was created with (those need no call).
  func apply(_ m: Metadata, to file: borrowing FD, _ path: String, created: (uid: UInt32, gid: UInt32, permissions: UInt32)? = nil) throws(OvlError) {
    // The size first: a truncate from userspace strips security.capability.
    if let size = m.size { try step("ftruncate", path) { () throws(Errno) in try file.truncate(size: size) } }
    if created?.uid != m.uid || created?.gid != m.gid {
      try step("fchown", path) { () throws(Errno) in try file.changeOwner(uid: m.uid, gid: m.gid) }
    }
    if created?.permissions != m.permissions || created?.uid != m.uid || created?.gid != m.gid {
      try step("fchmod", path) { () throws(Errno) in try file.changeMode(permissions: m.permissions) }
    }
    for (name, value) in m.xattrs {
      try setXattr(name, path, special: false) { () throws(Errno) in try file.setXattr(name, value) }
    }
    if !m.flags.isEmpty { try step("FS_IOC_SETFLAGS", path) { () throws(Errno) in try file.setInodeFlags(file.inodeFlags().union(m.flags)) } }
    try step("futimens", path) { () throws(Errno) in try file.setTimes(atime: m.atime, mtime: m.mtime) }
  }

  /// Applies metadata to a named temp (directory, symlink, special file).
  func apply(_ m: Metadata, to name: [UInt8], in dir: LayerDir, type: FileType, _ path: String) throws(OvlError) {
    try step("fchownat", path) { () throws(Errno) in try dir.fd.changeOwner(name, uid: m.uid, gid: m.gid) }
    if type != .symlink {
      try step("fchmodat", path) { () throws(Errno) in try dir.fd.changeMode(name, permissions: m.permissions) }
    }
    let special = type != .regular && type != .directory
    for (attribute, value) in m.xattrs {
      try setXattr(attribute, path, special: special) { () throws(Errno) in try dir.fd.setXattr(name, attribute, value) }
    }
    if !m.flags.isEmpty && type == .directory {
      try step("FS_IOC_SETFLAGS", path) { () throws(Errno) in
        let fd = try FD.open(name, in: dir.fd, .directory)
        try fd.setInodeFlags(fd.inodeFlags().union(m.flags))
      }
    }
    try step("utimensat", path) { () throws(Errno) in try dir.fd.setTimes(name, atime: m.atime, mtime: m.mtime) }
  }

  /// `ovl_copy_xattr`'s tolerance: a filesystem without xattr support loses ordinary ones but
  /// not ACLs or security labels; `user.*` cannot be set on symlinks and devices (the
  /// kernel skips the origin of such objects in userxattr stacks).
  private func setXattr(_ name: [UInt8], _ path: String, special: Bool, _ set: () throws(Errno) -> Void) throws(OvlError) {
    do {
      try set()
    } catch .notSupported where !name.starts(with: Array("system.posix_acl".utf8)) && !name.starts(with: Array("security.".utf8)) {
    } catch .notPermitted where special && name.starts(with: Array("user.".utf8)) {
    } catch {
      throw .system(call: "setxattr \(name.string)", path: path, errno: error)
    }
  }

  /// `ovl_copy_up_meta_inode_data`: a metacopy upper gets its data in place; the capability
  /// a data write strips is put back, then `metacopy` is removed.
  func completeData(_ entry: MergedEntry) throws(OvlError) {
    guard let upperObject = entry.upper else { return }
    let path = describe(entry.path)
    let file = try step("open", path) { () throws(Errno) in try upperObject.open(.writeOnly) }
    let capabilityName = Array("security.capability".utf8)
    let capability = try step("getxattr", path) { () throws(Errno) in try file.xattr(capabilityName) }
    let source = try stack.openData(entry)
    _ = try step("copy", path) { () throws(Errno) in try file.copyData(from: source, size: upperObject.status.size) }
    try step("fsync", path) { () throws(Errno) in try file.sync() }
    if let capability { try step("setxattr", path) { () throws(Errno) in try file.setXattr(capabilityName, capability) } }
    try step("removexattr", path) { () throws(Errno) in try file.removeXattr(namespace.name(.metacopy)) }
  }
}
