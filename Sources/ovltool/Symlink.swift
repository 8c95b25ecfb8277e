import ArgumentParser
import OvlOperations

struct Symlink: ChangeCommand {
  static let configuration = CommandConfiguration(abstract: "Create a symlink PATH pointing to TARGET.")

  @OptionGroup var stack: StackArguments
  @Argument(help: "What the link points to (stored as given).") var target: String
  @Argument(help: "The path in the merged view.") var path: String

  func changes() -> [Change] { [.symlink(target: pathBytes(target), pathBytes(path))] }
}
