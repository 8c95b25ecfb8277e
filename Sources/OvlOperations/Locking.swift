import OvlStack
import OvlSystem

/// The one locking rule of every change (the kernel's `lock_parent` from the seed review):
/// lock the parent directory, then verify that the child is still the object we looked up;
/// if it moved, stop and clean nothing. Locks are `flock` on directory descriptors, taken in
/// one global order: the work (or index) dir before upper directories, ancestors before
/// descendants.
///
/// `expected` is the child's identity; nil locks the parent for a new name (whether the
/// name is free is then the job of the call that creates it: linkat or renameat2 with
/// NOREPLACE fail EEXIST).
func withLockedParent<R>(
  _ dir: LayerDir, child: [UInt8], expected: FileID?, path: @autoclosure () -> String,
  _ body: () throws(OvlError) -> R
) throws(OvlError) -> R {
  try step("flock", path()) { () throws(Errno) in try dir.fd.lock() }
  defer { dir.fd.unlock() }
  guard let expected else { return try body() }
  let now = try step("statx", path()) { () throws(Errno) in try dir.fd.statIfPresent(child)?.id }
  guard now == expected else { throw .staleChild(path: path()) }
  return try body()
}
