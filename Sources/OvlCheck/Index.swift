import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

/// The index dir (`work/index`, index=on): what `ovl_indexdir_cleanup` refuses at mount
/// (names that are not handles, entries without `origin`, dir entries without `upper`),
/// what it deletes (stale and orphan entries), and `nlink` values it cannot read.
extension Checker {
  func checkIndex() {
    guard let workRoot = stack.workRoot, let index = try? open(Array("index".utf8), in: workRoot) else { return }
    var checked: Set<[UInt8]> = []
    for raw in (try? names(of: index)) ?? [] where raw.name.first != UInt8(ascii: "#") {
      report.count("index entries")
      checkIndexEntry(raw.name, in: index, checked: &checked)
    }
  }

  /// One entry of the index dir. `checked` holds the names already checked in this run: a
  /// repair that exchanges two entries has the other one checked right away.
  func checkIndexEntry(_ name: [UInt8], in index: LayerDir, checked: inout Set<[UInt8]>) {
    guard checked.insert(name).inserted else { return }
    let base = (options.workDir ?? "") + "/index/"
    let shown = "/index/" + Self.text(name)
    guard let e = try? entry(name, in: index) else { return }
    let decoded: FileHandle.Decoded
    do {
      decoded = try FileHandle.decode(indexName: name)
    } catch {
      if misnamedIndexEntry(e, in: index, shown: shown, base: base, checked: &checked) { return }
      removeIndexEntry(name, in: index, shown: shown, base: base,
        problem: "index entry name is not a hex file handle: index=on mounts fail (EINVAL)", severity: .error)
      return
    }
    guard case .handle = decoded else {
      removeIndexEntry(name, in: index, shown: shown, base: base,
        problem: "index entry name is a handle of an unknown version or byte order: index=on mounts fail (ENODATA)", severity: .error)
      return
    }
    if e.isWhiteout {
      // A whiteout index (nfs_export): a lower object deleted in the overlay.
      indexWhiteouts.insert(name)
      return
    }
    if e.isDirectory {
      // nfs_export: a dir entry points at its upper dir; without `upper` the mount fails.
      if let upper = e.xattrs[.upper] {
        checkDirectoryIndexUpper(upper, name: name, in: index, shown: shown, base: base)
      } else {
        removeIndexEntry(name, in: index, shown: shown, base: base,
          problem: "directory index entry without an upper xattr: nfs_export=on mounts fail (ENODATA)", severity: .error)
      }
      return
    }
    let nameBytes = Hex.decode(name) ?? []
    // `ovl_get_fh` takes an origin that is empty, malformed or of an unknown version as
    // none: `ovl_verify_index` then fails with ENODATA as for a missing one.
    let origin = e.xattrs[.origin].flatMap { value -> [UInt8]? in
      guard case .handle? = try? FileHandle.decode(value) else { return nil }
      return value
    }
    guard let origin else {
      if ns == .user && e.status.type != .regular {
        // user.* xattrs cannot be set on symlinks and devices: the kernel links such an
        // object into the index with index=on,userxattr, and then refuses to mount. The
        // entry can only go (lower hard links of it then show as separate inodes).
        removeIndexEntry(name, in: index, shown: shown, base: base,
          problem: "index entry of a \(e.status.type.rawValue) without origin (user xattrs cannot be set on it): index=on mounts fail (ENODATA)",
          severity: .error)
        return
      }
      // The entry is the upper inode itself; its origin is its name.
      let attribute = ns.name(.origin)
      report.found("index-without-origin", layer: -1, name: workName, path: shown,
        problem: e.xattrs[.origin] == nil
          ? "index entry without origin: index=on mounts fail (ENODATA)"
          : "index entry whose origin is not a handle this kernel can use: index=on mounts fail (ENODATA)",
        action: "set origin from the entry's name", policy: .safe, at: RepairTarget(dir: index, name: name, expected: e.status.id)
      ) { () throws(OvlError) in
        try step("setxattr", base + Self.text(name)) { () throws(Errno) in try index.fd.setXattr(name, attribute, nameBytes) }
      }
      return
    }
    if Array(origin.prefix(nameBytes.count)) != nameBytes {
      if !misnamedIndexEntry(e, in: index, shown: shown, base: base, checked: &checked) {
        removeIndexEntry(name, in: index, shown: shown, base: base,
          problem: "index entry whose origin is another handle than its name: the kernel deletes it at mount (ESTALE)", severity: .warning)
      }
      return
    }
    if let value = e.xattrs[.nlink] {
      guard let nlink = NlinkXattr(value: value) else {
        report.found("invalid-nlink", layer: -1, name: workName, path: shown,
          problem: "nlink \"\(String(decoding: value, as: UTF8.self))\" is not U/L, a sign and a number: the kernel counts links without it",
          action: nil, policy: .none, severity: .warning)
        return
      }
      // With no upper alias left (st_nlink 1) and an upper-based count that reaches 0,
      // the entry is an orphan the kernel removes (or whites out with nfs_export).
      if e.status.links == 1, nlink.base == .upper, nlink.overlayLinks(baseLinks: 1) == nil {
        removeIndexEntry(name, in: index, shown: shown, base: base,
          problem: "orphan index entry (no upper name left, nlink \(nlink)): the kernel removes it at mount", severity: .warning)
      } else if e.status.links > 1 {
        checkIndexNlink(nlink, e, origin: origin, in: index, shown: shown, base: base)
      }
    }
  }

