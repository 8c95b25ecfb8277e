import CArchive
import OvlSystem

/// How the layer blob is compressed. The settings are fixed so that the same tar always
/// gives the same blob digest (OCI: the digest names the blob, the DiffID the tar).
public enum LayerCompression: String, Sendable, CaseIterable {
  case none, gzip, zstd

  public var mediaType: String {
    switch self {
    case .none: "application/vnd.oci.image.layer.v1.tar"
    case .gzip: "application/vnd.oci.image.layer.v1.tar+gzip"
    case .zstd: "application/vnd.oci.image.layer.v1.tar+zstd"
    }
  }
}

/// What a finished layer is: the two digests OCI needs, computed in the same pass.
public struct LayerDescriptor: Sendable, Equatable {
  public var diffID: String
  public var digest: String
  public var size: UInt64
  public var mediaType: String
}

/// One tar entry to write. Paths are raw bytes (names need not be UTF-8).
public struct TarEntry {
  public enum Kind {
    case directory, regular(size: UInt64), symlink(target: [UInt8]), hardlink(target: [UInt8])
    case character(major: UInt32, minor: UInt32), block(major: UInt32, minor: UInt32), fifo
  }
  public var path: [UInt8]
  public var kind: Kind
  public var permissions: UInt32
  public var uid: UInt32
  public var gid: UInt32
  public var mtime: Int64
  /// Sorted by name: libarchive writes them in the order given.
  public var xattrs: [([UInt8], [UInt8])]

  public init(path: [UInt8], kind: Kind, permissions: UInt32, uid: UInt32, gid: UInt32, mtime: Int64, xattrs: [([UInt8], [UInt8])] = []) {
    self.path = path
    self.kind = kind
    self.permissions = permissions
    self.uid = uid
    self.gid = gid
    self.mtime = mtime
    self.xattrs = xattrs
  }

  /// A whiteout or opaque marker: an empty regular file, mode 0, owner 0:0, mtime 0, so that
  /// markers never vary with the inode the kernel happened to link them to.
  public static func marker(_ path: [UInt8]) -> TarEntry {
    TarEntry(path: path, kind: .regular(size: 0), permissions: 0, uid: 0, gid: 0, mtime: 0)
  }
}

/// The bytes leaving libarchive: hashed, then handed on (to the compressor or the output).
/// With a background queue, the bytes are gathered in pieces of `pieceSize` and hashed and
/// handed on there, in order, while the caller reads the next files; a failure there is
/// kept and reported by `drain`.
final class DigestingSink: @unchecked Sendable {
  let digest = SHA256Digest()
  /// false: the bytes are only counted and handed on (their digest is another sink's).
  let hashes: Bool
  var size: UInt64 = 0
  var error: OvlError?
  let forward: (UnsafeRawBufferPointer) throws(OvlError) -> Void
  private let queue: BackgroundQueue?
  private var staged: [UInt8] = []
  static let pieceSize = 256 << 10

  init(hashes: Bool = true, queue: BackgroundQueue? = nil, forward: @escaping (UnsafeRawBufferPointer) throws(OvlError) -> Void) {
    self.hashes = hashes
    self.queue = queue
    self.forward = forward
  }

  func accept(_ buffer: UnsafeRawBufferPointer) -> Int {
    guard let queue else { return process(buffer) }
    staged.append(contentsOf: buffer)
    if staged.count >= Self.pieceSize { handOver(queue) }
    return buffer.count
  }

  private func handOver(_ queue: BackgroundQueue) {
    let piece = staged
    staged = []
    staged.reserveCapacity(Self.pieceSize + (16 << 10))
    queue.submit { piece.withUnsafeBytes { _ = self.process($0) } }
  }

  /// Hands over what is gathered and waits until every piece was processed; then `error`
  /// holds the first failure.
  func drain() {
    guard let queue else { return }
    if !staged.isEmpty { handOver(queue) }
    queue.wait()
  }

  private func process(_ buffer: UnsafeRawBufferPointer) -> Int {
    // After a failure the rest is dropped: the layer is not written anyway.
    if error != nil { return -1 }
    if hashes { digest.update(buffer) }
    size += UInt64(buffer.count)
    do {
      try forward(buffer)
    } catch {
      self.error = error
      return -1
    }
    return buffer.count
  }
}

/// libarchive's write callback: `client` is the `DigestingSink`, kept alive by its writer.
private func sinkWrite(_: OpaquePointer?, _ client: UnsafeMutableRawPointer?, _ buffer: UnsafeRawPointer?, _ length: Int) -> Int {
  guard let client, let buffer else { return -1 }
  let sink = Unmanaged<DigestingSink>.fromOpaque(client).takeUnretainedValue()
  return sink.accept(UnsafeRawBufferPointer(start: buffer, count: length))
}

// The AE_IF* macros are casts, which Swift does not import.
let fileTypeRegular: UInt32 = 0o100000
let fileTypeDirectory: UInt32 = 0o040000
let fileTypeSymlink: UInt32 = 0o120000
let fileTypeCharacter: UInt32 = 0o020000
let fileTypeBlock: UInt32 = 0o060000
let fileTypeFifo: UInt32 = 0o010000
let fileTypeSocket: UInt32 = 0o140000

