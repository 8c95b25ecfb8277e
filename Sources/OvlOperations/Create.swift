import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

/// What `create` makes.
public enum NewObject: Sendable {
  case directory
  case symlink(target: [UInt8])
  /// A fifo, character or block device.
  case node(FileType, major: UInt32, minor: UInt32)

  var type: FileType {
    switch self {
    case .directory: .directory
    case .symlink: .symlink
    case .node(let type, _, _): type
    }
  }
}

/// Where `put` takes a file's contents from.
public enum FileContents: Sendable {
  case bytes([UInt8])
  /// A file on the host, copied with copy_file_range (reflinked where the filesystem can).
  case hostFile(String)
  /// A regular file of the merged view.
  case merged([UInt8])
}

extension WriteSession {
  /// mkdir(2), symlink(2), mknod(2) on the merged view (`ovl_create_object`). `permissions`
  /// nil: the default (0777/0666) less the umask. `parents`: mkdir -p (existing
  /// directories are fine, missing ones are made). `attributes`: an owner, xattrs and times
  /// the object is built with (a layer's entry), set before it gets its name where it is
  /// built in the work dir; its `permissions` are not used (`permissions` is the mode).
  public func create(
    _ path: [UInt8], _ object: NewObject, permissions: UInt32? = nil, parents: Bool = false, attributes: ObjectAttributes = ObjectAttributes()
  ) throws(OvlError) {
    try create(try parse(path), object, permissions: permissions, parents: parents, attributes: attributes)
  }

  public func create(
    _ path: MergedPath, _ object: NewObject, permissions: UInt32? = nil, parents: Bool = false, attributes: ObjectAttributes = ObjectAttributes()
  ) throws(OvlError) {
    try change { () throws(OvlError) in
      if parents, case .directory = object {
        let depthOfPath = path.depth
        for depth in 1...max(depthOfPath, 1) where depth <= depthOfPath {
          let target = try locate(path.prefix(depth))
          if let entry = target.entry {
            if !entry.isDirectory { throw .format(path: target.shown, reason: "exists and is not a directory", errno: .fileExists) }
            continue
          }
          let last = depth == depthOfPath
          try createObject(target, object, requested: last ? permissions : nil, default: 0o777, attributes: last ? attributes : ObjectAttributes())
        }
        return
      }
      switch object {
      case .directory: try createObject(try locate(path), object, requested: permissions, default: 0o777, attributes: attributes)
      case .symlink: try createObject(try locate(path), object, requested: 0o777, default: 0o777, attributes: attributes)
      case .node: try createObject(try locate(path), object, requested: permissions, default: 0o666, attributes: attributes)
      }
    }
  }

  /// Writes a regular file: a new one is created (published complete, never half-written);
  /// an existing one is copied up and rewritten in place (open with O_TRUNC keeps its inode,
  /// its hard links and its xattrs, as on a mount).
  public func put(_ path: [UInt8], contents: FileContents, attributes: ObjectAttributes = ObjectAttributes()) throws(OvlError) {
    try put(try parse(path), contents: contents, attributes: attributes)
  }

  public func put(_ path: MergedPath, contents: FileContents, attributes: ObjectAttributes = ObjectAttributes()) throws(OvlError) {
    try change { () throws(OvlError) in
      // The source is checked before anything is created or truncated: a bad source must
      // not cost the old contents.
      try checkSource(contents)
      let target = try locate(path)
      guard let entry = target.entry else {
        try createRegular(target, contents: contents, attributes: attributes)
        return
      }
      switch entry.status.type {
      case .regular: break
      case .directory: throw .format(path: target.shown, reason: "is a directory", errno: .isDirectory)
      case .symlink: throw .format(path: target.shown, reason: "is a symlink (put does not follow symlinks)", errno: .tooManySymbolicLinkLevels)
      default: throw .format(path: target.shown, reason: "not a regular file", errno: .invalidArgument)
      }
      try prepareForChange()
      _ = try copyUp(path, metacopy: false)
      let current = try relocate(target)
      guard let upperObject = current.entry?.upper else {
        throw .format(path: target.shown, reason: "no upper file after copy-up", errno: .ioError)
      }
      let where_ = describe(current.path)
      // Truncated and rewritten under the parent's lock, the file verified to be the one
      // copied up.
      try withLockedParent(upperObject.parent, child: upperObject.name, expected: upperObject.status.id, path: where_) { () throws(OvlError) in
        let file = try step("open", where_) { () throws(Errno) in try upperObject.open(.truncatingWrite) }
        try write(contents, to: file, where_)
        try located(where_) { () throws(FailedCall) in try attributes.apply(to: file) }
      }
      markDirty(upperObject.parent)
    }
  }

  /// `inode_init_owner`: a new object belongs to the caller; in a setgid directory it gets
  /// the directory's group, and a new directory inherits the setgid bit — unless a mode was
  /// given (`-m` sets exactly that mode, as a chmod after the creation would).
  private func newOwner(_ parent: LayerDir, isDirectory: Bool, permissions: UInt32, exact: Bool) throws(OvlError) -> (uid: UInt32, gid: UInt32, permissions: UInt32) {
    let status = try step("statx", describe(parent.path)) { () throws(Errno) in try parent.fd.stat() }
    let setgid: UInt32 = 0o2000
    guard status.permissions & setgid != 0 else { return (caller.uid, caller.gid, permissions) }
    return (caller.uid, status.gid, isDirectory && !exact ? permissions | setgid : permissions)
  }

