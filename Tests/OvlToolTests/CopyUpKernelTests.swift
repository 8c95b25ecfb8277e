import Foundation
import OvlFixtures
import Testing

/// Kernel-differential tests of `ovltool copy-up` (see the comment at the top of the body).
@Suite struct CopyUpKernelTests {
  // Kernel-differential tests of `ovltool copy-up`: the same copy-up is done once by the
  // kernel and once by ovltool, on two stacks that share the same lower layers (so origin
  // handles and index names are comparable byte for byte) and each have their own upper and
  // work dir; then the raw upper and work trees are compared entry by entry (RawTree), and
  // the kernel's read-only merged view of both results must be the same.
  //
  // Per case, in one private mount namespace (`unshare --mount --propagation private`):
  // 1. on the case's filesystem (`host`: the temp dir itself, ext4 with a null uuid here;
  //    `tmpfs` and `xfs` (loop image): mounted inside the namespace, so real fs uuids and
  //    other handle layouts are covered) the fixture is materialised twice with
  //    `ovl-fixture`, as `k/` (kernel) and `t/` (tool); the lowers of `t/` are deleted and
  //    both stacks use `k/l1:k/l2:…`; `prep` (shell, cwd `k/`) adds what fixtures cannot
  //    express (sparse files, chattr flags), and `kernelPrep` (shell, `$M` = a r/w mount of
  //    the stack) runs through the kernel on BOTH stacks, to start from a kernel-made upper;
  // 2. kernel side: mount `k` r/w once, trigger the copy-up of every path (below), unmount;
  // 3. ovltool side: `ovltool copy-up -o OPTS [--metacopy] /PATH...` on `t` (or, with
  //    `OVLTOOL_COPYUP_SELFCHECK=1`, the kernel side again on `t`: kernel vs kernel must
  //    compare equal — that is the check of this harness);
  // 4. dump both raw trees; mount each result read-only and walk it with the oracle walker
  //    (the same command `Harness.kernelView` runs; it has to run in this namespace to see
  //    a tmpfs/xfs), and `stat -c %i` the names of each hard-link group;
  // 5. run ovltool a second time on the same paths: everything is "already in upper", so
  //    it must exit 0 and change nothing.
  // `OVLTOOL_COPYUP_KEEP=DIR` keeps every case's outputs (dumps, views, ovltool's output).
  //
  // Kernel triggers (each leaves the metadata exactly as it was, so the only effect is the
  // copy-up; verified by the kernel-vs-kernel self-check):
  // * regular file, full copy-up: `: >> PATH` — open(O_WRONLY|O_APPEND|O_CREAT) without a
  //   write: `ovl_open` copies up with data (and completes the data of a metacopy upper);
  //   no write, so the mtime stays the lower's; setuid bits and capabilities survive an
  //   open (only a write strips them);
  // * regular file with `--metacopy` (metacopy=on): `chmod $(stat -c %a PATH) PATH` — a
  //   setattr without ATTR_SIZE does a metadata-only copy-up; same mode, so nothing else
  //   changes (only the upper's ctime, which is never compared);
  // * directory, fifo, char and block device: the same `chmod` to the same mode (setattr
  //   copies up any type; there is no data); a dir copy-up copies up only the dir itself
  //   and its parents, never its children;
  // * symlink: `chown -h $(stat -c %u:%g PATH) PATH` (chmod would follow the link; a
  //   lchown to the same owner copies it up and changes nothing; touch -h would set the
  //   times to now).
  // Append-only files (chattr +a) cannot be chmod'ed (EPERM before any copy-up), so they
  // are only in the full copy-up cases, where `: >>` (O_APPEND) is allowed.
  //
  // What legitimately differs between the two results (RawTree.differences): mtimes the
  // kernel stamps with "now" (work dir root, `work/work`, `work/index`, dir index entries,
  // and a metacopy upper whose data is copied up later: the data is written into the
  // existing upper inode and its times are not put back) only have to be "during the run"
  // on both sides; ctime and atime (never compared: a copy sets ctime to now, and the
  // kernel's read of the shared lower may update its atime before ovltool copies it), inode
  // numbers (replaced by
  // link groups), temp names (`#TMPn`), the random `overlay.uuid` value (presence and
  // length compared), handles into each side's own upper (shown as paths), and st_blocks
  // (regular files only, within one block + 1/64).

