import OvlFormat
import OvlSystem

/// Builds a `FixtureSpec` on disk: `DIR/upper`, `DIR/work`, `DIR/<lower name>`...
public enum Fixture {
  public static let defaultMtime: Int64 = 1_700_000_000 * 1_000_000_000

  /// Creates the layers under `directory` (which must exist and be empty of these names)
  /// and returns the mount options that describe the stack.
  public static func materialize(_ spec: FixtureSpec, at directory: String) throws(OvlError) -> String {
    let base = try step("open", directory) { () throws(Errno) in try FD.openDirectory(atHostPath: directory) }
    let namespace: XattrNamespace = spec.userxattr ? .user : .trusted
    var lower: [String] = []
    var data: [String] = []
    var upper: String?
    for layer in spec.layers {
      let name = Array(layer.name.utf8)
      try step("mkdir", directory + "/" + layer.name) { () throws(Errno) in try base.makeDirectory(name, permissions: 0o755) }
      let root = LayerDir(fd: try step("open", directory + "/" + layer.name) { () throws(Errno) in try FD.open(name, in: base, .directory) })
      var builder = Builder(root: root, namespace: namespace, layerPath: directory + "/" + layer.name)
      for entry in layer.entries { try builder.add(entry) }
      try builder.finishTimes()
      switch layer.kind {
      case .upper: upper = directory + "/" + layer.name
      case .lower: lower.append(escape(directory + "/" + layer.name))
      case .data: data.append(escape(directory + "/" + layer.name))
      }
    }
    var options = "lowerdir=" + lower.joined(separator: ":") + data.map { "::" + $0 }.joined()
    if let upper {
      try step("mkdir", directory + "/work") { () throws(Errno) in try base.makeDirectory(Array("work".utf8), permissions: 0o755) }
      options += ",upperdir=\(escape(upper)),workdir=\(escape(directory + "/work"))"
    }
    for o in spec.options { options += "," + o }
    return options
  }

  static func escape(_ path: String) -> String {
    var out = ""
    for c in path {
      if c == ":" || c == "," || c == "\\" { out.append("\\") }
      out.append(c)
    }
    return out
  }

  final class LayerDir {
    let fd: FD
    init(fd: consuming FD) { self.fd = fd }
  }

  struct Builder {
    let root: LayerDir
    let namespace: XattrNamespace
    let layerPath: String
    /// Every path created, with its mtime, to set once the layer is complete.
    var times: [([[UInt8]], Int64)] = []
    var created: Set<[[UInt8]]> = [[]]

    init(root: LayerDir, namespace: XattrNamespace, layerPath: String) {
      self.root = root
      self.namespace = namespace
      self.layerPath = layerPath
    }

