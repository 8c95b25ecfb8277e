import OvlFormat
import OvlSystem

/// A layer as `overlay-layers/layers.json` records it.
public struct StoreLayer: Sendable, Equatable {
  public let id: String
  public let parent: String?
  public let names: [String]
  /// The digest of the layer's uncompressed tar (`diff-digest`).
  public let diffDigest: String?
}

public struct StoreImage: Sendable, Equatable {
  public let id: String
  public let names: [String]
  /// The image's top layer.
  public let layer: String?
}

public struct StoreContainer: Sendable, Equatable {
  public let id: String
  public let names: [String]
  public let image: String?
  /// The container's own (read-write) layer.
  public let layer: String
}

/// A containers/storage store (podman, buildah, CRI-O) with the overlay driver: the graph
/// root holding `overlay/`, `overlay-layers/layers.json`, `overlay-images/images.json` and
/// `overlay-containers/containers.json`. The metadata is read once, when it is opened;
/// anything malformed or hostile is refused with the file and the reason.
public final class ContainersStorage: ContainerStore {
  public let root: String
  public let kind = "containers-storage"
  public let layers: [StoreLayer]
  public let images: [StoreImage]
  public let containers: [StoreContainer]
  let tree: StoreTree
  let byID: [String: StoreLayer]
  /// The store's own mount options (c/storage mounts with index=off; userxattr rootless).
  let mountOptions: [String]

  static let layersFile = "overlay-layers/layers.json"
  static let imagesFile = "overlay-images/images.json"
  static let containersFile = "overlay-containers/containers.json"

  public init(path: String, mountOptions: [String] = ["index=off"]) throws(OvlError) {
    let tree = try StoreTree(path: path)
    self.tree = tree
    root = tree.path
    self.mountOptions = mountOptions
    guard let layersJSON = try tree.readJSON(Self.layersFile) else {
      throw .usage("\(tree.path): not a containers/storage store with the overlay driver (no \(Self.layersFile))")
    }
    layers = try Self.entries(layersJSON, file: tree.full(Self.layersFile)) { (value, at) throws(OvlError) in
      StoreLayer(id: try Self.id(value, "id", at: at), parent: try Self.optionalID(value, "parent", at: at),
        names: try Self.names(value, at: at), diffDigest: value["diff-digest"]?.string)
    }
    var byID: [String: StoreLayer] = [:]
    for layer in layers {
      guard byID[layer.id] == nil else {
        throw .refused(path: tree.full(Self.layersFile), reason: "layer \(layer.id) is listed twice", errno: .invalidArgument)
      }
      byID[layer.id] = layer
    }
    self.byID = byID
    images = try Self.entries(try tree.readJSON(Self.imagesFile) ?? .array([]), file: tree.full(Self.imagesFile)) { (value, at) throws(OvlError) in
      StoreImage(id: try Self.id(value, "id", at: at), names: try Self.names(value, at: at), layer: try Self.optionalID(value, "layer", at: at))
    }
    containers = try Self.entries(try tree.readJSON(Self.containersFile) ?? .array([]), file: tree.full(Self.containersFile)) { (value, at) throws(OvlError) in
      StoreContainer(id: try Self.id(value, "id", at: at), names: try Self.names(value, at: at),
        image: try Self.optionalID(value, "image", at: at), layer: try Self.id(value, "layer", at: at))
    }
  }

  var links: LayerLinks { LayerLinks(tree: tree, driver: "overlay", isKnown: { [byID] in byID[$0] != nil }) }

  // MARK: Stacks

  public func stack(_ selection: StoreSelection) throws(OvlError) -> StoreStack {
    switch selection {
    case .container(let query):
      let c = try pick(query, containers, id: \.id, names: \.names, what: "container", store: root)
      return try stack(kind: .container, id: c.id, names: c.names, top: c.layer, writable: true)
    case .image(let query):
      let image = try pick(query, images, id: \.id, names: { $0.names.flatMap(imageNameForms) }, what: "image", store: root)
      guard let top = image.layer else {
        throw .refused(path: tree.full(Self.imagesFile), reason: "image \(image.id) has no layer", errno: .invalidArgument)
      }
      return try stack(kind: .image, id: image.id, names: image.names, top: top, writable: false)
    case .layer(let query):
      let layer = try pick(query, layers, id: \.id, names: \.names, what: "layer", store: root)
      return try stack(kind: .layer, id: layer.id, names: layer.names, top: layer.id, writable: false)
    }
  }

