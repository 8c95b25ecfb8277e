import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

/// A merged directory that is in the upper layer, with every name any of its layers has:
/// a name outside that set is free, and the kernel would create it in place.
public final class BatchDirectory {
  let upper: LayerDir
  /// The merged path, `/a/b` (the root: empty).
  let path: [UInt8]
  let isMerge: Bool
  var taken: Set<ByteKey>
  /// Files made here and not yet published, by name: a hard link to one is made after it.
  var pendingFiles: [ByteKey: PendingSource] = [:]
  /// How a file made here starts out.
  let newFiles: NewFileDefaults

  init(upper: LayerDir, path: [UInt8], isMerge: Bool, taken: Set<ByteKey>, newFiles: NewFileDefaults) {
    self.upper = upper
    self.path = path
    self.isMerge = isMerge
    self.taken = taken
    self.newFiles = newFiles
  }

  /// No layer has `name` here: creating it replaces nothing and hides nothing.
  public func isFree(_ name: [UInt8]) -> Bool { !taken.contains(ByteKey(name)) }
}

/// Where a pending name's inode comes from: a file built unnamed, or (a hard link
/// to a file whose first name went out in an earlier chunk) that name.
enum PendingSource {
  case file(TempFile)
  case name(LayerDir, [UInt8])
}

/// An unnamed file (O_TMPFILE in its directory) waiting for its names. Built on the batch's
/// background thread, which sets `opened` or `failure`; read only after the queue's `wait`.
final class TempFile: @unchecked Sendable {
  var opened: OpenFile?
  var failure: FailedCall?
}

/// A descriptor shared by the names of one new file; closed when the last goes.
final class OpenFile {
  let fd: FD
  init(_ fd: consuming FD) { self.fd = fd }
}

/// How a file made in one directory starts out (`inode_init_owner`, `posix_acl_create`):
/// owned by the caller, with the directory's group where it is setgid, its mode cut by the
/// umask — or by the directory's default ACL, which then also gives it an access ACL, as a
/// file the kernel creates there. Handed to the background thread with the directory (its
/// descriptor is only read there).
struct NewFileDefaults: @unchecked Sendable {
  let dir: LayerDir
  let owner: (uid: UInt32, gid: UInt32)
  /// nil: a default ACL decides the mode, and an fchmod always follows.
  let umask: UInt32?
}

/// Many new names made at once (a layer applied to the upper). Each object is what the
/// kernel's `ovl_create_upper` makes on a free name, with the same attributes; only the
/// order of the writes differs. A regular file is built complete as an unnamed file (an
/// O_TMPFILE) in its own directory — so it starts out as the kernel's file made there would:
/// the directory's setgid group, its default ACL — mostly on a background thread while the
/// caller reads the next entries; every `chunkSize` names, one syncfs makes the chunk's
/// files durable and then each is linked to its name. Unnamed until then, a file is
/// invisible: a crash leaves only whole files (the kernel's `ovl_copy_up_tmpfile` builds in
/// the work dir for the same reason; an O_TMPFILE needs no directory entry, so the target
/// directory does as well and costs the kernel ~10% less than a work dir's). Directories, symlinks and special files carry no data and
/// are made in place, as the kernel makes them.
///
/// A batch knows only the names it listed: a change by any other path must come after
/// `settle(affecting:)`, which publishes what the change could see and forgets what it
/// could make wrong.
public final class CreateBatch {
  let session: WriteSession
  private var directories: [ByteKey: BatchDirectory] = [:]
  private struct Pending {
    let source: PendingSource
    let dir: BatchDirectory
    let name: [UInt8]
  }
  /// Names not yet handed to the background thread.
  private var pending: [Pending] = []
  /// Chunks handed over, with what their linking reported, until the next full publish.
  private var inFlight: [ChunkResult] = []
  /// Files made and not yet published (each holds a descriptor, or its directory's).
  private var pendingFileCount = 0
  /// The directories (merged paths) that names not yet published go to.
  private var pendingDirectories: Set<ByteKey> = []
  /// Files waiting for the thread beyond which the caller builds the next one itself (well
  /// above the queue's wake-up batch: the thread must be woken before the caller takes over).
  static let backlogLimit = 64
  /// Names per chunk: one syncfs makes a chunk's files durable before they are linked.
  static let chunkSize = 512
  /// Files pending before a publish, and directories listed before they are forgotten, at
  /// most: each holds a descriptor (a pending file's directory too), and together they
  /// stay within the process's limit.
  let pendingLimit: Int
  let directoryLimit: Int
  private let caller: (uid: UInt32, gid: UInt32)
  /// Builds files whose data is in memory while the caller reads the next entries (nil: no
  /// thread, files are built in line).
  private let queue: BackgroundQueue?
  /// Files at most this big are handed to the queue with their data.
  public static let queuedSizeLimit = 1 << 20

