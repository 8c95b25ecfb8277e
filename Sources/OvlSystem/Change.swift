import COvlSys
import Glibc

/// Calls the namespace operations need beyond those of copy-up.

/// The process's file mode creation mask. The corresponding C function is `umask` (set and
/// put back: the only way to read it).
public func processUmask() -> UInt32 {
  let mask = umask(0o022)
  umask(mask)
  return UInt32(mask)
}

extension OpenMode {
  /// An existing regular file opened for writing, emptied (`O_WRONLY | O_TRUNC`).
  public static let truncatingWrite = OpenMode(flags: O_WRONLY | O_TRUNC)
}

extension FD {
  /// Sets atime and mtime of `name` to the current time (UTIME_NOW), not following symlinks.
  public borrowing func touchNow(_ name: [UInt8]) throws(Errno) {
    let dirfd = rawValue
    let now = Glibc.timespec(tv_sec: 0, tv_nsec: (1 << 30) - 1)  // UTIME_NOW (a macro Swift cannot import)
    _ = try withCString(name) { (c) throws(Errno) in try changingLayer { Glibc.utimensat(dirfd, c, [now, now], AT_SYMLINK_NOFOLLOW) } }
  }

  /// Removes `name` and, if it is a directory, everything below it, never following a
  /// symlink (each directory is opened with O_NOFOLLOW relative to its parent).
  public borrowing func removeTree(_ name: [UInt8]) throws(Errno) {
    do {
      try remove(name)
      return
    } catch .isDirectory {
    } catch .noSuchFileOrDirectory {
      return
    }
    let dir = try FD.open(name, in: self, .directory)
    for entry in try dir.entries() {
      try dir.removeTree(entry.name)
    }
    try remove(name, directory: true)
  }
}