  enum FS: String, Sendable { case host, tmpfs, xfs, btrfs }

  struct Case: Sendable, CustomTestStringConvertible {
    var label: String
    var spec: String
    /// Mount options added to the spec's.
    var options: String = ""
    /// Merged-view paths (no leading slash) to copy up, in this order.
    var paths: [String]
    var metacopy: Bool = false
    var fs: FS = .host
    /// Shell run with cwd = the kernel stack's dir (lower layers are `l1`, `l2`…).
    var prep: String = ""
    /// Shell run through a r/w kernel mount (`$M`) of both stacks before the operation.
    var kernelPrep: String = ""
    /// Hard-link groups (merged-view names) whose st_ino pattern is compared.
    var links: [[String]] = []
    var testDescription: String { "\(label) [\(fs.rawValue)\(options.isEmpty ? "" : " " + options)\(metacopy ? " --metacopy" : "")]" }
  }

  // MARK: - Fixtures

  /// POSIX ACL xattr values (little-endian `posix_acl_xattr_header` + entries).
  /// access: u::rw-, u:1000:r--, g::r--, m::r--, o::r--; default: u::rwx, g::r-x, o::r-x.
  static let aclAccess = "0x02000000" + "01000600ffffffff" + "02000400e8030000" + "04000400ffffffff" + "10000400ffffffff" + "20000400ffffffff"
  static let aclDefault = "0x02000000" + "01000700ffffffff" + "04000500ffffffff" + "20000500ffffffff"
  /// VFS_CAP_REVISION_2 | effective, permitted = cap_net_raw (13).
  static let capability = "0x0100000200200000000000000000000000000000"

  /// Every object type, nested under a/b/c so the parents get copied up, in three lowers
  /// (a/b/c merges l1, l2 and l3; a/b/c/deep exists only in l3).
  static let allTypes = """
    [upper]
    [lower l1]
    dir /a mode=0750 uid=5 gid=6 xattr.user.dir=1
    dir /a/b mode=0711 mtime=1600000000.5
    dir /a/b/c mtime=1650000000
    file /a/b/c/small "hello\\n" mode=0640 uid=12 gid=34 xattr.user.k=v xattr.user.bin=0x00ff01 xattr.trusted.overlay.overlay.esc=1 xattr.trusted.overlay.priv=1 mtime=1600000000.123456789
    file /a/b/c/empty "" mode=0600
    symlink /a/b/c/sym ../target uid=7 gid=8
    fifo /a/b/c/fifo mode=0600 uid=3
    char /a/b/c/chr 1 3 mode=0620 gid=5
    block /a/b/c/blk 7 0 mode=0660
    file /a/b/c/hl1 "hardlinked" mode=0604
    link /a/b/c/hl2 /a/b/c/hl1
    link /a/x/hl3 /a/b/c/hl1
    file /a/b/c/suid "#!/bin/sh\\n" mode=04755
    file /a/b/c/sgid "g" mode=02750 gid=50
    file /a/b/c/cap "c" mode=0755 xattr.security.capability=\(capability)
    file /a/b/c/acl "acl" mode=0640 xattr.system.posix_acl_access=\(aclAccess)
    dir /a/b/d xattr.system.posix_acl_default=\(aclDefault)
    file /a/b/d/inherits "i"
    dir /a/b/c/sub mode=0701 xattr.user.s=1
    file /a/b/c/sub/untouched "u"
    [lower l2]
    dir /a/b mode=0755
    file /a/b/c/fromlower2 "2" uid=2
    file /a/b/c/small "shadowed"
    [lower l3]
    file /a/b/c/deep/file3 "3" mode=0444
    """

