import COvlSys
import Glibc

/// An owned file descriptor. It closes itself when its owner goes out of scope.
public struct FD: ~Copyable {
  public let rawValue: Int32

  public init(adopting rawValue: Int32) {
    precondition(rawValue >= 0, "adopting an invalid descriptor")
    self.rawValue = rawValue
  }

  deinit { _ = Glibc.close(rawValue) }  // close(2) is never retried on Linux

  /// Closes and reports the error, for write paths where a failed close matters.
  public consuming func close() throws(Errno) {
    let fd = rawValue
    discard self
    if Glibc.close(fd) == -1 { throw Errno(rawValue: errno) }
  }
}

/// A descriptor handed from one thread to another: whoever takes it owns it; if no one
/// does, it closes with the box.
public final class SharedFD: @unchecked Sendable {
  private var fd: FD?

  public init(_ fd: consuming FD) { self.fd = consume fd }

  /// The descriptor, once (nil after the first take). Not for two threads at a time.
  public func take() -> FD? { fd.take() }
}

/// How to open one name in a directory. Every open adds O_CLOEXEC and O_NOFOLLOW: a symlink
/// inside a layer is an entry, never a path to follow.
public struct OpenMode: Sendable {
  public let flags: Int32
  public static let directory = OpenMode(flags: O_RDONLY | O_DIRECTORY)
  public static let readOnly = OpenMode(flags: O_RDONLY)
  public static let writeOnly = OpenMode(flags: O_WRONLY)
  public static let readWrite = OpenMode(flags: O_RDWR)
  /// O_PATH: a handle on the inode itself, whatever its type (symlinks, devices, whiteouts).
  public static let path = OpenMode(flags: covl_O_PATH)
  public static let directoryPath = OpenMode(flags: covl_O_PATH | O_DIRECTORY)
}

extension FD {
  /// Opens one component `name` relative to `dir`. The corresponding C function is `openat`.
  public static func open(_ name: [UInt8], in dir: borrowing FD, _ mode: OpenMode) throws(Errno) -> FD {
    let dirfd = dir.rawValue
    let flags = mode.flags | O_CLOEXEC | O_NOFOLLOW
    let changes = flags & (O_CREAT | O_TRUNC) != 0
    return FD(adopting: try withCString(name) { (cname) throws(Errno) in
      changes ? try changingLayer { Glibc.openat(dirfd, cname, flags, 0) } : try retrying { Glibc.openat(dirfd, cname, flags, 0) }
    })
  }

  /// Opens a host path given by the user (a layer directory), following symlinks in it as
  /// mount(8) does, and requiring a directory.
  public static func openDirectory(atHostPath path: String, pathOnly: Bool = false) throws(Errno) -> FD {
    let flags = (pathOnly ? covl_O_PATH : O_RDONLY) | O_DIRECTORY | O_CLOEXEC
    return FD(adopting: try retrying { Glibc.open(path, flags) })
  }

  /// A duplicate of standard input.
  public static func standardInput() throws(Errno) -> FD {
    FD(adopting: try retrying { Glibc.fcntl(0, F_DUPFD_CLOEXEC, 0) })
  }

  /// Opens a regular host file given by the user (a fixture, a script).
  public static func openFile(atHostPath path: String) throws(Errno) -> FD {
    FD(adopting: try retrying { Glibc.open(path, O_RDONLY | O_CLOEXEC) })
  }

  /// Resolves `path` (components) beneath `dir` without following any symlink and without
  /// leaving `dir`. The corresponding C function is `openat2` with RESOLVE_BENEATH |
  /// RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV.
  /// With `crossingMounts` the path may enter a mount beneath `dir` (containers/storage
  /// bind-mounts its `overlay/` dir on itself).
  public static func open(beneath dir: borrowing FD, path: [UInt8], _ mode: OpenMode, crossingMounts: Bool = false) throws(Errno) -> FD {
    let dirfd = dir.rawValue
    let resolve = covl_RESOLVE_BENEATH | covl_RESOLVE_NO_SYMLINKS | (crossingMounts ? 0 : covl_RESOLVE_NO_XDEV)
    let flags = mode.flags | O_CLOEXEC | O_NOFOLLOW
    return FD(adopting: try withCString(path.isEmpty ? [0x2E] : path) { (cpath) throws(Errno) in
      try retrying { covl_openat2(dirfd, cpath, flags, 0, resolve) }
    })
  }

