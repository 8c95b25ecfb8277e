import Foundation
import Testing

/// Mixed writers and fsck on one stack: 8 `apply-script` processes with random mixed
/// scripts (each in its own subtree, plus the same chmod on shared hard links) while
/// `fsck -n` runs in a loop. Every check must be clean (a check waits for the writers and
/// they for it: the stack's lock), the kernel must mount the result, and the result must be
/// what the kernel makes of the scripts one after the other. `OVLTOOL_CONCURRENT_ROUNDS`
/// repeats it with other scripts.
@Suite(.serialized) struct ConcurrencyTests {
  static let writers = 8

  static func script(_ writer: Int, seed: UInt64, data: String) -> String {
    var rng = SplitMix64(seed: seed &+ UInt64(writer))
    let names = ["a", "b", "c"]
    func path() -> String {
      "/s\(writer)/" + (0...Int(rng.below(3))).map { _ in names[Int(rng.below(3))] }.joined(separator: "/")
    }
    var lines: [String] = []
    for i in 0..<150 {
      switch rng.below(10) {
      case 0: lines.append("rm -r \(path())")
      case 1: lines.append("mkdir -p \(path())")
      case 2: lines.append("put \(data) \(path())")
      case 3: lines.append("mv \(path()) \(path())")
      case 4: lines.append("ln \(path()) \(path())")
      case 5: lines.append("chmod 0640 \(path())")
      case 6: lines.append("setxattr user.k v\(i) \(path())")
      case 7: lines.append("symlink target\(i) \(path())")
      case 8: lines.append("rm \(path())")
      default: lines.append("touch -d 1700000000 \(path())")
      }
      if i % 6 == 0 { lines.append("chmod 0600 /shared/\(i % 2 == 0 ? "f" : "h")\((i + writer * 3) % 12)") }
    }
    return lines.joined(separator: "\n") + "\n"
  }

