import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

/// An entry of a layer directory with what the checks need: its status and the overlay
/// xattrs of the stack's namespace (`trusted.overlay.*`, or `user.overlay.*` with userxattr).
struct Entry {
  let name: [UInt8]
  let status: FileStatus
  var xattrs: [OverlayXattr: [UInt8]]

  var isDirectory: Bool { status.type == .directory }
  var isWhiteout: Bool { status.isWhiteoutDevice }
  var opaque: Opaque? { Opaque(value: xattrs[.opaque]) }
  /// Opaque for lookup: only `y` stops it (`x` marks xattr whiteouts).
  var isOpaque: Bool { isDirectory && opaque == .opaque }
  /// A zero-size regular file with `overlay.whiteout`: lookup treats it as a whiteout.
  var isXattrWhiteout: Bool {
    Whiteout.isXattrWhiteout(isRegular: status.type == .regular, size: status.size, hasWhiteoutXattr: xattrs[.whiteout] != nil)
  }
}

/// What reading a layer dir's entries needs, apart from the walk's state: values only.
struct EntryReader: Sendable {
  let layerPaths: [String]
  let ns: XattrNamespace
  /// `ns.prefix`, made once: every entry's xattr names are matched against it.
  let privatePrefix: [UInt8]

  /// Status and overlay xattrs of `name` in the dir `fd` (`path` in `layer`): one statx,
  /// one listxattr, and a getxattr per overlay name only (per name of `keys`, when given).
  /// The path text is made only for an error.
  func entry(
    _ name: [UInt8], in fd: borrowing FD, layer: Int, path dirPath: [UInt8], keys: [OverlayXattr]? = nil
  ) throws(OvlError) -> Entry? {
    func path() -> String { layerPaths[layer] + Checker.text(Checker.join(dirPath, name)) }
    guard let status = try step("statx", path(), { () throws(Errno) in try fd.statIfPresent(name) }) else { return nil }
    var xattrs: [OverlayXattr: [UInt8]] = [:]
    let names: [[UInt8]]
    do {
      names = try fd.xattrNames(name, prefix: privatePrefix)
    } catch .notSupported {
      names = []
    } catch .noSuchFileOrDirectory {
      return nil
    } catch {
      throw .system(call: "listxattr", path: path(), errno: error)
    }
    for attribute in names where ns.isPrivate(attribute) {
      let suffix = String(decoding: attribute[privatePrefix.count...], as: UTF8.self)
      guard let key = OverlayXattr(rawValue: suffix) else { continue }  // not the kernel's
      if let keys, !keys.contains(key) { continue }
      if let value = try step("getxattr", path(), { () throws(Errno) in try fd.xattr(name, attribute) }) {
        xattrs[key] = value
      }
    }
    return Entry(name: name, status: status, xattrs: xattrs)
  }

  /// The entries of the dir `fd` (`path` in `layer`) that are present; with `dirsOnly`,
  /// only those getdents64 does not name as something other than a dir. A layer root is
  /// listed once per pass, so its descriptor is rewound; others are opened for the listing.
  func entries(of fd: borrowing FD, layer: Int, path: [UInt8], dirsOnly: Bool) throws(OvlError) -> [Entry] {
    let raw = try step("getdents64", layerPaths[layer] + Checker.text(path)) { () throws(Errno) in
      try fd.entries(rewinding: path.isEmpty)
    }
    var result: [Entry] = []
    result.reserveCapacity(raw.count)
    for item in raw {
      // The redirect pass looks at dirs only; getdents64's type says which are not.
      if dirsOnly && !item.mayBeDirectory { continue }
      if let e = try entry(item.name, in: fd, layer: layer, path: path) { result.append(e) }
    }
    return result
  }
}

/// A dir read ahead: its descriptor (the walk's, once taken) and its entries.
struct ReadDir: Sendable {
  let fd: SharedFD
  let entries: [Entry]
}

