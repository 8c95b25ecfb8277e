import ArgumentParser
import OvlImage
import OvlStack
import OvlStore
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
    if let derived = self.stack.store.derived { try Self.refuseHostOwners(derived) }
    var options = ExportOptions()
    options.compression = LayerCompression(rawValue: compress) ?? .none
    options.resolve = resolve
    options.rootlessOwners = rootlessOwners
    if let text = getEnvironment("SOURCE_DATE_EPOCH") {
      guard let epoch = Int64(text), epoch >= 0 else { throw OvlError.usage("SOURCE_DATE_EPOCH must be whole seconds since 1970, got '\(text)'") }
      options.mtimeClamp = epoch
    }
    let layout = ociLayout.map { ImageLayout(path: $0) }
    // A store's container committed into an image layout: its image's layers first (each
    // exported as the upper over the layers below it), unless --base names an image there.
    var below: [(layer: LayerDescriptor, createdBy: String)] = []
    if let layout, base == nil, let derived = self.stack.store.derived, derived.kind == .container {
      below = try Self.imageLayers(derived, into: layout, options)
    }
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
      let createdBy = self.stack.store.derived.map { "ovltool export --\($0.kind.rawValue) \($0.names.first ?? $0.id)" } ?? "ovltool export"
      let manifest = try layout.addLayers(below + [(layer, createdBy)], tag: tag, base: base, created: options.mtimeClamp ?? 0)
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

  /// A plain user outside any user namespace sees a rootless store's files owned by host ids
  /// (the container's root is the user's own uid, its other ids the user's subordinate
  /// ones): a layer made from that view would record them, and an image of it would show
  /// the user's uid where the container shows root. Refused before anything is written;
  /// `podman unshare` runs ovltool with the ids the container has.
  static func refuseHostOwners(_ derived: StoreStack) throws {
    let caller = Credentials.current
    guard caller.uid != 0 && !caller.inUserNamespace else { return }
    printError(
      "ovltool: \(derived.title): its files are owned by host ids here (the container's root is uid \(caller.uid)), "
        + "and a layer exported from this view would record them; run it in the store's user namespace: "
        + "podman unshare ovltool export …")
    throw ExitCode(2)
  }

  /// The layers of a container's image, bottom first, each written into `layout` as a blob:
  /// the layer's diff exported as an upper over the layers below it (the base layer over
  /// its `empty` dir), as `export` of that stack would write it.
  static func imageLayers(_ container: StoreStack, into layout: ImageLayout, _ options: ExportOptions) throws -> [(layer: LayerDescriptor, createdBy: String)] {
    var result: [(layer: LayerDescriptor, createdBy: String)] = []
    let diffs = container.lowerDirs
    for k in diffs.indices.reversed() {
      let upper = diffs[k]
      let layerDir = String(upper.dropLast("/diff".count))
      var lowers = Array(diffs[(k + 1)...])
      if lowers.isEmpty {
        let empty = layerDir + "/empty"
        guard (try? FD.openDirectory(atHostPath: empty)) != nil else {
          throw OvlError.usage("\(layerDir): the base layer has no empty dir to export it over")
        }
        lowers = [empty]
      }
      var stackOptions = StackOptions()
      stackOptions.lowerDirs = lowers
      stackOptions.upperDir = upper
      stackOptions.workDir = layerDir + "/work"
      stackOptions.userxattr = container.mountOptions.contains("userxattr")
      if stackOptions.userxattr { stackOptions.redirectMode = .nofollow }
      let stack = try Stack(options: stackOptions)
      let out = try OutputFile(try layout.newBlobPath())
      let writer = try LayerWriter(output: out.fd.rawValue, compression: options.compression)
      let layer = try Exporter(stack: stack, options: options, writer: writer) { printError("ovltool: warning: \($0)") }.run()
      try out.commit(as: layout.blobName(layer.digest))
      result.append((layer, "ovltool export --layer \(container.layers[k + 1])"))
    }
    return result
  }
}
