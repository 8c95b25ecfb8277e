import OvlFormat
import OvlStack
import OvlSystem

/// The first of `apply`'s two passes: the whole layer read once, before any change, with
/// every check that can refuse it — the stream's own (a bad checksum, a malformed PAX
/// record, a truncated or undecodable stream: `LayerReader`), each entry's path, type,
/// whiteout and hardlink target, and every parent on the way against what the layer made
/// before it and the merged view (read-only lookups: a symlink or a non-directory on the way
/// is refused). A layer refused here leaves the stack as it was; the second pass makes the
/// changes. Nothing is written, the work dir included.
///
/// The pass models what the layer does to the namespace, by merged path, only as far as a
/// refusal depends on it: a directory, a symlink, another object or nothing.
final class LayerCheck {
  enum Kind { case directory, symlink, other, absent }

  private let stack: Stack
  private let options: ApplyOptions
  /// What the layer left at each path it touched (made, replaced, removed).
  private var state: [ByteKey: Kind] = [:]
  /// Directories the layer made, replaced or made opaque: nothing below them shows from the
  /// layers below (entries of the layer itself are in `state`).
  private var hiding: Set<ByteKey> = []
  /// Paths of non-directories the layer made (a second one is a duplicate entry).
  private var madeObjects: Set<ByteKey> = []
  /// The merged root, opened once (its descriptors are the stack's own).
  private var root: MergedDir?
  /// The merged directories on the path of the last lookup, shallowest first, each the
  /// parent of the next: a layer comes in tree order, so the next lookup's directory is
  /// mostly one of them or a child of one. At most `openLimit` are held (each holds a
  /// descriptor per layer it is in), whatever the number of directories in the layer; one
  /// off the path is opened again from the deepest ancestor held, or from the root.
  private var openPath: [(path: [UInt8], dir: MergedDir)] = []
  static let openLimit = 32

  init(stack: Stack, options: ApplyOptions) {
    self.stack = stack
    self.options = options
  }

  /// The parent (merged path) of the entry before, checked already: most entries share
  /// their parent with the one before them. Forgotten when an entry changes what is at it
  /// or above it.
  private var checkedParent: [UInt8]?

  /// Reads and checks every entry (the caller ends the stream: `finish`, `finishDiffID`).
  func run(_ reader: LayerReader) throws(OvlError) {
    while let entry = try reader.next() { try check(entry) }
  }

  /// `a/b/c` as the merged path `/a/b/c`, its parent's (`/a/b`, the root `/`) and the last
  /// name, in one scan for the common path (no `.`, `..`, `//`, leading `/`, NUL or overlong
  /// name); anything else through `Applier.mergedPath`, which refuses what must be refused.
  static func split(_ raw: [UInt8]) throws(OvlError) -> (path: [UInt8], parent: [UInt8], name: [UInt8])? {
    var end = raw.count
    while end > 0 && raw[end - 1] == UInt8(ascii: "/") { end -= 1 }
    var plain = end > 0 && raw[0] != UInt8(ascii: "/")
    var start = 0
    var lastSlash = -1
    if plain {
      for i in 0...end {
        if i == end || raw[i] == UInt8(ascii: "/") {
          let length = i - start
          if length == 0 || length > 255 || (length <= 2 && raw[start] == 0x2E && (length == 1 || raw[start + 1] == 0x2E)) {
            plain = false
            break
          }
          if i < end { lastSlash = i }
          start = i + 1
        } else if raw[i] == 0 {
          plain = false
          break
        }
      }
    }
    if plain {
      var path = [UInt8(ascii: "/")]
      path.append(contentsOf: raw[0..<end])
      let parent = lastSlash < 0 ? [UInt8(ascii: "/")] : Array(path[0..<(lastSlash + 1)])
      return (path, parent, Array(raw[(lastSlash + 1)..<end]))
    }
    let path = try Applier.mergedPath(raw)
    guard let name = path.name, let parent = path.parent else { return nil }
    return (path.slashed, parent.slashed, name)
  }

