import COvlSys
import Glibc

/// The type of an inode, as the merged view names it.
public enum FileType: String, Sendable, Equatable {
  case regular = "file", directory = "dir", symlink, character = "char", block, fifo, socket

  public init?(mode: UInt32) {
    switch mode & UInt32(S_IFMT) {
    case UInt32(S_IFREG): self = .regular
    case UInt32(S_IFDIR): self = .directory
    case UInt32(S_IFLNK): self = .symlink
    case UInt32(S_IFCHR): self = .character
    case UInt32(S_IFBLK): self = .block
    case UInt32(S_IFIFO): self = .fifo
    case UInt32(S_IFSOCK): self = .socket
    default: return nil
    }
  }

  public var modeBits: UInt32 {
    switch self {
    case .regular: UInt32(S_IFREG)
    case .directory: UInt32(S_IFDIR)
    case .symlink: UInt32(S_IFLNK)
    case .character: UInt32(S_IFCHR)
    case .block: UInt32(S_IFBLK)
    case .fifo: UInt32(S_IFIFO)
    case .socket: UInt32(S_IFSOCK)
    }
  }
}

/// Identity of an inode: device and inode number. Paths are never compared as strings.
public struct FileID: Hashable, Sendable, CustomStringConvertible {
  public let device: UInt64
  public let inode: UInt64
  public init(device: UInt64, inode: UInt64) { self.device = device; self.inode = inode }
  public var description: String { "\(device >> 32):\(device & 0xFFFF_FFFF):\(inode)" }
}

/// What statx(2) reports about one inode, without following symlinks.
public struct FileStatus: Sendable {
  public let type: FileType
  /// Permission bits including setuid, setgid and sticky.
  public let permissions: UInt32
  public let uid: UInt32
  public let gid: UInt32
  public let size: UInt64
  /// Allocated 512-byte blocks.
  public let blocks: UInt64
  public let links: UInt32
  public let deviceMajor: UInt32
  public let deviceMinor: UInt32
  public let rdevMajor: UInt32
  public let rdevMinor: UInt32
  public let inode: UInt64
  public let mountID: UInt64
  public let mtimeSeconds: Int64
  public let mtimeNanoseconds: UInt32
  /// Access time in integer nanoseconds since the epoch.
  public let atime: Int64

  public var id: FileID { FileID(device: UInt64(deviceMajor) << 32 | UInt64(deviceMinor), inode: inode) }
  /// Modification time in integer nanoseconds since the epoch.
  public var mtime: Int64 { mtimeSeconds * 1_000_000_000 + Int64(mtimeNanoseconds) }
  /// A char device 0/0: the kernel's whiteout.
  public var isWhiteoutDevice: Bool { type == .character && rdevMajor == 0 && rdevMinor == 0 }

  init(_ s: statx) throws(Errno) {
    guard let type = FileType(mode: UInt32(s.stx_mode)) else { throw .invalidArgument }
    self.type = type
    permissions = UInt32(s.stx_mode) & 0o7777
    uid = s.stx_uid
    gid = s.stx_gid
    size = s.stx_size
    blocks = s.stx_blocks
    links = s.stx_nlink
    deviceMajor = s.stx_dev_major
    deviceMinor = s.stx_dev_minor
    rdevMajor = s.stx_rdev_major
    rdevMinor = s.stx_rdev_minor
    inode = s.stx_ino
    mountID = s.stx_mnt_id
    mtimeSeconds = s.stx_mtime.tv_sec
    mtimeNanoseconds = s.stx_mtime.tv_nsec
    atime = s.stx_atime.tv_sec * 1_000_000_000 + Int64(s.stx_atime.tv_nsec)
  }
}

private let statxMask = UInt32(STATX_BASIC_STATS) | UInt32(STATX_MNT_ID)

extension FD {
  /// Status of `name` in this directory, not following symlinks. The corresponding C
  /// function is `statx` with AT_SYMLINK_NOFOLLOW.
  public borrowing func stat(_ name: [UInt8]) throws(Errno) -> FileStatus {
    let dirfd = rawValue
    var buffer = statx()
    _ = try withCString(name) { (cname) throws(Errno) in
      try retrying { covl_statx(dirfd, cname, AT_SYMLINK_NOFOLLOW, statxMask, &buffer) }
    }
    return try FileStatus(buffer)
  }

  /// Status of `name`, or nil when there is no such name (ENOENT, or a name longer than
  /// the filesystem allows, which cannot exist either).
  public borrowing func statIfPresent(_ name: [UInt8]) throws(Errno) -> FileStatus? {
    do {
      return try stat(name)
    } catch .noSuchFileOrDirectory, .fileNameTooLong {
      return nil
    }
  }

  /// Status of the inode this descriptor refers to (works on O_PATH descriptors).
  public borrowing func stat() throws(Errno) -> FileStatus {
    let fd = rawValue
    var buffer = statx()
    _ = try retrying { covl_statx(fd, "", covl_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, statxMask, &buffer) }
    return try FileStatus(buffer)
  }
}