  /// A non-dir entry whose name is not the hex of its `origin` (renamed by hand or by a
  /// tool): `ovl_verify_index` fails with ESTALE and the mount deletes it, after which the
  /// lower hard links of its inode no longer find their copied-up inode (`ovl_lookup_index`
  /// looks the entry up by the origin's name): they show the old lower data as separate
  /// inodes. The kernel names an entry `ovl_get_index_name(origin)`, so the entry goes back
  /// to that name if it is free (the inode, its data and its links stay as they are), or is
  /// exchanged with an entry there that is misnamed too. If a valid entry already holds the
  /// name, it is the one the kernel uses, and this one goes as the kernel's mount would
  /// remove it. Returns false when the entry is not such a case (no decodable origin,
  /// or an origin whose lower inode is gone or of another type: the kernel's removal
  /// loses nothing then).
  func misnamedIndexEntry(_ e: Entry, in index: LayerDir, shown: String, base: String, checked: inout Set<[UInt8]>) -> Bool {
    guard !e.isDirectory, !e.isWhiteout, let origin = e.xattrs[.origin],
      case .handle(let handle)? = try? FileHandle.decode(origin)
    else { return false }
    switch resolveOrigin(handle) {
    case .stale: return false
    case .found(let lower) where lower.type != e.status.type: return false
    default: break
    }
    let name = e.name
    let right = handle.indexName
    let rightShown = "/index/" + Self.text(right)
    let occupant: Entry?
    do {
      occupant = try entry(right, in: index)
    } catch {
      report.operational(error.description)
      return true
    }
    guard let occupant else {
      report.found("misnamed-index-entry", layer: -1, name: workName, path: shown,
        problem: "index entry not named after its origin: the kernel deletes it at mount (ESTALE), and the lower hard links of its inode then show their old lower data",
        action: "rename it to \(rightShown)", policy: .safe, at: RepairTarget(dir: index, name: name, expected: e.status.id)
      ) { () throws(OvlError) in
        try step("renameat2", base + Self.text(name)) { () throws(Errno) in try index.fd.rename(name, to: right, in: index.fd, flags: .noReplace) }
      }
      return true
    }
    let handleBytes = handle.bytes
    guard !occupant.isDirectory, !occupant.isWhiteout, let occupantOrigin = occupant.xattrs[.origin],
      Array(occupantOrigin.prefix(handleBytes.count)) != handleBytes
    else {
      removeIndexEntry(name, in: index, shown: shown, base: base,
        problem: "index entry not named after its origin, whose name \(rightShown) another entry holds: the kernel deletes this one at mount (ESTALE)",
        severity: .warning)
      return true
    }
    let exchanged = report.found("misnamed-index-entry", layer: -1, name: workName, path: shown,
      problem: "index entry not named after its origin, whose name \(rightShown) holds another misnamed entry: the kernel deletes both at mount (ESTALE), and the lower hard links of their inodes then show their old lower data",
      action: "exchange it with \(rightShown)", policy: .safe, at: RepairTarget(dir: index, name: name, expected: e.status.id)
    ) { () throws(OvlError) in
      try step("renameat2", base + Self.text(name)) { () throws(Errno) in try index.fd.rename(name, to: right, in: index.fd, flags: .exchange) }
    }
    if exchanged {
      // This entry is right now; the one that came here is checked under its new name.
      checked.insert(right)
      checked.remove(name)
      checkIndexEntry(name, in: index, checked: &checked)
    }
    return true
  }