  /// `ovl_create_upper` / `ovl_create_over_whiteout` for a directory, symlink or special
  /// file: made in place on a free name; over a whiteout built complete under a temp name
  /// in the temp dir, then renamed over it (a directory by exchange, marked opaque, the
  /// whiteout then removed).
  private func createObject(_ target: Target, _ object: NewObject, requested: UInt32?, default: UInt32, attributes given: ObjectAttributes) throws(OvlError) {
    if target.entry != nil { throw .format(path: target.shown, reason: "file exists", errno: .fileExists) }
    // mknod(2)'s own check comes before anything is copied up.
    if case .node(let type, _, _) = object, type == .character || type == .block, !caller.canMakeDevices {
      throw .format(path: target.shown, reason: "device nodes need CAP_MKNOD in the initial user namespace", errno: .notPermitted)
    }
    let (current, upperParent) = try withUpperParent(target)
    if current.entry != nil { throw .format(path: target.shown, reason: "file exists", errno: .fileExists) }
    let path = describe(current.path)
    let whiteout = try upperWhiteout(current.name, in: upperParent)
    let isDirectory = object.type == .directory
    let isSymlink = object.type == .symlink
    let initial = try newObjectMode(in: upperParent, requested: requested, default: `default`, isDirectory: isDirectory, isSymlink: isSymlink)
    let owner = try newOwner(upperParent, isDirectory: isDirectory, permissions: initial.permissions, exact: requested != nil)
    guard let whiteout else {
      try createDirectly(current, object, in: upperParent, attributes: settled(given, owner), path: path)
      return
    }

    let temp = temporaryName()
    let tempPath = workPath + "/" + temp.string
    try step("create", tempPath) { () throws(Errno) in
      switch object {
      case .directory: try tempDir.fd.makeDirectory(temp, permissions: 0)
      case .symlink(let link): try tempDir.fd.makeSymlink(temp, target: link)
      case .node(let type, let major, let minor): try tempDir.fd.makeNode(temp, type: type, permissions: 0, major: major, minor: minor)
      }
    }
    let entry = TempEntry(dir: tempDir, name: temp, isDirectory: isDirectory)
    var attributes = settled(given, owner)
    // The parent's default ACL, which the kernel applies to the object it builds in the
    // work dir (`ovl_set_upper_acl`).
    attributes.inherited = initial.xattrs
    // Over a whiteout a new directory is opaque: it must hide what the whiteout hid.
    if isDirectory { attributes.xattrs.insert((namespace.name(.opaque), Opaque.opaque.value), at: 0) }
    let made = ObjectAttributes.Created(owner: (caller.uid, caller.gid), permissions: 0)
    try located(tempPath) { () throws(FailedCall) in try attributes.apply(to: temp, in: tempDir.fd, type: object.type, created: made) }
    try publishOverWhiteout(entry, as: current.name, in: upperParent, whiteout: whiteout, path: path)
    forgetDirectories(under: current.path)
    touched(upperParent)
  }

  /// The attributes a new object gets: the given ones, its mode, and the owner given or
  /// the one `inode_init_owner` decided.
  private func settled(_ given: ObjectAttributes, _ owner: (uid: UInt32, gid: UInt32, permissions: UInt32)) -> ObjectAttributes {
    var attributes = given
    attributes.owner = given.owner ?? (owner.uid, owner.gid)
    attributes.permissions = owner.permissions
    return attributes
  }

  /// `ovl_create_upper`: on a free name the object is made in place, as the kernel makes
  /// it; only a mode the umask cut (or a setgid bit inherited against `-m`), the opaque
  /// mark (the kernel's own "best effort": a name that was free hides nothing) and the
  /// given attributes follow.
  private func createDirectly(
    _ target: Target, _ object: NewObject, in upperParent: LayerDir, attributes given: ObjectAttributes, path: String
  ) throws(OvlError) {
    let name = target.name
    try makeInPlace(object, name, in: upperParent, permissions: given.permissions ?? 0, path: path, shown: target.shown)
    let status = try step("statx", path) { () throws(Errno) in try upperParent.fd.stat(name) }
    var attributes = given
    if object.type == .directory && marksNewDirectoryOpaque(inMerged: target.parent.isMerge) {
      attributes.xattrs.insert((namespace.name(.opaque), Opaque.opaque.value), at: 0)
    }
    let made = ObjectAttributes.Created(owner: (status.uid, status.gid), permissions: status.permissions)
    try located(path) { () throws(FailedCall) in try attributes.apply(to: name, in: upperParent.fd, type: object.type, created: made) }
    forgetDirectories(under: target.path)
    touched(upperParent)
  }

