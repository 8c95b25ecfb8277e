import ArgumentParser
import OvlStack
import OvlStore
import OvlSystem

/// A stack named by what a container store calls it. `--store` alone means the default
/// store (`OvlTool.main` rewrites it to `--default-store`: the argument parser has no
/// options with optional values).
struct StoreArguments: ParsableArguments {
  @Option(help: ArgumentHelp("A containers/storage store (podman, buildah, CRI-O: its graph root). Alone (followed by nothing or by an option) it is the default store, from storage.conf (CONTAINERS_STORAGE_CONF).", valueName: "PATH"))
  var store: String?

  @Flag(help: .hidden) var defaultStore = false

  @Option(help: ArgumentHelp("A Docker data root with the overlay2 driver (e.g. /var/lib/docker).", valueName: "PATH"))
  var dockerRoot: String?

  @Option(help: ArgumentHelp("The stack of this container of the store (name, ID or unique ID prefix): its layer is the upper.", valueName: "NAME|ID"))
  var container: String?

  @Option(help: ArgumentHelp("The read-only stack of this image of the store (name, ID or unique ID prefix).", valueName: "NAME|ID"))
  var image: String?

  @Option(help: ArgumentHelp("The read-only stack of this layer of the store and the layers below it.", valueName: "ID"))
  var layer: String?

  static let layerKeys = ["lowerdir", "upperdir", "workdir"]

  /// Whether a store is named at all.
  var namesStore: Bool { store != nil || defaultStore || dockerRoot != nil }

  var selection: StoreSelection? {
    if let container { return .container(container) }
    if let image { return .image(image) }
    if let layer { return .layer(layer) }
    return nil
  }

  func validate() throws {
    if [container, image, layer].compactMap({ $0 }).count > 1 { throw ValidationError("give only one of --container, --image and --layer") }
    if [store != nil || defaultStore, dockerRoot != nil].filter({ $0 }).count > 1 { throw ValidationError("give only one of --store and --docker-root") }
  }

  /// Opens the store (and takes its locks, held until the process exits): nil when no
  /// store is named.
  func openStore(forWriting: Bool) throws(OvlError) -> (any ContainerStore)? {
    guard namesStore else { return nil }
    if let opened = OpenedStore.current { return opened.store }
    let store: any ContainerStore
    if let dockerRoot {
      store = try DockerStore(path: dockerRoot)
    } else {
      // containers/storage mounts with index=off, and with userxattr where it runs rootless;
      // the default store adds its storage.conf's metacopy= and redirect_dir=.
      let rootless = !Credentials.current.canUseTrustedXattrs
      var options = rootless ? ["index=off", "userxattr"] : ["index=off"]
      var path: String
      if let given = self.store {
        path = given
      } else {
        let found = try DefaultStore.find()
        path = found.graphRoot
        options += found.overlayOptions
      }
      store = try ContainersStorage(path: path, mountOptions: options)
    }
    let locks = try store.lock(exclusive: forWriting) {
      printError("ovltool: waiting for the store's locks (\(store.root)): another process is using it")
    }
    OpenedStore.current = OpenedStore(store: store, locks: locks, derived: nil)
    return store
  }

  /// The stack the selection names; nil when no store is named.
  func stack(forWriting: Bool) throws(OvlError) -> StoreStack? {
    guard let store = try openStore(forWriting: forWriting) else {
      if selection != nil { throw .usage("--container, --image and --layer need --store [PATH] or --docker-root PATH") }
      return nil
    }
    guard let selection else {
      throw .usage("\(store.root): name a stack of the store with --container, --image or --layer")
    }
    let derived = try store.stack(selection)
    if forWriting && derived.isReadOnly {
      throw .usage("\(derived.title) is read-only (no upper layer); changes go to a container's stack (--container)")
    }
    OpenedStore.current?.derived = derived
    return derived
  }

  /// The stack derived by `stack(forWriting:)`.
  var derived: StoreStack? { OpenedStore.current?.derived }
}

/// The store this process opened, with its locks: one command per process, so the locks
/// are held until it exits (the whole command runs under them).
final class OpenedStore: @unchecked Sendable {
  nonisolated(unsafe) static var current: OpenedStore?

  let store: any ContainerStore
  let locks: StoreLocks
  var derived: StoreStack?

  init(store: any ContainerStore, locks: StoreLocks, derived: StoreStack?) {
    self.store = store
    self.locks = locks
    self.derived = derived
  }
}

/// Rewrites a bare `--store` (last, or followed by another option) into `--default-store`.
func rewritingBareStore(_ arguments: [String]) -> [String] {
  var out: [String] = []
  for (i, argument) in arguments.enumerated() {
    if argument == "--" { return out + arguments[i...] }
    if argument == "--store" && (i + 1 == arguments.count || arguments[i + 1].hasPrefix("-")) {
      out.append("--default-store")
    } else {
      out.append(argument)
    }
  }
  return out
}
