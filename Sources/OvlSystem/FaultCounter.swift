import Glibc
import Synchronization

/// The test-only crash switch, at the one place every system call that changes a layer
/// passes (each write wrapper of `FD` calls `willChangeLayer()` first): with
/// `OVLTOOL_FAULT=N` (a number) the process kills itself with SIGKILL right before its N-th
/// such call — no cleanup, no buffered output, as a crash. Tests sweep N = 1, 2, … until a
/// run completes. Thread-safe: the bulk path links files on a second thread.
public enum FaultCounter {
  static let limit: Int? = getEnvironment("OVLTOOL_FAULT").flatMap { Int($0) }.flatMap { $0 > 0 ? $0 : nil }
  static let calls = Atomic<Int>(0)

  @inline(__always)
  public static func willChangeLayer() {
    guard let limit else { return }
    if calls.add(1, ordering: .relaxed).newValue == limit { _ = kill(getpid(), SIGKILL) }
  }
}
