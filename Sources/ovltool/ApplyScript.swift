import ArgumentParser
import OvlOperations
import OvlSystem

struct ApplyScript: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "apply-script",
    abstract: "Apply many changes, one per line (the syntax of rm, mkdir, put, symlink, mknod, mv, ln, chmod, chown, touch, setxattr, rmxattr), in one process.",
    discussion: """
      The whole script is parsed first: a syntax error changes nothing (exit 2). Lines then run \
      in order; the first failing line stops the run (exit 1) unless --keep-going. '#' starts a \
      comment; words are quoted with '…' or "…" and a backslash escapes one byte.
      """)

  @OptionGroup var stack: StackArguments
  @Flag(help: "Go on after a failing line (exit 1 at the end).") var keepGoing = false
  @Argument(help: "The script file, or '-' for standard input.") var file: String

  func run() throws {
    let bytes: [UInt8]
    do {
      bytes = try file == "-" ? FD.standardInput().readAll() : FD.openFile(atHostPath: file).readAll()
    } catch {
      throw StackError(error: .system(call: "read", path: file, errno: error))
    }
    let lines: [Script.Line]
    do { lines = try Script.parse(bytes) } catch { throw StackError(error: error) }
    let session = try openSession(stack)
    var failed = false
    run: for line in lines {
      for change in line.changes {
        do throws(OvlError) { try session.apply(change) } catch {
          printError("ovltool: \(file):\(line.number): \(error.errno.name): \(error)")
          failed = true
          if !keepGoing { break run }
        }
      }
    }
    do { try session.finish() } catch {
      report(error)
      failed = true
    }
    if failed { throw ExitCode(1) }
  }
}
