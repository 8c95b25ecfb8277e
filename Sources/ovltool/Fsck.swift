import ArgumentParser
import OvlCheck
import OvlStack
import OvlStore
import OvlSystem

struct Fsck: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "fsck",
    abstract: "Check the layers of a stack and repair them (also runs as fsck.overlay).",
    discussion: """
      With --store [PATH] or --docker-root PATH alone, checks a whole container store: its \
      metadata against its layer dirs and l/ links, then every container's stack and every \
      layer (over the layers below it), one summary line per stack. \
      Checks whiteouts, redirect dirs, impure/opaque/origin/metacopy/nlink values, the work \
      dir, the index dir and the upper root's identity, bottom layer first. One line per \
      problem: the layer, the path, what is wrong and what was done. Without -n, -p or -y, \
      asks per problem on a terminal and only checks otherwise. Invoked as fsck.overlay it \
      takes fsck.overlay's command line. Exit status (fsck(8)): 0 clean, 1 errors \
      corrected, 4 errors left uncorrected, 8 operational error, 16 usage error.
      """)

  @OptionGroup var stack: StackArguments
  @Flag(name: .customShort("n"), help: "Check only: change nothing.") var checkOnly = false
  @Flag(name: [.customShort("p"), .customLong("repair")], help: "Repair what is safe (keeps the merged view), without asking.") var preen = false
  @Flag(name: [.customShort("y"), .customLong("yes")], help: "Repair everything, without asking.") var yes = false
  @Flag(name: .shortAndLong, help: "Print the scan summary.") var verbose = false
  @Flag(help: "Print one JSON report at the end instead of lines.") var json = false
  @Flag(help: "With a whole store (--store or --docker-root alone): also check each layer's content against its recorded uncompressed digest, through the store's tar-split file.") var verifyDigests = false

  func validate() throws {
    if [checkOnly, preen, yes].filter({ $0 }).count > 1 { throw ValidationError("give only one of -n, -p and -y") }
  }

  /// fsck(8)'s status for a stack that cannot be described (16) or opened (8: a store
  /// refused as damaged or hostile is an operational error, not a usage error).
  static func status(_ error: OvlError) -> Int32 {
    if case .usage = error { return 16 }
    return 8
  }

  func run() throws {
    let mode: RepairMode = checkOnly ? .check : preen ? .preen : yes ? .yes : (isTerminal(0) ? .ask : .check)
    if stack.store.namesStore && stack.store.selection == nil {
      let store: any ContainerStore
      do throws(OvlError) {
        guard let opened = try stack.store.openStore(forWriting: mode != .check) else { throw OvlError.usage("no store named") }
        store = opened
      } catch {
        printError("ovltool: \(error)")
        throw ExitCode(Self.status(error))
      }
      throw ExitCode(StoreFsckRun(store: store, mode: mode, verbose: verbose, json: json, verifyDigests: verifyDigests).run())
    }
    if verifyDigests { throw ValidationError("--verify-digests checks a whole store: give --store [PATH] or --docker-root PATH alone") }
    let options: StackOptions
    do {
      options = try stack.stackOptions(forWriting: mode != .check)
    } catch {
      printError("ovltool: \(error)")
      throw ExitCode(Self.status(error))
    }
    let status = FsckRun(options: options, mode: mode, verbose: verbose, json: json, program: "ovltool fsck").run()
    throw ExitCode(status)
  }
}

/// One fsck run, shared by `ovltool fsck` and `fsck.overlay`: opens the stack, checks,
/// prints, and returns fsck(8)'s exit status.
struct FsckRun {
  let options: StackOptions
  let mode: RepairMode
  let verbose: Bool
  let json: Bool
  let program: String

