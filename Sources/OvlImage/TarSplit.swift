import CArchive
import OvlFormat
import OvlSystem

/// A layer's tar put back together from its unpacked directory and the tar-split file
/// that containers/storage (`overlay-layers/<id>.tar-split.gz`) and Docker
/// (`layerdb/sha256/<chain>/tar-split.json.gz`) keep: gzip'd JSON lines, each a raw segment
/// of the tar (type 2, headers and padding, base64) or a file entry (type 1: `size` bytes of
/// `name` from the directory). The digest of the result is the layer's DiffID.
public enum TarSplit {
  /// "sha256:<hex>" of the tar that `tarSplit` and `diff` make together.
  public static func digest(tarSplit file: borrowing FD, path: String, diff: borrowing FD, diffPath: String) throws(OvlError) -> String {
    let text = try decompressed(file, name: path)
    let digest = SHA256Digest()
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
    defer { buffer.deallocate() }
    for (number, line) in text.split(separator: UInt8(ascii: "\n")).enumerated() {
      let entry: JSONValue
      do { entry = try JSONValue(parsing: Array(line)) } catch {
        throw .refused(path: path, reason: "line \(number + 1): \(error)", errno: .invalidArgument)
      }
      switch entry["type"]?.int64 {
      case 2:
        guard let payload = entry["payload"]?.string.flatMap({ Base64.decode(Array($0.utf8)) }) else {
          throw .refused(path: path, reason: "line \(number + 1): a segment without a base64 payload", errno: .invalidArgument)
        }
        payload.withUnsafeBytes { digest.update($0) }
      case 1:
        let size = entry["size"]?.int64 ?? 0
        guard size > 0 else { continue }
        var name: [UInt8]
        if let raw = entry["name_raw"]?.string { name = Base64.decode(Array(raw.utf8)) ?? [] } else { name = Array((entry["name"]?.string ?? "").utf8) }
        while name.first == UInt8(ascii: "/") || (name.count > 1 && name[0] == UInt8(ascii: ".") && name[1] == UInt8(ascii: "/")) {
          name.removeFirst(name.first == UInt8(ascii: "/") ? 1 : 2)
        }
        let shown = diffPath + "/" + String(decoding: name, as: UTF8.self)
        let data = try step("open", shown) { () throws(Errno) in try FD.open(beneath: diff, path: name, .readOnly) }
        var left = Int(size)
        while left > 0 {
          let want = min(left, buffer.count)
          let n = try step("read", shown) { () throws(Errno) in try data.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want])) }
          if n == 0 { throw .refused(path: shown, reason: "shorter than the \(size) bytes its tar entry holds", errno: .invalidArgument) }
          digest.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
          left -= n
        }
      default:
        throw .refused(path: path, reason: "line \(number + 1): an entry of unknown type", errno: .invalidArgument)
      }
    }
    return "sha256:" + digest.finish().map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined()
  }

  /// The whole decompressed contents of a gzip (or zstd, or plain) file.
  static func decompressed(_ file: borrowing FD, name: String) throws(OvlError) -> [UInt8] {
    guard let reader = archive_read_new() else { throw .system(call: "archive_read_new", path: name, errno: .noMemory) }
    defer { archive_read_free(reader) }
    archive_read_support_filter_gzip(reader)
    archive_read_support_filter_zstd(reader)
    archive_read_support_format_raw(reader)
    if archive_read_open_fd(reader, file.rawValue, 1 << 16) != ARCHIVE_OK { throw LayerReader.refusal(reader, name) }
    guard let header = archive_entry_new() else { throw .system(call: "archive_entry_new", path: name, errno: .noMemory) }
    defer { archive_entry_free(header) }
    guard archive_read_next_header2(reader, header) == ARCHIVE_OK else { return [] }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
      let n = chunk.withUnsafeMutableBytes { archive_read_data(reader, $0.baseAddress, $0.count) }
      if n < 0 { throw LayerReader.refusal(reader, name) }
      if n == 0 { return out }
      out += chunk[0..<n]
    }
  }
}
