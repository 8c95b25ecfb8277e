import OvlSystem

/// The overlay driver's directory of a store (`overlay/` of containers/storage,
/// `overlay2/` of Docker): one dir per layer (`<id>/diff`, `link`, `lower`, `work`) and
/// `l/`, short symlinks `../<id>/diff` that the `lower` files name (they keep the kernel's
/// mount options under a page).
struct LayerLinks {
  let tree: StoreTree
  /// "overlay" or "overlay2".
  let driver: String
  /// Whether the store's metadata knows layer `id` (layers.json, Docker's layer dirs).
  let isKnown: (String) -> Bool

  func layerPath(_ id: String, _ name: String = "diff") -> String { tree.full("\(driver)/\(id)/\(name)") }

  /// The layers a layer's `lower` file stacks it on, top-most first (empty without the
  /// file: a base layer has `empty` instead). Each `l/<link>` must be a link of this
  /// store to an existing layer's diff; a layer twice is a parent cycle.
  func lowerChain(of id: String) throws(OvlError) -> [String] {
    let relative = "\(driver)/\(id)/lower"
    guard let text = try tree.readLine(relative), !text.isEmpty else { return [] }
    var chain: [String] = []
    for part in text.split(separator: ":", omittingEmptySubsequences: false) {
      if part.hasPrefix("/") {
        throw .refused(path: tree.full(relative), reason: "'\(part)' is an absolute path, not l/<link> of this store", errno: .invalidArgument)
      }
      guard part.hasPrefix("l/"), StoreID.isLinkName(part.dropFirst(2)) else {
        throw .refused(path: tree.full(relative), reason: "'\(part)' is not l/<link>: it could name something outside the store", errno: .invalidArgument)
      }
      let target = try linkTarget(String(part.dropFirst(2)))
      if target == id || chain.contains(target) {
        throw .refused(path: tree.full(relative), reason: "parent cycle: layer \(target) comes twice in the chain", errno: .tooManySymbolicLinkLevels)
      }
      chain.append(target)
    }
    return chain
  }

  /// The layer whose diff `l/<name>` links to. The link must be relative, exactly
  /// `../<id>/diff`, and the layer must exist.
  func linkTarget(_ name: String) throws(OvlError) -> String {
    let path = tree.full("\(driver)/l/\(name)")
    guard let bytes = try tree.readLink(in: "\(driver)/l", name) else {
      throw .refused(path: path, reason: "dangling: no such link", errno: .noSuchFileOrDirectory)
    }
    let target = String(decoding: bytes, as: UTF8.self)
    if target.hasPrefix("/") {
      throw .refused(path: path, reason: "absolute link to '\(target)' (the store's links are ../<id>/diff)", errno: .invalidArgument)
    }
    guard target.hasPrefix("../"), target.hasSuffix("/diff"), target.utf8.count > 8 else {
      throw .refused(path: path, reason: "link to '\(target)', not ../<id>/diff: it could name something outside the store", errno: .invalidArgument)
    }
    let id = String(target.dropFirst(3).dropLast(5))
    guard StoreID.isValid(id) else {
      throw .refused(path: path, reason: "link to '\(target)': '\(id)' is not a layer id", errno: .invalidArgument)
    }
    guard isKnown(id) else {
      throw .refused(path: path, reason: "link to missing layer \(id)", errno: .noSuchFileOrDirectory)
    }
    guard tree.isDirectory("\(driver)/\(id)/diff") else {
      throw .refused(path: path, reason: "link to \(driver)/\(id)/diff, which is missing", errno: .noSuchFileOrDirectory)
    }
    return id
  }

  /// The layer's own diff dir exists (reached without symlinks).
  func requireDiff(_ id: String) throws(OvlError) {
    guard tree.isDirectory("\(driver)/\(id)/diff") else {
      throw .refused(path: layerPath(id), reason: "layer \(id) has no diff directory", errno: .noSuchFileOrDirectory)
    }
  }

  /// Builds a stack over layer `top`: its diff is the upper (`writable`, with its work
  /// dir) or the top-most lower. `parents`: what the store's metadata says the chain is,
  /// compared with the `lower` file (the one the kernel's mount uses).
  func stack(kind: StoreStack.Kind, id: String, names: [String], top: String, writable: Bool, parents: [String]?, options: [String]) throws(OvlError) -> StoreStack {
    try requireDiff(top)
    let chain = try lowerChain(of: top)
    if let parents, parents != chain {
      let hasLower = ((try? tree.readLine("\(driver)/\(top)/lower")) ?? nil) != nil
      let lowerFile = !hasLower ? "no lower file" : "its lower file names [\(chain.map(StoreID.short).joined(separator: ", "))]"
      throw .refused(path: layerPath(top, "lower"), reason: "\(lowerFile), but the store's metadata stacks it on [\(parents.map(StoreID.short).joined(separator: ", "))]", errno: .invalidArgument)
    }
    var lowers = chain.map { layerPath($0) }
    var layers = chain
    var upper: String?
    var work: String?
    if writable {
      upper = layerPath(top)
      work = layerPath(top, "work")
      layers.insert(top, at: 0)
    } else {
      lowers.insert(layerPath(top), at: 0)
      layers.insert(top, at: 0)
      // A read-only mount needs two lowers: containers/storage mounts a base layer alone
      // over its `empty` dir.
      if lowers.count == 1 && tree.isDirectory("\(driver)/\(top)/empty") { lowers.append(layerPath(top, "empty")) }
    }
    return StoreStack(kind: kind, id: id, names: names, store: tree.path, layers: layers, lowerDirs: lowers, upperDir: upper, workDir: work, mountOptions: options)
  }
}
