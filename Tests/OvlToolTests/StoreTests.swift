import Foundation
import Testing

/// A real podman store on a fresh tmpfs: an image imported from a tarball with a static
/// busybox, a container changed through `podman exec` and `podman cp`, then stopped.
/// ovltool's view of it (`export --container`, `tree --container`, `ls --image`) is
/// compared with `podman diff` and `podman export`; `fsck --store` finds it clean; an
/// ovltool `put` into the stopped container is what `podman exec cat` shows after
/// `podman start`; a running container's stack is refused. Without podman, runc and a
/// static busybox the test skips with a message (a failure with OVLTOOL_REQUIRE_KERNEL=1).
@Suite(.serialized) struct StoreTests {
  static let binary = Harness.repository + "/.build/debug/ovltool"
  static let tools = ["/usr/bin/podman", "/usr/sbin/runc", "/bin/busybox", "/usr/bin/skopeo"]

  /// False (and a skip message, or a failure where CI requires the tools) without them.
  static func available() -> Bool {
    Harness.toolsAvailable(tools, suite: "StoreTests", cannot: "podman's store cannot be made", install: "apt-get install podman runc busybox-static skopeo")
  }

  /// A throwaway podman store: graph root and run root on a tmpfs of their own (overlay
  /// cannot sit on overlay; the run root's path stays under 50 characters).
  final class PodmanStore {
    let dir = Harness.TempDir("podman")
    var base: String { dir.path + "/s" }
    var root: String { base + "/root" }
    var run: String { base + "/run" }
    var mounted = false

    init() throws {
      try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
      let m = Harness.run(["/bin/mount", "-t", "tmpfs", "tmpfs", base])
      #expect(m.status == 0, "mount tmpfs: \(m.stderr)")
      mounted = m.status == 0
    }

    deinit { cleanUp() }

    /// Containers first (their mounts), then the tmpfs; TempDir removes the rest.
    func cleanUp() {
      guard mounted else { return }
      podman(["rm", "-a", "-f", "-t", "0"])
      let u = StoreTests.spawn(["/bin/umount", "-R", "-l", base], output: dir.path + "/umount")
      #expect(u.status == 0, "umount \(base): \(u.stderr)")
      mounted = false
    }

    @discardableResult
    func podman(_ args: [String]) -> Harness.Result {
      StoreTests.spawn(["/usr/bin/podman", "--root", root, "--runroot", run, "--cgroup-manager", "cgroupfs",
                        "--events-backend", "file", "--runtime", "/usr/sbin/runc", "--storage-driver", "overlay"] + args,
                       output: dir.path + "/podman")
    }

    /// Imports a tarball of a static busybox (and a few of its links) as localhost/bb.
    func importImage() throws {
      let rootfs = base + "/rootfs"
      let fm = FileManager.default
      try fm.createDirectory(atPath: rootfs + "/bin", withIntermediateDirectories: true)
      try fm.createDirectory(atPath: rootfs + "/data", withIntermediateDirectories: true)
      try fm.copyItem(atPath: "/bin/busybox", toPath: rootfs + "/bin/busybox")
      for tool in ["sh", "cat", "echo", "ls", "mkdir", "rm", "sleep"] {
        try fm.createSymbolicLink(atPath: rootfs + "/bin/" + tool, withDestinationPath: "busybox")
      }
      fm.createFile(atPath: rootfs + "/data/old", contents: Data("old\n".utf8))
      fm.createFile(atPath: rootfs + "/data/gone", contents: Data("gone\n".utf8))
      let tar = Harness.run(["/bin/tar", "-C", rootfs, "-cf", base + "/rootfs.tar", "."])
      #expect(tar.status == 0, "tar: \(tar.stderr)")
      let imported = podman(["import", base + "/rootfs.tar", "localhost/bb:latest"])
      #expect(imported.status == 0, "podman import: \(imported.stderr)")
    }
  }

  func ovltool(_ args: [String]) -> Harness.Result { Harness.run([Self.binary] + args) }

