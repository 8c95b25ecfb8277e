import OvlFormat
import OvlStack
import OvlSystem

/// Redirect dirs (`overlay.redirect`, redirect_dir=on): the value's syntax, its target in
/// the layers below, targets claimed twice, and the original name left uncovered.
extension Checker {
  /// Checks `e`'s redirect and returns the entry as the repairs left it.
  func checkRedirect(_ e: Entry, in context: DirContext, layer: Int) -> Entry {
    guard let value = e.xattrs[.redirect] else { return e }
    var e = e
    let path = Self.join(context.dir.path, e.name)
    let shown = String(decoding: value.prefix { $0 != 0 }, as: UTF8.self)
    let redirect: Redirect
    do {
      redirect = try Redirect(value: value)
    } catch {
      let reason: String
      switch error {
      case .empty: reason = "it is empty"
      case .emptyComponent: reason = "an absolute redirect with an empty component"
      case .slashInRelative: reason = "a relative redirect containing '/'"
      }
      if removeRedirect(&e, in: context, layer: layer, check: "invalid-redirect",
        problem: "redirect \"\(shown)\" is not valid (\(reason)): the kernel fails lookup of this dir and readdir of its parent with EINVAL",
        policy: .safe)
      {
        offerOpaque(e, in: context, layer: layer)
      }
      return e
    }
    let target = lookupBelow(LookupName(redirect), below: layer, parentBelow: context.below)
    guard target.kind == .directory, let targetLayer = target.firstLayer else {
      let why = target.kind == .absent ? "nothing of that name in the layers below" : "not a directory in the layers below"
      if removeRedirect(&e, in: context, layer: layer, check: "invalid-redirect",
        problem: "redirect \"\(shown)\" points to \(why): the dir does not merge", policy: .safe)
      {
        offerOpaque(e, in: context, layer: layer)
      }
      return e
    }
    let key = RedirectTarget(layer: targetLayer, path: target.firstPath)
    let here = "\(layerName(layer)) \(Self.text(path))"
    if let other = claimedTargets[key] {
      // Two merged dirs showing one lower dir: with nfs_export the kernel fails (EIO,
      // "multiply redirected dir"); otherwise changes in one appear in the other.
      if removeRedirect(&e, in: context, layer: layer, check: "duplicate-redirect",
        problem: "redirect \"\(shown)\" points to \(Self.text(target.firstPath)) in \(layerName(targetLayer)), which \(other) already shows",
        policy: .onlyYes)
      {
        offerOpaque(e, in: context, layer: layer)
      }
      return e
    }
    claimedTargets[key] = here
    checkOriginCovered(&e, redirect, in: context, layer: layer, shown: shown)
    return e
  }

  /// The original name of a redirected dir must be covered in the redirect's own layer (a
  /// whiteout, or anything that is not a plain merge dir); else the lower dir shows twice.
  func checkOriginCovered(_ e: inout Entry, _ redirect: Redirect, in context: DirContext, layer: Int, shown: String) {
    guard let layerRoot = root(layer) else { return }
    let components: [[UInt8]]
    switch redirect {
    case .relative(let name):
      components = context.dir.path.split(separator: 0x2F).map { Array($0) } + [name]
    case .absolute(let c):
      components = c
    }
    var base = layerRoot
    for (i, component) in components.enumerated() {
      let last = i == components.count - 1
      guard let found = try? entry(component, in: base) else {
        let originPath = Self.text(components: components)
        if last {
          let parent = base
          report.found("missing-whiteout", layer: layer, name: layerName(layer), path: originPath,
            problem: "the original location of redirected dir \(Self.text(Self.join(context.dir.path, e.name))) is not covered: the lower dir shows at both names",
            action: "create a whiteout at \(originPath)", policy: .safe, at: RepairTarget(dir: parent, name: component, expected: nil)
          ) { () throws(OvlError) in
            try step("mknod", self.stack.layerPaths[layer] + originPath) { () throws(Errno) in try parent.fd.makeWhiteout(component) }
          }
        } else {
          report.found("missing-whiteout", layer: layer, name: layerName(layer), path: originPath,
            problem: "the original location of redirected dir \(Self.text(Self.join(context.dir.path, e.name))) is not covered (its parent is not in this layer): the lower dir shows at both names",
            action: nil, policy: .none)
        }
        return
      }
      if found.isWhiteout || !found.isDirectory || found.isOpaque || found.xattrs[.redirect] != nil { return }
      if last {
        // A plain dir at the original name merges the same lower dir a second time.
        if removeRedirect(&e, in: context, layer: layer, check: "duplicate-redirect",
          problem: "redirect \"\(shown)\" points to a dir that the plain dir \(Self.text(components: components)) of this layer also merges",
          policy: .onlyYes)
        {
          offerOpaque(e, in: context, layer: layer)
        }
        return
      }
      guard let next = try? open(component, in: base) else { return }
      base = next
    }
  }

  /// Reports a bad redirect and removes it where allowed; returns whether it was removed.
  func removeRedirect(_ e: inout Entry, in context: DirContext, layer: Int, check: String, problem: String, policy: RepairPolicy) -> Bool {
    let dir = context.dir
    let name = e.name
    let attribute = ns.name(.redirect)
    let path = Self.join(dir.path, name)
    let removed = report.found(check, layer: layer, name: layerName(layer), path: Self.text(path), problem: problem,
      action: "remove the redirect", policy: policy, at: RepairTarget(dir: dir, name: name, expected: e.status.id)
    ) { () throws(OvlError) in
      try step("removexattr", self.stack.layerPaths[layer] + Self.text(path)) { () throws(Errno) in try dir.fd.removeXattr(name, attribute) }
    }
    if removed { e.xattrs[.redirect] = nil }
    return removed
  }

  /// After its redirect is gone, a dir merges with a same-named lower dir, if any: making
  /// it opaque keeps that dir's contents out (fsck.overlay's default answer is no).
  func offerOpaque(_ e: Entry, in context: DirContext, layer: Int) {
    guard !e.isOpaque else { return }
    let same = lookupBelow(.relative(e.name), below: layer, parentBelow: context.below)
    guard same.kind == .directory else { return }
    let dir = context.dir
    let name = e.name
    let path = Self.join(dir.path, name)
    let attribute = ns.name(.opaque)
    report.found("merge-after-redirect-removal", layer: layer, name: layerName(layer), path: Self.text(path),
      problem: "without its redirect this dir merges with the dir of the same name below",
      action: "make it opaque", policy: .onlyYes, severity: .warning, at: RepairTarget(dir: dir, name: name, expected: e.status.id)
    ) { () throws(OvlError) in
      try step("setxattr", self.stack.layerPaths[layer] + Self.text(path)) { () throws(Errno) in
        try dir.fd.setXattr(name, attribute, Opaque.opaque.value)
      }
    }
  }
}
