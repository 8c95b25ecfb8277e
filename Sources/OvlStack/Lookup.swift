import OvlFormat
import OvlSystem

/// One object found in one layer: `name` in the real directory `parent`.
public final class RealObject {
  public let layer: Int
  public let parent: LayerDir
  public let name: [UInt8]
  public let status: FileStatus
  private var cachedXattrNames: [[UInt8]]?

  public init(layer: Int, parent: LayerDir, name: [UInt8], status: FileStatus) {
    self.layer = layer
    self.parent = parent
    self.name = name
    self.status = status
  }

  /// Every xattr name of the real inode (one listxattr, cached).
  public func xattrNames() throws(Errno) -> [[UInt8]] {
    if let cachedXattrNames { return cachedXattrNames }
    let names = try parent.fd.xattrNames(name)
    cachedXattrNames = names
    return names
  }

  /// The value of `attribute`, without a getxattr call when listxattr did not show it.
  public func xattr(_ attribute: [UInt8]) throws(Errno) -> [UInt8]? {
    guard try xattrNames().contains(attribute) else { return nil }
    return try parent.fd.xattr(name, attribute)
  }

  public func open(_ mode: OpenMode) throws(Errno) -> FD { try FD.open(name, in: parent.fd, mode) }

  /// Its path inside its layer.
  var layerPath: [UInt8] { parent.path + [UInt8(ascii: "/")] + name }
}

/// A directory of the merged view: its real directory in the upper layer (if any) and the
/// lower directories it merges, top-most first (the kernel's `ovl_entry` lower stack).
public final class MergedDir {
  public let path: MergedPath
  public let upper: LayerDir?
  let lowers: [LayerDir]
  /// Not merged: listed raw, whiteouts included (the kernel's !OVL_WHITEOUTS).
  let isReal: Bool
  /// A lower directory of it is marked `opaque=x`: its xattr whiteouts are filtered.
  let xwhiteouts: Bool
  /// Children the listing already looked up (as the kernel's readdir does for inode
  /// numbers), handed to the walk instead of a second lookup.
  var looked: [[UInt8]: MergedEntry] = [:]

  init(path: MergedPath, upper: LayerDir?, lowers: [LayerDir], isReal: Bool, xwhiteouts: Bool) {
    self.path = path
    self.upper = upper
    self.lowers = lowers
    self.isReal = isReal
    self.xwhiteouts = xwhiteouts
  }
}

/// An entry of the merged view as the kernel's lookup builds it.
public struct MergedEntry {
  public let path: MergedPath
  public let upper: RealObject?
  /// The lower objects (for a directory: the directories it merges; for a file: the
  /// top-most lower object and, for metacopy chains, the one holding the data).
  public let lowers: [RealObject]
  /// The upper holds metadata only.
  public let upperIsMetacopy: Bool
  /// Data to be looked up in the data-only layers by this absolute path.
  public let dataRedirect: [[UInt8]]?
  /// The top-most lower object was reached through a redirect of this entry (in a layer
  /// above it), not by its own path.
  let lowerRedirected: Bool
  let xwhiteouts: Bool

  /// The inode whose attributes and xattrs the view shows.
  public var shown: RealObject { upper ?? lowers[0] }
  public var status: FileStatus { shown.status }
  public var layer: Int { shown.layer }
  public var isDirectory: Bool { status.type == .directory }
}

/// How a name is being looked up in a layer (the kernel's `ovl_lookup_data`).
struct LookupState {
  enum Name { case relative([UInt8]), absolute([[UInt8]]) }
  var name: Name
  var isDir = false
  var opaque = false
  var stop = false
  var last = false
  var redirect: [UInt8]?
  var upperRedirect: [UInt8]?
  var metacopy = false
  var absoluteRedirect = false
  var xwhiteouts = false
}

extension Stack {
  /// The merged root directory.
  public func root() throws(OvlError) -> MergedDir {
    // The root is always merged; xattr whiteouts are honoured in lower roots marked `x`,
    // except in the lowest layer.
    var xw = false
    for root in lowerRoots.dropLast() {
      let opaque = try step("getxattr", layerPaths[root.layer]) { () throws(Errno) in
        try root.fd.xattr([0x2E], namespace.name(.opaque))
      }
      if Opaque(value: opaque) == .xwhiteouts {
        xw = true
        layersWithXwhiteouts.insert(root.layer)
      }
    }
    return MergedDir(path: .root, upper: upperRoot, lowers: lowerRoots, isReal: false, xwhiteouts: xw)
  }

