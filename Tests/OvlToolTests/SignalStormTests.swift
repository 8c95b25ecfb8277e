import Foundation
import Testing

/// EINTR for real: every command run with `OVLTOOL_SIGNAL_STORM=50` (a SIGALRM every 50 µs,
/// caught without SA_RESTART, as in a program with its own signal handlers) must do exactly
/// what it does without the signals. A 48 MiB file makes `copy_file_range`, `read` and
/// `write` long enough to be interrupted many times, with short counts and EINTR.
struct SignalStormTests {
  static let spec = """
    [upper]
    [lower l1]
    dir /d
    file /d/a "a"
    file /d/b "b"
    link /d/h /d/a
    dir /e
    file /e/x "x"
    """

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root (set OVLTOOL_REQUIRE_KERNEL=1 to fail instead)"))
  func everyCommandGoesOnThroughInterruptions() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    guard Harness.kernelAvailable else { return }
    let dir = Harness.TempDir("storm")
    let big = dir.path + "/big"
    #expect(Harness.run(["/bin/sh", "-c", "head -c 50331648 /dev/urandom > \"$1\"", "sh", big]).status == 0)
    var views: [[String]] = []
    var applied: [[String]] = []
    for storm in ["", "50"] {
      let name = storm.isEmpty ? "calm" : "storm"
      let options = try Harness.build(Self.spec, in: dir, name: name) + ",index=on,redirect_dir=on"
      let lower = options.components(separatedBy: "lowerdir=")[1].components(separatedBy: ",")[0]
      #expect(Harness.run(["/bin/cp", big, lower + "/big"]).status == 0)
      let script = dir.path + "/\(name).script"
      try """
        put \(big) /d/new
        chmod 0600 /d/h
        mv /d /moved
        rm -r /e
        setxattr user.k v /moved/b
        """.write(toFile: script, atomically: true, encoding: .utf8)
      let out = dir.path + "/\(name)"
      let r = Harness.run(["/bin/sh", "-c", """
        "$OVLTOOL" copy-up -o "$OPTS" /big > /dev/null || echo "copy-up $?"
        cmp "$4" "$2/upper/big" || echo "copied-up data differs"
        "$OVLTOOL" apply-script -o "$OPTS" "$1" > /dev/null || echo "apply-script $?"
        "$OVLTOOL" fsck -n -o "$OPTS" > /dev/null || echo "fsck $?"
        "$OVLTOOL" tree --json -o "$OPTS" / > /dev/null || echo "tree $?"
        "$OVLTOOL" export --resolve -o "$OPTS" --output "$2.tar" > /dev/null || echo "export $?"
        mkdir "$2.u" "$2.w" && "$OVLTOOL" apply -o "lowerdir=$3,upperdir=$2.u,workdir=$2.w" "$2.tar" > /dev/null || echo "apply $?"
        cmp "$4" "$2.u/big" || echo "applied data differs"
        """, "sh", script, out, lower, big], environment: ["OVLTOOL": NamespaceTests.binary, "OPTS": options, "OVLTOOL_SIGNAL_STORM": storm])
      #expect(r.status == 0 && r.out.isEmpty, "with OVLTOOL_SIGNAL_STORM=\(storm): \(r.out) \(r.stderr)")
      views.append(NamespaceTests().view(options))
      applied.append(NamespaceTests().view("lowerdir=\(lower),upperdir=\(out).u,workdir=\(out).w"))
    }
    #expect(views[0] == views[1], "the merged view after the script, calm (-) and under signals (+):\n\(Harness.diff(views[0], views[1]))")
    #expect(applied[0] == applied[1], "the applied export, calm (-) and under signals (+):\n\(Harness.diff(applied[0], applied[1]))")
  }
}
