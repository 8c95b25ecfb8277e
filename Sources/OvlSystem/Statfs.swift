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
}
