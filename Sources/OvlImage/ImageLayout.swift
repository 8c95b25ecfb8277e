import Foundation
import OvlSystem

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`): enough to
/// add one layer on top of a tagged image, as `umoci raw add-layer` does, so skopeo and
/// umoci can read the result.
public struct ImageLayout {
  public let root: URL

  public init(path: String) { root = URL(fileURLWithPath: path) }

  struct Descriptor: Codable {
    var mediaType: String
    var digest: String
    var size: Int64
    var annotations: [String: String]?
  }
  struct Index: Codable {
    var schemaVersion: Int
    var mediaType: String?
    var manifests: [Descriptor]
  }
  struct Manifest: Codable {
    var schemaVersion: Int
    var mediaType: String?
    var config: Descriptor
    var layers: [Descriptor]
  }

  static let refName = "org.opencontainers.image.ref.name"
  static let manifestType = "application/vnd.oci.image.manifest.v1+json"
  static let configType = "application/vnd.oci.image.config.v1+json"

  private func fail(_ what: String, _ error: any Error) -> OvlError {
    .format(path: root.path + "/" + what, reason: "\(error)", errno: .ioError)
  }

  func blobURL(_ digest: String) -> URL {
    root.appendingPathComponent("blobs/sha256/" + digest.replacingOccurrences(of: "sha256:", with: ""))
  }

  /// Where a blob goes before its digest is known: written there, then renamed.
  public func temporaryBlobPath() throws(OvlError) -> String {
    do {
      try FileManager.default.createDirectory(at: root.appendingPathComponent("blobs/sha256"), withIntermediateDirectories: true)
    } catch { throw fail("blobs/sha256", error) }
    return root.appendingPathComponent("blobs/sha256/.ovltool-layer-\(getpid())").path
  }

  public func publishBlob(temporary: String, digest: String) throws(OvlError) {
    let target = blobURL(digest)
    do {
      if FileManager.default.fileExists(atPath: target.path) { try FileManager.default.removeItem(at: target) }
      try FileManager.default.moveItem(atPath: temporary, toPath: target.path)
    } catch { throw fail("blobs", error) }
  }

  private func writeBlob(_ data: Data) throws(OvlError) -> Descriptor {
    let digest = "sha256:" + hex(data.withUnsafeBytes { raw in
      let d = SHA256Digest()
      d.update(raw)
      return d.finish()
    })
    do { try data.write(to: blobURL(digest)) } catch { throw fail("blobs", error) }
    return Descriptor(mediaType: "", digest: digest, size: Int64(data.count), annotations: nil)
  }

  private static func encoder() -> JSONEncoder {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return e
  }

  /// Adds `layer` (already in `blobs/`) on top of the image tagged `base` (or a new, empty
  /// image) and tags the result `tag`. The config gets the layer's DiffID; `created` is the
  /// clamp time so the manifest digest is reproducible too.
  public func addLayer(_ layer: LayerDescriptor, tag: String, base: String?, created: Int64) throws(OvlError) -> String {
    let fm = FileManager.default
    let decoder = JSONDecoder()
    var index = Index(schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [])
    var config: [String: Any] = [
      "architecture": "amd64", "os": "linux",
      "rootfs": ["type": "layers", "diff_ids": [String]()] as [String: Any],
      "config": [String: Any](),
    ]
    var layers: [Descriptor] = []
    do {
      try fm.createDirectory(at: root.appendingPathComponent("blobs/sha256"), withIntermediateDirectories: true)
      try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: root.appendingPathComponent("oci-layout"))
      if let data = try? Data(contentsOf: root.appendingPathComponent("index.json")) {
        index = try decoder.decode(Index.self, from: data)
      }
      if let base {
        guard let found = index.manifests.first(where: { $0.annotations?[Self.refName] == base }) else {
          throw OvlError.usage("\(root.path): no image tagged '\(base)'")
        }
        let manifest = try decoder.decode(Manifest.self, from: Data(contentsOf: blobURL(found.digest)))
        layers = manifest.layers
        if let parsed = try JSONSerialization.jsonObject(with: Data(contentsOf: blobURL(manifest.config.digest))) as? [String: Any] {
          config = parsed
        }
      }
    } catch let error as OvlError {
      throw error
    } catch {
      throw fail("index.json", error)
    }
    var rootfs = config["rootfs"] as? [String: Any] ?? ["type": "layers"]
    var diffIDs = rootfs["diff_ids"] as? [String] ?? []
    diffIDs.append(layer.diffID)
    rootfs["diff_ids"] = diffIDs
    config["rootfs"] = rootfs
    let stamp = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(created)))
    config["created"] = stamp
    var history = config["history"] as? [[String: Any]] ?? []
    history.append(["created": stamp, "created_by": "ovltool export"])
    config["history"] = history
    layers.append(Descriptor(mediaType: layer.mediaType, digest: layer.digest, size: Int64(layer.size), annotations: nil))
    do {
      let configData = try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .withoutEscapingSlashes])
      var configDescriptor = try writeBlob(configData)
      configDescriptor.mediaType = Self.configType
      let manifest = Manifest(schemaVersion: 2, mediaType: Self.manifestType, config: configDescriptor, layers: layers)
      var manifestDescriptor = try writeBlob(try Self.encoder().encode(manifest))
      manifestDescriptor.mediaType = Self.manifestType
      manifestDescriptor.annotations = [Self.refName: tag]
      index.manifests.removeAll { $0.annotations?[Self.refName] == tag }
      index.manifests.append(manifestDescriptor)
      let indexData = try Self.encoder().encode(index)
      let temporary = root.appendingPathComponent("index.json.ovltool-tmp")
      try indexData.write(to: temporary)
      // rename(2): readers see the old index or the new one, never a partial file.
      let rootPath = root.path
      try step("rename", rootPath + "/index.json") { () throws(Errno) in
        let dir = try FD.openDirectory(atHostPath: rootPath)
        try dir.rename(Array("index.json.ovltool-tmp".utf8), to: Array("index.json".utf8), in: dir)
      }
      return manifestDescriptor.digest
    } catch let error as OvlError {
      throw error
    } catch {
      throw fail("index.json", error)
    }
  }
}

extension LayerDescriptor {
  /// `{mediaType, digest, size}` (an OCI descriptor) plus the DiffID.
  public var json: String {
    #"{"diffID":"\#(diffID)","digest":"\#(digest)","mediaType":"\#(mediaType)","size":\#(size)}"#
  }
}