  /// Large (8 MiB), sparse (8 MiB with a 6 MiB hole) and all-hole files, an append-only
  /// and a noatime file: made with plain tools, then the times are put back.
  static let allTypesPrep = """
    c=l1/a/b/c
    head -c 8388608 /dev/urandom > $c/big
    dd if=/dev/urandom of=$c/sparse bs=1M count=1 2>/dev/null
    dd if=/dev/urandom of=$c/sparse bs=1M count=1 seek=7 conv=notrunc 2>/dev/null
    truncate -s 4M $c/hole
    printf append > $c/append; printf noatime > $c/noatime
    touch -d @1700000000 $c/big $c/sparse $c/hole $c/append $c/noatime
    chattr +a $c/append; chattr +A $c/noatime
    touch -d @1650000000 $c
    """

  static let allTypesPaths = [
    "a/b/c/small", "a/b/c/empty", "a/b/c/big", "a/b/c/sparse", "a/b/c/hole", "a/b/c/sym", "a/b/c/fifo",
    "a/b/c/chr", "a/b/c/blk", "a/b/c/hl1", "a/x/hl3", "a/b/c/suid", "a/b/c/sgid", "a/b/c/cap", "a/b/c/acl",
    "a/b/d/inherits", "a/b/c/noatime", "a/b/c/sub", "a/b/c/fromlower2", "a/b/c/deep/file3", "a/b/c/append",
  ]

  static func allTypes(_ options: String, fs: FS = .host, metacopy: Bool = false) -> Case {
    Case(
      label: "every object type", spec: allTypes, options: options,
      paths: metacopy ? allTypesPaths.filter { $0 != "a/b/c/append" } : allTypesPaths,
      metacopy: metacopy, fs: fs, prep: allTypesPrep, links: [["a/b/c/hl1", "a/b/c/hl2", "a/x/hl3"]])
  }

