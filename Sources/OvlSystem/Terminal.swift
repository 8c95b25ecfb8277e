import Glibc

/// Whether descriptor `fd` is a terminal (fsck asks questions only there). The
/// corresponding C function is `isatty`.
public func isTerminal(_ fd: Int32) -> Bool { Glibc.isatty(fd) == 1 }

extension FD {
  /// Whether the filesystem holding this descriptor is mounted read-only (ST_RDONLY). The
  /// corresponding C function is `fstatvfs`.
  public borrowing func isOnReadOnlyFilesystem() throws(Errno) -> Bool {
    let fd = rawValue
    var s = statvfs()
    _ = try retrying { Glibc.fstatvfs(fd, &s) }
    return s.f_flag & UInt(ST_RDONLY) != 0
  }
}
