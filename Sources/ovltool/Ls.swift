import ArgumentParser
import OvlStack
import OvlSystem

struct Ls: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "List a directory of the merged view.")

  @OptionGroup var stack: StackArguments
  @Flag(name: .short, help: "Long format: mode, owner, size, mtime (UTC), layer, name.") var l = false
  @Flag(name: .short, help: "Include names that start with '.'.") var a = false
  @Flag(help: "One JSON object per entry (the tree --json format).") var json = false
  @Argument(help: "A path in the merged view.") var path: String = "/"

  func run() throws {
    let stack = try self.stack.open()
    let resolved = try stack.resolve(text: pathBytes(path))
    guard let entry = resolved.entry ?? stack.rootEntry(resolved.root) else { return }
    let out = OutputBuffer()
    guard entry.isDirectory else {
      // ls of a file lists the file itself.
      let record = try stack.record(entry, hash: false)
      out.line(json ? JSONLine.encode(record) : l ? Listing.longLine(record, name: pathBytes(path)) : pathBytes(path))
      return
    }
    let dir = resolved.entry == nil ? resolved.root : try stack.open(entry)
    var failed = false
    for name in try stack.list(dir) where a || name.first != UInt8(ascii: ".") {
      do throws(OvlError) {
        try show(name, in: dir, stack, out)
      } catch {
        failed = true
        if json { out.line(JSONLine.encodeError(path: dir.path.appending(name).bytes, error)) }
        out.flush()
        report(error)
      }
    }
    out.flush()
    if failed { throw ExitCode(1) }
  }

  func show(_ name: [UInt8], in dir: MergedDir, _ stack: Stack, _ out: OutputBuffer) throws(OvlError) {
    guard let child = try stack.lookup(name, in: dir) else {
      throw .format(path: dir.path.appending(name).shown,
        reason: "a whiteout listed by an unmerged directory", errno: .noSuchFileOrDirectory)
    }
    if json || l {
      let record = try stack.record(child, hash: false)
      out.line(json ? JSONLine.encode(record) : Listing.longLine(record, name: name))
    } else {
      out.line(name)
    }
  }
}

enum Listing {
  static func modeString(_ s: FileStatus) -> String {
    let typeChar: Character = switch s.type {
    case .regular: "-"
    case .directory: "d"
    case .symlink: "l"
    case .character: "c"
    case .block: "b"
    case .fifo: "p"
    case .socket: "s"
    }
    var chars: [Character] = [typeChar]
    let p = s.permissions
    let rwx: [(UInt32, Character)] = [(0o400, "r"), (0o200, "w"), (0o100, "x"), (0o40, "r"), (0o20, "w"), (0o10, "x"), (0o4, "r"), (0o2, "w"), (0o1, "x")]
    for (bit, c) in rwx { chars.append(p & bit != 0 ? c : "-") }
    if p & 0o4000 != 0 { chars[3] = p & 0o100 != 0 ? "s" : "S" }
    if p & 0o2000 != 0 { chars[6] = p & 0o10 != 0 ? "s" : "S" }
    if p & 0o1000 != 0 { chars[9] = p & 0o1 != 0 ? "t" : "T" }
    return String(chars)
  }

  static func longLine(_ r: ViewRecord, name: [UInt8]) -> [UInt8] {
    let s = r.status
    let size = s.type == .character || s.type == .block ? "\(s.rdevMajor),\(s.rdevMinor)" : String(s.size)
    var line = Array("\(modeString(s)) \(s.uid) \(s.gid) \(size) \(formatUTC(seconds: s.mtimeSeconds)) L\(r.layer) ".utf8) + name
    if let target = r.target { line += Array(" -> ".utf8) + target }
    return line
  }

  static func treeLine(_ r: ViewRecord) -> [UInt8] {
    longLine(r, name: r.path.isEmpty ? [0x2F] : r.path)
  }
}