/// A walk's dir handed to the read-ahead thread. Its layer, descriptor and path never
/// change, and the thread uses the descriptor for `*at` calls only (no file position).
struct SharedDir: @unchecked Sendable {
  let dir: LayerDir
}

/// How a name is looked up in the lower layers: the kernel's `ovl_lookup_data.name`.
enum LookupName: Equatable {
  case relative([UInt8])
  case absolute([[UInt8]])

  init(_ redirect: Redirect) {
    switch redirect {
    case .relative(let name): self = .relative(name)
    case .absolute(let components): self = .absolute(components)
    }
  }

  /// A redirect met on an intermediate or final component rewrites the rest of the lookup
  /// (`ovl_check_redirect`): an absolute redirect replaces everything up to and including
  /// that component, a relative one only that component. `post` is what follows the
  /// component; the kernel counts it from the end because the prefix may already have been
  /// rewritten by an earlier component.
  func rewritten(by redirect: Redirect, post: [[UInt8]]) -> LookupName {
    switch (self, redirect) {
    case (_, .absolute(let components)):
      return .absolute(components + post)
    case (.relative, .relative(let name)):
      return .relative(name)
    case (.absolute(let mine), .relative(let name)):
      return .absolute(Array(mine.dropLast(post.count + 1)) + [name] + post)
    }
  }
}

/// What the lower layers below a layer hold for one name: the kernel's lower stack of a
/// dentry.
struct Below {
  enum Kind: Equatable { case absent, whiteout, directory, other(FileType) }
  /// The first object found (a whiteout hides everything under it).
  var kind: Kind = .absent
  /// The directories that merge, top-most first.
  var dirs: [LayerDir] = []
  /// The first object found: its layer and path (for duplicate-redirect detection).
  var firstLayer: Int?
  var firstPath: [UInt8] = []
}

/// The offline checker: walks every layer as the kernel would see it and reports each
/// problem to the `Report`, repairing where the mode allows.
public final class Checker {
  let stack: Stack
  let options: StackOptions
  let report: Report
  let ns: XattrNamespace
  let reader: EntryReader
  /// Reads the dirs the walk enters next on a second thread, in check-only runs (with
  /// repairs, an entry read ahead could be one a repair changed since).
  var readAhead: ReadAhead<ReadDir?>?
  /// The device of the layer being scanned, when its filesystem's dir link counts say
  /// which dirs have no subdirectory.
  var leafDevice: UInt64?
  /// Where repairs build objects before publishing them (the kernel's work dir: `index/`
  /// with index=on, else `work/work`), which it empties at every mount, so a crash
  /// mid-repair leaves only what it cleans.
  var work: WorkArea?
  /// Redirect targets seen so far (layer, path) and the redirect dir that claimed them.
  var claimedTargets: [RedirectTarget: String] = [:]
  /// Handles in upper `origin` xattrs seen so far, by a 128-bit digest of the handle bytes:
  /// the inode of the first object holding it (hard links of one inode share an origin
  /// legitimately). 32 bytes an object with an origin, no path: the first holder's path is
  /// looked for only when a second one is found (`pathOfUpperInode`).
  var origins: [OriginKey: FileID] = [:]
  /// Paths found by `pathOfUpperInode`, by inode.
  var upperInodePaths: [FileID: String] = [:]

  /// An origin handle as a fixed-width key: two keyed hashes of its bytes (the process's
  /// random seed: no layer can be made to collide on purpose).
  struct OriginKey: Hashable {
    let a: UInt64
    let b: UInt64
    init(_ bytes: [UInt8]) {
      var first = Hasher()
      var second = Hasher()
      first.combine(0x6F as UInt8)
      second.combine(0x76 as UInt8)
      bytes.withUnsafeBytes { raw in
        first.combine(bytes: raw)
        second.combine(bytes: raw)
      }
      a = UInt64(bitPattern: Int64(first.finalize()))
      b = UInt64(bitPattern: Int64(second.finalize()))
    }
  }

