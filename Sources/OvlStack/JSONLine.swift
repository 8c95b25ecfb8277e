import OvlFormat
import OvlSystem

/// The JSON-lines encoding of view records: compact, keys in a fixed order, byte strings
/// written as UTF-8 where valid and as `\u00XX` per byte where not.
public enum JSONLine {
  public static func encode(_ r: ViewRecord) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(256)
    out += Array(#"{"path":"#.utf8)
    string(r.path.isEmpty ? [UInt8(ascii: "/")] : r.path, into: &out)
    out += Array(#","type":""#.utf8) + Array(r.status.type.rawValue.utf8) + [UInt8(ascii: "\"")]
    field("mode", Int(r.status.permissions), &out)
    field("uid", Int(r.status.uid), &out)
    field("gid", Int(r.status.gid), &out)
    if let inode = r.inode {
      out += Array(#","ino":"#.utf8) + Array((inode.map { String($0) } ?? "null").utf8)
    }
    if r.status.type == .regular || r.status.type == .symlink {
      field("size", Int(r.status.size), &out)
    }
    if let target = r.target {
      out += Array(#","target":"#.utf8)
      string(target, into: &out)
    }
    if r.status.type == .character || r.status.type == .block {
      out += Array(#","rdev":["#.utf8) + Array(String(r.status.rdevMajor).utf8) + [UInt8(ascii: ",")]
        + Array(String(r.status.rdevMinor).utf8) + [UInt8(ascii: "]")]
    }
    out += Array(#","mtime":"#.utf8) + Array(String(r.status.mtime).utf8)
    out += Array(#","xattrs":{"#.utf8)
    for (i, (name, value)) in r.xattrs.enumerated() {
      if i > 0 { out.append(UInt8(ascii: ",")) }
      string(name, into: &out)
      out += [UInt8(ascii: ":"), UInt8(ascii: "\"")] + Array(Hex.encode(value).utf8) + [UInt8(ascii: "\"")]
    }
    out.append(UInt8(ascii: "}"))
    if let digest = r.sha256 {
      out += Array(#","sha256":""#.utf8) + Array(Hex.encode(digest).utf8) + [UInt8(ascii: "\"")]
    }
    field("layer", r.layer, &out)
    out.append(UInt8(ascii: "}"))
    return out
  }

  /// The line for an entry that could not be read: `{"path":...,"error":"ENOENT"}`.
  public static func encodeError(path: [UInt8], _ error: OvlError) -> [UInt8] {
    var out = Array(#"{"path":"#.utf8)
    string(path.isEmpty ? [UInt8(ascii: "/")] : path, into: &out)
    out += Array(#","error":""#.utf8) + Array(error.errno.name.utf8) + Array("\"}".utf8)
    return out
  }

  static func field(_ key: String, _ value: Int, _ out: inout [UInt8]) {
    out += [UInt8(ascii: ","), UInt8(ascii: "\"")] + Array(key.utf8) + [UInt8(ascii: "\""), UInt8(ascii: ":")]
    out += Array(String(value).utf8)
  }

  /// A JSON string of raw bytes. Valid UTF-8 is kept; `"` and `\` are escaped; control bytes
  /// (below 0x20, and 0x7f) and every byte of an invalid UTF-8 sequence become `\u00XX`.
  public static func string(_ bytes: [UInt8], into out: inout [UInt8]) {
    JSONText.string(bytes, into: &out, style: .lines)
  }
}
