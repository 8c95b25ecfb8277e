import COvlSys
import Glibc

/// A file handle as `name_to_handle_at(2)` encodes it (flags 0, no parent): the same bytes
/// the kernel stores in overlay `origin` xattrs.
public struct KernelFileHandle: Sendable, Equatable {
  public let type: Int32
  public let bytes: [UInt8]
}

extension FD {
  /// The file handle of `name` in this directory (not following symlinks; "." for the
  /// directory itself). The corresponding C function is `name_to_handle_at`.
  public borrowing func fileHandle(_ name: [UInt8]) throws(Errno) -> KernelFileHandle {
    let dirfd = rawValue
    var handle = covl_file_handle()
    var mountID: Int32 = 0
    _ = try withCString(name) { (cname) throws(Errno) in
      try retrying { covl_name_to_handle_at(dirfd, cname, &handle, &mountID, 0) }
    }
    let count = Int(handle.handle_bytes)
    let bytes = withUnsafeBytes(of: &handle.f_handle) { Array($0.prefix(count)) }
    return KernelFileHandle(type: handle.handle_type, bytes: bytes)
  }

  /// The uuid of the filesystem holding this (open, not O_PATH) descriptor, as the kernel's
  /// superblock `s_uuid`. The corresponding call is `ioctl(FS_IOC_GETFSUUID)`.
  public borrowing func filesystemUUID() throws(Errno) -> [UInt8] {
    let fd = rawValue
    var uuid = [UInt8](repeating: 0, count: 16)
    var length: UInt8 = 0
    _ = try uuid.withMutableBytes { (raw) throws(Errno) in
      try retrying { covl_get_fs_uuid(fd, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), &length) }
    }
    return uuid
  }
}

extension FD {
  /// Opens (O_PATH) the inode a file handle names, on the filesystem holding this
  /// descriptor; ESTALE when that inode is gone. Needs CAP_DAC_READ_SEARCH. The
  /// corresponding C function is `open_by_handle_at`.
  public borrowing func openHandle(type: Int32, bytes: [UInt8]) throws(Errno) -> FD {
    let mountFD = rawValue
    return FD(adopting: try bytes.withBytes { (raw) throws(Errno) in
      try retrying {
        covl_open_by_handle_at(mountFD, type, raw.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt32(raw.count), covl_O_PATH | O_CLOEXEC)
      }
    })
  }
}
