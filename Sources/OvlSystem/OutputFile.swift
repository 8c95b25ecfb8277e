import COvlSys
import Glibc

/// A file a command writes as its result (`--output`, `--to-tar`, `--descriptor`). A new
/// name or a regular file is written under a temporary name beside it (O_EXCL), fsynced,
/// and renamed over it only by `commit()`: a run that fails leaves what was there before
/// untouched and removes only its temporary file. Anything else — a device (`/dev/null`),
/// a FIFO, a socket, standard output (`-`) — is written in place and never removed;
/// fsync only where it means something (a regular file, a block device). A symlink is
/// followed to the file it names, which is then replaced.
public final class OutputFile {
  public let fd: FD
  /// What the user named (for messages).
  public let path: String
  /// Where the temporary file is renamed to, its directory, and the temporary's path (nil:
  /// in place).
  private let target: String
  private let directory: String
  private let temporary: String?
  private let syncs: Bool
  private var committed = false

  /// Whether a failed run can take the output back (false: its bytes are gone, as on
  /// standard output or a FIFO; check everything before the first byte).
  public var isRevocable: Bool { temporary != nil }

  public init(_ path: String) throws(OvlError) {
    self.path = path
    if path == "-" {
      fd = try step("dup", "standard output") { () throws(Errno) in try FD.standardOutput() }
      target = path
      directory = "."
      temporary = nil
      syncs = false
      return
    }
    var status = Glibc.stat()
    let exists = fstatat(AT_FDCWD, path, &status, 0) == 0
    let type = status.st_mode & S_IFMT
    if exists && type != S_IFREG {
      if type == S_IFDIR { throw .format(path: path, reason: "is a directory", errno: .isDirectory) }
      // A device, FIFO or socket: written as it is, never replaced or removed.
      fd = try step("open", path) { () throws(Errno) in
        FD(adopting: try retrying { Glibc.open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY) })
      }
      target = path
      directory = "."
      temporary = nil
      syncs = type == S_IFBLK
      return
    }
    // Through a symlink: the file it names is replaced, the link stays.
    var resolved = path
    if exists, let real = realpath(path, nil) {
      resolved = String(cString: real)
      free(real)
    }
    target = resolved
    let slash = resolved.lastIndex(of: "/")
    let directory = slash.map { $0 == resolved.startIndex ? "/" : String(resolved[..<$0]) } ?? "."
    self.directory = directory
    let base = slash.map { String(resolved[resolved.index(after: $0)...]) } ?? resolved
    let mode: UInt32 = exists ? UInt32(status.st_mode & 0o7777) : 0o666
    var name = ""
    let fd = try Self.createTemporary(beside: directory, base, permissions: mode, exists: exists, name: &name)
    self.fd = fd
    temporary = name
    syncs = true
  }

  /// `.NAME.ovltool-PID-N` in `directory`, made with O_EXCL (never an existing file).
  private static func createTemporary(
    beside directory: String, _ base: String, permissions: UInt32, exists: Bool, name: inout String
  ) throws(OvlError) -> FD {
    for attempt in 0..<100 {
      name = directory + (directory.hasSuffix("/") ? "" : "/") + ".\(base).ovltool-\(processID())-\(attempt)"
      let candidate = name
      do {
        let fd = FD(adopting: try retrying { Glibc.open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode_t(permissions)) })
        // The old file's mode, not cut by the umask.
        if exists { _ = Glibc.fchmod(fd.rawValue, mode_t(permissions)) }
        return fd
      } catch .fileExists {
        continue
      } catch {
        throw .system(call: "open", path: candidate, errno: error)
      }
    }
    throw .format(path: name, reason: "no free temporary name", errno: .fileExists)
  }

  /// The output is complete: fsynced, renamed over its name — or over `name` in the same
  /// directory, for an output named only once written (a blob named by its digest) — and
  /// the directory fsynced.
  public func commit(as name: String? = nil) throws(OvlError) {
    if syncs { try step("fsync", path) { () throws(Errno) in try fd.sync() } }
    guard let temporary else { committed = true; return }
    let final = name.map { directory + "/" + $0 } ?? target
    try step("rename", final) { () throws(Errno) in try renameHostFile(temporary, to: final) }
    committed = true
    try step("fsync", directory) { () throws(Errno) in try FD.openDirectory(atHostPath: directory).sync() }
  }

  deinit {
    if !committed, let temporary { removeHostFile(temporary) }
  }
}