  public init(session: WriteSession) throws(OvlError) {
    self.session = session
    // Pending files hold a descriptor each, until the publish that links them: a quarter of
    // what the process may open, at most 16,384 (fewer publishes: each is a syncfs and a
    // hand-over to the thread; 512 made a 10,000-entry apply 10-20% slower). Directories
    // hold their upper and, through the session, their lowers: an eighth, at most 512 (a
    // batch of thousands of directories — 6,600 at a limit of 20,000 — ran a layer of 2·10^5
    // entries out of descriptors). The rest: the stack's roots, the session's cached, dirty
    // and timed directories (`WriteSession.heldDirectoryLimit` each), the input.
    let limit = raiseOpenFileLimit()
    pendingLimit = max(32, min(16384, (limit - 128) / 4))
    directoryLimit = max(32, min(512, (limit - 128) / 8))
    caller = (session.caller.uid, session.caller.gid)
    queue = BackgroundQueue(limit: 256)
  }

  /// Drops what is not published and stops the background thread.
  public func close() {
    discard()
    queue?.close()
  }

  /// The directory at `path` of the merged view, copied up if it is only in lower layers
  /// (nil when it is missing, not a directory or reached through a symlink: the general
  /// path makes it or refuses the entry).
  public func directory(_ path: MergedPath) throws(OvlError) -> BatchDirectory? {
    let key = path.bytes
    if let known = directories[ByteKey(key)] { return known }
    var merged: MergedDir
    do {
      merged = try session.directory(path)
    } catch .format {
      return nil
    }
    if merged.upper == nil {
      // `ovl_copy_up(parent)`: the kernel copies a directory up before it makes a name in it.
      let session = session
      try session.change { () throws(OvlError) in _ = try session.copyUp(path, metacopy: false) }
      merged = try session.directory(path)
    }
    guard let upper = merged.upper else { return nil }
    // Names are about to be added behind the lookups' back.
    merged.forgetListing()
    let shown = session.describe(key)
    let status = try step("fstat", shown) { () throws(Errno) in try upper.fd.stat() }
    let defaultACL: Bool
    do {
      defaultACL = try upper.fd.xattr([0x2E], Self.defaultACL) != nil
    } catch .notSupported {
      defaultACL = false
    } catch {
      throw .system(call: "getxattr", path: shown, errno: error)
    }
    let newFiles = NewFileDefaults(
      dir: upper, owner: (caller.uid, status.permissions & 0o2000 != 0 ? status.gid : caller.gid), umask: defaultACL ? nil : session.umask)
    let taken = Set(try session.stack.namesInAnyLayer(merged).map(ByteKey.init))
    let dir = BatchDirectory(upper: upper, path: key, isMerge: merged.isMerge, taken: taken, newFiles: newFiles)
    try remember(dir)
    return dir
  }

  static let defaultACL = Array("system.posix_acl_default".utf8)

  /// The directory at `path` if it was listed already (nil otherwise).
  public func knownDirectory(_ path: MergedPath) -> BatchDirectory? {
    directories[ByteKey(path.bytes)]
  }

  private func remember(_ dir: BatchDirectory) throws(OvlError) {
    if directories.count >= directoryLimit { try settle() }
    directories[ByteKey(dir.path)] = dir
  }

  private func shown(_ name: [UInt8], in dir: BatchDirectory) -> String {
    session.describe(dir.path + [UInt8(ascii: "/")] + name)
  }

