import OvlFormat
import OvlSystem

/// A store's root directory, opened once; everything below it is reached with `openat2`
/// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS: a symlink in the store's metadata (a hostile
/// `layers.json` → `/etc/shadow`) is refused, never followed. Mounts beneath the root are
/// crossed (containers/storage bind-mounts `overlay/` on itself while podman runs).
final class StoreTree {
  /// The root as the user gave it, without trailing slashes.
  let path: String
  let fd: FD

  init(path: String) throws(OvlError) {
    var p = path
    while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
    self.path = p
    fd = try step("open", p) { () throws(Errno) in try FD.openDirectory(atHostPath: p) }
  }

  /// The host path of `relative` (for options and messages).
  func full(_ relative: String) -> String { path == "/" ? "/" + relative : path + "/" + relative }

  /// A failed resolution beneath the root: a symlink on the way is the store's fault.
  func failure(_ call: String, _ relative: String, _ errno: Errno) -> OvlError {
    if errno == .tooManySymbolicLinkLevels || errno == .improperLink {
      return .refused(path: full(relative), reason: "a symlink on the way or leaving the store (store metadata is read without following links)", errno: errno)
    }
    return .system(call: call, path: full(relative), errno: errno)
  }

  func open(_ relative: String, _ mode: OpenMode) throws(OvlError) -> FD {
    do { return try FD.open(beneath: fd, path: Array(relative.utf8), mode, crossingMounts: true) } catch {
      throw failure("open", relative, error)
    }
  }

  /// nil where `relative` does not exist (ENOENT).
  func openIfPresent(_ relative: String, _ mode: OpenMode) throws(OvlError) -> FD? {
    do { return try FD.open(beneath: fd, path: Array(relative.utf8), mode, crossingMounts: true) } catch {
      if error == .noSuchFileOrDirectory { return nil }
      throw failure("open", relative, error)
    }
  }

  /// The file's bytes; nil where it does not exist (ENOENT).
  func readIfPresent(_ relative: String, limit: Int = 256 << 20) throws(OvlError) -> [UInt8]? {
    guard let file = try openIfPresent(relative, .readOnly) else { return nil }
    let status = try step("statx", full(relative)) { () throws(Errno) in try file.stat() }
    guard status.type == .regular else {
      throw .refused(path: full(relative), reason: "not a regular file", errno: .invalidArgument)
    }
    let bytes = try step("read", full(relative)) { () throws(Errno) in try file.readAll(limit: limit + 1) }
    guard bytes.count <= limit else { throw .refused(path: full(relative), reason: "larger than \(limit) bytes", errno: .fileTooLarge) }
    return bytes
  }

  func read(_ relative: String) throws(OvlError) -> [UInt8] {
    guard let bytes = try readIfPresent(relative) else {
      throw .system(call: "open", path: full(relative), errno: .noSuchFileOrDirectory)
    }
    return bytes
  }

  /// A one-line file (`link`, `lower`, Docker's `cache-id`): its text without the line end.
  func readLine(_ relative: String) throws(OvlError) -> String? {
    guard let bytes = try readIfPresent(relative, limit: 1 << 20) else { return nil }
    var text = String(decoding: bytes, as: UTF8.self)
    while let last = text.last, last == "\n" || last == " " || last == "\r" { text.removeLast() }
    return text
  }

  func readJSON(_ relative: String) throws(OvlError) -> JSONValue? {
    guard let bytes = try readIfPresent(relative) else { return nil }
    do { return try JSONValue(parsing: bytes) } catch {
      throw .refused(path: full(relative), reason: "malformed JSON: \(error)", errno: .invalidArgument)
    }
  }

  /// Whether `relative` is a directory (reached without a symlink).
  func isDirectory(_ relative: String) -> Bool {
    (try? FD.open(beneath: fd, path: Array(relative.utf8), .directoryPath, crossingMounts: true)) != nil
  }

  /// The names in a directory (without . and ..); nil where it does not exist.
  func entries(_ relative: String) throws(OvlError) -> [DirectoryEntry]? {
    guard let dir = try openIfPresent(relative, .directory) else { return nil }
    return try step("getdents64", full(relative)) { () throws(Errno) in try dir.entries() }
  }

  /// The target of the symlink `name` in the directory `relative` (readlinkat); nil where
  /// the name does not exist.
  func readLink(in relative: String, _ name: String) throws(OvlError) -> [UInt8]? {
    let dir = try open(relative, .directoryPath)
    do { return try dir.readLink(Array(name.utf8)) } catch {
      if error == .noSuchFileOrDirectory { return nil }
      if error == .invalidArgument {
        throw .refused(path: full(relative + "/" + name), reason: "not a symlink", errno: error)
      }
      throw .system(call: "readlinkat", path: full(relative + "/" + name), errno: error)
    }
  }
}

/// The identifiers a store uses, checked before they become path components.
public enum StoreID {
  /// 64 lowercase hex digits (containers/storage and Docker IDs), optionally with Docker's
  /// `-init` suffix.
  public static func isValid(_ id: String) -> Bool {
    var hex = Substring(id)
    if hex.hasSuffix("-init") { hex = hex.dropLast(5) }
    return hex.utf8.count == 64 && hex.utf8.allSatisfy(isHexDigit)
  }

  static func isHexDigit(_ c: UInt8) -> Bool {
    (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "f"))
  }

  /// An `l/` link name: containers/storage and Docker make 26 of `[A-Z0-9]`; any short
  /// run of letters and digits is accepted, nothing that could be a path.
  public static func isLinkName(_ name: Substring) -> Bool {
    !name.isEmpty && name.utf8.count <= 64 && name.utf8.allSatisfy { c in
      (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
        || (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z"))
    }
  }

  /// The first 12 digits, as podman and docker show IDs.
  public static func short(_ id: String) -> String { String(id.prefix(12)) }
}
