import OvlFormat
import OvlSystem

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`): enough to
/// add one layer on top of a tagged image, as `umoci raw add-layer` does, so skopeo and
/// umoci can read the result.
///
/// Every file is published the same way: written under a temporary name, fsynced, renamed
/// over its name, and the directory fsynced, so after a crash `index.json` names only
/// complete blobs. The JSON is written as Foundation wrote it before (ovltool no longer
/// links Foundation): index and manifests with keys in byte order, the config re-encoded
/// with `JSONSerialization`'s collated key order.
public struct ImageLayout {
  public let root: String

  public init(path: String) { root = path }

  struct Descriptor {
    var mediaType: String
    var digest: String
    var size: Int64
    var annotations: [JSONMember]?
  }
  struct Index {
    var schemaVersion: Int64
    var mediaType: String?
    var manifests: [Descriptor]
  }
  struct Manifest {
    var schemaVersion: Int64
    var mediaType: String?
    var config: Descriptor
    var layers: [Descriptor]
  }

  static let refName = "org.opencontainers.image.ref.name"
  static let manifestType = "application/vnd.oci.image.manifest.v1+json"
  static let configType = "application/vnd.oci.image.config.v1+json"

  var blobDirectory: String { root + "/blobs/sha256" }

  func blobPath(_ digest: String) -> String {
    blobDirectory + "/" + blobName(digest)
  }

  /// A blob's file name in the blob directory.
  public func blobName(_ digest: String) -> String {
    digest.hasPrefix("sha256:") ? String(digest.dropFirst(7)) : digest
  }

  /// A name in the blob directory (made if missing) for a blob whose digest is not known
  /// yet: an `OutputFile` writes it beside this name and commits it as `blobName(digest)`
  /// (replacing a copy that is already there, the rename made durable).
  public func newBlobPath() throws(OvlError) -> String {
    let dir = blobDirectory
    try step("mkdir", dir) { () throws(Errno) in try makeHostDirectories(dir, permissions: 0o777) }
    return dir + "/.ovltool-layer-\(processID())"
  }

  private func syncDirectory(_ path: String) throws(OvlError) {
    try step("fsync", path) { () throws(Errno) in try FD.openDirectory(atHostPath: path).sync() }
  }

  /// Writes `bytes` to `path` as every output file is written (`OutputFile`: beside it,
  /// fsynced, renamed over it, the directory fsynced).
  private func replaceFile(_ path: String, _ bytes: [UInt8]) throws(OvlError) {
    let out = try OutputFile(path)
    try step("write", path) { () throws(Errno) in try out.fd.write(bytes) }
    try out.commit()
  }

  private func writeBlob(_ bytes: [UInt8], mediaType: String) throws(OvlError) -> Descriptor {
    let digest = "sha256:" + hex(bytes.withUnsafeBytes { raw in
      let d = SHA256Digest()
      d.update(raw)
      return d.finish()
    })
    try replaceFile(blobPath(digest), bytes)
    return Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count), annotations: nil)
  }

  /// The JSON in file `path`, or nil if there is no such file.
  private func readJSON(_ path: String, missingIsEmpty: Bool = false) throws(OvlError) -> JSONValue? {
    let bytes: [UInt8]
    do {
      bytes = try FD.openFile(atHostPath: path).readAll()
    } catch .noSuchFileOrDirectory where missingIsEmpty {
      return nil
    } catch {
      throw .system(call: "read", path: path, errno: error)
    }
    do { return try JSONValue(parsing: bytes) } catch { throw .format(path: path, reason: error.description, errno: .ioError) }
  }

  /// Adds `layer` (already in `blobs/`) on top of the image tagged `base` (or a new, empty
  /// image) and tags the result `tag`. The config gets the layer's DiffID; `created` is the
  /// clamp time so the manifest digest is reproducible too.
  public func addLayer(_ layer: LayerDescriptor, tag: String, base: String?, created: Int64) throws(OvlError) -> String {
    try addLayers([(layer, "ovltool export")], tag: tag, base: base, created: created)
  }

  /// A new image `tag`: `base`'s layers (or none) and then `added`, bottom first, each with
  /// its history entry (`created_by`).
  public func addLayers(_ added: [(layer: LayerDescriptor, createdBy: String)], tag: String, base: String?, created: Int64) throws(OvlError) -> String {
    var index = Index(schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [])
    var config = JSONValue.object([
      JSONMember("architecture", .string("amd64")), JSONMember("os", .string("linux")),
      JSONMember("rootfs", .object([JSONMember("type", .string("layers")), JSONMember("diff_ids", .array([]))])),
      JSONMember("config", .object([])),
    ])
    var layers: [Descriptor] = []
    let blobs = blobDirectory
    try step("mkdir", blobs) { () throws(Errno) in try makeHostDirectories(blobs, permissions: 0o777) }
    try replaceFile(root + "/oci-layout", Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8))
    let indexPath = root + "/index.json"
    if let json = try readJSON(indexPath, missingIsEmpty: true) {
      index = try Index(json, indexPath)
    }
    if let base {
      guard let found = index.manifests.first(where: { $0.annotation(Self.refName) == base }) else {
        throw OvlError.usage("\(root): no image tagged '\(base)'")
      }
      let manifestPath = blobPath(found.digest)
      let manifest = try Manifest(try readJSON(manifestPath)!, manifestPath)
      layers = manifest.layers
      if case .object(let parsed)? = try readJSON(blobPath(manifest.config.digest)) {
        config = .object(parsed)
      }
    }
    // As Foundation's casts did: a part of another type than expected starts afresh.
    var rootfs = config["rootfs"].flatMap { $0.members.map(JSONValue.object) } ?? .object([JSONMember("type", .string("layers"))])
    var diffIDs = rootfs["diff_ids"]?.array.flatMap { $0.allSatisfy { $0.string != nil } ? $0 : nil } ?? []
    let stamp = Timestamp.iso8601(seconds: created)
    var history = config["history"]?.array.flatMap { $0.allSatisfy { $0.members != nil } ? $0 : nil } ?? []
    for (layer, createdBy) in added {
      diffIDs.append(.string(layer.diffID))
      history.append(.object([JSONMember("created", .string(stamp)), JSONMember("created_by", .string(createdBy))]))
      layers.append(Descriptor(mediaType: layer.mediaType, digest: layer.digest, size: Int64(layer.size), annotations: nil))
    }
    rootfs = rootfs.setting("diff_ids", .array(diffIDs))
    config = config.setting("rootfs", rootfs)
    config = config.setting("created", .string(stamp))
    config = config.setting("history", .array(history))

    let configDescriptor = try writeBlob(config.encoded(.jsonSerialization), mediaType: Self.configType)
    let manifest = Manifest(schemaVersion: 2, mediaType: Self.manifestType, config: configDescriptor, layers: layers)
    var manifestDescriptor = try writeBlob(manifest.json.encoded(.jsonEncoder), mediaType: Self.manifestType)
    manifestDescriptor.annotations = [JSONMember(Self.refName, .string(tag))]
    // The blobs (each made durable in blobs/sha256 as it was written — and blobs/sha256
    // itself, if just made) are durable before the index that names them.
    try syncDirectory(root + "/blobs")
    index.manifests.removeAll { $0.annotation(Self.refName) == tag }
    index.manifests.append(manifestDescriptor)
    // rename(2): readers see the old index or the new one, never a partial file.
    try replaceFile(indexPath, index.json.encoded(.jsonEncoder))
    return manifestDescriptor.digest
  }
}

// MARK: - The OCI structures as JSON (the fields ovltool knows; others are dropped)

extension ImageLayout.Descriptor {
  init(_ json: JSONValue, _ path: String) throws(OvlError) {
    guard let mediaType = json["mediaType"]?.string, let digest = json["digest"]?.string, let size = json["size"]?.int64 else {
      throw .format(path: path, reason: "a descriptor needs mediaType, digest and size", errno: .ioError)
    }
    self.init(mediaType: mediaType, digest: digest, size: size, annotations: nil)
    if let annotations = json["annotations"], annotations != .null {
      guard let members = annotations.members, members.allSatisfy({ $0.value.string != nil }) else {
        throw .format(path: path, reason: "annotations must map strings to strings", errno: .ioError)
      }
      self.annotations = members
    }
  }

  func annotation(_ key: String) -> String? { annotations?.last { $0.key == key }?.value.string }

  var json: JSONValue {
    var members = [JSONMember("mediaType", .string(mediaType)), JSONMember("digest", .string(digest)), JSONMember("size", .integer(size))]
    if let annotations { members.append(JSONMember("annotations", .object(annotations))) }
    return .object(members)
  }
}

extension ImageLayout.Index {
  init(_ json: JSONValue, _ path: String) throws(OvlError) {
    guard let version = json["schemaVersion"]?.int64, let manifests = json["manifests"]?.array else {
      throw .format(path: path, reason: "an index needs schemaVersion and manifests", errno: .ioError)
    }
    var descriptors: [ImageLayout.Descriptor] = []
    for m in manifests { descriptors.append(try ImageLayout.Descriptor(m, path)) }
    self.init(schemaVersion: version, mediaType: try optionalString(json, "mediaType", path), manifests: descriptors)
  }

  var json: JSONValue {
    var members = [JSONMember("schemaVersion", .integer(schemaVersion))]
    if let mediaType { members.append(JSONMember("mediaType", .string(mediaType))) }
    members.append(JSONMember("manifests", .array(manifests.map(\.json))))
    return .object(members)
  }
}

extension ImageLayout.Manifest {
  init(_ json: JSONValue, _ path: String) throws(OvlError) {
    guard let version = json["schemaVersion"]?.int64, let config = json["config"], let layers = json["layers"]?.array else {
      throw .format(path: path, reason: "a manifest needs schemaVersion, config and layers", errno: .ioError)
    }
    var descriptors: [ImageLayout.Descriptor] = []
    for l in layers { descriptors.append(try ImageLayout.Descriptor(l, path)) }
    self.init(
      schemaVersion: version, mediaType: try optionalString(json, "mediaType", path),
      config: try ImageLayout.Descriptor(config, path), layers: descriptors)
  }

  var json: JSONValue {
    var members = [JSONMember("schemaVersion", .integer(schemaVersion))]
    if let mediaType { members.append(JSONMember("mediaType", .string(mediaType))) }
    members += [JSONMember("config", config.json), JSONMember("layers", .array(layers.map(\.json)))]
    return .object(members)
  }
}

/// Member `key`: absent or null is nil, a string is itself, anything else an error.
private func optionalString(_ json: JSONValue, _ key: String, _ path: String) throws(OvlError) -> String? {
  guard let value = json[key], value != .null else { return nil }
  guard let s = value.string else { throw .format(path: path, reason: "\(key) must be a string", errno: .ioError) }
  return s
}

extension LayerDescriptor {
  /// `{mediaType, digest, size}` (an OCI descriptor) plus the DiffID.
  public var json: String {
    #"{"diffID":"\#(diffID)","digest":"\#(digest)","mediaType":"\#(mediaType)","size":\#(size)}"#
  }
}
