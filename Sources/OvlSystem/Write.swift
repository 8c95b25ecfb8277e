import CAttr
import COvlSys
import Glibc

/// Flags of `renameat2(2)`.
public struct RenameFlags: OptionSet, Sendable {
  public let rawValue: UInt32
  public init(rawValue: UInt32) { self.rawValue = rawValue }
  public static let noReplace = RenameFlags(rawValue: covl_RENAME_NOREPLACE)
  public static let exchange = RenameFlags(rawValue: covl_RENAME_EXCHANGE)
  public static let whiteout = RenameFlags(rawValue: covl_RENAME_WHITEOUT)
}

/// Inode flags that overlay copy-up looks at (`FS_IOC_GETFLAGS`).
public struct InodeFlags: OptionSet, Sendable {
  public let rawValue: UInt32
  public init(rawValue: UInt32) { self.rawValue = rawValue }
  public static let appendOnly = InodeFlags(rawValue: covl_FS_APPEND_FL)
  public static let immutable = InodeFlags(rawValue: covl_FS_IMMUTABLE_FL)
  public static let noAtime = InodeFlags(rawValue: covl_FS_NOATIME_FL)
  public static let sync = InodeFlags(rawValue: covl_FS_SYNC_FL)
}

extension FD {
  /// An unnamed regular file in this directory. The corresponding C call is `openat` with
  /// O_TMPFILE.
  public borrowing func openTemporaryFile(permissions: UInt32) throws(Errno) -> FD {
    let dirfd = rawValue
    return FD(adopting: try changingLayer { Glibc.openat(dirfd, ".", covl_O_TMPFILE | O_RDWR | O_CLOEXEC, mode_t(permissions)) })
  }

  /// Gives this O_TMPFILE file the name `name` in `dir`. The corresponding C call is
  /// `linkat(fd, "", dir, name, AT_EMPTY_PATH)` (needs CAP_DAC_READ_SEARCH), else `linkat`
  /// of `/proc/self/fd/N` with AT_SYMLINK_FOLLOW.
  public borrowing func link(as name: [UInt8], in dir: borrowing FD) throws(Errno) {
    let fd = rawValue
    let dirfd = dir.rawValue
    // Decided once per process (`Credentials.emptyPathLinks`), not retried for every file.
    if Credentials.emptyPathLinks.load(ordering: .relaxed) != 2 {
      do {
        _ = try withCString(name) { (n) throws(Errno) in try changingLayer { Glibc.linkat(fd, "", dirfd, n, covl_AT_EMPTY_PATH) } }
        Credentials.emptyPathLinks.store(1, ordering: .relaxed)
        return
      } catch let e where (e == .noSuchFileOrDirectory || e == .notPermitted) && Credentials.emptyPathLinks.load(ordering: .relaxed) == 0 {
        // Without the capability the kernel answers ENOENT: go through /proc from now on.
        Credentials.emptyPathLinks.store(2, ordering: .relaxed)
      }
    }
    let source = Array("/proc/self/fd/\(fd)".utf8)
    _ = try withCString(source) { (s) throws(Errno) in
      try withCString(name) { (n) throws(Errno) in try changingLayer { Glibc.linkat(AT_FDCWD, s, dirfd, n, AT_SYMLINK_FOLLOW) } }
    }
  }

  /// Renames `name` in this directory to `newName` in `newDirectory`. The corresponding C
  /// function is `renameat2`.
  public borrowing func rename(_ name: [UInt8], to newName: [UInt8], in newDirectory: borrowing FD, flags: RenameFlags = []) throws(Errno) {
    let olddir = rawValue
    let newdir = newDirectory.rawValue
    _ = try withCString(name) { (o) throws(Errno) in
      try withCString(newName) { (n) throws(Errno) in try changingLayer { covl_renameat2(olddir, o, newdir, n, flags.rawValue) } }
    }
  }

  /// Removes `name` (a directory with `directory`). The corresponding C function is `unlinkat`.
  public borrowing func remove(_ name: [UInt8], directory: Bool = false) throws(Errno) {
    let dirfd = rawValue
    _ = try withCString(name) { (c) throws(Errno) in try changingLayer { Glibc.unlinkat(dirfd, c, directory ? AT_REMOVEDIR : 0) } }
  }

  /// Removes attribute `attribute` of `name` (ENODATA when absent).
  public borrowing func removeXattr(_ name: [UInt8], _ attribute: [UInt8]) throws(Errno) {
    let procPath = Array("/proc/self/fd/\(rawValue)/".utf8) + name
    _ = try withCString(procPath) { (p) throws(Errno) in
      try withCString(attribute) { (a) throws(Errno) in try changingLayer { lremovexattr(p, a) } }
    }
  }

