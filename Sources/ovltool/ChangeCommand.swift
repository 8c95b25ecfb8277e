import ArgumentParser
import OvlOperations
import OvlStack
import OvlSystem

/// What every namespace command shares: open the stack for writing, apply its changes in
/// order (each failure reported with its path, the rest still tried, as rm(1) and chmod(1)
/// go on), make them durable, exit 1 if any failed.
protocol ChangeCommand: ParsableCommand {
  var stack: StackArguments { get }
  func changes() throws(Script.SyntaxError) -> [Change]
}

extension ChangeCommand {
  func run() throws {
    let list: [Change]
    do { list = try changes() } catch { throw ValidationError(error.description) }
    let session = try openSession(stack)
    var failed = false
    for change in list {
      do throws(OvlError) { try session.apply(change) } catch {
        report(error)
        failed = true
      }
    }
    do { try session.finish() } catch {
      report(error)
      failed = true
    }
    if failed { throw ExitCode(1) }
  }
}

/// A write session on the stack; a stack that cannot be opened or is mounted exits 2.
/// Said once when a change waits for an `ovltool fsck` of the same stack.
func waitingForCheck() { printError("ovltool: waiting for the ovltool fsck of this stack to finish") }

func openSession(_ arguments: StackArguments) throws(StackError) -> WriteSession {
  let stack = try arguments.open(forWriting: true)
  do { return try WriteSession(stack: stack, onWait: waitingForCheck) } catch { throw StackError(error: error) }
}

/// Parses a value with one of the script's parsers, as an ArgumentParser validation error.
func parsed<T>(_ body: () throws(Script.SyntaxError) -> T) throws -> T {
  do { return try body() } catch { throw ValidationError(error.description) }
}
