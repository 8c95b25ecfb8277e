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
}

/// Where `put` takes a file's contents from.
public enum FileContents: Sendable {
  case bytes([UInt8])
  /// A file on the host, copied with copy_file_range (reflinked where the filesystem can).
  case hostFile(String)
  /// A regular file of the merged view.
  case merged([UInt8])
}

/// Attributes `put` sets after writing (nil: left as creation or the old file left them).
public struct PutAttributes: Sendable {
  public var permissions: UInt32?
  public var owner: (uid: UInt32, gid: UInt32)?
  public var mtime: Int64?
  public init(permissions: UInt32? = nil, owner: (uid: UInt32, gid: UInt32)? = nil, mtime: Int64? = nil) {
    self.permissions = permissions
    self.owner = owner
    self.mtime = mtime
  }
}

extension WriteSession {
  /// mkdir(2), symlink(2), mknod(2) on the merged view (`ovl_create_object`). `permissions`
  /// nil: the default (0777/0666) less the umask. `parents`: mkdir -p (existing
  /// directories are fine, missing ones are made).
  public func create(_ path: [UInt8], _ object: NewObject, permissions: UInt32? = nil, parents: Bool = false) throws(OvlError) {
    let components = try components(path)
    try change { () throws(OvlError) in
      if parents, case .directory = object {
        for depth in 1...max(components.count, 1) where depth <= components.count {
          let target = try locate(Array(components[..<depth]))
          if let entry = target.entry {
            if !entry.isDirectory { throw .format(path: target.shown, reason: "exists and is not a directory", errno: .fileExists) }
            continue
          }
          let requested = depth == components.count ? permissions : nil
          try createObject(target, object, requested: requested, default: 0o777)
        }
        return
      }
      switch object {
      case .directory: try createObject(try locate(components), object, requested: permissions, default: 0o777)
      case .symlink: try createObject(try locate(components), object, requested: 0o777, default: 0o777)
      case .node: try createObject(try locate(components), object, requested: permissions, default: 0o666)
      }
    }
  }

