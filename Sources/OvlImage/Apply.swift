import OvlFormat
import OvlOperations
import OvlStack
import OvlSystem

/// How `apply` treats what a layer may carry.
public struct ApplyOptions: Sendable {
  /// The DiffID the layer must have (`sha256:…`); checked over the uncompressed stream.
  public var diffID: String?
  /// Device nodes in the layer: made (default, as root) or refused.
  public var allowDevices = true
  /// Whiteouts as xattr whiteouts (a zero-size file with `overlay.whiteout` in a directory
  /// marked `overlay.opaque=x`) instead of char 0:0 devices.
  public var xattrWhiteouts = false
  /// Owners, modes and types the user cannot set kept in `user.containers.override_stat`
  /// (`--rootless-owners`).
  public var rootlessOwners: RootlessOwners?
  public init() {}
}

/// A layer entry refused as hostile or invalid; names the entry.
public func refused(_ path: [UInt8], _ reason: String, _ errno: Errno = .invalidArgument) -> OvlError {
  .refused(path: "layer entry '\(String(decoding: path, as: UTF8.self))'", reason: reason, errno: errno)
}

/// Applies an OCI layer to the stack's upper through the namespace operations, so every
/// whiteout, opaque directory and copy-up is exactly what the kernel would write for the
/// same changes made through a mount (§6.2 of the layer study). Every path is resolved
/// in the merged view without following symlinks; nothing is written outside the upper
/// and work directories.
public final class Applier {
  let session: WriteSession
  /// New names on free names, made in bulk (most of a layer); everything else goes through
  /// the namespace operations one entry at a time, after the batch settled.
  let batch: CreateBatch
  let options: ApplyOptions
  let warn: (String) -> Void
  /// Paths (merged, `/a/b`) made or replaced by this layer: a whiteout or opaque marker of
  /// the same layer does not remove them (whiteouts act on the layers below only).
  private var created: Set<ByteKey> = []
  /// Directories' mtimes, set after the whole stream (entries below change them).
  private var directoryTimes: [(MergedPath, Int64)] = []
  private var warnedPrivate = false
  /// Regular files up to this size are applied from memory.
  static let inMemoryLimit: Int64 = 8 << 20

  public init(session: WriteSession, options: ApplyOptions, warn: @escaping (String) -> Void) throws(OvlError) {
    self.session = session
    batch = try CreateBatch(session: session)
    self.options = options
    self.warn = warn
  }

  var stack: Stack { session.stack }

  /// The first pass (`LayerCheck`): the layer read whole and checked, nothing changed;
  /// returns its DiffID where it is known without hashing twice (a plain file, or a
  /// compressed layer when `ApplyOptions.diffID` asks for it). A layer that passes is
  /// refused by `run` only for what the layers hold at the time (a lookup that fails, a name
  /// that another process took).
  public func check(_ input: LayerInput) throws(OvlError) -> String? {
    let hashing = options.diffID != nil
    let reader = try input.reader(hashing: hashing)
    try LayerCheck(stack: stack, options: options).run(reader)
    let diffID = input.plain ? try input.fileDiffID() : hashing ? try reader.finishDiffID() : nil
    if !hashing && !input.plain { try reader.finish() }
    try input.verifyUnchanged("between its check and its first change; nothing was changed")
    return diffID
  }

  /// The second pass: applies every entry; returns the layer's DiffID.
  /// `journal` (the layer's name) is recorded in the work dir right before the layer's first
  /// change and removed once the layer is complete and durable (`ApplyJournal`).
  public func run(_ input: LayerInput, journal: String? = nil) throws(OvlError) -> String {
    // After a failure the files not yet published are dropped, not left half-made.
    defer { batch.close() }
    let reader = try input.reader(hashing: true)
    if let journal { try session.recordApply(journal) }
    while let entry = try reader.next() {
      try apply(entry, reader)
    }
    let diffID: String
    if let known = try input.fileDiffID() {
      try reader.finish()
      try input.verifyUnchanged("the upper holds what was read")
      diffID = known
    } else {
      diffID = try reader.finishDiffID()
    }
    try batch.settle()
    for (path, mtime) in directoryTimes.sorted(by: { $0.0.bytes.count > $1.0.bytes.count }) {
      try session.setAttribute(path, .times(mtime))
    }
    try session.finish()
    if journal != nil { try session.endApply() }
    if let expected = options.diffID, expected != diffID {
      throw .format(path: "layer", reason: "DiffID mismatch: expected \(expected), got \(diffID) (the upper has been changed)", errno: .badMessage)
    }
    return diffID
  }

