import OvlFormat
import OvlStack
import OvlSystem

/// What the user names in a store.
public enum StoreSelection: Sendable, Equatable {
  case container(String)
  case image(String)
  case layer(String)
}

/// A stack derived from a store's metadata: the layer dirs as the store's own mount
/// would stack them.
public struct StoreStack: Sendable, Equatable {
  public enum Kind: String, Sendable { case container, image, layer }
  public let kind: Kind
  /// The container's, image's or layer's full ID.
  public let id: String
  public let names: [String]
  /// The store root.
  public let store: String
  /// Layer IDs, top-most first (the container's own layer first).
  public let layers: [String]
  public let lowerDirs: [String]
  public let upperDir: String?
  public let workDir: String?
  /// What the store's mount adds (`index=off`; `userxattr` in a rootless store).
  public let mountOptions: [String]

  public var isReadOnly: Bool { upperDir == nil }

  /// "container build1 (0123456789ab)".
  public var title: String {
    let name = names.first.map { "\($0) " } ?? ""
    return "\(kind.rawValue) \(name)(\(StoreID.short(id)))"
  }

  /// The `-o` string of the stack, each path escaped as the option parser unescapes it.
  public var optionString: String {
    var items = ["lowerdir=" + lowerDirs.map { Self.escape($0, colon: true) }.joined(separator: ":")]
    if let upperDir { items.append("upperdir=" + Self.escape(upperDir, colon: false)) }
    if let workDir { items.append("workdir=" + Self.escape(workDir, colon: false)) }
    return (items + mountOptions).joined(separator: ",")
  }

  /// A parser that holds the stack's options (a base layer alone is one lower, over its
  /// `empty` dir or, in Docker, alone), for more `-o` options on top and the kernel's rules.
  public func optionParser() throws(OvlError) -> StackOptionParser {
    var parser = StackOptionParser()
    parser.allowsOneLower = true
    try parser.add(options: optionString)
    return parser
  }

  /// The stack's options with the kernel's rules applied.
  public func stackOptions() throws(OvlError) -> StackOptions {
    var parser = try optionParser()
    return try parser.resolve(defaults: .current())
  }

  static func escape(_ path: String, colon: Bool) -> String {
    var out = ""
    for c in path {
      if c == "\\" || c == "," || (colon && c == ":") { out.append("\\") }
      out.append(c)
    }
    return out
  }

  /// The stack as one JSON object.
  public var json: JSONValue {
    var members: [JSONMember] = [
      JSONMember("kind", .string(kind.rawValue)),
      JSONMember("id", .string(id)),
      JSONMember("names", .array(names.map { .string($0) })),
      JSONMember("store", .string(store)),
      JSONMember("layers", .array(layers.map { .string($0) })),
      JSONMember("lowerdir", .array(lowerDirs.map { .string($0) })),
    ]
    members.append(JSONMember("upperdir", upperDir.map { .string($0) } ?? .null))
    members.append(JSONMember("workdir", workDir.map { .string($0) } ?? .null))
    members.append(JSONMember("readonly", .bool(isReadOnly)))
    members.append(JSONMember("options", .string(optionString)))
    return .object(members)
  }

  /// A writer refuses a running container: its layer is mounted, and the kernel's view of
  /// it lives in memory. `inUse`: the stack's layers that a mounted overlay uses.
  public func refuseRunning(_ inUse: [LayerInUse]) throws(OvlError) {
    guard let use = inUse.first(where: { $0.role != "lowerdir" }) else { return }
    throw .format(path: upperDir ?? store,
      reason: "\(title) is running: its layer is mounted at \(use.mountPoint); stop the container first", errno: .resourceBusy)
  }
}

/// A problem with a store's own metadata, for `fsck --store`.
public struct StoreProblem: Sendable, Equatable {
  public let path: String
  public let problem: String
}

/// A store: containers/storage's or Docker's.
public protocol ContainerStore: AnyObject {
  var root: String { get }
  /// "containers-storage" or "docker".
  var kind: String { get }
  func stack(_ selection: StoreSelection) throws(OvlError) -> StoreStack
  /// What `fsck --store` checks: every container's stack, and the read-only stack of each
  /// layer no container or other layer stacks on (so every layer is checked once at least,
  /// over the layers below it). A stack that cannot be built is its error.
  func stacksToCheck() -> [(title: String, stack: Result<StoreStack, OvlError>)]
  /// The store's own consistency: dirs and metadata that do not match, broken links.
  func consistencyProblems() -> [StoreProblem]
  /// Takes the store's lock files (none for Docker).
  func lock(exclusive: Bool, onWait: () -> Void) throws(OvlError) -> StoreLocks
  /// The layer IDs and their recorded uncompressed digests, for `--verify-digests`.
  func layerDigests() -> [(id: String, digest: String?)]
  /// A layer's diff dir and its tar-split file, both opened beneath the store root
  /// without following symlinks; nil where the store keeps no tar-split file for it.
  func layerFiles(_ id: String) throws(OvlError) -> LayerFiles?
}

/// What `--verify-digests` reads of one layer.
public struct LayerFiles: ~Copyable {
  public let diff: FD
  public let diffPath: String
  public let tarSplit: FD
  public let tarSplitPath: String
}

extension StoreTree {
  func layerFiles(diff: String, tarSplit: String) throws(OvlError) -> LayerFiles? {
    guard let split = try openIfPresent(tarSplit, .readOnly) else { return nil }
    let diffFD = try open(diff, .directory)
    return LayerFiles(diff: diffFD, diffPath: full(diff), tarSplit: split, tarSplitPath: full(tarSplit))
  }
}

/// Picks what `query` names among `items`: a full ID, a name (`names` gives the spellings
/// that count, e.g. `busybox` for `localhost/busybox:latest`), else a unique ID prefix.
func pick<T>(_ query: String, _ items: [T], id: (T) -> String, names: (T) -> [String], what: String, store: String) throws(OvlError) -> T {
  if let hit = items.first(where: { id($0) == query }) { return hit }
  let named = items.filter { names($0).contains(query) }
  if named.count == 1 { return named[0] }
  if named.count > 1 {
    throw .usage("'\(query)' names \(named.count) \(what)s in \(store): \(named.map { StoreID.short(id($0)) }.joined(separator: ", "))")
  }
  if !query.isEmpty, query.utf8.allSatisfy(StoreID.isHexDigit) {
    let prefixed = items.filter { id($0).hasPrefix(query) }
    if prefixed.count == 1 { return prefixed[0] }
    if prefixed.count > 1 {
      throw .usage("'\(query)' is the start of \(prefixed.count) \(what) IDs in \(store): give more digits")
    }
  }
  throw .usage("no \(what) named or with ID '\(query)' in \(store)")
}

/// The spellings of an image name that podman accepts: `localhost/busybox:latest` is also
/// `localhost/busybox`, `busybox:latest` and `busybox`.
func imageNameForms(_ name: String) -> [String] {
  var forms = [name]
  var bare = name
  for prefix in ["localhost/", "docker.io/library/", "docker.io/"] where bare.hasPrefix(prefix) {
    bare = String(bare.dropFirst(prefix.count))
    forms.append(bare)
    break
  }
  for form in forms where form.hasSuffix(":latest") { forms.append(String(form.dropLast(7))) }
  return forms
}
