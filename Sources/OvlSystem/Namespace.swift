import COvlSys
import Glibc

/// Namespace changes relative to a directory descriptor (used by fixtures and, later, by the
/// operations). Every call acts on one name in this directory and never follows symlinks.
extension FD {
  /// The corresponding C function is `mkdirat`.
  public borrowing func makeDirectory(_ name: [UInt8], permissions: UInt32) throws(Errno) {
    let dirfd = rawValue
    _ = try withCString(name) { (c) throws(Errno) in try changingLayer { Glibc.mkdirat(dirfd, c, mode_t(permissions)) } }
  }

  /// Creates a regular file with `contents` (exclusive create).
  public borrowing func createFile(_ name: [UInt8], contents: [UInt8], permissions: UInt32) throws(Errno) {
    let dirfd = rawValue
    let fd = FD(adopting: try withCString(name) { (c) throws(Errno) in
      try changingLayer { Glibc.openat(dirfd, c, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode_t(permissions)) }
    })
    try fd.write(contents)
    try fd.close()
  }

  /// Sets a regular file's size (sparse extension). The corresponding C function is `ftruncate`.
  public borrowing func truncate(_ name: [UInt8], size: UInt64) throws(Errno) {
    let file = try FD.open(name, in: self, OpenMode(flags: O_WRONLY))
    let fd = file.rawValue
    _ = try changingLayer { Glibc.ftruncate(fd, off_t(size)) }
  }

  /// The corresponding C function is `symlinkat`.
  public borrowing func makeSymlink(_ name: [UInt8], target: [UInt8]) throws(Errno) {
    let dirfd = rawValue
    _ = try withCString(target) { (t) throws(Errno) in
      try withCString(name) { (c) throws(Errno) in try changingLayer { Glibc.symlinkat(t, dirfd, c) } }
    }
  }

  /// The corresponding C function is `mknodat`.
  public borrowing func makeNode(_ name: [UInt8], type: FileType, permissions: UInt32, major: UInt32 = 0, minor: UInt32 = 0) throws(Errno) {
    let dirfd = rawValue
    let mode = mode_t(type.modeBits | permissions)
    let dev = covl_makedev(major, minor)
    _ = try withCString(name) { (c) throws(Errno) in try changingLayer { Glibc.mknodat(dirfd, c, mode, dev) } }
  }

  /// A char 0/0 whiteout, mode 0000 as the kernel makes them.
  public borrowing func makeWhiteout(_ name: [UInt8]) throws(Errno) {
    try makeNode(name, type: .character, permissions: 0)
  }

  /// Links `name` in this directory as `newName` in `newDirectory`. The corresponding C
  /// function is `linkat` (no AT_SYMLINK_FOLLOW).
  public borrowing func link(_ name: [UInt8], as newName: [UInt8], in newDirectory: borrowing FD) throws(Errno) {
    let olddir = rawValue
    let newdir = newDirectory.rawValue
    _ = try withCString(name) { (o) throws(Errno) in
      try withCString(newName) { (n) throws(Errno) in try changingLayer { Glibc.linkat(olddir, o, newdir, n, 0) } }
    }
  }

  /// The corresponding C function is `fchownat` with AT_SYMLINK_NOFOLLOW.
  public borrowing func changeOwner(_ name: [UInt8], uid: UInt32, gid: UInt32) throws(Errno) {
    let dirfd = rawValue
    _ = try withCString(name) { (c) throws(Errno) in
      try changingLayer { Glibc.fchownat(dirfd, c, uid, gid, AT_SYMLINK_NOFOLLOW) }
    }
  }

  /// The corresponding C function is `fchmodat` (never on symlinks).
  public borrowing func changeMode(_ name: [UInt8], permissions: UInt32) throws(Errno) {
    let dirfd = rawValue
    _ = try withCString(name) { (c) throws(Errno) in
      try changingLayer { Glibc.fchmodat(dirfd, c, mode_t(permissions), 0) }
    }
  }

  /// Sets atime and mtime (nanoseconds since the epoch). The corresponding C function is
  /// `utimensat` with AT_SYMLINK_NOFOLLOW.
  public borrowing func setTimes(_ name: [UInt8], mtime: Int64) throws(Errno) {
    let dirfd = rawValue
    let times = [Self.timespec(mtime), Self.timespec(mtime)]
    _ = try withCString(name) { (c) throws(Errno) in
      try changingLayer { Glibc.utimensat(dirfd, c, times, AT_SYMLINK_NOFOLLOW) }
    }
  }
}