  /// A layer entry's path (`a/./b/`) as a merged path; refuses absolute paths, `..`, NUL
  /// and over-long names.
  static func mergedPath(_ raw: [UInt8]) throws(OvlError) -> MergedPath {
    do {
      return try MergedPath(parsing: raw, .layerEntry)
    } catch .absolute {
      throw refused(raw, "absolute path", .notPermitted)
    } catch .dotDot {
      throw refused(raw, "'..' in the path", .notPermitted)
    } catch .nameTooLong {
      throw refused(raw, "a name is longer than 255 bytes", .fileNameTooLong)
    } catch {
      throw refused(raw, "NUL in the name")
    }
  }

  /// The merged entry at `path`, nil when it (or a parent) does not exist.
  private func lookup(_ path: MergedPath) throws(OvlError) -> MergedEntry? {
    do {
      return try stack.resolve(path).entry
    } catch .format(_, _, .noSuchFileOrDirectory) {
      return nil
    }
  }

  private func apply(_ layerEntry: LayerEntry, _ reader: LayerReader) throws(OvlError) {
    let entry = options.rootlessOwners.map { $0.transform(layerEntry) } ?? layerEntry
    let path = try Self.mergedPath(entry.path)
    guard let name = path.name, let parent = path.parent else {
      // The root entry (`.`/`./`): the upper root's attributes are the stack's, not a layer's.
      return
    }
    if try applyNew(entry, parent: parent, name: name, reader) { return }
    try batch.settle(affecting: try affected(entry, parent: parent, name: name))
    if name.starts(with: whiteoutPrefix) && entry.kind != .directory {
      try applyMarker(entry, parent: parent, name: name)
      return
    }
    if name.starts(with: whiteoutPrefix) {
      throw refused(entry.path, "a directory named .wh.*", .invalidArgument)
    }
    if created.contains(ByteKey(path.bytes)) && entry.kind != .directory {
      throw refused(entry.path, "duplicate entry", .fileExists)
    }
    if entry.kind == .character && entry.rdevMajor == 0 && entry.rdevMinor == 0 {
      // A raw upper tarred as is (GNU tar): its 0:0 devices are whiteouts.
      warn("layer entry '\(String(decoding: entry.path, as: UTF8.self))': char 0:0 device taken as a whiteout")
      try whiteout(parent: parent, victim: name)
      return
    }
    try makeParents(parent, entry.path)
    let existing = try lookup(path)
    switch entry.kind {
    case .directory:
      if let existing, existing.isDirectory {
        // Dir over dir merges the contents but replaces the attributes: xattrs the entry
        // does not carry go (the layer's directory is what the view must show). Only what
        // differs is changed, as `tar -x` through a mount would leave it: a directory a
        // layer lists unchanged (most parents) is not copied up for its attributes.
        let current = try stack.record(existing, hash: false)
        for (name, _) in current.xattrs where !isLayerPrivate(name) && !entry.xattrs.contains(where: { $0.0 == name }) {
          try session.setAttribute(path, .removeXattr(name: name))
        }
        if current.status.uid != entry.uid || current.status.gid != entry.gid {
          try session.setAttribute(path, .owner(uid: entry.uid, gid: entry.gid))
        }
        // After a chown (which may clear the setgid bit), or where the mode differs.
        if current.status.uid != entry.uid || current.status.gid != entry.gid || current.status.permissions != entry.permissions {
          try session.setAttribute(path, .mode(entry.permissions))
        }
        for (name, value) in publicXattrs(entry) where !current.xattrs.contains(where: { $0.0 == name && $0.1 == value }) {
          try session.setAttribute(path, .setXattr(name: name, value: value))
        }
        created.insert(ByteKey(path.bytes))
        directoryTimes.append((path, entry.mtime))
        return
      }
      if existing != nil { try session.remove(path, mode: .recursive, force: true) }
      // Its times come after its entries.
      try session.create(path, .directory, permissions: entry.permissions, attributes: attributes(entry, times: false))
      created.insert(ByteKey(path.bytes))
      directoryTimes.append((path, entry.mtime))
      return
    case .hardlink:
      let target = try Self.mergedPath(entry.linkTarget ?? [])
      guard let source = try lookup(target) else {
        throw refused(entry.path, "hardlink target '\(String(decoding: entry.linkTarget ?? [], as: UTF8.self))' is neither in the layer nor in the stack", .noSuchFileOrDirectory)
      }
      if source.isDirectory { throw refused(entry.path, "hardlink to a directory", .notPermitted) }
      if target == path { return }
      if existing != nil { try session.remove(path, mode: .recursive, force: true) }
      try session.link(target, to: path)
      created.insert(ByteKey(path.bytes))
      return
    case .socket:
      warn("layer entry '\(String(decoding: entry.path, as: UTF8.self))': socket skipped")
      return
    case .unknown:
      throw refused(entry.path, "unsupported entry type")
    case .character, .block:
      if !options.allowDevices { throw refused(entry.path, "device nodes are not permitted (--no-devices)", .notPermitted) }
    default: break
    }
    if existing != nil { try session.remove(path, mode: .recursive, force: true) }
    switch entry.kind {
    case .regular:
      guard entry.size >= 0 else { throw refused(entry.path, "negative size") }
      let attributes = attributes(entry, permissions: true)
      if entry.size <= Self.inMemoryLimit {
        var data: [UInt8] = []
        data.reserveCapacity(Int(entry.size))
        try reader.readData { (chunk) throws(OvlError) in data.append(contentsOf: chunk) }
        try session.put(path, contents: .bytes(data), attributes: attributes)
      } else {
        // Big files are staged in the work dir (same filesystem: put clones or copies them
        // with copy_file_range) so memory stays bounded.
        let staging = (stack.options.workDir ?? ".") + "/ovltool-apply-data"
        let file = try step("open", staging) { () throws(Errno) in try FD.createFile(atHostPath: staging, permissions: 0o600) }
        defer { removeHostFile(staging) }
        try reader.readData { (chunk) throws(OvlError) in
          try step("write", staging) { () throws(Errno) in try file.write(chunk) }
        }
        try session.put(path, contents: .hostFile(staging), attributes: attributes)
      }
      created.insert(ByteKey(path.bytes))
    case .symlink:
      try session.create(path, .symlink(target: entry.linkTarget ?? []), attributes: attributes(entry))
      created.insert(ByteKey(path.bytes))
    case .character, .block, .fifo:
      let type: FileType = entry.kind == .character ? .character : entry.kind == .block ? .block : .fifo
      try session.create(path, .node(type, major: entry.rdevMajor, minor: entry.rdevMinor), permissions: entry.permissions, attributes: attributes(entry))
      created.insert(ByteKey(path.bytes))
    default: break
    }
  }

