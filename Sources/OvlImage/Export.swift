import OvlFormat
import OvlStack
import OvlSystem

/// How `export` (and the tar side of `diff`/`merge`) writes entries.
public struct ExportOptions: Sendable {
  public var compression: LayerCompression = .none
  /// Export what the merged view shows for redirected directories and metacopy files
  /// instead of refusing them.
  public var resolve = false
  /// `SOURCE_DATE_EPOCH`: no mtime in the layer is later than this.
  public var mtimeClamp: Int64?
  /// Look for what cannot be exported before the first byte is written (one more walk of
  /// the upper, names and xattr names only): for an output that cannot be taken back, such
  /// as standard output.
  public var checkFirst = false
  /// Owners, modes and types recorded in `user.containers.override_stat` written as the
  /// entries' own, the xattr left out (`--rootless-owners`).
  public var rootlessOwners = false
  public init() {}
}

/// Where export found something it will not write.
public struct Unrepresentable: Error, CustomStringConvertible {
  public let paths: [String]
  public let reason: String
  public var description: String { "\(reason): " + paths.joined(separator: ", ") }
}

/// Whether an xattr name stays out of a layer: the overlay's own names in either namespace
/// (a layer does not know which one its next mount uses), fuse-overlayfs bookkeeping, and
/// SELinux labels (host policy, not image content).
func isLayerPrivate(_ name: [UInt8]) -> Bool {
  if XattrNamespace.trusted.isPrivate(name) || XattrNamespace.user.isPrivate(name) { return true }
  if name.starts(with: Array("user.fuseoverlayfs.".utf8)) { return true }
  return name == Array("security.selinux".utf8)
}

let whiteoutPrefix: [UInt8] = Array(".wh.".utf8)
let opaqueMarker: [UInt8] = Array(".wh..wh..opq".utf8)

/// Turns the upper layer of a stack into an OCI layer (§6.1 of the layer study): depth
/// first; per directory its header, its opaque marker, its whiteouts, then the other
/// children, all sorted by name bytes.
public final class Exporter {
  let stack: Stack
  /// The stack without its upper: what the upper's opaque dirs and whiteouts hide.
  let below: Stack?
  let options: ExportOptions
  let writer: LayerWriter
  let warn: (String) -> Void
  /// First path exported for each multiply-linked inode (the one that carries the data),
  /// and how many of its links are still to come: forgotten after its last (links outside
  /// the tree, such as an index entry's, keep it to the end).
  private var linkTargets: [FileID: (path: [UInt8], remaining: Int)] = [:]
  private var unresolved: [String] = []

  public init(stack: Stack, options: ExportOptions, writer: LayerWriter, warn: @escaping (String) -> Void) throws(OvlError) {
    guard stack.upperRoot != nil else { throw .usage("export needs a stack with an upperdir") }
    self.stack = stack
    self.options = options
    self.writer = writer
    self.warn = warn
    var lowerOptions = stack.options
    lowerOptions.upperDir = nil
    lowerOptions.workDir = nil
    lowerOptions.index = false
    lowerOptions.nfsExport = false
    below = lowerOptions.lowerDirs.isEmpty ? nil : try Stack(options: lowerOptions)
  }

  /// Writes the whole upper; returns the layer's digests. One pass: what cannot be
  /// represented is collected and refused at the end, before the archive is finished (the
  /// caller removes the partial output).
  public func run() throws(OvlError) -> LayerDescriptor {
    guard let upper = stack.upperRoot else { throw .usage("export needs a stack with an upperdir") }
    if options.checkFirst {
      try findUnrepresentable(upper.fd, [])
      try refuseUnresolved()
    }
    try exportDirectory(upper.fd, [])
    try refuseUnresolved()
    return try writer.finish()
  }

  private func refuseUnresolved() throws(OvlError) {
    if !unresolved.isEmpty {
      throw .refused(
        path: unresolved.joined(separator: ", "),
        reason: "redirected directories or metacopy files: the upper alone does not hold them (use --resolve to export the merged view)",
        errno: .notSupported)
    }
  }

