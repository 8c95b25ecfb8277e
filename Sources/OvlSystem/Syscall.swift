import Glibc
@_exported import SystemPackage

/// Runs a libc call that reports failure as -1 with `errno`, retrying on EINTR.
@inline(__always)
func retrying<T: FixedWidthInteger>(_ call: () -> T) throws(Errno) -> T {
  while true {
    let result = call()
    if result != -1 { return result }
    let error = Errno(rawValue: errno)
    if error != .interrupted { throw error }
  }
}

/// Calls `body` with `bytes` as a NUL-terminated C string. Names and paths are raw bytes:
/// a layer may hold names that are not UTF-8. The copy is made on the stack (a name is at
/// most NAME_MAX bytes; a walk makes several calls per entry).
@inline(__always)
func withCString<R, E: Error>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) throws(E) -> R) throws(E) -> R {
  let result: Result<R, E> = withUnsafeTemporaryAllocation(of: CChar.self, capacity: bytes.count + 1) { buffer in
    bytes.withUnsafeBufferPointer { source in
      if let base = source.baseAddress {
        UnsafeMutableRawPointer(buffer.baseAddress!).copyMemory(from: base, byteCount: source.count)
      }
    }
    buffer[bytes.count] = 0
    return Result { () throws(E) -> R in try body(buffer.baseAddress!) }
  }
  return try result.get()
}

/// Processors online: a second thread pays only where there is a second one. The
/// corresponding C function is `sysconf(_SC_NPROCESSORS_ONLN)`.
public func onlineProcessorCount() -> Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

/// Writes a line to standard error.
public func printError(_ message: String) {
  var line = Array(message.utf8)
  line.append(0x0A)
  writeAll(2, line)
}

/// Writes bytes to a raw descriptor, retrying short writes; errors (e.g. EPIPE) end the write.
public func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
  bytes.withUnsafeBytes { buffer in
    var offset = 0
    while offset < buffer.count {
      let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
      if n < 0 {
        if errno == EINTR { continue }
        return
      }
      offset += n
    }
  }
}

extension Array where Element == UInt8 {
  /// `withUnsafeMutableBytes` that keeps the typed error (the standard one is `rethrows`).
  @inline(__always)
  mutating func withMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws(Errno) -> R) throws(Errno) -> R {
    let result: Result<R, Errno> = withUnsafeMutableBytes { raw in Result { () throws(Errno) -> R in try body(raw) } }
    return try result.get()
  }

  /// `withUnsafeBytes` that keeps the typed error.
  @inline(__always)
  func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(Errno) -> R) throws(Errno) -> R {
    let result: Result<R, Errno> = withUnsafeBytes { raw in Result { () throws(Errno) -> R in try body(raw) } }
    return try result.get()
  }
}

/// `YYYY-MM-DD HH:MM` in UTC for `ls -l` (the corresponding C functions are `gmtime_r`,
/// `strftime`).
public func formatUTC(seconds: Int64) -> String {
  var t = time_t(seconds)
  var parts = tm()
  guard gmtime_r(&t, &parts) != nil else { return String(seconds) }
  var buffer = [CChar](repeating: 0, count: 32)
  let n = strftime(&buffer, buffer.count, "%Y-%m-%d %H:%M", &parts)
  return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The process's arguments as raw bytes: paths may not be UTF-8, and Swift's `String`
/// arguments replace such bytes.
public func rawArguments() -> [[UInt8]] {
  (0..<Int(CommandLine.argc)).map { i in
    guard let p = CommandLine.unsafeArgv[i] else { return [] }
    return Array(UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p)))
  }
}

/// Buffered writes to standard output, in large chunks.
public final class OutputBuffer {
  private var buffer: [UInt8] = []
  private let fd: Int32
  public init(fd: Int32 = 1) { self.fd = fd; buffer.reserveCapacity(1 << 16) }
  public func write(_ bytes: [UInt8]) {
    buffer += bytes
    if buffer.count >= 1 << 16 { flush() }
  }
  public func line(_ bytes: [UInt8]) { write(bytes); buffer.append(0x0A) }
  public func line(_ text: String) { line(Array(text.utf8)) }
  public func flush() {
    writeAll(fd, buffer)
    buffer.removeAll(keepingCapacity: true)
  }
  deinit { flush() }
}

/// Ends the process with `status` (for small executables without ArgumentParser).
public func exitProcess(_ status: Int32) -> Never { Glibc.exit(status) }

/// Raises the soft limit on open descriptors to the hard limit: a walk holds one descriptor
/// per layer per level of depth, a layer's apply one per file not yet published. Returns
/// the limit now in force. The corresponding C functions are `getrlimit`/`setrlimit`.
@discardableResult
public func raiseOpenFileLimit() -> Int {
  var limit = rlimit()
  guard getrlimit(RLIMIT_NOFILE_ID, &limit) == 0 else { return 1024 }
  if limit.rlim_cur < limit.rlim_max {
    let raised = rlimit(rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max)
    var wanted = raised
    if setrlimit(RLIMIT_NOFILE_ID, &wanted) == 0 { limit = raised }
  }
  return Int(clamping: limit.rlim_cur)
}

private let RLIMIT_NOFILE_ID = __rlimit_resource_t(UInt32(RLIMIT_NOFILE.rawValue))

/// An environment variable's value. The corresponding C function is `getenv`.
public func getEnvironment(_ name: String) -> String? {
  guard let value = getenv(name) else { return nil }
  return String(cString: value)
}

/// A name for a temporary object: `#` and hex digits, as the kernel's temps; unique per
/// process (a random start, then a counter), so concurrent processes do not collide.
public func temporaryName() -> [UInt8] {
  Array("#\(String(temporaryNames.next(), radix: 16))".utf8)
}

private final class TemporaryNames: @unchecked Sendable {
  private var value = randomBits() & 0xFFFF_FFFF_FFFF
  func next() -> UInt64 {
    value &+= 1
    return value
  }
}
private let temporaryNames = TemporaryNames()

/// 64 random bits from the kernel (/dev/urandom), for temp names and uuids.
public func randomBits() -> UInt64 {
  var value: UInt64 = 0
  if let fd = try? FD.openFile(atHostPath: "/dev/urandom") {
    _ = withUnsafeMutableBytes(of: &value) { Glibc.read(fd.rawValue, $0.baseAddress, 8) }
  }
  return value
}

extension Array where Element == UInt8 {
  /// The bytes as text for messages (invalid UTF-8 replaced).
  public var string: String { String(decoding: self, as: UTF8.self) }
}

/// Switches the character type to UTF-8 (C.UTF-8): libarchive converts tar names between
/// the PAX header's UTF-8 and the locale, and in the "C" locale it cannot represent
/// non-ASCII names at all. Names that are not UTF-8 still pass as raw bytes
/// (hdrcharset=BINARY). The corresponding C function is `setlocale`.
public func useUTF8Locale() {
  _ = setlocale(LC_CTYPE, "C.UTF-8")
}
