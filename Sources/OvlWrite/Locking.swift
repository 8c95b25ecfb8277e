import OvlStack
import OvlSystem

/// The one locking rule of every change to a layer — by a command, by fsck's repairs, by the
/// bulk apply (the kernel's `lock_parent` from the seed review): lock the parent directory,
/// then verify that the child is still the object that was looked up; if it moved, stop and
/// clean nothing. Locks are `flock` on directory descriptors, taken in one global order: the
/// work (or index) dir before upper directories, ancestors (shallower paths) before
/// descendants; `withLockedParents` takes two in that order.
///
/// `expected` is the child's identity; nil locks the parent for a new name (whether the
/// name is free is then the job of the call that creates it: linkat or renameat2 with
/// NOREPLACE fail EEXIST).
public func withLockedParent<R>(
  _ dir: LayerDir, child: [UInt8], expected: FileID?, path: @autoclosure () -> String,
  _ body: () throws(OvlError) -> R
) throws(OvlError) -> R {
  try step("flock", path()) { () throws(Errno) in try dir.fd.lock() }
  defer { dir.fd.unlock() }
  try verify(dir, child: child, expected: expected, path: path())
  return try body()
}

/// One name of a locked directory for `withLockedParents`: the child verified to be
/// `expected` (nil: not verified) — or, with `mustBeFree`, verified to be absent — `path`
/// its shown path.
public struct LockedChild {
  public let dir: LayerDir
  public let child: [UInt8]
  public let expected: FileID?
  public let mustBeFree: Bool
  public let path: String
  /// The work or index dir, which comes first in the lock order.
  public let isWorkDir: Bool

  public init(_ dir: LayerDir, child: [UInt8], expected: FileID?, path: String, isWorkDir: Bool = false) {
    self.dir = dir
    self.child = child
    self.expected = expected
    mustBeFree = false
    self.path = path
    self.isWorkDir = isWorkDir
  }

  /// `child` must not exist when the locks are held (a rename that would replace it
  /// without RENAME_NOREPLACE: something made there since the lookup is not lost).
  public static func free(_ dir: LayerDir, child: [UInt8], path: String) -> LockedChild {
    LockedChild(dir, child: child, path: path)
  }

  private init(_ dir: LayerDir, child: [UInt8], path: String) {
    self.dir = dir
    self.child = child
    expected = nil
    mustBeFree = true
    self.path = path
    isWorkDir = false
  }

  func verify() throws(OvlError) {
    if mustBeFree {
      let now = try step("statx", path) { () throws(Errno) in try dir.fd.statIfPresent(child) }
      guard now == nil else { throw .staleChild(path: path) }
      return
    }
    try OvlWrite.verify(dir, child: child, expected: expected, path: path)
  }

  /// Whether this lock comes before `other`'s in the global order.
  func precedes(_ other: LockedChild) -> Bool {
    if isWorkDir != other.isWorkDir { return isWorkDir }
    if dir.path.count != other.dir.path.count { return dir.path.count < other.dir.path.count }
    return dir.path.lexicographicallyPrecedes(other.dir.path)
  }
}

/// Both parents locked in the global order (one lock when they are the same directory),
/// then both children verified: for a rename or an exchange between two directories.
public func withLockedParents<R>(
  _ a: LockedChild, _ b: LockedChild, _ body: () throws(OvlError) -> R
) throws(OvlError) -> R {
  let same = a.dir === b.dir || (a.isWorkDir == b.isWorkDir && a.dir.path == b.dir.path && a.dir.layer == b.dir.layer)
  let (first, second) = b.precedes(a) ? (b, a) : (a, b)
  try step("flock", first.path) { () throws(Errno) in try first.dir.fd.lock() }
  defer { first.dir.fd.unlock() }
  if !same { try step("flock", second.path) { () throws(Errno) in try second.dir.fd.lock() } }
  defer { if !same { second.dir.fd.unlock() } }
  try a.verify()
  try b.verify()
  return try body()
}

fileprivate func verify(_ dir: LayerDir, child: [UInt8], expected: FileID?, path: @autoclosure () -> String) throws(OvlError) {
  guard let expected else { return }
  let now = try step("statx", path()) { () throws(Errno) in try dir.fd.statIfPresent(child)?.id }
  guard now == expected else { throw .staleChild(path: path()) }
}
