import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

/// A stack opened for changes: refused if a mounted overlay uses it; its upper and work
/// dirs made what the kernel's first mount with the same options makes them (`work/` and,
/// with index=on, `index/`, both mode 0000; the upper root's `uuid`, `origin`; the index
/// dir's `upper`), and verified where they already are.
public final class WriteSession {
  public let stack: Stack
  let upper: LayerDir
  /// Where temporary objects are built: `work/work`, or `work/index` with index=on (the
  /// kernel then uses the index dir as its work dir).
  private(set) var work: WorkArea
  var tempDir: LayerDir { work.dir }
  private(set) var index: LayerDir?
  /// Whether what a first mount writes is done (`prepareForChange`).
  private var prepared = false
  private let workRoot: LayerDir
  let namespace: XattrNamespace
  /// Directories whose entries changed, fsynced once by `finish()`: a name is durable
  /// when its directory is, and one fsync per directory, not per file, keeps many
  /// copy-ups cheap.
  /// Keyed by the directory's path (the work and index dirs by their own keys: their paths
  /// are empty like the upper root's), not by descriptor: lookups open a directory anew.
  private var dirty: [[UInt8]: LayerDir] = [:]
  /// The first failure of an fsync made before `finish()` (past `heldDirectoryLimit` dirty
  /// directories, each holding a descriptor, they are fsynced at once); `finish()` throws it.
  private var earlySyncFailure: OvlError?
  /// Directories held open by the cache below, the dirty set and the saved parent times, at
  /// most, each: every one holds a descriptor (a merged one, one per layer it is in), and a
  /// session that changes many directories (an apply) must not run out of them. A
  /// sixteenth of the process's limit (the bulk path may take half, a merged directory of
  /// the cache one per layer), 16 to 1,024: scripts that go round many directories (a
  /// copy-up of files spread over 100) keep them all.
  let heldDirectoryLimit = max(16, min(1024, (raiseOpenFileLimit() - 128) / 16))
  /// Merged directories by merged path (`/a/b`; the root is empty) that are in the upper
  /// layer, held open: scripts work in the same directories again and again (the kernel's
  /// dentry cache spares it those lookups too). A change that replaces, moves or copies up
  /// a directory forgets it and everything below it.
  var directories: [MergedPath: MergedDir] = [:]
  /// Upper dirs this session changed, by merged path, with their times before.
  var parentTimes: [[UInt8]: (dir: LayerDir, atime: Int64, mtime: Int64)] = [:]
  /// Whether reflinks from a lower layer to the upper worked (tried once per layer).
  var cloneWorks: [Int: Bool] = [:]
  /// The overlay link count of inodes this session copied up into the index, as the
  /// kernel's in-memory inode keeps it for the rest of its mount: the count its lookup saw
  /// before the copy-up (the lower's). A later session reads it from the layers instead
  /// (`ovl_get_nlink`), which for a lower of one link is the upper's own count.
  var inodeLinks: [FileID: Int] = [:]
  /// Upper dirs (by merged path) known to carry `impure`.
  var knownImpure: Set<[UInt8]> = []
  /// The `origin` value of lower objects (by inode) encoded so far: a lower layer does not
  /// change while it is in use, and a merged directory's origin is checked at every lookup
  /// of it (`fixOrigin`), which would ask for the same handle again each time.
  var origins: [FileID: [UInt8]] = [:]
  /// Who writes (`creator_cred`): the stack's credentials.
  var caller: Credentials { stack.credentials }
  /// The process's umask, applied to modes of new objects as the VFS applies it.
  let umask = processUmask()
  /// Held (shared) for the session: a check waits until it is done.
  private let sessionLock: StackLock?
  var upperPath: String { stack.layerPaths[0] }
  var workPath: String { stack.options.workDir ?? "" }

