import COvlSys
import Glibc

/// Extended attributes of directory entries, read without opening them and without
/// following symlinks: `getxattrat`/`listxattrat` (Linux 6.13+), else the `l*xattr` calls on
/// `/proc/self/fd/DIRFD/NAME`, which resolve the directory by descriptor, not by path.
extension FD {
  /// Names of the extended attributes of `name` in this directory (raw bytes).
  public borrowing func xattrNames(_ name: [UInt8]) throws(Errno) -> [[UInt8]] {
    attributeNames(try readGrowing(initialSize: 1024, limit: nil) { (raw) throws(Errno) in
      let list = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
      return try xattrCall(name) { dirfd, path, proc in
        if let proc { return llistxattr(proc, list, raw.count) }
        return covl_listxattrat(dirfd, path, list, raw.count)
      }
    })
  }

  /// Names of the extended attributes of `name` that start with `prefix`: one listxattr
  /// into a buffer on the stack, and an array only for the names that match (a walk of a
  /// layer asks this of every entry; most have no overlay xattr).
  public borrowing func xattrNames(_ name: [UInt8], prefix: [UInt8]) throws(Errno) -> [[UInt8]] {
    let capacity = 4096
    let listed: Result<[[UInt8]]?, Errno> = withUnsafeTemporaryAllocation(byteCount: capacity, alignment: 1) { raw in
      let list = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
      let count: Int
      do throws(Errno) {
        count = try xattrCall(name) { dirfd, path, proc in
          if let proc { return llistxattr(proc, list, capacity) }
          return covl_listxattrat(dirfd, path, list, capacity)
        }
      } catch .outOfRange {
        return .success(nil)
      } catch {
        return .failure(error)
      }
      return .success(Self.names(in: UnsafeRawBufferPointer(rebasing: raw[0..<count]), prefix: prefix))
    }
    if let names = try listed.get() { return names }
    return try xattrNames(name).filter { $0.starts(with: prefix) }
  }

  /// The names of a NUL-separated list that start with `prefix`.
  private static func names(in list: UnsafeRawBufferPointer, prefix: [UInt8]) -> [[UInt8]] {
    var result: [[UInt8]] = []
    var start = 0
    for index in list.indices where list[index] == 0 {
      let candidate = UnsafeRawBufferPointer(rebasing: list[start..<index])
      if candidate.count > 0 && candidate.starts(with: prefix) { result.append(Array(candidate)) }
      start = index + 1
    }
    return result
  }

  /// The value of attribute `attribute` of `name`, or nil when it is not set (ENODATA).
  public borrowing func xattr(_ name: [UInt8], _ attribute: [UInt8]) throws(Errno) -> [UInt8]? {
    do {
      return try withCString(attribute) { (cattr) throws(Errno) in
        try readGrowing(initialSize: 512, limit: 1 << 20) { (raw) throws(Errno) in
          try xattrCall(name) { dirfd, path, proc in
            if let proc { return lgetxattr(proc, cattr, raw.baseAddress, raw.count) }
            return covl_getxattrat(dirfd, path, cattr, raw.baseAddress, raw.count)
          }
        }
      }
    } catch .noData {
      return nil
    }
  }

  /// Sets attribute `attribute` of `name` (creating or replacing it).
  public borrowing func setXattr(_ name: [UInt8], _ attribute: [UInt8], _ value: [UInt8]) throws(Errno) {
    let procPath = Array("/proc/self/fd/\(rawValue)/".utf8) + name
    _ = try withCString(procPath) { (cpath) throws(Errno) in
      try withCString(attribute) { (cattr) throws(Errno) in
        try value.withBytes { (raw) throws(Errno) in
          try changingLayer { lsetxattr(cpath, cattr, raw.baseAddress, raw.count, 0) }
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

/// Calls `read` with a buffer that grows (8×) while the call answers ERANGE, up to `limit`
/// bytes (then ERANGE is the answer); returns the bytes it filled.
func readGrowing(
  initialSize: Int, limit: Int?, _ read: (UnsafeMutableRawBufferPointer) throws(Errno) -> Int
) throws(Errno) -> [UInt8] {
  var size = initialSize
  while true {
    var buffer = [UInt8](repeating: 0, count: size)
    do {
      let n = try buffer.withMutableBytes { (raw) throws(Errno) in try read(raw) }
      return Array(buffer[0..<n])
    } catch .outOfRange {
      if let limit, size >= limit { throw .outOfRange }
      size *= 8
    }
  }
}

/// The NUL-separated list listxattr returns, as names.
func attributeNames(_ list: [UInt8]) -> [[UInt8]] {
  list.split(separator: 0, omittingEmptySubsequences: true).map { Array($0) }
}
