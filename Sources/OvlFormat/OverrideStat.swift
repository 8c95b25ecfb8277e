/// `user.containers.override_stat`: the owner, mode and file type that an unprivileged
/// writer could not give a file, kept beside it (containers/storage with `force_mask`,
/// fuse-overlayfs; read by fuse-overlayfs and by c/storage when it exports a layer).
///
/// Current containers/storage writes `UID:GID:MODE:TYPE`: decimal ids, MODE four octal
/// digits of the permission, setuid, setgid and sticky bits, TYPE one of `file`, `dir`,
/// `symlink`, `pipe`, `socket`, `block-MAJOR-MINOR`, `char-MAJOR-MINOR` (later `-…` parts of a
/// device are ignored, as c/storage ignores them). Older versions and fuse-overlayfs write
/// `UID:GID:MODE` without the type, MODE octal and possibly with the file type bits
/// (`S_IFMT`) in it. Both are read; the current form is written.
public struct OverrideStat: Equatable, Sendable {
  public enum FileType: Equatable, Sendable {
    case regular, directory, symlink, fifo, socket
    case block(major: UInt32, minor: UInt32)
    case character(major: UInt32, minor: UInt32)
  }

  public static let name: [UInt8] = Array("user.containers.override_stat".utf8)

  public var uid: UInt32
  public var gid: UInt32
  /// Permission, setuid, setgid and sticky bits (`& 0o7777`).
  public var permissions: UInt32
  /// Nil in the older form without a type (then the file's own type stands).
  public var type: FileType?

  public init(uid: UInt32, gid: UInt32, permissions: UInt32, type: FileType?) {
    self.uid = uid
    self.gid = gid
    self.permissions = permissions & 0o7777
    self.type = type
  }

  /// Parses either form; nil for anything else (a value this codec does not understand is
  /// not guessed at).
  public init?(xattr value: [UInt8]) {
    let fields = value.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false).map { Array($0) }
    guard fields.count == 3 || fields.count == 4,
      let uid = Self.number(fields[0], radix: 10), let gid = Self.number(fields[1], radix: 10),
      let mode = Self.number(fields[2], radix: 8)
    else { return nil }
    self.uid = uid
    self.gid = gid
    permissions = mode & 0o7777
    if fields.count == 3 {
      // The old form: any type bits in MODE say the type (devices without their numbers).
      switch mode & 0o170000 {
      case 0: type = nil
      case 0o100000: type = .regular
      case 0o040000: type = .directory
      case 0o120000: type = .symlink
      case 0o010000: type = .fifo
      case 0o140000: type = .socket
      default: return nil
      }
      return
    }
    guard mode <= 0o7777, let type = Self.fileType(fields[3]) else { return nil }
    self.type = type
  }

  /// The current form, `UID:GID:MODE:TYPE` (a nil type is written as `file`).
  public var xattrValue: [UInt8] {
    var mode = String(permissions & 0o7777, radix: 8)
    while mode.count < 4 { mode = "0" + mode }
    let kind: String
    switch type ?? .regular {
    case .regular: kind = "file"
    case .directory: kind = "dir"
    case .symlink: kind = "symlink"
    case .fifo: kind = "pipe"
    case .socket: kind = "socket"
    case .block(let major, let minor): kind = "block-\(major)-\(minor)"
    case .character(let major, let minor): kind = "char-\(major)-\(minor)"
    }
    return Array("\(uid):\(gid):\(mode):\(kind)".utf8)
  }

  private static func fileType(_ field: [UInt8]) -> FileType? {
    switch String(decoding: field, as: UTF8.self) {
    case "file": return .regular
    case "dir": return .directory
    case "symlink": return .symlink
    case "pipe": return .fifo
    case "socket": return .socket
    default: break
    }
    let parts = field.split(separator: UInt8(ascii: "-"), omittingEmptySubsequences: false).map { Array($0) }
    guard parts.count >= 3, let major = number(parts[1], radix: 10), let minor = number(parts[2], radix: 10) else { return nil }
    switch String(decoding: parts[0], as: UTF8.self) {
    case "block": return .block(major: major, minor: minor)
    case "char": return .character(major: major, minor: minor)
    default: return nil
    }
  }

  /// Digits only (no sign, no spaces), at most 32 bits.
  private static func number(_ digits: [UInt8], radix: UInt32) -> UInt32? {
    guard !digits.isEmpty, digits.count <= 12 else { return nil }
    var value: UInt64 = 0
    for d in digits {
      guard d >= UInt8(ascii: "0"), UInt32(d - UInt8(ascii: "0")) < radix else { return nil }
      value = value * UInt64(radix) + UInt64(d - UInt8(ascii: "0"))
    }
    return value <= UInt64(UInt32.max) ? UInt32(value) : nil
  }
}
