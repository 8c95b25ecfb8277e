import ArgumentParser
import OvlFormat
import OvlStack
import OvlSystem

struct Stat: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show an entry of the merged view and the layers it comes from.")

  @OptionGroup var stack: StackArguments
  @Flag(help: "One JSON object (the tree --json format).") var json = false
  @Argument(help: "Paths in the merged view.") var paths: [String]

  func run() throws {
    let stack = try self.stack.open()
    let out = OutputBuffer()
    var failed = false
    for path in paths {
      do throws(OvlError) {
        try show(path, stack, out)
      } catch {
        failed = true
        out.flush()
        report(error)
      }
    }
    out.flush()
    if failed { throw ExitCode(1) }
  }

  func show(_ path: String, _ stack: Stack, _ out: OutputBuffer) throws(OvlError) {
    let resolved = try stack.resolve(text: pathBytes(path))
    guard let entry = resolved.entry ?? stack.rootEntry(resolved.root) else { return }
    let record = try stack.record(entry, hash: false, inodes: true)
    if json {
      out.line(JSONLine.encode(record))
      return
    }
    let s = record.status
    out.line(Array("  Path: ".utf8) + (record.path.isEmpty ? [0x2F] : record.path))
    out.line("  Type: \(s.type.rawValue)  Mode: \(Listing.modeString(s)) (0\(String(s.permissions, radix: 8)))  Uid: \(s.uid)  Gid: \(s.gid)")
    if case let number?? = record.inode { out.line("  Inode: \(number) (as a mount shows it)") }
    if s.type == .regular || s.type == .symlink { out.line("  Size: \(s.size)") }
    if s.type == .character || s.type == .block { out.line("  Device: \(s.rdevMajor),\(s.rdevMinor)") }
    if let target = record.target { out.line(Array("  Target: ".utf8) + target) }
    out.line("  Mtime: \(formatUTC(seconds: s.mtimeSeconds)) UTC (\(s.mtime) ns)")
    out.line("  Layer: \(record.layer) (\(stack.layerPaths[record.layer]))")
    if entry.upper != nil && !entry.lowers.isEmpty || entry.lowers.count > 1 {
      let layers = entry.lowers.map { "\($0.layer)" }.joined(separator: ", ")
      out.line("  \(entry.isDirectory ? "Merges" : "Lower"): layers \(layers)\(entry.upperIsMetacopy ? " (upper is metacopy)" : "")")
    }
    if let data = entry.dataRedirect {
      out.line("  Data: data-only layers, \(Redirect.absolute(data).description)")
    }
    for (name, value) in record.xattrs {
      out.line(Array("  Xattr: ".utf8) + name + Array("=0x\(Hex.encode(value))".utf8))
    }
  }
}