  /// The common case in bulk: an entry that makes a new name in an upper directory whose
  /// layers do not have it (or a whiteout of such a name, which removes nothing). False:
  /// the entry needs the general path (a lookup, a replacement, a copy-up, a refusal).
  private func applyNew(_ entry: LayerEntry, parent: MergedPath, name: [UInt8], _ reader: LayerReader) throws(OvlError) -> Bool {
    if name.starts(with: whiteoutPrefix) {
      guard entry.kind != .directory, name != opaqueMarker else { return false }
      let victim = Array(name.dropFirst(whiteoutPrefix.count))
      if victim.isEmpty || victim == [0x2E] || victim == [0x2E, 0x2E] || victim.starts(with: whiteoutPrefix) { return false }
      // Made by this layer: a directory must still hide what is below it (the general path).
      if created.contains(ByteKey(parent.appending(victim).bytes)) { return false }
      // Only a directory listed already: listing one for a whiteout alone costs more than the lookups.
      guard let dir = batch.knownDirectory(parent) else { return false }
      return dir.isFree(victim)
    }
    let path = parent.appending(name)
    if created.contains(ByteKey(path.bytes)) { return false }
    switch entry.kind {
    case .directory, .regular, .symlink, .fifo, .hardlink: break
    case .character, .block:
      if !options.allowDevices || (entry.kind == .character && entry.rdevMajor == 0 && entry.rdevMinor == 0) { return false }
    default: return false
    }
    guard let dir = try batch.directory(parent), dir.isFree(name) else { return false }
    let attributes = attributes(entry, permissions: true)
    switch entry.kind {
    case .directory:
      _ = try batch.createDirectory(name, in: dir, attributes)
      directoryTimes.append((path, entry.mtime))
    case .regular:
      guard entry.size >= 0 else { return false }
      if entry.size <= CreateBatch.queuedSizeLimit {
        let data = try reader.readAll(size: Int(entry.size))
        try batch.createFile(name, in: dir, attributes, data: data)
      } else {
        try batch.createFile(name, in: dir, attributes) { (file) throws(OvlError) in
          try reader.readData { (chunk) throws(OvlError) in
            try step("write", "layer entry '\(entry.path.string)'") { () throws(Errno) in try file.write(chunk) }
          }
        }
      }
    case .hardlink:
      let target = try Self.mergedPath(entry.linkTarget ?? [])
      guard try batch.link(to: target.slashed, as: name, in: dir) else { return false }
    case .symlink:
      try batch.createNode(name, in: dir, .symlink(target: entry.linkTarget ?? []), attributes)
    default:
      let type: FileType = entry.kind == .character ? .character : entry.kind == .block ? .block : .fifo
      try batch.createNode(name, in: dir, .node(type, major: entry.rdevMajor, minor: entry.rdevMinor), attributes)
    }
    created.insert(ByteKey(path.bytes))
    return true
  }