  /// Writes a regular file: a new one is created (published complete, never half-written);
  /// an existing one is copied up and rewritten in place (open with O_TRUNC keeps its inode,
  /// its hard links and its xattrs, as on a mount).
  public func put(_ path: [UInt8], contents: FileContents, attributes: PutAttributes = PutAttributes()) throws(OvlError) {
    let components = try components(path)
    try change { () throws(OvlError) in
      // The source is checked before anything is created or truncated: a bad source must
      // not cost the old contents.
      try checkSource(contents)
      let target = try locate(components)
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
      _ = try copyUp(Array(components.joined(separator: [UInt8(ascii: "/")])), metacopy: false)
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
        try apply(attributes, to: file, where_)
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
  private func createObject(_ target: Target, _ object: NewObject, requested: UInt32?, default: UInt32) throws(OvlError) {
    if target.entry != nil { throw .format(path: target.shown, reason: "file exists", errno: .fileExists) }
    // mknod(2)'s own check comes before anything is copied up.
    if case .node(let type, _, _) = object, type == .character || type == .block, !caller.canMakeDevices {
      throw .format(path: target.shown, reason: "device nodes need CAP_MKNOD in the initial user namespace", errno: .notPermitted)
    }
    let (current, upperParent) = try withUpperParent(target)
    if current.entry != nil { throw .format(path: target.shown, reason: "file exists", errno: .fileExists) }
    let path = describe(current.path)
    let whiteout = try upperWhiteout(current.name, in: upperParent)
    var isDirectory = false
    if case .directory = object { isDirectory = true }
    var isSymlink = false
    if case .symlink = object { isSymlink = true }
    let initial = try newObjectMode(in: upperParent, requested: requested, default: `default`, isDirectory: isDirectory, isSymlink: isSymlink)
    let owner = try newOwner(upperParent, isDirectory: isDirectory, permissions: initial.permissions, exact: requested != nil)
    guard let whiteout else {
      try createDirectly(current, object, in: upperParent, owner: owner, path: path)
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
    if owner.uid != caller.uid || owner.gid != caller.gid {
      try step("fchownat", tempPath) { () throws(Errno) in try tempDir.fd.changeOwner(temp, uid: owner.uid, gid: owner.gid) }
    }
    // The parent's default ACL, which the kernel applies to the object it builds in the
    // work dir (`ovl_set_upper_acl`), before the mode (a chmod then cuts the ACL's mask).
    for (name, value) in initial.xattrs {
      try step("setxattr", tempPath) { () throws(Errno) in try tempDir.fd.setXattr(temp, name, value) }
    }
    if case .symlink = object {} else {
      try step("fchmodat", tempPath) { () throws(Errno) in try tempDir.fd.changeMode(temp, permissions: owner.permissions) }
    }
    // Over a whiteout a new directory is opaque: it must hide what the whiteout hid.
    if isDirectory {
      try step("setxattr", tempPath) { () throws(Errno) in try tempDir.fd.setXattr(temp, namespace.name(.opaque), Opaque.opaque.value) }
    }
    try publishOverWhiteout(entry, as: current.name, in: upperParent, whiteout: whiteout, path: path)
    forgetDirectories(under: current.path)
    touched(upperParent)
  }

  /// `ovl_create_upper`: on a free name the object is made in place, as the kernel makes
  /// it; only a mode the umask cut (or a setgid bit inherited against `-m`) and the opaque
  /// mark follow (the kernel's own "best effort": a name that was free hides nothing).
  private func createDirectly(
    _ target: Target, _ object: NewObject, in upperParent: LayerDir, owner: (uid: UInt32, gid: UInt32, permissions: UInt32), path: String
  ) throws(OvlError) {
    let name = target.name
    try withLockedParent(upperParent, child: name, expected: nil, path: path) { () throws(OvlError) in
      do throws(Errno) {
        switch object {
        case .directory: try upperParent.fd.makeDirectory(name, permissions: owner.permissions)
        case .symlink(let link): try upperParent.fd.makeSymlink(name, target: link)
        case .node(let type, let major, let minor):
          try upperParent.fd.makeNode(name, type: type, permissions: owner.permissions, major: major, minor: minor)
        }
      } catch .fileExists {
        throw .format(path: target.shown, reason: "file exists", errno: .fileExists)
      } catch {
        throw .system(call: "create", path: path, errno: error)
      }
    }
    let status = try step("statx", path) { () throws(Errno) in try upperParent.fd.stat(name) }
    if status.uid != owner.uid || status.gid != owner.gid {
      try step("fchownat", path) { () throws(Errno) in try upperParent.fd.changeOwner(name, uid: owner.uid, gid: owner.gid) }
    }
    var isDirectory = false
    if case .directory = object { isDirectory = true }
    if case .symlink = object {} else if status.permissions != owner.permissions {
      try step("fchmodat", path) { () throws(Errno) in try upperParent.fd.changeMode(name, permissions: owner.permissions) }
    }
    if isDirectory && marksNewDirectoryOpaque(inMerged: target.parent.isMerge) {
      try step("setxattr", path) { () throws(Errno) in try upperParent.fd.setXattr(name, namespace.name(.opaque), Opaque.opaque.value) }
    }
    forgetDirectories(under: target.path)
    touched(upperParent)
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
  private func createRegular(_ target: Target, contents: FileContents, attributes: PutAttributes) throws(OvlError) {
    let (current, upperParent) = try withUpperParent(target)
    if current.entry != nil { throw .format(path: target.shown, reason: "file exists", errno: .fileExists) }
    let path = describe(current.path)
    let whiteout = try upperWhiteout(current.name, in: upperParent)
    let initial = try newObjectMode(in: upperParent, requested: attributes.permissions, default: 0o666, isDirectory: false, isSymlink: false)
    let owner = try newOwner(upperParent, isDirectory: false, permissions: initial.permissions, exact: true)
    let file = try step("open(O_TMPFILE)", workPath) { () throws(Errno) in try tempDir.fd.openTemporaryFile(permissions: 0) }
    try write(contents, to: file, path)
    var settled = attributes
    settled.owner = attributes.owner ?? (owner.uid, owner.gid)
    settled.permissions = owner.permissions
    try apply(settled, to: file, path, xattrs: initial.xattrs)
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
      guard let entry = try locate(try components(source)).entry else {
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
      guard let entry = try locate(try components(source)).entry else {
        throw .format(path: source.string, reason: "no such file or directory", errno: .noSuchFileOrDirectory)
      }
      let input = try stack.openData(entry)
      _ = try step("copy", path) { () throws(Errno) in try file.copyData(from: input, size: entry.status.size) }
    }
  }

  /// Owner before mode (a chown clears setuid bits), an inherited ACL before the mode (a
  /// chmod then cuts its mask), times last (writes stamp them).
  private func apply(_ attributes: PutAttributes, to file: borrowing FD, _ path: String, xattrs: [([UInt8], [UInt8])] = []) throws(OvlError) {
    if let owner = attributes.owner {
      try step("fchown", path) { () throws(Errno) in try file.changeOwner(uid: owner.uid, gid: owner.gid) }
    }
    for (name, value) in xattrs {
      try step("fsetxattr", path) { () throws(Errno) in try file.setXattr(name, value) }
    }
    if let permissions = attributes.permissions {
      try step("fchmod", path) { () throws(Errno) in try file.changeMode(permissions: permissions) }
    }
    if let mtime = attributes.mtime {
      try step("futimens", path) { () throws(Errno) in try file.setTimes(atime: mtime, mtime: mtime) }
    }
  }
}
