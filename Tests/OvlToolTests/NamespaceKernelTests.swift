import Foundation
import OvlFixtures
import Testing

/// Kernel-differential tests of the namespace commands (rm, mkdir, put, symlink, mknod, mv,
/// ln, chmod, chown, touch, setxattr, rmxattr) through `ovltool apply-script`.
///
/// A case is a fixture and a list of scripts (chunks). Both sides share the fixture's lower
/// layers and have their own upper and work dir, in one private mount namespace:
/// * kernel side: per chunk, a r/w mount, `Tests/oracle/ovlops.py` doing each line with the
///   system call it names (failures printed as `LINE ERRNO`), unmount;
/// * ovltool side: per chunk, `ovltool apply-script --keep-going` (failures parsed from its
///   `FILE:LINE: ERRNO:` messages);
/// * after every chunk: the failing lines and their errnos must be equal, the raw upper and
///   work trees equal (RawTree: same exclusions as the copy-up tests), and the kernel's
///   read-only merged view of both results equal.
@Suite struct NamespaceKernelTests {
  enum FS: String, Sendable { case host, tmpfs, xfs }

  struct Case: Sendable, CustomTestStringConvertible {
    var label: String
    var spec: String
    var options: String = ""
    var chunks: [String]
    var fs: FS = .host
    /// Lower layers made by the kernel instead of the fixture's (bottom first): the first
    /// script runs on a plain directory, each next one through a mount of those below it
    /// (redirect_dir=on), whose upper becomes the next lower.
    var lowerScripts: [String] = []
    var lowerOptions = "redirect_dir=on"
    /// Both sides as uid 4242 in a user namespace of its own (`unshare -Ur`, the layers
    /// owned by 4242): the kernel's rootless mount made there (`unshare -Urm`) against
    /// ovltool run there.
    var inUserNamespace = false
    var testDescription: String { "\(label) [\(fs.rawValue)\(options.isEmpty ? "" : " " + options)\(inUserNamespace ? " userns" : "")]" }
  }

  // MARK: - Fixtures and scripts

  /// Lower layers with merged dirs, a hard link group, a metacopy-able file, a setgid dir,
  /// whiteouts and an opaque dir in the lower layers.
  static let stack = """
    [upper]
    [lower l1]
    dir /a mode=0755 xattr.user.dir=1
    file /a/f "hello" mode=0644 uid=1 gid=2 xattr.user.x=1
    file /a/g "g" mode=0640
    dir /a/sub mtime=1650000000
    file /a/sub/x "x"
    file /a/sub/y "y"
    dir /a/sub/inner
    file /a/sub/inner/i "i"
    dir /b
    file /b/h1 "hard" mode=0600
    link /b/h2 /b/h1
    link /a/h3 /b/h1
    file /b/plain "plain"
    dir /c mode=0700
    file /c/m "meta" mode=0644 xattr.user.m=1
    dir /sgid mode=02775 gid=40
    whiteout /gone
    dir /op opaque=y
    file /op/top "top"
    symlink /a/link ../b/plain
    fifo /a/fifo
    [lower l2]
    file /a/deep "deep"
    dir /a/sub2
    file /a/sub2/z "z"
    dir /e
    file /e/q "q"
    file /gone "hidden by l1"
    dir /op
    file /op/hidden "h"
    """

  /// Every command once, with the errors each can give.
  static let basic = """
    rm a/f
    rm a/nonexistent
    rm -f a/nonexistent
    rm a/sub
    mkdir a/newdir
    mkdir -m 1777 a/sticky
    mkdir -p a/p/q/r
    mkdir a/g
    put -m 0640 @D@/data/small a/newfile
    put @D@/data/big a/g
    put --owner 7:8 --mtime 1600000000.25 -m 4755 @D@/data/small a/deep
    put @D@/data/small a/sub
    put @D@/data/small a/link
    rm -r a/sub
    mkdir a/sub
    rm -d e
    rm -r e
    put @D@/data/small e
    symlink ../target a/newlink
    mknod a/newfifo p
    mknod -m 0600 a/chr c 1 3
    mknod a/fifo p
    chmod 0600 a/g
    chmod 0600 a/link
    chown 5:6 a/sub2
    chown :9 a/sub2/z
    chown 3 a/link
    touch -d 1700000000.5 a/sub2/z
    touch -d 1500000000 a/link
    setxattr user.test hello b/plain
    setxattr user.bin 0x00ff b/plain
    setxattr trusted.overlay.fake x b/plain
    rmxattr user.x a/f
    rmxattr user.dir a
    rmxattr user.none c/m
    mkdir gone
    put @D@/data/small gone/f
    rm -r op
    mkdir op
    rm b/h2
    rm c
    rm -r c
    """