  /// The merged paths whose pending names a general change for this entry may see: the
  /// entry's own, a whited-out name, a directory made opaque, a link target.
  private func affected(_ entry: LayerEntry, parent: MergedPath, name: [UInt8]) throws(OvlError) -> [MergedPath] {
    if name == opaqueMarker { return [parent] }
    if name.starts(with: whiteoutPrefix) && entry.kind != .directory {
      return [parent.appending(Array(name.dropFirst(whiteoutPrefix.count)))]
    }
    if entry.kind == .hardlink { return [parent.appending(name), try Self.mergedPath(entry.linkTarget ?? [])] }
    return [parent.appending(name)]
  }

  /// The owner, xattrs and times of an entry, which the object it makes is built with;
  /// `create` takes the mode apart.
  private func attributes(_ entry: LayerEntry, permissions: Bool = false, times: Bool = true) -> ObjectAttributes {
    ObjectAttributes(
      permissions: permissions ? entry.permissions : nil, owner: (entry.uid, entry.gid), mtime: times ? entry.mtime : nil, xattrs: publicXattrs(entry))
  }

  /// The entry's xattrs less the overlay-private ones: a layer cannot make a directory
  /// opaque or redirect it by an xattr (warned once per layer).
  private func publicXattrs(_ entry: LayerEntry) -> [([UInt8], [UInt8])] {
    if entry.xattrs.isEmpty { return [] }
    return entry.xattrs.filter { (name, _) in
      guard isLayerPrivate(name) else { return true }
      if !warnedPrivate {
        warn("layer entry '\(entry.path.string)': overlay-private xattr \(name.string) ignored")
        warnedPrivate = true
      }
      return false
    }
  }

  /// Missing parent directories of an entry (a layer need not list them): 0755, 0:0, as
  /// containerd and c/storage make them. A parent that is not a directory — a symlink in
  /// the layer or in the stack included — is refused: paths never go through symlinks.
  private func makeParents(_ parent: MergedPath, _ raw: [UInt8]) throws(OvlError) {
    for depth in 0..<parent.depth {
      let path = parent.prefix(depth + 1)
      if let existing = try lookup(path) {
        if existing.status.type == .symlink {
          throw refused(raw, "the path goes through the symlink '\(path.shown)'", .tooManySymbolicLinkLevels)
        }
        if !existing.isDirectory { throw refused(raw, "'\(path.shown)' is not a directory", .notDirectory) }
        continue
      }
      if let rootless = options.rootlessOwners {
        try session.create(path, .directory, permissions: rootless.mask)
        try session.setAttribute(path, .mode(rootless.mask))
        try session.setAttribute(path, .setXattr(name: OverrideStat.name, value: RootlessOwners.parentRecord.xattrValue))
      } else {
        try session.create(path, .directory, permissions: 0o755)
        try session.setAttribute(path, .owner(uid: 0, gid: 0))
        try session.setAttribute(path, .mode(0o755))
      }
      created.insert(ByteKey(path.bytes))
    }
  }

  private func applyMarker(_ entry: LayerEntry, parent: MergedPath, name: [UInt8]) throws(OvlError) {
    if name == opaqueMarker {
      try makeParents(parent, entry.path)
      try makeOpaque(parent, entry.path)
      return
    }
    let victim = Array(name.dropFirst(whiteoutPrefix.count))
    if victim.starts(with: whiteoutPrefix) {
      warn("layer entry '\(String(decoding: entry.path, as: UTF8.self))': AUFS metadata skipped")
      return
    }
    if victim.isEmpty || victim == [0x2E] || victim == [0x2E, 0x2E] {
      throw refused(entry.path, "invalid whiteout (it would remove '\(String(decoding: victim, as: UTF8.self))')")
    }
    try whiteout(parent: parent, victim: victim)
  }

