import OvlFormat
import OvlStack
import OvlSystem

/// Values of overlay xattrs that the kernel rejects or ignores.
extension Checker {
  /// Non-directories: xattr whiteouts, foreign whiteouts, origin, metacopy, nlink, protattr.
  func checkNonDirectory(_ e: Entry, in context: DirContext, layer: Int) {
    if e.isXattrWhiteout {
      checkXattrWhiteout(e, in: context, layer: layer)
      return
    }
    checkForeignWhiteout(e, in: context, layer: layer)
    checkOriginValue(e, in: context, layer: layer)
    checkMetacopy(e, in: context, layer: layer)
    if let value = e.xattrs[.nlink], NlinkXattr(value: value) == nil {
      removeValue(e, .nlink, in: context, layer: layer, check: "invalid-nlink",
        problem: "nlink \"\(String(decoding: value, as: UTF8.self))\" is not U/L, a sign and a number: the kernel ignores it")
    }
    if let value = e.xattrs[.protattr], Protattr(value: value) == nil {
      removeValue(e, .protattr, in: context, layer: layer, check: "invalid-protattr",
        problem: "protattr \"\(String(decoding: value, as: UTF8.self))\" holds letters other than 'a' and 'i': the kernel ignores it")
    }
  }

  /// Directories: opaque and origin values (impure is checked with the dir's contents).
  func checkDirectoryXattrs(_ e: Entry, in context: DirContext, layer: Int) {
    if let value = e.xattrs[.opaque], Opaque(value: value) == nil {
      // Read with a one-byte buffer: "yes", "0" or "" never make a dir opaque.
      removeValue(e, .opaque, in: context, layer: layer, check: "invalid-opaque",
        problem: "opaque \"\(String(decoding: value, as: UTF8.self))\" is neither 'y' nor 'x': the kernel ignores it, the dir merges")
    }
    checkOriginValue(e, in: context, layer: layer)
  }

  /// `origin` must be empty or a valid `ovl_fb` (else the kernel warns and ignores it). Distinct upper
  /// objects with one origin (a `cp -a` of copied-up objects) show the same inode number.
  func checkOriginValue(_ e: Entry, in context: DirContext, layer: Int) {
    guard let value = e.xattrs[.origin] else { return }
    let decoded: FileHandle.Decoded
    do {
      decoded = try FileHandle.decode(value)
    } catch {
      removeValue(e, .origin, in: context, layer: layer, check: "invalid-origin",
        problem: "origin is not a valid file handle (\(error == .badMagic ? "bad magic" : "bad length")): the kernel logs 'invalid origin' and cannot use it (inode numbers change, index lookups fail)")
      return
    }
    guard layer == 0, !value.isEmpty else { return }
    let key = OriginKey(value)
    if let first = origins[key] {
      guard first != e.status.id else { return }  // hard links of one inode
      removeValue(e, .origin, in: context, layer: layer, check: "duplicate-origin",
        problem: "same origin as \(pathOfUpperInode(first)) (a copy of a copied-up object): both show one inode number",
        policy: .onlyYes)
      return
    } else {
      origins[key] = e.status.id
    }
    if case .handle(let handle) = decoded { checkOriginTarget(e, handle, in: context, layer: layer) }
  }

  /// Reports a bad value and removes the xattr where allowed.
  @discardableResult
  func removeValue(
    _ e: Entry, _ key: OverlayXattr, in context: DirContext, layer: Int, check: String, problem: String,
    policy: RepairPolicy = .safe, severity: Severity = .error
  ) -> Bool {
    let dir = context.dir
    let name = e.name
    let attribute = ns.name(key)
    let path = Self.join(dir.path, name)
    return report.found(check, layer: layer, name: layerName(layer), path: Self.text(path), problem: problem,
      action: "remove \(String(decoding: attribute, as: UTF8.self))", policy: policy, severity: severity,
      at: RepairTarget(dir: dir, name: name, expected: e.status.id)
    ) { () throws(OvlError) in
      try step("removexattr", self.stack.layerPaths[layer] + Self.text(path)) { () throws(Errno) in try dir.fd.removeXattr(name, attribute) }
    }
  }

  /// The path in the upper layer of the inode `id`, found by a walk of the upper (the
  /// origins seen are kept without paths: this runs only for a duplicate origin).
  func pathOfUpperInode(_ id: FileID) -> String {
    if let known = upperInodePaths[id] { return known }
    guard let top = root(0) else { return "another object" }
    var found: [UInt8]?
    // Paths, not descriptors, wait: a dir of many subdirs holds none open.
    var pending: [[UInt8]] = [[]]
    search: while let dirPath = pending.popLast() {
      let dir: LayerDir
      if dirPath.isEmpty {
        dir = top
      } else {
        guard let fd = try? FD.open(Array(dirPath.dropFirst()), in: top.fd, .directory) else { continue }
        dir = LayerDir(layer: 0, fd: fd, path: dirPath)
      }
      guard let names = try? dir.fd.entries() else { continue }
      for entry in names {
        guard let status = try? dir.fd.stat(entry.name) else { continue }
        let path = Self.join(dirPath, entry.name)
        if status.id == id {
          found = path
          break search
        }
        if status.type == .directory { pending.append(path) }
      }
    }
    let text = found.map { Self.text($0) } ?? "another object"
    upperInodePaths[id] = text
    return text
  }
}