  /// Renames, hard links and whiteout replacement.
  static let moves = """
    mv a/sub a/sub-renamed
    mv a/sub-renamed/inner b/inner-moved
    mv b/inner-moved sgid/inner2
    mv a/f b/f-moved
    mv b/plain a/plain2
    ln b/h1 b/h1-link
    ln a/h3 c/h3-link
    rm b/h2
    mv c/m c/m2
    ln c/m2 a/m-link
    mkdir a/sub
    mv a/sub2 e/sub2
    rm -r a/sub-renamed
    rm b/h1
    rm a/h3
    mkdir sgid/d
    put @D@/data/small sgid/f
    mv a/deep a/g
    mv a/plain2 a/nope/x
    mv sgid sgid/inside
    mv a/g a/sub
    rm -d a/sub
    mv a/link gone
    ln a/m-link op/top
    ln a/fifo b/fifo-link
    mv e op
    mv b a/g
    mv a/fifo a/fifo
    mv b/f-moved c/h3-link
    mv --copy a/sub a/sub-copied
    mkdir a/empty-target
    mv --copy e a/empty-target
    """

  /// Default POSIX ACLs (`posix_acl_create`): `d` has an extended default ACL (a named user,
  /// a mask), `e` a minimal one that allows everything, `acl` a default ACL only in the
  /// lower layer (a name made in it copies it up first). New objects there take the ACL's
  /// mode instead of the umask, an access ACL where it says more than the mode, and new
  /// directories the default ACL — on free names (made in place) and over whiteouts (built
  /// in the work dir) alike.
  static let aclStack = """
    [upper]
    dir /d xattr.system.posix_acl_default=\(extendedDefaultACL)
    whiteout /d/f
    whiteout /d/w
    whiteout /d/n
    dir /e xattr.system.posix_acl_default=\(openDefaultACL)
    whiteout /e/f
    whiteout /e/w
    [lower l1]
    dir /d
    file /d/f "f"
    dir /d/w
    file /d/w/x "x"
    fifo /d/n
    dir /e
    file /e/f "f"
    dir /e/w
    dir /acl xattr.system.posix_acl_default=\(extendedDefaultACL)
    file /acl/old "old"
    dir /sg mode=02775 gid=40 xattr.system.posix_acl_default=\(openDefaultACL)
    """

  /// `u::rwx,u:1000:r-x,g::r-x,m::rwx,o::r-x`
  static let extendedDefaultACL = "0x0200000001000700ffffffff02000500e803000004000500ffffffff10000700ffffffff20000500ffffffff"
  /// `u::rwx,g::rwx,o::rwx`
  static let openDefaultACL = "0x0200000001000700ffffffff04000700ffffffff20000700ffffffff"

  static let aclScript = """
    put @D@/data/small d/f
    put @D@/data/small d/new
    put -m 0640 @D@/data/small d/exact
    mkdir d/w
    mkdir d/g
    mkdir -m 0750 d/g2
    mkdir -p d/p/q/r
    mknod d/n p
    mknod d/fifo p
    mknod -m 0600 d/chr c 1 3
    symlink target d/s
    put @D@/data/small d/g/inner
    put @D@/data/small e/f
    put @D@/data/small e/new
    mkdir e/w
    mkdir e/g
    put @D@/data/small acl/new
    mkdir acl/g
    put @D@/data/small acl/old
    mkdir sg/g
    put @D@/data/small sg/f
    """

  static let optionSets = [
    "", "index=on", "index=on,nfs_export=on", "redirect_dir=on", "redirect_dir=on,metacopy=on",
    "index=on,redirect_dir=on,metacopy=on", "userxattr", "uuid=off", "uuid=on",
  ]

