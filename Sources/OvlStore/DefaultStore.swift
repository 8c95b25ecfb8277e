import OvlSystem

/// The store `podman info` would use for this user, found as containers/storage finds it:
/// `CONTAINERS_STORAGE_CONF`, else (rootless) `$XDG_CONFIG_HOME/containers/storage.conf` or
/// `~/.config/containers/storage.conf`, else `/etc/containers/storage.conf`; its
/// `[storage]` `graphroot` (`rootless_storage_path` for a rootless user), else
/// `/var/lib/containers/storage` (root) or `$XDG_DATA_HOME/containers/storage`
/// (`~/.local/share/containers/storage`). Inside `podman unshare` (the rootless store's user
/// namespace, where the caller is uid 0) the store is the one podman names in
/// `CONTAINERS_GRAPHROOT` and `CONTAINERS_RUNROOT`, and the configuration the user's.
public struct DefaultStore: Sendable, Equatable {
  public let graphRoot: String
  public let runRoot: String?
  /// The configuration file it came from, if any.
  public let configuration: String?
  /// The overlay options of `[storage.options.overlay]` `mountopt` that change what a
  /// layer means (metacopy=, redirect_dir=), for the stack's options.
  public var overlayOptions: [String] = []

  public static func find(rootless: Bool = Credentials.current.uid != 0, environment: (String) -> String? = getEnvironment) throws(OvlError) -> DefaultStore {
    var found = try findConfigured(rootless: rootless || environment("_CONTAINERS_USERNS_CONFIGURED") != nil, environment: environment)
    if let graph = environment("CONTAINERS_GRAPHROOT"), !graph.isEmpty {
      found = DefaultStore(
        graphRoot: graph, runRoot: environment("CONTAINERS_RUNROOT").flatMap { $0.isEmpty ? nil : $0 },
        configuration: found.configuration, overlayOptions: found.overlayOptions)
    }
    return found
  }

  private static func findConfigured(rootless: Bool, environment: (String) -> String?) throws(OvlError) -> DefaultStore {
    let home = environment("HOME") ?? "/"
    var candidates: [String] = []
    if let conf = environment("CONTAINERS_STORAGE_CONF"), !conf.isEmpty {
      candidates = [conf]
    } else {
      if rootless {
        let config = environment("XDG_CONFIG_HOME").flatMap { $0.isEmpty ? nil : $0 } ?? home + "/.config"
        candidates.append(config + "/containers/storage.conf")
      }
      candidates.append("/etc/containers/storage.conf")
    }
    let data = environment("XDG_DATA_HOME").flatMap { $0.isEmpty ? nil : $0 } ?? home + "/.local/share"
    let fallback = rootless ? data + "/containers/storage" : "/var/lib/containers/storage"
    for path in candidates {
      let text: [UInt8]
      do { text = try FD.openFile(atHostPath: path).readAll(limit: 1 << 20) } catch {
        if error == .noSuchFileOrDirectory && path != environment("CONTAINERS_STORAGE_CONF") { continue }
        throw .system(call: "open", path: path, errno: error)
      }
      let values = Self.table("storage", String(decoding: text, as: UTF8.self))
      let overlay = Self.table("storage.options.overlay", String(decoding: text, as: UTF8.self))
      let graph = rootless ? (values["rootless_storage_path"] ?? (path.hasPrefix("/etc/") ? nil : values["graphroot"])) : values["graphroot"]
      let run = rootless && path.hasPrefix("/etc/") ? nil : values["runroot"]
      var found = DefaultStore(graphRoot: Self.expand(graph ?? fallback, home: home), runRoot: run.map { Self.expand($0, home: home) }, configuration: path)
      found.overlayOptions = (overlay["mountopt"] ?? "").split(separator: ",").map(String.init).filter {
        $0.hasPrefix("metacopy=") || $0.hasPrefix("redirect_dir=")
      }
      return found
    }
    return DefaultStore(graphRoot: fallback, runRoot: rootless ? nil : "/run/containers/storage", configuration: nil)
  }

  /// `key = "value"` lines of one table (the TOML containers/storage writes: basic or
  /// literal strings, `#` comments).
  static func table(_ name: String, _ text: String) -> [String: String] {
    var values: [String: String] = [:]
    var table = ""
    for raw in text.split(separator: "\n", omittingEmptySubsequences: true) {
      let line = raw.drop { $0 == " " || $0 == "\t" }
      if line.hasPrefix("#") || line.isEmpty { continue }
      if line.hasPrefix("[") {
        table = String(line.dropFirst().prefix { $0 != "]" }).trimmingSpaces
        continue
      }
      guard table == name, let eq = line.firstIndex(of: "=") else { continue }
      let key = String(line[..<eq]).trimmingSpaces
      let rest = line[line.index(after: eq)...].drop { $0 == " " || $0 == "\t" }
      guard let quote = rest.first, quote == "\"" || quote == "'" else { continue }
      let body = rest.dropFirst()
      guard let end = body.firstIndex(of: quote) else { continue }
      values[key] = String(body[..<end])
    }
    return values
  }

  /// `$HOME` and a leading `~/` as containers/storage expands them.
  static func expand(_ path: String, home: String) -> String {
    var p = path
    if p.hasPrefix("~/") { p = home + p.dropFirst(1) }
    return p.replacingAll("$HOME", with: home)
  }
}

extension String {
  var trimmingSpaces: String {
    var s = Substring(self)
    while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
    while let l = s.last, l == " " || l == "\t" { s.removeLast() }
    return String(s)
  }

  func replacingAll(_ target: String, with replacement: String) -> String {
    guard !target.isEmpty else { return self }
    var out = ""
    var rest = Substring(self)
    while let range = rest.firstRange(of: target) {
      out += rest[..<range.lowerBound] + replacement
      rest = rest[range.upperBound...]
    }
    return out + rest
  }
}

extension Substring {
  var trimmingSpaces: String { String(self).trimmingSpaces }
}
