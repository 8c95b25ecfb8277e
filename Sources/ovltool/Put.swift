import ArgumentParser
import OvlOperations
import OvlSystem

struct Put: ChangeCommand {
  static let configuration = CommandConfiguration(
    abstract: "Create or replace a regular file with SRC's contents ('-': standard input).",
    discussion: """
      A new file is published complete (never half-written). An existing file is copied up and \
      rewritten in place, as open(O_TRUNC) and write(2) on a mount do: its inode, hard links and \
      xattrs stay. Symlinks are not followed.
      """)

  @OptionGroup var stack: StackArguments
  @Option(name: [.short, .long], help: ArgumentHelp("Octal mode (a new file: default 0666 less the umask).", valueName: "MODE")) var mode: String?
  @Option(help: ArgumentHelp("Owner, numeric.", valueName: "UID:GID")) var owner: String?
  @Option(help: ArgumentHelp("Modification (and access) time, seconds since the epoch.", valueName: "EPOCH[.NS]")) var mtime: String?
  @Argument(help: "The source file on the host, or '-'.") var source: String
  @Argument(help: "The path in the merged view.") var path: String

  func changes() throws(Script.SyntaxError) -> [Change] {
    let attributes = ObjectAttributes(
      permissions: try mode.map { (m) throws(Script.SyntaxError) in try Script.parseMode(Array(m.utf8)) },
      owner: try owner.map { (o) throws(Script.SyntaxError) in
        let (uid, gid) = try Script.parseOwner(Array(o.utf8))
        guard let uid, let gid else { throw Script.SyntaxError("--owner needs UID:GID") }
        return (uid, gid)
      },
      mtime: try mtime.map { (t) throws(Script.SyntaxError) in try Script.parseTime(Array(t.utf8)) })
    return [.put(try contents(), pathBytes(path), attributes)]
  }

  private func contents() throws(Script.SyntaxError) -> FileContents {
    guard source == "-" else { return .hostFile(source) }
    do {
      return .bytes(try FD.standardInput().readAll())
    } catch {
      throw Script.SyntaxError("cannot read standard input: \(error)")
    }
  }
}