  /// Whiteout entries of the index dir (nfs_export), by name.
  var indexWhiteouts: Set<[UInt8]> = []
  /// Lower filesystems (uuid, a layer on it) for decoding origins, found once.
  var lowerFilesystems: [(uuid: [UInt8], layer: Int)]?
  /// Lower layers that are overlay mounts themselves: their xattrs are not checked.
  var nestedOverlays: Set<Int> = []

  struct RedirectTarget: Hashable { let layer: Int; let path: [UInt8] }

  public init(stack: Stack, options: StackOptions, report: Report) {
    self.stack = stack
    self.options = options
    self.report = report
    ns = options.xattrNamespace
    reader = EntryReader(layerPaths: stack.layerPaths, ns: ns, privatePrefix: ns.prefix)
  }

  /// Runs every check in fsck.overlay's order (redirects first, then whiteouts and impure),
  /// bottom lower layer first, so that a repair in a lower layer is seen by the layers above.
  public func run() {
    guard guardLayers() else { return }
    if report.mode == .check && onlineProcessorCount() > 1 { readAhead = ReadAhead() }
    defer {
      readAhead?.close()
      readAhead = nil
    }
    checkWorkDir()
    checkLayerIdentity()
    checkIndex()
    let layers = Array((stack.upperRoot == nil ? [] : [0]) + Array(1...stack.lowerCount)).reversed()
    for layer in layers { scan(layer: layer, pass: .redirects) }
    for layer in layers { scan(layer: layer, pass: .contents) }
  }

  enum Pass { case redirects, contents }

  /// Layers that must not change: a lower used by a mounted overlay or on a read-only
  /// filesystem is checked but left alone. An upper or work dir in use stops any repair
  /// (the kernel's in-use protection lives in the running overlay only); `-n` goes on.
  func guardLayers() -> Bool {
    for use in layersInUse(stack) {
      if use.role == "lowerdir", let layer = use.layer {
        report.protectedLayers[layer] = "the layer is used by the overlay mounted at \(use.mountPoint)"
      } else if report.mode != .check {
        report.operational("\(use.role) is in use by the overlay mounted at \(use.mountPoint); unmount it first (or check only, with -n)")
        return false
      }
    }
    for layer in 1..<stack.layerPaths.count {
      // A nested overlay hides its own private xattrs and whiteouts: what shows is its
      // merged view, which the kernel accepts as a lower as it is. Never written to.
      if let dir = root(layer), (try? dir.fd.filesystemMagic()) == FD.overlayMagic {
        report.protectedLayers[layer] = "the layer is itself an overlay mount"
        nestedOverlays.insert(layer)
      }
    }
    for layer in 0..<stack.layerPaths.count {
      guard let dir = root(layer), (try? dir.fd.isOnReadOnlyFilesystem()) == true else { continue }
      if layer == 0 && report.mode != .check {
        report.operational("\(layerName(0)) is on a read-only filesystem; repairs need it writable (or check only, with -n)")
        return false
      }
      report.protectedLayers[layer] = "the layer is on a read-only filesystem"
    }
    return true
  }

  // MARK: Layers

  func root(_ layer: Int) -> LayerDir? { layer == 0 ? stack.upperRoot : stack.lowerRootDir(layer) }

  func layerName(_ layer: Int) -> String {
    let path = stack.layerPaths[layer]
    if layer == 0 { return "upperdir \(path)" }
    if layer > stack.lowerCount { return "datadir \(layer - stack.lowerCount) \(path)" }
    return "lowerdir \(layer) \(path)"
  }

  var workName: String { "workdir \(options.workDir ?? "")" }

  static func join(_ path: [UInt8], _ name: [UInt8]) -> [UInt8] { path + [0x2F] + name }
  static func text(_ path: [UInt8]) -> String { path.isEmpty ? "/" : String(decoding: path, as: UTF8.self) }
  static func text(components: [[UInt8]]) -> String {
    "/" + components.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
  }