  /// Sets atime and mtime (ns) of `name`, not following symlinks.
  public borrowing func setTimes(_ name: [UInt8], atime: Int64, mtime: Int64) throws(Errno) {
    let dirfd = rawValue
    let times = [Self.timespec(atime), Self.timespec(mtime)]
    _ = try withCString(name) { (c) throws(Errno) in try changingLayer { Glibc.utimensat(dirfd, c, times, AT_SYMLINK_NOFOLLOW) } }
  }

  static func timespec(_ ns: Int64) -> Glibc.timespec {
    Glibc.timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))
  }

  /// The inode flags of this (regular or directory) descriptor; none where the filesystem
  /// has no such flags.
  public borrowing func inodeFlags() -> InodeFlags {
    var flags: UInt32 = 0
    guard covl_get_inode_flags(rawValue, &flags) == 0 else { return [] }
    return InodeFlags(rawValue: flags)
  }

  /// The corresponding C call is `ioctl(FS_IOC_SETFLAGS)`.
  public borrowing func setInodeFlags(_ flags: InodeFlags) throws(Errno) {
    let fd = rawValue
    _ = try changingLayer { covl_set_inode_flags(fd, flags.rawValue) }
  }

  /// The corresponding C function is `ftruncate`.
  public borrowing func truncate(size: UInt64) throws(Errno) {
    let fd = rawValue
    _ = try changingLayer { Glibc.ftruncate(fd, off_t(size)) }
  }

  /// An exclusive `flock` on this descriptor (a directory opened for reading), held until
  /// `unlock` or until the descriptor closes.
  public borrowing func lock() throws(Errno) {
    let fd = rawValue
    _ = try retrying { covl_flock(fd, 1) }
  }

  public borrowing func unlock() {
    _ = covl_flock(rawValue, 0)
  }

  /// A shared or exclusive `flock`; with `wait` false, false where another descriptor
  /// holds a conflicting lock (EWOULDBLOCK) instead of waiting for it.
  public borrowing func lock(shared: Bool, wait: Bool) throws(Errno) -> Bool {
    let fd = rawValue
    do {
      _ = try retrying { covl_flock_mode(fd, shared ? 1 : 0, wait ? 0 : 1) }
      return true
    } catch .wouldBlock {
      return false
    }
  }
}

extension FD {
  /// A shared (F_RDLCK) or exclusive (F_WRLCK) fcntl record lock on the whole file, as
  /// containers/storage takes its lock files; with `wait` false, false where another
  /// process holds a conflicting lock instead of waiting. A record lock belongs to the
  /// process and goes with any close of the file: keep one descriptor per lock file.
  /// The corresponding C function is `fcntl` with F_SETLKW (F_SETLK).
  public borrowing func recordLock(shared: Bool, wait: Bool) throws(Errno) -> Bool {
    let fd = rawValue
    do {
      _ = try retrying { covl_record_lock(fd, shared ? 1 : 0, wait ? 1 : 0) }
      return true
    } catch .wouldBlock {
      return false
    } catch .permissionDenied {
      return false
    }
  }
}

/// How data was copied.
public enum DataCopyMethod: String, Sendable { case clone, copyFileRange = "copy_file_range", readWrite = "read_write", none }

extension FD {
  /// Copies `size` bytes of `source` into this (empty) file: a reflink where the filesystem
  /// can, else `copy_file_range` over the data extents only (holes stay holes), else read
  /// and write. The file is then extended to `size`.
  ///
  /// `tryClone: false` skips the reflink attempt (a caller that saw it fail on this
  /// filesystem pair).
  public borrowing func copyData(
    from source: borrowing FD, size: UInt64, tryClone: Bool = true, mayHaveHoles: Bool = true
  ) throws(Errno) -> DataCopyMethod {
    if size == 0 { return .none }
    let out = rawValue
    let input = source.rawValue
    if tryClone, (try? changingLayer { covl_ficlone(out, input) }) != nil { return .clone }
    var method = DataCopyMethod.copyFileRange
    var offset = 0
    let end = Int(size)
    var copied = 0
    while offset < end {
      // The next data extent; a file without holes is one extent.
      guard mayHaveHoles else {
        while offset < end {
          let n = try copyChunk(from: input, to: out, offset: offset, count: end - offset, method: &method)
          if n == 0 { break }
          offset += n
          copied += n
        }
        break
      }
      let dataStart = Glibc.lseek(input, offset, covl_SEEK_DATA)
      if dataStart < 0 {
        if errno == ENXIO { break }  // only a hole is left
        throw Errno(rawValue: errno)
      }
      var dataEnd = Glibc.lseek(input, dataStart, covl_SEEK_HOLE)
      if dataEnd < 0 || dataEnd > end { dataEnd = end }
      var position = dataStart
      while position < dataEnd {
        let n = try copyChunk(from: input, to: out, offset: position, count: dataEnd - position, method: &method)
        if n == 0 { break }
        position += n
        copied += n
      }
      offset = dataEnd
    }
    // Holes at the end (or a file that shrank) still need the size.
    if copied != end || mayHaveHoles { try truncate(size: size) }
    return method
  }

