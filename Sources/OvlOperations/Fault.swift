import OvlSystem

/// The test-only fault switch: `OVLTOOL_FAULT=<step>` ends the process at that step, as a
/// crash would, so tests can check that every intermediate state mounts and repairs.
enum Fault {
  static let step: String? = {
    guard let raw = getEnvironment("OVLTOOL_FAULT"), !raw.isEmpty else { return nil }
    return raw
  }()

  static func point(_ name: String) {
    if step == name { crashNow(99) }
  }
}