  private func check(_ layerEntry: LayerEntry) throws(OvlError) {
    let entry = options.rootlessOwners.map { $0.transform(layerEntry) } ?? layerEntry
    guard let (path, parentPath, name) = try Self.split(entry.path) else { return }
    if name.starts(with: whiteoutPrefix) {
      if entry.kind == .directory { throw refused(entry.path, "a directory named .wh.*", .invalidArgument) }
      try parents(parentPath, entry.path)
      if name == opaqueMarker {
        changed(parentPath)
        hiding.insert(ByteKey(parentPath))
        return
      }
      let victim = Array(name.dropFirst(whiteoutPrefix.count))
      if victim.starts(with: whiteoutPrefix) { return }  // AUFS metadata: skipped
      if victim.isEmpty || victim == [0x2E] || victim == [0x2E, 0x2E] {
        throw refused(entry.path, "invalid whiteout (it would remove '\(victim.string)')")
      }
      whiteOut(parentPath == [UInt8(ascii: "/")] ? parentPath + victim : parentPath + [UInt8(ascii: "/")] + victim)
      return
    }
    if entry.kind != .directory && madeObjects.contains(ByteKey(path)) {
      throw refused(entry.path, "duplicate entry", .fileExists)
    }
    if entry.kind == .character && entry.rdevMajor == 0 && entry.rdevMinor == 0 {
      try parents(parentPath, entry.path)
      whiteOut(path)
      return
    }
    try parents(parentPath, entry.path)
    switch entry.kind {
    case .directory:
      if try kind(path) != .directory {
        try permitted(entry)
        changed(path)
        hiding.insert(ByteKey(path))
      }
      state[ByteKey(path)] = .directory
      return
    case .hardlink:
      let target = try Applier.mergedPath(entry.linkTarget ?? []).slashed
      switch try kind(target) {
      case .absent:
        throw refused(entry.path, "hardlink target '\((entry.linkTarget ?? []).string)' is neither in the layer nor in the stack", .noSuchFileOrDirectory)
      case .directory:
        throw refused(entry.path, "hardlink to a directory", .notPermitted)
      case .symlink, .other:
        if target == path { return }
      }
    case .socket: return
    case .unknown: throw refused(entry.path, "unsupported entry type")
    case .character, .block:
      if !options.allowDevices { throw refused(entry.path, "device nodes are not permitted (--no-devices)", .notPermitted) }
    case .regular:
      guard entry.size >= 0 else { throw refused(entry.path, "negative size") }
    default: break
    }
    try permitted(entry)
    replace(path, with: entry.kind == .symlink ? .symlink : .other)
  }

  /// What the writing user may not give a new object, refused before any change (the
  /// second pass would meet it half-way): another owner without CAP_CHOWN, an id this user
  /// namespace does not map, a device without CAP_MKNOD, `trusted.*` and `security.*`
  /// attributes without the capability. `--rootless-owners` entries pass: they are the
  /// user's own (`RootlessOwners.transform`).
  private func permitted(_ entry: LayerEntry) throws(OvlError) {
    let me = stack.credentials
    let hint = " (apply as root, in a user namespace that maps it, or with --rootless-owners)"
    if entry.kind == .hardlink || entry.kind == .socket { return }
    if !me.maps(uid: entry.uid) { throw refused(entry.path, "owner uid \(entry.uid) has no mapping in this user namespace" + hint, .invalidArgument) }
    if !me.maps(gid: entry.gid) { throw refused(entry.path, "group gid \(entry.gid) has no mapping in this user namespace" + hint, .invalidArgument) }
    if !me.canChangeOwners {
      if entry.uid != me.uid { throw refused(entry.path, "owner uid \(entry.uid): only a process with CAP_CHOWN gives a file to another owner" + hint, .notPermitted) }
      if !me.isMember(of: entry.gid) { throw refused(entry.path, "group gid \(entry.gid) is not one of this user's groups (CAP_CHOWN needed)" + hint, .notPermitted) }
    }
    if (entry.kind == .block || entry.kind == .character) && !me.canMakeDevices && options.allowDevices {
      throw refused(entry.path, "device nodes need CAP_MKNOD in the initial user namespace" + hint, .notPermitted)
    }
    for (name, _) in entry.xattrs where !isLayerPrivate(name) {
      if name.starts(with: Array("trusted.".utf8)) && !me.canUseTrustedXattrs {
        throw refused(entry.path, "trusted.* attributes need CAP_SYS_ADMIN in the initial user namespace", .notPermitted)
      }
      if name.starts(with: Array("security.".utf8)) && me.capabilities.isEmpty {
        throw refused(entry.path, "security.* attributes need a capability (CAP_SYS_ADMIN)", .notPermitted)
      }
    }
  }