  /// A new regular file `name` in `dir` holding `data`, built on the background thread.
  public func createFile(_ name: [UInt8], in dir: BatchDirectory, _ attributes: ObjectAttributes, data: [UInt8]) throws(OvlError) {
    try session.prepareForChange()
    let file = TempFile()
    let context = dir.newFiles
    let build: @Sendable () -> Void = {
      do throws(FailedCall) {
        let fd = try Self.open(attributes, context)
        try calling("write") { () throws(Errno) in try fd.write(data) }
        try Self.finish(fd, attributes, context)
        file.opened = OpenFile(fd)
      } catch {
        file.failure = error
      }
    }
    // Built by the thread, or here when the thread is behind (the two share the work).
    if queue?.submit(build, ifBacklogBelow: Self.backlogLimit) != true { build() }
    try add(file, name, in: dir)
  }

  /// A new regular file `name` in `dir`: `contents` writes its data (in line: for data too
  /// big to hold in memory).
  public func createFile(
    _ name: [UInt8], in dir: BatchDirectory, _ attributes: ObjectAttributes,
    contents: (borrowing FD) throws(OvlError) -> Void
  ) throws(OvlError) {
    try session.prepareForChange()
    let file = TempFile()
    let fd = try reported(name, in: dir) { () throws(FailedCall) in try Self.open(attributes, dir.newFiles) }
    try contents(fd)
    try reported(name, in: dir) { () throws(FailedCall) in try Self.finish(fd, attributes, dir.newFiles) }
    file.opened = OpenFile(fd)
    try add(file, name, in: dir)
  }

  private func reported<R: ~Copyable>(_ name: [UInt8], in dir: BatchDirectory, _ body: () throws(FailedCall) -> R) throws(OvlError) -> R {
    do { return try body() } catch { throw .system(call: error.call, path: shown(name, in: dir), errno: error.errno) }
  }

  /// The file is created with its permission bits: where the umask cuts none (and no
  /// setuid, setgid or sticky bit is asked for) no fchmod follows.
  private static func open(_ attributes: ObjectAttributes, _ context: NewFileDefaults) throws(FailedCall) -> FD {
    try calling("open(O_TMPFILE)") { () throws(Errno) in try context.dir.fd.openTemporaryFile(permissions: (attributes.permissions ?? 0) & 0o777) }
  }

  /// The attributes, as `put` sets them; a file created as the caller with its mode (the
  /// umask cut nothing) needs no more than its times.
  private static func finish(_ fd: borrowing FD, _ attributes: ObjectAttributes, _ context: NewFileDefaults) throws(FailedCall) {
    let made = ObjectAttributes.Created(owner: context.owner, permissions: context.umask.map { (attributes.permissions ?? 0) & 0o777 & ~$0 })
    try attributes.apply(to: fd, created: made)
  }

  private func add(_ file: TempFile, _ name: [UInt8], in dir: BatchDirectory) throws(OvlError) {
    pending.append(Pending(source: .file(file), dir: dir, name: name))
    dir.pendingFiles[ByteKey(name)] = .file(file)
    pendingFileCount += 1
    pendingDirectories.insert(ByteKey(dir.path))
    dir.taken.insert(ByteKey(name))
    try submitIfFull()
  }

  /// A hard link `name` in `dir` to the file at merged path `target` when that file is
  /// still pending (a second name it gets when published); false otherwise.
  public func link(to target: [UInt8], as name: [UInt8], in dir: BatchDirectory) throws(OvlError) -> Bool {
    guard let source = pendingFile(target) else { return false }
    try session.prepareForChange()
    pending.append(Pending(source: source, dir: dir, name: name))
    pendingDirectories.insert(ByteKey(dir.path))
    dir.taken.insert(ByteKey(name))
    try submitIfFull()
    return true
  }

  /// The pending file at merged path `path`, if any.
  private func pendingFile(_ path: [UInt8]) -> PendingSource? {
    guard let slash = path.lastIndex(of: UInt8(ascii: "/")) else { return nil }
    return directories[ByteKey(Array(path[..<slash]))]?.pendingFiles[ByteKey(Array(path[(slash + 1)...]))]
  }