  /// `onWait` runs once if an `ovltool fsck` of the stack is running (the session waits
  /// for it to end).
  public init(stack: Stack, onWait: () -> Void = {}) throws(OvlError) {
    guard let upper = stack.upperRoot, let workRoot = stack.workRoot else {
      throw .usage("the stack has no upperdir: it is read-only")
    }
    try refuseMountedLayers(stack)
    sessionLock = try stack.lockForChanges(onWait: onWait)
    self.stack = stack
    self.upper = upper
    namespace = stack.namespace
    self.workRoot = workRoot
    // Nothing is written before the first change: a call that fails its lookups or checks
    // leaves a never-mounted stack as it was. Until then the temp dir is a descriptor of
    // /dev/null, on which every *at() call fails (ENOTDIR) — a write that came before
    // `prepareForChange` could never land in the wrong directory. An index dir that
    // exists already is read by the lookups from the start.
    index = stack.options.index ? stack.indexDir : nil
    if let index { stack.adoptIndexDirectory(index) }
    do throws(Errno) {
      work = WorkArea(dir: LayerDir(layer: 0, fd: try FD.openFile(atHostPath: "/dev/null"), path: []), shownPath: "/dev/null")
    } catch {
      work = WorkArea(dir: upper, shownPath: stack.layerPaths[0])
      try prepareForChange()
    }
  }

  /// The apply record to write with the session's first change (`recordApply`).
  private var pendingApplyRecord: String?
  private var applyRecorded = false

  /// Records that a layer is being applied (`ApplyJournal`) right before its first change
  /// (a layer refused before any change leaves nothing, not even the record).
  public func recordApply(_ text: String) throws(OvlError) {
    if prepared { try writeApplyRecord(text) } else { pendingApplyRecord = text }
  }

  /// Written under a temp name, fsynced, renamed into place, the work dir fsynced.
  private func writeApplyRecord(_ text: String) throws(OvlError) {
    applyRecorded = true
    let temp = Array("ovltool-apply.tmp".utf8)
    let path = workPath + "/" + String(decoding: ApplyJournal.name, as: UTF8.self)
    try step("write", path) { () throws(Errno) in
      try? workRoot.fd.remove(temp)
      try workRoot.fd.createFile(temp, contents: Array((text + "\n").utf8), permissions: 0o600)
      let file = try FD.open(temp, in: workRoot.fd, .readOnly)
      try file.sync()
      try workRoot.fd.rename(temp, to: ApplyJournal.name, in: workRoot.fd, flags: [])
      try workRoot.fd.sync()
    }
  }

  /// The layer is complete (and `finish()` made it durable): the record goes.
  public func endApply() throws(OvlError) {
    pendingApplyRecord = nil
    guard applyRecorded else { return }
    let path = workPath + "/" + String(decoding: ApplyJournal.name, as: UTF8.self)
    try step("unlink", path) { () throws(Errno) in
      do throws(Errno) {
        try workRoot.fd.remove(ApplyJournal.name)
      } catch .noSuchFileOrDirectory {
      } catch {
        throw error
      }
      try workRoot.fd.sync()
    }
  }

  /// What a mount does before the first change: `work/` and, with index=on, `index/`
  /// (mode 0000), the upper root's `uuid` and `origin`, the index dir's `upper`, a new
  /// shared whiteout, the index's orphans cleaned up. Called by every change right before
  /// its first write (after its lookups and checks); once per session.
  func prepareForChange() throws(OvlError) {
    guard !prepared else { return }
    let workDir = try WorkArea.open("work", in: workRoot, workPath: workPath, create: true, credentials: caller)
    if stack.options.index {
      let indexArea: WorkArea
      if let existing = stack.indexDir {
        indexArea = WorkArea(dir: existing, shownPath: workPath + "/index")
      } else {
        indexArea = try WorkArea.open("index", in: workRoot, workPath: workPath, create: true, credentials: caller)
      }
      stack.adoptIndexDirectory(indexArea.dir)
      self.index = indexArea.dir
      work = indexArea
    } else {
      index = nil
      work = workDir
    }
    try initializeUpperRoot()
    // A mount starts with a new shared whiteout (it empties the work dir); so does a session.
    work.dropSharedWhiteout()
    // And it cleans up the orphans the index holds.
    try cleanupOrphanIndexEntries()
    if let record = pendingApplyRecord {
      pendingApplyRecord = nil
      try writeApplyRecord(record)
    }
    // Only once it all worked: a step that failed (another process's change in the way) is
    // tried again by the next change instead of leaving the session half set up.
    prepared = true
  }

  /// Forgets the cached directory at `path` and every one below it.
  func forgetDirectories(under path: MergedPath) {
    if directories.count > 4096 { directories.removeAll(); return }
    directories = directories.filter { key, _ in !path.contains(key) }
  }

