import ArgumentParser
import OvlOperations

struct Move: ChangeCommand {
  static let configuration = CommandConfiguration(
    commandName: "mv",
    abstract: "Rename SRC to DST as rename(2) on a mount does (DST is the new name, replaced where rename(2) replaces).",
    discussion: "A lower or merged directory moves only with redirect_dir=on (it gets a redirect); otherwise EXDEV, as from the kernel (--copy then copies, as mv(1) does).")

  @OptionGroup var stack: StackArguments
  @Flag(help: "Where the kernel answers EXDEV, copy the tree and remove the source, as mv(1) does then.") var copy = false
  @Argument(help: "The path to move.") var source: String
  @Argument(help: "Its new path.") var destination: String

  func changes() -> [Change] { [.rename(pathBytes(source), pathBytes(destination), copy: copy)] }
}
