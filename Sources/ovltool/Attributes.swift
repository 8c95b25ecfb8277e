import ArgumentParser
import OvlOperations

struct ChangeMode: ChangeCommand {
  static let configuration = CommandConfiguration(commandName: "chmod", abstract: "chmod(2): set the mode (copied up first; metadata only with metacopy=on).")
  @OptionGroup var stack: StackArguments
  @Argument(help: "Octal mode.") var mode: String
  @Argument(help: "The path in the merged view.") var path: String
  func changes() throws(Script.SyntaxError) -> [Change] { [.attribute(pathBytes(path), .mode(try Script.parseMode(Array(mode.utf8))))] }
}

struct ChangeOwner: ChangeCommand {
  static let configuration = CommandConfiguration(commandName: "chown", abstract: "lchown(2): set the owner (numeric ids).")
  @OptionGroup var stack: StackArguments
  @Argument(help: "UID[:GID] or :GID.") var owner: String
  @Argument(help: "The path in the merged view.") var path: String
  func changes() throws(Script.SyntaxError) -> [Change] {
    let (uid, gid) = try Script.parseOwner(Array(owner.utf8))
    return [.attribute(pathBytes(path), .owner(uid: uid, gid: gid))]
  }
}

struct Touch: ChangeCommand {
  static let configuration = CommandConfiguration(abstract: "utimensat(2) on the path itself: set access and modification times (default now).")
  @OptionGroup var stack: StackArguments
  @Option(name: [.customShort("d"), .long], help: ArgumentHelp("Seconds since the epoch.", valueName: "EPOCH[.NS]")) var date: String?
  @Argument(help: "The path in the merged view.") var path: String
  func changes() throws(Script.SyntaxError) -> [Change] {
    [.attribute(pathBytes(path), .times(try date.map { (d) throws(Script.SyntaxError) in try Script.parseTime(Array(d.utf8)) }))]
  }
}

struct SetXattr: ChangeCommand {
  static let configuration = CommandConfiguration(
    commandName: "setxattr", abstract: "lsetxattr(2): set an extended attribute (VALUE as text, or 0x + hex).")
  @OptionGroup var stack: StackArguments
  @Argument(help: "The attribute name as the merged view shows it.") var name: String
  @Argument(help: "The value.") var value: String
  @Argument(help: "The path in the merged view.") var path: String
  func changes() throws(Script.SyntaxError) -> [Change] {
    [.attribute(pathBytes(path), .setXattr(name: pathBytes(name), value: try Script.parseValue(pathBytes(value))))]
  }
}

struct RemoveXattr: ChangeCommand {
  static let configuration = CommandConfiguration(commandName: "rmxattr", abstract: "lremovexattr(2): remove an extended attribute.")
  @OptionGroup var stack: StackArguments
  @Argument(help: "The attribute name.") var name: String
  @Argument(help: "The path in the merged view.") var path: String
  func changes() -> [Change] { [.attribute(pathBytes(path), .removeXattr(name: pathBytes(name)))] }
}
