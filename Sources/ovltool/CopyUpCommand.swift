import ArgumentParser
import OvlOperations
import OvlStack
import OvlSystem

struct CopyUp: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "copy-up",
    abstract: "Copy paths of the merged view up to the upper layer, as the kernel does.",
    discussion: """
      Without --metacopy: what the kernel does when PATH is opened for writing (a full copy-up; \
      a metacopy upper gets its data). With --metacopy: what a metadata change does with \
      metacopy=on. Missing parent directories are copied up first. A path already in the upper \
      layer is left alone (exit 0). Exit status: 0 done, 1 some paths failed, 2 usage or stack \
      errors.
      """)

  @OptionGroup var stack: StackArguments
  @Flag(help: "Copy metadata only (needs metacopy=on; regular files).") var metacopy = false
  @Flag(help: "One JSON object per path: {\"path\":...,\"result\":\"copied\"}.") var json = false
  @Option(name: .customLong("from"), help: ArgumentHelp("Read more paths from FILE ('-' for standard input), one per line (NUL-separated with --null); for thousands of paths.", valueName: "FILE"))
  var fromFile: String?
  @Flag(help: "Paths in --from are separated by NUL bytes.") var null = false
  @Argument(help: "Paths in the merged view.") var paths: [String] = []

  func validate() throws {
    if paths.isEmpty && fromFile == nil { throw ValidationError("give at least one PATH or --from FILE") }
    // An empty path names nothing (the kernel's ENOENT for ""); the root is "/".
    if paths.contains("") { throw ValidationError("an empty PATH names nothing; the root of the merged view is /") }
  }

  /// The paths to copy up, as bytes: arguments, then the --from list.
  func allPaths() throws(OvlError) -> [[UInt8]] {
    var result = paths.map(pathBytes)
    guard let fromFile else { return result }
    let data = try step("read", fromFile) { () throws(Errno) in
      fromFile == "-" ? try FD.standardInput().readAll() : try FD.openFile(atHostPath: fromFile).readAll()
    }
    result += data.split(separator: null ? 0 : 0x0A).map { Array($0) }.filter { !$0.isEmpty }
    return result
  }

  func run() throws {
    let stack = try self.stack.open(forWriting: true)
    if metacopy && !stack.options.metacopy {
      throw StackError(error: .usage("--metacopy needs a stack with metacopy=on (the kernel copies data otherwise)"))
    }
    let session: WriteSession
    do { session = try WriteSession(stack: stack, onWait: waitingForCheck) } catch { throw StackError(error: error) }
    let out = OutputBuffer()
    var failed = false
    let list: [[UInt8]]
    do { list = try allPaths() } catch { throw StackError(error: error) }
    for bytes in list {
      do throws(OvlError) {
        let result = try session.copyUp(bytes, metacopy: metacopy)
        if json {
          var line: [UInt8] = Array(#"{"path":"#.utf8)
          JSONLine.string(bytes, into: &line)
          line += Array(#","result":"\#(result.rawValue)"}"#.utf8)
          out.line(line)
        } else {
          out.line(bytes + Array(": \(result == .alreadyUpper ? "already in the upper layer" : result.rawValue)".utf8))
        }
      } catch {
        failed = true
        if json { out.line(JSONLine.encodeError(path: bytes, error)) }
        out.flush()
        report(error)
      }
    }
    out.flush()
    do { try session.finish() } catch {
      report(error)
      failed = true
    }
    if failed { throw ExitCode(1) }
  }
}