  func describe(_ layer: Int, _ dir: MergedPath) -> String { describe(layer, dir.bytes) }

  func describe(_ layer: Int, _ dir: [UInt8]) -> String {
    let base = layerPaths[layer]
    let relative = dir.first == UInt8(ascii: "/") ? dir.dropFirst() : dir[...]
    return relative.isEmpty ? base : base + "/" + String(decoding: relative, as: UTF8.self)
  }

  /// Looks `name` up in the merged directory `parent` exactly as `ovl_lookup` does. Returns
  /// nil for a negative entry (absent or whited out).
  public func lookup(_ name: [UInt8], in parent: MergedDir) throws(OvlError) -> MergedEntry? {
    if let entry = parent.looked.removeValue(forKey: name) { return entry }
    return try lookupUncached(name, in: parent, path: parent.path.appending(name).bytes)
  }

  func fail(_ path: [UInt8], _ reason: String, _ errno: Errno) -> OvlError {
    .format(path: String(decoding: path, as: UTF8.self), reason: reason, errno: errno)
  }

  func fail(_ path: MergedPath, _ reason: String, _ errno: Errno) -> OvlError {
    .format(path: path.shown, reason: reason, errno: errno)
  }

  private func lookupUncached(_ name: [UInt8], in parent: MergedDir, path: [UInt8]) throws(OvlError) -> MergedEntry? {
    guard name.count <= 255 else { throw fail(path, "a name is longer than 255 bytes", .fileNameTooLong) }
    var d = LookupState(name: .relative(name))
    d.last = checksRedirects ? false : parent.lowers.isEmpty
    var upper: RealObject?
    var upperIsMetacopy = false
    var poe = parent.lowers
    var poeIsRoot = parent.path.isRoot

    if let upperDir = parent.upper {
      upper = try lookupLayer(upperDir, &d, path: path)
      if upper != nil && !d.isDir && d.metacopy { upperIsMetacopy = true }
      if let redirect = d.redirect {
        d.upperRedirect = redirect
        if redirect.first == UInt8(ascii: "/") { poe = lowerRoots; poeIsRoot = true }
      }
    }

    var stack: [RealObject] = []
    var lowerRedirected = false
    var i = 0
    while !d.stop && i < poe.count {
      let lower = poe[i]
      try checkFollow(d, path)
      if !checksRedirects {
        d.last = i == poe.count - 1
      } else if d.isDir || !hasDataLayers {
        d.last = lower.layer == lowerRoots.count
      }
      let redirectedAbove = d.redirect != nil
      let found = try lookupLayer(lower, &d, path: path)
      i += 1
      guard let found else { continue }
      if stack.isEmpty { lowerRedirected = redirectedAbove }
      if !(d.metacopy && !stack.isEmpty) {
        stack.append(found)
      }
      if d.stop { break }
      if let redirect = d.redirect, redirect.first == UInt8(ascii: "/"), !poeIsRoot {
        poe = lowerRoots
        poeIsRoot = true
        i = lower.layer  // continue with the next layer of the root's stack
      }
    }

    var dataRedirect: [[UInt8]]?
    if d.metacopy && !stack.isEmpty && hasDataLayers && d.absoluteRedirect {
      d.metacopy = false
      if case .absolute(let components) = d.name { dataRedirect = components }
    } else {
      try checkFollow(d, path)
    }
    if d.metacopy || (upperIsMetacopy && stack.isEmpty) {
      throw fail(path, "metacopy with no lower data found", .ioError)
    }
    // A lower hard link whose other alias was copied up: the index entry is its upper.
    if upper == nil, let origin = stack.first, let index = try lookupIndex(for: origin, isDirectory: d.isDir, path: path) {
      upper = index
      if let redirect = try step("getxattr", describe(0, index.layerPath)) { () throws(Errno) in try index.xattr(namespace.name(.redirect)) } {
        d.upperRedirect = redirect
      }
      d.metacopy = try isMetacopy(index, path: path)
      upperIsMetacopy = d.metacopy
      try checkFollow(d, path)
    }
    if upper == nil && stack.isEmpty { return nil }
    return MergedEntry(
      path: MergedPath(canonical: path), upper: upper, lowers: stack, upperIsMetacopy: upperIsMetacopy,
      dataRedirect: dataRedirect, lowerRedirected: lowerRedirected, xwhiteouts: d.xwhiteouts)
  }

