import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

/// What `copyUp` did for one path.
public enum CopyUpResult: String, Sendable {
  /// Copied up (with any missing parents).
  case copied
  /// Another name of the same hard link was up already: linked to its index entry.
  case linkedUp = "linked-up"
  /// A metacopy upper got its data.
  case completedData = "completed-data"
  /// Nothing to do.
  case alreadyUpper = "already-upper"
}

extension WriteSession {
  /// Copies `path` (a merged-view path) up as the kernel does when it is opened for writing
  /// (`metacopy == false`: full data; a metacopy upper gets its data) or when its metadata
  /// changes with metacopy=on (`metacopy == true`). Missing parents are copied up first,
  /// top-most first, as `ovl_copy_up_flags` does.
  public func copyUp(_ path: [UInt8], metacopy: Bool) throws(OvlError) -> CopyUpResult {
    try copyUp(try parse(path, what: "a copy-up path"), metacopy: metacopy)
  }

  func copyUp(_ path: MergedPath, metacopy: Bool) throws(OvlError) -> CopyUpResult {
    let components = path.components
    let shown = path.shown
    if metacopy && !stack.options.metacopy {
      throw .format(path: shown, reason: "metadata-only copy-up needs metacopy=on", errno: .invalidArgument)
    }
    guard let parentPath = path.parent else { return .alreadyUpper }
    // Scripts copy up many paths in one directory: start from the parent when it is known
    // to be up already.
    var parent = try stack.root()
    var upperParent = upper
    var start = 0
    if let cached = directories[parentPath], let cachedUpper = cached.upper {
      parent = cached
      upperParent = cachedUpper
      start = components.count - 1
    }
    // The whole path is looked up before anything is copied (as open(2) resolves it
    // first): a missing or non-directory component copies no parent up. (From a parent
    // known to be up, the loop below looks the one name up before any write itself.)
    var probe = parent
    for (i, name) in components.enumerated() where i >= start && start < components.count - 1 {
      guard let entry = try stack.lookup(name, in: probe) else {
        throw .format(path: shown, reason: "no such file or directory in the merged view", errno: .noSuchFileOrDirectory)
      }
      if i == components.count - 1 { break }
      if !entry.isDirectory {
        throw .format(path: entry.path.shown, reason: "not a directory", errno: .notDirectory)
      }
      probe = try stack.open(entry)
    }
    var result = CopyUpResult.alreadyUpper
    for (i, name) in components.enumerated() where i >= start {
      let last = i == components.count - 1
      guard var entry = try stack.lookup(name, in: parent) else {
        throw .format(path: shown, reason: "no such file or directory in the merged view", errno: .noSuchFileOrDirectory)
      }
      if !last && !entry.isDirectory {
        throw .format(path: entry.path.shown, reason: "not a directory", errno: .notDirectory)
      }
      if entry.upper == nil || isIndexAlias(entry) {
        // Only regular files can be metadata-only; anything else is copied whole, as a
        // metadata change through the kernel does.
        let metadataOnly = last && metacopy && entry.status.type == .regular
        result = try copyUpOne(entry, name: name, into: upperParent, metacopy: metadataOnly)
        // A file copied with its data is done; anything else is looked up again (a
        // directory to descend into, a linked-up metacopy entry to complete).
        if last && result == .copied && !metadataOnly && !entry.isDirectory { return result }
        guard let updated = try stack.lookup(name, in: parent) else {
          throw .format(path: shown, reason: "gone after copy-up", errno: .noSuchFileOrDirectory)
        }
        entry = updated
      } else {
        try fixOrigin(entry, parent: upperParent)
      }
      if last && entry.upperIsMetacopy && !metacopy {
        // A write-open completes the data, also of a metacopy index entry just linked up.
        try completeData(entry)
        if result == .alreadyUpper { result = .completedData }
      }
      if !last {
        parent = try stack.open(entry)
        guard let upperDir = parent.upper else { throw .format(path: shown, reason: "no upper after copy-up", errno: .ioError) }
        upperParent = upperDir
        cacheDirectory(parent, at: entry.path)
      }
    }
    return result
  }