  /// The walk of `checkFirst`: what `exportDirectory` would refuse — a `.wh.` name that is
  /// not a whiteout, and (without --resolve) redirected directories and metacopy files —
  /// found from directory entries and xattr names, a stat only for `.wh.` names.
  private func findUnrepresentable(_ dir: borrowing FD, _ path: [UInt8]) throws(OvlError) {
    let entries = try step("getdents64", describe(path)) { () throws(Errno) in try dir.entries() }
    for e in entries {
      let childPath = join(path, e.name)
      if e.name.starts(with: whiteoutPrefix) {
        let status = try step("fstatat", describe(childPath)) { () throws(Errno) in try dir.stat(e.name) }
        if try classify(dir, e.name, childPath, status).0 != .whiteout {
          throw whiteoutPrefixRefused(childPath)
        }
        continue
      }
      guard e.isDirectory || e.mayBeRegular else { continue }
      var isDirectory = e.isDirectory
      if e.mayBeRegular && e.mayBeWhiteout {
        // DT_UNKNOWN: the filesystem does not say.
        isDirectory = try step("fstatat", describe(childPath)) { () throws(Errno) in try dir.stat(e.name) }.type == .directory
      }
      let names = try step("listxattr", describe(childPath)) { () throws(Errno) in try dir.xattrNames(e.name) }
      if isDirectory {
        if has(names, .redirect) != nil && !options.resolve { unresolved.append(String(decoding: childPath, as: UTF8.self)) }
        let child = try step("open", describe(childPath)) { () throws(Errno) in try FD.open(e.name, in: dir, .directory) }
        try findUnrepresentable(child, childPath)
      } else if has(names, .metacopy) != nil && !options.resolve {
        unresolved.append(String(decoding: childPath, as: UTF8.self))
      }
    }
  }

  // MARK: - Classification

  enum Kind {
    case whiteout, opaqueDirectory, directory, redirectedDirectory, metacopy, socket, other
  }

  private func describe(_ path: [UInt8]) -> String {
    (stack.layerPaths.first ?? "upper") + "/" + String(decoding: path, as: UTF8.self)
  }

  /// Whether `key` is among `names` in either namespace: an upper does not say which one
  /// its mounts used.
  private func has(_ names: [[UInt8]], _ key: OverlayXattr) -> [UInt8]? {
    for ns in [stack.namespace, stack.namespace == .trusted ? XattrNamespace.user : .trusted] where names.contains(ns.name(key)) {
      return ns.name(key)
    }
    return nil
  }

  /// One entry's kind and xattr names, from one listxattr (a getxattr only for an opaque
  /// candidate): the walk's cost per entry stays close to tar's.
  /// The path this inode was first exported under (this entry is then a hard link to it);
  /// remembers `path` for the later names of a multiply linked file.
  private func exportedEarlier(_ status: FileStatus, _ path: [UInt8]) -> [UInt8]? {
    guard status.links > 1 else { return nil }
    guard let first = linkTargets[status.id] else {
      linkTargets[status.id] = (path, Int(status.links) - 1)
      return nil
    }
    if first.remaining <= 1 {
      linkTargets[status.id] = nil
    } else {
      linkTargets[status.id] = (first.path, first.remaining - 1)
    }
    return first.path
  }

  func classify(_ dir: borrowing FD, _ name: [UInt8], _ path: [UInt8], _ status: FileStatus) throws(OvlError) -> (Kind, [[UInt8]]) {
    if status.isWhiteoutDevice { return (.whiteout, []) }
    let names = try step("listxattr", describe(path)) { () throws(Errno) in try dir.xattrNames(name) }
    switch status.type {
    case .regular:
      if status.size == 0, has(names, .whiteout) != nil { return (.whiteout, names) }
      if has(names, .metacopy) != nil { return (.metacopy, names) }
      return (.other, names)
    case .directory:
      if has(names, .redirect) != nil { return (.redirectedDirectory, names) }
      if let opaque = has(names, .opaque) {
        let value = try step("getxattr", describe(path)) { () throws(Errno) in try dir.xattr(name, opaque) }
        if Opaque(value: value) == .opaque { return (.opaqueDirectory, names) }
      }
      return (.directory, names)
    case .socket: return (.socket, names)
    default: return (.other, names)
    }
  }

