import OvlStack
import OvlSystem

/// Refuses to write to layers that a mounted overlay uses: the kernel's in-use protection
/// lives in memory only. Mounts are compared by device and inode of their upper, work and
/// lower directories, not by the strings in /proc/self/mountinfo.
func refuseMountedLayers(_ stack: Stack) throws(OvlError) {
  guard let upper = stack.upperRoot, let work = stack.workRoot else { return }
  let ours: [FileID: String] = [
    (try? upper.fd.stat().id) ?? FileID(device: 0, inode: 0): "upperdir",
    (try? work.fd.stat().id) ?? FileID(device: 0, inode: 0): "workdir",
  ]
  guard let info = try? FD.openFile(atHostPath: "/proc/self/mountinfo").readAll() else { return }
  for line in info.split(separator: 0x0A) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPEROPTIONS
    let fields = String(decoding: line, as: UTF8.self).split(separator: " ").map(String.init)
    guard let dash = fields.firstIndex(of: "-"), dash > 4, dash + 3 < fields.count, fields[dash + 1] == "overlay" else { continue }
    let mountPoint = unescapeMountinfo(fields[4])
    for option in splitOptions(fields[dash + 3]) {
      let key: String
      if option.hasPrefix("upperdir=") { key = "upperdir=" } else if option.hasPrefix("workdir=") { key = "workdir=" } else if option.hasPrefix("lowerdir=") { key = "lowerdir=" } else { continue }
      let value = String(option.dropFirst(key.count))
      let paths = key == "lowerdir=" ? value.split(separator: ":").map(String.init) : [value]
      for path in paths where !path.isEmpty {
        guard let fd = try? FD.openDirectory(atHostPath: unescapeMountinfo(path), pathOnly: true),
          let id = try? fd.stat().id, let role = ours[id]
        else { continue }
        throw .format(path: stack.layerPaths[0], reason: "the \(role) is in use by the overlay mounted at \(mountPoint); unmount it first", errno: .resourceBusy)
      }
    }
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
