import OvlFixtures
import OvlSystem

// ovl-fixture SPEC DIR: builds the stack SPEC describes under DIR and prints its mount
// options (lowerdir=...,upperdir=...,workdir=...).
let arguments = CommandLine.arguments
guard arguments.count == 3 else {
  printError("usage: ovl-fixture SPEC DIR")
  exitProcess(2)
}
do {
  let text = try FD.openFile(atHostPath: arguments[1]).readAll()
  let spec = try FixtureSpec(parsing: text)
  print(try Fixture.materialize(spec, at: arguments[2]))
} catch let error as FixtureSpec.ParseError {
  printError("ovl-fixture: \(arguments[1]): \(error)")
  exitProcess(2)
} catch {
  printError("ovl-fixture: \(error)")
  exitProcess(1)
}