  // MARK: - Writing

  private func mtime(_ status: FileStatus) -> Int64 {
    let seconds = status.mtimeSeconds
    if let clamp = options.mtimeClamp, seconds > clamp { return clamp }
    return seconds
  }

  private func xattrs(_ dir: borrowing FD, _ name: [UInt8], _ path: [UInt8], _ names: [[UInt8]]) throws(OvlError) -> [([UInt8], [UInt8])] {
    var result: [([UInt8], [UInt8])] = []
    for raw in names {
      // Escaped names are shown unescaped, as the merged view shows them.
      guard let shown = stack.namespace.viewName(raw), !isLayerPrivate(shown) else { continue }
      guard let value = try step("getxattr", describe(path), { () throws(Errno) in try dir.xattr(name, raw) }) else { continue }
      result.append((shown, value))
    }
    result.sort { Stack.byteOrder($0.0, $1.0) }
    return result
  }

  /// The merged path of a tar path this export wrote (`a/b`: names read from the upper).
  private static func merged(_ tarPath: [UInt8]) -> MergedPath {
    MergedPath(tarPath.split(separator: UInt8(ascii: "/")).map { Array($0) })
  }

  /// The directory at `path` in the layers below, when it has children an opaque upper
  /// directory hides.
  private func hidesSomething(_ path: [UInt8]) throws(OvlError) -> Bool {
    guard let below else { return false }
    let resolved: (parent: MergedDir?, entry: MergedEntry?, root: MergedDir)
    do { resolved = try below.resolve(Self.merged(path)) } catch { return false }
    guard let entry = resolved.entry, entry.isDirectory else { return path.isEmpty }
    return !(try below.list(try below.open(entry))).isEmpty
  }

  /// A name that is not a whiteout but would read as one in a layer.
  private func whiteoutPrefixRefused(_ path: [UInt8]) -> OvlError {
    .refused(path: describe(path), reason: "a name starting with .wh. cannot be represented in an OCI layer", errno: .invalidArgument)
  }

  /// The directory's children, sorted by name: its whiteouts first as `.wh.` markers — or
  /// none (`writeWhiteouts == false`) under an opaque marker, where they hide nothing more.
  private func exportDirectory(_ dir: borrowing FD, _ path: [UInt8], writeWhiteouts: Bool = true) throws(OvlError) {
    let entries = try step("getdents64", describe(path)) { () throws(Errno) in try dir.entries() }
    var whiteouts: [[UInt8]] = []
    var others: [Scanned] = []
    for e in entries {
      let childPath = join(path, e.name)
      let status = try step("fstatat", describe(childPath)) { () throws(Errno) in try dir.stat(e.name) }
      let (kind, names) = try classify(dir, e.name, childPath, status)
      if kind == .whiteout {
        if writeWhiteouts { whiteouts.append(e.name) }
        continue
      }
      if e.name.starts(with: whiteoutPrefix) { throw whiteoutPrefixRefused(childPath) }
      others.append(Scanned(name: e.name, status: status, kind: kind, xattrNames: names))
    }
    whiteouts.sort(by: Stack.byteOrder)
    others.sort { Stack.byteOrder($0.name, $1.name) }
    for name in whiteouts {
      try writer.write(.marker(join(path, whiteoutPrefix + name)))
    }
    for item in others {
      try exportEntry(dir, item, join(path, item.name))
    }
  }

  struct Scanned {
    let name: [UInt8]
    let status: FileStatus
    let kind: Kind
    let xattrNames: [[UInt8]]
  }

