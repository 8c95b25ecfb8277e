import ArgumentParser
import OvlImage
import OvlOperations
import OvlStack
import OvlStore
import OvlSystem

/// Where `diff` and `merge` write: an upper directory, or a layer tar made from a scratch
/// upper that is removed afterwards.
struct LayerOutput: ParsableArguments {
  @Option(help: ArgumentHelp("Write the result as an upper directory (made if missing; should be empty).", valueName: "DIR")) var toUpper: String?
  @Option(help: ArgumentHelp("Write the result as an OCI layer tar ('-' for standard output).", valueName: "FILE")) var toTar: String?
  @Option(help: "Compression of --to-tar: none, gzip or zstd.") var compress: String = "none"

  func validate() throws {
    guard (toUpper == nil) != (toTar == nil) else { throw ValidationError("give exactly one of --to-upper DIR and --to-tar FILE") }
    guard LayerCompression(rawValue: compress) != nil else { throw ValidationError("--compress must be none, gzip or zstd") }
  }

  /// Runs `body` with a write session whose lower is `base` and whose upper is the output
  /// (or a scratch upper), then exports the scratch upper for --to-tar.
  func write(base: StackOptions, _ body: (WriteSession) throws(OvlError) -> Void) throws {
    let upper = toUpper ?? ((toTar == "-" ? "." : toTar ?? ".") + ".ovltool-upper")
    let work = upper + ".ovltool-work"
    try step("mkdir", upper) { () throws(Errno) in try makeHostDirectory(upper) }
    try step("mkdir", work) { () throws(Errno) in try makeHostDirectory(work) }
    defer {
      _ = try? removeHostTree(work)
      if toUpper == nil { _ = try? removeHostTree(upper) }
    }
    var options = base
    options.upperDir = upper
    options.workDir = work
    let stack = try Stack(options: options)
    let session = try WriteSession(stack: stack, onWait: waitingForCheck)
    try body(session)
    guard let toTar else { return }
    let path = toTar
    let out = try OutputFile(path)
    var exportOptions = ExportOptions()
    exportOptions.checkFirst = !out.isRevocable
    exportOptions.compression = LayerCompression(rawValue: compress) ?? .none
    if let text = getEnvironment("SOURCE_DATE_EPOCH"), let epoch = Int64(text) { exportOptions.mtimeClamp = epoch }
    let writer = try LayerWriter(output: out.fd.rawValue, compression: exportOptions.compression)
    let layer = try Exporter(stack: try Stack(options: options), options: exportOptions, writer: writer) { printError("ovltool: warning: \($0)") }.run()
    try out.commit()
    let summary = "diffid \(layer.diffID)\ndigest \(layer.digest)\nsize \(layer.size)"
    if path == "-" { printError(summary) } else { print(summary) }
  }
}

/// A plain directory as a one-layer read-only stack (its view is the tree itself).
/// (The kernel wants two lowers for a read-only mount; a view needs only one.)
/// A user who cannot use `trusted.*` xattrs gets a userxattr one: what it writes is then a
/// rootless layer (`user.overlay.*`), as a rootless mount writes it.
func plainTree(_ path: String) throws -> StackOptions {
  var options = StackOptions()
  options.lowerDirs = [path]
  options.userxattr = !Credentials.current.canUseTrustedXattrs
  if options.userxattr { options.redirectMode = .nofollow }
  return options
}

struct ImageDiff: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "diff",
    abstract: "Write the changes from tree OLD to tree NEW as an upper (over OLD) or an OCI layer.",
    discussion: """
      Names only in OLD become whiteouts, new or changed entries are copied, directories whose \
      mode, owner or xattrs changed are copied up; regular files with equal attributes and \
      sizes are compared by content when their mtimes differ. `mount -o lowerdir=UPPER:OLD` \
      then shows NEW (mtimes of directories aside). With a store's --container instead of \
      OLD and NEW, OLD is the container's image and NEW the container's file system: the \
      layer holds what the container really changed (a file copied up but left as it was is \
      not in it, unlike in `export --container`).
      """)

  @Argument(help: "The old tree.") var old: String?
  @Argument(help: "The new tree.") var new: String?
  @OptionGroup var store: StoreArguments
  @OptionGroup var output: LayerOutput

  func validate() throws {
    if store.namesStore {
      if old != nil || new != nil { throw ValidationError("give OLD and NEW, or a store's --container, not both") }
      if store.container == nil { throw ValidationError("diff of a store needs --container (its changes against its image)") }
    } else if old == nil || new == nil {
      throw ValidationError("give the trees OLD and NEW (or a store's --container)")
    }
  }

  func run() throws {
    let base: StackOptions
    let newOptions: StackOptions
    if let derived = try store.stack(forWriting: false) {
      try Export.refuseHostOwners(derived)
      (base, newOptions) = try Self.containerTrees(derived)
    } else if let old, let new {
      base = try plainTree(old)
      newOptions = try plainTree(new)
    } else {
      throw ValidationError("give the trees OLD and NEW (or a store's --container)")
    }
    let oldStack = try Stack(options: base)
    let newStack = try Stack(options: newOptions)
    try output.write(base: base) { (session) throws(OvlError) in
      try TreeDiff(old: oldStack, new: newStack, session: session) { printError("ovltool: warning: \($0)") }.run()
    }
  }

  /// A container's image (its layers below its own) and its file system (its own layer on
  /// top of them), both read-only stacks with the store's mount options.
  static func containerTrees(_ derived: StoreStack) throws -> (old: StackOptions, new: StackOptions) {
    guard let upper = derived.upperDir else { throw ValidationError("\(derived.title) has no layer of its own") }
    var image = try derived.stackOptions()
    image.upperDir = nil
    image.workDir = nil
    var container = image
    container.lowerDirs = [upper] + image.lowerDirs
    return (image, container)
  }
}

struct Merge: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Squash the upper and all lower layers but the bottom one into one layer over that base.",
    discussion: """
      The result over the base (the last lowerdir) shows the same view as the whole stack. \
      With --flatten the result is the merged view itself, for no base (no whiteouts, no \
      opaque directories).
      """)

  @OptionGroup var stack: StackArguments
  @OptionGroup var output: LayerOutput
  @Flag(help: "Write the merged view itself (a single-layer image).") var flatten = false

  func run() throws {
    let stack = try self.stack.open()
    var base = StackOptions()
    var scratch: String?
    if flatten {
      // An empty base: a scratch directory.
      let empty = (output.toUpper ?? output.toTar ?? ".") + ".ovltool-empty"
      try step("mkdir", empty) { () throws(Errno) in try makeHostDirectory(empty) }
      scratch = empty
      base = try plainTree(empty)
    } else {
      guard let bottom = stack.options.lowerDirs.last, stack.options.lowerDirs.count + (stack.options.upperDir == nil ? 0 : 1) >= 2 else {
        throw ValidationError("merge needs at least two layers (or --flatten)")
      }
      base = try plainTree(bottom)
      base.dataDirs = stack.options.dataDirs
      base.userxattr = stack.options.userxattr
      base.redirectMode = stack.options.redirectMode
    }
    defer { if let scratch { _ = try? removeHostTree(scratch) } }
    let baseStack = try Stack(options: base)
    try output.write(base: base) { (session) throws(OvlError) in
      try TreeDiff(old: baseStack, new: stack, session: session) { printError("ovltool: warning: \($0)") }.run()
    }
  }
}
