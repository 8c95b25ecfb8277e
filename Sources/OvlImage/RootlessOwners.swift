import OvlFormat

/// `--rootless-owners`: layers for an unprivileged user without a user namespace, kept the
/// way containers/storage keeps them with `force_mask` (and fuse-overlayfs reads them).
/// What the user cannot set lives in `user.containers.override_stat` (`OverrideStat`):
///
/// - apply: a directory or regular file is the user's own with the mode `mask`, and carries
///   the entry's owner, mode and type in the xattr; a device or FIFO becomes an empty
///   regular file carrying its type and numbers. Symlinks and hardlinks are made as they are
///   (a symlink cannot carry a `user.*` xattr: its owner is the user's, as in
///   containers/storage). Whiteouts stay whiteouts.
/// - export: an object carrying the xattr is written with the owner, mode and type it
///   records (an empty regular file that records a device is the device), and the xattr
///   itself is left out.
public struct RootlessOwners: Sendable {
  /// The real mode of the files and directories made (containers/storage's `force_mask`;
  /// 0700 is its "private").
  public var mask: UInt32
  /// The user's own ids, which the objects get.
  public var uid: UInt32
  public var gid: UInt32

  public init(mask: UInt32, uid: UInt32, gid: UInt32) {
    self.mask = mask & 0o7777
    self.uid = uid
    self.gid = gid
  }

  /// The entry as it is to be made in the upper.
  func transform(_ entry: LayerEntry) -> LayerEntry {
    let name = entry.path.split(separator: UInt8(ascii: "/")).last.map { Array($0) } ?? []
    if name.starts(with: whiteoutPrefix) { return entry }
    var made = entry
    let type: OverrideStat.FileType
    switch entry.kind {
    case .directory: type = .directory
    case .regular: type = .regular
    case .fifo: type = .fifo
    case .block: type = .block(major: entry.rdevMajor, minor: entry.rdevMinor)
    case .character:
      if entry.rdevMajor == 0 && entry.rdevMinor == 0 { return entry }  // a whiteout
      type = .character(major: entry.rdevMajor, minor: entry.rdevMinor)
    case .symlink:
      made.uid = uid
      made.gid = gid
      return made
    case .hardlink, .socket, .unknown:
      return entry
    }
    let record = OverrideStat(uid: entry.uid, gid: entry.gid, permissions: entry.permissions, type: type)
    if entry.kind != .directory && entry.kind != .regular {
      made.kind = .regular
      made.size = 0
      made.rdevMajor = 0
      made.rdevMinor = 0
    }
    made.uid = uid
    made.gid = gid
    made.permissions = mask
    made.xattrs = entry.xattrs.filter { $0.0 != OverrideStat.name } + [(OverrideStat.name, record.xattrValue)]
    made.xattrs.sort { $0.0.lexicographicallyPrecedes($1.0) }
    return made
  }

  /// The xattr of a missing parent directory that apply makes (0:0, 0755, as containerd and
  /// containers/storage make them).
  static let parentRecord = OverrideStat(uid: 0, gid: 0, permissions: 0o755, type: .directory)

  /// `entry` as the layer is to show it: the owner, mode and type its xattr records (nil:
  /// `entry` unchanged). A record that does not parse is left as an ordinary xattr.
  static func restore(_ entry: TarEntry) -> TarEntry? {
    guard let index = entry.xattrs.firstIndex(where: { $0.0 == OverrideStat.name }),
      let record = OverrideStat(xattr: entry.xattrs[index].1)
    else { return nil }
    var shown = entry
    shown.xattrs.remove(at: index)
    shown.uid = record.uid
    shown.gid = record.gid
    shown.permissions = record.permissions
    if case .regular(let size) = entry.kind, size == 0 {
      switch record.type {
      case .fifo?: shown.kind = .fifo
      case .block(let major, let minor)?: shown.kind = .block(major: major, minor: minor)
      case .character(let major, let minor)?: shown.kind = .character(major: major, minor: minor)
      default: break
      }
    }
    return shown
  }
}
