import OvlFormat
import OvlSystem

/// A directory of one layer, held open: the userspace counterpart of a dentry the kernel
/// holds. Layer 0 is the upper layer, 1... the lower layers top-most first, then the
/// data-only layers.
public final class LayerDir {
  public let layer: Int
  public let fd: FD
  /// Its path inside its layer (empty for the layer root).
  public let path: [UInt8]
  /// Names present, when this directory was listed (saves lookups of absent names).
  var listed: Set<[UInt8]>?

  public init(layer: Int, fd: consuming FD, path: [UInt8]) {
    self.layer = layer
    self.fd = fd
    self.path = path
  }
}

/// An overlay stack opened for reading: the layer roots, validated as the kernel validates
/// them at mount time.
public final class Stack {
  public let options: StackOptions
  public let namespace: XattrNamespace
  /// What the process opening the stack may do, read once (the kernel's `creator_cred`):
  /// every writer asks it.
  public let credentials: Credentials
  public let upperRoot: LayerDir?
  /// Regular lower layers (layer 1...), top-most first.
  let lowerRoots: [LayerDir]
  /// Data-only layers, numbered after the regular lower layers.
  let dataRoots: [LayerDir]
  /// Layer roots and the work dir: a lookup that reaches one of them fails ELOOP, as the
  /// kernel's trap inodes make it.
  let traps: Set<FileID>
  /// Layers in which an `opaque=x` directory was seen (the kernel's sticky per-layer flag).
  var layersWithXwhiteouts: Set<Int> = []
  /// `workdir/index` when index=on and it exists.
  public private(set) var indexDir: LayerDir?
  /// The work dir itself (upper stacks).
  public let workRoot: LayerDir?
  /// Filesystem uuids by layer, read when a handle is first encoded.
  var uuids: [Int: [UInt8]] = [:]
  /// Overlay inodes a walk has met through a redirect, by the key the kernel hashes them
  /// with (see `verifyInode`).
  var redirectedInodes: [FileID: (lower: FileID?, upper: FileID?)] = [:]
  /// Filesystem numbers and xino bits for st_ino, worked out when first needed.
  lazy var inodeGeometry = Stack.inodeGeometry(upper: upperRoot, layers: lowerRoots + dataRoots, options: options)

  /// Paths of all layers by layer number (upper, lowers, data-only).
  public var layerPaths: [String] {
    [options.upperDir ?? ""] + options.lowerDirs + options.dataDirs
  }

  public init(options: StackOptions) throws(OvlError) {
    self.options = options
    namespace = options.xattrNamespace
    credentials = Credentials.current
    func open(_ path: String) throws(OvlError) -> FD {
      try step("open", path) { () throws(Errno) in try FD.openDirectory(atHostPath: path) }
    }
    var traps: [FileID: String] = [:]
    func trap(_ fd: borrowing FD, _ path: String, _ role: String) throws(OvlError) {
      let id = try step("statx", path) { () throws(Errno) in try fd.stat().id }
      if let other = traps[id] {
        throw .format(path: path, reason: "conflicting \(role) path (the same directory as \(other))", errno: .tooManySymbolicLinkLevels)
      }
      traps[id] = path
    }

    var upper: LayerDir?
    var index: LayerDir?
    var work: LayerDir?
    if let upperPath = options.upperDir, let workPath = options.workDir {
      let upperFD = try open(upperPath)
      let workFD = try open(workPath)
      let upperStatus = try step("statx", upperPath) { () throws(Errno) in try upperFD.stat() }
      let workStatus = try step("statx", workPath) { () throws(Errno) in try workFD.stat() }
      guard upperStatus.mountID == workStatus.mountID else {
        throw .format(path: workPath, reason: "workdir and upperdir must reside under the same mount", errno: .invalidArgument)
      }
      let upperAncestors = try Self.ancestors(of: upperFD, upperPath)
      let workAncestors = try Self.ancestors(of: workFD, workPath)
      if upperAncestors.contains(workStatus.id) || workAncestors.contains(upperStatus.id) || upperStatus.id == workStatus.id {
        throw .format(path: workPath, reason: "workdir and upperdir must be separate subtrees", errno: .invalidArgument)
      }
      try trap(upperFD, upperPath, "upperdir")
      try trap(workFD, workPath, "workdir")
      if options.index {
        do {
          index = LayerDir(layer: 0, fd: try FD.open(Array("index".utf8), in: workFD, .directory), path: [])
        } catch .noSuchFileOrDirectory {
          index = nil  // the first mount creates it
        } catch {
          throw .system(call: "open", path: workPath + "/index", errno: error)
        }
      }
      upper = LayerDir(layer: 0, fd: upperFD, path: [])
      work = LayerDir(layer: 0, fd: workFD, path: [])
    }
    var lowers: [LayerDir] = []
    for (i, path) in (options.lowerDirs + options.dataDirs).enumerated() {
      let fd = try open(path)
      try trap(fd, path, "lowerdir")
      lowers.append(LayerDir(layer: i + 1, fd: fd, path: []))
    }
    // A lower layer or the work dir inside another layer: "overlapping ... path" (ELOOP).
    func checkOverlap(_ fd: borrowing FD, _ path: String, _ role: String) throws(OvlError) {
      for id in try Self.ancestors(of: fd, path) {
        if let other = traps[id] {
          throw .format(path: path, reason: "overlapping \(role) path (inside \(other))", errno: .tooManySymbolicLinkLevels)
        }
      }
    }
    if let workPath = options.workDir { try checkOverlap(try open(workPath), workPath, "workdir") }
    for (lower, path) in zip(lowers, options.lowerDirs + options.dataDirs) {
      try checkOverlap(lower.fd, path, "lowerdir")
    }
    var devices = Set<UInt64>()
    if let upper, let id = try? upper.fd.stat().id { devices.insert(id.device) }
    for lower in lowers { if let id = try? lower.fd.stat().id { devices.insert(id.device) } }
    sameFilesystem = devices.count <= 1
    self.upperRoot = upper
    self.lowerRoots = Array(lowers.prefix(options.lowerDirs.count))
    self.dataRoots = Array(lowers.dropFirst(options.lowerDirs.count))
    self.traps = Set(traps.keys)
    self.indexDir = index
    self.workRoot = work
    try verifyIndexDirectory()
  }