  func describe(_ path: [UInt8]) -> String { upperPath + path.string }
  func describe(_ path: MergedPath) -> String { upperPath + path.bytes.string }

  /// `ovl_fix_origin`: the kernel's lookup of a merged directory records the handle of its
  /// top lower directory as `origin` (where missing or different) and marks the parent
  /// impure; a copy-up looks its path up, so it leaves the same.
  func fixOrigin(_ entry: MergedEntry, parent: LayerDir) throws(OvlError) {
    guard entry.isDirectory, let upperDir = entry.upper, let lower = entry.lowers.first,
      !(stack.options.nfsExport && stack.options.index)
    else { return }
    let origin = originValue(lower)
    let attribute = namespace.name(.origin)
    let path = describe(entry.path)
    let stored = try step("getxattr", path) { () throws(Errno) in try upperDir.xattr(attribute) }
    guard stored != origin else { return }
    try prepareForChange()
    try withLockedParent(upperDir.parent, child: upperDir.name, expected: upperDir.status.id, path: path) { () throws(OvlError) in
      try step("setxattr", path) { () throws(Errno) in try upperDir.parent.fd.setXattr(upperDir.name, attribute, origin) }
    }
    forgetDirectories(under: entry.path)
    try setImpure(parent)
  }

  /// The lookup found the upper in the index (another alias was copied up): this name still
  /// needs its link (`ovl_link_up`).
  func isIndexAlias(_ entry: MergedEntry) -> Bool {
    guard let index, let upper = entry.upper else { return false }
    return upper.parent === index
  }

  /// `ovl_copy_up_one` + `ovl_do_copy_up` for one object whose parent is up already.
  func copyUpOne(_ entry: MergedEntry, name: [UInt8], into upperParent: LayerDir, metacopy: Bool) throws(OvlError) -> CopyUpResult {
    try prepareForChange()
    if isIndexAlias(entry), let indexed = entry.upper {
      try linkUp(indexed, name: name, into: upperParent, path: entry.path.bytes, lowerLinks: Int(entry.lowers.first?.status.links ?? 1))
      return .linkedUp
    }
    guard let lower = entry.lowers.first else { throw .format(path: entry.path.shown, reason: "nothing to copy up", errno: .noSuchFileOrDirectory) }
    let status = lower.status
    let isDir = status.type == .directory
    // ovl_need_index: every object with nfs_export, else lower hard links.
    let indexed = index != nil && (stack.options.nfsExport || (!isDir && status.links > 1))
    let toIndex = indexed && !isDir
    let origin: [UInt8]? = isDir || status.links == 1 || toIndex ? originValue(lower) : nil
    try sampleTimes(upperParent)

    // nfs_export indexes every copy-up. A lower with one link goes to its upper name first
    // and into the index after: an index entry whose lower has one link and that has no
    // second link is an orphan to the next mount (`ovl_verify_index`), which nfs_export
    // replaces by a whiteout — a crash between the kernel's two steps (index first) makes
    // the file disappear. An upper not yet indexed is fine for the kernel and fsck.
    let indexAfterUpper = toIndex && status.links == 1
    var destination = upperParent
    var destinationName = name
    var indexName: [UInt8] = []
    if toIndex {
      indexName = try step("name_to_handle_at", entry.path.shown) { () throws(Errno) in
        try stack.encodeHandle(lower.parent, lower.name, upper: false).indexName
      }
    }
    if toIndex && !indexAfterUpper, let index {
      destination = index
      destinationName = indexName
    } else {
      try setImpure(upperParent)
    }

    let plan = CopyPlan(entry: entry, lower: lower, origin: origin, metacopy: metacopy)
    // `ovl_set_nlink_upper` of a new index entry, set before it is published (the kernel
    // sets it after): an index entry without its link count, left by a crash before the
    // link-up, is an orphan to the next mount, which deletes it — or with nfs_export
    // replaces it by a whiteout, and the lower file disappears from the view. With the
    // count (overlay links = the lower's, relative to the one link it has once in the
    // index) the mount keeps it and every lower alias finds the copied-up data.
    // (Linked into the index after its upper name: two upper links for its one.)
    let indexNlink = toIndex ? NlinkXattr(base: .upper, delta: indexAfterUpper ? -1 : Int(status.links) - 1).value : nil
    let published: Bool
    if status.type == .regular {
      published = try copyRegularFile(plan, to: destinationName, in: destination, indexNlink: indexNlink)
    } else {
      published = try copyByTemp(plan, to: destinationName, in: destination, indexedDirectory: indexed && isDir, indexNlink: indexNlink)
    }
    if isDir { forgetDirectories(under: entry.path) }
    if indexAfterUpper, let index {
      if published {
        let id = try linkIntoIndex(name, in: upperParent, as: indexName, index: index, path: entry.path.bytes)
        inodeLinks[id] = Int(status.links)
      }
      markDirty(upperParent)
      return published ? .copied : .alreadyUpper
    }
    if toIndex, let index {
      let indexedObject = try step("statx", workPath + "/index/" + destinationName.string) { () throws(Errno) in
        RealObject(layer: 0, parent: index, name: destinationName, status: try index.fd.stat(destinationName))
      }
      if published { inodeLinks[indexedObject.status.id] = Int(status.links) }
      try linkUp(indexedObject, name: name, into: upperParent, path: entry.path.bytes, lowerLinks: Int(status.links))
      return published ? .copied : .linkedUp
    }

    markDirty(upperParent)
    return published ? .copied : .alreadyUpper
  }

