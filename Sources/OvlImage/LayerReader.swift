import CArchive
import OvlSystem

/// Reads a layer (tar, pax, GNU tar; plain, gzip or zstd — detected from the bytes) and
/// computes its DiffID over the *uncompressed* stream while the entries are read: an outer
/// libarchive reader in raw format decompresses, an inner one parses the tar from those
/// bytes, so the hash sees exactly the tar.
public final class LayerReader {
  private let outer: OpaquePointer
  private let inner: OpaquePointer
  private let source: Source
  /// The tar parser reads the file itself (no DiffID, no decompression).
  private var direct = false
  private var entry: OpaquePointer?
  public private(set) var entriesRead = 0
  /// How errors name the layer: `layer FILE` (`layer` for standard input).
  private let name: String
  /// The path of the last entry read whole, for errors about the one after it.
  private var lastPath: [UInt8]?
  /// Where entries' data is read to, one buffer for the whole layer.
  private let dataBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)

  /// Pulls decompressed bytes from `outer` for the tar parser, hashing them. The bytes stay
  /// where libarchive has them (`archive_read_data_block`: no copy), valid until the next call.
  final class Source {
    let outer: OpaquePointer
    let digest = SHA256Digest()
    /// False for a pass that needs no DiffID (apply's check pass without --diffid).
    var hashing = true
    private(set) var block: UnsafeRawPointer?
    var size: UInt64 = 0
    var error: OvlError?
    var ended = false

    /// The reader's name for the layer, for errors.
    let name: String

    init(outer: OpaquePointer, name: String) {
      self.outer = outer
      self.name = name
    }

    func next() -> Int {
      while !ended {
        var pointer: UnsafeRawPointer?
        var length = 0
        var offset: la_int64_t = 0
        let status = archive_read_data_block(outer, &pointer, &length, &offset)
        if status == ARCHIVE_EOF {
          ended = true
          break
        }
        if status < ARCHIVE_WARN {
          error = LayerReader.refusal(outer, name + " (decompressing)")
          return -1
        }
        // The raw format hands out the stream in order; a gap would be bytes never hashed.
        guard offset == la_int64_t(size) else {
          error = .refused(path: name, reason: "decompressed stream out of order at byte \(size)", errno: .ioError)
          return -1
        }
        guard let pointer, length > 0 else { continue }
        if hashing { digest.update(UnsafeRawBufferPointer(start: pointer, count: length)) }
        size += UInt64(length)
        block = pointer
        return length
      }
      block = nil
      return 0
    }

    /// Hashes what the tar parser did not need (padding after the end-of-archive blocks):
    /// the DiffID is the digest of the whole uncompressed blob.
    func drain() throws(OvlError) {
      while true {
        let n = next()
        if n < 0 { throw error ?? .refused(path: name, reason: "read error", errno: .ioError) }
        if n == 0 { return }
      }
    }
  }

  /// `fd` is a raw descriptor the caller keeps open; `file` names it in errors (nil for
  /// standard input). `computingDiffID: false` skips the hash: end with `finish`, not
  /// `finishDiffID`.
  public init(fd: Int32, file: String? = nil, computingDiffID: Bool = true) throws(OvlError) {
    name = file.map { "layer " + $0 } ?? "layer"
    useUTF8Locale()
    guard let outer = archive_read_new(), let inner = archive_read_new() else {
      throw .system(call: "archive_read_new", path: "layer", errno: .noMemory)
    }
    self.outer = outer
    self.inner = inner
    source = Source(outer: outer, name: name)
    source.hashing = computingDiffID
    // A pass that needs no DiffID over a plain (uncompressed) tar file: the tar parser reads
    // the file itself and seeks over the entries' data it is not asked for.
    if !computingDiffID && Self.isPlainFile(rawDescriptor: fd) {
      direct = true
      archive_read_support_format_tar(inner)
      archive_read_support_format_gnutar(inner)
      if archive_read_open_fd(inner, fd, 1 << 16) != ARCHIVE_OK { throw Self.refusal(inner, name) }
      return
    }
    archive_read_support_filter_gzip(outer)
    archive_read_support_filter_zstd(outer)
    archive_read_support_format_raw(outer)
    if archive_read_open_fd(outer, fd, 1 << 16) != ARCHIVE_OK { throw Self.refusal(outer, name) }
    guard let header = archive_entry_new() else { throw .system(call: "archive_entry_new", path: "layer", errno: .noMemory) }
    defer { archive_entry_free(header) }
    if archive_read_next_header2(outer, header) != ARCHIVE_OK {
      // An empty input has no raw entry: treat it as an empty (truncated) layer.
      throw .refused(path: name, reason: "empty or unreadable input", errno: .invalidArgument)
    }
    archive_read_support_format_tar(inner)
    archive_read_support_format_gnutar(inner)
    let status = archive_read_open(inner, Unmanaged.passUnretained(source).toOpaque(), nil, sourceRead, nil)
    if status != ARCHIVE_OK { throw source.error ?? Self.refusal(inner, name) }
  }

  /// libarchive's error about the layer: a damaged or unreadable layer is refused.
  static func refusal(_ a: OpaquePointer, _ what: String) -> OvlError {
    guard case .format(let path, let reason, let errno) = LayerWriter.failure(a, what) else { return LayerWriter.failure(a, what) }
    return .refused(path: path, reason: reason, errno: errno)
  }

  /// A regular file that is neither gzip nor zstd: its DiffID is the digest of the file
  /// itself, and the tar parser can read it directly.
  public static func isPlainFile(rawDescriptor fd: Int32) -> Bool {
    guard let head = FD.peekRegularFile(rawDescriptor: fd, count: 4), head.count == 4 else { return false }
    return !(head[0] == 0x1F && head[1] == 0x8B) && head != [0x28, 0xB5, 0x2F, 0xFD]
  }

  deinit {
    archive_read_free(inner)
    archive_read_free(outer)
    dataBuffer.deallocate()
  }

  /// The next entry, or nil at the end of the archive. A truncated or corrupt archive is an
  /// error naming the layer file, the entry, the last one read whole and the byte offset.
  public func next() throws(OvlError) -> LayerEntry? {
    var pointer: OpaquePointer?
    let status = archive_read_next_header(inner, &pointer)
    if status == ARCHIVE_EOF { return nil }
    // Not only errors: a header libarchive warns about or would skip is refused too. A bad
    // checksum (ARCHIVE_RETRY) would go on at the next header, dropping the entry, where
    // GNU tar exits 2; a malformed PAX record (ARCHIVE_WARN) would be ignored. A layer is
    // applied as it is or refused.
    guard status == ARCHIVE_OK, let pointer else {
      throw corrupt(entryName(entriesRead + 1), libarchiveSays: "tar")
    }
    entriesRead += 1
    let entry = LayerEntry(pointer)
    lastPath = entry.path
    return entry
  }

  /// `layer FILE, data of entry N "PATH"`: a read of the current entry's data that failed.
  private func dataName() -> String {
    name + ", data of entry \(entriesRead) \"" + String(decoding: lastPath ?? [], as: UTF8.self) + "\""
  }

  /// `layer FILE, entry N (after "PATH", header at byte B of the tar stream)`.
  private func entryName(_ number: Int) -> String {
    let after = lastPath.map { "after \"" + String(decoding: $0, as: UTF8.self) + "\", " } ?? ""
    let position = archive_read_header_position(inner)
    let at = position >= 0 ? "header at byte \(position) of the tar stream" : "at the end of the stream"
    return name + ", entry \(number) (" + after + at + ")"
  }

  /// A read that failed: the decompressing side's error if it had one, else the tar
  /// parser's, named `path` (`what`: the name in libarchive's message).
  private func corrupt(_ path: String, libarchiveSays what: String) -> OvlError {
    if let failure = source.error {
      guard case .refused(_, let reason, _) = failure else { return failure }
      return .refused(path: path, reason: "corrupt or truncated compressed stream: \(reason)", errno: .invalidArgument)
    }
    let message = archive_error_string(inner).map { String(cString: $0) } ?? "failed"
    return .refused(path: path, reason: "corrupt or truncated archive: \(what): \(message)", errno: .invalidArgument)
  }

  /// The current entry's data when it is `size` bytes or less, read straight into the
  /// array (no copy through the read buffer); more than `size` bytes is an error.
  public func readAll(size: Int) throws(OvlError) -> [UInt8] {
    var failure: OvlError?
    var tooLong = false
    let bytes = [UInt8](unsafeUninitializedCapacity: max(size, 1)) { buffer, count in
      count = 0
      guard let base = buffer.baseAddress else { return }
      while true {
        let n = archive_read_data(inner, base + count, buffer.count - count)
        if n < 0 {
          failure = corrupt(dataName(), libarchiveSays: "tar")
          return
        }
        if n == 0 { return }
        count += n
        if count > size {
          tooLong = true
          return
        }
      }
    }
    if let failure { throw failure }
    if tooLong { throw .refused(path: dataName(), reason: "more data than the header's size", errno: .invalidArgument) }
    return bytes
  }

  /// Streams the current entry's data to `body`.
  public func readData(_ body: (UnsafeRawBufferPointer) throws(OvlError) -> Void) throws(OvlError) {
    guard let base = dataBuffer.baseAddress else { return }
    while true {
      let n = archive_read_data(inner, base, dataBuffer.count)
      if n < 0 {
        throw corrupt(dataName(), libarchiveSays: "tar")
      }
      if n == 0 { return }
      try body(UnsafeRawBufferPointer(start: base, count: n))
    }
  }

  /// After the last entry: the rest of the stream read (a damaged end is an error).
  public func finish() throws(OvlError) {
    if !direct { try source.drain() }
  }

  /// After the last entry: the DiffID of the whole uncompressed stream.
  public func finishDiffID() throws(OvlError) -> String {
    try source.drain()
    return "sha256:" + hex(source.digest.final())
  }
}

