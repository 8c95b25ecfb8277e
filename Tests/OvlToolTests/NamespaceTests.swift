import Foundation
import Testing

/// Namespace commands: crash safety at every step, exit codes and messages, refusal of
/// mounted stacks, scripts that are wrong.
@Suite(.serialized) struct NamespaceTests {
  static let binary = Harness.repository + "/.build/debug/ovltool"

  static let spec = """
    [upper]
    dir /w
    whiteout /w/x
    whiteout /gone
    [lower l1]
    dir /a/b mode=0750
    file /a/b/f "hello" mode=4755 xattr.user.k=v
    file /a/b/g "g"
    dir /w
    file /w/x "hidden"
    file /hl "linked"
    link /hl2 /hl
    file /gone "hidden too"
    """

  /// The view without mtimes: new objects get the time of the run that made them, and a
  /// crash can leave a parent's time not yet put back.
  func view(_ options: String) -> [String] {
    guard case .success(let lines) = Harness.ovltoolView(options) else { return ["refused"] }
    return lines.map { line in
      guard let r = line.range(of: #","mtime":[0-9]+"#, options: .regularExpression) else { return line }
      return line.replacingCharacters(in: r, with: "")
    }
  }

  /// Every entry (path, type, mode, size) and xattr of the given layer dirs: equal before
  /// and after means nothing in them changed.
  static func snapshot(_ dirs: String...) -> String {
    Harness.run(["/bin/sh", "-c", "for d in \"$@\"; do (cd \"$d\" && find . -printf '%p %y %m %s\\n' | sort && getfattr -R -h -d -m - . 2>/dev/null); done", "sh"] + dirs).out
  }

  /// The value of `name=` in a mount option string.
  static func option(_ name: String, in options: String) -> String {
    options.components(separatedBy: name + "=")[1].components(separatedBy: ",")[0]
  }

  static let crashCases: [(String, [String])] = [
    ("", ["rm", "-d", "/w"]),
    ("", ["rm", "/a/b/f"]),
    ("", ["mkdir", "/gone"]),
    ("", ["symlink", "target", "/gone"]),
    ("", ["put", "@DATA@", "/gone"]),
    ("", ["put", "@DATA@", "/a/b/new"]),
    ("", ["put", "@DATA@", "/a/b/g"]),
    ("redirect_dir=on", ["mv", "/a/b", "/moved"]),
    ("redirect_dir=on,metacopy=on", ["mv", "/a/b/f", "/a/f2"]),
    ("index=on", ["ln", "/hl", "/a/hl3"]),
    ("index=on", ["rm", "/hl"]),
    ("index=on,nfs_export=on", ["rm", "-r", "/a"]),
    ("index=on,redirect_dir=on,metacopy=on", ["chmod", "0600", "/hl2"]),
  ]

  /// More commands for the per-write sweep: copy-up (full and metadata only, of a hard link
  /// with the index), xattr changes, a multi-line script, a whole-tree removal.
  static let writeCrashCases: [(String, [String])] = crashCases + [
    ("index=on", ["copy-up", "/hl"]),
    ("index=on,nfs_export=on", ["copy-up", "/a/b/f"]),
    ("redirect_dir=on,metacopy=on", ["copy-up", "--metacopy", "/a/b/f"]),
    ("", ["setxattr", "user.new", "value", "/a/b/g"]),
    ("index=on", ["chown", "5:6", "/hl"]),
    ("redirect_dir=on", ["apply-script", "@SCRIPT@"]),
  ]

  /// A crash at every write (`OVLTOOL_FAULT=N`: SIGKILL before the N-th system call that
  /// changes a layer, N = 1, 2, … until the command completes): the kernel mounts the stack
  /// and shows ovltool's view, which is the view before the command or after it (a prefix of
  /// the steps for `rm -r` and scripts); `fsck -p` leaves it clean (exit 0 or 1, then `-n`
  /// finds nothing); running the command again completes it.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"), arguments: writeCrashCases)
  func everyWriteCrashLeavesARepairableStack(_ extra: String, _ command: [String]) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let data = Harness.TempDir("data")
    try "new data\n".write(toFile: data.path + "/f", atomically: true, encoding: .utf8)
    try "mkdir /a/n\nput \(data.path)/f /a/n/f\nmv /a/b /a/n/b\nrm /hl\nsymlink t /w/s\n".write(toFile: data.path + "/script", atomically: true, encoding: .utf8)
    let argv = command.map { $0 == "@DATA@" ? data.path + "/f" : $0 == "@SCRIPT@" ? data.path + "/script" : $0 }
    let multiStep = argv.contains("-r") || argv[0] == "apply-script"
    // put over an existing file is open(O_TRUNC) and write(2) on its inode, as on a mount
    // (its hard links and xattrs stay): between the two the file may be short.
    let rewritten = argv[0] == "put" ? #"{"path":"\#(argv[2])","# : nil
    func others(_ view: [String]) -> [String] { view.filter { rewritten == nil || !$0.hasPrefix(rewritten!) } }
    func run(_ options: String, fault: Int? = nil, again: Bool = false) -> Harness.Result {
      // A script run again goes on past the lines the first run did (EEXIST, ENOENT).
      let resume = again && argv[0] == "apply-script" ? ["--keep-going"] : []
      return Harness.run([Self.binary, argv[0], "-o", options] + resume + argv.dropFirst(), environment: fault.map { ["OVLTOOL_FAULT": String($0)] })
    }
    let twin = Harness.TempDir("crash-twin")
    var twinOptions = try Harness.build(Self.spec, in: twin)
    if !extra.isEmpty { twinOptions += "," + extra }
    let done = run(twinOptions)
    #expect(done.status == 0, "\(argv) [\(extra)] without a fault: \(done.stderr)")
    let after = view(twinOptions)
    // st_nlink as the kernel shows it (the views leave it out).
    func linkCounts(_ options: String, _ dir: Harness.TempDir) -> String {
      Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
        "mkdir -p \"$1/ln\" && mount -t overlay o -o \"ro,$2\" \"$1/ln\" && cd \"$1/ln\" && find . ! -type d -printf '%P %n\\n' | sort; cd /; umount \"$1/ln\" 2>/dev/null",
        "sh", dir.path, options]).out
    }
    let linksAfter = linkCounts(twinOptions, twin)
    var crashes = 0
    for n in 1...400 {
      let dir = Harness.TempDir("crash")
      var options = try Harness.build(Self.spec, in: dir)
      if !extra.isEmpty { options += "," + extra }
      let before = view(options)
      let linksBefore = linkCounts(options, dir)
      let r = run(options, fault: n)
      if r.status == 0 { break }  // fewer writes than n: the sweep is complete
      crashes += 1
      let at = "\(argv) [\(extra)] killed before write \(n)"
      #expect(r.status == SIGKILL, "\(at): exit \(r.status) \(r.stderr)")
      let now = view(options)
      #expect(multiStep || now == before || now == after || (rewritten != nil && others(now) == others(before)),
              "\(at): neither the view before nor the one after:\n\(Harness.diff(now, after))")
      let kernel = Harness.kernelView(options, in: dir)
      #expect(kernel.lines != nil, "\(at): the kernel refuses the stack: \(kernel.mountError)")
      Harness.compare(Harness.ovltoolView(options), kernel, spec: at)
      let links = linkCounts(options, dir)
      #expect(multiStep || links == linksBefore || links == linksAfter, "\(at): link counts neither before nor after:\n\(links)")
      let repair = Harness.run([Self.binary, "fsck", "-p", "-o", options])
      #expect(repair.status == 0 || repair.status == 1, "\(at): fsck -p exit \(repair.status): \(repair.out)\(repair.stderr)")
      let check = Harness.run([Self.binary, "fsck", "-n", "-o", options])
      #expect(check.status == 0, "\(at): fsck -n after -p: exit \(check.status): \(check.out)\(check.stderr)")
      #expect(view(options) == now, "\(at): fsck -p changed the merged view")
      if now != after {
        let again = run(options, again: true)
        #expect(again.status == 0 || argv[0] == "apply-script", "\(at): the command run again: \(again.stderr)")
        #expect(view(options) == after, "\(at): run again, not the complete result:\n\(Harness.diff(view(options), after))")
      }
    }
    #expect(crashes >= 1, "\(argv): no write to crash at")
    print("crash sweep: \(command.joined(separator: " ")) [\(extra)]: \(crashes) writes, each crashed and checked")
  }

  /// Random scripts (the namespace sweep's generator) killed before a random write: the
  /// kernel mounts the stack and shows ovltool's view, `fsck -p` leaves it clean, and the
  /// script run again (`--keep-going`) ends in a stack that fsck finds clean and the kernel
  /// mounts. `OVLTOOL_FAULT_ROUNDS` (default 6) runs more.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs")) func randomScriptsSurviveACrashAtAnyWrite() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let rounds = ProcessInfo.processInfo.environment["OVLTOOL_FAULT_ROUNDS"].flatMap { Int($0) } ?? 6
    var rng = SplitMix64(seed: ProcessInfo.processInfo.environment["OVLTOOL_RANDOM_SEED"].flatMap { UInt64($0) } ?? 0xC4A5)
    let optionSets = ["", "index=on", "index=on,nfs_export=on", "index=on,redirect_dir=on,metacopy=on", "redirect_dir=on", "userxattr"]
    for round in 0..<rounds {
      let dir = Harness.TempDir("crash-random")
      try FileManager.default.createDirectory(atPath: dir.path + "/data", withIntermediateDirectories: true)
      try "small\n".write(toFile: dir.path + "/data/small", atomically: true, encoding: .utf8)
      try String(repeating: "0123456789abcdef", count: 4096).write(toFile: dir.path + "/data/big", atomically: true, encoding: .utf8)
      try "".write(toFile: dir.path + "/data/empty", atomically: true, encoding: .utf8)
      let extra = optionSets[round % optionSets.count]
      var options = try Harness.build(Self.spec, in: dir)
      if !extra.isEmpty { options += "," + extra }
      var generator = NamespaceKernelTests.RandomChanges(seed: rng.next())
      let script = (0..<60).map { _ in generator.line(building: false) }.joined(separator: "\n").replacingOccurrences(of: "@D@", with: dir.path)
      try (script + "\n").write(toFile: dir.path + "/script", atomically: true, encoding: .utf8)
      let n = rng.between(1, 150)
      let at = "round \(round) [\(extra)] killed before write \(n)"
      let r = Harness.run([Self.binary, "apply-script", "--keep-going", "-o", options, dir.path + "/script"], environment: ["OVLTOOL_FAULT": String(n)])
      #expect(r.status == SIGKILL || r.status == 0 || r.status == 1, "\(at): exit \(r.status): \(r.stderr)")
      let kernel = Harness.kernelView(options, in: dir)
      #expect(kernel.lines != nil, "\(at): the kernel refuses the stack: \(kernel.mountError)")
      Harness.compare(Harness.ovltoolView(options), kernel, spec: at)
      let repair = Harness.run([Self.binary, "fsck", "-p", "-o", options])
      #expect(repair.status == 0 || repair.status == 1, "\(at): fsck -p exit \(repair.status): \(repair.out)\(repair.stderr)")
      let again = Harness.run([Self.binary, "apply-script", "--keep-going", "-o", options, dir.path + "/script"])
      #expect(again.status == 0 || again.status == 1, "\(at): run again: exit \(again.status): \(again.stderr)")
      let check = Harness.run([Self.binary, "fsck", "-n", "-o", options])
      #expect(check.status == 0, "\(at): fsck -n after the rerun: exit \(check.status): \(check.out)\(check.stderr)")
      let end = Harness.kernelView(options, in: dir)
      #expect(end.lines != nil, "\(at): the kernel refuses the stack after the rerun: \(end.mountError)")
    }
  }

  /// 4 `apply-script` processes at once on one stack (index=on): each changes its own
  /// directory (removals, new files, renames, links) and all of them copy up the same
  /// shared files (chmod). Every line succeeds; the kernel mounts the result and shows
  /// ovltool's view; the view is the one the kernel makes running the scripts one by one.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs")) func concurrentScriptsInOneStack() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    guard Harness.kernelAvailable else { return }
    var spec = "[upper]\n[lower l1]\n"
    for d in 0..<4 { for f in 0..<40 { spec += "file /s\(d)/f\(f) \"\(d) \(f)\"\n" } }
    for f in 0..<40 { spec += "file /shared/f\(f) \"shared \(f)\"\nlink /shared/h\(f) /shared/f\(f)\n" }
    let dir = Harness.TempDir("ns-concurrent")
    let options = try Harness.build(spec, in: dir) + ",index=on,redirect_dir=on"
    let twinDir = Harness.TempDir("ns-concurrent-twin")
    let twin = try Harness.build(spec, in: twinDir) + ",index=on,redirect_dir=on"
    try "new\n".write(toFile: dir.path + "/data", atomically: true, encoding: .utf8)
    var scripts: [String] = []
    for d in 0..<4 {
      var lines: [String] = []
      for f in 0..<40 {
        switch f % 5 {
        case 0: lines.append("rm /s\(d)/f\(f)")
        case 1: lines.append("mv /s\(d)/f\(f) /s\(d)/moved\(f)")
        case 2: lines.append("ln /s\(d)/f\(f) /s\(d)/link\(f)")
        case 3: lines.append("put \(dir.path)/data /s\(d)/f\(f)")
        default: lines.append("mkdir -p /s\(d)/dir\(f)/sub")
        }
        lines.append("chmod 0600 /shared/\(f % 2 == 0 ? "f" : "h")\((f + d * 7) % 40)")
      }
      lines.append("mv /s\(d)/dir4 /s\(d)/dir4-renamed")
      let path = dir.path + "/script\(d)"
      try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
      scripts.append(path)
    }
    let r = Harness.run(["/bin/sh", "-c", """
      printf '%s\\n' "$@" | xargs -P 4 -I{} sh -c '"$0" apply-script -o "$1" "$2" || echo "FAILED $2"' "$OVLTOOL" "$OPTS" {}
      """, "sh"] + scripts, environment: ["OVLTOOL": Self.binary, "OPTS": options])
    if r.out.contains("FAILED") || !r.stderr.isEmpty { Issue.record("a script failed: \(r.out) \(r.stderr)") }
    let kernel = Harness.kernelView(options, in: dir)
    #expect(kernel.lines != nil, "the kernel refuses the result: \(kernel.mountError)")
    Harness.compare(Harness.ovltoolView(options), kernel, spec: "4 concurrent scripts")
    // The kernel, one script after the other, on the twin stack.
    let k = Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", """
      mkdir -p "$1/m" && mount -t overlay overlay -o "$2" "$1/m" || exit 3
      shift 2; for s in "$@"; do python3 "$DRIVER" "$M" "$s"; done; umount "$M"
      """, "sh", twinDir.path, twin] + scripts, environment: ["DRIVER": Harness.repository + "/Tests/oracle/ovlops.py", "M": twinDir.path + "/m"])
    #expect(k.status == 0 && k.out.isEmpty, "the kernel's sequential run: \(k.out) \(k.stderr)")
    let concurrent = view(options), sequential = view(twin)
    if concurrent != sequential {
      Issue.record("concurrent ovltool (-) vs the kernel one script after the other (+):\n\(Harness.diff(concurrent, sequential))")
    }
  }

  // MARK: - The command line

  func stack() throws -> (Harness.TempDir, String) {
    let dir = Harness.TempDir("ns-cli")
    return (dir, try Harness.build(Self.spec, in: dir))
  }

  /// The system call's own argument checks come before any file is looked at: an attribute
  /// value over 64 KiB (E2BIG) or a name over 255 bytes (ERANGE) copies nothing up, and an
  /// empty copy-up path is a usage error (2), not "already in the upper layer".
  @Test func refusedArgumentsChangeNothing() throws {
    let (dir, options) = try stack()
    let upper = Self.option("upperdir", in: options)
    func snapshot() -> String { Self.snapshot(upper) }
    let before = snapshot()
    let big = Harness.run([Self.binary, "setxattr", "-o", options, "user.big", String(repeating: "v", count: 65537), "/a/b/g"])
    #expect(big.status != 0 && big.stderr.contains("Argument list too long"), "\(big.stderr)")
    let long = Harness.run([Self.binary, "setxattr", "-o", options, "user." + String(repeating: "n", count: 251), "v", "/a/b/g"])
    #expect(long.status != 0 && long.stderr.contains("Numerical result out of range"), "\(long.stderr)")
    let remove = Harness.run([Self.binary, "rmxattr", "-o", options, "user." + String(repeating: "n", count: 251), "/a/b/g"])
    #expect(remove.status != 0 && remove.stderr.contains("Numerical result out of range"), "\(remove.stderr)")
    let empty = Harness.run([Self.binary, "copy-up", "-o", options, ""])
    #expect(empty.status == 2 && empty.stderr.contains("empty PATH"), "\(empty.stderr)")
    #expect(snapshot() == before)
    // At the limits, both are set.
    let edge = Harness.run([Self.binary, "setxattr", "-o", options, "user." + String(repeating: "n", count: 250), String(repeating: "v", count: 1000), "/a/b/g"])
    #expect(edge.status == 0, "\(edge.stderr)")
    _ = dir
  }

  /// On a stack never mounted, a command that fails its lookups or checks writes nothing:
  /// not even what a first mount writes (`work/work`, `index/`, the upper root's `uuid` and
  /// `origin`, the index dir's `upper`). The first change that succeeds writes them.
  @Test(arguments: ["", "index=on", "index=on,nfs_export=on"]) func failedCallsOnANewStackWriteNothing(_ extra: String) throws {
    let (dir, base) = try stack()
    let options = base + (extra.isEmpty ? "" : "," + extra)
    let upper = Self.option("upperdir", in: options)
    let work = Self.option("workdir", in: options)
    func snapshot() -> String { Self.snapshot(upper, work) }
    try "rm /a/missing\n".write(toFile: dir.path + "/script", atomically: true, encoding: .utf8)
    let before = snapshot()
    let failing: [[String]] = [
      ["rm", "/a/missing"], ["rm", "/a"], ["mkdir", "/a"], ["mkdir", "/missing/x"], ["put", "/etc/hostname", "/a"],
      ["put", "/nonexistent-source", "/a/new"], ["mv", "/a/missing", "/b"], ["mv", "/a", "/a/b/in"], ["ln", "/a", "/a2"],
      ["ln", "/missing", "/x"], ["chmod", "0600", "/missing"], ["chown", "1:1", "/missing"], ["rmxattr", "user.none", "/a/b/g"],
      ["mknod", "/a/b/g", "p"], ["symlink", "t", "/a"], ["setxattr", "user.k", "v", "/missing"], ["copy-up", "/a/missing"],
      ["apply-script", dir.path + "/script"],
    ]
    for argv in failing {
      let r = Harness.run([Self.binary, argv[0], "-o", options] + argv.dropFirst())
      #expect(r.status != 0, "\(argv) [\(extra)] succeeded")
      #expect(snapshot() == before, "\(argv) [\(extra)] changed a never-mounted stack before failing: \(r.stderr)")
    }
    // The first change that succeeds sets the stack up as a first mount would.
    let ok = Harness.run([Self.binary, "mkdir", "-o", options, "/new"])
    #expect(ok.status == 0, "\(ok.stderr)")
    let kernel = Harness.kernelView(options, in: dir)
    #expect(kernel.lines != nil, "the kernel refuses the stack after the first change: \(kernel.mountError)")
    #expect(FileManager.default.fileExists(atPath: work + "/work"))
  }

  /// copy-up looks the whole path up before it copies anything: a missing name or a file
  /// on the way copies no parent up and marks nothing impure (as open(2) resolves first).
  @Test(arguments: ["", "index=on", "index=on,nfs_export=on", "metacopy=on"])
  func failedCopyUpCopiesNoParent(_ extra: String) throws {
    let (dir, base) = try stack()
    let options = base + (extra.isEmpty ? "" : "," + extra)
    let upper = Self.option("upperdir", in: options)
    let work = Self.option("workdir", in: options)
    // A first session sets up what a first mount writes; only then the snapshot.
    let setup = Harness.run([Self.binary, "copy-up", "-o", options, "/w"])
    #expect(setup.status == 0, "\(setup.stderr)")
    func snapshot() -> String { Self.snapshot(upper, work) }
    let before = snapshot()
    var cases = [["/a/missing"], ["/a/b/missing/deeper"], ["/a/b/g/x"]]
    if extra.contains("metacopy") { cases.append(["--metacopy", "/a/b/missing"]) }
    for args in cases {
      let r = Harness.run([Self.binary, "copy-up", "-o", options] + args)
      #expect(r.status != 0 && (r.stderr.contains("No such file") || r.stderr.contains("Not a directory")), "\(args): \(r.stderr)")
      #expect(snapshot() == before, "copy-up \(args) changed the layers")
    }
    _ = dir
  }

  @Test func exitStatusesAndMessages() throws {
    let (dir, options) = try stack()
    func ovltool(_ args: String...) -> Harness.Result { Harness.run([Self.binary] + [args[0], "-o", options] + args.dropFirst()) }
    // Success: 0, nothing printed.
    let ok = ovltool("mkdir", "-p", "/n/e/w")
    #expect(ok.status == 0 && ok.stderr.isEmpty && ok.out.isEmpty, "\(ok.stderr)")
    // A failing path: 1, the path, the reason and the errno; the other paths still done.
    let some = ovltool("rm", "/missing", "/a/b/g")
    #expect(some.status == 1)
    #expect(some.stderr.contains("/missing") && some.stderr.contains("No such file or directory"), "\(some.stderr)")
    #expect(!FileManager.default.fileExists(atPath: dir.path + "/missing"))
    #expect(view(options).allSatisfy { !$0.contains(#""path":"/a/b/g""#) })
    // Errors the kernel gives, by name.
    #expect(ovltool("rm", "/a").stderr.contains("Is a directory"))
    #expect(ovltool("rm", "-d", "/a").stderr.contains("Directory not empty"))
    #expect(ovltool("mkdir", "/a").stderr.contains("File exists"))
    #expect(ovltool("mv", "/a", "/a/b/in").stderr.contains("Invalid argument"))
    #expect(ovltool("mv", "/a", "/elsewhere").stderr.contains("Invalid cross-device link"))  // redirect_dir off
    #expect(ovltool("ln", "/a", "/a2").stderr.contains("Operation not permitted"))
    #expect(ovltool("put", "/etc/hostname", "/a").stderr.contains("Is a directory"))
    // Usage errors: 2, nothing changed.
    for bad in [["chmod", "999", "/a"], ["chown", "x:y", "/a"], ["mknod", "/n", "q"], ["mknod", "/n", "c", "0", "0"], ["touch", "-d", "yesterday", "/a"]] {
      let r = Harness.run([Self.binary, bad[0], "-o", options] + bad.dropFirst())
      #expect(r.status == 2, "\(bad): \(r.status) \(r.stderr)")
    }
    // '..' never leaves the merged root.
    #expect(ovltool("mkdir", "/../escape").status != 0)
    #expect(!FileManager.default.fileExists(atPath: dir.path + "/escape"))
    // A bad source costs nothing: the old contents stay.
    let badSource = ovltool("put", "/", "/a/b/f")
    #expect(badSource.status == 1 && badSource.stderr.contains("source is a directory"), "\(badSource.stderr)")
    #expect(Harness.run([Self.binary, "cat", "-o", options, "/a/b/f"]).out == "hello")
    // put from standard input.
    let r = Harness.run([Self.binary, "put", "-o", options, "-m", "0600", "-", "/from-stdin"], stdin: Data("piped\n".utf8))
    #expect(r.status == 0, "\(r.stderr)")
    let cat = Harness.run([Self.binary, "cat", "-o", options, "/from-stdin"])
    #expect(cat.out == "piped\n")
  }

  /// Symlinks in any layer are never followed: a change below one is refused (ELOOP) and
  /// nothing appears outside the layers. Run in a private mount namespace whose /tmp and
  /// /etc are scratch tmpfs mounts, so a bug could not touch the host's.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and unshare")) func symlinksInLayersAreNeverFollowed() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("ns-hostile")
    let options = try Harness.build("""
      [upper]
      symlink /d /victim
      [lower l1]
      symlink /etc /victim
      dir /ok
      """, in: dir)
    let r = Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", """
      mkdir -p /victim && mount -t tmpfs scratch /victim || exit 3
      for c in "mkdir /d/x" "put /dev/null /etc/passwd" "symlink t /d/s" "mknod /etc/p p" "rm /d/anything" \
               "mv /ok /d/ok" "ln /d /etc/l" "chmod 0777 /d/." "setxattr user.x 1 /etc/x"; do
        set -- $c; cmd=$1; shift; "$OVLTOOL" "$cmd" -o "$OPTS" "$@" 2>&1 || true
      done
      echo "victim: $(ls -A /victim | wc -l)"
      """, "sh"],
      environment: ["OVLTOOL": Self.binary, "OPTS": options])
    #expect(r.out.contains("victim: 0"), "\(r.out) \(r.stderr)")
    #expect(r.out.contains("symbolic links") || r.out.contains("symlink"), "\(r.out)")
    let upper = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/stack/upper").sorted()
    #expect(upper == ["d"], "\(upper)")
  }

  @Test func scriptsAreParsedBeforeAnythingChanges() throws {
    let (dir, options) = try stack()
    let before = view(options)
    let script = dir.path + "/script"
    try "mkdir /x\nrm -r /a\nfrobnicate /y\n".write(toFile: script, atomically: true, encoding: .utf8)
    let bad = Harness.run([Self.binary, "apply-script", "-o", options, script])
    #expect(bad.status == 2 && bad.stderr.contains("line 3") && bad.stderr.contains("frobnicate"), "\(bad.stderr)")
    #expect(view(options) == before)
    // A failing line stops the run (exit 1, naming the line); --keep-going goes on.
    try "mkdir /x\nrm /missing\nmkdir '/y z' # a comment\n".write(toFile: script, atomically: true, encoding: .utf8)
    let stop = Harness.run([Self.binary, "apply-script", "-o", options, script])
    #expect(stop.status == 1 && stop.stderr.contains("script:2: ENOENT"), "\(stop.stderr)")
    #expect(view(options).contains { $0.contains(#""path":"/x""#) } && !view(options).contains { $0.contains(#""path":"/y z""#) })
    try "rm /missing\nmkdir \"/y z\"\n".write(toFile: script, atomically: true, encoding: .utf8)
    let on = Harness.run([Self.binary, "apply-script", "--keep-going", "-o", options, script])
    #expect(on.status == 1)
    #expect(view(options).contains { $0.contains(#""path":"/y z""#) })
  }

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs")) func mountedStacksAreRefused() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let (dir, options) = try stack()
    let r = Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", """
      mkdir -p "$1/m" && mount -t overlay overlay -o "$2" "$1/m" || exit 3
      "$3" rm -o "$2" /a/b/g; echo "rc=$?"
      umount "$1/m"
      """, "sh", dir.path, options, Self.binary])
    #expect(r.out.contains("rc=2"), "\(r.out) \(r.stderr)")
    #expect(r.stderr.contains("mounted"), "\(r.stderr)")
    #expect(view(options).contains { $0.contains(#""path":"/a/b/g""#) })
  }
}