  /// Reads up to `count` bytes into `buffer`. The corresponding C function is `read`.
  public borrowing func read(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
    let fd = rawValue
    return try retrying { Glibc.read(fd, buffer.baseAddress, buffer.count) }
  }

  /// Reads the whole file from the current offset.
  public borrowing func readAll(limit: Int = Int.max) throws(Errno) -> [UInt8] {
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while result.count < limit {
      let n = try chunk.withMutableBytes { (buffer) throws(Errno) in try read(into: buffer) }
      if n == 0 { break }
      result.append(contentsOf: chunk[0..<n])
    }
    return result
  }

  /// Writes all of `bytes`. The corresponding C function is `write`.
  public borrowing func write(_ bytes: [UInt8]) throws(Errno) {
    try bytes.withBytes { (buffer) throws(Errno) in try write(buffer) }
  }

  /// Writes all of `buffer` into this file of a layer (or of the work dir). The
  /// corresponding C function is `write`.
  public borrowing func write(_ buffer: UnsafeRawBufferPointer) throws(Errno) {
    guard let start = buffer.baseAddress else { return }
    let fd = rawValue
    var offset = 0
    while offset < buffer.count {
      let base = start + offset
      let remaining = buffer.count - offset
      offset += try changingLayer { Glibc.write(fd, base, remaining) }
    }
  }

  /// Reads a symlink's target. The corresponding C function is `readlinkat`.
  public borrowing func readLink(_ name: [UInt8]) throws(Errno) -> [UInt8] {
    let dirfd = rawValue
    var size = 256
    while true {
      var buffer = [UInt8](repeating: 0, count: size)
      let n = try withCString(name) { (cname) throws(Errno) in
        try buffer.withMutableBytes { (raw) throws(Errno) in
          try retrying { Glibc.readlinkat(dirfd, cname, raw.baseAddress!.assumingMemoryBound(to: CChar.self), size) }
        }
      }
      if n < size { return Array(buffer[0..<n]) }
      size *= 4
    }
  }

  /// The corresponding C function is `fsync`.
  public borrowing func sync() throws(Errno) {
    let fd = rawValue
    _ = try retrying { Glibc.fsync(fd) }
  }
}

extension FD {
  /// Creates (or truncates) a host file the user named as output (a layer tar, a blob).
  /// The corresponding C function is `open` with O_CREAT | O_TRUNC.
  public static func createFile(atHostPath path: String, permissions: UInt32 = 0o644) throws(Errno) -> FD {
    FD(adopting: try retrying { Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode_t(permissions)) })
  }

  /// A duplicate of standard output.
  public static func standardOutput() throws(Errno) -> FD {
    FD(adopting: try retrying { Glibc.fcntl(1, F_DUPFD_CLOEXEC, 0) })
  }

  /// Writes all of `buffer` to a descriptor the caller owns (an output stream shared by
  /// C callbacks). The corresponding C function is `write`.
  public static func write(rawDescriptor fd: Int32, _ buffer: UnsafeRawBufferPointer) throws(Errno) {
    guard let start = buffer.baseAddress else { return }
    var offset = 0
    while offset < buffer.count {
      let base = start + offset
      let remaining = buffer.count - offset
      offset += try retrying { Glibc.write(fd, base, remaining) }
    }
  }
}

/// Removes a host file the user named (a partial output). Errors are ignored: it is
/// cleanup after another error. The corresponding C function is `unlink`.
public func removeHostFile(_ path: String) {
  _ = Glibc.unlink(path)
}

