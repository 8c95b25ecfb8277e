import ArgumentParser
import OvlOperations

struct MakeDirectory: ChangeCommand {
  static let configuration = CommandConfiguration(
    commandName: "mkdir",
    abstract: "Create directories in the merged view (opaque where the kernel makes them opaque).")

  @OptionGroup var stack: StackArguments
  @Flag(name: [.short, .long], help: "Make missing parents; an existing directory is fine.") var parents = false
  @Option(name: [.short, .long], help: ArgumentHelp("Octal mode (default 0777 less the umask).", valueName: "MODE")) var mode: String?
  @Argument(help: "Paths in the merged view.") var paths: [String]

  func changes() throws(Script.SyntaxError) -> [Change] {
    let permissions = try mode.map { (m) throws(Script.SyntaxError) in try Script.parseMode(Array(m.utf8)) }
    return paths.map { .makeDirectory(pathBytes($0), permissions: permissions, parents: parents) }
  }
}
