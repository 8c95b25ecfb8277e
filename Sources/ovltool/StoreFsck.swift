import OvlCheck
import OvlImage
import OvlStack
import OvlStore
import OvlSystem

/// `fsck --store`: the store's own consistency, then each stack of the store through the
/// checker `fsck` runs on one stack (repairs only in a container's upper, as `fsck` of
/// that stack would make them), then optionally each layer's content against its digest.
/// One line per store problem, the findings of each stack prefixed by its title, one
/// summary line per stack; fsck(8)'s exit status over all of them.
struct StoreFsckRun {
  let store: any ContainerStore
  let mode: RepairMode
  let verbose: Bool
  let json: Bool
  let verifyDigests: Bool

  func run() -> Int32 {
    let out = OutputBuffer()
    var status: Int32 = 0
    var jsonStacks: [[UInt8]] = []
    let problems = store.consistencyProblems()
    for p in problems where !json { out.line("store \(store.root): \(p.path): \(p.problem); not repairable offline") }
    if !problems.isEmpty { status |= 4 }
    out.flush()
    for (title, result) in store.stacksToCheck() {
      let (exit, summary, findings) = check(title, result, out)
      status |= exit
      if json {
        var entry = Array(#"{"stack":"#.utf8)
        JSONLine.string(Array(title.utf8), into: &entry)
        entry += Array(#","summary":"#.utf8)
        JSONLine.string(Array(summary.utf8), into: &entry)
        entry += Array(#","exit":\#(exit),"report":"#.utf8) + (findings ?? Array("null".utf8)) + [UInt8(ascii: "}")]
        jsonStacks.append(entry)
      } else {
        out.line("\(title): \(summary)")
        out.flush()
      }
    }
    var digestLines: [(String, String)] = []
    if verifyDigests {
      for (id, digest) in store.layerDigests() {
        let outcome = verify(id, digest)
        if outcome.bad { status |= 4 }
        digestLines.append((id, outcome.text))
        if !json {
          out.line("layer \(StoreID.short(id)): digest \(outcome.text)")
          out.flush()
        }
      }
    }
    if json {
      var line = Array(#"{"store":"#.utf8)
      JSONLine.string(Array(store.root.utf8), into: &line)
      line += Array(#","problems":["#.utf8)
      for (i, p) in problems.enumerated() {
        if i > 0 { line.append(UInt8(ascii: ",")) }
        line += Array(#"{"path":"#.utf8)
        JSONLine.string(Array(p.path.utf8), into: &line)
        line += Array(#","problem":"#.utf8)
        JSONLine.string(Array(p.problem.utf8), into: &line)
        line.append(UInt8(ascii: "}"))
      }
      line += Array(#"],"stacks":["#.utf8)
      for (i, s) in jsonStacks.enumerated() {
        if i > 0 { line.append(UInt8(ascii: ",")) }
        line += s
      }
      line += Array(#"],"digests":["#.utf8)
      for (i, (id, text)) in digestLines.enumerated() {
        if i > 0 { line.append(UInt8(ascii: ",")) }
        line += Array(#"{"layer":"\#(id)","result":"#.utf8)
        JSONLine.string(Array(text.utf8), into: &line)
        line.append(UInt8(ascii: "}"))
      }
      line += Array(#"],"exit":\#(status)}"#.utf8)
      out.line(line)
    }
    out.flush()
    return status
  }

  /// One stack: its exit status, summary, and (with --json) fsck's JSON report.
  func check(_ title: String, _ result: Result<StoreStack, OvlError>, _ out: OutputBuffer) -> (Int32, String, [UInt8]?) {
    let derived: StoreStack
    switch result {
    case .failure(let error): return (4, "cannot be checked: \(error)", nil)
    case .success(let s): derived = s
    }
    let options: StackOptions
    let stack: Stack
    do throws(OvlError) {
      options = try derived.stackOptions()
      stack = try Checker.openStack(options)
    } catch {
      return (8, "cannot be opened: \(error)", nil)
    }
    if !derived.isReadOnly, let use = layersInUse(stack).first(where: { $0.role != "lowerdir" }) {
      return (0, "running (its layer is mounted at \(use.mountPoint)): not checked", nil)
    }
    let (checked, _) = Checker.detectNamespace(stack, options)
    if !checked.userxattr && !stack.credentials.canUseTrustedXattrs {
      return (8, "reading trusted.overlay.* xattrs needs root (or a userxattr stack)", nil)
    }
    // The lowers of a store are shared by every stack on them: only a container's upper
    // is repaired.
    let report = Report(mode: derived.isReadOnly ? .check : (mode == .ask ? .check : mode))
    if !json {
      report.onFinding = { finding in
        out.line("\(title): \(FsckRun.line(finding))")
        out.flush()
      }
    }
    do {
      try stack.whileLockedForCheck(onWait: { printError("ovltool fsck: waiting for the ovltool processes changing \(title)") }) {
        Checker(stack: stack, options: checked, report: report).run()
      }
    } catch {
      return (8, "\(error)", nil)
    }
    for error in report.operationalErrors where !json { printError("ovltool fsck: \(title): \(error)") }
    let exit = report.exitStatus
    let summary: String
    if report.findings.isEmpty && exit == 0 {
      summary = "clean (\(derived.layers.count) layers, \(report.counts["entries", default: 0]) entries)"
    } else {
      summary = "\(report.findings.count) problems: \(report.repairedCount) repaired, \(report.uncorrectedCount) errors left"
    }
    return (exit, summary, json ? FsckRun.json(report) : nil)
  }

  /// A layer's content against its recorded digest, through the tar-split file.
  func verify(_ id: String, _ digest: String?) -> (text: String, bad: Bool) {
    guard let digest else { return ("not recorded: not checked", false) }
    do throws(OvlError) {
      guard let files = try store.layerFiles(id) else { return ("no tar-split file: not checked", false) }
      let computed = try TarSplit.digest(tarSplit: files.tarSplit, path: files.tarSplitPath, diff: files.diff, diffPath: files.diffPath)
      return computed == digest ? ("ok (\(digest))", false) : ("mismatch: content gives \(computed), recorded \(digest)", true)
    } catch {
      return ("cannot be verified: \(error)", true)
    }
  }
}