  func markDirty(_ dir: LayerDir) {
    if dir === tempDir { return work.markChanged() }
    let key: [UInt8] = dir === index ? [0, 2] : [UInt8(ascii: "/")] + dir.path
    dirty[key] = dir
    if dirty.count > heldDirectoryLimit { syncDirty() }
  }

  /// fsyncs the dirty directories now, as `finish()` would (the same calls, earlier: one
  /// made dirty again is fsynced again at the end).
  private func syncDirty() {
    for dir in dirty.values {
      do throws(Errno) {
        try dir.fd.sync()
      } catch {
        if earlySyncFailure == nil { earlySyncFailure = .system(call: "fsync", path: describe(dir.path), errno: error) }
      }
    }
    dirty.removeAll()
  }

  /// Caches the merged directory at `path` (in the upper layer); a full cache is emptied
  /// first (it is refilled along the paths in use).
  func cacheDirectory(_ dir: MergedDir, at path: MergedPath) {
    if directories.count >= heldDirectoryLimit && directories[path] == nil { directories.removeAll(keepingCapacity: true) }
    directories[path] = dir
  }

  /// Restores the times of every parent this session changed, then makes every change
  /// durable: fsync of each changed directory.
  public func finish() throws(OvlError) {
    // Deepest first: restoring a directory's times does not touch its parent's.
    try restoreParentTimes()
    if let failure = earlySyncFailure {
      earlySyncFailure = nil
      throw failure
    }
    for dir in dirty.values {
      try step("fsync", describe(dir.path)) { () throws(Errno) in try dir.fd.sync() }
    }
    dirty.removeAll()
    if prepared && work.changed {
      try step("fsync", work.shownPath) { () throws(Errno) in try tempDir.fd.sync() }
      work.clearChanged()
    }
  }

  /// Puts back the times of the parents that copy-ups changed (deepest first: restoring a
  /// directory's times does not touch its parent's). A directory removed since is skipped.
  func restoreParentTimes() throws(OvlError) {
    for (path, saved) in parentTimes.sorted(by: { $0.key.count > $1.key.count }) {
      do throws(Errno) {
        try saved.dir.fd.setTimes([0x2E], atime: saved.atime, mtime: saved.mtime)
      } catch .noSuchFileOrDirectory {
      } catch {
        throw .system(call: "utimensat", path: describe(path), errno: error)
      }
      markDirty(saved.dir)
    }
    parentTimes.removeAll()
  }

  /// What a first mount writes on the upper root and the index dir.
  func initializeUpperRoot() throws(OvlError) {
    let root: [UInt8] = [0x2E]
    if let index, let top = stack.lowerRootDir(1) {
      try setIfMissing(upper, root, .origin, upperPath) { () throws(Errno) in
        try stack.encodeHandle(top, root, upper: false).bytes
      }
      try setIfMissing(index, root, .upper, workPath + "/index") { () throws(Errno) in
        try stack.encodeHandle(upper, root, upper: true).bytes
      }
    }
    let uuidName = namespace.name(.uuid)
    let hasUUID = try step("getxattr", upperPath) { () throws(Errno) in try upper.fd.xattr(root, uuidName) } != nil
    let impure = try step("getxattr", upperPath) { () throws(Errno) in try upper.fd.xattr(root, namespace.name(.impure)) } != nil
    if !hasUUID && (stack.options.uuid == .on || (stack.options.uuid == .auto && !impure)) {
      var uuid: [UInt8] = []
      for _ in 0..<2 { withUnsafeBytes(of: randomBits()) { uuid += $0 } }
      uuid[6] = uuid[6] & 0x0F | 0x40  // version 4
      uuid[8] = uuid[8] & 0x3F | 0x80  // RFC 4122 variant
      try step("setxattr", upperPath) { () throws(Errno) in try upper.fd.setXattr(root, uuidName, uuid) }
    }
  }

  private func setIfMissing(
    _ dir: LayerDir, _ name: [UInt8], _ key: OverlayXattr, _ path: String, _ value: () throws(Errno) -> [UInt8]
  ) throws(OvlError) {
    let attribute = namespace.name(key)
    if try step("getxattr", path, { () throws(Errno) in try dir.fd.xattr(name, attribute) }) != nil { return }
    let bytes = try step("name_to_handle_at", path) { () throws(Errno) in try value() }
    try step("setxattr", path) { () throws(Errno) in try dir.fd.setXattr(name, attribute, bytes) }
  }
}
