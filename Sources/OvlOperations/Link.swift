import OvlFormat
import OvlStack
import OvlSystem
import OvlWrite

extension WriteSession {
  /// link(2) on the merged view (`ovl_link`): the source is copied up (into the index for a
  /// lower hard link with index=on), a metacopy source gets an absolute redirect (its names
  /// in two directories must find the same lower data), the new parent is marked impure
  /// when the source has an origin, then the new name is linked — over a whiteout through a
  /// temp name.
  public func link(_ source: [UInt8], to destination: [UInt8]) throws(OvlError) {
    try link(try parse(source), to: try parse(destination))
  }

  public func link(_ from: MergedPath, to: MergedPath) throws(OvlError) {
    try change { () throws(OvlError) in
      let old = try locate(from)
      guard let oldEntry = old.entry else {
        throw .format(path: old.shown, reason: "no such file or directory", errno: .noSuchFileOrDirectory)
      }
      // linkat's order: the source, the new name's parent, the new name, then the type.
      let new = try locate(to)
      if new.entry != nil { throw .format(path: new.shown, reason: "file exists", errno: .fileExists) }
      if oldEntry.isDirectory { throw .format(path: old.shown, reason: "hard links to directories are not allowed", errno: .notPermitted) }

      try copyUpForChange(from)
      let (target, newParent) = try withUpperParent(new)
      if target.entry != nil { throw .format(path: new.shown, reason: "file exists", errno: .fileExists) }
      // The inode stays locked until the new name is linked (`ovl_nlink_start` … `_end`).
      try withNlinkStarted(try relocate(old)) { (source, nlink) throws(OvlError) in
        if let nlink, inodeLinks[nlink.index.status.id] != nil { inodeLinks[nlink.index.status.id] = nlink.links + 1 }
        guard let entry = source.entry, let upperObject = entry.upper else {
          throw .format(path: old.shown, reason: "no upper object after copy-up", errno: .ioError)
        }
        if entry.upperIsMetacopy { try setRedirect(source, entry, sameDirectory: false) }
        if try hasOrigin(entry) { try setImpure(newParent) }

        let path = describe(target.path)
        if let whiteout = try upperWhiteout(target.name, in: newParent) {
          let temp = temporaryName()
          try step("linkat", workPath + "/" + temp.string) { () throws(Errno) in
            try upperObject.parent.fd.link(upperObject.name, as: temp, in: tempDir.fd)
          }
          try publishOverWhiteout(TempEntry(dir: tempDir, name: temp, isDirectory: false), as: target.name, in: newParent, whiteout: whiteout, path: path)
        } else {
          try withLockedParent(newParent, child: target.name, expected: nil, path: path) { () throws(OvlError) in
            do throws(Errno) {
              try upperObject.parent.fd.link(upperObject.name, as: target.name, in: newParent.fd)
            } catch .fileExists {
              throw .format(path: new.shown, reason: "file exists", errno: .fileExists)
            } catch {
              throw .system(call: "linkat", path: path, errno: error)
            }
          }
        }
      }
      touched(newParent)
    }
  }
}