/// Writes an OCI layer tar through libarchive's pax writer: PAX records only where ustar
/// cannot hold a field, xattrs as `SCHILY.xattr.*`, no 10 KiB record padding at the end, then
/// (optionally) compresses the stream with a second libarchive writer in raw format.
public final class LayerWriter {
  private let tar: OpaquePointer
  private let compressor: OpaquePointer?
  private let tarSink: DigestingSink
  private let blobSink: DigestingSink
  private let entry: OpaquePointer
  private let compression: LayerCompression
  private var closed = false
  /// Where the stream goes: the output file.
  private let output: Int32
  /// Hashes, compresses and writes the tar stream while the caller reads files.
  private let queue: BackgroundQueue?

  /// `output` is a raw descriptor the caller keeps open until `finish`.
  public init(output: Int32, compression: LayerCompression) throws(OvlError) {
    useUTF8Locale()
    self.output = output
    self.compression = compression
    guard let tar = archive_write_new(), let entry = archive_entry_new() else {
      throw .system(call: "archive_write_new", path: "-", errno: .noMemory)
    }
    self.tar = tar
    self.entry = entry
    let queue = BackgroundQueue(limit: 16)
    self.queue = queue
    // Uncompressed, the blob is the tar: its digest is the DiffID, hashed once.
    let blobSink = DigestingSink(hashes: compression != .none) { (buffer) throws(OvlError) in
      try step("write", "layer output") { () throws(Errno) in try FD.write(rawDescriptor: output, buffer) }
    }
    self.blobSink = blobSink
    if compression == .none {
      compressor = nil
      tarSink = DigestingSink(queue: queue) { (buffer) throws(OvlError) in
        if blobSink.accept(buffer) < 0 { throw blobSink.error ?? .system(call: "write", path: "layer output", errno: .ioError) }
      }
    } else {
      guard let compressor = archive_write_new() else { throw .system(call: "archive_write_new", path: "-", errno: .noMemory) }
      self.compressor = compressor
      tarSink = DigestingSink(queue: queue) { (buffer) throws(OvlError) in
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        if archive_write_data(compressor, base, buffer.count) < 0 {
          throw blobSink.error ?? Self.failure(compressor, "compress")
        }
      }
      try Self.check(compressor, "archive_write_set_format_raw", archive_write_set_format_raw(compressor))
      switch compression {
      case .gzip:
        try Self.check(compressor, "gzip filter", archive_write_add_filter_gzip(compressor))
        // No timestamp or name in the gzip header; a fixed level: the same tar, the same blob.
        try Self.check(compressor, "gzip options", archive_write_set_filter_option(compressor, "gzip", "timestamp", nil))
        try Self.check(compressor, "gzip options", archive_write_set_filter_option(compressor, "gzip", "compression-level", "6"))
      case .zstd:
        try Self.check(compressor, "zstd filter", archive_write_add_filter_zstd(compressor))
        try Self.check(compressor, "zstd options", archive_write_set_filter_option(compressor, "zstd", "compression-level", "3"))
      case .none: break
      }
      try Self.configureBlocking(compressor)
      try Self.check(compressor, "open", archive_write_open2(compressor, Unmanaged.passUnretained(blobSink).toOpaque(), nil, sinkWrite, nil, nil))
      let raw = archive_entry_new()
      defer { archive_entry_free(raw) }
      archive_entry_set_pathname(raw, "layer.tar")
      archive_entry_set_filetype(raw, fileTypeRegular)
      archive_entry_set_perm(raw, 0o644)
      try Self.check(compressor, "raw header", archive_write_header(compressor, raw))
    }
    try Self.check(tar, "archive_write_set_format_pax_restricted", archive_write_set_format_pax_restricted(tar))
    // SCHILY.xattr only (libarchive would add LIBARCHIVE.xattr duplicates): what Go,
    // GNU tar and the OCI tools read.
    try Self.check(tar, "pax options", archive_write_set_format_option(tar, "pax", "xattrheader", "SCHILY"))
    try Self.configureBlocking(tar)
    try Self.check(tar, "open", archive_write_open2(tar, Unmanaged.passUnretained(tarSink).toOpaque(), nil, sinkWrite, nil, nil))
  }

  deinit {
    queue?.close()
    archive_entry_free(entry)
    archive_write_free(tar)
    if let compressor { archive_write_free(compressor) }
  }

  /// 10 KiB blocks for throughput, but the last one not padded (Go writers do not pad; the
  /// DiffID should not depend on the writer's record size).
  private static func configureBlocking(_ a: OpaquePointer) throws(OvlError) {
    try check(a, "block size", archive_write_set_bytes_per_block(a, 10240))
    try check(a, "block size", archive_write_set_bytes_in_last_block(a, 1))
  }

  static func failure(_ a: OpaquePointer, _ what: String) -> OvlError {
    let message = archive_error_string(a).map { String(cString: $0) } ?? "failed"
    let code = archive_errno(a)
    return .format(path: what, reason: "libarchive: \(message)", errno: Errno(rawValue: code == 0 ? Errno.ioError.rawValue : code))
  }

