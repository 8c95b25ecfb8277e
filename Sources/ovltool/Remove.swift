import ArgumentParser
import OvlOperations

struct Remove: ChangeCommand {
  static let configuration = CommandConfiguration(
    commandName: "rm",
    abstract: "Remove paths from the merged view (unlink/rmdir as on a mount: whiteouts where something below must stay hidden).")

  @OptionGroup var stack: StackArguments
  @Flag(name: [.customShort("r"), .customShort("R"), .long], help: "Remove directories and their contents.") var recursive = false
  @Flag(name: [.customShort("d"), .customLong("dir")], help: "Remove empty directories (rmdir(2)).") var directories = false
  @Flag(name: [.short, .long], help: "A missing path is not an error.") var force = false
  @Argument(help: "Paths in the merged view.") var paths: [String]

  func changes() -> [Change] {
    let mode: RemoveMode = recursive ? .recursive : directories ? .emptyDirectory : .file
    return paths.map { .remove(pathBytes($0), mode, force: force) }
  }
}