  // MARK: Reading

  /// Status and overlay xattrs of `name` in `dir` (only those of `keys`, when given).
  func entry(_ name: [UInt8], in dir: LayerDir, keys: [OverlayXattr]? = nil) throws(OvlError) -> Entry? {
    try reader.entry(name, in: dir.fd, layer: dir.layer, path: dir.path, keys: keys)
  }

  /// The xattrs a lookup in the layers below acts on: the checks of those layers' own
  /// values ran when their scan met them.
  static let lookupKeys: [OverlayXattr] = [.opaque, .redirect, .whiteout]

  /// Opens subdirectory `name` of `dir` (never following a symlink).
  func open(_ name: [UInt8], in dir: LayerDir) throws(OvlError) -> LayerDir {
    let path = Self.join(dir.path, name)
    let fd = try step("open", stack.layerPaths[dir.layer] + Self.text(path)) { () throws(Errno) in
      try FD.open(name, in: dir.fd, .directory)
    }
    return LayerDir(layer: dir.layer, fd: fd, path: path)
  }

  func names(of dir: LayerDir) throws(OvlError) -> [DirectoryEntry] {
    try step("getdents64", stack.layerPaths[dir.layer] + Self.text(dir.path)) { () throws(Errno) in try dir.fd.entries() }
  }

  // MARK: Lookup in the layers below

  /// The kernel's lookup of `name` in the regular lower layers below `layer`
  /// (`ovl_lookup` over the parent's lower stack): relative names are looked up in the
  /// parent's merged lower dirs `parentBelow`; absolute ones (a redirect) from each layer's
  /// root. Whiteouts and non-directories stop it, opaque dirs stop it after their layer, and
  /// redirects met on the way rewrite the name for the layers further down.
  ///
  /// Without `mergedDirs` it stops at the first object found (what most checks need) and
  /// opens nothing for it; with it, it opens every dir that merges, for the walk.
  func lookupBelow(_ start: LookupName, below layer: Int, parentBelow: [LayerDir], mergedDirs: Bool = false) -> Below {
    var result = Below()
    var name = start
    var stop = false
    var k = layer + 1
    while k <= stack.lowerCount && !stop {
      defer { k += 1 }
      var base: LayerDir
      var components: [[UInt8]]
      switch name {
      case .relative(let n):
        guard let parent = parentBelow.first(where: { $0.layer == k }) else { continue }
        base = parent
        components = [n]
      case .absolute(let c):
        guard let r = root(k) else { continue }
        base = r
        components = c
      }
      var nextName = name
      var stopAfter = false
      var index = 0
      while index < components.count {
        let component = components[index]
        guard let e = try? entry(component, in: base, keys: Self.lookupKeys) else { break }
        let last = index == components.count - 1
        if e.isWhiteout || e.isXattrWhiteout {
          stop = true
          if result.kind == .absent && last { result.kind = .whiteout }
          break
        }
        if !e.isDirectory {
          stop = true
          if last && result.kind == .absent {
            result.kind = .other(e.status.type)
            result.firstLayer = k
            result.firstPath = Self.join(base.path, component)
          }
          break
        }
        // A directory: the last component merges; an intermediate one is walked through.
        if last && !mergedDirs && result.kind == .absent {
          result.kind = .directory
          result.firstLayer = k
          result.firstPath = Self.join(base.path, component)
          return result
        }
        if e.isOpaque { stopAfter = true }
        if let r = e.xattrs[.redirect], let redirect = try? Redirect(value: r) {
          nextName = nextName.rewritten(by: redirect, post: Array(components[(index + 1)...]))
        }
        guard let opened = try? open(component, in: base) else { break }
        if last {
          if result.kind == .absent {
            result.kind = .directory
            result.firstLayer = k
            result.firstPath = opened.path
          }
          if result.kind == .directory { result.dirs.append(opened) }
        }
        base = opened
        index += 1
      }
      if case .other = result.kind { break }
      if result.kind == .whiteout { break }
      if stopAfter { stop = true }
      name = nextName
    }
    return result
  }