  func run() -> Int32 {
    let stack: Stack
    do {
      stack = try Checker.openStack(options)
    } catch {
      printError("\(program): \(error)")
      return 8
    }
    let (options, userxattr) = Checker.detectNamespace(stack, options)
    if userxattr { printError("\(program): the upper layer holds user.overlay.* xattrs only: checking it as a userxattr stack") }
    // Without CAP_SYS_ADMIN listxattr silently leaves trusted.* out: every layer would
    // look like it has no overlay xattrs, and "repairs" would follow.
    if !options.userxattr && !stack.credentials.canUseTrustedXattrs {
      printError("\(program): reading trusted.overlay.* xattrs needs root (or a userxattr stack)")
      return 8
    }
    let out = OutputBuffer()
    let report = Report(mode: mode)
    if !json {
      report.onFinding = { finding in
        out.line(Self.line(finding, asked: mode == .ask))
        out.flush()
      }
    }
    let progress = !json && isTerminal(2)
    if progress {
      report.onProgress = { n in writeAll(2, Array("\r\(program): \(n) entries checked".utf8)) }
    }
    report.ask = { finding, answer in
      out.flush()
      return Self.ask(finding, default: answer)
    }
    // Writers of this stack finish first, and wait for the check (their changes are not
    // damage, and an entry half-way through one is not either).
    do {
      try stack.whileLockedForCheck(onWait: { printError("\(program): waiting for the ovltool processes changing this stack") }) {
        Checker(stack: stack, options: options, report: report).run()
      }
    } catch {
      printError("\(program): \(error)")
      return 8
    }
    if progress && report.counts["entries", default: 0] >= 4096 { writeAll(2, Array("\r\u{1B}[K".utf8)) }
    for error in report.operationalErrors { printError("\(program): \(error)") }
    if json {
      out.line(Self.json(report))
    } else if verbose {
      let c = report.counts
      out.line("Scanned \(c["directories", default: 0]) directories, \(c["files", default: 0]) files, \(c["whiteouts", default: 0]) whiteouts, \(c["redirect dirs", default: 0]) redirect dirs, \(c["metacopy files", default: 0]) metacopy files, \(c["index entries", default: 0]) index entries, \(c["missing impure", default: 0]) missing impure")
      out.line("\(report.findings.count) problems: \(report.repairedCount) repaired, \(report.uncorrectedCount) errors left")
      if report.exitStatus & 12 == 0 { out.line("Filesystem clean") }
    }
    out.flush()
    return report.exitStatus
  }

  static func outcome(_ f: Finding, declined: Bool = false) -> String {
    switch f.outcome {
    case .repaired: return "repaired: \(f.action ?? "")"
    case .protected(let reason): return "not repaired (\(reason))"
    case .failed(let error): return "repair failed: \(error)"
    case .left:
      guard let action = f.action else { return f.severity == .error ? "not repairable offline" : "reported only" }
      if declined { return "not repaired (declined)" }
      return "not repaired (\(action): \(f.policy == .safe ? "-p" : "-y") would)"
    }
  }

  static func line(_ f: Finding, asked: Bool = false) -> String {
    "\(f.layer): \(f.path): \(f.severity == .warning ? "warning: " : "")\(f.problem); \(outcome(f, declined: asked))"
  }

  /// Asks on the terminal: y/yes/n/no, Enter for the default answer (as fsck.overlay).
  static func ask(_ f: Finding, default answer: Bool) -> Bool {
    while true {
      writeAll(1, Array("\(f.layer): \(f.path): \(f.problem). \(f.action ?? "")? [\(answer ? "Y/n" : "y/N")] ".utf8))
      guard let reply = readLine(strippingNewline: true) else { return answer }
      switch reply.lowercased() {
      case "": return answer
      case "y", "yes": return true
      case "n", "no": return false
      default: continue
      }
    }
  }

