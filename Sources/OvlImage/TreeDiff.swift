import OvlFormat
import OvlOperations
import OvlStack
import OvlSystem

/// Writes into an upper the changes that turn the view `old` into the view `new` (§6.3 of
/// the layer study), by the namespace operations on a session whose lower is `old`'s tree:
/// removed names become whiteouts, replaced or new entries are written, directories whose
/// attributes changed are copied up. `diff` runs it on two plain trees, `merge` on the
/// stack's base and its merged view.
public final class TreeDiff {
  let old: Stack
  let new: Stack
  let session: WriteSession
  let warn: (String) -> Void
  /// First path written for each multiply-linked inode of `new`.
  private var links: [FileID: [UInt8]] = [:]
  public private(set) var changed = 0

  public init(old: Stack, new: Stack, session: WriteSession, warn: @escaping (String) -> Void) {
    self.old = old
    self.new = new
    self.session = session
    self.warn = warn
  }

  /// The hard link group of each multiply-linked non-directory, by path: its members'
  /// paths, sorted and joined (absent: a file with one link).
  private var oldGroups: [ByteKey: [UInt8]] = [:]
  private var newGroups: [ByteKey: [UInt8]] = [:]

  public func run() throws(OvlError) {
    oldGroups = try Self.linkGroups(old)
    newGroups = try Self.linkGroups(new)
    let newRoot = try new.root()
    let oldRoot = try old.root()
    try walk(oldRoot, newRoot, [])
    try session.finish()
  }

  /// Every hard link group of a view: non-directories with more than one link, grouped by
  /// the inode the view shows.
  static func linkGroups(_ stack: Stack) throws(OvlError) -> [ByteKey: [UInt8]] {
    var members: [FileID: [[UInt8]]] = [:]
    func visit(_ dir: MergedDir, _ components: [[UInt8]]) throws(OvlError) {
      for name in try stack.list(dir) {
        guard let entry = try stack.lookup(name, in: dir) else { continue }
        if entry.isDirectory {
          try visit(try stack.open(entry), components + [name])
        } else if entry.status.links > 1 {
          members[entry.status.id, default: []].append(path(components + [name]))
        }
      }
    }
    try visit(try stack.root(), [])
    var groups: [ByteKey: [UInt8]] = [:]
    for paths in members.values where paths.count > 1 {
      let key = paths.sorted(by: Stack.byteOrder).joined(separator: [0])
      for p in paths { groups[ByteKey(p)] = Array(key) }
    }
    return groups
  }

  private static func path(_ components: [[UInt8]]) -> [UInt8] { MergedPath(components).slashed }

  private func walk(_ oldDir: MergedDir?, _ newDir: MergedDir, _ components: [[UInt8]]) throws(OvlError) {
    let newNames = try new.list(newDir)
    let oldNames = try oldDir.map { (dir) throws(OvlError) in try old.list(dir) } ?? []
    var names = Set(newNames)
    names.formUnion(oldNames)
    for name in names.sorted(by: Stack.byteOrder) {
      let childComponents = components + [name]
      let path = Self.path(childComponents)
      let newEntry = try new.lookup(name, in: newDir)
      let oldEntry = try oldDir.flatMap { (dir) throws(OvlError) in try old.lookup(name, in: dir) }
      guard let newEntry else {
        if oldEntry != nil {
          try session.remove(path, mode: .recursive, force: true)
          changed += 1
        }
        continue
      }
      guard let oldEntry else {
        try copyIn(newEntry, childComponents)
        continue
      }
      let newRecord = try new.record(newEntry, hash: false)
      let oldRecord = try old.record(oldEntry, hash: false)
      if newEntry.isDirectory && oldEntry.isDirectory {
        if !sameAttributes(oldRecord, newRecord) {
          try setAttributes(path, newRecord, isSymlink: false, replacingXattrs: oldRecord.xattrs)
          changed += 1
        }
        try walk(try old.open(oldEntry), try new.open(newEntry), childComponents)
        continue
      }
      // A file whose hard link group is not the one it had (it gained or lost names above
      // the base) is written again with its whole group: a tar hard link can only point
      // inside its own layer, and an unchanged name left below would keep the old group.
      let sameGroup = oldGroups[ByteKey(path)] == newGroups[ByteKey(path)]
      if sameGroup, newEntry.status.type == oldEntry.status.type, try same(oldEntry, oldRecord, newEntry, newRecord) {
        // Unchanged, but a hard link group must survive if another member changes.
        if newEntry.status.links > 1 && newEntry.status.type != .directory && links[newEntry.status.id] == nil {
          links[newEntry.status.id] = path
        }
        continue
      }
      try session.remove(path, mode: .recursive, force: true)
      try copyIn(newEntry, childComponents)
    }
  }

