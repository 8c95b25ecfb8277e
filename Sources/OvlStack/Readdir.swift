import OvlFormat
import OvlSystem

extension Stack {
  /// The names of a merged directory as the kernel's readdir returns them, sorted by their
  /// bytes. A merged directory lists each name once (its top-most occurrence) and drops
  /// whiteouts; a real (unmerged) directory is listed raw, whiteouts included.
  ///
  /// Where the kernel computes inode numbers (layers on one filesystem, or xino), its
  /// readdir looks children up, and a failed lookup changes the listing: see
  /// `mergedListing` and `realListing`.
  public func list(_ dir: MergedDir) throws(OvlError) -> [[UInt8]] {
    let layers = (dir.upper.map { [$0] } ?? []) + dir.lowers
    let impure = try dir.upper.map { (upper) throws(OvlError) in
      Impure.isSet(try step("getxattr", describe(0, dir.path)) { () throws(Errno) in
        try upper.fd.xattr([0x2E], namespace.name(.impure))
      })
    } ?? false
    if dir.isReal, let only = layers.first {
      return try realListing(only, dir, impure: impure).sorted(by: Self.byteOrder)
    }
    return try mergedListing(layers, dir, impure: impure).sorted(by: Self.byteOrder)
  }

  /// Every name any layer of `dir` has, raw: whiteouts, and names hidden by whiteouts or
  /// opaque directories, included. A name not in the set is absent from every layer, so a
  /// lookup of it is negative and leaves nothing to replace: the kernel creates it in place.
  public func namesInAnyLayer(_ dir: MergedDir) throws(OvlError) -> Set<[UInt8]> {
    var names = Set<[UInt8]>()
    for layerDir in (dir.upper.map { [$0] } ?? []) + dir.lowers {
      let list = try step("getdents64", describe(layerDir.layer, dir.path)) { () throws(Errno) in try layerDir.fd.entries() }
      for entry in list { names.insert(entry.name) }
    }
    return names
  }

  /// One name of a merged directory in the kernel's readdir cache.
  private struct CacheEntry {
    let name: [UInt8]
    /// First met in the upper layer: its inode number is recomputed in impure dirs.
    let fromUpper: Bool
  }

  /// `ovl_dir_read_merged` and `ovl_iterate_merged`. The cache lists the lowest layer's
  /// names first (in that layer's order), then the other layers' names in the order met.
  /// Where inode numbers are recomputed, each such name is looked up; a name whose lookup
  /// fails is dropped if the getdents call already returned entries, and fails the whole
  /// readdir if it would be the first entry of a call (as for two failures in a row).
  private func mergedListing(_ layers: [LayerDir], _ dir: MergedDir, impure: Bool) throws(OvlError) -> [[UInt8]] {
    var firstLayer: [[UInt8]: Int] = [:]
    var tail: [CacheEntry?] = []
    var tailIndex: [[UInt8]: Int] = [:]
    var head: [CacheEntry] = []
    var moved = Set<[UInt8]>()
    for (index, layerDir) in layers.enumerated() {
      let lowest = index == layers.count - 1
      let checkXwhiteouts = dir.xwhiteouts && layersWithXwhiteouts.contains(layerDir.layer)
      for entry in try entries(of: layerDir, dir, includingDots: true) {
        if firstLayer[entry.name] == nil {
          firstLayer[entry.name] = layerDir.layer
          let hidden = try isHidden(entry, in: layerDir, dir, checkXwhiteouts: checkXwhiteouts)
          let cached = CacheEntry(name: entry.name, fromUpper: layerDir.layer == 0)
          if hidden {
            firstLayer[entry.name] = -1
          } else if lowest {
            head.append(cached)
            moved.insert(entry.name)
          } else {
            tailIndex[entry.name] = tail.count
            tail.append(cached)
          }
        } else if lowest, firstLayer[entry.name] != -1, moved.insert(entry.name).inserted,
          let i = tailIndex[entry.name], let cached = tail[i]
        {
          head.append(cached)
          tail[i] = nil
        }
      }
    }
    let translates = xinoTranslates || (sameFilesystem && impure)
    var reader = GetdentsReader()
    var names: [[UInt8]] = []
    for entry in head + tail.compactMap({ $0 }) {
      let special = entry.name == [0x2E] || entry.name == [0x2E, 0x2E]
      if !special && (xinoTranslates || (translates && entry.fromUpper)) {
        switch lookupForReaddir(entry.name, in: dir) {
        case .failure(let error):
          if reader.isStartOfCall { throw error }
          reader.endCall()
          continue
        case .success(nil):
          continue
        case .success(let found?):
          dir.looked[entry.name] = found
        }
      }
      reader.emit(entry.name)
      if !special { names.append(entry.name) }
    }
    return names
  }

