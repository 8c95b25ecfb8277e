import OvlFormat
import OvlStack
import OvlSystem

/// Metacopy files (`overlay.metacopy`): a valid value, and data somewhere below.
extension Checker {
  func checkMetacopy(_ e: Entry, in context: DirContext, layer: Int) {
    guard let value = e.xattrs[.metacopy], e.status.type == .regular else { return }
    report.count("metacopy files")
    let dir = context.dir
    let name = e.name
    let path = Self.join(dir.path, name)
    do {
      _ = try Metacopy(value: value)
    } catch {
      // `ovl_check_metacopy_xattr`: a bad record fails lookup with EIO. An empty value
      // means "metacopy, no digest"; only -y drops the digest.
      let attribute = ns.name(.metacopy)
      report.found("invalid-metacopy", layer: layer, name: layerName(layer), path: Self.text(path),
        problem: "metacopy value is not a record this kernel knows (\(error)): lookup fails with EIO",
        action: "rewrite it empty (no verity digest)", policy: .onlyYes, at: RepairTarget(dir: dir, name: name, expected: e.status.id)
      ) { () throws(OvlError) in
        try step("setxattr", self.stack.layerPaths[layer] + Self.text(path)) { () throws(Errno) in try dir.fd.setXattr(name, attribute, []) }
      }
    }
    let redirect = e.xattrs[.redirect].flatMap { try? Redirect(value: $0) }
    let start = redirect.map(LookupName.init) ?? .relative(name)
    let found = lookupBelow(start, below: layer, parentBelow: context.below, followMetacopy: true)
    if found.kind == .other(.regular) { return }
    // Data-only layers are reached by an absolute redirect only.
    if case .some(.absolute(let components)) = redirect.map(LookupName.init), found.kind == .absent {
      for dataLayer in (stack.lowerCount + 1)..<(stack.layerPaths.count) where dataLayer > stack.lowerCount {
        if let status = dataFile(components, in: dataLayer), status.type == .regular { return }
      }
    }
    let target = redirect.map { "\"\($0.description)\"" } ?? "its name"
    report.found("metacopy-without-data", layer: layer, name: layerName(layer), path: Self.text(path),
      problem: "metacopy file whose data (at \(target) in the layers below) is gone: the kernel fails open and read with EIO",
      action: "remove the file (its data is lost)", policy: .onlyYes, at: RepairTarget(dir: dir, name: name, expected: e.status.id)
    ) { () throws(OvlError) in
      try step("unlink", self.stack.layerPaths[layer] + Self.text(path)) { () throws(Errno) in try dir.fd.remove(name) }
    }
  }

  /// The status of `components` in a data-only layer, without following symlinks.
  func dataFile(_ components: [[UInt8]], in layer: Int) -> FileStatus? {
    guard var base = root(layer), let last = components.last else { return nil }
    for component in components.dropLast() {
      guard let next = try? open(component, in: base) else { return nil }
      base = next
    }
    return try? base.fd.statIfPresent(last)
  }
}