  private func sameAttributes(_ a: ViewRecord, _ b: ViewRecord) -> Bool {
    a.status.permissions == b.status.permissions && a.status.uid == b.status.uid && a.status.gid == b.status.gid
      && a.xattrs.count == b.xattrs.count && zip(a.xattrs, b.xattrs).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
  }

  /// D5: same type, attributes, size, target, rdev and mtime (to the nanosecond; an mtime
  /// that changed is a change even where the contents did not — a touched file, which the
  /// layer carries again). With the same mtime the contents are taken as the same.
  private func same(_ oldEntry: MergedEntry, _ a: ViewRecord, _ newEntry: MergedEntry, _ b: ViewRecord) throws(OvlError) -> Bool {
    sameAttributes(a, b) && (a.status.size == b.status.size || a.status.type == .directory)
      && a.target == b.target && a.status.rdevMajor == b.status.rdevMajor && a.status.rdevMinor == b.status.rdevMinor
      && (a.status.type == .directory || a.status.mtime == b.status.mtime)
  }

  private func setAttributes(_ path: [UInt8], _ record: ViewRecord, isSymlink: Bool, replacingXattrs previous: [([UInt8], [UInt8])] = []) throws(OvlError) {
    try session.setAttribute(path, .owner(uid: record.status.uid, gid: record.status.gid))
    if !isSymlink { try session.setAttribute(path, .mode(record.status.permissions)) }
    for (name, _) in previous where !record.xattrs.contains(where: { $0.0 == name }) {
      try session.setAttribute(path, .removeXattr(name: name))
    }
    for (name, value) in record.xattrs where !isLayerPrivate(name) {
      try session.setAttribute(path, .setXattr(name: name, value: value))
    }
  }

  /// Writes `entry` of `new` (a whole subtree for a directory) at a free name.
  private func copyIn(_ entry: MergedEntry, _ components: [[UInt8]]) throws(OvlError) {
    let path = Self.path(components)
    let record = try new.record(entry, hash: false)
    let status = record.status
    changed += 1
    if status.type != .directory && status.links > 1 {
      if let first = links[status.id] {
        try session.link(first, to: path)
        return
      }
      links[status.id] = path
    }
    switch status.type {
    case .directory:
      try session.create(path, .directory, permissions: status.permissions)
      try setAttributes(path, record, isSymlink: false)
      let dir = try new.open(entry)
      for name in try new.list(dir) {
        guard let child = try new.lookup(name, in: dir) else { continue }
        try copyIn(child, components + [name])
      }
      try session.setAttribute(path, .times(status.mtime))
    case .regular:
      let data = try new.openData(entry)
      let bytes = try step("read", path.string) { () throws(Errno) in try data.readAll() }
      // Built complete, as apply's general path builds a file: owner, mode, xattrs, times.
      let attributes = ObjectAttributes(
        permissions: status.permissions, owner: (status.uid, status.gid), mtime: status.mtime, xattrs: record.xattrs.filter { !isLayerPrivate($0.0) })
      try session.put(path, contents: .bytes(bytes), attributes: attributes)
    case .symlink:
      try session.create(path, .symlink(target: record.target ?? []))
      try setAttributes(path, record, isSymlink: true)
      try session.setAttribute(path, .times(status.mtime))
    case .character, .block, .fifo:
      try session.create(path, .node(status.type, major: status.rdevMajor, minor: status.rdevMinor), permissions: status.permissions)
      try setAttributes(path, record, isSymlink: false)
      try session.setAttribute(path, .times(status.mtime))
    case .socket:
      warn("\(path.string): socket skipped")
    }
  }
}
