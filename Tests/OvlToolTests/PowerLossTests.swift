import Foundation
import Testing

/// Power loss, not only process death (issue 14, item 4): ovltool works on a small ext4 or
/// xfs filesystem whose every write goes through device-mapper's log-writes target; after
/// each ovltool call the test marks the log. Then the log is replayed, entry by entry, onto
/// a copy of the device as it was when logging started, and every flush, FUA and mark is a
/// state a power loss could leave: each must mount, the kernel must mount the overlay on
/// it, `ovltool fsck -p` then `-n` must find it clean, so must the filesystem's own fsck,
/// and the merged view must hold every call that completed before it (at a mark: exactly
/// the view after that call; between two marks: each path as before or as after the call
/// in progress). As xfstests' generic/482 does it, with our own replayer
/// (Tests/powerloss/logreplay.py).
///
/// Needs a kernel with device-mapper and dm-log-writes (`dmsetup targets`); without, it
/// skips, also under OVLTOOL_REQUIRE_KERNEL=1: a missing kernel feature, not a missing
/// mount. `scripts/powerloss-vm.sh` runs it in a guest whose kernel has them.
/// OVLTOOL_POWERLOSS_KEEP=DIR keeps a copy of each run's dir (images, log, views).
@Suite(.serialized) struct PowerLossTests {
  static let replayer = Harness.repository + "/Tests/powerloss/logreplay.py"

  static let logWritesAvailable: Bool = {
    guard getuid() == 0 else { return false }
    let r = Harness.run(["/bin/sh", "-c", "modprobe -q dm-log-writes 2>/dev/null; dmsetup targets 2>/dev/null"])
    return r.status == 0 && r.out.split(separator: "\n").contains { $0.hasPrefix("log-writes ") }
  }()

  static let stackOptions = "index=on,redirect_dir=on"

  /// One ovltool call of the script: its arguments after the command name's options.
  struct Call {
    var command: [String]
    /// Whether the call's changes reach the merged view at once (a rename publishes them);
    /// an apply publishes entry by entry.
    var atomic = true
  }

  /// Copy-up, whiteout, new directory, new file, a directory moved (redirect), a hard link
  /// under index=on, a directory removed, a layer applied.
  static let calls: [Call] = [
    Call(command: ["copy-up", "/a/file1"]),
    Call(command: ["rm", "/a/gone"]),
    Call(command: ["mkdir", "/newdir"]),
    Call(command: ["put", "$D/newfile", "/newdir/data"]),
    Call(command: ["mv", "/dir1", "/dir1moved"]),
    Call(command: ["ln", "/a/file2", "/a/file2link"]),
    Call(command: ["rm", "-r", "/dir2"]),
    Call(command: ["apply", "$D/layer.tar"], atomic: false),
  ]

