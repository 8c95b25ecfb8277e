import ArgumentParser
import OvlStack
import OvlStore
import OvlSystem

struct StackCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "stack",
    abstract: "Print the overlay options of a container store's container, image or layer.",
    discussion: """
      Reads the store's metadata (containers/storage: overlay-layers/layers.json, \
      overlay-images/images.json, overlay-containers/containers.json and each layer's lower \
      file and l/ link; Docker: image/overlay2/layerdb and overlay2/) and prints the -o \
      string every other command would use: lowerdir from the lower file's chain as full \
      <store>/overlay/<id>/diff paths, top-most first, then upperdir and workdir for a \
      container. Hostile metadata (links or lower entries leaving the store, absolute \
      links, parent cycles, missing layers, malformed JSON, bad IDs) is refused (exit 2).
      """)

  @OptionGroup var stack: StackArguments
  @Flag(help: "Print one JSON object (kind, id, names, store, layers, lowerdir, upperdir, workdir, readonly, options).") var json = false

  func run() throws {
    let found: StoreStack?
    do throws(OvlError) { found = try stack.store.stack(forWriting: false) } catch { throw StackError(error: error) }
    guard let derived = found else {
      throw StackError(error: .usage("stack needs --store [PATH] or --docker-root PATH with --container, --image or --layer"))
    }
    let out = OutputBuffer()
    out.line(json ? derived.json.encoded() : Array(derived.optionString.utf8))
    out.flush()
  }
}