  /// Every parent must be a directory (made if missing, as the apply pass makes it); a
  /// symlink or another object on the way refuses the entry.
  private func parents(_ whole: [UInt8], _ raw: [UInt8]) throws(OvlError) {
    if whole == checkedParent { return }
    let parent = MergedPath(slashed: whole)
    for depth in 0..<parent.depth {
      let path = parent.prefix(depth + 1).slashed
      switch try kind(path) {
      case .directory: continue
      case .symlink: throw refused(raw, "the path goes through the symlink '\(path.string)'", .tooManySymbolicLinkLevels)
      case .other: throw refused(raw, "'\(path.string)' is not a directory", .notDirectory)
      case .absent:
        state[ByteKey(path)] = .directory
        hiding.insert(ByteKey(path))
      }
    }
    checkedParent = whole
  }

  /// `path` changed: a checked parent at or below it must be checked again.
  private func changed(_ path: [UInt8]) {
    guard let parent = checkedParent else { return }
    if parent == path || path == [UInt8(ascii: "/")] || (parent.starts(with: path) && parent.count > path.count && parent[path.count] == UInt8(ascii: "/")) {
      checkedParent = nil
    }
  }

  /// A whiteout acts on the layers below only: what this layer made stays (a directory it
  /// made hides the layers below, as it does already).
  private func whiteOut(_ path: [UInt8]) {
    changed(path)
    switch state[ByteKey(path)] {
    case .directory?: hiding.insert(ByteKey(path))
    case .symlink?, .other?: return
    case .absent?, nil: state[ByteKey(path)] = .absent
    }
  }

  private func replace(_ path: [UInt8], with kind: Kind) {
    changed(path)
    let key = ByteKey(path)
    state[key] = kind
    madeObjects.insert(key)
  }

  /// What is at `path` after the entries so far: the layer's own, else — unless a directory
  /// of the layer on the way hides it, or something of the layer on the way is not a
  /// directory — the merged view's.
  private func kind(_ path: [UInt8]) throws(OvlError) -> Kind {
    if let known = state[ByteKey(path)] { return known }
    var components = path.split(separator: UInt8(ascii: "/")).map { Array($0) }
    guard !components.isEmpty else { return .directory }
    let name = components.removeLast()
    var ancestor: [UInt8] = []
    var prefixes: [[UInt8]] = [[UInt8(ascii: "/")]]
    for c in components {
      ancestor += [UInt8(ascii: "/")] + c
      prefixes.append(ancestor)
    }
    // The nearest ancestor the layer touched decides whether the layers below show here.
    for prefix in prefixes.reversed() {
      if let known = state[ByteKey(prefix)], known != .directory { return .absent }
      if hiding.contains(ByteKey(prefix)) { return .absent }
      if state[ByteKey(prefix)] == .directory { break }
    }
    guard let dir = try mergedDirectory(Array(prefixes.last ?? [UInt8(ascii: "/")])), let entry = try stack.lookup(name, in: dir) else {
      return .absent
    }
    if entry.status.type == .symlink { return .symlink }
    return entry.isDirectory ? .directory : .other
  }

  /// The merged directory at `path` (`/` the root), nil when the merged view has no
  /// directory there.
  private func mergedDirectory(_ path: [UInt8]) throws(OvlError) -> MergedDir? {
    let slash = UInt8(ascii: "/")
    var base: MergedDir
    var start: Int
    // The deepest directory held at or above `path`; the ones below it are off the path.
    if let held = openPath.lastIndex(where: { Self.isAt($0.path, orAbove: path) }) {
      openPath.removeSubrange((held + 1)...)
      base = openPath[held].dir
      start = openPath[held].path.count
      if start == path.count { return base }
    } else {
      openPath.removeAll(keepingCapacity: true)
      if let root {
        base = root
      } else {
        base = try stack.root()
        root = base
      }
      start = 0
      if path == [slash] { return base }
    }
    for component in path[(start + 1)...].split(separator: slash, omittingEmptySubsequences: true) {
      let name = Array(component)
      guard let entry = try stack.lookup(name, in: base), entry.isDirectory, entry.status.type != .symlink else { return nil }
      base = try stack.open(entry)
      start += 1 + name.count
      openPath.append((Array(path[..<start]), base))
      if openPath.count > Self.openLimit { openPath.removeFirst() }
    }
    return base
  }

  /// `dir` is `path` or one of its ancestors (merged paths; `/a` is not above `/ab`).
  static func isAt(_ dir: [UInt8], orAbove path: [UInt8]) -> Bool {
    dir.count <= path.count && path.starts(with: dir) && (dir.count == path.count || path[dir.count] == UInt8(ascii: "/"))
  }
}
