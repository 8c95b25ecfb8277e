import Foundation
import Testing

/// Rootless podman, as most image builds run: a made-up unprivileged user with subordinate
/// ids runs podman with its own store (native overlay, `userxattr`), and ovltool works on
/// that store as the same user. A running container's stack is refused, `fsck --store` is
/// clean, `export` outside the store's user namespace is refused (it would record host
/// ids), inside `podman unshare` it records the container's ids, and a `put` into the
/// stopped container is what `podman exec cat` shows after `podman start`.
struct RootlessStoreTests {
  static let tools = ["/usr/bin/podman", "/usr/sbin/runc", "/bin/busybox", "/usr/bin/newuidmap", "/usr/bin/setpriv"]

  @Test func rootlessPodmanStore() throws {
    guard Harness.toolsAvailable(Self.tools, suite: "RootlessStoreTests", cannot: "a rootless podman store cannot be made",
                                 install: "apt-get install podman runc busybox-static uidmap", root: "root (to make the test's user)")
    else { return }
    let dir = Harness.TempDir("rootless-podman")
    let r = StoreTests.spawn(
      ["/bin/sh", Harness.repository + "/Tests/OvlToolTests/Support/rootless-podman.sh", dir.path, StoreTests.binary, "/bin/busybox", "4646"],
      output: dir.path + "/script")
    let out = r.out
    #expect(r.status == 0, "\(out)\n\(r.stderr)")
    for line in ["put while running: 2", "stack: 0", "fsck: 0", "export outside the namespace: 2", "export in podman unshare: 0", "put: 0", "hi\n", "owner 1000 /data/new"] {
      #expect(out.contains(line), "expected '\(line)' in:\n\(out)\n\(r.stderr)")
    }
    #expect(out.contains("is running") && out.contains("stop the container first"), "\(out)")
    #expect(out.contains("owned by host ids"), "\(out)")
    #expect(out.contains("entry 1000/1000 data/new") && out.contains("entry 0/0 data/old"), "the layer exported in podman unshare records the container's ids:\n\(out)")
    #expect(!out.contains("failed"), "\(out)\n\(r.stderr)")
  }
}
