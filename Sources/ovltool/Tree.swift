import ArgumentParser
import OvlStack
import OvlSystem

struct Tree: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Print the whole merged view under PATH, depth-first, names sorted by their bytes.",
    discussion: """
      With --json, one object per line: path, type, mode, uid, gid, ino (--ino), size (files, \
      symlinks), target (symlinks), rdev (devices), mtime (ns), xattrs (name -> hex), sha256 (--hash), \
      layer (0 = upper, 1 = top-most lower). An entry that cannot be read is printed as \
      {"path":...,"error":"ENOENT"} and the exit status is 1.
      """)

  @OptionGroup var stack: StackArguments
  @Flag(help: "Print JSON lines.") var json = false
  @Flag(help: "Add the SHA-256 of every regular file's contents.") var hash = false
  @Flag(help: "Add st_ino as a mount would show it (null where the kernel makes one up per mount).") var ino = false
  @Argument(help: "A path in the merged view.") var path: String = "/"

  func run() throws {
    let stack = try self.stack.open()
    let resolved = try stack.resolve(text: pathBytes(path))
    guard let entry = resolved.entry ?? stack.rootEntry(resolved.root) else {
      throw OvlError.format(path: path, reason: "no layer root", errno: .noSuchFileOrDirectory)
    }
    let out = OutputBuffer()
    var failed = false
    stack.walk(entry, dir: resolved.entry == nil ? resolved.root : nil, hash: hash, inodes: ino) { result, path in
      switch result {
      case .success(let record):
        if json {
          out.line(JSONLine.encode(record))
        } else {
          out.line(Listing.treeLine(record))
        }
      case .failure(let error):
        failed = true
        if json { out.line(JSONLine.encodeError(path: path, error)) }
        out.flush()
        report(error)
      }
    }
    out.flush()
    if failed { throw ExitCode(1) }
  }
}
