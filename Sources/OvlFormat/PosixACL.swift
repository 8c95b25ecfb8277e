/// A POSIX ACL in its xattr form (`system.posix_acl_access`, `system.posix_acl_default`):
/// a little-endian u32 version (2), then entries of u16 tag, u16 permissions, u32 id.
public struct PosixACL: Equatable, Sendable {
  public struct Entry: Equatable, Sendable {
    public var tag: UInt16
    public var permissions: UInt16
    public var id: UInt32
    public init(tag: UInt16, permissions: UInt16, id: UInt32) {
      self.tag = tag
      self.permissions = permissions
      self.id = id
    }
  }

  public static let version: UInt32 = 2
  public static let userObject: UInt16 = 0x01
  public static let user: UInt16 = 0x02
  public static let groupObject: UInt16 = 0x04
  public static let group: UInt16 = 0x08
  public static let mask: UInt16 = 0x10
  public static let other: UInt16 = 0x20

  public static let accessName = Array("system.posix_acl_access".utf8)
  public static let defaultName = Array("system.posix_acl_default".utf8)

  public var entries: [Entry]

  public init(entries: [Entry]) { self.entries = entries }

  /// nil: not an ACL (wrong version, a size that is not 4 + 8n, no entries).
  public init?(xattr value: [UInt8]) {
    guard value.count >= 12, (value.count - 4) % 8 == 0, Self.le32(value, 0) == Self.version else { return nil }
    var entries: [Entry] = []
    var offset = 4
    while offset < value.count {
      let tag = UInt16(value[offset]) | UInt16(value[offset + 1]) << 8
      let permissions = UInt16(value[offset + 2]) | UInt16(value[offset + 3]) << 8
      entries.append(Entry(tag: tag, permissions: permissions, id: Self.le32(value, offset + 4)))
      offset += 8
    }
    self.entries = entries
  }

  public var xattrValue: [UInt8] {
    var out = Self.bytes(Self.version)
    for e in entries {
      out += [UInt8(e.tag & 0xFF), UInt8(e.tag >> 8), UInt8(e.permissions & 0xFF), UInt8(e.permissions >> 8)]
      out += Self.bytes(e.id)
    }
    return out
  }

  /// What a new object made under a directory with this default ACL starts out with
  /// (`posix_acl_create`, `posix_acl_create_masq`): the requested mode cut by the ACL's
  /// owner, group class (the mask if there is one) and other entries instead of the umask;
  /// the ACL, its entries cut by the mode, as the object's access ACL unless it says no
  /// more than the mode does; a directory inherits the default ACL itself.
  public func create(mode requested: UInt32, isDirectory: Bool) -> (permissions: UInt32, access: PosixACL?, default: PosixACL?) {
    var mode = requested
    var access = self
    var extended = false
    var groupIndex: Int?
    var maskIndex: Int?
    for i in access.entries.indices {
      let perm = UInt32(access.entries[i].permissions)
      switch access.entries[i].tag {
      case Self.userObject:
        let cut = perm & ((mode >> 6) & 7)
        access.entries[i].permissions = UInt16(cut)
        mode &= (cut << 6) | ~UInt32(0o700)
      case Self.user, Self.group:
        extended = true
      case Self.groupObject:
        groupIndex = i
      case Self.other:
        let cut = perm & (mode & 7)
        access.entries[i].permissions = UInt16(cut)
        mode &= cut | ~UInt32(0o007)
      case Self.mask:
        maskIndex = i
        extended = true
      default:
        extended = true
      }
    }
    if let i = maskIndex ?? groupIndex {
      let cut = UInt32(access.entries[i].permissions) & ((mode >> 3) & 7)
      access.entries[i].permissions = UInt16(cut)
      mode &= (cut << 3) | ~UInt32(0o070)
    }
    return (mode, extended ? access : nil, isDirectory ? self : nil)
  }

  private static func le32(_ b: [UInt8], _ at: Int) -> UInt32 {
    UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
  }

  private static func bytes(_ v: UInt32) -> [UInt8] {
    [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8(v >> 24)]
  }
}