private func sourceRead(_: OpaquePointer?, _ client: UnsafeMutableRawPointer?, _ out: UnsafeMutablePointer<UnsafeRawPointer?>?) -> Int {
  guard let client, let out else { return -1 }
  let source = Unmanaged<LayerReader.Source>.fromOpaque(client).takeUnretainedValue()
  let n = source.next()
  out.pointee = source.block
  return n
}

/// One header of a layer, copied out of libarchive (valid after the next header is read).
public struct LayerEntry {
  public enum Kind: Equatable {
    case directory, regular, symlink, hardlink, character, block, fifo, socket, unknown
  }
  public internal(set) var path: [UInt8]
  public internal(set) var kind: Kind
  public internal(set) var permissions: UInt32
  public internal(set) var uid: UInt32
  public internal(set) var gid: UInt32
  public internal(set) var mtime: Int64
  public internal(set) var size: Int64
  public internal(set) var linkTarget: [UInt8]?
  public internal(set) var rdevMajor: UInt32
  public internal(set) var rdevMinor: UInt32
  public internal(set) var xattrs: [([UInt8], [UInt8])]

  init(_ e: OpaquePointer) {
    path = archive_entry_pathname(e).map { bytes($0) } ?? []
    let hardlink = archive_entry_hardlink(e).map { bytes($0) }
    let mode = UInt32(archive_entry_mode(e))
    permissions = mode & 0o7777
    switch mode & 0o170000 {
    case _ where hardlink != nil: kind = .hardlink
    case fileTypeDirectory: kind = .directory
    case fileTypeRegular: kind = .regular
    case fileTypeSymlink: kind = .symlink
    case fileTypeCharacter: kind = .character
    case fileTypeBlock: kind = .block
    case fileTypeFifo: kind = .fifo
    case fileTypeSocket: kind = .socket
    default: kind = .unknown
    }
    linkTarget = hardlink ?? archive_entry_symlink(e).map { bytes($0) }
    uid = UInt32(truncatingIfNeeded: archive_entry_uid(e))
    gid = UInt32(truncatingIfNeeded: archive_entry_gid(e))
    mtime = Int64(archive_entry_mtime(e)) * 1_000_000_000 + Int64(archive_entry_mtime_nsec(e))
    size = Int64(archive_entry_size(e))
    rdevMajor = UInt32(truncatingIfNeeded: archive_entry_rdevmajor(e))
    rdevMinor = UInt32(truncatingIfNeeded: archive_entry_rdevminor(e))
    var list: [([UInt8], [UInt8])] = []
    archive_entry_xattr_reset(e)
    var name: UnsafePointer<CChar>?
    var value: UnsafeRawPointer?
    var length = 0
    while archive_entry_xattr_next(e, &name, &value, &length) == ARCHIVE_OK {
      guard let name else { continue }
      let v = value.map { Array(UnsafeRawBufferPointer(start: $0, count: length)) } ?? []
      list.append((bytes(name), v))
    }
    xattrs = list
  }
}

private func bytes(_ c: UnsafePointer<CChar>) -> [UInt8] {
  Array(UnsafeRawBufferPointer(start: c, count: strlenBytes(c)))
}

private func strlenBytes(_ c: UnsafePointer<CChar>) -> Int {
  var n = 0
  while c[n] != 0 { n += 1 }
  return n
}