/// Makes a host directory the user named (an output upper, a scratch work dir); an
/// existing directory is fine. The corresponding C function is `mkdir`.
public func makeHostDirectory(_ path: String, permissions: UInt32 = 0o755) throws(Errno) {
  do {
    _ = try retrying { Glibc.mkdir(path, mode_t(permissions)) }
  } catch .fileExists {
    let fd = try FD.openDirectory(atHostPath: path, pathOnly: true)
    _ = fd
  }
}

/// Makes a host directory and the missing ones above it (`mkdir -p`), for an output the
/// user named (an OCI image layout). The corresponding C function is `mkdir`.
public func makeHostDirectories(_ path: String, permissions: UInt32 = 0o755) throws(Errno) {
  var prefix = path.hasPrefix("/") ? "/" : ""
  for component in path.split(separator: "/") {
    prefix += (prefix.isEmpty || prefix.hasSuffix("/") ? "" : "/") + component
    if component == "." || component == ".." { continue }
    try makeHostDirectory(prefix, permissions: permissions)
  }
}

/// Renames a host file to `newPath`, replacing what is there atomically (publishing an
/// output written under a temporary name). The corresponding C function is `rename`.
public func renameHostFile(_ path: String, to newPath: String) throws(Errno) {
  _ = try retrying { Glibc.rename(path, newPath) }
}

/// This process's id (for temporary names). The corresponding C function is `getpid`.
public func processID() -> Int32 { Glibc.getpid() }

/// Removes a scratch directory tree this process made (its work dir), without following
/// symlinks. The corresponding C functions are `unlinkat` and `rmdir`.
public func removeHostTree(_ path: String) throws(Errno) {
  let dir = try FD.openDirectory(atHostPath: path)
  try removeContents(dir)
  _ = try retrying { Glibc.rmdir(path) }
}

private func removeContents(_ dir: borrowing FD) throws(Errno) {
  for entry in try dir.entries() {
    let status = try dir.stat(entry.name)
    if status.type == .directory {
      let child = try FD.open(entry.name, in: dir, .directory)
      try removeContents(child)
      try dir.remove(entry.name, directory: true)
    } else {
      try dir.remove(entry.name)
    }
  }
}

extension FD {
  /// Back to the start of a regular file, for a second reading pass. The corresponding C
  /// function is `lseek`.
  public borrowing func seekToStart() throws(Errno) {
    let fd = rawValue
    _ = try retrying { Glibc.lseek(fd, 0, SEEK_SET) }
  }

  /// A copy of everything `source` still has to give (a pipe: standard input) in an
  /// unnamed temporary file of the host's temp dir (`$TMPDIR`, else /tmp), positioned at
  /// its start: the input can then be read twice. The file vanishes with its descriptor.
  /// The corresponding C calls are `open` with O_TMPFILE, `read` and `write`.
  public static func spool(_ source: borrowing FD) throws(Errno) -> FD {
    let dir = getEnvironment("TMPDIR").flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
    let file = FD(adopting: try retrying { Glibc.open(dir, covl_O_TMPFILE | O_RDWR | O_CLOEXEC, 0o600) })
    let capacity = 1 << 20
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64)
    defer { buffer.deallocate() }
    while true {
      let n = try source.read(into: buffer)
      if n == 0 { break }
      try FD.write(rawDescriptor: file.rawValue, UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
    }
    try file.seekToStart()
    return file
  }
}

extension FD {
  /// The first `count` bytes of a regular file the caller owns, read without moving its
  /// offset; nil for anything else (a pipe, a device). The corresponding C functions are
  /// `fstat` and `pread`.
  public static func peekRegularFile(rawDescriptor fd: Int32, count: Int) -> [UInt8]? {
    var status = Glibc.stat()
    guard Glibc.fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG else { return nil }
    var bytes = [UInt8](repeating: 0, count: count)
    let n = bytes.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, count, 0) }
    guard n >= 0 else { return nil }
    return Array(bytes[0..<n])
  }
}