  static let cases: [Case] =
    optionSets.flatMap { options in
      [Case(label: "every command", spec: stack, options: options, chunks: [basic]),
       Case(label: "renames and links", spec: stack, options: options, chunks: [moves])]
    } + [
      Case(label: "every command", spec: stack, options: "index=on,nfs_export=on", chunks: [basic], fs: .tmpfs),
      Case(label: "renames and links", spec: stack, options: "redirect_dir=on,metacopy=on", chunks: [moves], fs: .tmpfs),
      Case(label: "renames and links", spec: stack, options: "index=on,redirect_dir=on", chunks: [moves], fs: .xfs),
      // Two sessions: the second starts from the first's upper (kernel: a second mount).
      Case(label: "in two sessions", spec: stack, options: "index=on,redirect_dir=on,metacopy=on", chunks: [basic, moves]),
      // nfs_export: a name removed after its copy-up in an earlier session. A single-link
      // file's index entry stays a regular file (`ovl_get_nlink` ignores `nlink` for a lower
      // of one link: two upper links, one removed); a hard link's goes when its last name does.
      Case(label: "removals after copy-up", spec: stack, options: "index=on,nfs_export=on",
           chunks: ["chmod 0600 a/f\nchmod 0640 b/plain\nchmod 0600 b/h1\nchmod 0600 c/m", "rm a/f\nrm b/plain\nrm b/h1\nrm b/h2\nmv c/m c/m2\nrm c/m2"]),
      Case(label: "removals after copy-up", spec: stack, options: "index=on",
           chunks: ["chmod 0600 a/f\nchmod 0600 b/h1", "rm a/f\nrm b/h1\nrm b/h2\nrm a/h3"]),
      Case(label: "default ACLs", spec: aclStack, chunks: [aclScript]),
      Case(label: "default ACLs", spec: aclStack, options: "index=on,redirect_dir=on,metacopy=on", chunks: [aclScript]),
      Case(label: "default ACLs", spec: aclStack, options: "userxattr", chunks: [aclScript]),
      Case(label: "default ACLs", spec: aclStack, chunks: [aclScript], fs: .tmpfs),
      Case(label: "every command", spec: stack, options: "userxattr", chunks: [basic], inUserNamespace: true),
      Case(label: "renames and links", spec: stack, options: "userxattr", chunks: [moves], inUserNamespace: true),
    ]

  // MARK: - Randomized sequences