  func stack(kind: StoreStack.Kind, id: String, names: [String], top: String, writable: Bool) throws(OvlError) -> StoreStack {
    guard byID[top] != nil else {
      let file = kind == .container ? Self.containersFile : Self.imagesFile
      throw .refused(path: tree.full(file), reason: "\(kind.rawValue) \(id) names layer \(top), which \(Self.layersFile) does not list", errno: .noSuchFileOrDirectory)
    }
    return try links.stack(kind: kind, id: id, names: names, top: top, writable: writable, parents: try parentChain(of: top), options: mountOptions)
  }

  /// The layers below `id` by layers.json's `parent` fields, top-most first.
  public func parentChain(of id: String) throws(OvlError) -> [String] {
    var chain: [String] = []
    var seen: Set<String> = [id]
    var current = byID[id]
    while let parent = current?.parent {
      guard seen.insert(parent).inserted else {
        throw .refused(path: tree.full(Self.layersFile), reason: "parent cycle: layer \(parent) is its own ancestor (through \(id))", errno: .tooManySymbolicLinkLevels)
      }
      guard let next = byID[parent] else {
        throw .refused(path: tree.full(Self.layersFile), reason: "layer \(current?.id ?? id) has parent \(parent), which is not listed", errno: .noSuchFileOrDirectory)
      }
      chain.append(parent)
      current = next
    }
    return chain
  }

  public func stacksToCheck() -> [(title: String, stack: Result<StoreStack, OvlError>)] {
    var result: [(title: String, stack: Result<StoreStack, OvlError>)] = []
    let containerLayers = Set(containers.map(\.layer))
    for c in containers {
      let title = "container \(c.names.first.map { "\($0) " } ?? "")(\(StoreID.short(c.id)))"
      result.append((title, Result { () throws(OvlError) in try stack(kind: .container, id: c.id, names: c.names, top: c.layer, writable: true) }))
    }
    let parents = Set(layers.compactMap(\.parent))
    for layer in layers where !parents.contains(layer.id) && !containerLayers.contains(layer.id) {
      let image = images.first { $0.layer == layer.id }
      let title = image.map { "image \($0.names.first.map { "\($0) " } ?? "")(\(StoreID.short($0.id)))" } ?? "layer (\(StoreID.short(layer.id)))"
      result.append((title, Result { () throws(OvlError) in
        if let image { return try stack(kind: .image, id: image.id, names: image.names, top: layer.id, writable: false) }
        return try stack(kind: .layer, id: layer.id, names: layer.names, top: layer.id, writable: false)
      }))
    }
    return result
  }

  // MARK: Locks and digests

  public func lock(exclusive: Bool, onWait: () -> Void) throws(OvlError) -> StoreLocks {
    try tree.lock(["storage.lock", "overlay-layers/layers.lock", "overlay-images/images.lock", "overlay-containers/containers.lock"],
      exclusive: exclusive, onWait: onWait)
  }

  public func layerDigests() -> [(id: String, digest: String?)] { layers.map { ($0.id, $0.diffDigest) } }
  public func layerFiles(_ id: String) throws(OvlError) -> LayerFiles? {
    try tree.layerFiles(diff: "overlay/\(id)/diff", tarSplit: "overlay-layers/\(id).tar-split.gz")
  }

  // MARK: Parsing

  static func entries<T>(_ json: JSONValue, file: String, _ make: (JSONValue, String) throws(OvlError) -> T) throws(OvlError) -> [T] {
    guard let array = json.array else { throw .refused(path: file, reason: "not a JSON array", errno: .invalidArgument) }
    var result: [T] = []
    for (i, value) in array.enumerated() {
      guard value.members != nil else { throw .refused(path: file, reason: "entry \(i) is not an object", errno: .invalidArgument) }
      result.append(try make(value, "\(file): entry \(i)"))
    }
    return result
  }

  static func id(_ value: JSONValue, _ key: String, at: String) throws(OvlError) -> String {
    guard let id = try optionalID(value, key, at: at) else { throw .refused(path: at, reason: "no '\(key)'", errno: .invalidArgument) }
    return id
  }

  static func optionalID(_ value: JSONValue, _ key: String, at: String) throws(OvlError) -> String? {
    guard let field = value[key], field != .null else { return nil }
    guard let id = field.string, StoreID.isValid(id) else {
      throw .refused(path: at, reason: "bad \(key) \(field.encoded().count > 80 ? "value" : String(decoding: field.encoded(), as: UTF8.self)) (64 hex digits expected)", errno: .invalidArgument)
    }
    return id
  }

  static func names(_ value: JSONValue, at: String) throws(OvlError) -> [String] {
    guard let field = value["names"], field != .null else { return [] }
    guard let array = field.array else { throw .refused(path: at, reason: "'names' is not an array", errno: .invalidArgument) }
    var names: [String] = []
    for name in array {
      guard let s = name.string else { throw .refused(path: at, reason: "a name that is not a string", errno: .invalidArgument) }
      names.append(s)
    }
    return names
  }
}
