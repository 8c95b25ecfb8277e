import ArgumentParser
import OvlOperations

struct Link: ChangeCommand {
  static let configuration = CommandConfiguration(
    commandName: "ln", abstract: "Make DST a hard link of SRC as link(2) on a mount does (index and nlink kept with index=on).")

  @OptionGroup var stack: StackArguments
  @Argument(help: "The existing path.") var source: String
  @Argument(help: "The new name.") var destination: String

  func changes() -> [Change] { [.link(pathBytes(source), pathBytes(destination))] }
}