  /// A real directory is listed raw; where the kernel translates inode numbers of an impure
  /// one (`ovl_dir_read_impure`) every child is looked up and any failure fails the readdir.
  private func realListing(_ only: LayerDir, _ dir: MergedDir, impure: Bool) throws(OvlError) -> [[UInt8]] {
    let names = try entries(of: only, dir).map(\.name)
    guard impure && (xinoTranslates || sameFilesystem) else { return names }
    for name in names {
      if case .failure(let error) = lookupForReaddir(name, in: dir) { throw error }
    }
    return names
  }

  private func lookupForReaddir(_ name: [UInt8], in dir: MergedDir) -> Result<MergedEntry?, OvlError> {
    do throws(OvlError) {
      return .success(try lookup(name, in: dir))
    } catch {
      return .failure(error)
    }
  }

  /// Whether a name's top-most occurrence hides it: a char 0/0, or an xattr whiteout where
  /// the kernel checks for them.
  private func isHidden(_ entry: DirectoryEntry, in layerDir: LayerDir, _ dir: MergedDir, checkXwhiteouts: Bool) throws(OvlError) -> Bool {
    guard entry.mayBeWhiteout || (checkXwhiteouts && entry.mayBeRegular) else { return false }
    let status = try step("statx", describe(layerDir.layer, dir.path.appending(entry.name))) { () throws(Errno) in
      try layerDir.fd.statIfPresent(entry.name)
    }
    guard let status else { return true }
    if status.isWhiteoutDevice { return true }
    guard checkXwhiteouts && status.type == .regular && status.size == 0 else { return false }
    let object = RealObject(layer: layerDir.layer, parent: layerDir, name: entry.name, status: status)
    return try step("listxattr", describe(layerDir.layer, dir.path.appending(entry.name))) {
      () throws(Errno) in try isWhiteout(object)
    }
  }

  private func entries(of layerDir: LayerDir, _ dir: MergedDir, includingDots: Bool = false) throws(OvlError) -> [DirectoryEntry] {
    let list = try step("getdents64", describe(layerDir.layer, dir.path)) { () throws(Errno) in
      try layerDir.fd.entries(includingDots: includingDots)
    }
    layerDir.listed = Set(list.map(\.name))
    return list
  }

  /// The getdents64 calls of a reader with glibc's 32 KiB buffer: which entry would be the
  /// first of a call.
  struct GetdentsReader {
    static let bufferSize = 32768
    private var used = 0
    private var emitted = 0
    var isStartOfCall: Bool { emitted == 0 }

    mutating func emit(_ name: [UInt8]) {
      let length = (19 + name.count + 1 + 7) & ~7  // linux_dirent64, 8-byte aligned
      if used + length > Self.bufferSize { endCall() }
      used += length
      emitted += 1
    }

    mutating func endCall() {
      used = 0
      emitted = 0
    }
  }

  /// Byte-wise order of names (memcmp, shorter first on a common prefix).
  public static func byteOrder(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.lexicographicallyPrecedes(b)
  }
}
