import COvlSys
import Glibc
import Synchronization

/// The one door of every system call that changes a layer: each `FD` method that creates,
/// links, renames, unlinks, writes data or xattrs, or changes attributes of something in a
/// layer makes its call through `changingLayer`, and nothing else does (writes to the
/// user's own output files use `retrying`). What every such call needs happens here once:
///
/// - EINTR is retried, `copy_file_range` and FICLONE included: a process that has signal
///   handlers (a program using the library) goes on with an interrupted copy instead of
///   failing the copy-up;
/// - the crash switch for tests: with `OVLTOOL_FAULT=N` the process kills itself with
///   SIGKILL right before its N-th call — no cleanup, no buffered output, as a crash.
///   Tests sweep N = 1, 2, … until a run completes.
///
/// Thread-safe: the bulk path links files on a second thread.
@inline(__always)
func changingLayer<T: FixedWidthInteger>(_ call: () -> T) throws(Errno) -> T {
  LayerWrites.willCall()
  return try retrying(call)
}

/// The counter behind `changingLayer`.
public enum LayerWrites {
  static let faultAt: Int? = getEnvironment("OVLTOOL_FAULT").flatMap { Int($0) }.flatMap { $0 > 0 ? $0 : nil }
  static let calls = Atomic<Int>(0)

  @inline(__always)
  static func willCall() {
    guard let faultAt else { return }
    if calls.add(1, ordering: .relaxed).newValue == faultAt { _ = kill(getpid(), SIGKILL) }
  }
}

/// The test hook for EINTR: with `OVLTOOL_SIGNAL_STORM=USEC` the process takes a SIGALRM
/// every USEC microseconds, caught without SA_RESTART, so its system calls are interrupted
/// as in a program with its own signal handlers. Every call must retry or go on with a
/// short count; the command must do exactly what it does without the signals.
public func startSignalStormIfAsked() {
  guard let usec = getEnvironment("OVLTOOL_SIGNAL_STORM").flatMap({ Int($0) }), usec > 0 else { return }
  _ = covl_signal_storm(usec)
}
