import ArgumentParser
import OvlStack
import OvlStore
import OvlSystem

/// The stack, given the way mount(8) and fsck.overlay take it.
struct StackArguments: ParsableArguments {
  @Option(name: .customShort("o"), help: ArgumentHelp(
    "Overlay mount options (repeatable): lowerdir=L1:L2[::D1],upperdir=U,workdir=W,index=,redirect_dir=,metacopy=,nfs_export=,userxattr,uuid=,xino=,verity=.",
    valueName: "OPTS"))
  var options: [String] = []

  @Option(help: ArgumentHelp("Lower layers, top-most first, ':'-separated ('::' before data-only layers).", valueName: "DIRS"))
  var lowerdir: String?

  @Option(help: ArgumentHelp("The upper layer.", valueName: "DIR"))
  var upperdir: String?

  @Option(help: ArgumentHelp("The work directory (same mount as the upper layer).", valueName: "DIR"))
  var workdir: String?

  @OptionGroup var store: StoreArguments

  /// Parses, applies the kernel's option rules and opens the layers. Any problem is a
  /// stack error (exit status 2). `forWriting`: the command changes the upper (a store's
  /// locks are taken exclusive, an image's read-only stack and a running container's are
  /// refused).
  func open(forWriting: Bool = false) throws(StackError) -> Stack {
    do {
      return try openStack(forWriting: forWriting)
    } catch {
      throw StackError(error: error)
    }
  }

  /// The options, from `-o` and the long flags, or derived from a store.
  func stackOptions(forWriting: Bool = false) throws(OvlError) -> StackOptions {
    var parser = StackOptionParser()
    if let derived = try store.stack(forWriting: forWriting) {
      if lowerdir != nil || upperdir != nil || workdir != nil {
        throw .usage("--lowerdir, --upperdir and --workdir cannot be given with a store's --container, --image or --layer")
      }
      for o in options {
        for item in StoreArguments.layerKeys where o.split(separator: ",").contains(where: { $0.hasPrefix(item + "=") }) {
          throw .usage("-o \(item)= cannot be given with a store's --container, --image or --layer")
        }
      }
      parser = try derived.optionParser()
    }
    for o in options { try parser.add(options: o) }
    if let lowerdir { try parser.add(key: "lowerdir", value: lowerdir) }
    if let upperdir { try parser.add(key: "upperdir", value: upperdir) }
    if let workdir { try parser.add(key: "workdir", value: workdir) }
    let resolved = try parser.resolve(defaults: .current())
    for warning in parser.warnings { printError("ovltool: warning: \(warning)") }
    return resolved
  }

  private func openStack(forWriting: Bool) throws(OvlError) -> Stack {
    let options = try stackOptions(forWriting: forWriting)
    let stack = try Stack(options: options)
    try stack.refuseUnreadableXattrs()
    if forWriting, let derived = store.derived { try derived.refuseRunning(layersInUse(stack)) }
    return stack
  }
}

/// The process's arguments by their decoded text (built once: a copy-up may get
/// thousands of paths).
private let rawArgumentsByText: [String: [UInt8]] = {
  var map: [String: [UInt8]] = [:]
  for raw in rawArguments() { map[String(decoding: raw, as: UTF8.self)] = raw }
  return map
}()

/// A merged-view path argument as the raw bytes the user gave (it may not be UTF-8).
func pathBytes(_ argument: String) -> [UInt8] {
  rawArgumentsByText[argument] ?? Array(argument.utf8)
}

/// Prints `error` for one path and remembers that the command must exit 1.
func report(_ error: OvlError) {
  printError("ovltool: \(error)")
}

/// The stack could not be described or opened: ovltool exits 2.
struct StackError: Error, CustomStringConvertible {
  let error: OvlError
  var description: String { error.description }
}