  /// Identities of the proper ancestors of a directory, up to the root of the namespace.
  static func ancestors(of dir: borrowing FD, _ path: String) throws(OvlError) -> [FileID] {
    var result: [FileID] = []
    var current = try step("open", path + "/..") { () throws(Errno) in try FD.open([0x2E, 0x2E], in: dir, .directoryPath) }
    var previous = try step("statx", path) { () throws(Errno) in try dir.stat().id }
    while true {
      let id = try step("statx", path + "/..") { () throws(Errno) in try current.stat().id }
      if id == previous { break }
      result.append(id)
      previous = id
      current = try step("open", path + "/..") { () throws(Errno) in try FD.open([0x2E, 0x2E], in: current, .directoryPath) }
    }
    return result
  }

  /// All layers on one filesystem: the kernel then translates inode numbers in readdir.
  public let sameFilesystem: Bool
  /// xino maps inode numbers of several filesystems into one (xino=on|auto across them).
  public var xinoTranslates: Bool { !sameFilesystem && options.xino != .off }

  /// Uses `dir` as the index dir from now on (a first write creates it, as a first mount).
  public func adoptIndexDirectory(_ dir: LayerDir) {
    if indexDir == nil { indexDir = dir }
  }

  /// The root directory of lower layer `layer` (1 = top-most).
  public func lowerRootDir(_ layer: Int) -> LayerDir? {
    (lowerRoots + dataRoots).first { $0.layer == layer }
  }

  /// The number of regular lower layers.
  public var lowerCount: Int { lowerRoots.count }
  public var hasDataLayers: Bool { !dataRoots.isEmpty }

  /// Lookup reads redirects when it follows them or when data-only layers exist.
  var checksRedirects: Bool { options.redirectMode.follows || hasDataLayers }
}

extension KernelDefaults {
  /// The running kernel's overlay module defaults, where /sys shows them.
  public static func current() -> KernelDefaults {
    var d = KernelDefaults()
    func flag(_ name: String) -> Bool? {
      guard let fd = try? FD.openFile(atHostPath: "/sys/module/overlay/parameters/" + name),
        let text = try? fd.readAll(limit: 64), let first = text.first
      else { return nil }
      return first == UInt8(ascii: "Y")
    }
    d.redirectDir = flag("redirect_dir") ?? d.redirectDir
    d.redirectAlwaysFollow = flag("redirect_always_follow") ?? d.redirectAlwaysFollow
    d.index = flag("index") ?? d.index
    d.metacopy = flag("metacopy") ?? d.metacopy
    d.nfsExport = flag("nfs_export") ?? d.nfsExport
    d.xinoAuto = flag("xino_auto") ?? d.xinoAuto
    return d
  }
}
