import COvlSys
import Glibc
import Synchronization

/// What this process may do, read once (the kernel's `creator_cred` of a mount): its
/// effective ids, its effective capabilities and whether it runs in a user namespace. The
/// stack holds it next to its xattr namespace and every writer asks it — no command, codec
/// or path decides privilege on its own. Root on the host and an unprivileged user (with
/// `userxattr`, or root of a user namespace) run the same code; what differs is answered
/// here.
public struct Credentials: Sendable {
  public let uid: UInt32
  public let gid: UInt32
  public let capabilities: Capabilities
  /// The process's uid map is not the initial namespace's identity map (`unshare -U`,
  /// rootless podman): capabilities held here count in that namespace only.
  public let inUserNamespace: Bool
  /// Supplementary groups (`getgroups`).
  public let groups: [UInt32]
  /// The ids this namespace maps (uid_map, gid_map of /proc/self): (first, count) ranges.
  public let uidRanges: [(UInt32, UInt32)]
  public let gidRanges: [(UInt32, UInt32)]

  /// Whether `uid` has a mapping here (chown to an unmapped id: EINVAL).
  public func maps(uid: UInt32) -> Bool { uidRanges.contains { uid >= $0.0 && UInt64(uid) < UInt64($0.0) + UInt64($0.1) } }
  public func maps(gid: UInt32) -> Bool { gidRanges.contains { gid >= $0.0 && UInt64(gid) < UInt64($0.0) + UInt64($0.1) } }
  /// Whether the process is in group `gid` (its own or a supplementary one).
  public func isMember(of gid: UInt32) -> Bool { gid == self.gid || groups.contains(gid) }

  /// This process, read at first use.
  public static let current = Credentials.read()

  /// `trusted.*` xattrs are readable and writable (CAP_SYS_ADMIN in the initial namespace):
  /// without it listxattr silently leaves them out.
  public var canUseTrustedXattrs: Bool { capabilities.contains(.sysAdmin) && !inUserNamespace }
  /// File handles can be decoded (`open_by_handle_at` needs CAP_DAC_READ_SEARCH in the
  /// initial namespace): without it the kernel records empty origins and turns index,
  /// nfs_export and xino off (`ovl_can_decode_fh`).
  public var canDecodeFileHandles: Bool { capabilities.contains(.dacReadSearch) && !inUserNamespace }
  /// Files may be given to other owners (CAP_CHOWN).
  public var canChangeOwners: Bool { capabilities.contains(.chown) }
  /// Device nodes may be made (CAP_MKNOD, initial namespace only; a whiteout, char 0/0, is
  /// allowed to everyone since Linux 5.8).
  public var canMakeDevices: Bool { capabilities.contains(.mknod) && !inUserNamespace }
  /// Permission bits do not stop this process (CAP_DAC_OVERRIDE): it can open the mode-0000
  /// work dir the kernel makes.
  public var overridesPermissions: Bool { capabilities.contains(.dacOverride) }

  static func read() -> Credentials {
    var effective: UInt64 = 0
    if let status = try? procFile("status") {
      for line in status.split(separator: 0x0A) where line.starts(with: Array("CapEff:".utf8)) {
        let hex = line.dropFirst(7).filter { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") }
        effective = UInt64(String(decoding: hex, as: UTF8.self), radix: 16) ?? 0
      }
    }
    var namespaced = false
    var uids: [(UInt32, UInt32)] = [(0, UInt32.max)]
    var gids: [(UInt32, UInt32)] = [(0, UInt32.max)]
    if let map = try? procFile("uid_map") {
      // The initial namespace maps every id to itself: "0 0 4294967295".
      let fields = String(decoding: map, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
      namespaced = fields != ["0", "0", "4294967295"]
      uids = ranges(map)
    }
    if let map = try? procFile("gid_map") { gids = ranges(map) }
    var groups: [UInt32] = []
    let count = getgroups(0, nil)
    if count > 0 {
      var list = [gid_t](repeating: 0, count: Int(count))
      let n = getgroups(count, &list)
      if n > 0 { groups = Array(list[0..<Int(n)]) }
    }
    return Credentials(uid: geteuid(), gid: getegid(), capabilities: Capabilities(rawValue: effective), inUserNamespace: namespaced,
                       groups: groups, uidRanges: uids, gidRanges: gids)
  }

  /// `inside outside count` lines: (inside, count) ranges.
  private static func ranges(_ map: [UInt8]) -> [(UInt32, UInt32)] {
    String(decoding: map, as: UTF8.self).split(separator: "\n").compactMap { line in
      let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
      guard f.count == 3, let first = UInt32(f[0]), let count = UInt32(f[2]) else { return nil }
      return (first, count)
    }
  }

  /// Whether `linkat(fd, "", dir, name, AT_EMPTY_PATH)` works for an O_TMPFILE (the kernel
  /// allows it with CAP_DAC_READ_SEARCH): learnt at the first link and kept, so that each
  /// later file takes the way that works (else `/proc/self/fd/N` with AT_SYMLINK_FOLLOW).
  static let emptyPathLinks = Atomic<Int>(0)  // 0 unknown, 1 works, 2 does not
}

/// Effective capabilities (`CapEff` of /proc/self/status), the bits this tool looks at.
public struct Capabilities: OptionSet, Sendable, Equatable {
  public let rawValue: UInt64
  public init(rawValue: UInt64) { self.rawValue = rawValue }
  public static let chown = Capabilities(rawValue: 1 << 0)
  public static let dacOverride = Capabilities(rawValue: 1 << 1)
  public static let dacReadSearch = Capabilities(rawValue: 1 << 2)
  public static let fowner = Capabilities(rawValue: 1 << 3)
  public static let mknod = Capabilities(rawValue: 1 << 27)
  public static let sysAdmin = Capabilities(rawValue: 1 << 21)
}

/// A file of /proc/self, whole (a few lines).
private func procFile(_ name: String) throws(Errno) -> [UInt8] {
  try FD.openFile(atHostPath: "/proc/self/" + name).readAll(limit: 1 << 16)
}
