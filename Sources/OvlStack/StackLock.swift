import OvlSystem

/// The lock between ovltool processes on one stack: an `flock` on the work dir. Every
/// change holds it shared for its whole session (writers run side by side; their own
/// per-directory locks order them); a check holds it exclusive, so that it sees the layers
/// between changes, never an entry half-way through a rename or a copy-up. Released when
/// the owner goes (the descriptor closes). The kernel knows nothing of it: a mounted stack
/// is refused separately.
public struct StackLock: ~Copyable {
  let fd: FD
}

extension Stack {
  /// Shared, for a session of changes: `onWait` runs once if a check holds the stack (then
  /// it waits until the check is done).
  public func lockForChanges(onWait: () -> Void = {}) throws(OvlError) -> StackLock? {
    try lock(shared: true, onWait: onWait)
  }

  /// Runs `body` holding the lock exclusive, for a check: `onWait` runs once if writers
  /// hold the stack (then it waits until the last of them is done; new writers wait for
  /// the check).
  public func whileLockedForCheck<R>(onWait: () -> Void, _ body: () -> R) throws(OvlError) -> R {
    let lock = try lock(shared: false, onWait: onWait)
    let result = body()
    _ = consume lock
    return result
  }

  private func lock(shared: Bool, onWait: () -> Void) throws(OvlError) -> StackLock? {
    guard let workRoot else { return nil }
    let path = options.workDir ?? "workdir"
    // A descriptor of its own: flock belongs to the open file, not to the directory.
    let fd = try step("open", path) { () throws(Errno) in try FD.open([0x2E], in: workRoot.fd, .directory) }
    if try step("flock", path, { () throws(Errno) in try fd.lock(shared: shared, wait: false) }) {
      return StackLock(fd: fd)
    }
    onWait()
    _ = try step("flock", path) { () throws(Errno) in try fd.lock(shared: shared, wait: true) }
    return StackLock(fd: fd)
  }
}