  private func exportEntry(_ dir: borrowing FD, _ item: Scanned, _ path: [UInt8]) throws(OvlError) {
    let name = item.name, status = item.status, kind = item.kind
    switch kind {
    case .socket:
      warn("\(describe(path)): socket skipped (OCI layers do not carry sockets)")
      return
    case .redirectedDirectory, .metacopy:
      if !options.resolve {
        unresolved.append(String(decoding: path, as: UTF8.self))
        return
      }
      if kind == .redirectedDirectory {
        try exportMerged(path)
        return
      }
    default: break
    }
    let attributes = try xattrs(dir, name, path, item.xattrNames)
    var entry = TarEntry(path: path, kind: .fifo, permissions: status.permissions, uid: status.uid, gid: status.gid, mtime: mtime(status), xattrs: attributes)
    if status.type == .regular, let recorded = restored(entry, status), !recorded.isRegular {
      // An empty file standing for a device or FIFO (`--rootless-owners`).
      try writer.write(recorded)
      return
    }
    if let recorded = restored(entry, status) { entry = recorded }
    switch status.type {
    case .directory:
      entry.kind = .directory
      entry.path = path + [UInt8(ascii: "/")]
      try writer.write(entry)
      let child = try step("open", describe(path)) { () throws(Errno) in try FD.open(name, in: dir, .directory) }
      if kind == .opaqueDirectory, try hidesSomething(path) {
        try writer.write(.marker(join(path, opaqueMarker)))
        try exportDirectory(child, path, writeWhiteouts: false)
      } else {
        try exportDirectory(child, path)
      }
      return
    case .symlink:
      entry.kind = .symlink(target: try step("readlink", describe(path)) { () throws(Errno) in try dir.readLink(name) })
    case .character: entry.kind = .character(major: status.rdevMajor, minor: status.rdevMinor)
    case .block: entry.kind = .block(major: status.rdevMajor, minor: status.rdevMinor)
    case .fifo: entry.kind = .fifo
    case .regular:
      try writeRegular(entry, status, path) { () throws(OvlError) in
        kind == .metacopy
          ? try mergedData(path)
          : try step("open", describe(path)) { () throws(Errno) in try FD.open(name, in: dir, .readOnly) }
      }
      return
    default:
      return
    }
    if let first = exportedEarlier(status, path) { entry.kind = .hardlink(target: first) }
    try writer.write(entry)
  }

  /// A regular file: a hard link to its first name when that was exported already, else
  /// its `size` bytes from `open`.
  private func writeRegular(_ header: TarEntry, _ status: FileStatus, _ path: [UInt8], open: () throws(OvlError) -> FD) throws(OvlError) {
    var entry = header
    if let first = exportedEarlier(status, path) {
      entry.kind = .hardlink(target: first)
      try writer.write(entry)
      return
    }
    entry.kind = .regular(size: status.size)
    let file = try open()
    try writer.write(entry) { (sink) throws(OvlError) in try stream(file, path, size: status.size, sink) }
  }

  /// The merged directory `mergedData` looked a file up in last, by path: a merged
  /// subtree's files come a directory at a time, and each is looked up there instead of
  /// from the root (a lookup in every layer for every component; the export changes nothing,
  /// so it stays valid).
  private var dataParent: (path: [UInt8], dir: MergedDir)?

  private func mergedData(_ path: [UInt8]) throws(OvlError) -> FD {
    let missing = OvlError.format(path: String(decoding: path, as: UTF8.self), reason: "not in the merged view", errno: .noSuchFileOrDirectory)
    guard let slash = path.lastIndex(of: UInt8(ascii: "/")), slash > 0 else {
      guard let entry = try stack.resolve(Self.merged(path)).entry else { throw missing }
      return try stack.openData(entry)
    }
    let parentPath = Array(path[..<slash])
    let dir: MergedDir
    if let known = dataParent, known.path == parentPath {
      dir = known.dir
    } else {
      guard let parent = try stack.resolve(Self.merged(parentPath)).entry, parent.isDirectory, parent.status.type != .symlink else { throw missing }
      dir = try stack.open(parent)
      dataParent = (parentPath, dir)
    }
    guard let entry = try stack.lookup(Array(path[(slash + 1)...]), in: dir) else { throw missing }
    return try stack.openData(entry)
  }

