import OvlFormat
import OvlSystem

/// A layer of this stack that a mounted overlay uses, and where that overlay is mounted.
public struct LayerInUse: Sendable {
  /// "upperdir", "workdir" or "lowerdir".
  public let role: String
  /// The layer number (0 upper, 1... lowers and data-only layers); nil for the work dir.
  public let layer: Int?
  /// Where the overlay is mounted (and in which mount namespace, if not ours).
  public let mountPoint: String
}

/// The layers of `stack` that a mounted overlay uses (as any of its upper, work or lower
/// dirs), identified by device and inode, never by comparing option strings:
/// - every mount namespace that a process shows in /proc is read, and each layer path of
///   each overlay mount is opened as that namespace resolves it (`/proc/PID/root`);
/// - a relative path (container engines mount from their store directory; `cd parent &&
///   mount … mnt`) is tried against every directory above the mount point;
/// - where that cannot be sure (a relative or unopenable upperdir or workdir), the kernel is
///   asked whether our upper and work dirs carry its in-use mark (`isOverlayLayerInUse`),
///   which also finds mounts of renamed directories and of namespaces no process shows.
public func layersInUse(_ stack: Stack) -> [LayerInUse] {
  var ours: [FileID: (role: String, layer: Int?)] = [:]
  if let upper = stack.upperRoot, let id = try? upper.fd.stat().id { ours[id] = ("upperdir", 0) }
  if let work = stack.workRoot, let id = try? work.fd.stat().id { ours[id] = ("workdir", nil) }
  for layer in 1..<(stack.layerPaths.count) {
    if let root = stack.lowerRootDir(layer), let id = try? root.fd.stat().id, ours[id] == nil { ours[id] = ("lowerdir", layer) }
  }
  var found: [LayerInUse] = []
  var uncertain: [String] = []
  MountTable.forEachVisible { table in
    for mount in OverlayMountEntry.parseTable(table.contents) {
      let place = table.describe(mount.mountPoint)
      for layer in mount.layers {
        let ids = table.resolve(layer.path, mountPoint: mount.mountPoint)
        for id in ids {
          if let mine = ours[id] { found.append(LayerInUse(role: mine.role, layer: mine.layer, mountPoint: place)) }
        }
        let relative = layer.path.first != UInt8(ascii: "/")
        if layer.role != .lower && (ids.isEmpty || relative) { uncertain.append(place) }
      }
    }
  }
  if !uncertain.isEmpty {
    let place = Set(uncertain).count == 1 ? uncertain[0] : "one of " + Array(Set(uncertain)).sorted().joined(separator: ", ")
    if let upper = stack.upperRoot, !found.contains(where: { $0.role == "upperdir" }), upper.fd.isOverlayLayerInUse() == true {
      found.append(LayerInUse(role: "upperdir", layer: 0, mountPoint: place))
    }
    if let work = stack.workRoot, !found.contains(where: { $0.role == "workdir" }), work.fd.isOverlayLayerInUse() == true {
      found.append(LayerInUse(role: "workdir", layer: nil, mountPoint: place))
    }
  }
  return found
}

/// Refuses to write to layers that a mounted overlay uses: the kernel's in-use protection
/// lives in memory only. Only the upper and work dirs count: lowers are shared read-only.
public func refuseMountedLayers(_ stack: Stack) throws(OvlError) {
  guard stack.upperRoot != nil, stack.workRoot != nil else { return }
  for use in layersInUse(stack) where use.role != "lowerdir" {
    throw .format(path: stack.layerPaths[0], reason: "the \(use.role) is in use by the overlay mounted at \(use.mountPoint); unmount it first", errno: .resourceBusy)
  }
}

/// One mount namespace's table and the root its paths are resolved in.
private struct MountTable: ~Copyable {
  let contents: [UInt8]
  let root: FD
  /// The process whose namespace this is; nil for ours.
  let pid: String?

  /// Ours first, then one table for each other mount namespace that a process in /proc
  /// shows (those this process may look into).
  static func forEachVisible(_ body: (borrowing MountTable) -> Void) {
    guard let own = try? FD.openFile(atHostPath: "/proc/self/mountinfo").readAll(),
      let root = try? FD.openDirectory(atHostPath: "/", pathOnly: true)
    else { return }
    body(MountTable(contents: own, root: root, pid: nil))
    guard let proc = try? FD.openDirectory(atHostPath: "/proc") else { return }
    var seen: Set<[UInt8]> = []
    if let ns = namespace(of: "self", in: proc) { seen.insert(ns) }
    for entry in (try? proc.entries()) ?? [] where entry.isDirectory && entry.name.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
      let pid = String(decoding: entry.name, as: UTF8.self)
      guard let ns = namespace(of: pid, in: proc), seen.insert(ns).inserted,
        let contents = try? FD.openFile(atHostPath: "/proc/\(pid)/mountinfo").readAll(),
        let root = try? FD.openDirectory(atHostPath: "/proc/\(pid)/root", pathOnly: true)
      else { continue }
      body(MountTable(contents: contents, root: root, pid: pid))
    }
  }

  /// The `mnt:[INODE]` that names a process's mount namespace.
  private static func namespace(of pid: String, in proc: borrowing FD) -> [UInt8]? {
    try? proc.readLink(Array("\(pid)/ns/mnt".utf8))
  }

  borrowing func describe(_ mountPoint: [UInt8]) -> String {
    let path = String(decoding: mountPoint, as: UTF8.self)
    guard let pid else { return path }
    return "\(path) in the mount namespace of process \(pid)"
  }

  /// What `path` names in this namespace: one directory for an absolute path; for a
  /// relative one, what it names from each directory above the mount point (the mounter's
  /// working directory is not recorded).
  borrowing func resolve(_ path: [UInt8], mountPoint: [UInt8]) -> [FileID] {
    func id(_ p: [UInt8]) -> FileID? {
      guard let fd = try? FD.openDirectory(inRoot: root, path: p) else { return nil }
      return try? fd.stat().id
    }
    if path.first == UInt8(ascii: "/") { return id(path).map { [$0] } ?? [] }
    var ids: [FileID] = []
    var base = mountPoint
    while let slash = base.lastIndex(of: UInt8(ascii: "/")) {
      base = Array(base[..<slash])
      if let found = id((base.isEmpty ? [] : base) + [UInt8(ascii: "/")] + path), !ids.contains(found) { ids.append(found) }
      if base.isEmpty { break }
    }
    return ids
  }
}
