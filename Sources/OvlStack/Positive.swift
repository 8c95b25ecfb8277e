import OvlFormat
import OvlSystem

extension MergedDir {
  /// The kernel's `OVL_TYPE_MERGE` for a directory: an upper directory merged with lower ones.
  public var isMerge: Bool { upper != nil && !lowers.isEmpty }

  /// Forgets what a listing learnt about the real directories (the names present), before
  /// the directory is changed and looked up again.
  public func forgetListing() {
    upper?.listed = nil
    looked.removeAll()
  }
}

extension Stack {
  /// `ovl_lower_positive`: whether `name` exists in a lower directory of `parent` (the first
  /// lower that has the name decides; a whiteout there is not positive). An entry without
  /// an upper is positive by definition. The kernel removes such a name with a whiteout.
  public func lowerPositive(_ name: [UInt8], in parent: MergedDir, entry: MergedEntry) throws(OvlError) -> Bool {
    if entry.upper == nil { return true }
    for lower in parent.lowers {
      let path = describe(lower.layer, parent.path) + "/" + name.string
      let status = try step("statx", path) { () throws(Errno) in try lower.fd.statIfPresent(name) }
      guard let status else { continue }
      let object = RealObject(layer: lower.layer, parent: lower, name: name, status: status)
      return !(try step("listxattr", path) { () throws(Errno) in try isWhiteout(object) })
    }
    return false
  }

  /// Whether a real object is a whiteout (char 0/0, or an xattr whiteout).
  public func isWhiteoutObject(_ object: RealObject) throws(Errno) -> Bool { try isWhiteout(object) }
}