  /// A new directory `name` in `dir`, made in place (`ovl_create_upper`: opaque in a merged
  /// parent where the stack records lower identities); returns it, empty.
  public func createDirectory(_ name: [UInt8], in dir: BatchDirectory, _ attributes: ObjectAttributes) throws(OvlError) -> BatchDirectory {
    try session.prepareForChange()
    let path = shown(name, in: dir)
    let parent = dir.upper
    // Made closed (0, or 0700 for a caller who could not open a mode-0 directory) until its
    // owner and mode are set.
    let closed: UInt32 = session.stack.credentials.overridesPermissions ? 0 : 0o700
    try createInPlace(.directory, name, in: dir, permissions: closed, path)
    let fd = try step("open", path) { () throws(Errno) in try FD.open(name, in: parent.fd, .directory) }
    // Its times are the caller's to set, after its entries.
    var settled = attributes
    settled.mtime = nil
    if session.marksNewDirectoryOpaque(inMerged: dir.isMerge) {
      settled.xattrs.insert((session.namespace.name(.opaque), Opaque.opaque.value), at: 0)
    }
    try located(path) { () throws(FailedCall) in try settled.apply(to: fd) }
    let upperPath = parent.path.isEmpty ? name : parent.path + [UInt8(ascii: "/")] + name
    let childDir = LayerDir(layer: 0, fd: fd, path: upperPath)
    // It has the mode and group just set, and the parent's default ACL if there is one.
    let group = attributes.owner?.gid ?? dir.newFiles.owner.gid
    let newFiles = NewFileDefaults(
      dir: childDir, owner: (caller.uid, (attributes.permissions ?? 0) & 0o2000 != 0 ? group : caller.gid), umask: dir.newFiles.umask)
    let child = BatchDirectory(upper: childDir, path: dir.path + [UInt8(ascii: "/")] + name, isMerge: false, taken: [], newFiles: newFiles)
    try remember(child)
    // Its own entries make it dirty; the parent's new name makes the parent dirty.
    session.markDirty(child.upper)
    return child
  }

  /// A new symlink or special file `name` in `dir`, made in place. The directory's times
  /// are the caller's to set (they change with every entry made in it).
  public func createNode(_ name: [UInt8], in dir: BatchDirectory, _ object: NewObject, _ attributes: ObjectAttributes) throws(OvlError) {
    try session.prepareForChange()
    let path = shown(name, in: dir)
    let parent = dir.upper
    try createInPlace(object, name, in: dir, permissions: 0, path)
    try located(path) { () throws(FailedCall) in try attributes.apply(to: name, in: parent.fd, type: object.type) }
  }

  /// Makes `name` as `create` makes an object on a free name.
  private func createInPlace(_ object: NewObject, _ name: [UInt8], in dir: BatchDirectory, permissions: UInt32, _ path: String) throws(OvlError) {
    try session.makeInPlace(object, name, in: dir.upper, permissions: permissions, path: path, shown: path)
    dir.taken.insert(ByteKey(name))
    session.touched(dir.upper)
  }

  /// Hands a full chunk to the background thread; publishes everything when the files
  /// remembered for hard links (each holds a descriptor) reach the limit.
  private func submitIfFull() throws(OvlError) {
    if pendingFileCount >= pendingLimit {
      try publish()
    } else if pending.count >= Self.chunkSize {
      submitChunk()
    }
  }

  /// The names not yet handed over go to the background thread as one chunk: after the
  /// files built before (the jobs run in order), one syncfs, then each name is linked,
  /// each directory locked once for its names (`publishChunk`).
  private func submitChunk() {
    guard !pending.isEmpty else { return }
    let chunk = pending
    pending = []
    let result = ChunkResult()
    inFlight.append(result)
    for item in chunk {
      session.touched(item.dir.upper)
      // A later hard link to this file is made from its first name.
      if case .file = item.source { item.dir.pendingFiles[ByteKey(item.name)] = .name(item.dir.upper, item.name) }
    }
    let job = ChunkJob(tempDir: session.tempDir, upperPath: session.upperPath, links: chunk.map { item in
      switch item.source {
      case .file(let file): ChunkJob.Link(file: file, from: nil, dir: item.dir.upper, name: item.name)
      case .name(let dir, let name): ChunkJob.Link(file: nil, from: (dir, name), dir: item.dir.upper, name: item.name)
      }
    }, result: result)
    if let queue { queue.submit { job.run() } } else { job.run() }
  }

  /// Makes every name made so far durable and visible: hands over the last chunk, waits for
  /// the background thread, and reports the first failure (with the name's path).
  public func publish() throws(OvlError) {
    submitChunk()
    queue?.wait()
    let chunks = inFlight
    inFlight = []
    forgetPending()
    for result in chunks {
      if let failure = result.failure { throw failure }
    }
  }

