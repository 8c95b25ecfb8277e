import Glibc
import Synchronization

/// The SHA-256 of a whole regular file, computed on another thread while the caller goes on:
/// `apply` hashes a plain tar layer (its DiffID) while its first pass checks the headers.
/// The thread reads through its own duplicate of the descriptor with `pread`, so the
/// caller's offset and reads are not disturbed and closing the caller's descriptor early
/// does no harm.
public final class FileDigest: @unchecked Sendable {
  /// What the thread shares with its owner: the result, set before the thread ends (read
  /// after the join), and a flag that stops it early. The thread holds this box, never the
  /// `FileDigest`, so the owner's release always runs `deinit`, which joins: no thread is
  /// left hashing while the process exits (libcrypto's exit handlers would pull the state
  /// from under it).
  private final class Shared: @unchecked Sendable {
    var result: Result<[UInt8], Errno>?
    let fd: Int32
    /// Set by the owner that no longer needs the digest (a refused layer).
    let cancelled = Atomic<Bool>(false)
    init(fd: Int32) { self.fd = fd }
  }

  private var thread: pthread_t?
  private let shared: Shared

  /// Starts hashing `rawDescriptor` from byte 0 to its end. Where no thread can start, the
  /// hash is computed by `value()` itself.
  public init(rawDescriptor: Int32) throws(Errno) {
    let shared = Shared(fd: try retrying { Glibc.fcntl(rawDescriptor, F_DUPFD_CLOEXEC, 0) })
    self.shared = shared
    thread = startThread { shared.result = Self.hash(shared) }
  }

  deinit {
    shared.cancelled.store(true, ordering: .relaxed)
    if let running = thread { pthread_join(running, nil) }
    _ = Glibc.close(shared.fd)
  }

  /// Waits for the thread; the digest, or the errno of the read that failed.
  @discardableResult
  public func value() -> Result<[UInt8], Errno> {
    if let running = thread {
      pthread_join(running, nil)
      thread = nil
    }
    if let result = shared.result { return result }
    let computed = Self.hash(shared)
    shared.result = computed
    return computed
  }

  private static func hash(_ shared: Shared) -> Result<[UInt8], Errno> {
    let digest = SHA256Digest()
    let capacity = 1 << 20
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64)
    defer { buffer.deallocate() }
    var offset: Int64 = 0
    while !shared.cancelled.load(ordering: .relaxed) {
      let n = Glibc.pread(shared.fd, buffer.baseAddress, capacity, off_t(offset))
      if n < 0 {
        if errno == EINTR { continue }
        return .failure(Errno(rawValue: errno))
      }
      if n == 0 { return .success(digest.finish()) }
      digest.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
      offset += Int64(n)
    }
    return .failure(.canceled)
  }
}

/// What says that a file's contents are the ones read before: its device, inode, size, and
/// its modification and change times (a write changes the change time).
public struct ContentStamp: Equatable, Sendable {
  let values: [Int64]

  /// The stamp of the open file `rawDescriptor`; nil when fstat fails.
  public init?(rawDescriptor: Int32) {
    var status = Glibc.stat()
    guard Glibc.fstat(rawDescriptor, &status) == 0 else { return nil }
    values = [
      Int64(status.st_dev), Int64(status.st_ino), Int64(status.st_size),
      Int64(status.st_mtim.tv_sec), Int64(status.st_mtim.tv_nsec),
      Int64(status.st_ctim.tv_sec), Int64(status.st_ctim.tv_nsec),
    ]
  }
}
