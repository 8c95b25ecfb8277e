import COvlSys
import Glibc

extension FD {
  /// Whether the filesystem holding this descriptor is mounted read-only (ST_RDONLY). The
  /// corresponding C function is `fstatvfs`.
  public borrowing func isOnReadOnlyFilesystem() throws(Errno) -> Bool {
    let fd = rawValue
    var s = statvfs()
    _ = try retrying { Glibc.fstatvfs(fd, &s) }
    return s.f_flag & UInt(ST_RDONLY) != 0
  }

  /// The filesystem type (`f_type`, e.g. OVERLAYFS_SUPER_MAGIC) of this descriptor. The
  /// corresponding C function is `fstatfs`.
  public borrowing func filesystemMagic() throws(Errno) -> UInt64 {
    let fd = rawValue
    var type = 0
    _ = try retrying { covl_fs_type(fd, &type) }
    return UInt64(bitPattern: Int64(type))
  }

  /// OVERLAYFS_SUPER_MAGIC: a layer that is itself an overlay mount.
  public static let overlayMagic: UInt64 = 0x794C_7630

  /// Whether a directory's link count on this descriptor's filesystem is 2 plus its number
  /// of subdirectories, so that a count of 2 proves it has none: ext2/3/4 (past 65,000
  /// subdirectories dir_nlink writes 1, never 2), XFS and tmpfs. Others (btrfs: always 1)
  /// answer false.
  public borrowing func countsSubdirectoriesInLinks() -> Bool {
    guard let magic = try? filesystemMagic() else { return false }
    return magic == 0xEF53 || magic == 0x5846_5342 || magic == 0x0102_1994
  }
}

extension FD {
  /// Whether this directory is the upper or work dir of a live overlay, as the kernel's own
  /// in-use mark says (see `covl_overlay_dir_in_use`): true or false, nil where this process
  /// cannot ask (no `fsopen`, no CAP_SYS_ADMIN in its user namespace, a kernel older than
  /// layers given by descriptor, Linux 6.13).
  public borrowing func isOverlayLayerInUse() -> Bool? {
    switch covl_overlay_dir_in_use(rawValue) {
    case 1: true
    case 0: false
    default: nil
    }
  }

  /// Opens `path` as a directory (O_PATH) as a process whose root is `root` would resolve it:
  /// symlinks in it are followed, but absolute ones and `..` stay inside `root` (another
  /// process's `/proc/PID/root`). The corresponding C function is `openat2` with
  /// RESOLVE_IN_ROOT.
  public static func openDirectory(inRoot root: borrowing FD, path: [UInt8]) throws(Errno) -> FD {
    let dirfd = root.rawValue
    let flags = covl_O_PATH | O_DIRECTORY | O_CLOEXEC
    return FD(adopting: try withCString(path.isEmpty ? [0x2E] : path) { (cpath) throws(Errno) in
      try retrying { covl_openat2(dirfd, cpath, flags, 0, covl_RESOLVE_IN_ROOT) }
    })
  }
}