  /// A copied-up upper gets its index entry: a second link named after its origin (the
  /// index dir locked before the upper parent, the global order; the upper verified to be
  /// the one just published). An entry already there (another process) is left alone.
  /// Returns the upper's identity.
  func linkIntoIndex(_ name: [UInt8], in upperParent: LayerDir, as indexName: [UInt8], index: LayerDir, path: [UInt8]) throws(OvlError) -> FileID {
    let shown = describe(path)
    let id = try step("statx", shown) { () throws(Errno) in try upperParent.fd.stat(name).id }
    try withLockedParent(index, child: indexName, expected: nil, path: workPath + "/index/" + indexName.string) { () throws(OvlError) in
      try withLockedParent(upperParent, child: name, expected: id, path: shown) { () throws(OvlError) in
        do throws(Errno) {
          try upperParent.fd.link(name, as: indexName, in: index.fd)
        } catch .fileExists {
        } catch {
          throw .system(call: "linkat", path: workPath + "/index/" + indexName.string, errno: error)
        }
      }
    }
    markDirty(index)
    return id
  }

  /// The kernel's origin: the stored handle of the lower inode, or empty where the lower
  /// filesystem cannot encode handles.
  func originValue(_ lower: RealObject) -> [UInt8] {
    // Without handles it could decode, the kernel records an empty origin (a rootless mount).
    guard caller.canDecodeFileHandles else { return [] }
    if let known = origins[lower.status.id] { return known }
    let value = (try? stack.encodeHandle(lower.parent, lower.name, upper: false).bytes) ?? []
    if !value.isEmpty { origins[lower.status.id] = value }
    return value
  }

  /// `ovl_set_impure`: before any copied-up child appears in a directory.
  func setImpure(_ dir: LayerDir) throws(OvlError) {
    let attribute = namespace.name(.impure)
    let path = describe(dir.path)
    if knownImpure.contains(dir.path) { return }
    if !Impure.isSet(try step("getxattr", path, { () throws(Errno) in try dir.fd.xattr([0x2E], attribute) })) {
      try prepareForChange()
      try withLockedParent(dir, child: [], expected: nil, path: path) { () throws(OvlError) in
        try step("setxattr", path) { () throws(Errno) in try dir.fd.setXattr([0x2E], attribute, Impure.value) }
      }
    }
    knownImpure.insert(dir.path)
  }

