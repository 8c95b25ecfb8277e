import OvlStack
import OvlSystem
import OvlWrite

/// Whether a repair may run without asking: fsck(8)'s "preen" answers yes only to repairs
/// that keep what the merged view shows (or that the kernel itself would make at mount).
public enum RepairPolicy: String, Sendable {
  /// `-p` repairs it; the default answer when asking is yes.
  case safe
  /// Only `-y` (or a yes when asked): the repair changes what the merged view shows or
  /// discards state the kernel could still use.
  case onlyYes = "only-yes"
  /// Nothing offline can repair it; reported only.
  case none
}

/// Whether a problem left in place makes fsck exit 4.
public enum Severity: String, Sendable {
  /// The kernel refuses, fails or shows something wrong because of it.
  case error
  /// Harmless or tidied by the kernel itself; repaired when allowed, never counted.
  case warning
}

/// What happened to a finding.
public enum Outcome: Equatable, Sendable {
  case repaired
  /// Not repaired: declined, `-n`, or nothing can repair it.
  case left
  /// Not repaired because the layer must not change (read-only, used by a mounted overlay).
  case protected(String)
  /// The repair was attempted and failed.
  case failed(String)
}

/// One problem found in one layer.
public struct Finding: Sendable {
  /// A stable name of the check (`orphan-whiteout`, `invalid-redirect`, ...).
  public let check: String
  /// The layer as the user named it ("upperdir /srv/u", "lowerdir 2 /srv/l2", "workdir /srv/w").
  public let layer: String
  /// The path inside the layer, `/` for its root.
  public let path: String
  public let problem: String
  /// The repair, as a verb phrase ("remove the whiteout"); nil when there is none.
  public let action: String?
  public let policy: RepairPolicy
  public let severity: Severity
  public internal(set) var outcome: Outcome = .left

  public var isUncorrected: Bool { severity == .error && outcome != .repaired }
}

/// Where a repair changes something: the parent dir to lock, the name, and the inode the
/// check saw there (nil for a name to create, or for the dir itself).
struct RepairTarget {
  let dir: LayerDir
  let name: [UInt8]
  let expected: FileID?
}

/// How repairs are decided.
public enum RepairMode: Sendable, Equatable {
  /// `-n`: change nothing.
  case check
  /// `-p`: repair what is safe.
  case preen
  /// `-y`: repair everything.
  case yes
  /// Ask per problem (a terminal and none of -n/-p/-y).
  case ask
}

/// The collector every check reports to: it decides each repair, runs it, keeps the
/// findings and the scan counts, and computes fsck(8)'s exit status at the end.
public final class Report {
  public let mode: RepairMode
  public private(set) var findings: [Finding] = []
  /// Errors that stopped part of the check (a layer that cannot be read, a failed repair).
  public private(set) var operationalErrors: [String] = []
  /// Scan counts for `-v`.
  public var counts: [String: Int] = [:]
  /// Called for each finding once its outcome is known (the CLI prints it).
  public var onFinding: (Finding) -> Void = { _ in }
  /// Called every few thousand entries (the CLI shows a progress line on a terminal).
  public var onProgress: (Int) -> Void = { _ in }
  /// Asks the user (mode `.ask`): the question and the default answer; returns the answer.
  public var ask: (Finding, Bool) -> Bool = { _, answer in answer }
  /// Layers that must not change, with the reason (by layer number; -1 is the work dir).
  public var protectedLayers: [Int: String] = [:]

  public init(mode: RepairMode) { self.mode = mode }

  func count(_ key: String, _ n: Int = 1) { counts[key, default: 0] += n }

  /// Records a finding in `layer` and runs `repair` if the mode allows it. Returns whether
  /// the repair ran and succeeded.
  @discardableResult
  func found(
    _ check: String, layer: Int, name: String, path: String, problem: String, action: String?,
    policy: RepairPolicy, severity: Severity = .error, at target: RepairTarget? = nil,
    repair: (() throws(OvlError) -> Void)? = nil
  ) -> Bool {
    var finding = Finding(check: check, layer: name, path: path.isEmpty ? "/" : path, problem: problem,
      action: repair == nil ? nil : action, policy: repair == nil ? .none : policy, severity: severity)
    defer {
      findings.append(finding)
      onFinding(finding)
    }
    guard let repair, policy != .none else { return false }
    let wanted: Bool
    switch mode {
    case .check: wanted = false
    case .preen: wanted = policy == .safe
    case .yes: wanted = true
    case .ask: wanted = ask(finding, policy == .safe)
    }
    guard wanted else { return false }
    if let reason = protectedLayers[layer] {
      finding.outcome = .protected(reason)
      return false
    }
    do {
      if let target {
        try withLockedParent(target.dir, child: target.name, expected: target.expected, path: "\(name): \(finding.path)", repair)
      } else {
        try repair()
      }
      finding.outcome = .repaired
      return true
    } catch {
      finding.outcome = .failed(error.description)
      operationalErrors.append("\(name): \(finding.path): \(error.description)")
      return false
    }
  }

  /// An error that stopped part of the check.
  func operational(_ message: String) {
    if !operationalErrors.contains(message) { operationalErrors.append(message) }
  }

  /// fsck(8)'s exit status: 4 when an error is left (it replaces 1, as fsck.overlay does),
  /// else 1 when something was repaired; 8 added for operational errors.
  public var exitStatus: Int32 {
    var status: Int32 = 0
    if findings.contains(where: \.isUncorrected) {
      status = 4
    } else if findings.contains(where: { $0.outcome == .repaired }) {
      status = 1
    }
    if !operationalErrors.isEmpty { status |= 8 }
    return status
  }

  public var uncorrectedCount: Int { findings.filter(\.isUncorrected).count }
  public var repairedCount: Int { findings.filter { $0.outcome == .repaired }.count }
}