  @Test(
    .enabled(
      if: logWritesAvailable,
      "device-mapper's log-writes target is not in `dmsetup targets` (a missing kernel feature, not a missing mount: skipped even with OVLTOOL_REQUIRE_KERNEL=1; scripts/powerloss-vm.sh runs this in a guest that has it)"),
    arguments: ["ext4", "xfs"])
  func everyFlushStateHoldsTheCompletedCalls(_ fs: String) throws {
    let dir = Harness.TempDir("powerloss")
    let device = "ovltool-pl-\(getpid())-\(fs)"
    defer {
      // The recording script cleans up after itself; this is for a test killed half-way.
      Harness.run(["/bin/sh", "-c", "dmsetup remove --noudevsync \"$1\" 2>/dev/null; for l in $(cat \"$2/loops\" 2>/dev/null); do losetup -d $l 2>/dev/null; done; true", "sh", device, dir.path])
      if let keep = ProcessInfo.processInfo.environment["OVLTOOL_POWERLOSS_KEEP"] {
        Harness.run(["/bin/sh", "-c", "mkdir -p \"$2\" && cp -a \"$1\" \"$2/\"", "sh", dir.path, keep])
      }
    }
    let recorded = Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", Self.record, "sh", dir.path, fs, device, Harness.ovltool, Harness.walker, Self.stackOptions] + Self.calls.map { $0.command.joined(separator: " ") })
    try #require(recorded.status == 0, "recording on \(fs) failed (\(recorded.status)):\n\(recorded.out)\(recorded.stderr)")
    var views: [[String: String]] = []
    for k in 0...Self.calls.count {
      let text = try String(contentsOfFile: dir.path + "/view-\(k).txt", encoding: .utf8)
      views.append(Self.byPath(text))
    }

    let listed = Harness.run(["/usr/bin/python3", Self.replayer, "list", dir.path + "/log.img"])
    try #require(listed.status == 0, "\(listed.stderr)")
    let entries = listed.out.split(separator: "\n").dropFirst().map { $0.split(separator: " ", maxSplits: 4).map(String.init) }
    try #require(entries.contains { $0.count == 5 && $0[4] == "call-\(Self.calls.count)" }, "the log has no mark of the last call:\n\(listed.out.suffix(2000))")

    // The states: every flush, FUA and mark. OVLTOOL_POWERLOSS_MAX_STATES=N (a slow
    // guest) keeps every mark and N flush/FUA states spread evenly over the log.
    let points = entries.filter { $0.count >= 4 && Int($0[0]) != nil && ($0[1].contains("F") || $0[1].contains("U") || $0[1].contains("M")) }
    var chosen = Set(points.indices)
    if let max = ProcessInfo.processInfo.environment["OVLTOOL_POWERLOSS_MAX_STATES"].flatMap({ Int($0) }), max > 0 {
      let flushes = points.indices.filter { !points[$0][1].contains("M") }
      let stride = Swift.max(1, (flushes.count + max - 1) / max)
      chosen = Set(points.indices.filter { points[$0][1].contains("M") })
      for (n, i) in flushes.enumerated() where n % stride == 0 || n == flushes.count - 1 { chosen.insert(i) }
    }
    var completed = 0
    var applied = -1
    var states = 0
    var failures = 0
    for (n, entry) in points.enumerated() {
      guard let index = Int(entry[0]) else { continue }
      let flags = entry[1]
      let mark = entry.count == 5 ? entry[4] : nil
      if let mark, mark.hasPrefix("call-"), let k = Int(mark.dropFirst(5)) { completed = k }
      guard chosen.contains(n) else { continue }
      let label = "\(fs) entry \(index) (\(flags)\(mark.map { " " + $0 } ?? ""), \(completed) calls done)"
      // An apply cut short is reported by fsck until the same layer is applied again
      // (ApplyJournal): the check does that and looks at the view it completes.
      let inProgress = completed < Self.calls.count ? Self.calls[completed] : nil
      let reapply = inProgress.map { $0.command.first == "apply" ? $0.command.joined(separator: " ") : "" } ?? ""
      let r = Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", Self.check, "sh", dir.path, fs, Harness.ovltool, Harness.walker, Self.stackOptions, Self.replayer, String(applied + 1), String(index), reapply])
      applied = index
      states += 1
      if states % 25 == 0 || mark != nil { Self.progress("power loss on \(fs): \(states) states checked, entry \(index) of \(entries.count), \(failures) failed") }
      let problems = Self.problems(r, views: views, completed: completed, exact: mark == "call-\(completed)" || mark == "start")
      if !problems.isEmpty {
        failures += 1
        if failures <= 5 { Issue.record("\(label):\n\(problems.joined(separator: "\n"))") }
      }
    }
    print("power loss on \(fs): \(states) replayed states (of \(points.count) flush/FUA/mark entries, \(entries.count) log entries), \(failures) failed")
    #expect(states > Self.calls.count)
    #expect(failures == 0, "\(failures) of \(states) states failed on \(fs)")
  }

