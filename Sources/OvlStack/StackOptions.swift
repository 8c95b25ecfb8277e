import OvlFormat
import OvlSystem

/// `redirect_dir=`: whether renamed directories get redirects, and whether lookup follows
/// them. `off` follows them too on kernels with `redirect_always_follow` (the default).
public enum RedirectMode: String, Sendable {
  case on, follow, nofollow, off
  /// Lookup follows redirects.
  public var follows: Bool { self != .nofollow }
}

public enum UUIDMode: String, Sendable { case on, off, null, auto }
public enum XinoMode: String, Sendable { case on, off, auto }
public enum VerityMode: String, Sendable { case on, off, require }

/// One stack as mount(8) and fsck.overlay describe it, after the kernel's option rules.
public struct StackOptions: Sendable, Equatable {
  /// Regular lower layers, top-most first.
  public var lowerDirs: [String] = []
  /// Data-only lower layers (after `::`), in order.
  public var dataDirs: [String] = []
  public var upperDir: String?
  public var workDir: String?
  public var index = false
  public var redirectMode: RedirectMode = .follow
  public var metacopy = false
  public var nfsExport = false
  public var userxattr = false
  public var uuid: UUIDMode = .auto
  public var xino: XinoMode = .off
  public var verity: VerityMode = .off

  public var xattrNamespace: XattrNamespace { userxattr ? .user : .trusted }
  public var isReadOnly: Bool { upperDir == nil }

  public init() {}
}

/// Kernel module defaults (`/sys/module/overlay/parameters`), used for options the stack
/// description leaves out, as a mount would.
public struct KernelDefaults: Sendable {
  public var redirectDir = false
  public var redirectAlwaysFollow = true
  public var index = false
  public var metacopy = false
  public var nfsExport = false
  public var xinoAuto = false
  public var maximumLowerLayers = 500

  public init() {}
}

/// Parses `-o` option strings and long options into `StackOptions`, applying the kernel's
/// rules (params.c): implied options, conflicts refused with the kernel's message.
public struct StackOptionParser {
  public private(set) var warnings: [String] = []
  var lowerdir: String?
  var upperdir: String?
  var workdir: String?
  var explicit: [String: String] = [:]
  var userxattr = false
  /// A read-only stack of one lower layer (an image of one layer in a store without an
  /// `empty` dir): the kernel mounts none, but its view is the layer itself.
  public var allowsOneLower = false

  public init() {}

  /// Adds one `-o` string: comma-separated, `\` escapes the next character.
  public mutating func add(options text: String) throws(OvlError) {
    for item in Self.split(Array(text.utf8), on: UInt8(ascii: ",")) where !item.isEmpty {
      let string = String(decoding: item, as: UTF8.self)
      if let eq = string.firstIndex(of: "=") {
        try set(String(string[..<eq]), String(string[string.index(after: eq)...]), escaped: true)
      } else {
        try set(string, nil, escaped: true)
      }
    }
  }

  /// Adds one option given as a long flag (`--lowerdir=...`); the value is not split on commas.
  public mutating func add(key: String, value: String) throws(OvlError) {
    try set(key, value, escaped: false)
  }

  mutating func set(_ key: String, _ value: String?, escaped: Bool) throws(OvlError) {
    func required() throws(OvlError) -> String {
      guard let value else { throw .usage("option '\(key)' needs a value") }
      return value
    }
    switch key {
    case "lowerdir": lowerdir = try required()
    case "upperdir": upperdir = escaped ? Self.unescape(try required()) : try required()
    case "workdir": workdir = escaped ? Self.unescape(try required()) : try required()
    case "userxattr":
      guard value == nil else { throw .usage("option 'userxattr' takes no value") }
      userxattr = true
    case "index", "metacopy", "nfs_export":
      let v = try required()
      guard v == "on" || v == "off" else { throw .usage("bad value '\(v)' for option '\(key)' (on or off)") }
      explicit[key] = v
    case "redirect_dir":
      let v = try required()
      guard RedirectMode(rawValue: v) != nil else { throw .usage("bad value '\(v)' for option 'redirect_dir' (on, follow, nofollow or off)") }
      explicit[key] = v
    case "uuid":
      let v = try required()
      guard UUIDMode(rawValue: v) != nil else { throw .usage("bad value '\(v)' for option 'uuid' (on, off, null or auto)") }
      explicit[key] = v
    case "xino":
      let v = try required()
      guard XinoMode(rawValue: v) != nil else { throw .usage("bad value '\(v)' for option 'xino' (on, off or auto)") }
      explicit[key] = v
    case "verity":
      let v = try required()
      guard VerityMode(rawValue: v) != nil else { throw .usage("bad value '\(v)' for option 'verity' (on, off or require)") }
      explicit[key] = v
    default:
      warnings.append("ignoring unknown option '\(key)'")
    }
  }