  // MARK: Walking

  struct DirContext {
    let dir: LayerDir
    let isOpaque: Bool
    private let lower: LowerDirs
    /// The merged lower dirs below this dir (empty for an opaque or pure dir).
    var below: [LayerDir] { lower.dirs }

    init(dir: LayerDir, below: [LayerDir], isOpaque: Bool) {
      self.dir = dir
      self.isOpaque = isOpaque
      lower = LowerDirs(below)
    }

    /// A context whose lower dirs are looked up when first asked for.
    init(dir: LayerDir, findingBelow find: @escaping () -> [LayerDir]) {
      self.dir = dir
      isOpaque = false
      lower = LowerDirs(find)
    }
  }

  /// A dir's merged lower dirs, found when first asked for: the redirect pass needs them only
  /// in dirs that hold a redirect (and their ancestors), so it does not look up every dir
  /// of the layers below.
  final class LowerDirs {
    private var found: [LayerDir]?
    private var find: (() -> [LayerDir])?

    init(_ dirs: [LayerDir]) { found = dirs }
    init(_ find: @escaping () -> [LayerDir]) { self.find = find }

    var dirs: [LayerDir] {
      if let found { return found }
      let dirs = find?() ?? []
      found = dirs
      find = nil
      return dirs
    }
  }

  /// A subdirectory still to walk: opened (with its lower dirs) only when its turn comes,
  /// so that open descriptors grow with the depth, not with the size of a directory.
  struct PendingDir {
    let parent: DirContext
    /// The entry as the checks left it (a redirect may be gone).
    let entry: Entry
    /// Its entries, being read ahead.
    var ticket: ReadAhead<ReadDir?>.Ticket?
  }

  /// Walks one layer depth-first, with each dir's merged lower dirs.
  func scan(layer: Int, pass: Pass) {
    guard let top = root(layer), !nestedOverlays.contains(layer) else { return }
    leafDevice = top.fd.countsSubdirectoriesInLinks() ? (try? top.fd.stat())?.id.device : nil
    let topBelow: [LayerDir] = (layer + 1 <= stack.lowerCount) ? Array((layer + 1)...stack.lowerCount).compactMap { root($0) } : []
    var pending: [PendingDir] = []
    var next: (context: DirContext, read: [Entry]?)? = (DirContext(dir: top, below: topBelow, isOpaque: false), nil)
    while true {
      if let (context, read) = next {
        next = nil
        do {
          let subdirs = try visit(context, layer: layer, pass: pass, read: read)
          // Pushed as they are stacked: the thread reads the dir the walk enters next.
          for var item in subdirs.reversed() {
            item.ticket = readAhead(item, pass: pass)
            pending.append(item)
          }
        } catch {
          report.operational(error.description)
        }
      }
      guard let item = pending.popLast() else { break }
      do {
        next = try enter(item, layer: layer, pass: pass)
      } catch {
        report.operational(error.description)
      }
    }
  }

  /// Starts opening and reading `item` on the read-ahead thread. A failure there is left
  /// for the walk to meet again and report (nil).
  func readAhead(_ item: PendingDir, pass: Pass) -> ReadAhead<ReadDir?>.Ticket? {
    guard let readAhead else { return nil }
    let reader = reader
    let parent = SharedDir(dir: item.parent.dir)
    let name = item.entry.name
    let dirsOnly = pass == .redirects
    return readAhead.push {
      let dir = parent.dir
      let path = Checker.join(dir.path, name)
      guard let fd = try? FD.open(name, in: dir.fd, .directory),
        let entries = try? reader.entries(of: fd, layer: dir.layer, path: path, dirsOnly: dirsOnly)
      else { return nil }
      return ReadDir(fd: SharedFD(fd), entries: entries)
    }
  }

