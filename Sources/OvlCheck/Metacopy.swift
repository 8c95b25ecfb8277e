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
    let missing: String
    switch lookupData(start, below: layer, parentBelow: context.below) {
    case .found: return
    case .nothingBelow:
      let target = redirect.map { "\"\($0.description)\"" } ?? "its name"
      missing = "metacopy file whose data (at \(target) in the layers below) is gone"
    case .redirectReset:
      missing = "metacopy file whose absolute redirect leads through a plain dir of a regular lower: the kernel then does not look in the data-only layers"
    case .notLookedUpInDataLayers:
      missing = "metacopy file with no metacopy below it in a regular lower: the kernel looks in data-only layers only from a lower metacopy"
    case .notInDataLayers(let components):
      missing = "metacopy file whose data (at \(Self.text(components: components)) in the data-only layers) is gone"
    }
    report.found("metacopy-without-data", layer: layer, name: layerName(layer), path: Self.text(path),
      problem: missing + ": the kernel fails open and read with EIO",
      action: "remove the file (its data is lost)", policy: .onlyYes, at: RepairTarget(dir: dir, name: name, expected: e.status.id)
    ) { () throws(OvlError) in
      try step("unlink", self.stack.layerPaths[layer] + Self.text(path)) { () throws(Errno) in try dir.fd.remove(name) }
    }
  }

  enum DataLookup: Equatable {
    case found
    /// The regular lowers end the lookup without data, and no absolute redirect leads on.
    case nothingBelow
    /// A plain lower dir on the absolute path came after the last absolute redirect.
    case redirectReset
    /// An upper metacopy whose only way on is its own absolute redirect.
    case notLookedUpInDataLayers
    case notInDataLayers([[UInt8]])
  }

  /// Where the kernel finds the data of a metacopy file of `layer` looked up by `start`
  /// (`ovl_lookup` for a non-dir): down the regular lowers, each metacopy met rewriting
  /// the name by its redirect, until a file that is not metacopy. Without one, the lookup
  /// goes on in the data-only layers only if the last redirect the kernel read was
  /// absolute (`d.absolute_redirect`, which every plain dir walked through resets, while
  /// an opaque dir, a whiteout or a non-directory on the way leave it) and a lower object
  /// was found (`ctr`: a lower layer's file counts itself; an upper's does not).
  func lookupData(_ start: LookupName, below layer: Int, parentBelow: [LayerDir]) -> DataLookup {
    var name = start
    var absoluteRedirect = { if case .absolute = start { return true } else { return false } }()
    var foundLower = layer > 0
    var stop = false
    var k = layer + 1
    while k <= stack.lowerCount && !stop {
      defer { k += 1 }
      var base: LayerDir
      var components: [[UInt8]]
      switch name {
      case .relative(let n):
        guard let parent = parentBelow.first(where: { $0.layer == k }) else { continue }
        base = parent
        components = [n]
      case .absolute(let c):
        guard let r = root(k) else { continue }
        base = r
        components = c
      }
      var nextName = name
      for (index, component) in components.enumerated() {
        guard let e = try? entry(component, in: base) else { break }
        let last = index == components.count - 1
        if e.isWhiteout || e.isXattrWhiteout {
          stop = true
          break
        }
        // After a metacopy only a regular file can hold the data (`ovl_lookup_single`).
        if last && e.status.type != .regular {
          stop = true
          break
        }
        if !e.isDirectory {
          guard last else {
            stop = true
            break
          }
          foundLower = true
          guard e.xattrs[.metacopy] != nil else { return .found }
          stop = false
          absoluteRedirect = false
          if let r = e.xattrs[.redirect], let redirect = try? Redirect(value: r) {
            if case .absolute = redirect { absoluteRedirect = true }
            nextName = nextName.rewritten(by: redirect, post: [])
          }
          break
        }
        if e.isOpaque {
          stop = true  // and no redirect is read on it
        } else {
          absoluteRedirect = false
          if let r = e.xattrs[.redirect], let redirect = try? Redirect(value: r) {
            if case .absolute = redirect {
              absoluteRedirect = true
              stop = false
            }
            nextName = nextName.rewritten(by: redirect, post: Array(components[(index + 1)...]))
          }
        }
        guard let opened = try? open(component, in: base) else { break }
        base = opened
      }
      name = nextName
    }
    guard stack.layerPaths.count > stack.lowerCount + 1, case .absolute(let components) = name else { return .nothingBelow }
    guard absoluteRedirect else { return .redirectReset }
    guard foundLower else { return .notLookedUpInDataLayers }
    for dataLayer in (stack.lowerCount + 1)..<stack.layerPaths.count {
      if dataFile(components, in: dataLayer)?.type == .regular { return .found }
    }
    return .notInDataLayers(components)
  }

  /// The status of `components` in a data-only layer, as the kernel's path walk beneath
  /// the layer root finds it: no symlinks followed, `..` never above the root.
  func dataFile(_ components: [[UInt8]], in layer: Int) -> FileStatus? {
    guard let layerRoot = root(layer), let last = components.last, last != [0x2E], last != [0x2E, 0x2E] else { return nil }
    var dirs = [layerRoot]
    for component in components.dropLast() {
      if component == [0x2E] { continue }
      if component == [0x2E, 0x2E] {
        guard dirs.count > 1 else { return nil }
        dirs.removeLast()
        continue
      }
      guard let base = dirs.last, let next = try? open(component, in: base) else { return nil }
      dirs.append(next)
    }
    return try? dirs.last?.fd.statIfPresent(last)
  }
}