  func removeIndexEntry(_ name: [UInt8], in index: LayerDir, shown: String, base: String, problem: String, severity: Severity) {
    report.found("index-entry", layer: -1, name: workName, path: shown, problem: problem,
      action: "remove the entry", policy: .safe, severity: severity
    ) { () throws(OvlError) in
      // Moved to a `#` temp first: one rename takes the entry out of the index, and a crash
      // during the removal leaves a temp the kernel's mount cleans.
      guard let status = try step("statx", base + Self.text(name), { () throws(Errno) in try index.fd.statIfPresent(name) }) else { return }
      try self.workArea().moveOutAndRemove(name, from: index, expected: status.id, path: base + Self.text(name))
    }
  }
}

extension Checker {
  /// With nfs_export a deleted lower object gets a whiteout index entry; if the upper no
  /// longer covers it (its whiteout removed), the kernel finds the index whiteout when it
  /// looks the object up and fails with EIO ("bad index found"). Checked for the lower
  /// entries that show through one upper dir; repaired by putting the whiteout back.
  func checkDeletedObjectsCovered(_ context: DirContext, upperNames: Set<[UInt8]>) {
    guard !indexWhiteouts.isEmpty else { return }
    var seen = upperNames
    for lower in context.below {
      for raw in (try? names(of: lower)) ?? [] where !seen.contains(raw.name) {
        seen.insert(raw.name)
        guard let status = try? lower.fd.statIfPresent(raw.name), !status.isWhiteoutDevice,
          let handle = try? stack.encodeHandle(lower, raw.name, upper: false),
          indexWhiteouts.contains(handle.indexName)
        else { continue }
        let dir = context.dir
        let name = raw.name
        let path = Self.join(dir.path, name)
        report.found("uncovered-deleted", layer: 0, name: layerName(0), path: Self.text(path),
          problem: "a lower object the overlay deleted (whiteout index \(Self.text(handle.indexName))) shows again: lookup fails with EIO",
          action: "put the whiteout back", policy: .safe
        ) { () throws(OvlError) in
          try self.workArea().replaceWithWhiteout(name, in: dir, expected: nil, path: self.stack.layerPaths[0] + Self.text(path))
        }
      }
    }
  }
}

extension Checker {
  /// The overlay link count an index entry's `nlink` gives must lie between the upper names
  /// (the entry's own links but the index one) and those plus every name of the lower
  /// inode: outside it `stat` shows a wrong count, and an unlink can make the kernel drop
  /// the index entry while names remain. Repaired to the count the names give: the upper
  /// names plus the lower names that still show (no upper entry at their path).
  func checkIndexNlink(_ nlink: NlinkXattr, _ e: Entry, origin: [UInt8], in index: LayerDir, shown: String, base: String) {
    guard case .handle(let handle)? = try? FileHandle.decode(origin), case .found(let lower) = resolveOrigin(handle) else { return }
    let upperNames = Int(e.status.links) - 1
    let baseLinks = nlink.base == .upper ? Int(e.status.links) : Int(lower.links)
    let overlay = baseLinks + nlink.delta
    guard overlay < upperNames || overlay > upperNames + Int(lower.links) else { return }
    let expected = upperNames + visibleLowerNames(of: lower.id)
    let fixed = NlinkXattr(base: nlink.base, delta: expected - baseLinks)
    let attribute = ns.name(.nlink)
    let name = e.name
    report.found("index-nlink", layer: -1, name: workName, path: shown,
      problem: "nlink \(nlink) gives \(overlay) links, but the inode has \(upperNames) upper names and its lower \(lower.links): stat shows a wrong count",
      action: "set it to \(fixed) (\(expected) names)", policy: .safe, severity: .warning,
      at: RepairTarget(dir: index, name: name, expected: e.status.id)
    ) { () throws(OvlError) in
      try step("setxattr", base + Self.text(name)) { () throws(Errno) in try index.fd.setXattr(name, attribute, fixed.value) }
    }
  }

