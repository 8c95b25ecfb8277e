import OvlFormat
import OvlStack
import OvlSystem

/// `overlay.impure` on upper dirs: the kernel translates d_ino in readdir only for dirs
/// that carry it, so a dir holding copied-up objects, redirected or merge dirs needs it.
extension Checker {
  func checkImpure(_ context: DirContext, needsImpure: [String], mergeOnly: Bool) {
    let dir = context.dir
    guard let own = try? entry([0x2E], in: dir) else { return }
    let value = own.xattrs[.impure]
    let path = Self.text(dir.path)
    let attribute = ns.name(.impure)
    let set = { () throws(OvlError) in
      try step("setxattr", self.stack.layerPaths[0] + path) { () throws(Errno) in try dir.fd.setXattr([0x2E], attribute, Impure.value) }
    }
    if let value, !Impure.isSet(value) {
      report.found("invalid-impure", layer: 0, name: layerName(0), path: path,
        problem: "impure \"\(String(decoding: value, as: UTF8.self))\" is not 'y': the kernel ignores it",
        action: "set it to 'y'", policy: .safe, severity: needsImpure.isEmpty && !mergeOnly ? .warning : .error,
        at: RepairTarget(dir: dir, name: [0x2E], expected: nil), repair: set)
      return
    }
    guard value == nil, !needsImpure.isEmpty || mergeOnly else { return }
    report.count("missing impure")
    // Merge dirs alone are forgiven, as fsck.overlay does: the kernel finds them by lookup.
    let reason = needsImpure.first ?? "a merge dir"
    report.found("missing-impure", layer: 0, name: layerName(0), path: path,
      problem: "no impure xattr, yet it holds \(reason): readdir shows wrong inode numbers",
      action: "set impure to 'y'", policy: .safe, severity: needsImpure.isEmpty ? .warning : .error,
      at: RepairTarget(dir: dir, name: [0x2E], expected: nil), repair: set)
  }
}