  /// Stacks of 1–3 kernel-made lower layers (with whiteouts, opaque dirs and redirects from
  /// the operations that made them), then 1,000 random operations in chunks of 50, each
  /// chunk through the kernel on one side and `ovltool apply-script` on the other, compared
  /// after every chunk. `OVLTOOL_RANDOM_SEED` / `OVLTOOL_RANDOM_ROUNDS` (stacks, default 2)
  /// / `OVLTOOL_NS_OPS` (operations per stack) replay or extend the run;
  /// `OVLTOOL_NS_OPTIONS` fixes the option set (`metacopy=on,redirect_dir=on`: data-only).
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs (set OVLTOOL_REQUIRE_KERNEL=1 to fail instead)"))
  func randomSequencesMatchKernel() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    guard Harness.kernelAvailable else { return }
    let env = ProcessInfo.processInfo.environment
    let base = env["OVLTOOL_RANDOM_SEED"].flatMap { UInt64($0) } ?? 0x5EED_0004
    let rounds = env["OVLTOOL_RANDOM_ROUNDS"].flatMap { Int($0) } ?? 2
    let operations = env["OVLTOOL_NS_OPS"].flatMap { Int($0) } ?? 1000
    var master = SplitMix64(seed: base)
    for round in 0..<rounds {
      let seed = round == 0 ? base : master.next()
      var generator = RandomChanges(seed: seed)
      let c = generator.makeCase(operations: operations)
      let problems = try Self.run(c)
      if !problems.isEmpty {
        Issue.record("random stack, replay with OVLTOOL_RANDOM_SEED=\(seed) OVLTOOL_RANDOM_ROUNDS=1 (options [\(c.options)], \(c.lowerScripts.count) lowers):\n\(problems.joined(separator: "\n"))")
      }
    }
  }

  /// The random sequences as uid 4242 in a user namespace (rootless podman's case), both
  /// sides: the kernel's rootless mount (`unshare -Urm`, userxattr) and ovltool run in
  /// `unshare -Ur`, over kernel-made lowers owned by 4242. `OVLTOOL_RANDOM_SEED` replays,
  /// `OVLTOOL_USERNS_OPS` (default 500) sets the length.
  @Test(.enabled(if: Harness.kernelTestsEnabled && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), "needs root (to set the stage), setpriv and overlayfs"))
  func randomSequencesInAUserNamespaceMatchKernel() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    guard Harness.kernelAvailable else { return }
    let env = ProcessInfo.processInfo.environment
    let seed = env["OVLTOOL_RANDOM_SEED"].flatMap { UInt64($0) } ?? 0x5EED_4242
    let operations = env["OVLTOOL_USERNS_OPS"].flatMap { Int($0) } ?? 500
    var generator = RandomChanges(seed: seed)
    generator.mappedOwnersOnly = true
    var c = generator.makeCase(operations: operations, options: "userxattr")
    c.inUserNamespace = true
    let problems = try Self.run(c)
    if !problems.isEmpty {
      Issue.record("random stack in a user namespace, replay with OVLTOOL_RANDOM_SEED=\(seed) (\(c.lowerScripts.count) lowers):\n\(problems.joined(separator: "\n"))")
    }
  }

  /// Random scripts over a small name space, so that operations meet existing and missing
  /// paths, files and directories, and each other's results.
  struct RandomChanges {
    var rng: SplitMix64
    /// `put --owner` only to ids a one-id user namespace maps (0:0): the oracle's put is
    /// open, write, fchown — a failed fchown leaves the file — where ovltool's put publishes
    /// nothing when it fails (a failed call changes nothing).
    var mappedOwnersOnly = false
    init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    static let names = ["a", "b", "c", "d"]
    static let options = [
      "", "index=on", "index=on,nfs_export=on", "redirect_dir=on", "redirect_dir=on,metacopy=on",
      "index=on,redirect_dir=on,metacopy=on", "userxattr", "uuid=off,index=on", "xino=on,index=on",
      dataOnly, dataOnlyIndexed,
    ]
    /// Option sets that also give the stack a data-only layer (`dataOnlySpec`).
    static let dataOnly = "metacopy=on,redirect_dir=on"
    static let dataOnlyIndexed = "metacopy=on,redirect_dir=on,index=on"

    mutating func path() -> String {
      let depth = rng.weighted([4, 4, 2]) + 1
      return (0..<depth).map { _ in rng.pick(Self.names) }.joined(separator: "/")
    }

    mutating func line(building: Bool) -> String {
      let p = path()
      switch rng.weighted(building ? [30, 25, 8, 6, 10, 5, 4, 3, 3, 2, 2, 2, 0, 0, 0]
                                   : [16, 12, 8, 8, 12, 8, 4, 5, 5, 4, 4, 4, 4, 3, 3]) {
      case 0:
        var options = ""
        if rng.chance(30) { options += " -m " + rng.pick(["0644", "0600", "4755", "0444"]) }
        if rng.chance(15) { options += mappedOwnersOnly ? " --owner 0:0" : " --owner \(rng.below(4)):\(rng.below(4))" }
        if rng.chance(15) { options += " --mtime 16000000\(rng.below(100)).\(rng.below(1000))" }
        return "put\(options) @D@/data/\(rng.pick(["small", "big", "empty"])) \(p)"
      case 1: return rng.chance(30) ? "mkdir -p \(p)" : "mkdir\(rng.chance(20) ? " -m 0700" : "") \(p)"
      case 2: return "rm \(p)"
      case 3: return "rm -d \(p)"
      case 4: return "rm -r\(rng.chance(30) ? "f" : "") \(p)"
      case 5: return "mv \(p) \(path())"
      case 6: return "ln \(p) \(path())"
      case 7: return "symlink \(rng.pick(["t", "../x", "/abs"])) \(p)"
      case 8: return "mknod \(p) p"
      case 9: return "chmod \(rng.pick(["0755", "0600", "2775", "0000"])) \(p)"
      case 10: return "chown \(rng.below(5)):\(rng.below(5)) \(p)"
      case 11: return "touch -d 15000000\(rng.below(100)) \(p)"
      case 12: return "setxattr user.k\(rng.below(3)) v\(rng.below(9)) \(p)"
      case 13: return "rmxattr user.k\(rng.below(3)) \(p)"
      default: return "mv \(p) \(path())"
      }
    }

    /// A composefs-like stack: a metadata layer of directories and metacopy files whose
    /// absolute redirects name their data in a data-only layer (some plain files too).
    mutating func dataOnlySpec() -> String {
      var meta = "[upper]\n[lower meta]\n", data = "[data blobs]\n"
      var blob = 0
      func file(_ path: String) {
        blob += 1
        let content = "data \(blob) " + String(repeating: "x", count: Int(rng.below(40)))
        if rng.chance(80) {
          meta += "file \(path) size=\(content.utf8.count) metacopy redirect=/objects/\(blob % 7)/b\(blob) mode=0644\n"
          data += "file /objects/\(blob % 7)/b\(blob) \"\(content)\"\n"
        } else {
          meta += "file \(path) \"\(content)\"\n"
        }
      }
      for a in Self.names where !rng.chance(20) {
        if rng.chance(50) { file("/" + a); continue }
        meta += "dir /\(a)\n"
        for b in Self.names where rng.chance(50) {
          if rng.chance(70) { file("/\(a)/\(b)") } else { meta += "dir /\(a)/\(b)\n"; file("/\(a)/\(b)/\(rng.pick(Self.names))") }
        }
      }
      return meta + data
    }

    mutating func makeCase(operations: Int, options fixed: String? = nil) -> Case {
      // OVLTOOL_NS_OPTIONS fixes the option set of every stack (for exploring).
      var options = rng.pick(Self.options)
      if let forced = fixed ?? ProcessInfo.processInfo.environment["OVLTOOL_NS_OPTIONS"] { options = forced }
      if options == Self.dataOnly || options == Self.dataOnlyIndexed {
        let spec = dataOnlySpec()
        return Case(label: "random data-only", spec: spec, options: options, chunks: chunks(operations), fs: rng.chance(25) ? .tmpfs : .host)
      }
      let lowerCount = rng.between(1, 3)
      // userxattr excludes redirect_dir=on (the kernel refuses the pair).
      let lowerOptions = options.contains("userxattr") ? "userxattr" : "redirect_dir=on"
      let lowerScripts = (0..<lowerCount).map { _ in (0..<rng.between(30, 60)).map { _ in line(building: true) }.joined(separator: "\n") }
      return Case(label: "random", spec: "[upper]\n[lower unused]\n", options: options, chunks: chunks(operations),
                  fs: rng.chance(25) ? .tmpfs : .host, lowerScripts: lowerScripts, lowerOptions: lowerOptions)
    }

    /// `operations` random lines in chunks of 50.
    mutating func chunks(_ operations: Int) -> [String] {
      var chunks: [String] = []
      var remaining = operations
      while remaining > 0 {
        let n = min(50, remaining)
        chunks.append((0..<n).map { _ in line(building: false) }.joined(separator: "\n"))
        remaining -= n
      }
      return chunks
    }
  }

  static let ovltool = Harness.ovltool
  static let fixtureTool = Harness.fixtureTool
  static let driver = Harness.repository + "/Tests/oracle/ovlops.py"

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs (set OVLTOOL_REQUIRE_KERNEL=1 to fail instead)"), arguments: cases)
  func changesMatchKernel(_ c: Case) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    guard Harness.kernelAvailable else { return }
    for problem in try Self.run(c) { Issue.record("\(c): \(problem)") }
  }

  // MARK: - Running a case

  /// Runs a case; returns every difference found (empty: the same as the kernel).
  static func run(_ c: Case, keep: String? = nil) throws -> [String] {
    let dir = Harness.TempDir("ns")
    let out = dir.path + "/out"
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    try FileManager.default.createDirectory(atPath: dir.path + "/data", withIntermediateDirectories: true)
    try "small\n".write(toFile: dir.path + "/data/small", atomically: true, encoding: .utf8)
    try String(repeating: "0123456789abcdef", count: 8192).write(toFile: dir.path + "/data/big", atomically: true, encoding: .utf8)
    try "".write(toFile: dir.path + "/data/empty", atomically: true, encoding: .utf8)
    let spec = try FixtureSpec(parsing: Array(c.spec.utf8))
    // Data-only layers (composefs) follow the lowers after `::`.
    let dataLayers = spec.layers.filter { $0.kind == .data }.map { "::@R@/k/" + $0.name }.joined()
    let lowers = c.lowerScripts.isEmpty
      ? spec.layers.filter { $0.kind == .lower }.map { "@R@/k/" + $0.name }.joined(separator: ":") + dataLayers
      : (1...c.lowerScripts.count).reversed().map { "@R@/k/b\($0)" }.joined(separator: ":")
    let extra = (spec.options + (c.options.isEmpty ? [] : [c.options])).map { "," + $0 }.joined()
    func options(_ side: String) -> String { "lowerdir=\(lowers),upperdir=@R@/\(side)/upper,workdir=@R@/\(side)/work\(extra)" }
    try c.spec.write(toFile: dir.path + "/spec", atomically: true, encoding: .utf8)
    for (i, chunk) in c.chunks.enumerated() {
      try chunk.replacingOccurrences(of: "@D@", with: dir.path).write(toFile: dir.path + "/chunk.\(i)", atomically: true, encoding: .utf8)
    }
    for (i, script) in c.lowerScripts.enumerated() {
      try script.replacingOccurrences(of: "@D@", with: dir.path).write(toFile: dir.path + "/lower.\(i + 1)", atomically: true, encoding: .utf8)
    }
    let dumper = try RawTree.installDumper(in: dir.path)
    let r = Harness.run(
      ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", caseScript, "sh", dir.path, String(c.chunks.count)],
      environment: [
        "FS": c.fs.rawValue, "KOPTS": options("k"), "TOPTS": options("t"), "OVLTOOL": ovltool, "FIXTURE": fixtureTool,
        "DRIVER": driver, "DUMP": dumper, "WALKER": Harness.walker, "LOWERS": String(c.lowerScripts.count),
        "LOWEROPTS": c.lowerOptions, "USERNS": c.inUserNamespace ? "1" : "",
      ])
    if let keep = keep ?? ProcessInfo.processInfo.environment["OVLTOOL_NS_KEEP"], !keep.isEmpty {
      let name = c.testDescription.map { $0.isLetter || $0.isNumber ? $0 : "_" }
      Harness.run(["/bin/sh", "-c", "mkdir -p \"$2\" && cp -r \"$1\" \"$2/$3\"", "sh", dir.path, keep, String(name)])
    }
    guard r.status == 0 else { return ["the test script failed (\(r.status)):\n\(r.stderr)\(r.out)"] }
    func file(_ name: String) -> String { (try? String(contentsOfFile: out + "/" + name, encoding: .utf8)) ?? "" }
    let start = Int64(file("start").trimmingCharacters(in: .whitespacesAndNewlines)) ?? Int64.max
    var problems: [String] = []
    for i in c.chunks.indices {
      let at = c.chunks.count > 1 ? "chunk \(i): " : ""
      let kfail = file("k.fail.\(i)"), tfail = file("t.fail.\(i)")
      if kfail != tfail {
        problems.append("\(at)failing lines differ (LINE ERRNO):\nkernel:\n\(kfail)ovltool:\n\(tfail)ovltool said:\n\(file("t.err.\(i)"))")
      }
      let kernel = RawTree.parse(file("k.dump.\(i)")), ours = RawTree.parse(file("t.dump.\(i)"))
      if !kernel.errors.isEmpty || !ours.errors.isEmpty || kernel.entries.isEmpty {
        problems.append("\(at)bad dump: \(kernel.errors + ours.errors)")
      }
      let differences = RawTree.differences(kernel: kernel.entries, ovltool: ours.entries, runStart: start)
      if !differences.isEmpty {
        problems.append("\(at)upper/work trees differ (kernel vs ovltool):\n\(differences.prefix(60).joined(separator: "\n"))")
      }
      let kview = file("k.view.\(i)").split(separator: "\n").map { RawTree.normalizeViewLine(String($0), runStart: start) }
      let tview = file("t.view.\(i)").split(separator: "\n").map { RawTree.normalizeViewLine(String($0), runStart: start) }
      if kview.isEmpty || kview.first == "MOUNTFAIL" {
        problems.append("\(at)the kernel cannot mount its own result: \(file("k.mounterr.\(i)"))")
      } else if tview.first == "MOUNTFAIL" {
        problems.append("\(at)the kernel refuses to mount ovltool's result: \(file("t.mounterr.\(i)"))")
      } else if kview != tview {
        problems.append("\(at)merged views differ (- ovltool's result, + kernel's result):\n\(Harness.diff(tview, kview))")
      }
      if !problems.isEmpty { break }
    }
    return problems
  }

  /// `$1` = the case dir, `$2` = the number of chunks; env: FS, KOPTS, TOPTS (`@R@` = the
  /// layer root), OVLTOOL, FIXTURE, DRIVER, DUMP, WALKER. Results go to `$1/out`.
  static let caseScript = #"""
    set -eu
    d=$1; n=$2; o=$d/out
    \#(RawTree.twinStacks)
    umask 022
    # Kernel-made lower layers b1 (plain) .. bN (each the upper of a mount of those below).
    j=1; below=
    while [ "$j" -le "$LOWERS" ]; do
      mkdir -p "$R/k/b$j"
      if [ "$j" = 1 ]; then
        python3 "$DRIVER" "$R/k/b1" "$d/lower.1" > /dev/null
      else
        mkdir -p "$R/k/bw$j"
        mount -t overlay overlay -o "lowerdir=$below,upperdir=$R/k/b$j,workdir=$R/k/bw$j${LOWEROPTS:+,$LOWEROPTS}" "$d/mk"
        python3 "$DRIVER" "$d/mk" "$d/lower.$j" > /dev/null
        umount "$d/mk"
        rm -rf "$R/k/bw$j"
      fi
      below=$R/k/b$j${below:+:$below}
      j=$((j + 1))
    done
    # USERNS: everything from here on belongs to uid 4242, and both sides run as it in a
    # user namespace of its own (uid 0 there), the kernel's through its rootless mount.
    as_ns() { setpriv --reuid 4242 --regid 4242 --clear-groups --inh-caps=-all --bounding-set=-all -- unshare -Ur "$@"; }
    if [ -n "$USERNS" ]; then
      chown -R 4242:4242 "$R" "$d/mk" "$d/mt" "$o"; chmod -R a+rX "$d"
      p=$d; while [ "$p" != / ]; do chmod a+x "$p"; p=$(dirname "$p"); done
    fi
    view() { # options mountpoint name
      if [ -n "$USERNS" ]; then
        # As the user, like everything else: root's mount would leave a root-owned work/work
        # that the user's namespace cannot use (the kernel's next rootless mount replaces it).
        as_ns -m sh -c 'if mount -t overlay overlay -o "ro,$1" "$2"; then python3 "$3" "$2" --hash 2>/dev/null; umount "$2"; else echo MOUNTFAIL; fi' \
          sh "$1" "$2" "$WALKER" > "$o/$3.view.$i" 2> "$o/$3.mounterr.$i" || true
        return
      fi
      if mount -t overlay overlay -o "ro,$1" "$2" 2> "$o/$3.mounterr.$i"; then
        python3 "$WALKER" "$2" --hash > "$o/$3.view.$i" 2>/dev/null || true
        umount "$2"
      else
        echo MOUNTFAIL > "$o/$3.view.$i"; dmesg 2>/dev/null | grep overlayfs | tail -2 >> "$o/$3.mounterr.$i" || true
      fi
    }
    i=0
    while [ "$i" -lt "$n" ]; do
      if [ -n "$USERNS" ]; then
        as_ns -m sh -c 'mount -t overlay overlay -o "$1" "$2" && python3 "$3" "$2" "$4"; s=$?; umount "$2"; exit $s' sh "$KOPTS" "$d/mk" "$DRIVER" "$d/chunk.$i" > "$o/k.fail.$i"
        as_ns "$OVLTOOL" apply-script --keep-going -o "$TOPTS" "$d/chunk.$i" 2> "$o/t.err.$i" || true
      else
        mount -t overlay overlay -o "$KOPTS" "$d/mk"
        python3 "$DRIVER" "$d/mk" "$d/chunk.$i" > "$o/k.fail.$i"
        umount "$d/mk"
        "$OVLTOOL" apply-script --keep-going -o "$TOPTS" "$d/chunk.$i" 2> "$o/t.err.$i" || true
      fi
      sed -n 's/^ovltool: [^:]*:\([0-9]*\): \([A-Z0-9]*\):.*/\1 \2/p' "$o/t.err.$i" > "$o/t.fail.$i"
      python3 "$DUMP" "$R/k/upper" "$R/k/work" > "$o/k.dump.$i"
      python3 "$DUMP" "$R/t/upper" "$R/t/work" > "$o/t.dump.$i"
      view "$KOPTS" "$d/mk" k
      view "$TOPTS" "$d/mt" t
      i=$((i + 1))
    done
    """#
}