  static var spec: String {
    var spec = "[upper]\n[lower l1]\n"
    for d in 0..<writers {
      spec += "file /s\(d)/a \"\(d) a\"\ndir /s\(d)/b\nfile /s\(d)/b/a \"\(d) b/a\"\nfile /s\(d)/b/c \"\(d) b/c\"\n"
      spec += "dir /s\(d)/c/b\nfile /s\(d)/c/b/a \"\(d) c/b/a\"\nlink /s\(d)/c/a /s\(d)/a\n"
    }
    for f in 0..<12 { spec += "file /shared/f\(f) \"shared \(f)\"\nlink /shared/h\(f) /shared/f\(f)\n" }
    return spec
  }

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs (set OVLTOOL_REQUIRE_KERNEL=1 to fail instead)"))
  func writersAndChecksSideBySide() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    guard Harness.kernelAvailable else { return }
    let environment = ProcessInfo.processInfo.environment
    if let seed = environment["OVLTOOL_CONCURRENT_SEED"].flatMap({ UInt64($0) }) { return try run(seed: seed) }
    let rounds = environment["OVLTOOL_CONCURRENT_ROUNDS"].flatMap { Int($0) } ?? 1
    for round in 0..<rounds { try run(seed: 0xC0_4C_0000 &+ UInt64(round) &* 0x9E37_79B9) }
  }

  func run(seed: UInt64) throws {
    let dir = Harness.TempDir("concurrent")
    let options = try Harness.build(Self.spec, in: dir) + ",index=on,redirect_dir=on"
    let twinDir = Harness.TempDir("concurrent-twin")
    let twin = try Harness.build(Self.spec, in: twinDir) + ",index=on,redirect_dir=on"
    let data = dir.path + "/data"
    try "new\n".write(toFile: data, atomically: true, encoding: .utf8)
    var scripts: [String] = []
    for w in 0..<Self.writers {
      let path = dir.path + "/script\(w)"
      try Self.script(w, seed: seed, data: data).write(toFile: path, atomically: true, encoding: .utf8)
      scripts.append(path)
    }
    // Writers in the background; fsck -n in a loop until they are done, then once more.
    let r = Harness.run(["/bin/sh", "-c", """
      D="$1"; shift
      printf '%s\\n' "$@" | xargs -P 8 -I{} sh -c '"$0" apply-script --keep-going -o "$1" "$2" 2>>"$3/writers.err"; echo "$2 $?" >> "$3/writers.status"' "$OVLTOOL" "$OPTS" {} "$D" &
      writers=$!
      n=0
      while kill -0 $writers 2>/dev/null; do
        "$OVLTOOL" fsck -n -o "$OPTS" > "$D/fsck.out" 2>&1; s=$?
        n=$((n + 1)); [ $s = 0 ] || { echo "fsck run $n: exit $s"; cat "$D/fsck.out"; }
      done
      wait $writers
      "$OVLTOOL" fsck -n -o "$OPTS" > "$D/fsck.out" 2>&1 || { echo "final fsck: exit $?"; cat "$D/fsck.out"; }
      echo "checks $n" >&2
      """, "sh", dir.path] + scripts, environment: ["OVLTOOL": NamespaceTests.binary, "OPTS": options])
    #expect(r.status == 0 && r.out.isEmpty, "fsck beside the writers found something:\n\(r.out)")
    let checks = r.stderr.split(separator: "\n").last.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
    #expect(checks >= 1, "fsck never ran beside the writers: \(r.stderr)")
    let statuses = (try? String(contentsOfFile: dir.path + "/writers.status", encoding: .utf8)) ?? ""
    #expect(statuses.split(separator: "\n").count == Self.writers, "writers: \(statuses)")
    let errors = (try? String(contentsOfFile: dir.path + "/writers.err", encoding: .utf8)) ?? ""
    #expect(!errors.contains("Stale") && !errors.contains("ESTALE") && !errors.contains("internal"), "writers: \(errors)")

    let kernel = Harness.kernelView(options, in: dir)
    #expect(kernel.lines != nil, "the kernel refuses the result: \(kernel.mountError)")
    // The kernel, one script after the other, on the twin stack.
    let k = Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", """
      mkdir -p "$1/m" && mount -t overlay overlay -o "$2" "$1/m" || exit 3
      shift 2; for s in "$@"; do python3 "$DRIVER" "$M" "$s" > /dev/null; done; umount "$M"
      """, "sh", twinDir.path, twin] + scripts, environment: ["DRIVER": Harness.repository + "/Tests/oracle/ovlops.py", "M": twinDir.path + "/m"])
    #expect(k.status == 0, "the kernel's sequential run: \(k.out) \(k.stderr)")
    let test = NamespaceTests()
    let concurrent = test.view(options), sequential = test.view(twin)
    if concurrent != sequential {
      Issue.record("8 concurrent writers (-) vs the kernel one script after the other (+), seed \(seed) (OVLTOOL_CONCURRENT_SEED reruns it):\n\(Harness.diff(concurrent, sequential))\nwriters' exit statuses:\n\(statuses)\nwriters' errors:\n\(errors)")
    }
  }

  /// Links of one indexed inode from 4 processes at once (index=on, a lower hard link):
  /// each `ln` counts the links and links a name while it holds the inode's lock, so the
  /// overlay link count the kernel shows afterwards is exact — 2 lower names plus one per
  /// `ln` — and fsck finds no wrong `nlink`.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs (set OVLTOOL_REQUIRE_KERNEL=1 to fail instead)"))
  func concurrentLinksOfOneInodeKeepItsCount() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    guard Harness.kernelAvailable else { return }
    let dir = Harness.TempDir("concurrent-links")
    let options = try Harness.build("[upper]\n[lower l1]\nfile /f \"shared\"\nlink /h /f\n", in: dir) + ",index=on"
    let r = Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", """
      D="$1"
      for p in 1 2 3 4; do
        for i in 1 2 3 4 5 6 7 8 9 10; do echo "ln /f /n$p-$i"; done > "$D/links$p"
        "$OVLTOOL" apply-script -o "$OPTS" "$D/links$p" 2>>"$D/links.err" &
      done
      wait
      cat "$D/links.err"
      "$OVLTOOL" fsck -n -o "$OPTS" || echo "fsck -n: exit $?"
      mkdir -p "$D/m" && mount -t overlay o -o "ro,$OPTS" "$D/m" || exit 3
      stat -c 'f %h' "$D/m/f"; stat -c 'n %h' "$D/m/n3-7"; umount "$D/m"
      """, "sh", dir.path], environment: ["OVLTOOL": NamespaceTests.binary, "OPTS": options])
    #expect(r.status == 0, "\(r.out) \(r.stderr)")
    #expect(r.out.contains("f 42\n") && r.out.contains("n 42"), "the kernel's st_nlink after 40 concurrent links of a 2-link inode:\n\(r.out)")
  }

  /// A change waits for a running check (the stack lock held exclusive, as fsck holds it)
  /// and says so once; it goes ahead when the check ends.
  @Test func aChangeWaitsForACheck() throws {
    let dir = Harness.TempDir("lock-wait")
    let options = try Harness.build(Self.spec, in: dir)
    let work = options.components(separatedBy: "workdir=")[1].components(separatedBy: ",")[0]
    let r = Harness.run(["/bin/sh", "-c", """
      python3 -c 'import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); open(sys.argv[2], "w").close(); time.sleep(1.5)' "$1" "$2/held" &
      while [ ! -e "$2/held" ]; do sleep 0.05; done
      start=$(date +%s%N); "$OVLTOOL" mkdir -o "$3" /waited; s=$?; end=$(date +%s%N)
      wait; echo "status $s waited $(( (end - start) / 1000000 ))"
      """, "sh", work, dir.path, options], environment: ["OVLTOOL": NamespaceTests.binary])
    #expect(r.stderr.contains("waiting for the ovltool fsck of this stack"), "\(r.stderr)")
    let words = r.out.split(separator: " ")
    #expect(words.count == 4 && words[1] == "0" && (Int(words[3].trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) >= 900, "\(r.out) \(r.stderr)")
  }
}

/// The orphan-index cleanup a change starts with (`ovl_indexdir_cleanup` of a mount) races
/// with another process between its `nlink_start` and `nlink_end`: that process has removed
/// the last name of an indexed inode (the count reads 0) and still holds the inode's lock to
/// remove the entry itself. The cleanup must wait for that lock and look again, not unlink
/// the entry under the other process (which then failed with ESTALE in the 8-writer run).
@Suite struct OrphanCleanupTests {
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs (set OVLTOOL_REQUIRE_KERNEL=1 to fail instead)"))
  func cleanupWaitsForTheInodeLock() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    guard Harness.kernelAvailable else { return }
    let dir = Harness.TempDir("orphan-lock")
    let options = try Harness.build("[upper]\n[lower l1]\nfile /f \"shared\"\nlink /h /f\n", in: dir) + ",index=on"
    let upper = options.components(separatedBy: "upperdir=")[1].components(separatedBy: ",")[0]
    let work = options.components(separatedBy: "workdir=")[1].components(separatedBy: ",")[0]
    // chmod copies /f up into the index; then the state of a process that has just whited
    // out /f and /h (the entry's one link left, its count 0) and still holds the inode lock.
    let r = Harness.run(["/bin/sh", "-c", """
      U="$1"; W="$2"; D="$3"
      "$OVLTOOL" chmod -o "$OPTS" 0600 /f || exit 3
      X=$(ls "$W/index" | head -1); [ -n "$X" ] || exit 4
      rm "$U/f" && mknod "$U/f" c 0 0 && mknod "$U/h" c 0 0
      setfattr -n trusted.overlay.nlink -v U-1 "$W/index/$X" || exit 5
      python3 -c 'import fcntl, os, sys, time
      fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); open(sys.argv[2], "w").close()
      time.sleep(1.0)
      print("while locked:", "present" if os.path.exists(sys.argv[1]) else "gone")
      os.unlink(sys.argv[1]); sys.stdout.flush()' "$W/index/$X" "$D/held" &
      while [ ! -e "$D/held" ]; do sleep 0.05; done
      "$OVLTOOL" mkdir -o "$OPTS" /new; echo "mkdir $?"
      wait
      """, "sh", upper, work, dir.path], environment: ["OVLTOOL": NamespaceTests.binary, "OPTS": options])
    #expect(r.status == 0, "\(r.out) \(r.stderr)")
    #expect(r.out.contains("while locked: present"), "the cleanup removed an index entry whose inode lock another process held:\n\(r.out) \(r.stderr)")
    #expect(r.out.contains("mkdir 0"), "\(r.out) \(r.stderr)")
    #expect(!r.stderr.contains("ESTALE"), "\(r.stderr)")
  }
}
