import ArgumentParser
import OvlImage
import OvlStack
import OvlSystem

struct ApplyLayer: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "apply",
    abstract: "Apply an OCI image layer (tar, tar.gz, tar.zst or '-') to the upper layer of the stack.",
    discussion: """
      .wh.NAME entries remove NAME as rm -r through a mount would (a whiteout where a lower \
      layer has it), .wh..wh..opq makes its directory opaque, hardlinks to lower files copy \
      them up first, PAX xattrs are set except the overlay's private ones. Compression is \
      detected from the bytes. A layer is untrusted input: absolute paths, '..', paths \
      through symlinks, hardlinks to files outside the layer and the stack, names over 255 \
      bytes, duplicate entries and truncated or corrupt archives are refused (exit 2) naming \
      the entry; nothing is written outside the upper and work directories. A --diffid \
      mismatch exits 3; a layer file is verified before anything changes (standard input \
      only while it is applied).
      """)

  @OptionGroup var stack: StackArguments
  @Option(help: ArgumentHelp("Whiteouts as 'char' (0:0 devices, default) or 'xattr' (overlay.whiteout files, kernel >= 6.7).", valueName: "KIND"))
  var whiteouts: String = "char"
  @Option(help: ArgumentHelp("The layer's expected DiffID, verified over the uncompressed stream.", valueName: "sha256:HEX")) var diffid: String?
  @Flag(help: "Refuse device nodes in the layer.") var noDevices = false
  @Flag(help: "Keep owners, modes and device types the user cannot set in user.containers.override_stat, as containers/storage does with force_mask: files and directories become the user's own with mode --force-mask, devices and FIFOs empty files.") var rootlessOwners = false
  @Option(help: ArgumentHelp("The real mode of files and directories with --rootless-owners (octal; 'private' = 0700, 'shared' = 0755).", valueName: "MODE")) var forceMask: String = "private"

  /// --force-mask as a mode.
  var mask: UInt32? {
    switch forceMask {
    case "private": return 0o700
    case "shared": return 0o755
    default: return UInt32(forceMask, radix: 8).flatMap { $0 <= 0o7777 ? $0 : nil }
    }
  }
  @Argument(help: "The layer file, or '-' for standard input.") var layer: String

  func validate() throws {
    guard whiteouts == "char" || whiteouts == "xattr" else { throw ValidationError("--whiteouts must be char or xattr") }
    if let diffid, !diffid.hasPrefix("sha256:") || diffid.count != 71 { throw ValidationError("--diffid must be sha256:<64 hex digits>") }
    if mask == nil { throw ValidationError("--force-mask must be private, shared or an octal mode up to 7777") }
  }

  func run() throws {
    var options = ApplyOptions()
    options.diffID = diffid
    options.allowDevices = !noDevices
    options.xattrWhiteouts = whiteouts == "xattr"
    let session = try openSession(stack)
    if rootlessOwners, let mask {
      let me = session.stack.credentials
      options.rootlessOwners = RootlessOwners(mask: mask, uid: me.uid, gid: me.gid)
    }
    // Two passes over the layer: the first reads it whole and checks everything that could
    // refuse it (the stream, every entry, every parent on the way, the DiffID), changing
    // nothing; the second applies it. Standard input is spooled to a temp file first.
    let shown = layer == "-" ? "(standard input)" : layer
    let fd = try step("open", layer) { () throws(Errno) -> FD in
      if layer == "-" {
        let stdin = try FD.standardInput()
        return try FD.spool(stdin)
      }
      return try FD.openFile(atHostPath: layer)
    }
    let applier = try Applier(session: session, options: options) { printError("ovltool: warning: \($0)") }
    let input: LayerInput
    do {
      input = try LayerInput(fd, file: layer == "-" ? nil : layer)
      let diffID = try applier.check(input)
      if let diffid, let diffID, diffID != diffid {
        printError("ovltool: \(shown): DiffID mismatch: expected \(diffid), got \(diffID); nothing was changed")
        throw ExitCode(3)
      }
    } catch let error as OvlError {
      printError("ovltool: \(error) (nothing was changed)")
      throw ExitCode(Self.status(of: error))
    }
    do {
      let diffID = try applier.run(input, journal: "layer \(shown)")
      print("diffid \(diffID)")
      // Done and durable: the process ends without taking apart what it built in memory
      // (a set of every path of the layer: milliseconds for nothing).
      exitProcess(0)
    } catch {
      printError("ovltool: \(error)")
      if ApplyJournal.pending(in: session.stack) != nil {
        printError("ovltool: the upper holds part of the layer (recorded in the work dir, fsck reports it): apply the same layer again to complete it")
      }
      throw ExitCode(Self.status(of: error))
    }
  }

  /// 3: a DiffID mismatch; 2: the layer refused (its stream or an entry); 1: anything else.
  static func status(of error: OvlError) -> Int32 {
    if error.errno == .badMessage { return 3 }
    if case .refused = error { return 2 }
    return 1
  }
}
