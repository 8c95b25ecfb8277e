import OvlFormat
import OvlSystem

/// Inode numbers as the kernel's stat(2) through a mount shows them (`ovl_getattr`,
/// `ovl_map_dev_ino`, `ovl_get_layers`' xino bits). A copied-up object keeps the number of
/// the lower object it came from where the kernel can prove that is safe (the lower is not
/// a broken hard link, or the index vouches for it), so `st_ino` does not change on copy-up.
extension Stack {
  /// The `st_ino` of `entry`; nil where the kernel's number is not persistent: a directory
  /// on layers of several filesystems without xino (or past xino's bits) gets a number
  /// made up per mount (`ovl_map_ino`).
  public func inodeNumber(_ entry: MergedEntry) -> UInt64? {
    let geometry = inodeGeometry
    if entry.isDirectory && geometry.xinoBits == nil { return nil }
    var ino = entry.shown.status.inode
    var fsid = entry.upper == nil ? geometry.fsid[entry.shown.layer] ?? 0 : 0
    // The upper root never takes its lower's number (`ovl_get_root`).
    if entry.upper != nil && !entry.path.isRoot, let origin = origin(of: entry) {
      if origin.indexed || (!options.nfsExport && (entry.isDirectory || origin.status.links == 1)) {
        ino = origin.status.inode
        fsid = geometry.fsid[origin.layer] ?? 0
      }
    }
    guard let bits = geometry.xinoBits, bits > 0 else { return ino }  // one filesystem, or xino off
    let shift = 64 - bits
    if ino >> shift == 0 { return ino | UInt64(fsid) << (shift + 1) }
    // xino overflow: the real number for a non-directory (with the layer's own st_dev).
    return entry.isDirectory ? nil : ino
  }

  /// The lower inode an upper entry counts as copied up from (the kernel's
  /// OVL_TYPE_ORIGIN, set where `ovl_hash_bylower` hashes the inode by its lower), and
  /// whether the index holds it (OVL_INDEX).
  private func origin(of entry: MergedEntry) -> (status: FileStatus, layer: Int, indexed: Bool)? {
    guard let upper = entry.upper else { return nil }
    let lower: (status: FileStatus, layer: Int)
    var indexed = false
    if upper.parent === indexDir, let first = entry.lowers.first {
      // A lower hard link shown through the index entry another alias's copy-up made.
      lower = (first.status, first.layer)
      indexed = true
    } else if entry.isDirectory || entry.upperIsMetacopy {
      guard let first = entry.lowers.first else { return nil }
      lower = (first.status, first.layer)
      if entry.isDirectory && options.nfsExport, let handle = try? encodeHandle(first.parent, first.name, upper: false) {
        indexed = indexEntry(named: handle.indexName)?.type == .directory
      } else if !entry.isDirectory && options.index, case let value? = try? upper.xattr(namespace.name(.origin)),
        case .handle(let handle)? = try? FileHandle.decode(value)
      {
        // A metacopy upper's lower found by path is its verified origin (`ovl_verify_origin`)
        // and looked up in the index by it: OVL_INDEX where the entry is this very inode.
        indexed = indexEntry(named: handle.indexName)?.id == upper.status.id
      }
    } else {
      guard let decoded = decodeOrigin(of: upper) else { return nil }
      lower = (decoded.status, decoded.layer)
      // `ovl_lookup_index`: the entry named by the origin handle, if it is this very inode.
      if options.index, let index = indexEntry(named: decoded.handle.indexName), index.id == upper.status.id { indexed = true }
    }
    // `ovl_hash_bylower`: not by a lower hard link that is (or will be) broken on copy-up,
    // nor, with nfs_export, by the lower of an upper the index does not hold.
    if !indexed {
      if !entry.isDirectory && lower.status.links > 1 { return nil }
      if options.nfsExport { return nil }
    }
    return (lower.status, lower.layer, indexed)
  }

  private func indexEntry(named name: [UInt8]) -> FileStatus? {
    guard let index = indexDir else { return nil }
    return (try? index.fd.statIfPresent(name)) ?? nil
  }

  /// `ovl_check_origin`: the upper non-directory's `origin` decoded in the lower layer whose
  /// filesystem uuid it names. An empty, unusable or stale handle, or one of an inode of
  /// another type, is no origin (the kernel warns and goes on).
  public func decodeOrigin(of upper: RealObject) -> (status: FileStatus, layer: Int, handle: FileHandle)? {
    guard case let value? = try? upper.xattr(namespace.name(.origin)),
      case .handle(let handle)? = try? FileHandle.decode(value)
    else { return nil }
    for root in lowerRoots + dataRoots where !inodeGeometry.badUUID.contains(root.layer) {
      if options.uuid == .off {
        guard handle.uuid.allSatisfy({ $0 == 0 }) else { continue }
      } else {
        guard let uuid = try? layerUUID(root.layer), uuid == handle.uuid else { continue }
      }
      guard let fd = try? root.fd.openHandle(type: Int32(handle.type), bytes: handle.fid),
        let status = try? fd.stat()
      else { continue }
      guard status.type == upper.status.type else { return nil }
      return (status, root.layer, handle)
    }
    return nil
  }
}