  static let cases: [Case] = [
    allTypes(""),
    allTypes("index=on"),
    allTypes("index=on,nfs_export=on"),
    allTypes("redirect_dir=on,metacopy=on"),
    allTypes("redirect_dir=on,metacopy=on", metacopy: true),
    allTypes("index=on,redirect_dir=on,metacopy=on", metacopy: true),
    allTypes("userxattr"),
    allTypes("uuid=off"),
    allTypes("uuid=null"),
    allTypes("uuid=on"),
    allTypes("uuid=auto"),
    allTypes("index=on,uuid=off"),
    // tmpfs: a real random fs uuid in every handle (and zeros with uuid=off), 12-byte fids.
    allTypes("", fs: .tmpfs),
    allTypes("index=on,nfs_export=on", fs: .tmpfs),
    allTypes("uuid=off", fs: .tmpfs),
    allTypes("index=on,uuid=null", fs: .tmpfs),
    allTypes("uuid=on,userxattr", fs: .tmpfs),
    allTypes("redirect_dir=on,metacopy=on", fs: .tmpfs, metacopy: true),
    // xfs: 64-bit inode handles (type 0x81), reflink-capable data copy.
    allTypes("index=on", fs: .xfs),
    allTypes("redirect_dir=on,metacopy=on", fs: .xfs, metacopy: true),
    // btrfs: no FS_IOC_GETFSUUID (the fsid comes from BTRFS_IOC_FS_INFO), 20-byte fids.
    allTypes("index=on", fs: .btrfs),
    // One object at a time: only its parent chain is copied up.
    Case(label: "a directory alone", spec: allTypes, paths: ["a/b/c/sub"]),
    Case(label: "a file of the 3rd lower", spec: allTypes, options: "index=on", paths: ["a/b/c/deep/file3"]),
    Case(label: "a symlink alone", spec: allTypes, options: "uuid=on", paths: ["a/b/c/sym"]),
    Case(label: "a device alone", spec: allTypes, options: "index=on,nfs_export=on", paths: ["a/b/c/chr"]),
    Case(
      label: "the second alias of a hard link", spec: allTypes, options: "index=on", paths: ["a/x/hl3"],
      links: [["a/b/c/hl1", "a/b/c/hl2", "a/x/hl3"]]),
    Case(
      label: "hard link aliases one after the other", spec: allTypes, options: "", paths: ["a/x/hl3", "a/b/c/hl2"],
      links: [["a/b/c/hl1", "a/b/c/hl2", "a/x/hl3"]]),
    Case(label: "one lower", spec: """
      [upper]
      [lower l1]
      file /d/e/f "one lower" mode=0664 uid=1 gid=1 xattr.user.x=y
      file /top "t"
      """, paths: ["d/e/f", "top"]),
    Case(label: "two lowers, merged parents", spec: """
      [upper]
      dir /p
      [lower l1]
      dir /p/q mode=0775
      file /p/q/f "from l1"
      [lower l2]
      file /p/q/g "from l2" mode=0600
      file /p/q/f "shadowed"
      """, options: "index=on", paths: ["p/q/g", "p/q/f"]),
    // Starting from an upper the kernel made: complete the data of metacopy uppers (one of
    // them an index entry of a hard link), and skip what is already fully up.
    Case(
      label: "complete metacopy uppers", spec: """
        [upper]
        [lower l1]
        file /m/mc "hello metacopy\\n" mode=0644 xattr.user.a=1
        file /m/same "same mode"
        file /m/done "done"
        file /m/h "hard" mode=0640
        link /m/h2 /m/h
        link /n/h3 /m/h
        """, options: "index=on,redirect_dir=on,metacopy=on",
      paths: ["m/mc", "m/same", "m/done", "n/h3"],
      kernelPrep: """
        chmod 600 "$M/m/mc"; chmod 644 "$M/m/same"; : >> "$M/m/done"; chown 1:2 "$M/m/h"
        """,
      links: [["m/h", "m/h2", "n/h3"]]),
    Case(
      label: "metacopy of what is already up", spec: """
        [upper]
        [lower l1]
        file /m/mc "x" mode=0644
        file /m/full "y"
        """, options: "redirect_dir=on,metacopy=on", paths: ["m/mc", "m/full", "m"], metacopy: true,
      kernelPrep: #"chmod 600 "$M/m/mc"; : >> "$M/m/full""#),
  ]

  static var selfCheck: Bool { ProcessInfo.processInfo.environment["OVLTOOL_COPYUP_SELFCHECK"] == "1" }
  static let ovltool = Harness.ovltool
  static let fixtureTool = Harness.fixtureTool

  // MARK: - The differential test

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs (set OVLTOOL_REQUIRE_KERNEL=1 to fail instead)"), arguments: cases)
  func copyUpMatchesKernel(_ c: Case) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    guard Harness.kernelAvailable else { return }
    let dir = Harness.TempDir("copyup")
    let out = dir.path + "/out"
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    let spec = try FixtureSpec(parsing: Array(c.spec.utf8))
    let lowers = spec.layers.filter { $0.kind == .lower }.map { "@R@/k/" + $0.name }.joined(separator: ":")
    let extra = (spec.options + (c.options.isEmpty ? [] : [c.options])).map { "," + $0 }.joined()
    func options(_ side: String) -> String { "lowerdir=\(lowers),upperdir=@R@/\(side)/upper,workdir=@R@/\(side)/work\(extra)" }
    try c.spec.write(toFile: dir.path + "/spec", atomically: true, encoding: .utf8)
    try c.prep.write(toFile: dir.path + "/prep", atomically: true, encoding: .utf8)
    try c.kernelPrep.write(toFile: dir.path + "/kprep", atomically: true, encoding: .utf8)
    try (c.paths.map { $0 + "\n" }.joined()).write(toFile: dir.path + "/paths", atomically: true, encoding: .utf8)
    try (c.links.map { $0.joined(separator: " ") + "\n" }.joined()).write(toFile: dir.path + "/links", atomically: true, encoding: .utf8)
    let dumper = try RawTree.installDumper(in: dir.path)

    let r = Harness.run(
      ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", Self.caseScript, "sh", dir.path],
      environment: [
        "FS": c.fs.rawValue, "KOPTS": options("k"), "TOPTS": options("t"), "METACOPY": c.metacopy ? "1" : "0",
        "MODE": Self.selfCheck ? "kernel" : "ovltool", "OVLTOOL": Self.ovltool, "FIXTURE": Self.fixtureTool,
        "DUMP": dumper, "WALKER": Harness.walker,
      ])
    func file(_ name: String) -> String { (try? String(contentsOfFile: out + "/" + name, encoding: .utf8)) ?? "" }
    if let keep = ProcessInfo.processInfo.environment["OVLTOOL_COPYUP_KEEP"], !keep.isEmpty {
      // Debugging: keep the outputs (dumps, views, ovltool's stdout/stderr) of every case.
      let name = c.testDescription.map { $0.isLetter || $0.isNumber ? $0 : "_" }
      Harness.run(["/bin/sh", "-c", "mkdir -p \"$2\" && cp -r \"$1\" \"$2/$3\"", "sh", out, keep, String(name)])
    }
    guard r.status == 0 else {
      Issue.record("\(c): the test script failed (\(r.status)):\n\(r.stderr)\(r.out)")
      return
    }
    let what = Self.selfCheck ? "kernel (self-check)" : "ovltool"

    // ovltool's exit status, first and second run.
    let rc = file("rc").trimmingCharacters(in: .whitespacesAndNewlines)
    #expect(rc == "0", "\(c): \(what) copy-up exited \(rc): \(file("stderr"))")
    if !Self.selfCheck {
      let rc2 = file("rc2").trimmingCharacters(in: .whitespacesAndNewlines)
      #expect(rc2 == "0", "\(c): second copy-up of the same paths exited \(rc2): \(file("stderr2"))")
    }

    // The raw trees.
    let kernel = RawTree.parse(file("k.dump")), ours = RawTree.parse(file("t.dump"))
    #expect(kernel.errors.isEmpty && ours.errors.isEmpty && !kernel.entries.isEmpty,
      "\(c): bad dump: \(kernel.errors + ours.errors) \(file("dump.err"))")
    let start = Int64(file("start").trimmingCharacters(in: .whitespacesAndNewlines)) ?? Int64.max
    let differences = RawTree.differences(kernel: kernel.entries, ovltool: ours.entries, runStart: start)
    if !differences.isEmpty {
      Issue.record("\(c): upper/work trees differ (kernel vs \(what)):\n\(differences.prefix(80).joined(separator: "\n"))")
    }
    if !Self.selfCheck {
      let again = RawTree.differences(kernel: ours.entries, ovltool: RawTree.parse(file("t2.dump")).entries, runStart: start)
      if !again.isEmpty {
        Issue.record("\(c): a second copy-up of the same paths changed the trees (first run vs second):\n\(again.prefix(40).joined(separator: "\n"))")
      }
    }