  @discardableResult
  /// Runs a command with posix_spawn and waits for it with waitpid, its output in files
  /// (`output`.out, .err). Foundation's Process can miss the exit of `podman start`
  /// (whose conmon outlives it) and wait forever.
  static func spawn(_ argv: [String], output: String) -> Harness.Result {
    let outPath = output + ".out", errPath = output + ".err"
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    sigemptyset(&none)
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
    var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    defer { for arg in cArgs { free(arg) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, argv[0], &actions, &attributes, &cArgs, environ)
    guard spawned == 0 else { return Harness.Result(status: 127, stdout: Data(), stderr: "posix_spawn \(argv[0]): errno \(spawned)") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    let out = FileManager.default.contents(atPath: outPath) ?? Data()
    let err = String(decoding: FileManager.default.contents(atPath: errPath) ?? Data(), as: UTF8.self)
    let exit = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return Harness.Result(status: exit, stdout: out, stderr: err)
  }

  /// `podman diff`'s lines as (kind, path).
  static func podmanDiff(_ text: String) -> Set<String> {
    Set(text.split(separator: "\n").map(String.init))
  }

  /// A layer tar's entries as podman diff would name them: `.wh.` entries as D, the rest as
  /// A or C (podman says C for a dir that exists below; both count as "changed" here).
  static func layerChanges(_ listing: String) -> [String: String] {
    var result: [String: String] = [:]
    for line in listing.split(separator: "\n") {
      var path = String(line)
      if path.hasPrefix("./") { path.removeFirst(2) }
      if path.hasSuffix("/") { path.removeLast() }
      if path.isEmpty || path == "." { continue }
      let parts = path.split(separator: "/")
      if let last = parts.last, last.hasPrefix(".wh.") {
        result["/" + (parts.dropLast() + [last.dropFirst(4)]).joined(separator: "/")] = "D"
      } else {
        result["/" + path] = "AC"
      }
    }
    return result
  }

  @Test func podmanContainer() throws {
    guard Self.available() else { return }
    let store = try PodmanStore()
    defer { store.cleanUp() }
    guard store.mounted else { return }
    try store.importImage()
    let create = store.podman(["create", "--name", "box1", "--network", "none", "--ulimit", "nofile=1024:1024",
                               "--ulimit", "nproc=1024:1024", "localhost/bb:latest", "sleep", "1000"])
    #expect(create.status == 0, "podman create: \(create.stderr)")
    let start = store.podman(["start", "box1"])
    try #require(start.status == 0, "podman start: \(start.stderr)")
    let exec = store.podman(["exec", "box1", "sh", "-c", "echo changed > /data/old; rm /data/gone; mkdir /made; echo made > /made/file; rm /bin/ls"])
    #expect(exec.status == 0, "podman exec: \(exec.stderr)")
    let hostFile = store.base + "/copied"
    FileManager.default.createFile(atPath: hostFile, contents: Data("copied\n".utf8))
    let cp = store.podman(["cp", hostFile, "box1:/copied.txt"])
    #expect(cp.status == 0, "podman cp: \(cp.stderr)")

    // Running: its layer is mounted, so writers refuse it (readers may look).
    let source = store.base + "/put-source"
    FileManager.default.createFile(atPath: source, contents: Data("from ovltool\n".utf8))
    let refused = ovltool(["put", "--store", store.root, "--container", "box1", source, "/made/put"])
    #expect(refused.status == 2)
    #expect(refused.stderr.contains("container box1") && refused.stderr.contains("is running"), "\(refused.stderr)")

    let stop = store.podman(["stop", "-t", "0", "box1"])
    #expect(stop.status == 0, "podman stop: \(stop.stderr)")

    // export --container against podman diff: every change podman names, and only the
    // entries the runtime makes besides.
    let diff = store.podman(["diff", "box1"])
    #expect(diff.status == 0, "podman diff: \(diff.stderr)")
    let layer = store.base + "/changes.tar"
    let export = ovltool(["export", "--store", store.root, "--container", "box1", "--output", layer])
    #expect(export.status == 0, "export: \(export.stderr)")
    let listing = Harness.run(["/bin/tar", "-tf", layer])
    let ours = Self.layerChanges(listing.out)
    var theirs: [String: String] = [:]
    for line in Self.podmanDiff(diff.out) {
      let kind = String(line.prefix(1)), path = String(line.dropFirst(2))
      theirs[path] = kind
    }
    for (path, kind) in theirs {
      #expect(ours[path] != nil, "podman diff has \(kind) \(path); ovltool's export does not")
      if let mine = ours[path] { #expect(mine.contains(kind), "\(path): podman \(kind), ovltool \(mine)") }
    }
    let runtimeMade: Set<String> = ["/dev", "/proc", "/sys", "/run", "/run/.containerenv", "/etc", "/etc/hostname", "/etc/hosts",
                                    "/etc/mtab", "/etc/resolv.conf", "/bin", "/data"]
    for path in ours.keys where theirs[path] == nil {
      #expect(runtimeMade.contains(path), "ovltool's export has \(path); podman diff does not")
    }
    #expect(theirs["/data/gone"] == "D" && ours["/data/gone"] == "D")
    #expect(theirs["/copied.txt"] == "A")

    // diff --container: the container's file system against its image, as a layer; every
    // change podman names is in it, and what it holds over the image shows the container.
    let diffLayer = store.base + "/diff.tar"
    let ourDiff = ovltool(["diff", "--store", store.root, "--container", "box1", "--to-tar", diffLayer])
    #expect(ourDiff.status == 0, "diff --container: \(ourDiff.out)\(ourDiff.stderr)")
    let diffed = Self.layerChanges(Harness.run(["/bin/tar", "-tf", diffLayer]).out)
    for (path, kind) in theirs {
      #expect(diffed[path] != nil, "podman diff has \(kind) \(path); ovltool diff --container does not")
      if let mine = diffed[path] { #expect(mine.contains(kind), "diff --container: \(path): podman \(kind), ovltool \(mine)") }
    }
    for path in diffed.keys where theirs[path] == nil {
      #expect(runtimeMade.contains(path), "ovltool diff --container has \(path); podman diff does not")
    }
    let wrongUsage = ovltool(["diff", "--store", store.root, "--image", "localhost/bb", "--to-tar", diffLayer + "2"])
    #expect(wrongUsage.status != 0 && wrongUsage.stderr.contains("needs --container"), "\(wrongUsage.stderr)")

    // tree --container against podman export (the merged file system).
    let tree = ovltool(["tree", "--store", store.root, "--container", "box1"])
    #expect(tree.status == 0, "tree: \(tree.stderr)")
    let treePaths = Set(tree.out.split(separator: "\n").compactMap { line -> String? in
      // mode uid gid size date time layer path[ -> target]
      let fields = line.split(separator: " ", maxSplits: 7)
      guard fields.count == 8 else { return nil }
      let path = String(fields[7].split(separator: " -> ").first ?? "")
      return path == "/" ? nil : path
    })
    let exported = store.base + "/export.tar"
    let podmanExport = store.podman(["export", "-o", exported, "box1"])
    #expect(podmanExport.status == 0, "podman export: \(podmanExport.stderr)")
    let exportedPaths = Set(Harness.run(["/bin/tar", "-tf", exported]).out.split(separator: "\n").compactMap { line -> String? in
      var path = String(line)
      if path.hasPrefix("./") { path.removeFirst(2) }
      if path.hasSuffix("/") { path.removeLast() }
      return path.isEmpty || path == "." ? nil : "/" + path
    })
    #expect(treePaths == exportedPaths, "only ovltool: \(treePaths.subtracting(exportedPaths).sorted()); only podman: \(exportedPaths.subtracting(treePaths).sorted())")
    let cat = ovltool(["cat", "--store", store.root, "--container", "box1", "/data/old"])
    #expect(cat.out == "changed\n")

    // The image's read-only stack is the imported tree, as podman image mount shows it.
    let image = ovltool(["ls", "--store", store.root, "--image", "bb", "/data"])
    #expect(image.out == "gone\nold\n", "\(image.stderr)")
    let mount = store.podman(["image", "mount", "localhost/bb:latest"])
    #expect(mount.status == 0, "podman image mount: \(mount.stderr)")
    let mountPoint = mount.out.trimmingCharacters(in: .whitespacesAndNewlines)
    if mount.status == 0 && !mountPoint.isEmpty {
      let found = Harness.run(["/bin/sh", "-c", "cd \"$1\" && find . -mindepth 1 -printf '/%P %y %s\\n' | sort", "sh", mountPoint])
      let imageTree = ovltool(["tree", "--store", store.root, "--image", "bb"])
      let ours = imageTree.out.split(separator: "\n").compactMap { line -> String? in
        let fields = line.split(separator: " ", maxSplits: 7)
        guard fields.count == 8 else { return nil }
        let path = String(fields[7].split(separator: " -> ").first ?? "")
        guard path != "/" else { return nil }
        let type = fields[0].first == "d" ? "d" : fields[0].first == "l" ? "l" : "f"
        return "\(path) \(type) \(type == "f" ? String(fields[3]) : "*")"
      }.sorted()
      let theirs = found.out.split(separator: "\n").map { line -> String in
        let f = line.split(separator: " ")
        return f.count == 3 && f[1] != "f" ? "\(f[0]) \(f[1]) *" : String(line)
      }.sorted()
      #expect(ours == theirs, "tree --image against podman image mount: \(Harness.diff(ours, theirs))")
      store.podman(["image", "unmount", "localhost/bb:latest"])
    }

    // The store podman made is clean, digests included.
    let fsck = ovltool(["fsck", "-n", "--store", store.root, "--verify-digests"])
    #expect(fsck.status == 0, "fsck --store: \(fsck.out)\(fsck.stderr)")
    #expect(fsck.out.contains("container box1"))
    #expect(fsck.out.contains(": digest ok"), "\(fsck.out)")

    // A change by ovltool in the stopped container is what the container sees next.
    let put = ovltool(["put", "--store", store.root, "--container", "box1", source, "/made/put"])
    #expect(put.status == 0, "put: \(put.stderr)")
    let remove = ovltool(["rm", "--store", store.root, "--container", "box1", "/data/old"])
    #expect(remove.status == 0, "rm: \(remove.stderr)")
    let restart = store.podman(["start", "box1"])
    #expect(restart.status == 0, "podman start: \(restart.stderr)")
    let seen = store.podman(["exec", "box1", "cat", "/made/put"])
    #expect(seen.out == "from ovltool\n", "podman exec cat: \(seen.stderr)")
    let gone = store.podman(["exec", "box1", "sh", "-c", "test -e /data/old && echo present || echo missing"])
    #expect(gone.out == "missing\n", "after ovltool rm: \(gone.out)\(gone.stderr)")
    store.podman(["stop", "-t", "0", "box1"])
    let after = ovltool(["fsck", "-n", "--store", store.root])
    #expect(after.status == 0, "fsck --store after the restart: \(after.out)\(after.stderr)")

    // Commit without a daemon: the container's changes as a new layer over its image's
    // layers in an OCI layout, which podman pulls and runs.
    let layout = store.base + "/oci"
    let commit = ovltool(["export", "--store", store.root, "--container", "box1", "--oci-layout", layout, "--tag", "committed"])
    #expect(commit.status == 0, "export --oci-layout: \(commit.stderr)")
    // skopeo, as an operator would copy it into the store (podman pull oci:DIR names the
    // image after DIR, which a temp dir's capitals make invalid).
    let copy = StoreTests.spawn(["/usr/bin/skopeo", "--insecure-policy", "copy", "oci:\(layout):committed",
                                 "containers-storage:[overlay@\(store.root)+\(store.run)]localhost/committed:latest"], output: store.dir.path + "/skopeo")
    #expect(copy.status == 0, "skopeo copy: \(copy.stderr)")
    let imageID = "localhost/committed:latest"
    let history = store.podman(["image", "inspect", imageID, "--format", "{{len .RootFS.Layers}}"])
    #expect(history.out == "2\n", "layers of the committed image: \(history.out)\(history.stderr)")
    let run = store.podman(["run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", imageID,
                            "sh", "-c", "cat /made/put /copied.txt; test -e /data/old || echo old-gone; test -e /data/gone || echo gone-gone"])
    #expect(run.out == "from ovltool\ncopied\nold-gone\ngone-gone\n", "podman run of the committed image: \(run.out)\(run.stderr)")
    // The store with a two-layer image that skopeo wrote: still clean, and the image's
    // read-only stack (a lower chain of two layers) shows the committed files.
    let final = ovltool(["fsck", "-n", "--store", store.root, "--verify-digests"])
    #expect(final.status == 0, "fsck --store with the committed image: \(final.out)\(final.stderr)")
    let shown = ovltool(["cat", "--store", store.root, "--image", "localhost/committed", "/made/put"])
    #expect(shown.status == 0 && shown.out == "from ovltool\n", "cat --image of the committed image: \(shown.out)\(shown.stderr)")
  }
}

/// A real dockerd on a fresh tmpfs (its own socket, data root and exec root; no
/// networking): an image imported from the busybox tarball, a container changed by
/// `docker exec` and stopped. ovltool's `stack`/`ls`/`export` of it against `docker diff`,
/// the running container refused for writing, `fsck --docker-root --verify-digests` clean,
/// and an ovltool `put` seen by `docker start` + `docker exec cat`. Skips without
/// docker.io (a failure with OVLTOOL_REQUIRE_KERNEL=1).
@Suite(.serialized) struct DockerStoreTests {
  @Test func dockerContainer() throws {
    guard Harness.toolsAvailable(["/usr/sbin/dockerd", "/usr/bin/docker", "/bin/busybox"], suite: "DockerStoreTests",
                                 cannot: "dockerd cannot run", install: "apt-get install docker.io busybox-static")
    else { return }
    let dir = Harness.TempDir("docker")
    let base = dir.path + "/d"
    try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    try #require(Harness.run(["/bin/mount", "-t", "tmpfs", "tmpfs", base]).status == 0)
    defer { StoreTests.spawn(["/bin/umount", "-R", "-l", base], output: dir.path + "/umount") }
    let root = base + "/root", socket = base + "/docker.sock", pidfile = base + "/docker.pid"
    // dockerd runs in the background (its own containerd under it) until the test ends.
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, base + "/dockerd.log", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    let argv = ["/usr/sbin/dockerd", "--data-root", root, "--exec-root", base + "/exec", "--pidfile", pidfile, "-H", "unix://" + socket,
                "--iptables=false", "--bridge=none", "--storage-driver", "overlay2", "--containerd-namespace", "ovltool-test"]
    var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    defer { for arg in cArgs { free(arg) } }
    var daemon: pid_t = 0
    try #require(posix_spawn(&daemon, argv[0], &actions, nil, &cArgs, environ) == 0)
    defer {
      kill(daemon, SIGTERM)
      var status: Int32 = 0
      while waitpid(daemon, &status, 0) == -1 && errno == EINTR {}
    }
    func docker(_ args: [String]) -> Harness.Result {
      StoreTests.spawn(["/usr/bin/docker", "-H", "unix://" + socket] + args, output: dir.path + "/docker")
    }
    var up = false
    for _ in 0..<150 where !up {
      up = docker(["info"]).status == 0
      if !up { usleep(100_000) }
    }
    try #require(up, "dockerd did not start: \(String(decoding: FileManager.default.contents(atPath: base + "/dockerd.log") ?? Data(), as: UTF8.self).suffix(2000))")

    let rootfs = base + "/rootfs"
    try FileManager.default.createDirectory(atPath: rootfs + "/bin", withIntermediateDirectories: true)
    try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: rootfs + "/bin/busybox")
    for tool in ["sh", "cat", "echo", "ls", "rm", "sleep"] {
      try FileManager.default.createSymbolicLink(atPath: rootfs + "/bin/" + tool, withDestinationPath: "busybox")
    }
    #expect(Harness.run(["/bin/tar", "-C", rootfs, "-cf", base + "/rootfs.tar", "."]).status == 0)
    let imported = docker(["import", base + "/rootfs.tar", "bb:latest"])
    #expect(imported.status == 0, "docker import: \(imported.stderr)")
    #expect(docker(["create", "--name", "web", "--network", "none", "bb:latest", "sleep", "1000"]).status == 0)
    let start = docker(["start", "web"])
    try #require(start.status == 0, "docker start: \(start.stderr)")
    defer { _ = docker(["rm", "-f", "web"]) }
    #expect(docker(["exec", "web", "sh", "-c", "echo hi > /new; rm /bin/ls"]).status == 0)
    let source = base + "/put-source"
    FileManager.default.createFile(atPath: source, contents: Data("from ovltool\n".utf8))
    let ovltool = { (args: [String]) in Harness.run([StoreTests.binary] + args) }
    let refused = ovltool(["put", "--docker-root", root, "--container", "web", source, "/put"])
    #expect(refused.status == 2)
    #expect(refused.stderr.contains("container web") && refused.stderr.contains("is running"), "\(refused.stderr)")
    #expect(docker(["stop", "-t", "0", "web"]).status == 0)

    let diff = docker(["diff", "web"])
    let layer = base + "/changes.tar"
    let export = ovltool(["export", "--docker-root", root, "--container", "web", "--output", layer])
    #expect(export.status == 0, "export: \(export.stderr)")
    let ours = StoreTests.layerChanges(Harness.run(["/bin/tar", "-tf", layer]).out)
    for line in diff.out.split(separator: "\n") {
      let kind = String(line.prefix(1)), path = String(line.dropFirst(2))
      #expect(ours[path]?.contains(kind) == true, "docker diff has \(kind) \(path); ovltool's export has \(ours[path] ?? "nothing")")
    }
    let ls = ovltool(["ls", "--docker-root", root, "--image", "bb", "/bin"])
    #expect(ls.out == "busybox\ncat\necho\nls\nrm\nsh\nsleep\n", "\(ls.stderr)")
    let fsck = ovltool(["fsck", "-n", "--docker-root", root, "--verify-digests"])
    #expect(fsck.status == 0, "fsck --docker-root: \(fsck.out)\(fsck.stderr)")
    #expect(fsck.out.contains("container web (") && fsck.out.contains(": digest ok"), "\(fsck.out)")

    let put = ovltool(["put", "--docker-root", root, "--container", "web", source, "/put"])
    #expect(put.status == 0, "put: \(put.stderr)")
    #expect(docker(["start", "web"]).status == 0)
    let seen = docker(["exec", "web", "cat", "/put"])
    #expect(seen.out == "from ovltool\n", "docker exec cat: \(seen.stderr)")
    _ = docker(["stop", "-t", "0", "web"])
  }
}
