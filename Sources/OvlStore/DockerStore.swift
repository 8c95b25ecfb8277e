import OvlFormat
import OvlSystem

/// Docker's overlay2 store (`/var/lib/docker`): layers by chain ID in
/// `image/overlay2/layerdb/sha256/<chain>/{cache-id,parent,diff}`, containers' layers in
/// `layerdb/mounts/<container>/{mount-id,init-id,parent}`, the layer dirs in
/// `overlay2/<cache-id>/` and short links in `overlay2/l/`; names from
/// `containers/<id>/config.v2.json` and `image/overlay2/repositories.json`.
public final class DockerStore: ContainerStore {
  public let root: String
  public let kind = "docker"
  let tree: StoreTree

  struct Layer { let chain: String; let cacheID: String; let parent: String?; let diffID: String? }
  struct Container { let id: String; let names: [String]; let mountID: String; let initID: String?; let parent: String? }
  struct Image { let id: String; let names: [String]; let topChain: String? }

  let layers: [Layer]
  let byChain: [String: Layer]
  let containers: [Container]
  let images: [Image]
  let known: Set<String>

  static let layerdb = "image/overlay2/layerdb"

  public init(path: String) throws(OvlError) {
    let tree = try StoreTree(path: path)
    self.tree = tree
    root = tree.path
    guard let chains = try tree.entries(Self.layerdb + "/sha256") else {
      throw .usage("\(tree.path): not a Docker store with the overlay2 driver (no \(Self.layerdb)/sha256)")
    }
    var layers: [Layer] = []
    for entry in chains where entry.mayBeDirectory {
      let chain = String(decoding: entry.name, as: UTF8.self)
      let dir = "\(Self.layerdb)/sha256/\(chain)"
      guard StoreID.isValid(chain) else { throw .refused(path: tree.full(dir), reason: "not a chain ID (64 hex digits)", errno: .invalidArgument) }
      layers.append(Layer(chain: chain, cacheID: try Self.id(tree, dir + "/cache-id"),
        parent: try Self.digest(tree, dir + "/parent"), diffID: try tree.readLine(dir + "/diff")))
    }
    self.layers = layers
    byChain = Dictionary(layers.map { ($0.chain, $0) }, uniquingKeysWith: { a, _ in a })
    var containers: [Container] = []
    for entry in try tree.entries(Self.layerdb + "/mounts") ?? [] where entry.mayBeDirectory {
      let id = String(decoding: entry.name, as: UTF8.self)
      let dir = "\(Self.layerdb)/mounts/\(id)"
      guard StoreID.isValid(id) else { throw .refused(path: tree.full(dir), reason: "not a container ID (64 hex digits)", errno: .invalidArgument) }
      var names: [String] = []
      if let config = try tree.readJSON("containers/\(id)/config.v2.json"), let name = config["Name"]?.string {
        names.append(name.hasPrefix("/") ? String(name.dropFirst()) : name)
      }
      let initID: String? = try tree.readLine(dir + "/init-id") == nil ? nil : try Self.id(tree, dir + "/init-id")
      containers.append(Container(id: id, names: names, mountID: try Self.id(tree, dir + "/mount-id"), initID: initID, parent: try Self.digest(tree, dir + "/parent")))
    }
    self.containers = containers
    var images: [Image] = []
    var names: [String: [String]] = [:]
    if let repositories = try tree.readJSON("image/overlay2/repositories.json")?["Repositories"]?.members {
      for repository in repositories {
        for tag in repository.value.members ?? [] {
          if let digest = tag.value.string, digest.hasPrefix("sha256:") { names[String(digest.dropFirst(7)), default: []].append(tag.key) }
        }
      }
    }
    for entry in try tree.entries("image/overlay2/imagedb/content/sha256") ?? [] {
      let id = String(decoding: entry.name, as: UTF8.self)
      guard StoreID.isValid(id), let config = try tree.readJSON("image/overlay2/imagedb/content/sha256/\(id)") else { continue }
      let diffIDs = (config["rootfs"]?["diff_ids"]?.array ?? []).compactMap(\.string)
      images.append(Image(id: id, names: names[id] ?? [], topChain: Self.chainID(diffIDs)))
    }
    self.images = images
    known = Set(layers.map(\.cacheID) + containers.map(\.mountID) + containers.compactMap(\.initID))
  }

  /// The chain ID of the top of `diffIDs`: the first diff ID, then
  /// sha256(parent chain ID + " " + diff ID) for each next one (the OCI image spec).
  static func chainID(_ diffIDs: [String]) -> String? {
    guard var chain = diffIDs.first else { return nil }
    for diffID in diffIDs.dropFirst() {
      let text = Array("\(chain) \(diffID)".utf8)
      let digest = SHA256Digest()
      text.withUnsafeBytes { digest.update($0) }
      chain = "sha256:" + digest.finish().map { byte in
        let s = String(byte, radix: 16)
        return s.count == 1 ? "0" + s : s
      }.joined()
    }
    return chain.hasPrefix("sha256:") ? String(chain.dropFirst(7)) : nil
  }

  static func id(_ tree: StoreTree, _ relative: String) throws(OvlError) -> String {
    guard let text = try tree.readLine(relative) else { throw .refused(path: tree.full(relative), reason: "missing", errno: .noSuchFileOrDirectory) }
    guard StoreID.isValid(text) else { throw .refused(path: tree.full(relative), reason: "bad ID '\(text.prefix(80))' (64 hex digits expected)", errno: .invalidArgument) }
    return text
  }