  /// The options after the kernel's rules (`ovl_fs_params_verify`).
  /// `credentials`: who uses the stack; without file handles it can decode (no
  /// CAP_DAC_READ_SEARCH in the initial user namespace: a plain user, any user namespace)
  /// index, nfs_export and xino fall back to off, as the kernel's mount does
  /// (`ovl_can_decode_fh`).
  public mutating func resolve(defaults: KernelDefaults = KernelDefaults(), credentials: Credentials = .current) throws(OvlError) -> StackOptions {
    var o = StackOptions()
    guard let lowerdir, !lowerdir.isEmpty else { throw .usage("missing 'lowerdir'") }
    (o.lowerDirs, o.dataDirs) = try Self.parseLowerdir(lowerdir)
    let layers = o.lowerDirs.count + o.dataDirs.count
    guard layers <= defaults.maximumLowerLayers else {
      throw .usage("too many lower directories, limit is \(defaults.maximumLowerLayers)")
    }
    o.upperDir = upperdir
    o.workDir = workdir
    if upperdir != nil && workdir == nil { throw .usage("missing 'workdir'") }
    if upperdir == nil && workdir != nil {
      warnings.append("option \"workdir=\(workdir ?? "")\" is useless in a non-upper mount, ignored")
      o.workDir = nil
    }
    if upperdir == nil && layers < 2 && !allowsOneLower {
      throw .usage("at least 2 lowerdir are needed while upperdir nonexistent")
    }

    o.userxattr = userxattr
    o.index = explicit["index"].map { $0 == "on" } ?? defaults.index
    o.metacopy = explicit["metacopy"].map { $0 == "on" } ?? defaults.metacopy
    o.nfsExport = explicit["nfs_export"].map { $0 == "on" } ?? defaults.nfsExport
    o.uuid = explicit["uuid"].flatMap(UUIDMode.init) ?? .auto
    o.xino = explicit["xino"].flatMap(XinoMode.init) ?? (defaults.xinoAuto ? .auto : .off)
    o.verity = explicit["verity"].flatMap(VerityMode.init) ?? .off
    var redirect = explicit["redirect_dir"].flatMap(RedirectMode.init)
      ?? (defaults.redirectDir ? .on : defaults.redirectAlwaysFollow ? .follow : .nofollow)
    // redirect_dir=off follows redirects when redirect_always_follow is set.
    if redirect == .off { redirect = defaults.redirectAlwaysFollow ? .follow : .nofollow }
    let redirectExplicit = explicit["redirect_dir"] != nil
    var indexExplicit = explicit["index"] != nil
    let metacopyExplicit = explicit["metacopy"] != nil

    if o.upperDir == nil {
      // The kernel: "option index=on is useless in a non-upper mount, ignore" (and the
      // option no longer counts as given for the nfs_export rules).
      o.index = false
      indexExplicit = false
      if o.uuid == .on { o.uuid = .null }
      if redirect == .follow { redirect = .on }
    }
    if o.metacopy && redirect != .on {
      if metacopyExplicit && redirectExplicit {
        throw .usage("conflicting options: metacopy=on,redirect_dir=\(redirect.rawValue)")
      } else if redirectExplicit {
        o.metacopy = false
      } else {
        redirect = .on
      }
    }
    if o.nfsExport && !o.index {
      if o.upperDir == nil && redirect != .nofollow {
        o.nfsExport = false
      } else if explicit["nfs_export"] != nil && indexExplicit {
        throw .usage("conflicting options: nfs_export=on,index=off")
      } else if indexExplicit {
        o.nfsExport = false
      } else {
        o.index = true
      }
    }
    if o.nfsExport && o.metacopy {
      if explicit["nfs_export"] != nil && metacopyExplicit {
        throw .usage("conflicting options: nfs_export=on,metacopy=on")
      } else if metacopyExplicit {
        o.nfsExport = false
      } else {
        o.metacopy = false
      }
    }
    if o.userxattr {
      if redirectExplicit && redirect != .nofollow {
        throw .usage("conflicting options: userxattr,redirect_dir=\(redirect.rawValue)")
      }
      redirect = .nofollow
      if o.metacopy && metacopyExplicit { throw .usage("conflicting options: userxattr,metacopy=on") }
      o.metacopy = false
    }
    // nfs_export may have switched the index on again; without an upper there is none.
    if o.upperDir == nil { o.index = false }
    if !credentials.canDecodeFileHandles {
      let why = "this user cannot decode file handles (no CAP_DAC_READ_SEARCH in the initial user namespace)"
      if o.index { warnings.append("\(why): falling back to index=off, as the kernel does") }
      if o.nfsExport { warnings.append("\(why): falling back to nfs_export=off, as the kernel does") }
      if o.xino == .on { warnings.append("\(why): falling back to xino=off, as the kernel does") }
      o.index = false
      o.nfsExport = false
      o.xino = .off
    }
    o.redirectMode = redirect
    return o
  }