  /// Opens a pending subdirectory and finds the lower dirs that merge with it.
  func enter(_ item: PendingDir, layer: Int, pass: Pass) throws(OvlError) -> (context: DirContext, read: [Entry]?) {
    let e = item.entry
    let dir: LayerDir
    var read: [Entry]?
    if let ticket = item.ticket, let done = readAhead?.take(ticket), let fd = done.fd.take() {
      dir = LayerDir(layer: item.parent.dir.layer, fd: fd, path: Self.join(item.parent.dir.path, e.name))
      read = done.entries
    } else {
      dir = try open(e.name, in: item.parent.dir)
    }
    guard !e.isOpaque else { return (DirContext(dir: dir, below: [], isOpaque: true), read) }
    let redirect = e.xattrs[.redirect].flatMap { try? Redirect(value: $0) }
    let name = redirect.map(LookupName.init) ?? .relative(e.name)
    let parent = item.parent
    if pass == .redirects {
      return (DirContext(dir: dir) { self.lookupBelow(name, below: layer, parentBelow: parent.below, mergedDirs: true).dirs }, read)
    }
    let below = lookupBelow(name, below: layer, parentBelow: parent.below, mergedDirs: true).dirs
    return (DirContext(dir: dir, below: below, isOpaque: false), read)
  }

  /// Checks the entries of one dir (`read` ahead, or read here) and returns its
  /// subdirectories to walk.
  func visit(_ context: DirContext, layer: Int, pass: Pass, read: [Entry]? = nil) throws(OvlError) -> [PendingDir] {
    var subdirs: [PendingDir] = []
    let entries: [Entry]
    if let read {
      entries = read
    } else {
      entries = try reader.entries(of: context.dir.fd, layer: layer, path: context.dir.path, dirsOnly: pass == .redirects)
    }
    var needsImpure: [String] = []
    var mergeOnly = false
    for e in entries {
      if pass == .contents { countEntry(e) }
      if e.isDirectory {
        var current = e
        if pass == .redirects {
          current = checkRedirect(e, in: context, layer: layer)
        } else {
          checkDirectoryXattrs(e, in: context, layer: layer)
        }
        if pass == .contents && layer == 0 {
          let redirect = current.xattrs[.redirect].flatMap { try? Redirect(value: $0) }
          if redirect != nil { needsImpure.append("a redirected dir (\(Self.text(e.name)))") }
          if current.xattrs[.origin] != nil { needsImpure.append("a copied-up dir (\(Self.text(e.name)))") }
          if redirect == nil && !current.isOpaque && !mergeOnly
            && lookupBelow(.relative(e.name), below: layer, parentBelow: context.below).kind == .directory
          {
            mergeOnly = true
          }
        }
        // A dir without subdirectories holds no redirect: the redirect pass need not list it.
        if pass == .redirects, let leafDevice, current.status.links == 2, current.status.id.device == leafDevice { continue }
        subdirs.append(PendingDir(parent: context, entry: current))
        continue
      }
      guard pass == .contents else { continue }
      if e.isWhiteout {
        checkWhiteout(e, in: context, layer: layer)
        continue
      }
      checkNonDirectory(e, in: context, layer: layer)
      if layer == 0 && e.xattrs[.origin] != nil { needsImpure.append("a copied-up object (\(Self.text(e.name)))") }
    }
    if pass == .contents {
      report.count("directories")
      if layer == 0 {
        checkImpure(context, needsImpure: needsImpure, mergeOnly: mergeOnly)
        checkDeletedObjectsCovered(context, upperNames: Set(entries.map(\.name)))
      }
    }
    return subdirs
  }

  func countEntry(_ e: Entry) {
    report.count("entries")
    if report.counts["entries", default: 0] % 4096 == 0 { report.onProgress(report.counts["entries", default: 0]) }
    if e.isWhiteout { report.count("whiteouts") } else if !e.isDirectory { report.count("files") }
    if e.isDirectory && e.xattrs[.redirect] != nil { report.count("redirect dirs") }
  }
}