  /// `.wh.NAME`: removes NAME as unlink/rmdir -r through a mount would (a whiteout where a
  /// lower layer has it). A whiteout acts on the layers below only: when this layer made
  /// NAME itself (an entry before the whiteout), NAME stays, and if it is a directory it
  /// hides what the layers below have in it, as if the whiteout had come first.
  private func whiteout(parent: MergedPath, victim: [UInt8]) throws(OvlError) {
    let path = parent.appending(victim)
    if created.contains(ByteKey(path.bytes)) {
      if let made = try lookup(path), made.isDirectory { try makeOpaque(path, path.bytes) }
      return
    }
    // A whited-out or missing parent, or one that is not a directory: nothing below it is
    // visible anyway.
    do {
      guard try stack.resolve(path).entry != nil else { return }
    } catch .format(_, _, .noSuchFileOrDirectory), .format(_, _, .notDirectory) {
      return
    }
    try session.remove(path, mode: .recursive, force: true)
    if options.xattrWhiteouts { try convertToXattrWhiteout(parent: parent, victim: victim) }
  }

  /// `.wh..wh..opq` in D: D hides everything below. When the layer made nothing in D yet,
  /// D is removed and made again, which the kernel marks opaque (a directory created over a
  /// whiteout); otherwise each child not made by this layer is removed (explicit whiteouts,
  /// the same merged view).
  ///
  /// At the layer's root (`.wh..wh..opq` or `./.wh..wh..opq` first, as some image builders
  /// write for a layer that replaces everything): the kernel ignores an opaque mark on the
  /// upper root, so every name below that the layer did not make is removed — a whiteout
  /// for each lower name — and the view shows only the layer's own entries.
  private func makeOpaque(_ path: MergedPath, _ raw: [UInt8]) throws(OvlError) {
    let prefix = path.bytes + [UInt8(ascii: "/")]
    guard !path.isRoot else {
      let root = try stack.root()
      let hidden = try stack.list(root).filter { !created.contains(ByteKey(prefix + $0)) }
      root.forgetListing()
      try batch.settle(affecting: hidden.map { MergedPath.root.appending($0) })
      for child in hidden { try whiteout(parent: .root, victim: child) }
      return
    }
    guard let entry = try lookup(path), entry.isDirectory else {
      throw refused(raw, "opaque marker in something that is not a directory", .notDirectory)
    }
    let children = try stack.list(try stack.open(entry))
    // The upper's own children count too: to this layer the upper is a layer below.
    let hidden = children.filter { !created.contains(ByteKey(prefix + $0)) }
    if hidden.isEmpty { return }
    let madeHere = created.contains { $0.bytes.starts(with: prefix) }
    if !madeHere {
      let record = try stack.record(entry, hash: false)
      try session.remove(path, mode: .recursive, force: true)
      try session.create(path, .directory, permissions: record.status.permissions)
      try session.setAttribute(path, .owner(uid: record.status.uid, gid: record.status.gid))
      try session.setAttribute(path, .mode(record.status.permissions))
      for (name, value) in record.xattrs { try session.setAttribute(path, .setXattr(name: name, value: value)) }
      created.insert(ByteKey(path.bytes))
      return
    }
    for child in hidden {
      try session.remove(path.appending(child), mode: .recursive, force: true)
    }
  }

  /// Replaces the char 0:0 whiteout just written at `victim` by an xattr whiteout (for
  /// layers stored on an overlay, kernel ≥ 6.7), and marks its directory `opaque=x` unless
  /// it is opaque already.
  private func convertToXattrWhiteout(parent: MergedPath, victim: [UInt8]) throws(OvlError) {
    let upperDir: LayerDir
    if parent.isRoot {
      guard let root = stack.upperRoot else { return }
      upperDir = root
    } else {
      guard let entry = try lookup(parent), let upper = entry.upper else { return }
      upperDir = try LayerDir(layer: 0, fd: step("open", parent.shown) { () throws(Errno) in try upper.open(.directory) }, path: parent.bytes)
    }
    try session.convertToXattrWhiteout(victim, in: upperDir, dirShown: stack.layerPaths[0] + parent.shown)
  }
}

extension Array where Element == UInt8 {
  var string: String { String(decoding: self, as: UTF8.self) }
}