  /// Splits on unescaped `separator`, keeping escapes (they are removed per value later).
  static func split(_ bytes: [UInt8], on separator: UInt8) -> [[UInt8]] {
    var parts: [[UInt8]] = [[]]
    var escaped = false
    for b in bytes {
      if escaped {
        parts[parts.count - 1].append(b)
        escaped = false
      } else if b == UInt8(ascii: "\\") {
        parts[parts.count - 1].append(b)
        escaped = true
      } else if b == separator {
        parts.append([])
      } else {
        parts[parts.count - 1].append(b)
      }
    }
    return parts
  }

  static func unescape(_ text: String) -> String {
    var out: [UInt8] = []
    var escaped = false
    for b in text.utf8 {
      if !escaped && b == UInt8(ascii: "\\") { escaped = true; continue }
      escaped = false
      out.append(b)
    }
    return String(decoding: out, as: UTF8.self)
  }

  /// `lowerdir=L1:L2::D1::D2`: `:` separates lower layers (top-most first), `::` starts
  /// the data-only layers; `\` escapes `:`, `,` and `\`.
  static func parseLowerdir(_ text: String) throws(OvlError) -> (lower: [String], data: [String]) {
    let parts = split(Array(text.utf8), on: UInt8(ascii: ":"))
    var lower: [String] = []
    var data: [String] = []
    var nextIsData = false
    var i = 0
    while i < parts.count {
      let part = parts[i]
      if part.isEmpty {
        if parts[i...].allSatisfy(\.isEmpty) {
          throw .usage("lowerdir '\(text)': unescaped trailing colons in lowerdir mount option")
        }
        if i == 0 { throw .usage("lowerdir '\(text)': cannot append lower layer (leading ':')") }
        if i == parts.count - 1 { throw .usage("lowerdir '\(text)': unescaped trailing colons in lowerdir mount option") }
        if parts[i + 1].isEmpty {
          throw .usage("lowerdir '\(text)': only single ':' or double '::' sequences of unescaped colons are allowed")
        }
        nextIsData = true
        i += 1
        continue
      }
      let path = unescape(String(decoding: part, as: UTF8.self))
      if nextIsData {
        data.append(path)
      } else if !data.isEmpty {
        throw .usage("lowerdir '\(text)': regular lower layers cannot follow data lower layers")
      } else {
        lower.append(path)
      }
      nextIsData = false
      i += 1
    }
    if lower.isEmpty { throw .usage("lowerdir '\(text)': no regular lower layer") }
    return (lower, data)
  }
}