  /// Remembers a parent's atime and mtime before this session first changes it; `finish()`
  /// puts them back (`ovl_set_timestamps` after each copy-up in the kernel: the same end
  /// state, one restore per directory instead of one per file).
  func sampleTimes(_ dir: LayerDir) throws(OvlError) {
    guard parentTimes[dir.path] == nil else { return }
    // Each holds a descriptor: past the limit the times are put back now, as `finish()`
    // would (a later copy-up into one of them samples the times put back).
    if parentTimes.count >= heldDirectoryLimit { try restoreParentTimes() }
    let status = try step("statx", describe(dir.path)) { () throws(Errno) in try dir.fd.stat() }
    parentTimes[dir.path] = (dir, status.atime, status.mtime)
  }

  /// `ovl_set_nlink_upper`: the overlay link count relative to the upper inode's. The
  /// caller holds the index dir's lock.
  func setNlink(_ object: RealObject, overlayLinks: Int) throws(OvlError) {
    let path = workPath + "/index/" + object.name.string
    let links = try step("statx", path) { () throws(Errno) in try object.parent.fd.stat(object.name).links }
    let value = NlinkXattr(base: .upper, delta: overlayLinks - Int(links)).value
    try step("setxattr", path) { () throws(Errno) in try object.parent.fd.setXattr(object.name, namespace.name(.nlink), value) }
  }

  /// `ovl_link_up`: link the index entry under this name, then record the link count.
  func linkUp(_ indexed: RealObject, name: [UInt8], into upperParent: LayerDir, path: [UInt8], lowerLinks: Int) throws(OvlError) {
    guard let index else { return }
    try sampleTimes(upperParent)
    try setImpure(upperParent)
    let indexPath = workPath + "/index/" + indexed.name.string
    try InodeLock.whileLocked(indexed, path: indexPath) { () throws(OvlError) in
      // The overlay link count stays what it was: upper links + the stored delta.
      let before = try step("statx", indexPath) { () throws(Errno) in try index.fd.stat(indexed.name) }
      let stored = try step("getxattr", indexPath) { () throws(Errno) in
        try index.fd.xattr(indexed.name, namespace.name(.nlink))
      }
      let overlayLinks = stored.flatMap { NlinkXattr(value: $0) }.flatMap { $0.base == .upper ? Int(before.links) + $0.delta : nil } ?? lowerLinks
      try withLockedParent(index, child: indexed.name, expected: before.id, path: indexPath) { () throws(OvlError) in
        // The count relative to the lower first (a form `ovl_get_nlink` reads for a lower hard
        // link): it stays right whether or not the new link exists, so a crash between the
        // link and the final `U` count cannot show one link too many.
        if lowerLinks > 1 {
          let value = NlinkXattr(base: .lower, delta: overlayLinks - lowerLinks).value
          try step("setxattr", indexPath) { () throws(Errno) in
            try index.fd.setXattr(indexed.name, namespace.name(.nlink), value)
          }
        }
        try withLockedParent(upperParent, child: name, expected: nil, path: describe(path)) { () throws(OvlError) in
          do throws(Errno) {
            try index.fd.link(indexed.name, as: name, in: upperParent.fd)
          } catch .fileExists {
            // Another process linked it up first: done, if it is this inode.
            let there = try step("statx", describe(path)) { () throws(Errno) in try upperParent.fd.statIfPresent(name) }
            guard there?.id == before.id else { throw .staleChild(path: describe(path)) }
            return
          } catch {
            throw .system(call: "linkat", path: describe(path), errno: error)
          }
          try setNlink(indexed, overlayLinks: overlayLinks)
        }
      }
    }
    markDirty(upperParent)
  }
}

/// What one object's copy needs: the lower object, its data, the origin to record.
struct CopyPlan {
  let entry: MergedEntry
  let lower: RealObject
  let origin: [UInt8]?
  let metacopy: Bool
  var status: FileStatus { lower.status }
}