  /// A `sha256:<chain>` file; nil where it does not exist.
  static func digest(_ tree: StoreTree, _ relative: String) throws(OvlError) -> String? {
    guard let text = try tree.readLine(relative) else { return nil }
    guard text.hasPrefix("sha256:"), StoreID.isValid(String(text.dropFirst(7))) else {
      throw .refused(path: tree.full(relative), reason: "bad digest '\(text.prefix(80))' (sha256:<64 hex digits> expected)", errno: .invalidArgument)
    }
    return String(text.dropFirst(7))
  }

  var links: LayerLinks { LayerLinks(tree: tree, driver: "overlay2", isKnown: { [known] in known.contains($0) }) }

  /// The cache IDs of chain `chain` and the chains below it, top-most first.
  func cacheChain(from chain: String?) throws(OvlError) -> [String] {
    var result: [String] = []
    var seen: Set<String> = []
    var next = chain
    while let current = next {
      guard seen.insert(current).inserted else {
        throw .refused(path: tree.full("\(Self.layerdb)/sha256/\(current)/parent"), reason: "parent cycle: chain \(current) is its own ancestor", errno: .tooManySymbolicLinkLevels)
      }
      guard let layer = byChain[current] else {
        throw .refused(path: tree.full("\(Self.layerdb)/sha256/\(current)"), reason: "missing layer (a parent or image names chain \(current))", errno: .noSuchFileOrDirectory)
      }
      result.append(layer.cacheID)
      next = layer.parent
    }
    return result
  }

  public func stack(_ selection: StoreSelection) throws(OvlError) -> StoreStack {
    switch selection {
    case .container(let query):
      let c = try pick(query, containers, id: \.id, names: \.names, what: "container", store: root)
      return try containerStack(c)
    case .image(let query):
      let image = try pick(query.hasPrefix("sha256:") ? String(query.dropFirst(7)) : query, images, id: \.id,
        names: { $0.names.flatMap(imageNameForms) }, what: "image", store: root)
      let chain = try cacheChain(from: image.topChain)
      guard let top = chain.first else {
        throw .refused(path: tree.full("image/overlay2/imagedb/content/sha256/\(image.id)"), reason: "an image without layers", errno: .invalidArgument)
      }
      return try links.stack(kind: .image, id: image.id, names: image.names, top: top, writable: false, parents: Array(chain.dropFirst()), options: ["index=off"])
    case .layer(let query):
      let bare = query.hasPrefix("sha256:") ? String(query.dropFirst(7)) : query
      // A cache ID (the dir's name) or a chain ID.
      let layer: Layer
      if let hit = layers.first(where: { $0.chain == bare }) {
        layer = hit
      } else {
        layer = try pick(bare, layers, id: \.cacheID, names: { [$0.chain] }, what: "layer", store: root)
      }
      let chain = try cacheChain(from: layer.chain)
      return try links.stack(kind: .layer, id: layer.cacheID, names: ["sha256:" + layer.chain], top: layer.cacheID, writable: false,
        parents: Array(chain.dropFirst()), options: ["index=off"])
    }
  }

  func containerStack(_ c: Container) throws(OvlError) -> StoreStack {
    let parents = (c.initID.map { [$0] } ?? []) + (try cacheChain(from: c.parent))
    return try links.stack(kind: .container, id: c.id, names: c.names, top: c.mountID, writable: true, parents: parents, options: ["index=off"])
  }

  public func stacksToCheck() -> [(title: String, stack: Result<StoreStack, OvlError>)] {
    var result: [(title: String, stack: Result<StoreStack, OvlError>)] = []
    for c in containers {
      result.append(("container \(c.names.first.map { "\($0) " } ?? "")(\(StoreID.short(c.id)))", Result { () throws(OvlError) in try containerStack(c) }))
    }
    let parents = Set(layers.compactMap(\.parent) + containers.compactMap(\.parent))
    for layer in layers where !parents.contains(layer.chain) {
      result.append(("layer (\(StoreID.short(layer.cacheID)))", Result { () throws(OvlError) in try stack(.layer(layer.chain)) }))
    }
    return result
  }

  public func consistencyProblems() -> [StoreProblem] {
    var parentsByCache: [String: [String]] = [:]
    for layer in layers { parentsByCache[layer.cacheID] = (try? cacheChain(from: layer.parent)) ?? nil }
    for c in containers {
      if let initID = c.initID { parentsByCache[initID] = (try? cacheChain(from: c.parent)) ?? nil }
      parentsByCache[c.mountID] = ((try? cacheChain(from: c.parent)) ?? nil).map { chain in (c.initID.map { [$0] } ?? []) + chain }
    }
    var problems = links.problems(known: Array(known).sorted()) { id in parentsByCache[id] }
    for layer in layers {
      do { _ = try cacheChain(from: layer.chain) } catch {
        if case .refused(let path, let reason, _) = error { problems.append(StoreProblem(path: path, problem: reason)) }
      }
    }
    return problems
  }

  public func lock(exclusive: Bool, onWait: () -> Void) throws(OvlError) -> StoreLocks { .none }

  public func layerDigests() -> [(id: String, digest: String?)] { layers.map { ($0.cacheID, $0.diffID) } }
  public func layerFiles(_ id: String) throws(OvlError) -> LayerFiles? {
    let chain = layers.first { $0.cacheID == id }?.chain ?? id
    return try tree.layerFiles(diff: "overlay2/\(id)/diff", tarSplit: "\(Self.layerdb)/sha256/\(chain)/tar-split.json.gz")
  }
}
