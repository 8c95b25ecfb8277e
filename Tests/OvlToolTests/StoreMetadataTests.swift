import Foundation
import OvlStore
import OvlSystem
import Testing

/// Hand-made container stores in temp dirs: a containers/storage store (three layers, an
/// image on the middle one, a container on top) and a Docker overlay2 data root; what
/// `stack` derives from them, every refusal of hostile metadata, `fsck --store` finding
/// damage, and the store's fcntl locks.
@Suite struct StoreMetadataTests {
  static let binary = Harness.repository + "/.build/debug/ovltool"
  static let a = String(repeating: "a", count: 64)
  static let b = String(repeating: "b", count: 64)
  static let c = String(repeating: "c", count: 64)
  static let image = String(repeating: "1", count: 64)
  static let container = String(repeating: "2", count: 64)

  func ovltool(_ args: [String], environment: [String: String]? = nil) -> Harness.Result {
    Harness.run([Self.binary] + args, environment: environment)
  }

  /// A containers/storage store: layers A ← B ← C (C the container box1's layer), image
  /// localhost/bb:latest on B.
  final class HandStore {
    let dir = Harness.TempDir("store")
    var root: String { dir.path + "/storage" }

    init() throws {
      let fm = FileManager.default
      for (id, link) in [(a, "A"), (b, "B"), (c, "C")] {
        try fm.createDirectory(atPath: "\(root)/overlay/\(id)/diff", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(root)/overlay/\(id)/work", withIntermediateDirectories: true)
        write("overlay/\(id)/link", Self.link(link))
        try fm.createDirectory(atPath: "\(root)/overlay/l", withIntermediateDirectories: true)
        try fm.createSymbolicLink(atPath: "\(root)/overlay/l/\(Self.link(link))", withDestinationPath: "../\(id)/diff")
      }
      try fm.createDirectory(atPath: "\(root)/overlay/\(a)/empty", withIntermediateDirectories: true)
      write("overlay/\(a)/diff/base", "base\n")
      write("overlay/\(b)/diff/mid", "mid\n")
      write("overlay/\(c)/diff/top", "top\n")
      write("overlay/\(b)/lower", "l/" + Self.link("A"))
      write("overlay/\(c)/lower", "l/\(Self.link("B")):l/\(Self.link("A"))")
      for sub in ["overlay-layers", "overlay-images", "overlay-containers"] {
        try fm.createDirectory(atPath: "\(root)/\(sub)", withIntermediateDirectories: true)
      }
      write("overlay-layers/layers.json", #"[{"id":"\#(a)"},{"id":"\#(b)","parent":"\#(a)"},{"id":"\#(c)","parent":"\#(b)"}]"#)
      write("overlay-images/images.json", #"[{"id":"\#(image)","names":["localhost/bb:latest"],"layer":"\#(b)"}]"#)
      write("overlay-containers/containers.json", #"[{"id":"\#(container)","names":["box1"],"image":"\#(image)","layer":"\#(c)"}]"#)
      for lock in ["storage.lock", "overlay-layers/layers.lock", "overlay-images/images.lock", "overlay-containers/containers.lock"] {
        write(lock, "")
      }
    }

    static func link(_ letter: String) -> String { String(repeating: letter, count: 26) }

    func write(_ relative: String, _ text: String) {
      FileManager.default.createFile(atPath: "\(root)/\(relative)", contents: Data(text.utf8))
    }

    func symlink(_ relative: String, to target: String) {
      try? FileManager.default.removeItem(atPath: "\(root)/\(relative)")
      try? FileManager.default.createSymbolicLink(atPath: "\(root)/\(relative)", withDestinationPath: target)
    }

    func remove(_ relative: String) { try? FileManager.default.removeItem(atPath: "\(root)/\(relative)") }

    func diff(_ id: String) -> String { "\(root)/overlay/\(id)/diff" }
  }

  @Test func stackOfAContainerAnImageAndALayer() throws {
    let s = try HandStore()
    let r = ovltool(["stack", "--store", s.root, "--container", "box1"])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.out == "lowerdir=\(s.diff(Self.b)):\(s.diff(Self.a)),upperdir=\(s.diff(Self.c)),workdir=\(s.root)/overlay/\(Self.c)/work,index=off\n")
    // A unique ID prefix, and the image's short name.
    #expect(ovltool(["stack", "--store", s.root, "--container", "222"]).out == r.out)
    let image = ovltool(["stack", "--store", s.root, "--image", "bb", "--json"])
    #expect(image.status == 0, "\(image.stderr)")
    let json = try #require(try JSONSerialization.jsonObject(with: image.stdout) as? [String: Any])
    #expect(json["kind"] as? String == "image")
    #expect(json["id"] as? String == Self.image)
    #expect(json["layers"] as? [String] == [Self.b, Self.a])
    #expect(json["lowerdir"] as? [String] == [s.diff(Self.b), s.diff(Self.a)])
    #expect(json["upperdir"] is NSNull)
    #expect(json["readonly"] as? Bool == true)
    // A base layer alone is mounted over its empty dir, as containers/storage mounts it.
    let base = ovltool(["stack", "--store", s.root, "--layer", Self.a])
    #expect(base.out == "lowerdir=\(s.diff(Self.a)):\(s.root)/overlay/\(Self.a)/empty,index=off\n")
  }

  @Test func commandsUseTheDerivedStack() throws {
    let s = try HandStore()
    let ls = ovltool(["ls", "--store", s.root, "--container", "box1", "/"])
    #expect(ls.status == 0, "\(ls.stderr)")
    #expect(ls.out == "base\nmid\ntop\n")
    #expect(ovltool(["ls", "--store", s.root, "--image", "localhost/bb:latest", "/"]).out == "base\nmid\n")
    let source = s.dir.path + "/source"
    FileManager.default.createFile(atPath: source, contents: Data("new\n".utf8))
    let put = ovltool(["put", "--store", s.root, "--container", "box1", source, "/new"])
    #expect(put.status == 0, "\(put.stderr)")
    #expect(FileManager.default.contents(atPath: s.diff(Self.c) + "/new") == Data("new\n".utf8))
    // An image has no upper: a writer refuses it before touching anything.
    let refused = ovltool(["put", "--store", s.root, "--image", "bb", source, "/new"])
    #expect(refused.status == 2)
    #expect(refused.stderr.contains("is read-only (no upper layer)"), "\(refused.stderr)")
    #expect(!FileManager.default.fileExists(atPath: s.diff(Self.b) + "/new"))
    // The layer flags and a store's stack do not mix.
    let mixed = ovltool(["ls", "--store", s.root, "--container", "box1", "-o", "lowerdir=/tmp", "/"])
    #expect(mixed.status == 2)
    #expect(mixed.stderr.contains("cannot be given with a store's"))
  }

  @Test func namesThatDoNotResolve() throws {
    let s = try HandStore()
    let missing = ovltool(["stack", "--store", s.root, "--container", "nope"])
    #expect(missing.status == 2)
    #expect(missing.stderr.contains("no container named or with ID 'nope' in \(s.root)"))
    let noSelection = ovltool(["ls", "--store", s.root, "/"])
    #expect(noSelection.status == 2)
    #expect(noSelection.stderr.contains("name a stack of the store"))
    let noStore = ovltool(["ls", "--container", "box1", "/"])
    #expect(noStore.status == 2)
    #expect(noStore.stderr.contains("need --store"))
    let notAStore = ovltool(["stack", "--store", s.dir.path, "--container", "box1"])
    #expect(notAStore.status == 2)
    #expect(notAStore.stderr.contains("not a containers/storage store"))
  }

  /// Each damage the store might hold (or an attacker might plant) and what ovltool says.
  static let hostile: [(String, String)] = [
    ("absolute link", "absolute link to '/etc'"),
    ("link leaving the store", "link to '../../../etc', not ../<id>/diff"),
    ("absolute lower", "'/etc' is an absolute path, not l/<link>"),
    ("lower leaving the store", "'../../etc' is not l/<link>"),
    ("lower cycle", "parent cycle: layer \(c) comes twice"),
    ("parent cycle", "parent cycle"),
    ("missing layer", "which is missing"),
    ("malformed JSON", "malformed JSON"),
    ("bad id", "bad id \"../../etc\""),
    ("symlinked metadata", "a symlink on the way or leaving the store"),
    ("container of a missing layer", "which overlay-layers/layers.json does not list"),
    ("lower against parents", "but the store's metadata stacks it on"),
    ("link to a file", "not a symlink"),
  ]

  @Test(arguments: hostile)
  func hostileStoreIsRefused(_ damage: String, _ message: String) throws {
    let s = try HandStore()
    switch damage {
    case "absolute link": s.symlink("overlay/l/" + HandStore.link("B"), to: "/etc")
    case "link leaving the store": s.symlink("overlay/l/" + HandStore.link("B"), to: "../../../etc")
    case "absolute lower": s.write("overlay/\(Self.c)/lower", "/etc:l/" + HandStore.link("A"))
    case "lower leaving the store": s.write("overlay/\(Self.c)/lower", "../../etc")
    case "lower cycle": s.write("overlay/\(Self.c)/lower", "l/\(HandStore.link("B")):l/\(HandStore.link("C"))")
    case "parent cycle":
      s.write("overlay-layers/layers.json", #"[{"id":"\#(Self.a)","parent":"\#(Self.c)"},{"id":"\#(Self.b)","parent":"\#(Self.a)"},{"id":"\#(Self.c)","parent":"\#(Self.b)"}]"#)
    case "missing layer": s.remove("overlay/\(Self.b)")
    case "malformed JSON": s.write("overlay-layers/layers.json", #"[{"id":"#)
    case "bad id": s.write("overlay-layers/layers.json", #"[{"id":"../../etc"}]"#)
    case "symlinked metadata": s.symlink("overlay-containers/containers.json", to: "/etc/passwd")
    case "container of a missing layer":
      s.write("overlay-containers/containers.json", #"[{"id":"\#(Self.container)","names":["box1"],"layer":"\#(String(repeating: "e", count: 64))"}]"#)
    case "lower against parents": s.write("overlay/\(Self.c)/lower", "l/" + HandStore.link("A"))
    case "link to a file":
      s.remove("overlay/l/" + HandStore.link("B"))
      s.write("overlay/l/" + HandStore.link("B"), "x")
    default: Issue.record("no damage \(damage)")
    }
    let r = ovltool(["ls", "--store", s.root, "--container", "box1", "/"])
    #expect(r.status == 2, "\(damage): \(r.stderr)")
    #expect(r.stderr.contains(message), "\(damage): \(r.stderr)")
    #expect(r.out.isEmpty)
  }

  @Test func fsckOfAStore() throws {
    let s = try HandStore()
    let clean = ovltool(["fsck", "-n", "--store", s.root])
    #expect(clean.status == 0, "\(clean.out)\(clean.stderr)")
    #expect(clean.out.contains("container box1 (222222222222): clean (3 layers"))
    let json = ovltool(["fsck", "-n", "--store", s.root, "--json"])
    let report = try #require(try JSONSerialization.jsonObject(with: json.stdout) as? [String: Any])
    #expect(report["exit"] as? Int == 0)
    #expect((report["stacks"] as? [[String: Any]])?.count == 1)
    // One stack of the store, as fsck of that stack.
    let one = ovltool(["fsck", "-n", "--store", s.root, "--container", "box1", "-v"])
    #expect(one.status == 0, "\(one.out)\(one.stderr)")
    #expect(one.out.contains("Filesystem clean"))
    // Metadata that cannot be read: an operational error (8), not a usage error.
    s.write("overlay-layers/layers.json", "[")
    let broken = ovltool(["fsck", "-n", "--store", s.root])
    #expect(broken.status == 8, "\(broken.out)\(broken.stderr)")
    #expect(broken.stderr.contains("malformed JSON"))
  }

  @Test(arguments: [
    ("removed layer dir", "layer \(b) is listed but its directory is missing"),
    ("broken link", "dangling: no such link"),
    ("bad lower", "is not l/<link>"),
    ("unlisted dir", "a layer directory that the store's metadata does not list"),
    ("wrong link", "links to layer \(a), but layer \(b)'s link file names it"),
  ])
  func fsckFindsStoreDamage(_ damage: String, _ message: String) throws {
    let s = try HandStore()
    switch damage {
    case "removed layer dir": s.remove("overlay/\(Self.b)")
    case "broken link": s.remove("overlay/l/" + HandStore.link("C"))
    case "bad lower": s.write("overlay/\(Self.c)/lower", "l/../../x")
    case "unlisted dir": try FileManager.default.createDirectory(atPath: s.root + "/overlay/" + String(repeating: "d", count: 64) + "/diff", withIntermediateDirectories: true)
    case "wrong link": s.symlink("overlay/l/" + HandStore.link("B"), to: "../\(Self.a)/diff")
    default: Issue.record("no damage \(damage)")
    }
    let r = ovltool(["fsck", "-n", "--store", s.root])
    #expect(r.status == 4, "\(damage): \(r.out)\(r.stderr)")
    #expect(r.out.contains(message), "\(damage): \(r.out)")
  }

  /// A tar-split file as containers/storage writes it (gzip'd JSON lines: raw segments and
  /// file entries), made by Python's tarfile from layer A's diff; `diff-digest` is the
  /// tar's. Changing the file's content makes --verify-digests report a mismatch.
  @Test func verifyDigests() throws {
    let s = try HandStore()
    let script = """
      import tarfile, io, json, base64, gzip, hashlib, sys
      diff, out = sys.argv[1], sys.argv[2]
      buf = io.BytesIO()
      with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as t:
          t.add(diff + '/base', arcname='base')
      data = buf.getvalue()
      lines, pos = [], 0
      with tarfile.open(fileobj=io.BytesIO(data)) as t:
          for m in t.getmembers():
              lines.append({'type': 2, 'payload': base64.b64encode(data[pos:m.offset_data]).decode(), 'position': len(lines)})
              lines.append({'type': 1, 'name': m.name, 'size': m.size, 'position': len(lines)})
              pos = m.offset_data + m.size
      lines.append({'type': 2, 'payload': base64.b64encode(data[pos:]).decode(), 'position': len(lines)})
      with gzip.open(out, 'wt') as f:
          for l in lines: f.write(json.dumps(l) + '\\n')
      print('sha256:' + hashlib.sha256(data).hexdigest())
      """
    let made = Harness.run(["/usr/bin/python3", "-c", script, s.diff(Self.a), "\(s.root)/overlay-layers/\(Self.a).tar-split.gz"])
    try #require(made.status == 0, "\(made.stderr)")
    let digest = made.out.trimmingCharacters(in: .whitespacesAndNewlines)
    s.write("overlay-layers/layers.json", #"[{"id":"\#(Self.a)","diff-digest":"\#(digest)"},{"id":"\#(Self.b)","parent":"\#(Self.a)"},{"id":"\#(Self.c)","parent":"\#(Self.b)"}]"#)
    let ok = ovltool(["fsck", "-n", "--store", s.root, "--verify-digests"])
    #expect(ok.status == 0, "\(ok.out)\(ok.stderr)")
    #expect(ok.out.contains("layer aaaaaaaaaaaa: digest ok (\(digest))"), "\(ok.out)")
    #expect(ok.out.contains("layer bbbbbbbbbbbb: digest not recorded"))
    s.write("overlay/\(Self.a)/diff/base", "BASE\n")
    let bad = ovltool(["fsck", "-n", "--store", s.root, "--verify-digests"])
    #expect(bad.status == 4, "\(bad.out)\(bad.stderr)")
    #expect(bad.out.contains("layer aaaaaaaaaaaa: digest mismatch: content gives sha256:"), "\(bad.out)")
  }

  @Test func bareStoreIsTheConfiguredStore() throws {
    let s = try HandStore()
    let conf = s.dir.path + "/storage.conf"
    FileManager.default.createFile(atPath: conf, contents: Data("# test\n[storage]\ndriver = \"overlay\"\ngraphroot = \"\(s.root)\"\nrunroot = \"/run/x\"\n".utf8))
    let r = ovltool(["stack", "--store", "--container", "box1"], environment: ["CONTAINERS_STORAGE_CONF": conf])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.out.hasPrefix("lowerdir=\(s.diff(Self.b)):"))
    let fsck = ovltool(["fsck", "-n", "--store"], environment: ["CONTAINERS_STORAGE_CONF": conf])
    #expect(fsck.status == 0, "\(fsck.out)\(fsck.stderr)")
  }

  /// The default store as containers/storage finds it: the user's storage.conf (rootless),
  /// `$HOME` expanded, `rootless_storage_path`, the XDG fallback, CONTAINERS_STORAGE_CONF.
  @Test func defaultStoreLookup() throws {
    let dir = Harness.TempDir("conf")
    let home = dir.path + "/home"
    try FileManager.default.createDirectory(atPath: home + "/.config/containers", withIntermediateDirectories: true)
    var env = ["HOME": home]
    let lookup = { (rootless: Bool) throws -> DefaultStore in try DefaultStore.find(rootless: rootless) { env[$0] } }
    // No user file: the XDG data dir (whatever /etc says of root's graphroot).
    if !FileManager.default.fileExists(atPath: "/etc/containers/storage.conf") {
      #expect(try lookup(true).graphRoot == home + "/.local/share/containers/storage")
      #expect(try lookup(false).graphRoot == "/var/lib/containers/storage")
    }
    env["XDG_DATA_HOME"] = dir.path + "/data"
    if !FileManager.default.fileExists(atPath: "/etc/containers/storage.conf") {
      #expect(try lookup(true).graphRoot == dir.path + "/data/containers/storage")
    }
    FileManager.default.createFile(atPath: home + "/.config/containers/storage.conf", contents: Data("""
      [storage]
      driver = "overlay"
      # graphroot = "/not/this"
      graphroot = "$HOME/store"
      runroot = '/run/user/4242/containers'
      [storage.options]
      graphroot = "/not/this/either"
      [storage.options.overlay]
      mountopt = "nodev,metacopy=on"
      """.utf8))
    let user = try lookup(true)
    #expect(user.graphRoot == home + "/store")
    #expect(user.runRoot == "/run/user/4242/containers")
    #expect(user.configuration == home + "/.config/containers/storage.conf")
    #expect(user.overlayOptions == ["metacopy=on"])
    let conf = dir.path + "/storage.conf"
    FileManager.default.createFile(atPath: conf, contents: Data("[storage]\ngraphroot=\"/srv/storage\"\n".utf8))
    env["CONTAINERS_STORAGE_CONF"] = conf
    #expect(try lookup(false).graphRoot == "/srv/storage")
    env["CONTAINERS_STORAGE_CONF"] = dir.path + "/missing.conf"
    #expect(throws: OvlError.self) { try lookup(false) }
  }

  /// A process holding `layers.lock` (an fcntl lock, as containers/storage takes it):
  /// readers share it with a reader, writers wait for it.
  @Test func storeLocks() throws {
    let s = try HandStore()
    let lockFile = s.root + "/overlay-layers/layers.lock"
    let ready = s.dir.path + "/locked"
    func holder(_ exclusive: Bool) -> Process {
      let p = Process()
      p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
      p.arguments = ["-c", "import fcntl,time,sys; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.\(exclusive ? "LOCK_EX" : "LOCK_SH")); open(sys.argv[2],'w').close(); time.sleep(3)", lockFile, ready]
      return p
    }
    func waitReady() {
      for _ in 0..<100 where !FileManager.default.fileExists(atPath: ready) { usleep(20_000) }
      try? FileManager.default.removeItem(atPath: ready)
    }
    let shared = holder(false)
    try shared.run()
    waitReady()
    let reader = ovltool(["ls", "--store", s.root, "--container", "box1", "/"])
    #expect(reader.status == 0)
    #expect(!reader.stderr.contains("waiting"), "\(reader.stderr)")
    let source = s.dir.path + "/source"
    FileManager.default.createFile(atPath: source, contents: Data("x".utf8))
    let writer = ovltool(["put", "--store", s.root, "--container", "box1", source, "/x"])
    #expect(writer.status == 0, "\(writer.stderr)")
    #expect(writer.stderr.contains("waiting for the store's locks"), "\(writer.stderr)")
    shared.waitUntilExit()
    let exclusive = holder(true)
    try exclusive.run()
    waitReady()
    let waitingReader = ovltool(["ls", "--store", s.root, "--container", "box1", "/"])
    #expect(waitingReader.status == 0)
    #expect(waitingReader.stderr.contains("waiting for the store's locks"), "\(waitingReader.stderr)")
    exclusive.waitUntilExit()
  }

  // MARK: Docker

  static func sha256(_ text: String) -> String {
    let r = Harness.run(["/bin/sh", "-c", "printf %s \"$1\" | sha256sum", "sh", text])
    return String(r.out.prefix(64))
  }

  /// A Docker data root: image layers L1 ← L2 (chain IDs from their diff IDs), a container
  /// "web" with its init layer and its own layer.
  @Test func dockerLayout() throws {
    let dir = Harness.TempDir("docker")
    let root = dir.path + "/docker"
    let fm = FileManager.default
    func write(_ relative: String, _ text: String) throws {
      let path = root + "/" + relative
      try fm.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
      fm.createFile(atPath: path, contents: Data(text.utf8))
    }
    let (l1, l2, initID, mount) = (String(repeating: "3", count: 64), String(repeating: "4", count: 64), String(repeating: "5", count: 64) + "-init", String(repeating: "5", count: 64))
    let diff1 = "sha256:" + String(repeating: "6", count: 64), diff2 = "sha256:" + String(repeating: "7", count: 64)
    let chain1 = String(diff1.dropFirst(7))
    let chain2 = Self.sha256("sha256:\(chain1) \(diff2)")
    let containerID = String(repeating: "8", count: 64), imageID = String(repeating: "9", count: 64)
    for (id, link, lower) in [(l1, "P", nil), (l2, "Q", "l/" + HandStore.link("P")), (initID, "R", "l/\(HandStore.link("Q")):l/\(HandStore.link("P"))"),
                              (mount, "S", "l/\(HandStore.link("R")):l/\(HandStore.link("Q")):l/\(HandStore.link("P"))")] as [(String, String, String?)] {
      try fm.createDirectory(atPath: "\(root)/overlay2/\(id)/diff", withIntermediateDirectories: true)
      try fm.createDirectory(atPath: "\(root)/overlay2/\(id)/work", withIntermediateDirectories: true)
      try write("overlay2/\(id)/link", HandStore.link(link))
      if let lower { try write("overlay2/\(id)/lower", lower) }
      try fm.createDirectory(atPath: "\(root)/overlay2/l", withIntermediateDirectories: true)
      try fm.createSymbolicLink(atPath: "\(root)/overlay2/l/\(HandStore.link(link))", withDestinationPath: "../\(id)/diff")
    }
    try write("overlay2/\(l1)/diff/one", "1")
    try write("overlay2/\(l2)/diff/two", "2")
    try write("overlay2/\(initID)/diff/etc/hostname", "")
    try write("overlay2/\(mount)/diff/three", "3")
    try write("image/overlay2/layerdb/sha256/\(chain1)/cache-id", l1)
    try write("image/overlay2/layerdb/sha256/\(chain1)/diff", diff1)
    try write("image/overlay2/layerdb/sha256/\(chain2)/cache-id", l2)
    try write("image/overlay2/layerdb/sha256/\(chain2)/diff", diff2)
    try write("image/overlay2/layerdb/sha256/\(chain2)/parent", "sha256:" + chain1)
    try write("image/overlay2/layerdb/mounts/\(containerID)/mount-id", mount)
    try write("image/overlay2/layerdb/mounts/\(containerID)/init-id", initID)
    try write("image/overlay2/layerdb/mounts/\(containerID)/parent", "sha256:" + chain2)
    try write("containers/\(containerID)/config.v2.json", #"{"ID":"\#(containerID)","Name":"/web","Image":"sha256:\#(imageID)"}"#)
    try write("image/overlay2/repositories.json", #"{"Repositories":{"app":{"app:latest":"sha256:\#(imageID)"}}}"#)
    try write("image/overlay2/imagedb/content/sha256/\(imageID)", #"{"rootfs":{"type":"layers","diff_ids":["\#(diff1)","\#(diff2)"]}}"#)
    let d = root + "/overlay2/"
    let container = ovltool(["stack", "--docker-root", root, "--container", "web"])
    #expect(container.status == 0, "\(container.stderr)")
    #expect(container.out == "lowerdir=\(d)\(initID)/diff:\(d)\(l2)/diff:\(d)\(l1)/diff,upperdir=\(d)\(mount)/diff,workdir=\(d)\(mount)/work,index=off\n")
    let image = ovltool(["stack", "--docker-root", root, "--image", "app"])
    #expect(image.status == 0, "\(image.stderr)")
    #expect(image.out == "lowerdir=\(d)\(l2)/diff:\(d)\(l1)/diff,index=off\n")
    // A base layer alone (Docker keeps no empty dir): a one-layer read-only view.
    let base = ovltool(["ls", "--docker-root", root, "--layer", "sha256:" + chain1, "/"])
    #expect(base.out == "one\n", "\(base.stderr)")
    #expect(ovltool(["stack", "--docker-root", root, "--layer", l1]).out == "lowerdir=\(root)/overlay2/\(l1)/diff,index=off\n")
    let ls = ovltool(["ls", "--docker-root", root, "--container", "888", "/"])
    #expect(ls.out == "etc\none\nthree\ntwo\n", "\(ls.stderr)")
    let fsck = ovltool(["fsck", "-n", "--docker-root", root])
    #expect(fsck.status == 0, "\(fsck.out)\(fsck.stderr)")
    #expect(fsck.out.contains("container web (888888888888): clean"))
    // A hostile link in Docker's l/ is refused as in containers/storage.
    try fm.removeItem(atPath: "\(root)/overlay2/l/\(HandStore.link("Q"))")
    try fm.createSymbolicLink(atPath: "\(root)/overlay2/l/\(HandStore.link("Q"))", withDestinationPath: "/")
    let hostile = ovltool(["ls", "--docker-root", root, "--container", "web", "/"])
    #expect(hostile.status == 2)
    #expect(hostile.stderr.contains("absolute link to '/'"), "\(hostile.stderr)")
    let damaged = ovltool(["fsck", "-n", "--docker-root", root])
    #expect(damaged.status == 4)
  }
}