  /// mkdir, symlink or mknod of `name` in `parent` under the parent's lock, as the kernel
  /// makes an object on a free name: `create` and the bulk path make them here. A name taken
  /// meanwhile is EEXIST ("file exists", at `shown`, the merged path).
  func makeInPlace(_ object: NewObject, _ name: [UInt8], in parent: LayerDir, permissions: UInt32, path: String, shown: String) throws(OvlError) {
    try withLockedParent(parent, child: name, expected: nil, path: path) { () throws(OvlError) in
      do throws(Errno) {
        switch object {
        case .directory: try parent.fd.makeDirectory(name, permissions: permissions)
        case .symlink(let link): try parent.fd.makeSymlink(name, target: link)
        case .node(let type, let major, let minor): try parent.fd.makeNode(name, type: type, permissions: permissions, major: major, minor: minor)
        }
      } catch .fileExists {
        throw .format(path: shown, reason: "file exists", errno: .fileExists)
      } catch {
        throw .system(call: "create", path: path, errno: error)
      }
    }
  }

  /// `ovl_allow_offline_changes`: none of the features that record lower identities.
  var allowsOfflineChanges: Bool {
    let o = stack.options
    return !o.index && !o.metacopy && o.redirectMode != .on && o.xino != .on
  }

  /// `ovl_create_upper`: a directory made on a free name in a merged directory is marked
  /// opaque where the stack records lower identities (the kernel's own "best effort").
  func marksNewDirectoryOpaque(inMerged parentIsMerge: Bool) -> Bool {
    parentIsMerge && !allowsOfflineChanges
  }

  /// A new regular file: an O_TMPFILE in the temp dir gets the data, owner, mode and times,
  /// is made durable, then gets its name — directly on a free name, through a temp name and
  /// a rename over a whiteout.
  private func createRegular(_ target: Target, contents: FileContents, attributes: ObjectAttributes) throws(OvlError) {
    let (current, upperParent) = try withUpperParent(target)
    if current.entry != nil { throw .format(path: target.shown, reason: "file exists", errno: .fileExists) }
    let path = describe(current.path)
    let whiteout = try upperWhiteout(current.name, in: upperParent)
    let initial = try newObjectMode(in: upperParent, requested: attributes.permissions, default: 0o666, isDirectory: false, isSymlink: false)
    let owner = try newOwner(upperParent, isDirectory: false, permissions: initial.permissions, exact: true)
    let file = try step("open(O_TMPFILE)", workPath) { () throws(Errno) in try tempDir.fd.openTemporaryFile(permissions: 0) }
    try write(contents, to: file, path)
    var complete = settled(attributes, owner)
    complete.inherited = initial.xattrs
    try located(path) { () throws(FailedCall) in try complete.apply(to: file) }
    try step("fsync", path) { () throws(Errno) in try file.sync() }
    if whiteout == nil {
      try withLockedParent(upperParent, child: current.name, expected: nil, path: path) { () throws(OvlError) in
        try step("linkat", path) { () throws(Errno) in try file.link(as: current.name, in: upperParent.fd) }
      }
    } else if let whiteout {
      try publishOverWhiteout(try work.name(file), as: current.name, in: upperParent, whiteout: whiteout, path: path)
    }
    touched(upperParent)
  }

  private func checkSource(_ contents: FileContents) throws(OvlError) {
    switch contents {
    case .bytes: return
    case .hostFile(let source):
      let input = try step("open", source) { () throws(Errno) in try FD.openFile(atHostPath: source) }
      let type = try step("fstat", source) { () throws(Errno) in try input.stat().type }
      if type == .directory { throw .format(path: source, reason: "the source is a directory", errno: .isDirectory) }
    case .merged(let source):
      guard let entry = try locate(try parse(source)).entry else {
        throw .format(path: source.string, reason: "no such file or directory", errno: .noSuchFileOrDirectory)
      }
      if entry.status.type != .regular { throw .format(path: source.string, reason: "the source is not a regular file", errno: .invalidArgument) }
    }
  }

  private func write(_ contents: FileContents, to file: borrowing FD, _ path: String) throws(OvlError) {
    switch contents {
    case .bytes(let bytes):
      try step("write", path) { () throws(Errno) in try file.write(bytes) }
    case .hostFile(let source):
      let input = try step("open", source) { () throws(Errno) in try FD.openFile(atHostPath: source) }
      let status = try step("fstat", source) { () throws(Errno) in try input.stat() }
      if status.type == .regular {
        _ = try step("copy", path) { () throws(Errno) in try file.copyData(from: input, size: status.size) }
      } else {
        // A pipe or a device (`<(command)`, /dev/null): read to the end.
        let bytes = try step("read", source) { () throws(Errno) in try input.readAll() }
        try step("write", path) { () throws(Errno) in try file.write(bytes) }
      }
    case .merged(let source):
      guard let entry = try locate(try parse(source)).entry else {
        throw .format(path: source.string, reason: "no such file or directory", errno: .noSuchFileOrDirectory)
      }
      let input = try stack.openData(entry)
      _ = try step("copy", path) { () throws(Errno) in try file.copyData(from: input, size: entry.status.size) }
    }
  }
}