  /// `ovl_check_follow_redirect`: following metacopy needs metacopy=on; following a
  /// redirect needs redirect_dir to follow.
  private func checkFollow(_ d: LookupState, _ path: [UInt8]) throws(OvlError) {
    if d.metacopy && !options.metacopy {
      throw fail(path, "refusing to follow metacopy origin (metacopy=off)", .notPermitted)
    }
    if (d.redirect != nil || d.upperRedirect != nil) && !options.redirectMode.follows {
      throw fail(path, "refusing to follow redirect (redirect_dir=nofollow)", .notPermitted)
    }
  }

  /// `ovl_lookup_layer`: a relative name in `base`, or an absolute path walked from the
  /// layer's root component by component (each component may redirect again).
  private func lookupLayer(_ base: LayerDir, _ d: inout LookupState, path: [UInt8]) throws(OvlError) -> RealObject? {
    guard case .absolute(let initial) = d.name else {
      guard case .relative(let name) = d.name else { return nil }
      return try lookupSingle(base, name, last: true, position: 0, &d, path: path)
    }
    var dir = base.layer == 0 ? base : (lowerRootDir(base.layer) ?? base)
    var remaining = initial.count
    while true {
      guard case .absolute(let components) = d.name else { return nil }
      let position = components.count - remaining
      guard position >= 0, position < components.count else { throw fail(path, "redirect walk out of range", .ioError) }
      let found = try lookupSingle(dir, components[position], last: remaining == 1, position: position, &d, path: path)
      guard let found else { return nil }
      if remaining == 1 { return found }
      guard found.status.type == .directory else { return nil }
      let fd = try step("open", describe(dir.layer, found.layerPath)) { () throws(Errno) in try found.open(.directory) }
      dir = LayerDir(layer: dir.layer, fd: fd, path: found.layerPath)
      remaining -= 1
    }
  }

  /// `ovl_lookup_single`: one component in one layer.
  private func lookupSingle(
    _ base: LayerDir, _ name: [UInt8], last: Bool, position: Int, _ d: inout LookupState, path: [UInt8]
  ) throws(OvlError) -> RealObject? {
    // The kernel's lookup_one refuses dot names (a redirect of "." or "..").
    if name == [0x2E] || name == [0x2E, 0x2E] { throw fail(path, "a redirect names '\(name.string)'", .permissionDenied) }
    if let listed = base.listed, !listed.contains(name) { return nil }
    let shown = describe(base.layer, base.path.isEmpty ? name : base.path + [UInt8(ascii: "/")] + name)
    guard let status = try step("statx", shown, { () throws(Errno) in try base.fd.statIfPresent(name) }) else { return nil }
    let object = RealObject(layer: base.layer, parent: base, name: name, status: status)
    if try step("listxattr", shown, { () throws(Errno) in try isWhiteout(object) }) {
      d.stop = true
      d.opaque = true
      return nil
    }
    if last && d.metacopy && status.type != .regular {
      d.stop = true
      return nil
    }
    if status.type != .directory {
      if d.isDir || !last {
        d.stop = true
        return nil
      }
      d.metacopy = try isMetacopy(object, path: path)
      d.stop = !d.metacopy
      if !d.metacopy || d.last { return object }
    } else {
      if traps.contains(status.id) {
        throw fail(path, "overlapping layers: \(describe(base.layer, name)) is a layer root or work dir", .tooManySymbolicLinkLevels)
      }
      if last { d.isDir = true }
      if d.last { return object }
      let opaque = Opaque(value: try step("getxattr", shown) { () throws(Errno) in try object.xattr(namespace.name(.opaque)) })
      if last && base.layer != 0 && opaque == .xwhiteouts {
        d.xwhiteouts = true
        layersWithXwhiteouts.insert(base.layer)
      } else if opaque == .opaque {
        d.stop = true
        if last { d.opaque = true }
        return object
      }
    }
    try checkRedirect(object, &d, position: position, path: path)
    return object
  }

  /// `ovl_check_redirect`: an absolute redirect replaces the path so far and restarts the
  /// lookup from the layer roots; a relative one replaces the current component.
  private func checkRedirect(_ object: RealObject, _ d: inout LookupState, position: Int, path: [UInt8]) throws(OvlError) {
    d.absoluteRedirect = false
    let attribute = try step("getxattr", describe(object.layer, object.layerPath)) { () throws(Errno) in try object.xattr(namespace.name(.redirect)) }
    guard let value = attribute else { return }
    let redirect: Redirect
    do {
      redirect = try Redirect(value: value)
    } catch {
      throw fail(path, "invalid redirect (\(String(decoding: value, as: UTF8.self))) on \(describe(object.layer, object.name))", .invalidArgument)
    }
    let rest: [[UInt8]]
    switch d.name {
    case .relative: rest = []
    case .absolute(let components): rest = Array(components[(position + 1)...])
    }
    switch redirect {
    case .absolute(let components):
      d.absoluteRedirect = true
      d.stop = false
      d.name = .absolute(components + rest)
    case .relative(let name):
      if case .absolute(let components) = d.name {
        d.name = .absolute(Array(components[..<position]) + [name] + rest)
      } else {
        d.name = .relative(name)
      }
    }
    d.redirect = d.name.value
  }

