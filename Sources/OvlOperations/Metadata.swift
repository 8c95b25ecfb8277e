import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

extension WriteSession {
  /// Everything a copied-up object gets besides its data (`ovl_copy_up_metadata`), decided
  /// from the lower object before anything is written: owner, mode, times, the xattrs
  /// (`security.capability` last), noatime and sync as real flags, append-only and
  /// immutable only as `protattr` (real ones would block overlay's own later changes), the
  /// origin, and a metacopy's size. `lowerFlags`: the lower's inode flags when the caller
  /// has read them already.
  func metadata(_ plan: CopyPlan, lowerFlags: InodeFlags? = nil) throws(OvlError) -> ObjectAttributes {
    let lower = plan.lower
    let s = lower.status
    let path = describe(plan.entry.path)
    var m = ObjectAttributes(permissions: s.permissions, owner: (s.uid, s.gid), mtime: s.mtime)
    m.atime = s.atime
    m.xattrsBestEffort = true
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