  /// One `copy_file_range` (or, where it cannot work, read/write) of up to 1 GiB at
  /// `offset`; 0 at the end of the source.
  private borrowing func copyChunk(from input: Int32, to out: Int32, offset: Int, count: Int, method: inout DataCopyMethod) throws(Errno) -> Int {
    let chunk = min(count, 1 << 30)
    if method == .copyFileRange {
      do throws(Errno) {
        return try changingLayer { covl_copy_file_range(input, Int64(offset), out, Int64(offset), chunk) }
      } catch let e where e == .improperLink || e == .invalidArgument || e == .notSupported || e == .noFunction || e == .badFileDescriptor {
        method = .readWrite
      }
    }
    return try copyByReadWrite(from: input, to: out, offset: offset, count: chunk)
  }

  private borrowing func copyByReadWrite(from input: Int32, to out: Int32, offset: Int, count: Int) throws(Errno) -> Int {
    let capacity = min(count, 1 << 20)
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
    defer { buffer.deallocate() }
    let n = try retrying { Glibc.pread(input, buffer, capacity, off_t(offset)) }
    if n == 0 { return 0 }  // the file shrank: stop at its end
    var written = 0
    while written < n {
      written += try changingLayer { Glibc.pwrite(out, buffer + written, n - written, off_t(offset) + off_t(written)) }
    }
    return n
  }

  /// Extended attribute names of this open file (`flistxattr`).
  public borrowing func xattrNames() throws(Errno) -> [[UInt8]] {
    let fd = rawValue
    return attributeNames(try readGrowing(initialSize: 1024, limit: nil) { (raw) throws(Errno) in
      try retrying { flistxattr(fd, raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count) }
    })
  }

  /// Sets an attribute of this open file (`fsetxattr`).
  public borrowing func setXattr(_ attribute: [UInt8], _ value: [UInt8]) throws(Errno) {
    let fd = rawValue
    _ = try withCString(attribute) { (a) throws(Errno) in
      try value.withBytes { (raw) throws(Errno) in try changingLayer { fsetxattr(fd, a, raw.baseAddress, raw.count, 0) } }
    }
  }

  /// Removes an attribute of this open file (`fremovexattr`).
  public borrowing func removeXattr(_ attribute: [UInt8]) throws(Errno) {
    let fd = rawValue
    _ = try withCString(attribute) { (a) throws(Errno) in try changingLayer { fremovexattr(fd, a) } }
  }
}

/// `/etc/xattr.conf` through libattr: whether copying should skip `name` (e.g.
/// `security.evm`). ACLs (`permissions` entries) are copied.
public func xattrCopySkips(_ name: [UInt8]) -> Bool {
  withCString(name) { (c: UnsafePointer<CChar>) -> Bool in attr_copy_action(c, nil) == ATTR_ACTION_SKIP }
}

/// Makes the changes so far durable on the filesystem of `fd` (`syncfs`).
public func syncFilesystem(_ fd: borrowing FD) throws(Errno) {
  let raw = fd.rawValue
  _ = try retrying { covl_syncfs(raw) }
}

extension FD {
  /// The corresponding C function is `fchown`.
  public borrowing func changeOwner(uid: UInt32, gid: UInt32) throws(Errno) {
    let fd = rawValue
    _ = try changingLayer { Glibc.fchown(fd, uid, gid) }
  }

  /// The corresponding C function is `fchmod`.
  public borrowing func changeMode(permissions: UInt32) throws(Errno) {
    let fd = rawValue
    _ = try changingLayer { Glibc.fchmod(fd, mode_t(permissions)) }
  }

  /// Sets atime and mtime (ns). The corresponding C function is `futimens`.
  public borrowing func setTimes(atime: Int64, mtime: Int64) throws(Errno) {
    let fd = rawValue
    let times = [Self.timespec(atime), Self.timespec(mtime)]
    _ = try changingLayer { Glibc.futimens(fd, times) }
  }

  /// The value of an attribute of this open file, or nil (`fgetxattr`).
  public borrowing func xattr(_ attribute: [UInt8]) throws(Errno) -> [UInt8]? {
    let fd = rawValue
    do {
      return try withCString(attribute) { (a) throws(Errno) in
        try readGrowing(initialSize: 512, limit: 1 << 20) { (raw) throws(Errno) in
          try retrying { fgetxattr(fd, a, raw.baseAddress, raw.count) }
        }
      }
    } catch .noData {
      return nil
    }
  }
}