    func where_(_ path: [[UInt8]], _ line: Int) -> String {
      "\(layerPath)/\(path.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")) (fixture line \(line))"
    }

    func parentDir(_ path: [[UInt8]]) throws(Errno) -> LayerDir {
      var dir = root
      for c in path.dropLast() { dir = LayerDir(fd: try FD.open(c, in: dir.fd, .directory)) }
      return dir
    }

    mutating func ensureParents(_ path: [[UInt8]]) throws(Errno) {
      var dir = root
      var prefix: [[UInt8]] = []
      for c in path.dropLast() {
        prefix.append(c)
        if !created.contains(prefix) {
          do { try dir.fd.makeDirectory(c, permissions: 0o755) } catch .fileExists {}
          created.insert(prefix)
          times.append((prefix, Fixture.defaultMtime))
        }
        dir = LayerDir(fd: try FD.open(c, in: dir.fd, .directory))
      }
    }

    mutating func add(_ e: FixtureSpec.Entry) throws(OvlError) {
      let at = where_(e.path, e.line)
      do {
        try build(e)
      } catch {
        throw .system(call: e.kind.rawValue, path: at, errno: error)
      }
    }

    func attribute(_ e: FixtureSpec.Entry, _ key: String) -> [UInt8]?? {
      e.attributes.last { $0.0 == key }.map { $0.1 }
    }

    func number(_ e: FixtureSpec.Entry, _ key: String, radix: Int = 10) throws(Errno) -> Int64? {
      guard let v = attribute(e, key) else { return nil }
      guard let v, let n = Int64(String(decoding: v, as: UTF8.self), radix: radix) else { throw .invalidArgument }
      return n
    }

    mutating func build(_ e: FixtureSpec.Entry) throws(Errno) {
      if e.path.isEmpty {
        // The layer root itself: only attributes.
        try applyAttributes(e, dir: root, name: [0x2E], type: .directory)
        return
      }
      try ensureParents(e.path)
      let dir = try parentDir(e.path)
      let name = e.path[e.path.count - 1]
      var type: FileType
      switch e.kind {
      case .dir:
        if !created.contains(e.path) {
          do { try dir.fd.makeDirectory(name, permissions: 0o755) } catch .fileExists {}
        }
        type = .directory
      case .file, .xwhiteout:
        var contents = e.kind == .file ? (e.arguments.first ?? []) : []
        let size = try number(e, "size")
        if let size, e.arguments.isEmpty && attribute(e, "metacopy") == nil {
          contents = Fixture.pattern(count: Int(size), seed: Array(e.path.joined(separator: [0x2F])))
        }
        try dir.fd.createFile(name, contents: contents, permissions: 0o644)
        if let size, attribute(e, "metacopy") != nil || !e.arguments.isEmpty {
          try dir.fd.truncate(name, size: UInt64(size))
        }
        if e.kind == .xwhiteout { try dir.fd.setXattr(name, namespace.name(.whiteout), []) }
        type = .regular
      case .symlink:
        guard let target = e.arguments.first else { throw .invalidArgument }
        try dir.fd.makeSymlink(name, target: target)
        type = .symlink
      case .whiteout:
        try dir.fd.makeWhiteout(name)
        type = .character
      case .fifo:
        try dir.fd.makeNode(name, type: .fifo, permissions: 0o644)
        type = .fifo
      case .socket:
        try dir.fd.makeNode(name, type: .socket, permissions: 0o755)
        type = .socket
      case .char, .block:
        guard e.arguments.count == 2, let major = UInt32(String(decoding: e.arguments[0], as: UTF8.self)),
          let minor = UInt32(String(decoding: e.arguments[1], as: UTF8.self))
        else { throw .invalidArgument }
        type = e.kind == .char ? .character : .block
        try dir.fd.makeNode(name, type: type, permissions: 0o644, major: major, minor: minor)
      case .link:
        guard let targetText = e.arguments.first else { throw .invalidArgument }
        let target = targetText.split(separator: 0x2F).map { Array($0) }
        let targetDir = try parentDir(target)
        guard let targetName = target.last else { throw .invalidArgument }
        try targetDir.fd.link(targetName, as: name, in: dir.fd)
        created.insert(e.path)
        return
      }
      created.insert(e.path)
      try applyAttributes(e, dir: dir, name: name, type: type)
    }

    mutating func applyAttributes(_ e: FixtureSpec.Entry, dir: LayerDir, name: [UInt8], type: FileType) throws(Errno) {
      for (key, value) in e.attributes {
        var xattrName: [UInt8]?
        var xattrValue = value ?? []
        if key.hasPrefix("xattr.") {
          xattrName = Array(key.dropFirst(6).utf8)
          if let v = value, v.starts(with: Array("0x".utf8)) {
            guard let decoded = Hex.decode(Array(v.dropFirst(2))) else { throw .invalidArgument }
            xattrValue = decoded
          }
        } else if let k = OverlayXattr(rawValue: key), !["size"].contains(key) {
          xattrName = namespace.name(k)
          if k == .origin || k == .upper || k == .uuid || (k == .metacopy && value != nil) {
            guard let decoded = Hex.decode(value ?? []) else { throw .invalidArgument }
            xattrValue = decoded
          }
        }
        if let xattrName { try dir.fd.setXattr(name, xattrName, xattrValue) }
      }
      let uid = try number(e, "uid").map { UInt32($0) }
      let gid = try number(e, "gid").map { UInt32($0) }
      if uid != nil || gid != nil {
        try dir.fd.changeOwner(name, uid: uid ?? UInt32.max, gid: gid ?? UInt32.max)
      }
      if let mode = try number(e, "mode", radix: 8), type != .symlink {
        try dir.fd.changeMode(name, permissions: UInt32(mode))
      } else if type == .character && e.kind == .whiteout {
        try dir.fd.changeMode(name, permissions: 0)
      }
      var mtime = Fixture.defaultMtime
      if let v = attribute(e, "mtime"), let v {
        let parts = String(decoding: v, as: UTF8.self).split(separator: ".")
        guard let s = Int64(parts[0]) else { throw .invalidArgument }
        var ns: Int64 = 0
        if parts.count > 1 {
          let digits = String(parts[1].prefix(9))
          ns = (Int64(digits) ?? 0) * Int64(pow10(9 - digits.count))
        }
        mtime = s * 1_000_000_000 + ns
      }
      times.removeAll { $0.0 == e.path }
      times.append((e.path, mtime))
    }

    func pow10(_ n: Int) -> Int { n <= 0 ? 1 : 10 * pow10(n - 1) }

    /// Sets every mtime, deepest paths first, so creating children does not change them.
    func finishTimes() throws(OvlError) {
      for (path, mtime) in times.sorted(by: { $0.0.count > $1.0.count }) {
        if path.isEmpty {
          try step("utimensat", layerPath) { () throws(Errno) in try root.fd.setTimes([0x2E], mtime: mtime) }
          continue
        }
        try step("utimensat", where_(path, 0)) { () throws(Errno) in
          let dir = try parentDir(path)
          try dir.fd.setTimes(path[path.count - 1], mtime: mtime)
        }
      }
      if !times.contains(where: { $0.0.isEmpty }) {
        try step("utimensat", layerPath) { () throws(Errno) in try root.fd.setTimes([0x2E], mtime: Fixture.defaultMtime) }
      }
    }
  }

  /// Deterministic file contents (an LCG seeded by the path), so fixtures are reproducible.
  public static func pattern(count: Int, seed: [UInt8]) -> [UInt8] {
    var state: UInt64 = 0xcbf29ce484222325
    for b in seed { state = (state ^ UInt64(b)) &* 0x100000001b3 }
    var out = [UInt8](repeating: 0, count: count)
    for i in 0..<count {
      state = state &* 6364136223846793005 &+ 1442695040888963407
      out[i] = UInt8(truncatingIfNeeded: state >> 33)
    }
    return out
  }
}
