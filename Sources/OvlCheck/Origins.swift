import OvlFormat
import OvlStack
import OvlSystem

/// `origin` of upper objects: the lower inode the handle names must still exist and have
/// the upper object's type. The kernel decodes it (`ovl_check_origin_fh`) for upper objects
/// it finds no lower for by name: a type mismatch is logged as "invalid origin" and the
/// origin ignored (seen on 6.18); a handle that no longer decodes (ESTALE) is taken as
/// "origin unknown". Both are counted; only the mismatch is reported.
extension Checker {
  enum OriginTarget { case found(FileStatus), stale, unknown }

  func checkOriginTarget(_ e: Entry, _ handle: FileHandle, in context: DirContext, layer: Int) {
    guard !e.isWhiteout else { return }
    switch resolveOrigin(handle) {
    case .unknown:
      return
    case .stale:
      report.count("stale origins")
    case .found(let status):
      let type = status.type
      guard type != e.status.type else { return }
      removeValue(e, .origin, in: context, layer: layer, check: "origin-type",
        problem: "origin names a \(type.rawValue) in a lower layer, but this is a \(e.status.type.rawValue): the kernel logs 'invalid origin' and ignores it",
        severity: .warning)
    }
  }

  /// Decodes a lower handle on the lower filesystems whose uuid it carries (zeros: any).
  func resolveOrigin(_ handle: FileHandle) -> OriginTarget {
    if lowerFilesystems == nil {
      var seen: Set<UInt64> = []
      var list: [(uuid: [UInt8], layer: Int)] = []
      for layer in 1..<stack.layerPaths.count where !nestedOverlays.contains(layer) {
        guard let dir = root(layer), let id = try? dir.fd.stat().id, !seen.contains(id.device),
          let uuid = try? stack.layerUUID(layer)
        else { continue }
        seen.insert(id.device)
        list.append((uuid, layer))
      }
      lowerFilesystems = list
    }
    let zeros = handle.uuid.allSatisfy { $0 == 0 }
    var tried = false
    for fs in lowerFilesystems ?? [] where zeros || fs.uuid == handle.uuid {
      guard let dir = root(fs.layer) else { continue }
      tried = true
      do {
        let fd = try dir.fd.openHandle(type: Int32(handle.type), bytes: handle.fid)
        if let status = try? fd.stat() { return .found(status) }
      } catch .staleNFSFileHandle {
        continue
      } catch {
        return .unknown  // EPERM without CAP_DAC_READ_SEARCH, EOPNOTSUPP, ...
      }
    }
    return tried ? .stale : .unknown
  }
}
