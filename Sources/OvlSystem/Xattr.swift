import COvlSys
import Glibc

/// Extended attributes of directory entries, read without opening them and without
/// following symlinks: `getxattrat`/`listxattrat` (Linux 6.13+), else the `l*xattr` calls on
/// `/proc/self/fd/DIRFD/NAME`, which resolve the directory by descriptor, not by path.
extension FD {
  /// Names of the extended attributes of `name` in this directory (raw bytes).
  public borrowing func xattrNames(_ name: [UInt8]) throws(Errno) -> [[UInt8]] {
    var size = 1024
    while true {
      var buffer = [UInt8](repeating: 0, count: size)
      let n: Int
      do {
        n = try buffer.withMutableBytes { (raw) throws(Errno) in
          try xattrCall(name) { dirfd, path, proc in
            if let proc { return llistxattr(proc, raw.baseAddress!.assumingMemoryBound(to: CChar.self), size) }
            return covl_listxattrat(dirfd, path, raw.baseAddress!.assumingMemoryBound(to: CChar.self), size)
          }
        }
      } catch .outOfRange {
        size *= 8
        continue
      }
      return buffer[0..<n].split(separator: 0, omittingEmptySubsequences: true).map { Array($0) }
    }
  }

  /// The value of attribute `attribute` of `name`, or nil when it is not set (ENODATA).
  public borrowing func xattr(_ name: [UInt8], _ attribute: [UInt8]) throws(Errno) -> [UInt8]? {
    var size = 512
    while true {
      var buffer = [UInt8](repeating: 0, count: size)
      let n: Int
      do {
        n = try withCString(attribute) { (cattr) throws(Errno) in
          try buffer.withMutableBytes { (raw) throws(Errno) in
            try xattrCall(name) { dirfd, path, proc in
              if let proc { return lgetxattr(proc, cattr, raw.baseAddress, size) }
              return covl_getxattrat(dirfd, path, cattr, raw.baseAddress, size)
            }
          }
        }
      } catch .noData {
        return nil
      } catch .outOfRange {
        if size >= 1 << 20 { throw .outOfRange }
        size *= 8
        continue
      }
      return Array(buffer[0..<n])
    }
  }

  /// Sets attribute `attribute` of `name` (creating or replacing it).
  public borrowing func setXattr(_ name: [UInt8], _ attribute: [UInt8], _ value: [UInt8]) throws(Errno) {
    let procPath = Array("/proc/self/fd/\(rawValue)/".utf8) + name
    _ = try withCString(procPath) { (cpath) throws(Errno) in
      try withCString(attribute) { (cattr) throws(Errno) in
        try value.withBytes { (raw) throws(Errno) in
          try retrying { lsetxattr(cpath, cattr, raw.baseAddress, raw.count, 0) }
        }
      }
    }
  }

  private borrowing func xattrCall(
    _ name: [UInt8], _ call: (Int32, UnsafePointer<CChar>, UnsafePointer<CChar>?) -> Int
  ) throws(Errno) -> Int {
    let dirfd = rawValue
    if !xattrAtUnavailable.value {
      do {
        return try withCString(name) { (cname) throws(Errno) in try retrying { call(dirfd, cname, nil) } }
      } catch .noFunction {
        xattrAtUnavailable.value = true
      }
    }
    let procPath = Array("/proc/self/fd/\(dirfd)/".utf8) + name
    return try withCString(procPath) { (cpath) throws(Errno) in try retrying { call(dirfd, cpath, cpath) } }
  }
}

/// Set once when the kernel lacks getxattrat (ENOSYS); a benign race sets it twice.
private final class Flag: @unchecked Sendable { var value = false }
private let xattrAtUnavailable = Flag()
