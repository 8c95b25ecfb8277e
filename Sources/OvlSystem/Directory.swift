import COvlSys
import Glibc

/// One directory entry: its name (raw bytes) and the d_type the filesystem reported.
public struct DirectoryEntry: Sendable {
  public let name: [UInt8]
  public let dtype: UInt8
  /// d_type DT_CHR: may be a whiteout; DT_UNKNOWN needs a stat to know.
  public var mayBeWhiteout: Bool { dtype == UInt8(DT_CHR) || dtype == UInt8(DT_UNKNOWN) }
  public var mayBeRegular: Bool { dtype == UInt8(DT_REG) || dtype == UInt8(DT_UNKNOWN) }
  public var isDirectory: Bool { dtype == UInt8(DT_DIR) }
  /// d_type DT_DIR, or DT_UNKNOWN (a stat tells).
  public var mayBeDirectory: Bool { dtype == UInt8(DT_DIR) || dtype == UInt8(DT_UNKNOWN) }
}

extension FD {
  /// Every entry of this directory, in the filesystem's order; `.` and `..` only when
  /// `includingDots` (their place in that order matters to overlay readdir). The
  /// descriptor must be opened with `.directory`; one opened for this listing need not be
  /// `rewinding` to its start. The corresponding C function is `getdents64`.
  public borrowing func entries(includingDots: Bool = false, rewinding: Bool = true) throws(Errno) -> [DirectoryEntry] {
    let fd = rawValue
    if rewinding { _ = try retrying { Glibc.lseek(fd, 0, SEEK_SET) } }
    var result: [DirectoryEntry] = []
    let capacity = 64 * 1024
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 8)
    defer { buffer.deallocate() }
    while true {
      let n = try retrying { covl_getdents64(fd, buffer, capacity) }
      if n == 0 { break }
      var offset = 0
      while offset < n {
        let record = buffer + offset
        let length = Int(record.loadUnaligned(fromByteOffset: Int(COVL_DIRENT64_RECLEN_OFFSET), as: UInt16.self))
        let dtype = record.load(fromByteOffset: Int(COVL_DIRENT64_TYPE_OFFSET), as: UInt8.self)
        let namePointer = (record + Int(COVL_DIRENT64_NAME_OFFSET)).assumingMemoryBound(to: UInt8.self)
        let nameLength = strlen(UnsafeRawPointer(namePointer).assumingMemoryBound(to: CChar.self))
        let name = Array(UnsafeBufferPointer(start: namePointer, count: nameLength))
        if includingDots || !(name == [0x2E] || name == [0x2E, 0x2E]) {
          result.append(DirectoryEntry(name: name, dtype: dtype))
        }
        offset += length
      }
    }
    return result
  }
}
