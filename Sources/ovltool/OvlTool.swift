import ArgumentParser
import OvlStack
import OvlSystem

@main
struct OvlTool: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ovltool",
    abstract: "Work on overlayfs layer directories without mounting them.",
    discussion: """
      Every command takes the stack as mount(8) does: -o lowerdir=L1:L2,upperdir=U,workdir=W \
      (repeatable), or --lowerdir, --upperdir, --workdir, or by a container store's names: \
      --store [PATH] or --docker-root PATH with --container, --image or --layer (`ovltool stack` \
      prints the options they give). PATH is a path in the merged view. \
      Exit status: 0 success, 1 some paths failed, 2 usage or stack errors.
      """,
    version: "0.1.0",
    subcommands: [
      Ls.self, Stat.self, Cat.self, Tree.self, CopyUp.self, Remove.self, MakeDirectory.self, Put.self, Symlink.self,
      MakeNode.self, Move.self, Link.self, ChangeMode.self, ChangeOwner.self, Touch.self, SetXattr.self, RemoveXattr.self,
      ApplyScript.self, Fsck.self, StackCommand.self, Export.self, ApplyLayer.self, ImageDiff.self, Merge.self,
    ])

  static func main() {
    raiseOpenFileLimit()
    startSignalStormIfAsked()
    // Installed as fsck.overlay (a symlink): fsck.overlay's own command line.
    let argv = CommandLine.arguments
    if let name = argv.first?.split(separator: "/").last, name == "fsck.overlay" {
      exitProcess(FsckOverlay.main(Array(argv.dropFirst())))
    }
    do {
      var command = try parseAsRoot(rewritingBareStore(Array(argv.dropFirst())))
      try command.run()
    } catch let error as StackError {
      printError("ovltool: \(error)")
      Self.exit(withError: ExitCode(2))
    } catch let error as OvlError {
      printError("ovltool: \(error)")
      Self.exit(withError: ExitCode(error.isUsage ? 2 : 1))
    } catch {
      // ArgumentParser's usage errors exit 64; ovltool's contract is 2.
      if exitCode(for: error) == .validationFailure {
        printError(fullMessage(for: error))
        // fsck keeps fsck(8)'s usage status.
        Self.exit(withError: ExitCode(CommandLine.arguments.dropFirst().first == "fsck" ? 16 : 2))
      }
      exit(withError: error)
    }
  }
}

extension OvlError {
  /// Exit 2: the arguments, or input refused as damaged or hostile.
  var isUsage: Bool {
    switch self {
    case .usage, .refused: return true
    default: return false
    }
  }
}
