/// The overlay mounts of a `/proc/PID/mountinfo` table and the layer paths their options
/// name, exactly as the kernel shows them: the strings the mounter gave (relative ones stay
/// relative), not where they lead.
public struct OverlayMountEntry: Sendable, Equatable {
  public enum Role: String, Sendable { case upper = "upperdir", work = "workdir", lower = "lowerdir" }

  /// The mount point, in the namespace whose table this is.
  public let mountPoint: [UInt8]
  /// Every layer path of the options, upper and work first, lowers and data-only layers in
  /// order. A path is absolute, or relative to the mounter's working directory.
  public let layers: [(role: Role, path: [UInt8])]

  public static func == (a: Self, b: Self) -> Bool {
    a.mountPoint == b.mountPoint && a.layers.map(\.role) == b.layers.map(\.role) && a.layers.map(\.path) == b.layers.map(\.path)
  }

  /// Parses a whole mountinfo table and keeps the overlay mounts. Lines that do not parse
  /// are skipped: the table is the kernel's, and one odd line must not hide the others.
  ///
  /// A line is `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPER`;
  /// fields are octal-escaped (`\040` space, `\054` comma, `\134` backslash). The super
  /// options are split at raw commas (a comma inside a value is always escaped there).
  /// Within a value, `lowerdir=` keeps the mounter's own escapes (`\:` and `\,`): its layers
  /// are split at unescaped colons (`::` starts the data-only layers), and the escapes are
  /// then removed. `lowerdir+=` and `datadir+=` name one path each, literally.
  /// `upperdir=` and `workdir=` are unescaped as the kernel unescapes them.
  public static func parseTable(_ table: [UInt8]) -> [OverlayMountEntry] {
    var mounts: [OverlayMountEntry] = []
    for line in table.split(separator: 0x0A) {
      let fields = line.split(separator: 0x20).map(Array.init)
      guard let dash = fields.firstIndex(of: [UInt8(ascii: "-")]), dash > 4, dash + 3 < fields.count,
        fields[dash + 1] == Array("overlay".utf8)
      else { continue }
      var layers: [(role: Role, path: [UInt8])] = []
      for rawOption in fields[dash + 3].split(separator: UInt8(ascii: ","), omittingEmptySubsequences: true) {
        let option = unescapeOctal(Array(rawOption))
        guard let equals = option.firstIndex(of: UInt8(ascii: "=")) else { continue }
        let key = String(decoding: option[..<equals], as: UTF8.self)
        let value = Array(option[(equals + 1)...])
        switch key {
        case "upperdir": layers.append((.upper, removeEscapes(value)))
        case "workdir": layers.append((.work, removeEscapes(value)))
        case "lowerdir": layers += splitLowerdirs(value).map { (.lower, $0) }
        case "lowerdir+", "datadir+": layers.append((.lower, value))
        default: continue
        }
      }
      mounts.append(OverlayMountEntry(mountPoint: unescapeOctal(fields[4]), layers: layers.filter { !$0.path.isEmpty }))
    }
    return mounts
  }

  /// mountinfo's `\ooo` escapes.
  static func unescapeOctal(_ bytes: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count)
    var i = 0
    while i < bytes.count {
      if bytes[i] == UInt8(ascii: "\\"), i + 3 < bytes.count,
        let value = octal(bytes[(i + 1)...(i + 3)])
      {
        out.append(value)
        i += 4
      } else {
        out.append(bytes[i])
        i += 1
      }
    }
    return out
  }

  private static func octal(_ digits: ArraySlice<UInt8>) -> UInt8? {
    var value = 0
    for d in digits {
      guard d >= UInt8(ascii: "0"), d <= UInt8(ascii: "7") else { return nil }
      value = value * 8 + Int(d - UInt8(ascii: "0"))
    }
    return value <= 255 ? UInt8(value) : nil
  }

  /// The kernel's `ovl_unescape`: a backslash takes the next byte literally.
  static func removeEscapes(_ bytes: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    var escaped = false
    for b in bytes {
      if !escaped && b == UInt8(ascii: "\\") { escaped = true; continue }
      escaped = false
      out.append(b)
    }
    return out
  }

  /// Splits `lowerdir=` at unescaped colons; the empty part of `::` (the data-only
  /// separator) is dropped.
  static func splitLowerdirs(_ value: [UInt8]) -> [[UInt8]] {
    var parts: [[UInt8]] = [[]]
    var escaped = false
    for b in value {
      if escaped { parts[parts.count - 1].append(b); escaped = false; continue }
      if b == UInt8(ascii: "\\") { escaped = true; continue }
      if b == UInt8(ascii: ":") { parts.append([]); continue }
      parts[parts.count - 1].append(b)
    }
    return parts.filter { !$0.isEmpty }
  }
}