  /// One read buffer for the whole export (an allocation per file shows in the profile).
  private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
  deinit { buffer.deallocate() }

  /// The file's `size` bytes (its size when looked at: the header already says it), without
  /// the read that would only find the end; a file that shrank meanwhile ends early, and the
  /// writer reports the difference.
  private func stream(_ file: borrowing FD, _ path: [UInt8], size: UInt64, _ sink: (UnsafeRawBufferPointer) throws(OvlError) -> Void) throws(OvlError) {
    var left = size
    while left > 0 {
      let want = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(UInt64(buffer.count), left))])
      let n = try step("read", describe(path)) { () throws(Errno) in try file.read(into: want) }
      if n == 0 { break }
      try sink(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
      left -= UInt64(n)
    }
  }

  /// A redirected directory (--resolve): written as what the merged view shows — a new
  /// directory, opaque over whatever the layers below have at its name, with every entry of
  /// the merged subtree.
  private func exportMerged(_ path: [UInt8]) throws(OvlError) {
    guard let top = try stack.resolve(Self.merged(path)).entry else {
      throw .format(path: String(decoding: path, as: UTF8.self), reason: "not in the merged view", errno: .noSuchFileOrDirectory)
    }
    var failure: OvlError?
    stack.walk(top, dir: nil, hash: false) { result, shownPath in
      guard failure == nil else { return }
      do throws(OvlError) {
        let record = try result.get()
        try writeRecord(record, isTop: record.path == top.path.bytes, path: path)
      } catch {
        failure = error
      }
    }
    if let failure { throw failure }
  }

  private func writeRecord(_ record: ViewRecord, isTop: Bool, path top: [UInt8]) throws(OvlError) {
    let path = Array(record.path.drop(while: { $0 == UInt8(ascii: "/") }))
    let status = record.status
    let xattrs = record.xattrs.filter { !isLayerPrivate($0.0) }
    var entry = TarEntry(path: path, kind: .fifo, permissions: status.permissions, uid: status.uid, gid: status.gid, mtime: mtime(status), xattrs: xattrs)
    if status.type == .regular, let recorded = restored(entry, status), !recorded.isRegular {
      try writer.write(recorded)
      return
    }
    if let recorded = restored(entry, status) { entry = recorded }
    switch status.type {
    case .directory:
      entry.kind = .directory
      entry.path = path + [UInt8(ascii: "/")]
      try writer.write(entry)
      if isTop, try hidesSomething(path) { try writer.write(.marker(join(path, opaqueMarker))) }
      return
    case .symlink: entry.kind = .symlink(target: record.target ?? [])
    case .character: entry.kind = .character(major: status.rdevMajor, minor: status.rdevMinor)
    case .block: entry.kind = .block(major: status.rdevMajor, minor: status.rdevMinor)
    case .fifo: entry.kind = .fifo
    case .socket:
      warn("\(String(decoding: path, as: UTF8.self)): socket skipped (OCI layers do not carry sockets)")
      return
    case .regular:
      try writeRegular(entry, status, path) { () throws(OvlError) in try mergedData(path) }
      return
    }
    try writer.write(entry)
  }
}

extension Exporter {
  /// With `--rootless-owners`, the entry as its `override_stat` records it (a regular file
  /// of the upper is given its size first: only an empty one can stand for a device).
  func restored(_ entry: TarEntry, _ status: FileStatus) -> TarEntry? {
    guard options.rootlessOwners else { return nil }
    var probe = entry
    if status.type == .regular { probe.kind = .regular(size: status.size) }
    guard var shown = RootlessOwners.restore(probe) else { return nil }
    if status.type != .regular { shown.kind = entry.kind }
    return shown
  }
}

extension TarEntry {
  var isRegular: Bool {
    if case .regular = kind { return true }
    return false
  }
}

func join(_ path: [UInt8], _ name: [UInt8]) -> [UInt8] {
  path.isEmpty ? name : path + [UInt8(ascii: "/")] + name
}