  /// Names of lower inode `id` in the lower layers that the upper layer leaves visible (no
  /// entry at the same path, no whiteout or opaque dir above it). A walk of the lower
  /// layers: done only for an `nlink` already found out of range.
  func visibleLowerNames(of id: FileID) -> Int {
    var count = 0
    for layer in 1...max(1, stack.lowerCount) {
      guard let top = root(layer), (try? top.fd.stat().id.device) == id.device else { continue }
      var dirs: [LayerDir] = [top]
      while let dir = dirs.popLast() {
        for raw in (try? names(of: dir)) ?? [] {
          guard let status = try? dir.fd.stat(raw.name) else { continue }
          if status.type == .directory {
            if let sub = try? open(raw.name, in: dir) { dirs.append(sub) }
          } else if status.id == id && !coveredInUpper(Self.join(dir.path, raw.name)) {
            count += 1
          }
        }
      }
    }
    return count
  }

  /// Whether the upper layer has an entry at `path`, or a whiteout, non-dir or opaque dir
  /// on the way to it.
  func coveredInUpper(_ path: [UInt8]) -> Bool {
    guard var dir = stack.upperRoot else { return false }
    let components = path.split(separator: 0x2F).map { Array($0) }
    for (i, component) in components.enumerated() {
      guard let e = try? entry(component, in: dir) else { return false }
      if i == components.count - 1 || !e.isDirectory || e.isOpaque { return true }
      guard let next = try? open(component, in: dir) else { return false }
      dir = next
    }
    return false
  }
}

extension Checker {
  /// A directory index entry (nfs_export) names its upper dir by handle; that dir's origin
  /// must be the entry's name. A handle that no longer decodes is an orphan, one naming a
  /// dir of another origin is stale: the kernel removes both at mount (an orphan becomes a
  /// whiteout with nfs_export), and so does fsck.
  func checkDirectoryIndexUpper(_ value: [UInt8], name: [UInt8], in index: LayerDir, shown: String, base: String) {
    guard let upperRoot = stack.upperRoot, case .handle(let handle)? = try? FileHandle.decode(value) else { return }
    let problem: String
    do {
      let fd = try upperRoot.fd.openHandle(type: Int32(handle.type), bytes: handle.fid)
      let origin = try fd.xattr([0x2E], ns.name(.origin))
      guard let origin, Array(origin.prefix(Hex.decode(name)?.count ?? 0)) != (Hex.decode(name) ?? []) else { return }
      problem = "directory index entry whose upper dir has another origin: the kernel removes it at mount (ESTALE)"
    } catch .staleNFSFileHandle {
      guard options.nfsExport else {
        removeIndexEntry(name, in: index, shown: shown, base: base,
          problem: "orphan directory index entry (its upper dir is gone): the kernel removes it at mount", severity: .warning)
        return
      }
      whiteOutIndexEntry(name, in: index, shown: shown, base: base)
      return
    } catch {
      return  // cannot decode here (no CAP_DAC_READ_SEARCH, another filesystem)
    }
    removeIndexEntry(name, in: index, shown: shown, base: base, problem: problem, severity: .warning)
  }

  /// With nfs_export the kernel turns an orphan into a whiteout index entry, so that the
  /// lower dir's handle keeps decoding to "deleted". Built in the index dir as a `#` temp,
  /// exchanged with the entry, and the old dir removed from the temp name.
  func whiteOutIndexEntry(_ name: [UInt8], in index: LayerDir, shown: String, base: String) {
    report.found("index-entry", layer: -1, name: workName, path: shown,
      problem: "orphan directory index entry (its upper dir is gone): the kernel whites it out at mount",
      action: "replace it by a whiteout", policy: .safe, severity: .warning
    ) { () throws(OvlError) in
      // A whiteout of its own inode, exchanged with the entry; the old dir removed from the temp.
      guard let status = try step("statx", base + Self.text(name), { () throws(Errno) in try index.fd.statIfPresent(name) }) else { return }
      try self.workArea().replaceWithWhiteout(name, in: index, expected: status, path: base + Self.text(name), shared: false)
    }
  }
}
