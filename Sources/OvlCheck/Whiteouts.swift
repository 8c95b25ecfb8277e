import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

/// Whiteouts: char 0/0 whiteouts that hide nothing, xattr whiteouts in the upper layer, and
/// other tools' `.wh.` names.
extension Checker {
  func checkWhiteout(_ e: Entry, in context: DirContext, layer: Int) {
    let found = lookupBelow(.relative(e.name), below: layer, parentBelow: context.below)
    guard found.kind == .absent || found.kind == .whiteout else { return }
    let problem: String
    if context.isOpaque {
      problem = "whiteout inside an opaque dir: it hides nothing"
    } else if found.kind == .whiteout {
      problem = "orphan whiteout: it covers only another whiteout"
    } else {
      problem = "orphan whiteout: nothing of that name in the layers below"
    }
    let dir = context.dir
    let name = e.name
    let path = Self.join(dir.path, name)
    report.found("orphan-whiteout", layer: layer, name: layerName(layer), path: Self.text(path), problem: problem,
      action: "remove the whiteout", policy: .safe, at: RepairTarget(dir: dir, name: name, expected: e.status.id)
    ) { () throws(OvlError) in
      try step("unlink", self.stack.layerPaths[layer] + Self.text(path)) { () throws(Errno) in try dir.fd.remove(name) }
    }
  }

  /// Xattr whiteouts. In the upper layer lookup treats one as a whiteout, but readdir lists
  /// it (the kernel filters xattr whiteouts only in lower dirs marked `opaque=x`;
  /// `ovl_lookup_single` ignores an `x` on an upper dir, and a marked lower dir does not
  /// make the upper's filtered: both seen on 6.18), so `ls` shows a name that cannot be
  /// opened, merged dir or not. One that hides nothing is
  /// removed; one that hides a lower object is replaced by the kernel's form, a char 0/0
  /// device built in the work dir and renamed over it: the name stays hidden, and readdir
  /// drops it as it drops every upper whiteout of a merged dir.
  func checkXattrWhiteout(_ e: Entry, in context: DirContext, layer: Int) {
    let dir = context.dir
    let name = e.name
    let path = Self.join(dir.path, name)
    let found = lookupBelow(.relative(name), below: layer, parentBelow: context.below)
    if found.kind == .absent || found.kind == .whiteout {
      report.found("orphan-whiteout", layer: layer, name: layerName(layer), path: Self.text(path),
        problem: layer == 0
          ? "xattr whiteout that hides nothing: readdir lists it while lookup hides it (a broken entry)"
          : "orphan xattr whiteout: nothing of that name in the layers below",
        action: "remove it", policy: .safe, at: RepairTarget(dir: dir, name: name, expected: e.status.id)
      ) { () throws(OvlError) in
        try step("unlink", self.stack.layerPaths[layer] + Self.text(path)) { () throws(Errno) in try dir.fd.remove(name) }
      }
      return
    }
    if layer != 0 {
      guard Opaque(value: try? entry([0x2E], in: dir)?.xattrs[.opaque]) != .xwhiteouts else { return }
      report.found("unmarked-xattr-whiteout", layer: layer, name: layerName(layer), path: Self.text(path),
        problem: "xattr whiteout in a dir without opaque=x: lookup hides it, readdir may list it", action: nil,
        policy: .none, severity: .warning)
      return
    }
    // Readdir drops it only where it looks each upper name up for its inode number
    // (`ovl_calc_d_ino`, `ovl_cache_update`: xino across filesystems, or an impure dir with
    // every layer on one) and the lookup comes back negative.
    let impure = Impure.isSet(try? entry([0x2E], in: dir)?.xattrs[.impure])
    let listed = !(stack.xinoTranslates || (stack.sameFilesystem && impure))
    report.found("upper-xattr-whiteout", layer: layer, name: layerName(layer), path: Self.text(path),
      problem: listed
        ? "xattr whiteout in the upper layer: lookup hides the lower object, but readdir lists the name (a broken entry; the kernel writes char 0/0 whiteouts, and filters xattr ones only in lower dirs marked opaque=x)"
        : "xattr whiteout in the upper layer (the kernel writes char 0/0 whiteouts): readdir drops it only while the dir is impure",
      action: "replace it by a char 0/0 whiteout", policy: .safe, severity: listed ? .error : .warning
    ) { () throws(OvlError) in
      // Built in the work dir and renamed over it, the entry verified under the locks.
      try self.workArea().replaceWithWhiteout(name, in: dir, expected: e.status, path: self.stack.layerPaths[layer] + Self.text(path))
    }
  }

  /// `.wh.NAME` and `.wh..wh..opq` are the OCI/AUFS whiteout forms: overlayfs shows them as
  /// ordinary files. Reported; converting needs to know which tool wrote them.
  func checkForeignWhiteout(_ e: Entry, in context: DirContext, layer: Int) {
    guard e.name.starts(with: Array(".wh.".utf8)) else { return }
    let path = Self.join(context.dir.path, e.name)
    report.found("aufs-whiteout", layer: layer, name: layerName(layer), path: Self.text(path),
      problem: "a '.wh.' whiteout of another tool (OCI/AUFS): overlayfs shows it as a plain file", action: nil,
      policy: .none, severity: .warning)
  }

  /// Where repairs build what they publish, as the kernel's work dir: the index dir with
  /// index=on, else `work/work` (made, mode 0000, if it is missing).
  func workArea() throws(OvlError) -> WorkArea {
    if let work { return work }
    guard let workRoot = stack.workRoot else { throw .usage("the stack has no workdir") }
    let workPath = options.workDir ?? ""
    let area: WorkArea
    if stack.options.index, let indexDir = stack.indexDir {
      area = WorkArea(dir: indexDir, shownPath: workPath + "/index")
    } else {
      area = try WorkArea.open("work", in: workRoot, workPath: workPath, create: true)
    }
    work = area
    return area
  }
}