    // The kernel's read-only merged view of both results.
    let kview = file("k.view").split(separator: "\n").map { RawTree.normalizeViewLine(String($0), runStart: start) }
    let tview = file("t.view").split(separator: "\n").map { RawTree.normalizeViewLine(String($0), runStart: start) }
    #expect(!kview.isEmpty && kview.first != "MOUNTFAIL", "\(c): the kernel cannot mount its own result: \(file("k.mounterr"))")
    if tview.first == "MOUNTFAIL" {
      Issue.record("\(c): the kernel refuses to mount \(what)'s result: \(file("t.mounterr"))")
    } else if kview != tview {
      Issue.record("\(c): merged views differ (- \(what)'s result, + kernel's result):\n\(Harness.diff(tview, kview))")
    }

    // Hard links: which names share st_ino must be the same; with index=on all of them.
    let kino = file("k.ino").split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
    let tino = file("t.ino").split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
    for (i, group) in c.links.enumerated() {
      let k = i < kino.count ? kino[i] : [], t = i < tino.count ? tino[i] : []
      #expect(Self.pattern(k) == Self.pattern(t) && k.count == group.count,
        "\(c): st_ino of \(group): kernel's result \(k), \(what)'s \(t)")
      if (c.options + (spec.options.joined(separator: ","))).contains("index=on") {
        #expect(Set(k).count == 1 && Set(t).count == 1, "\(c): index=on: \(group) must share one st_ino: kernel \(k), \(what) \(t)")
      }
    }
  }

  // MARK: - Concurrency

  /// 8 `ovltool copy-up` processes started together on overlapping random halves of 2,000
  /// lower files (in 80 dirs, two levels) of one stack. Each must succeed (exit 0; a path
  /// another process copied first is "already in upper"); afterwards every path is in the
  /// upper exactly once (one name, one link, no stray names), the work dir holds nothing
  /// but the (empty) dirs a mount creates, the kernel's read-only view equals ovltool's
  /// view, and the raw trees equal those the kernel makes copying up the same paths on a
  /// twin stack with the same lowers (impure marks, origins, modes...) — except parent dir
  /// mtimes, which concurrent copy-ups of siblings can race on (see below).
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs (set OVLTOOL_REQUIRE_KERNEL=1 to fail instead)"), arguments: ["", "index=on"])
  func concurrentCopyUpsCopyEachPathOnce(_ extra: String) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    guard Harness.kernelAvailable else { return }
    let dir = Harness.TempDir("copyup-conc")
    var spec = "[upper]\n[lower l1]\n"
    var paths: [String] = []
    for d in 0..<40 {
      for f in 0..<25 {
        for sub in ["", "/sub"] {
          let path = String(format: "d%02d%@/f%02d", d, sub, f)
          paths.append(path)
          spec += "file /\(path) \"\(path)\" mode=0\(["644", "600", "755"][f % 3]) uid=\(f % 4)\n"
        }
      }
    }
    _ = try Harness.build(spec, in: dir, name: "k")
    _ = try Harness.build(spec, in: dir, name: "t")
    try FileManager.default.removeItem(atPath: dir.path + "/t/l1")
    let suffix = extra.isEmpty ? "" : "," + extra
    let kopts = "lowerdir=\(dir.path)/k/l1,upperdir=\(dir.path)/k/upper,workdir=\(dir.path)/k/work" + suffix
    let topts = "lowerdir=\(dir.path)/k/l1,upperdir=\(dir.path)/t/upper,workdir=\(dir.path)/t/work" + suffix

    // Overlapping random halves, shuffled; a path no process drew goes to a random one.
    var rng = SplitMix64(seed: extra.isEmpty ? 0xC0FF_EE01 : 0xC0FF_EE02)
    var sets: [[String]] = Array(repeating: [], count: 8)
    for path in paths {
      var drawn = false
      for i in 0..<8 where rng.next() % 2 == 0 { sets[i].append(path); drawn = true }
      if !drawn { sets[Int(rng.next() % 8)].append(path) }
    }
    for i in 0..<8 {
      for j in stride(from: sets[i].count - 1, to: 0, by: -1) { sets[i].swapAt(j, Int(rng.next() % UInt64(j + 1))) }
      try sets[i].map { "/" + $0 + "\n" }.joined().write(toFile: dir.path + "/set\(i)", atomically: true, encoding: .utf8)
    }
    try paths.map { $0 + "\n" }.joined().write(toFile: dir.path + "/paths", atomically: true, encoding: .utf8)

    let script = #"""
      set -eu
      d=$1
      # All 8 at once. (Not `&` + `wait`: the test process starts us with SIGCHLD blocked,
      # and dash's `wait` then sleeps forever; xargs -P uses a blocking waitpid.)
      printf '%s\n' 0 1 2 3 4 5 6 7 | xargs -P 8 -I{} sh -c '
        d=$0 i=$1; set -- $(cat "$d/set$i"); rc=0
        "$OVLTOOL" copy-up -o "$TOPTS" "$@" > "$d/out$i" 2> "$d/err$i" || rc=$?
        echo $rc > "$d/rc$i"' "$d" {}
      # The kernel does the same copy-ups on the twin stack.
      mkdir -p "$d/mk"
      mount -t overlay overlay -o "$KOPTS" "$d/mk"
      while IFS= read -r p; do : >> "$d/mk/$p"; done < "$d/paths"
      umount "$d/mk"
      python3 "$DUMP" "$d/k/upper" "$d/k/work" > "$d/k.dump"
      python3 "$DUMP" "$d/t/upper" "$d/t/work" > "$d/t.dump"
      """#
    let start = Int64(Date().timeIntervalSince1970 * 1e9) - 1_000_000_000
    let r = Harness.run(
      ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh", dir.path],
      environment: ["OVLTOOL": Self.ovltool, "TOPTS": topts, "KOPTS": kopts, "DUMP": try RawTree.installDumper(in: dir.path)])
    #expect(r.status == 0, "script failed: \(r.stderr)")
    func file(_ name: String) -> String { (try? String(contentsOfFile: dir.path + "/" + name, encoding: .utf8)) ?? "" }

    for i in 0..<8 {
      let rc = file("rc\(i)").trimmingCharacters(in: .whitespacesAndNewlines)
      let errors = file("err\(i)").split(separator: "\n")
      if rc == "0" { continue }
      // Exit 1 is accepted only if every reported problem is an "already in upper" kind.
      let real = errors.filter { !$0.localizedCaseInsensitiveContains("already") }
      #expect(rc == "1" && real.isEmpty, "process \(i) exited \(rc):\n\(errors.prefix(20).joined(separator: "\n"))")
    }

    // Every path exactly once, nothing else.
    let ours = RawTree.parse(file("t.dump"))
    #expect(ours.errors.isEmpty && !ours.entries.isEmpty, "bad dump \(ours.errors.prefix(3))")
    var expected = Set(paths.map { "upper/" + $0 })
    for d in 0..<40 { expected.insert(String(format: "upper/d%02d", d)); expected.insert(String(format: "upper/d%02d/sub", d)) }
    expected.insert("upper")
    expected.formUnion(["work", "work/work"] + (extra.contains("index=on") ? ["work/index"] : []))
    let found = ours.entries.map(\.path)
    let duplicates = Dictionary(grouping: found, by: { $0 }).filter { $0.value.count > 1 }.keys
    #expect(duplicates.isEmpty, "listed twice: \(duplicates.sorted().prefix(10))")
    let extraNames = Set(found).subtracting(expected).sorted()
    let missing = expected.subtracting(found).sorted()
    #expect(extraNames.isEmpty, "unexpected entries (leftovers, temps): \(extraNames.prefix(20))")
    #expect(missing.isEmpty, "not copied up: \(missing.count): \(missing.prefix(20))")
    let multiLinked = ours.entries.filter { $0.type == "file" && $0.fields["nlink"] != "1" }.map(\.path)
    #expect(multiLinked.isEmpty, "copied more than once (nlink > 1): \(multiLinked.prefix(10))")

    // Same raw trees as the kernel's sequential copy-ups, and the same merged view.
    let kernel = RawTree.parse(file("k.dump")).entries
    // Parent dir mtimes are exempt here: a copy-up samples the parent's times before it
    // creates the child and puts them back afterwards, and nothing orders that against a
    // concurrent copy-up of a sibling (the kernel too samples them in ovl_copy_up_one
    // before taking any lock), so a parent can legitimately keep the time of a sibling's
    // creation. Reported, not failed.
    let dirs = Set(kernel.filter { $0.type == "dir" }.map(\.path))
    var differences = RawTree.differences(kernel: kernel, ovltool: ours.entries, runStart: start)
    let racyTimes = differences.filter { line in dirs.contains { line.hasPrefix($0 + ": mtime:") } }
    differences.removeAll { racyTimes.contains($0) }
    if !racyTimes.isEmpty {
      print("CopyUpKernelTests: concurrent copy-ups\(suffix) left \(racyTimes.count) parent dir mtime(s) at the time of a sibling's copy-up: \(racyTimes.prefix(5))")
    }
    if !differences.isEmpty {
      Issue.record("upper/work trees differ from the kernel's (kernel vs ovltool):\n\(differences.prefix(60).joined(separator: "\n"))")
    }
    Harness.compare(Harness.ovltoolView(topts), Harness.kernelView(topts, in: dir), spec: "8 concurrent copy-ups of 2,000 paths\(suffix)")
  }

  /// The equality pattern of a list (which positions hold equal values).
  static func pattern(_ values: [String]) -> [Int] { values.map { v in values.firstIndex(of: v)! } }

  /// `$1` = the case dir; env: FS, KOPTS, TOPTS (with `@R@` for the layer root), METACOPY,
  /// MODE, OVLTOOL, FIXTURE, DUMP, WALKER. Results go to `$1/out`.
  static let caseScript = #"""
    set -eu
    d=$1; o=$d/out
    \#(RawTree.twinStacks)
    # chattr +a files cannot be deleted by the temp dir's cleanup.
    trap 'chattr -R -a "$R/k" >/dev/null 2>&1 || true' EXIT
    (cd "$R/k" && sh -e "$d/prep")

    kernel_prep() { # options mountpoint
      [ -s "$d/kprep" ] || return 0
      mount -t overlay overlay -o "$1" "$2"
      M=$2 sh -e "$d/kprep"
      umount "$2"
    }
    kernel_copy_up() { # options mountpoint
      mount -t overlay overlay -o "$1" "$2"
      while IFS= read -r p; do
        f=$2/$p
        if [ -L "$f" ]; then chown -h "$(stat -c %u:%g "$f")" "$f"
        elif [ -f "$f" ] && [ "$METACOPY" = 0 ]; then : >> "$f"
        else chmod "$(stat -c %a "$f")" "$f"
        fi
      done < "$d/paths"
      umount "$2"
    }
    ovltool_copy_up() { # options rc-file stdout stderr
      opts=$1 rcf=$2 so=$3 se=$4
      set --
      while IFS= read -r p; do set -- "$@" "/$p"; done < "$d/paths"
      mc=; [ "$METACOPY" = 1 ] && mc=--metacopy
      rc=0; "$OVLTOOL" copy-up -o "$opts" $mc "$@" > "$so" 2> "$se" || rc=$?
      echo $rc > "$rcf"
    }

    kernel_prep "$KOPTS" "$d/mk"
    kernel_prep "$TOPTS" "$d/mt"
    kernel_copy_up "$KOPTS" "$d/mk"
    if [ "$MODE" = kernel ]; then
      kernel_copy_up "$TOPTS" "$d/mt"; echo 0 > "$o/rc"
    else
      ovltool_copy_up "$TOPTS" "$o/rc" "$o/stdout" "$o/stderr"
    fi
    python3 "$DUMP" "$R/k/upper" "$R/k/work" > "$o/k.dump" 2>> "$o/dump.err"
    python3 "$DUMP" "$R/t/upper" "$R/t/work" > "$o/t.dump" 2>> "$o/dump.err"

    view() { # options mountpoint name
      if mount -t overlay overlay -o "ro,$1" "$2" 2> "$o/$3.mounterr"; then
        python3 "$WALKER" "$2" --hash > "$o/$3.view" 2>/dev/null || true
        while IFS= read -r line; do
          for p in $line; do printf '%s ' "$(stat -c %i "$2/$p" 2>/dev/null || echo missing)"; done; echo
        done < "$d/links" > "$o/$3.ino"
        umount "$2"
      else
        echo MOUNTFAIL > "$o/$3.view"; dmesg 2>/dev/null | grep overlayfs | tail -2 >> "$o/$3.mounterr" || true
      fi
    }
    view "$KOPTS" "$d/mk" k
    view "$TOPTS" "$d/mt" t

    if [ "$MODE" != kernel ]; then
      ovltool_copy_up "$TOPTS" "$o/rc2" "$o/stdout2" "$o/stderr2"
      python3 "$DUMP" "$R/t/upper" "$R/t/work" > "$o/t2.dump" 2>> "$o/dump.err"
    fi
    """#
}