  static func json(_ report: Report) -> [UInt8] {
    var out: [UInt8] = Array(#"{"findings":["#.utf8)
    for (i, f) in report.findings.enumerated() {
      if i > 0 { out.append(UInt8(ascii: ",")) }
      out += Array("{".utf8)
      field("check", f.check, &out, first: true)
      field("layer", f.layer, &out)
      field("path", f.path, &out)
      field("problem", f.problem, &out)
      if let action = f.action { field("action", action, &out) }
      field("policy", f.policy.rawValue, &out)
      field("severity", f.severity.rawValue, &out)
      field("outcome", outcome(f), &out)
      field("repaired", f.outcome == .repaired ? "yes" : "no", &out)
      out.append(UInt8(ascii: "}"))
    }
    out += Array(#"],"counts":{"#.utf8)
    for (i, (key, value)) in report.counts.sorted(by: { $0.key < $1.key }).enumerated() {
      if i > 0 { out.append(UInt8(ascii: ",")) }
      JSONLine.string(Array(key.utf8), into: &out)
      out += Array(":\(value)".utf8)
    }
    out += Array(#"},"errors":["#.utf8)
    for (i, e) in report.operationalErrors.enumerated() {
      if i > 0 { out.append(UInt8(ascii: ",")) }
      JSONLine.string(Array(e.utf8), into: &out)
    }
    out += Array(#"],"exit":\#(report.exitStatus)}"#.utf8)
    return out
  }

  static func field(_ key: String, _ value: String, _ out: inout [UInt8], first: Bool = false) {
    if !first { out.append(UInt8(ascii: ",")) }
    JSONLine.string(Array(key.utf8), into: &out)
    out.append(UInt8(ascii: ":"))
    JSONLine.string(Array(value.utf8), into: &out)
  }
}

/// `fsck.overlay`'s command line (overlayfs-progs), for xfstests and scripts:
/// `fsck.overlay [-o lowerdir=...,upperdir=...,workdir=...]... [-p|-n|-y] [-v] [-V] [-h]`.
/// `-o` keys other than the layer dirs and overlay options are ignored, as there.
enum FsckOverlay {
  static let usage = """
    Usage:
    \tfsck.overlay [-o lowerdir=<lowers>,upperdir=<upper>,workdir=<work>] [-pnyvhV]

    Options:
    -o,                       specify underlying directories of overlayfs:
                              multiple lower directories use ':' as separator
    -p,                       automatic repair (no questions)
    -n,                       make no changes to the filesystem
    -y,                       assume "yes" to all questions
    -v, --verbose             print more messages of overlayfs
    -h, --help                display this usage of overlayfs
    -V, --version             display version information
    """

  /// Keys passed on to the stack parser; any other key is dropped silently.
  static let knownKeys: Set<String> = [
    "lowerdir", "upperdir", "workdir", "index", "nfs_export", "metacopy", "redirect_dir", "userxattr", "uuid", "xino", "verity",
  ]

  static func main(_ arguments: [String]) -> Int32 {
    var optionStrings: [String] = []
    var modes: [RepairMode] = []
    var verbose = false
    var i = 0
    func bad(_ message: String) -> Int32 {
      printError("fsck.overlay: \(message)")
      printError(usage)
      return 16
    }
    while i < arguments.count {
      let arg = arguments[i]
      i += 1
      if arg == "--help" { printError(usage); return 16 }
      if arg == "--version" { print("fsck.overlay (ovltool) 0.1.0"); return 0 }
      if arg == "--verbose" { verbose = true; continue }
      guard arg.hasPrefix("-"), arg.count > 1, !arg.hasPrefix("--") else { return bad("unexpected argument '\(arg)'") }
      var flags = Array(arg.dropFirst())
      while !flags.isEmpty {
        let flag = flags.removeFirst()
        switch flag {
        case "o":
          if !flags.isEmpty {
            optionStrings.append(String(flags))
            flags = []
          } else if i < arguments.count {
            optionStrings.append(arguments[i])
            i += 1
          } else {
            return bad("option requires an argument -- 'o'")
          }
        case "p": modes.append(.preen)
        case "n": modes.append(.check)
        case "y": modes.append(.yes)
        case "v": verbose = true
        case "V": print("fsck.overlay (ovltool) 0.1.0"); return 0
        case "h": printError(usage); return 16
        default: return bad("invalid option -- '\(flag)'")
        }
      }
    }
    if modes.count > 1 { return bad("only one of -p, -n and -y can be given") }
    // The overlay options help the checks (index, userxattr...); a combination the kernel
    // would refuse is dropped rather than refused, as fsck.overlay never looked at them.
    func resolve(_ keys: Set<String>) throws(OvlError) -> StackOptions {
      var parser = StackOptionParser()
      for text in optionStrings {
        for item in splitOptions(text) where !item.isEmpty {
          let key = String(item.prefix { $0 != "=" })
          if keys.contains(key) { try parser.add(options: item) }
        }
      }
      return try parser.resolve(defaults: .current())
    }
    let options: StackOptions
    do {
      options = try resolve(knownKeys)
    } catch {
      do {
        options = try resolve(["lowerdir", "upperdir", "workdir"])
      } catch {
        return bad("\(error)")
      }
    }
    let mode = modes.first ?? .ask
    return FsckRun(options: options, mode: mode, verbose: verbose, json: false, program: "fsck.overlay").run()
  }

  /// Splits on unescaped commas, keeping the escapes for the stack parser.
  static func splitOptions(_ text: String) -> [String] {
    var parts: [String] = [""]
    var escaped = false
    for c in text {
      if escaped {
        parts[parts.count - 1].append(c)
        escaped = false
      } else if c == "\\" {
        parts[parts.count - 1].append(c)
        escaped = true
      } else if c == "," {
        parts.append("")
      } else {
        parts[parts.count - 1].append(c)
      }
    }
    return parts
  }
}
