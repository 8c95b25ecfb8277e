import ArgumentParser
import OvlStack
import OvlSystem

struct Cat: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Write the contents of regular files of the merged view.")

  @OptionGroup var stack: StackArguments
  @Argument(help: "Paths in the merged view.") var paths: [String]

  func run() throws {
    let stack = try self.stack.open()
    var failed = false
    for path in paths {
      do throws(OvlError) {
        try copy(path, stack)
      } catch {
        failed = true
        report(error)
      }
    }
    if failed { throw ExitCode(1) }
  }

  func copy(_ path: String, _ stack: Stack) throws(OvlError) {
    let entry = try stack.resolve(text: pathBytes(path)).entry
    guard let entry, entry.status.type == .regular else {
      throw .format(path: path, reason: "not a regular file", errno: entry?.isDirectory == true ? .isDirectory : .invalidArgument)
    }
    let fd = try stack.openData(entry)
    try step("write", path) { () throws(Errno) in try fd.copy(toRawDescriptor: 1) }
  }
}
