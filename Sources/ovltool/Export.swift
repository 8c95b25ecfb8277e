import ArgumentParser
import OvlImage
import OvlStack
import OvlSystem

struct Export: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Write the upper layer of the stack as an OCI image layer (tar).",
    discussion: """
      Whiteouts become .wh.NAME entries, opaque directories a .wh..wh..opq marker (only where \
      the layers below have something to hide), hardlinks are kept, xattrs are PAX records \
      without the overlay's private names; sockets are skipped with a warning. Redirected \
      directories and metacopy files are refused (exit 2) unless --resolve. The output is \
      reproducible: entries sorted by name bytes, empty uname/gname, no atime/ctime, mtimes in \
      whole seconds clamped to SOURCE_DATE_EPOCH, fixed compressor settings. Prints the \
      DiffID (digest of the tar) and the blob digest.
      """)

  @OptionGroup var stack: StackArguments
  @Option(help: ArgumentHelp("Where the layer goes ('-' for standard output).", valueName: "FILE")) var output: String?
  @Option(help: "Compression: none, gzip or zstd.") var compress: String = "none"
  @Flag(help: "Export what the merged view shows for redirected directories and metacopy files.") var resolve = false
  @Option(help: ArgumentHelp("Also add the layer to this OCI image layout.", valueName: "DIR")) var ociLayout: String?
  @Option(help: "The tag of the new image in --oci-layout.") var tag: String?
  @Option(help: "The tag of the image the layer goes on top of (default: a new image).") var base: String?
  @Flag(help: "Owners, modes and device types recorded in user.containers.override_stat (an unprivileged build's layers, as containers/storage keeps them) written as the entries' own, that xattr left out.") var rootlessOwners = false
  @Option(help: ArgumentHelp("Write the OCI descriptor (mediaType, digest, size, diffID) as JSON.", valueName: "FILE")) var descriptor: String?

  func validate() throws {
    guard LayerCompression(rawValue: compress) != nil else { throw ValidationError("--compress must be none, gzip or zstd") }
    if ociLayout != nil && tag == nil { throw ValidationError("--oci-layout needs --tag") }
    if ociLayout == nil && (tag != nil || base != nil) { throw ValidationError("--tag and --base need --oci-layout") }
    if ociLayout == nil && output == nil { throw ValidationError("give --output FILE|- or --oci-layout DIR") }
  }

  func run() throws {
    let stack = try self.stack.open()
    var options = ExportOptions()
    options.compression = LayerCompression(rawValue: compress) ?? .none
    options.resolve = resolve
    options.rootlessOwners = rootlessOwners
    if let text = getEnvironment("SOURCE_DATE_EPOCH") {
      guard let epoch = Int64(text), epoch >= 0 else { throw OvlError.usage("SOURCE_DATE_EPOCH must be whole seconds since 1970, got '\(text)'") }
      options.mtimeClamp = epoch
    }
    let layout = ociLayout.map { ImageLayout(path: $0) }
    // An output file is replaced only when the layer is complete (written beside it, then
    // renamed); a device, FIFO or standard output is written in place and never removed.
    let out = try OutputFile(try layout?.newBlobPath() ?? output ?? "-")
    // What cannot be taken back (standard output, a FIFO): refused before the first byte.
    options.checkFirst = !out.isRevocable
    let writer = try LayerWriter(output: out.fd.rawValue, compression: options.compression)
    let exporter = try Exporter(stack: stack, options: options, writer: writer) { printError("ovltool: warning: \($0)") }
    let layer: LayerDescriptor
    do {
      layer = try exporter.run()
    } catch {
      // Not representable without --resolve (or a .wh. name): the input, not an I/O error.
      if case .refused = error {
        printError("ovltool: \(error)")
        throw ExitCode(2)
      }
      throw error
    }
    // In an image layout the blob goes straight to its digest.
    try out.commit(as: layout?.blobName(layer.digest))
    let path = out.path
    if let layout, let tag {
      if let output, output != "-" { printError("ovltool: warning: --output ignored with --oci-layout") }
      let manifest = try layout.addLayer(layer, tag: tag, base: base, created: options.mtimeClamp ?? 0)
      printError("manifest \(manifest)")
    }
    if let descriptor {
      let file = try OutputFile(descriptor)
      try step("write", descriptor) { () throws(Errno) in try file.fd.write(Array((layer.json + "\n").utf8)) }
      try file.commit()
    }
    // The digests go to stderr when the layer itself goes to stdout.
    let summary = "diffid \(layer.diffID)\ndigest \(layer.digest)\nsize \(layer.size)"
    if path == "-" { printError(summary) } else { print(summary) }
  }
}
