import OvlSystem

/// The lock files of a store, held until this value goes (the process exits or the
/// command drops it). containers/storage locks each with an fcntl record lock on the whole
/// file (`lockfile.go`): shared for reading, exclusive for writing, as ovltool does here.
public final class StoreLocks: @unchecked Sendable {
  private let files: [SharedFD]

  init(_ files: [SharedFD]) { self.files = files }

  /// No locks (Docker's store has none: dockerd alone writes it).
  public static let none = StoreLocks([])

  public var count: Int { files.count }
}

extension StoreTree {
  /// Locks each file of `relatives` that exists, in that order (containers/storage's:
  /// the store, then layers, images, containers). `onWait` runs once if another process
  /// holds one (then this one waits for it).
  func lock(_ relatives: [String], exclusive: Bool, onWait: () -> Void) throws(OvlError) -> StoreLocks {
    var held: [SharedFD] = []
    var waited = false
    for relative in relatives {
      guard let file = try openIfPresent(relative, exclusive ? .readWrite : .readOnly) else { continue }
      let path = full(relative)
      if !(try step("fcntl(F_SETLK)", path) { () throws(Errno) in try file.recordLock(shared: !exclusive, wait: false) }) {
        if !waited { onWait() }
        waited = true
        _ = try step("fcntl(F_SETLKW)", path) { () throws(Errno) in try file.recordLock(shared: !exclusive, wait: true) }
      }
      held.append(SharedFD(file))
    }
    return StoreLocks(held)
  }
}
