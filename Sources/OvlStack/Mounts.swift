import OvlSystem

/// A layer of this stack that a mounted overlay uses, and where that overlay is mounted.
public struct LayerInUse: Sendable {
  /// "upperdir", "workdir" or "lowerdir".
  public let role: String
  /// The layer number (0 upper, 1... lowers and data-only layers); nil for the work dir.
  public let layer: Int?
  public let mountPoint: String
}

/// The layers of `stack` that a mounted overlay uses (as any of its upper, work or lower
/// dirs). Mounts are compared by device and inode of their directories, not by the strings
/// in /proc/self/mountinfo: relative paths and `lowerdir+=` mounts are found too.
public func layersInUse(_ stack: Stack) -> [LayerInUse] {
  var ours: [FileID: (role: String, layer: Int?)] = [:]
  if let upper = stack.upperRoot, let id = try? upper.fd.stat().id { ours[id] = ("upperdir", 0) }
  if let work = stack.workRoot, let id = try? work.fd.stat().id { ours[id] = ("workdir", nil) }
  for layer in 1..<(stack.layerPaths.count) {
    if let root = stack.lowerRootDir(layer), let id = try? root.fd.stat().id, ours[id] == nil { ours[id] = ("lowerdir", layer) }
  }
  guard let info = try? FD.openFile(atHostPath: "/proc/self/mountinfo").readAll() else { return [] }
  var found: [LayerInUse] = []
  for line in info.split(separator: 0x0A) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPEROPTIONS
    let fields = String(decoding: line, as: UTF8.self).split(separator: " ").map(String.init)
    guard let dash = fields.firstIndex(of: "-"), dash > 4, dash + 3 < fields.count, fields[dash + 1] == "overlay" else { continue }
    let mountPoint = unescapeMountinfo(fields[4])
    for option in splitOptions(fields[dash + 3]) {
      let key: String
      if option.hasPrefix("upperdir=") { key = "upperdir=" } else if option.hasPrefix("workdir=") { key = "workdir=" } else if option.hasPrefix("lowerdir=") { key = "lowerdir=" } else if option.hasPrefix("lowerdir+=") { key = "lowerdir+=" } else if option.hasPrefix("datadir+=") { key = "datadir+=" } else { continue }
      let value = String(option.dropFirst(key.count))
      let paths = key == "lowerdir=" ? value.split(separator: ":").map(String.init) : [value]
      for path in paths where !path.isEmpty {
        guard let fd = try? FD.openDirectory(atHostPath: unescapeMountinfo(path), pathOnly: true),
          let id = try? fd.stat().id, let mine = ours[id]
        else { continue }
        found.append(LayerInUse(role: mine.role, layer: mine.layer, mountPoint: mountPoint))
      }
    }
  }
  return found
}

/// Refuses to write to layers that a mounted overlay uses: the kernel's in-use protection
/// lives in memory only. Only the upper and work dirs count: lowers are shared read-only.
public func refuseMountedLayers(_ stack: Stack) throws(OvlError) {
  guard stack.upperRoot != nil, stack.workRoot != nil else { return }
  for use in layersInUse(stack) where use.role != "lowerdir" {
    throw .format(path: stack.layerPaths[0], reason: "the \(use.role) is in use by the overlay mounted at \(use.mountPoint); unmount it first", errno: .resourceBusy)
  }
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
private func unescapeMountinfo(_ s: String) -> String {
  var out: [UInt8] = []
  let b = Array(s.utf8)
  var i = 0
  while i < b.count {
    if b[i] == UInt8(ascii: "\\"), i + 3 < b.count,
      let v = UInt8(String(decoding: b[(i + 1)...(i + 3)], as: UTF8.self), radix: 8)
    {
      out.append(v)
      i += 4
    } else {
      out.append(b[i])
      i += 1
    }
  }
  return String(decoding: out, as: UTF8.self)
}

/// Super options are comma-separated; overlay escapes commas in paths with a backslash.
private func splitOptions(_ s: String) -> [String] {
  var parts: [String] = [""]
  var escaped = false
  for c in s {
    if escaped { parts[parts.count - 1].append(c); escaped = false; continue }
    if c == "\\" { escaped = true; continue }
    if c == "," { parts.append(""); continue }
    parts[parts.count - 1].append(c)
  }
  return parts
}
