import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

/// How `rm` treats directories.
public enum RemoveMode: Sendable {
  /// unlink(2): directories are refused (EISDIR).
  case file
  /// `rm -d`: rmdir(2) for a directory (it must be empty), unlink(2) for anything else.
  case emptyDirectory
  /// `rm -r`: a directory's contents first, deepest first, then the directory.
  case recursive
}

extension WriteSession {
  /// Removes a merged-view path as unlink(2)/rmdir(2) on a mount does (`ovl_do_remove`).
  /// `force`: a missing path is not an error (rm -f).
  public func remove(_ path: [UInt8], mode: RemoveMode, force: Bool = false) throws(OvlError) {
    try remove(try parse(path), mode: mode, force: force)
  }

  public func remove(_ path: MergedPath, mode: RemoveMode, force: Bool = false) throws(OvlError) {
    try change { () throws(OvlError) in
      let target = try locate(path)
      guard let entry = target.entry else {
        if force { return }
        throw .format(path: target.shown, reason: "no such file or directory", errno: .noSuchFileOrDirectory)
      }
      switch (mode, entry.isDirectory) {
      case (.file, true): throw .format(path: target.shown, reason: "is a directory (rm -r or rm -d removes directories)", errno: .isDirectory)
      case (.recursive, true): try removeTree(path)
      default: try removeOne(target, directory: entry.isDirectory)
      }
    }
  }

  /// `rm -r`: every child (each removed as the kernel removes it for rm(1)), then the
  /// directory itself.
  private func removeTree(_ path: MergedPath) throws(OvlError) {
    let target = try locate(path)
    guard let entry = target.entry else { return }
    if entry.isDirectory {
      let dir = try stack.open(entry)
      let names = try stack.list(dir).filter { $0 != [0x2E] && $0 != [0x2E, 0x2E] }
      dir.forgetListing()
      for name in names { try removeTree(path.appending(name)) }
      try removeOne(try locate(path), directory: true)
    } else {
      try removeOne(target, directory: false)
    }
  }

  /// `ovl_do_remove` for one name.
  private func removeOne(_ target: Target, directory: Bool) throws(OvlError) {
    guard let entry = target.entry else {
      throw .format(path: target.shown, reason: "no such file or directory", errno: .noSuchFileOrDirectory)
    }
    if directory != entry.isDirectory {
      throw .format(path: target.shown, reason: directory ? "not a directory" : "is a directory", errno: directory ? .notDirectory : .isDirectory)
    }
    let lowerPositive = try stack.lowerPositive(target.name, in: target.parent, entry: entry)
    let pureUpper = try isPureUpper(entry)
    if directory && (lowerPositive || !pureUpper) { try requireEmpty(entry) }
    let (located, upperParent) = try withUpperParent(target)
    try withNlinkStarted(located) { (current, nlink) throws(OvlError) in
      guard let entry = current.entry else {
        throw .format(path: target.shown, reason: "gone while being removed", errno: .noSuchFileOrDirectory)
      }
      let path = describe(current.path)
      let upperObject = hasUpperAlias(entry) ? entry.upper?.status : nil
      if lowerPositive {
        try cleanupAndWhiteout(current.name, in: upperParent, expected: upperObject, path: path)
      } else {
        guard let upperObject else { throw .format(path: target.shown, reason: "no upper object to remove", errno: .staleNFSFileHandle) }
        try removeUpper(current.name, in: upperParent, expected: upperObject, mayHoldWhiteouts: !pureUpper, path: path)
      }
      try nlinkEnd(nlink, removed: true)
      forgetDirectories(under: current.path)
    }
  }
}