  /// The replayer on a log written here by hand: writes land at their sectors, a discard
  /// zeros its range, replaying stops at the entry asked for, marks are listed by name.
  @Test func replayerFollowsTheLogFormat() throws {
    let dir = Harness.TempDir("powerloss")
    func le(_ value: UInt64, _ bytes: Int = 8) -> [UInt8] { (0..<bytes).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) } }
    func sector(_ bytes: [UInt8]) -> [UInt8] { bytes + [UInt8](repeating: 0, count: 512 - bytes.count) }
    func entry(_ at: UInt64, _ count: UInt64, _ flags: UInt64, _ data: [UInt8] = [], mark: String = "") -> [UInt8] {
      let name = Array(mark.utf8)
      return sector(le(at) + le(count) + le(flags) + le(UInt64(mark.isEmpty ? 0 : name.count)) + name) + data
    }
    let a = [UInt8](repeating: 0x61, count: 1024), b = [UInt8](repeating: 0x62, count: 512)
    var log = sector(le(0x6a736677736872) + le(1) + le(5) + le(512, 4))
    log += entry(2, 2, 0, a)  // sectors 2-3: a
    log += entry(1, 1, 2, b)  // FUA, sector 1: b
    log += entry(2, 1, 4)  // discard sector 2
    log += entry(0, 0, 8, mark: "one")
    log += entry(0, 0, 1)  // flush
    try Data(log).write(to: URL(fileURLWithPath: dir.path + "/log"))
    try Data([UInt8](repeating: 0x7A, count: 4096)).write(to: URL(fileURLWithPath: dir.path + "/image"))
    let listed = Harness.run(["/usr/bin/python3", Self.replayer, "list", dir.path + "/log"])
    #expect(listed.out == "sectorsize 512 entries 5\n0 - 2 2\n1 U 1 1\n2 D 2 1\n3 M 0 0 one\n4 F 0 0\n", "\(listed.stderr)")
    let first = Harness.run(["/usr/bin/python3", Self.replayer, "replay", dir.path + "/log", dir.path + "/image", "0", "1"])
    #expect(first.status == 0, "\(first.stderr)")
    var image = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir.path + "/image")))
    #expect(Array(image[0..<512]) == [UInt8](repeating: 0x7A, count: 512) && Array(image[512..<1024]) == b && Array(image[1024..<2048]) == a && image[2048] == 0x7A)
    let rest = Harness.run(["/usr/bin/python3", Self.replayer, "replay", dir.path + "/log", dir.path + "/image", "2", "4"])
    #expect(rest.status == 0, "\(rest.stderr)")
    image = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir.path + "/image")))
    #expect(Array(image[1024..<1536]) == [UInt8](repeating: 0, count: 512) && Array(image[1536..<2048]) == Array(a[512...]))
    try Data(log.prefix(512 * 3)).write(to: URL(fileURLWithPath: dir.path + "/short"))
    let short = Harness.run(["/usr/bin/python3", Self.replayer, "replay", dir.path + "/short", dir.path + "/image", "0", "4"])
    #expect(short.status == 1 && short.stderr.contains("log ends inside its data"), "\(short.stderr)")
  }

  /// A line on standard error at once (a run in a slow guest shows how far it got).
  static func progress(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
  }

  /// What is wrong with one replayed state, from the check script's output.
  static func problems(_ r: Harness.Result, views: [[String: String]], completed: Int, exact: Bool) -> [String] {
    var problems: [String] = []
    let out = r.out
    func value(_ key: String) -> String? {
      out.split(separator: "\n").first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
    }
    guard r.status == 0, let view = value("view") else {
      return ["check failed (\(r.status)): \(out.suffix(3000))\(r.stderr.suffix(2000))"]
    }
    if value("mount") != "0" { return ["the filesystem does not mount: \(out.suffix(2000))"] }
    if value("overlay") != "0" { return ["the kernel does not mount the overlay: \(out.suffix(2000))"] }
    if value("walk") != "0" { problems.append("the merged view cannot be read: \(view.suffix(2000))") }
    if let p = value("fsckp"), p != "0" && p != "1" {
      if let again = value("reapply") {
        // The interrupted apply, applied again: clean, and the view the apply makes.
        if again != "0" { problems.append("the interrupted apply, applied again, exited \(again): \(value("reapply-out") ?? "")") }
        let completedView = byPath((value("view2") ?? "").replacingOccurrences(of: "\u{1}", with: "\n"))
        let after = views[min(completed + 1, views.count - 1)]
        if maskDirTimes(completedView) != maskDirTimes(after) {
          problems.append("the interrupted apply, applied again, does not give the view after it (directory mtimes aside):\n\(describe(completedView, after))")
        }
      } else {
        problems.append("ovltool fsck -p exited \(p): \(value("fsckp-out") ?? "")")
      }
    }
    if value("fsckn") != "0" { problems.append("ovltool fsck -n after -p exited \(value("fsckn") ?? "?"): \(value("fsckn-out") ?? "")") }
    if value("fsck") != "0" { problems.append("the filesystem's fsck exited \(value("fsck") ?? "?"): \(value("fsck-out") ?? "")") }
    let seen = byPath(view.replacingOccurrences(of: "\u{1}", with: "\n"))
    let before = views[completed]
    if exact {
      if seen != before { problems.append("merged view is not the one after call \(completed):\n\(describe(seen, before))") }
    } else {
      let after = views[min(completed + 1, views.count - 1)]
      let atomic = completed < calls.count ? calls[completed].atomic : true
      let masked = (seen: maskDirTimes(seen), before: maskDirTimes(before), after: maskDirTimes(after))
      if atomic && masked.seen != masked.before && masked.seen != masked.after {
        problems.append("merged view is neither the one after call \(completed) nor after the next (directory mtimes aside):\n\(describe(seen, before))")
      }
      for path in Set(masked.seen.keys).union(masked.before.keys).union(masked.after.keys) {
        let s = masked.seen[path], b = masked.before[path], a = masked.after[path]
        if s != b && s != a {
          problems.append("\(path): \(s ?? "missing"), was \(b ?? "missing") after call \(completed), \(a ?? "missing") after the next")
        }
      }
    }
    return Array(problems.prefix(12))
  }

  static func byPath(_ text: String) -> [String: String] {
    var result: [String: String] = [:]
    for line in text.split(separator: "\n") where line.hasPrefix("{\"path\":\"") {
      let rest = line.dropFirst(9)
      guard let end = rest.firstIndex(of: "\"") else { continue }
      result[String(rest[..<end])] = String(line)
    }
    return result
  }

  static func maskDirTimes(_ view: [String: String]) -> [String: String] {
    view.mapValues { line in
      line.contains(#""type":"dir""#) ? line.replacingOccurrences(of: #","mtime":[0-9]+"#, with: "", options: .regularExpression) : line
    }
  }

  static func describe(_ seen: [String: String], _ expected: [String: String]) -> String {
    var out: [String] = []
    for (path, line) in expected.sorted(by: { $0.key < $1.key }) where seen[path] != line {
      out.append("- expected: \(line)")
      if let s = seen[path] { out.append("+ replayed: \(s)") }
    }
    for (path, line) in seen.sorted(by: { $0.key < $1.key }) where expected[path] == nil { out.append("+ replayed: \(line)") }
    return out.prefix(30).joined(separator: "\n")
  }

  /// Run in a private mount namespace: $1 dir, $2 fs, $3 dm name, $4 ovltool, $5 walker,
  /// $6 extra stack options, then one ovltool call per argument (`$D` is the dir).
  /// Makes the filesystem with the lower layer and the stack's dirs, keeps a copy of it
  /// (base.img: the replay starts there), logs every write from then on, and after each
  /// call writes the kernel's merged view (view-K.txt; view-0.txt before the first) and
  /// marks the log `call-K`.
  static let record = #"""
    set -eu
    D=$1 FS=$2 NAME=$3 OVLTOOL=$4 WALKER=$5 EXTRA=$6
    shift 6
    cd "$D"
    M=$D/m
    mkdir m o s
    cleanup() {
      umount o 2>/dev/null || true
      umount m 2>/dev/null || true
      dmsetup remove --noudevsync "$NAME" 2>/dev/null || true
      for l in $(cat loops 2>/dev/null); do losetup -d "$l" 2>/dev/null || true; done
      rm -f loops
    }
    trap cleanup EXIT
    truncate -s 128M data.img
    truncate -s 1G log.img
    case $FS in
      ext4) mkfs.ext4 -q -F data.img ;;
      xfs) TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -f data.img ;;
    esac
    mount -o loop data.img m
    mkdir -p m/l/a m/l/dir1/y m/l/dir2/sub m/u m/w
    head -c 300000 /dev/urandom > m/l/a/file1
    echo gone > m/l/a/gone
    head -c 70000 /dev/urandom > m/l/a/file2
    echo x > m/l/dir1/x; echo z > m/l/dir1/y/z; echo q > m/l/dir2/q; echo r > m/l/dir2/sub/r
    umount m
    cp --sparse=always data.img base.img
    head -c 50000 /dev/urandom > newfile
    python3 - <<'EOF'
    import io, os, tarfile
    with tarfile.open("layer.tar", "w", format=tarfile.PAX_FORMAT) as t:
        def add(name, data=None, kind=tarfile.REGTYPE, mode=0o644):
            info = tarfile.TarInfo(name); info.type = kind; info.mode = mode; info.mtime = 1700000000
            if data is not None: info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
        add("etc", kind=tarfile.DIRTYPE, mode=0o755)
        add("etc/conf", b"conf\n")
        add("etc/sub", kind=tarfile.DIRTYPE, mode=0o755)
        add("etc/sub/deep", os.urandom(100000))
        add("a/.wh.file1", b"")
        add("dir1moved/new", b"new\n")
    EOF
    data=$(losetup -f --show data.img)
    echo "$data" > loops
    log=$(losetup -f --show log.img)
    echo "$log" >> loops
    dmsetup create --noudevsync "$NAME" --table "0 $(blockdev --getsz "$data") log-writes $data $log"
    [ -b "/dev/mapper/$NAME" ] || dmsetup mknodes "$NAME"
    dmsetup message "$NAME" 0 mark start
    mount "/dev/mapper/$NAME" m
    OPTS="lowerdir=$M/l,upperdir=$M/u,workdir=$M/w,$EXTRA"
    view() {
      mount -t overlay overlay -o "ro,$OPTS" o
      python3 "$WALKER" o --hash > "view-$1.txt"
      umount o
    }
    view 0
    k=0
    for call in "$@"; do
      k=$((k + 1))
      set -- $(echo "$call" | sed "s|\\\$D|$D|g")
      cmd=$1; shift
      if ! "$OVLTOOL" "$cmd" -o "$OPTS" "$@" > "call-$k.out" 2>&1; then
        echo "call $k ($call) failed:"; cat "call-$k.out"; exit 1
      fi
      view "$k"
      dmsetup message "$NAME" 0 mark "call-$k"
    done
    umount m
    dmsetup remove --noudevsync "$NAME"
    cp --sparse=always base.img replay.img
    """#

  /// Run in a private mount namespace: $1 dir, $2 fs, $3 ovltool, $4 walker, $5 extra
  /// stack options, $6 replayer, $7 $8 the log entries to replay onto replay.img, $9 the
  /// apply in progress (or empty). Checks a copy of the state they leave; prints key=value
  /// lines (the view's lines joined by \1).
  static let check = #"""
    D=$1 FS=$2 OVLTOOL=$3 WALKER=$4 EXTRA=$5 REPLAYER=$6
    cd "$D" || exit 2
    python3 "$REPLAYER" replay log.img replay.img "$7" "$8" || exit 2
    cp --sparse=always replay.img state.img || exit 2
    trap 'umount o 2>/dev/null; umount s 2>/dev/null; rm -f state.img' EXIT
    M=$D/s
    OPTS="lowerdir=$M/l,upperdir=$M/u,workdir=$M/w,$EXTRA"
    one() { tr '\n' '\1' < "$1" | head -c 6000; echo; }
    if ! mount -o loop state.img s 2>mount.err; then echo "mount=1"; one mount.err; echo view=; exit 0; fi
    echo mount=0
    if ! mount -t overlay overlay -o "ro,$OPTS" o 2>overlay.err; then
      echo overlay=1; one overlay.err; dmesg 2>/dev/null | grep overlayfs | tail -2; echo view=; exit 0
    fi
    echo overlay=0
    python3 "$WALKER" o --hash > view.txt 2>&1; echo "walk=$?"
    printf 'view='; tr '\n' '\1' < view.txt; echo
    umount o
    "$OVLTOOL" fsck -p -o "$OPTS" > fsck.out 2>&1; p=$?; echo "fsckp=$p"; printf 'fsckp-out='; one fsck.out
    if [ "$p" = 4 ] && [ -n "${9:-}" ] && grep -q "/ovltool-apply: an ovltool apply of layer" fsck.out; then
      set -- $(echo "$9" | sed "s|\\\$D|$D|g")
      cmd=$1; shift
      "$OVLTOOL" "$cmd" -o "$OPTS" "$@" > again.out 2>&1; echo "reapply=$?"; printf 'reapply-out='; one again.out
      if mount -t overlay overlay -o "ro,$OPTS" o 2>>overlay.err; then
        printf 'view2='; python3 "$WALKER" o --hash | tr '\n' '\1'; echo
        umount o
      fi
    fi
    "$OVLTOOL" fsck -n -o "$OPTS" > fsck.out 2>&1; echo "fsckn=$?"; printf 'fsckn-out='; one fsck.out
    umount s
    case $FS in
      ext4) e2fsck -fn state.img > fsck.out 2>&1 ;;
      xfs) xfs_repair -n -f state.img > fsck.out 2>&1 ;;
    esac
    echo "fsck=$?"; printf 'fsck-out='; one fsck.out
    exit 0
    """#
}
