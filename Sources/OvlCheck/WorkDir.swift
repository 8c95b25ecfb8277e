import OvlFormat
import OvlStack
import OvlSystem

/// The work dir: what the kernel's mount-time cleanup cannot remove. It removes each entry
/// of `work/` and each `#` entry of `index/` with the dirs directly in it, by rmdir: a
/// non-empty dir inside such an entry fails it (`work/` then makes the mount go read-only;
/// in `index/` it stays and is logged at every mount). And
/// `work/incompat/volatile`, which makes every mount fail.
extension Checker {
  func checkWorkDir() {
    guard let workRoot = stack.workRoot else { return }
    // An apply that did not finish (a crash, or a layer refused part-way): the upper holds
    // part of a layer. Only the same layer applied again completes it.
    if let pending = ApplyJournal.pending(in: stack) {
      report.found("interrupted-apply", layer: -1, name: workName, path: "/" + String(decoding: ApplyJournal.name, as: UTF8.self),
        problem: "an ovltool apply of \(pending) did not finish: the upper holds part of that layer; apply the same layer again to complete it",
        action: nil, policy: .none)
    }
    let workPath = options.workDir ?? ""
    if let work = try? open(Array("work".utf8), in: workRoot) {
      for child in (try? names(of: work)) ?? [] {
        report.count("work dir leftovers")
        if child.name == Array("incompat".utf8) {
          checkIncompat(work, workPath)
          continue
        }
        if tooDeep(child.name, in: work, levels: 1) {
          removeTreeFinding(child.name, in: work, shown: workPath + "/work/" + Self.text(child.name),
            problem: "a leftover the kernel cannot clean (a non-empty dir two levels down): the mount goes read-only")
        }
      }
    }
    if let index = try? open(Array("index".utf8), in: workRoot) {
      for child in (try? names(of: index)) ?? [] where child.name.first == UInt8(ascii: "#") {
        if tooDeep(child.name, in: index, levels: 1) {
          removeTreeFinding(child.name, in: index, shown: workPath + "/index/" + Self.text(child.name),
            problem: "a leftover temp the kernel cannot clean (a non-empty dir inside it): every index=on mount logs a failed cleanup", severity: .warning)
        }
      }
    }
  }

  /// `work/incompat/*`: the kernel refuses to mount (EINVAL). A volatile mount leaves
  /// `incompat/volatile/dirty` even after a clean unmount; the upper layer may lack writes
  /// if the system crashed during it, so only -y removes it.
  func checkIncompat(_ work: LayerDir, _ workPath: String) {
    guard let incompat = try? open(Array("incompat".utf8), in: work) else { return }
    let features = ((try? names(of: incompat)) ?? []).map { Self.text($0.name) }
    let volatile = features.contains("volatile")
    report.found("incompat-volatile", layer: -1, name: workName, path: "/work/incompat" + (volatile ? "/volatile" : ""),
      problem: volatile
        ? "left by a volatile mount: every later mount fails (EINVAL); if that mount did not end with a sync, the upper layer may lack writes"
        : "incompat feature(s) \(features.joined(separator: ", ")) that this kernel cannot mount",
      action: "remove work/incompat (only if the volatile mount's data is known to be complete)", policy: .onlyYes
    ) { () throws(OvlError) in
      try self.removeTree(Array("incompat".utf8), in: work, shown: workPath + "/work/incompat")
    }
  }

  /// Whether dir `name` in `parent` holds a non-empty dir `levels` below it (1: directly).
  func tooDeep(_ name: [UInt8], in parent: LayerDir, levels: Int) -> Bool {
    guard let dir = try? open(name, in: parent) else { return false }
    for child in (try? names(of: dir)) ?? [] where child.isDirectory || child.dtype == 0 {
      guard let sub = try? open(child.name, in: dir) else { continue }
      if levels <= 1 {
        if !((try? names(of: sub)) ?? []).isEmpty { return true }
      } else if tooDeep(child.name, in: dir, levels: levels - 1) {
        return true
      }
    }
    return false
  }

  func removeTreeFinding(_ name: [UInt8], in parent: LayerDir, shown: String, problem: String, severity: Severity = .error) {
    let relative = String(shown.dropFirst((options.workDir ?? "").count))
    report.found("work-leftover", layer: -1, name: workName, path: relative, problem: problem,
      action: "remove it", policy: .safe, severity: severity
    ) { () throws(OvlError) in
      try self.removeTree(name, in: parent, shown: shown)
    }
  }

  /// Removes `name` and everything under it, never following a symlink (OvlSystem's
  /// `removeTree`). Used only inside the work dir, which the kernel empties at mount: a crash
  /// midway leaves a smaller tree.
  func removeTree(_ name: [UInt8], in parent: LayerDir, shown: String) throws(OvlError) {
    try step("remove", shown) { () throws(Errno) in try parent.fd.removeTree(name) }
  }
}