  /// Whether a name is pending at `path` (merged, `/a/b`) or below it.
  private func hasPending(at path: [UInt8]) -> Bool {
    if pendingFile(path) != nil { return true }
    return pendingDirectories.contains { Self.isAt($0.bytes, orBelow: path) }
  }

  /// Before a change by the general path that acts on the merged paths `affected` (the
  /// entry's own path, a whited-out name, a directory made opaque, a link
  /// target). The names pending at or below them are published (the change may look them
  /// up, list them or remove what holds them), and what the change can make wrong is
  /// forgotten: a change replaces, removes or copies up what is at those paths and below,
  /// and makes or copies up names only along them, so the directories at and below them
  /// are forgotten, and each name on them is taken in the directories above (a name that
  /// may exist is never made in bulk).
  public func settle(affecting affected: [MergedPath]) throws(OvlError) {
    let paths = affected.map(\.bytes)
    if paths.contains(where: { hasPending(at: $0) }) { try publish() }
    for path in paths where directories.keys.contains(where: { Self.isAt($0.bytes, orBelow: path) }) {
      directories = directories.filter { !Self.isAt($0.key.bytes, orBelow: path) }
    }
    for path in affected {
      for (depth, name) in path.components.enumerated() {
        directories[ByteKey(path.prefix(depth).bytes)]?.taken.insert(ByteKey(name))
      }
    }
  }

  /// `path` is `root` or below it (merged paths; the root is empty).
  static func isAt(_ path: [UInt8], orBelow root: [UInt8]) -> Bool {
    path.count >= root.count && path.starts(with: root) && (path.count == root.count || path[root.count] == UInt8(ascii: "/"))
  }

  /// Publishes everything and forgets every directory listed.
  public func settle() throws(OvlError) {
    try publish()
    directories.removeAll()
  }

  /// Drops the files not published (after a failure: unnamed, they vanish when closed).
  public func discard() {
    queue?.wait()
    pending.removeAll()
    inFlight.removeAll()
    forgetPending()
  }

  /// Every name made so far is published or dropped: no file is pending any more.
  private func forgetPending() {
    for key in pendingDirectories { directories[key]?.pendingFiles.removeAll() }
    pendingDirectories.removeAll(keepingCapacity: true)
    pendingFileCount = 0
  }
}

/// What linking a chunk reported: the first failure.
final class ChunkResult: @unchecked Sendable {
  var failure: OvlError?
}

/// Links one chunk of built files on the background thread (the descriptors are only read
/// there; the session is not touched).
private struct ChunkJob: @unchecked Sendable {
  struct Link {
    let file: TempFile?
    let from: (LayerDir, [UInt8])?
    let dir: LayerDir
    let name: [UInt8]
  }
  let tempDir: LayerDir
  /// The upper dir's path, for messages.
  let upperPath: String
  let links: [Link]
  let result: ChunkResult

  private func shown(_ link: Link) -> String {
    upperPath + "/" + String(decoding: link.dir.path.isEmpty ? link.name : link.dir.path + [UInt8(ascii: "/")] + link.name, as: UTF8.self)
  }

  func run() {
    do throws(OvlError) {
      for link in links {
        if let failure = link.file?.failure { throw .system(call: failure.call, path: shown(link), errno: failure.errno) }
      }
      try step("syncfs", upperPath) { () throws(Errno) in try syncFilesystem(tempDir.fd) }
      var start = 0
      while start < links.count {
        let dir = links[start].dir
        var end = start
        while end < links.count && links[end].dir === dir { end += 1 }
        let group = links[start..<end]
        try withLockedParent(dir, child: group[start].name, expected: nil, path: shown(group[start])) { () throws(OvlError) in
          for link in group {
            try step("linkat", shown(link)) { () throws(Errno) in
              if let opened = link.file?.opened {
                try opened.fd.link(as: link.name, in: dir.fd)
              } else if let (fromDir, fromName) = link.from {
                try fromDir.fd.link(fromName, as: link.name, in: dir.fd)
              }
            }
          }
        }
        start = end
      }
    } catch {
      result.failure = error
    }
  }
}