  /// A char 0/0, or a zero-size regular file with `overlay.whiteout`.
  func isWhiteout(_ object: RealObject) throws(Errno) -> Bool {
    let s = object.status
    if s.isWhiteoutDevice { return true }
    guard s.type == .regular, s.size == 0 else { return false }
    return try object.xattrNames().contains(namespace.name(.whiteout))
  }

  /// `ovl_check_metacopy_xattr` as lookup uses it: only the size is checked.
  func isMetacopy(_ object: RealObject, path: [UInt8]) throws(OvlError) -> Bool {
    guard object.status.type == .regular else { return false }
    let attribute = try step("getxattr", describe(object.layer, object.layerPath)) { () throws(Errno) in try metacopyValue(object) }
    guard let value = attribute else { return false }
    if value.isEmpty { return true }
    guard value.count >= 4, value.count <= 4 + 64 else {
      throw fail(path, "corrupt metacopy xattr on \(describe(object.layer, object.name))", .ioError)
    }
    return true
  }

  private func metacopyValue(_ object: RealObject) throws(Errno) -> [UInt8]? {
    do {
      return try object.xattr(namespace.name(.metacopy))
    } catch .permissionDenied where options.userxattr {
      // user.* can be unreadable without read permission; the kernel then says "no metacopy".
      return nil
    }
  }

  /// Opens a merged directory for listing and lookups of its children.
  public func open(_ entry: MergedEntry) throws(OvlError) -> MergedDir {
    guard entry.isDirectory else {
      throw fail(entry.path, "not a directory", .notDirectory)
    }
    var upper: LayerDir?
    if let object = entry.upper { upper = try openLayer(object, entry.path) }
    var lowers: [LayerDir] = []
    for object in entry.lowers { lowers.append(try openLayer(object, entry.path)) }
    let hasOrigin = try step("listxattr", describe(entry.layer, entry.path)) { () throws(Errno) in
      try entry.shown.xattrNames().contains(namespace.name(.origin))
    }
    let merged = (upper != nil && !lowers.isEmpty) || lowers.count > 1 || hasOrigin
    return MergedDir(path: entry.path, upper: upper, lowers: lowers, isReal: !merged, xwhiteouts: entry.xwhiteouts)
  }

  private func openLayer(_ object: RealObject, _ path: MergedPath) throws(OvlError) -> LayerDir {
    let fd = try step("open", describe(object.layer, path)) { () throws(Errno) in try object.open(.directory) }
    return LayerDir(layer: object.layer, fd: fd, path: object.layerPath)
  }

  /// Resolves a merged-view path, every component by the kernel's lookup.
  public func resolve(_ path: MergedPath) throws(OvlError) -> (parent: MergedDir?, entry: MergedEntry?, root: MergedDir) {
    let components = path.components
    let root = try self.root()
    var dir = root
    var parent: MergedDir?
    var entry: MergedEntry?
    for (i, c) in components.enumerated() {
      guard let found = try lookup(c, in: dir) else {
        throw fail(path.prefix(i + 1), "no such file or directory in the merged view", .noSuchFileOrDirectory)
      }
      parent = dir
      entry = found
      if i < components.count - 1 {
        guard found.isDirectory else {
          throw fail(found.path, "not a directory", .notDirectory)
        }
        dir = try open(found)
      }
    }
    return (parent, entry, root)
  }

  /// Resolves a path as a user writes it (`/a/b` or `a/b`; `.` and `..` are handled by
  /// name).
  public func resolve(text path: [UInt8]) throws(OvlError) -> (parent: MergedDir?, entry: MergedEntry?, root: MergedDir) {
    let parsed: MergedPath
    do {
      parsed = try MergedPath(parsing: path, .lenient)
    } catch {
      throw fail(path, "a name is longer than 255 bytes", .fileNameTooLong)  // the only problem of a lenient parse
    }
    return try resolve(parsed)
  }
}

extension LookupState.Name {
  var value: [UInt8] {
    switch self {
    case .relative(let name): return name
    case .absolute(let components): return Redirect.absolute(components).value
    }
  }
}