/// Which filesystem each layer is on, as the kernel numbers them, and the xino bits.
struct InodeGeometry {
  /// The kernel's fsid by layer: 0 for the upper's filesystem, then 1, 2, … for each other
  /// filesystem in layer order (`ovl_get_fsid`).
  var fsid: [Int: Int] = [:]
  /// nil: st_ino is not unified (several filesystems, xino off); 0: one filesystem, real
  /// numbers; n > 0: the high n bits of st_ino hold the fsid.
  var xinoBits: Int?
  /// Lower layers on a filesystem other than the upper's whose uuid cannot name it
  /// (`ovl_lower_uuid_ok`): origins are never decoded there.
  var badUUID: Set<Int> = []
}

extension Stack {
  /// `ovl_get_layers` and `ovl_lower_dir`: one filesystem needs no mapping; with xino, 32
  /// high bits where every filesystem has 32-bit inode numbers, else just enough for the
  /// fsids plus one; xino=auto falls back to off where a filesystem has no file handles.
  static func inodeGeometry(upper: LayerDir?, layers: [LayerDir], options: StackOptions) -> InodeGeometry {
    var xino = options.xino
    var geometry = InodeGeometry()
    // Slot 0 is the upper's filesystem, kept even without an upper.
    var devices: [UInt64] = [UInt64.max]
    var handleTypes: [HandleKind?] = []
    if let upper, let device = try? upper.fd.stat().id.device {
      devices[0] = device
      geometry.fsid[0] = 0
      handleTypes.append(handleKind(upper))
    }
    // `ovl_allow_offline_changes`: none of the features that follow lower inodes.
    let offlineChanges = !options.index && !options.metacopy && options.redirectMode != .on && options.xino != .on
    var uuids: [[UInt8]] = []
    var badFilesystems: Set<Int> = []
    for layer in layers {
      guard let device = try? layer.fd.stat().id.device else { continue }
      if let known = devices.firstIndex(of: device) {
        geometry.fsid[layer.layer] = known
        if badFilesystems.contains(known) { geometry.badUUID.insert(layer.layer) }
        continue
      }
      let fsid = devices.count
      geometry.fsid[layer.layer] = fsid
      devices.append(device)
      handleTypes.append(handleKind(layer))
      // `ovl_lower_uuid_ok` (only where an upper or nfs_export will decode handles): a null
      // uuid while offline changes are allowed, or one another lower filesystem has too.
      guard upper != nil || options.nfsExport, let uuid = try? layer.fd.filesystemUUID() else { continue }
      if (offlineChanges && uuid.allSatisfy({ $0 == 0 })) || uuids.contains(uuid) {
        badFilesystems.insert(fsid)
        geometry.badUUID.insert(layer.layer)
        if xino == .auto { xino = .off }
      }
      uuids.append(uuid)
    }
    let filesystems = devices.count - (upper == nil ? 1 : 0)
    if filesystems <= 1 {
      geometry.xinoBits = 0
    } else if xino == .off || (xino == .auto && handleTypes.contains(where: { $0 == nil })) {
      geometry.xinoBits = nil
    } else if handleTypes.allSatisfy({ $0 == .inode32 }) {
      geometry.xinoBits = 32
    } else {
      var log = 0
      while (1 << (log + 1)) <= devices.count - 1 { log += 1 }
      geometry.xinoBits = log + 2
    }
    return geometry
  }
}

/// What `ovl_can_decode_fh` says of a filesystem: it has file handles, and whether they are
/// the generic 32-bit inode encoding (`generic_encode_ino32_fh`: ext2/3/4 and f2fs). Other
/// filesystems encode their own (tmpfs, xfs and btrfs, even where a handle's type is
/// FILEID_INO32_GEN), so their inode numbers may use all 64 bits.
enum HandleKind { case inode32, other }

private func handleKind(_ root: LayerDir) -> HandleKind? {
  guard let handle = try? root.fd.fileHandle([0x2E]) else { return nil }
  let generic32: Set<UInt64> = [0xEF53, 0xF2F5_2010]  // EXT4_SUPER_MAGIC, F2FS_SUPER_MAGIC
  guard handle.type == 1, handle.bytes.count == 8, let magic = try? root.fd.filesystemMagic(), generic32.contains(magic) else {
    return .other
  }
  return .inode32
}
