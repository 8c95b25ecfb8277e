import COvlSys
import Glibc
import Synchronization

/// What this process may do, read once (the kernel's `creator_cred` of a mount): its
/// effective ids, its effective capabilities and whether it runs in a user namespace. The
/// stack holds it next to its xattr namespace and every writer asks it — no command, codec
/// or path decides privilege on its own. Root on the host and an unprivileged user (with
/// `userxattr`, or root of a user namespace) run the same code; what differs is answered
/// here.
public struct Credentials: Sendable, Equatable {
  public let uid: UInt32
  public let gid: UInt32
  public let capabilities: Capabilities
  /// The process's uid map is not the initial namespace's identity map (`unshare -U`,
  /// rootless podman): capabilities held here count in that namespace only.
  public let inUserNamespace: Bool

  public init(uid: UInt32, gid: UInt32, capabilities: Capabilities, inUserNamespace: Bool) {
    self.uid = uid
    self.gid = gid
    self.capabilities = capabilities
    self.inUserNamespace = inUserNamespace
  }

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
    if let status = try? readSmallHostFile("/proc/self/status") {
      for line in status.split(separator: 0x0A) where line.starts(with: Array("CapEff:".utf8)) {
        let hex = String(decoding: line.dropFirst(7), as: UTF8.self).trimmingCharacters(in: " \t")
        effective = UInt64(hex, radix: 16) ?? 0
      }
    }
    var namespaced = false
    if let map = try? readSmallHostFile("/proc/self/uid_map") {
      // The initial namespace maps every id to itself: "0 0 4294967295".
      let fields = String(decoding: map, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
      namespaced = fields != ["0", "0", "4294967295"]
    }
    return Credentials(uid: geteuid(), gid: getegid(), capabilities: Capabilities(rawValue: effective), inUserNamespace: namespaced)
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

/// The whole of a small host file (a /proc file), by read(2) to the end.
func readSmallHostFile(_ path: String) throws(Errno) -> [UInt8] {
  let fd = try FD.openFile(atHostPath: path)
  return try fd.readAll(limit: 1 << 16)
}

extension String {
  fileprivate func trimmingCharacters(in set: String) -> String {
    var s = Substring(self)
    while let c = s.first, set.contains(c) { s = s.dropFirst() }
    while let c = s.last, set.contains(c) { s = s.dropLast() }
    return String(s)
  }
}
