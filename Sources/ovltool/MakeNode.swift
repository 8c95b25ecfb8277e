import ArgumentParser
import OvlOperations

struct MakeNode: ChangeCommand {
  static let configuration = CommandConfiguration(
    commandName: "mknod", abstract: "Create a fifo (p) or a character (c) or block (b) device.")

  @OptionGroup var stack: StackArguments
  @Option(name: [.short, .long], help: ArgumentHelp("Octal mode (default 0666 less the umask).", valueName: "MODE")) var mode: String?
  @Argument(help: "The path in the merged view.") var path: String
  @Argument(help: "p, or c|b MAJOR MINOR.") var type: [String]

  func changes() throws(Script.SyntaxError) -> [Change] {
    let permissions = try mode.map { (m) throws(Script.SyntaxError) in try Script.parseMode(Array(m.utf8)) }
    let (kind, major, minor) = try Script.parseNode(type)
    return [.makeNode(pathBytes(path), kind, major: major, minor: minor, permissions: permissions)]
  }
}