  private static func check(_ a: OpaquePointer, _ what: String, _ status: Int32) throws(OvlError) {
    if status < ARCHIVE_WARN { throw failure(a, what) }
  }

  /// The first failure of the output side, once the background thread is done with what
  /// it was given.
  private func sinkError() -> OvlError? {
    tarSink.drain()
    return tarSink.error ?? blobSink.error
  }

  /// Writes one header. For a regular entry, `data` is then called to stream the contents.
  public func write(_ item: TarEntry, data: ((UnsafeRawBufferPointer) throws(OvlError) -> Void) throws(OvlError) -> Void = { _ throws(OvlError) in }) throws(OvlError) {
    let shown = String(decoding: item.path, as: UTF8.self)
    archive_entry_clear(entry)
    item.path.withCString { archive_entry_copy_pathname(entry, $0) }
    archive_entry_set_perm(entry, mode_t(item.permissions & 0o7777))
    archive_entry_set_uid(entry, la_int64_t(item.uid))
    archive_entry_set_gid(entry, la_int64_t(item.gid))
    archive_entry_set_mtime(entry, time_t(item.mtime), 0)
    var size: UInt64 = 0
    switch item.kind {
    case .directory: archive_entry_set_filetype(entry, fileTypeDirectory)
    case .regular(let s):
      archive_entry_set_filetype(entry, fileTypeRegular)
      size = s
    case .symlink(let target):
      archive_entry_set_filetype(entry, fileTypeSymlink)
      target.withCString { archive_entry_copy_symlink(entry, $0) }
    case .hardlink(let target):
      archive_entry_set_filetype(entry, fileTypeRegular)
      target.withCString { archive_entry_copy_hardlink(entry, $0) }
    case .character(let major, let minor):
      archive_entry_set_filetype(entry, fileTypeCharacter)
      archive_entry_set_rdevmajor(entry, dev_t(major))
      archive_entry_set_rdevminor(entry, dev_t(minor))
    case .block(let major, let minor):
      archive_entry_set_filetype(entry, fileTypeBlock)
      archive_entry_set_rdevmajor(entry, dev_t(major))
      archive_entry_set_rdevminor(entry, dev_t(minor))
    case .fifo: archive_entry_set_filetype(entry, fileTypeFifo)
    }
    archive_entry_set_size(entry, la_int64_t(size))
    for (name, value) in item.xattrs {
      name.withCString { cname in
        value.withUnsafeBytes { archive_entry_xattr_add_entry(entry, cname, $0.baseAddress, value.count) }
      }
    }
    if archive_write_header(tar, entry) < ARCHIVE_WARN {
      throw sinkError() ?? .refused(path: shown, reason: "tar header: \(Self.failure(tar, shown))", errno: .invalidArgument)
    }
    guard size > 0 else { return }
    var written: UInt64 = 0
    try data { (buffer) throws(OvlError) in
      guard let base = buffer.baseAddress, buffer.count > 0 else { return }
      let take = min(UInt64(buffer.count), size - written)
      if take == 0 { return }
      if archive_write_data(tar, base, Int(take)) < 0 {
        throw sinkError() ?? Self.failure(tar, shown)
      }
      written += take
    }
    if written != size {
      throw .format(path: shown, reason: "changed size while exported (\(written) of \(size) bytes)", errno: .ioError)
    }
  }

  /// Ends the archive (two zero blocks), flushes the compressor and returns the digests.
  public func finish() throws(OvlError) -> LayerDescriptor {
    guard !closed else { throw .usage("layer already finished") }
    closed = true
    if archive_write_close(tar) < ARCHIVE_WARN { throw sinkError() ?? Self.failure(tar, "tar end") }
    // The background thread has the rest of the stream: after it, the compressor is ours.
    if let error = sinkError() { throw error }
    if let compressor {
      if archive_write_finish_entry(compressor) < ARCHIVE_WARN { throw sinkError() ?? Self.failure(compressor, "compress") }
      if archive_write_close(compressor) < ARCHIVE_WARN { throw sinkError() ?? Self.failure(compressor, "compress") }
    }
    let diffID = "sha256:" + hex(tarSink.digest.final())
    let digest = compression == .none ? diffID : "sha256:" + hex(blobSink.digest.final())
    return LayerDescriptor(diffID: diffID, digest: digest, size: blobSink.size, mediaType: compression.mediaType)
  }
}

func hex(_ bytes: [UInt8]) -> String {
  let digits = Array("0123456789abcdef".utf8)
  var out: [UInt8] = []
  out.reserveCapacity(bytes.count * 2)
  for b in bytes {
    out.append(digits[Int(b >> 4)])
    out.append(digits[Int(b & 15)])
  }
  return String(decoding: out, as: UTF8.self)
}

extension Array where Element == UInt8 {
  func withCString<R>(_ body: (UnsafePointer<CChar>) -> R) -> R {
    (self + [0]).withUnsafeBufferPointer { buffer in
      buffer.withMemoryRebound(to: CChar.self) { body($0.baseAddress!) }
    }
  }
}
