import Foundation
import OvlSystem
import Testing

/// A randomized kernel-differential test. Each stack starts from a base lower layer made by
/// plain file operations, then goes through 1–3 rounds in which the kernel mounts the layers
/// so far read-write (newest first) with a fresh upper and work dir and a random sequence of
/// operations runs through the mount; the round's upper is the top lower of the next round.
/// After every round ovltool's view of the lower-only stack is compared with the kernel's
/// read-only view, and after the last round also the view with the last upper and work dir
/// as the upper. One option set (a random combination of index, redirect_dir, metacopy,
/// nfs_export, xino, uuid, userxattr) is used for every mount of a stack, so that redirects
/// and metacopy files are read the way they were written; combinations the kernel refuses
/// must be refused by ovltool as well. A third of the stacks are read once more with another
/// random option set (not following what was written, switching index or xino, ...).
///
/// `OVLTOOL_RANDOM_SEED` (decimal or 0x-hex) picks the seed, `OVLTOOL_RANDOM_ROUNDS` the number
/// of stacks. Every stack has its own seed (the first one SEED itself), so a failing stack is
/// replayed alone with `OVLTOOL_RANDOM_SEED=<its seed> OVLTOOL_RANDOM_ROUNDS=1`. With
/// `OVLTOOL_RANDOM_KEEP=DIR` the layers and operation scripts of a failing stack are kept
/// there (snapshotted before the kernel's read-only view touches them, plus the layers
/// themselves, moved, since index=on stacks need the original inodes). For exploring:
/// `OVLTOOL_RANDOM_OPTIONS=a=b,c` (or `defaults`) fixes the options of every stack, and
/// `OVLTOOL_RANDOM_AVOID=index=on,nfs_export=on,hardlink,reread` never picks those option
/// items (nor hard links, nor the second read with other options). `OVLTOOL_RANDOM_VERBOSE=1` prints one line per stack.
@Suite(.serialized) struct RandomViewTests {
  static let defaultSeed: UInt64 = 0x0_7715_2025
  static let defaultStacks = 16
  /// Stacks that once differed from the kernel, run every time after the default ones:
  /// 11331598911062711883 — a metacopy upper hard-linked through the index showed its own
  /// inode number instead of its origin's (the index vouches for it, `OVL_INDEX`).
  static let regressionSeeds: [UInt64] = [11_331_598_911_062_711_883]

  static var env: [String: String] { ProcessInfo.processInfo.environment }

  static var seed: UInt64 {
    guard let text = env["OVLTOOL_RANDOM_SEED"]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else {
      return defaultSeed
    }
    if text.hasPrefix("0x") || text.hasPrefix("0X") { return UInt64(text.dropFirst(2), radix: 16) ?? defaultSeed }
    return UInt64(text) ?? defaultSeed
  }

  static var stacks: Int {
    env["OVLTOOL_RANDOM_ROUNDS"].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }.map { max(0, $0) } ?? defaultStacks
  }

  /// Stack 0 uses the seed itself (so that a printed stack seed replays with ROUNDS=1), the
  /// others the outputs of a SplitMix64 seeded with it (never `seed + i*γ`: SplitMix64 streams
  /// of seeds γ apart are the same stream shifted by one).
  static func stackSeeds(_ base: UInt64, _ n: Int) -> [UInt64] {
    var master = SplitMix64(seed: base)
    return (0..<n).map { $0 == 0 ? base : master.next() }
  }

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs (set OVLTOOL_REQUIRE_KERNEL=1 to fail instead)"))
  func randomStacksMatchKernel() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    guard Harness.kernelAvailable else { return }
    let base = Self.seed
    var stats = Stats()
    let regressions = Self.env["OVLTOOL_RANDOM_SEED"] == nil ? Self.regressionSeeds : []
    for stackSeed in Self.stackSeeds(base, Self.stacks) + regressions {
      var stack = RandomStack(seed: stackSeed)
      stack.run(&stats)
    }
    print("RandomViewTests: seed \(String(base, radix: 16)) stacks \(Self.stacks): \(stats.summary)")
  }
}

extension RandomViewTests {
  // MARK: - PRNG


  // MARK: - Statistics

  struct Stats {
    var stacks = 0
    var layers = 0
    var comparisons = 0
    var mismatches = 0
    var refusedCombos: Set<String> = []
    var acceptedCombos: [String: Int] = [:]
    var operations = 0
    var failedOperations = 0

    var summary: String {
      let combos = acceptedCombos.sorted { $0.key < $1.key }.map { "  \($0.value)× [\($0.key)]" }.joined(separator: "\n")
      return """
        \(stacks) stacks, \(layers) layers, \(comparisons) view comparisons, \(mismatches) mismatches, \
        \(operations) operations (\(failedOperations) failed in the kernel, expected for some), \
        \(refusedCombos.count) refused option combinations: \(refusedCombos.sorted().map { "[\($0)]" }.joined(separator: " "))
        accepted option combinations:
        \(combos)
        """
    }
  }

  // MARK: - One stack

  struct RandomStack {
    let seed: UInt64
    var rng: SplitMix64
    let dir = Harness.TempDir("random")
    var options = ""
    var userxattr = false
    var model = Model()
    var scripts: [String] = []
    /// Where to move the layers after the last comparison (OVLTOOL_RANDOM_KEEP, a mismatch
    /// with an upper): copies get new inode numbers, so index=on stacks need the originals.
    var pendingMove: String?

    init(seed: UInt64) {
      self.seed = seed
      rng = SplitMix64(seed: seed)
    }

    var replay: String { "OVLTOOL_RANDOM_SEED=\(seed) OVLTOOL_RANDOM_ROUNDS=1" }

    mutating func run(_ stats: inout Stats) {
      defer {
        if let pendingMove {
          Harness.run(["/bin/sh", "-c", "rm -rf \"$2\" && mkdir -p \"$2\" && mv \"$1\"/* \"$2\"/", "sh", dir.path, pendingMove])
        }
      }
      stats.stacks += 1
      guard chooseOptions(&stats) else { return }
      stats.acceptedCombos[options, default: 0] += 1
      let rounds = rng.between(2, 4)

      // Round 1: the base lower layer, by plain file operations.
      let base = dir.path + "/l1"
      mkdir(base)
      var generator = OpGenerator(rng: rng, model: model, throughMount: false, userxattr: userxattr)
      generator.generate(count: rng.between(25, 70))
      generator.finishBase()
      (rng, model) = (generator.rng, generator.model)
      stats.operations += generator.count
      let baseScript = OpGenerator.prelude + "cd \"$1\" || exit 1\numask 022\n" + generator.lines.joined(separator: "\n") + "\n"
      scripts.append(baseScript)
      let r = Harness.run(["/bin/sh", "-c", baseScript, "sh", base])
      stats.failedOperations += r.out.split(separator: "\n").filter { $0.hasPrefix("OPFAIL") }.count
      var layers = [base]  // bottom first
      stats.layers += 1

      for round in 2...rounds {
        let upper = dir.path + "/u\(round)"
        let work = dir.path + "/w\(round)"
        mkdir(upper)
        mkdir(work)
        let mountOptions = "lowerdir=\(layers.reversed().joined(separator: ":")),upperdir=\(upper),workdir=\(work)" + (options.isEmpty ? "" : "," + options)
        var gen = OpGenerator(rng: rng, model: model, throughMount: true, userxattr: userxattr)
        gen.generate(count: rng.between(20, 80))
        (rng, model) = (gen.rng, gen.model)
        stats.operations += gen.count
        let mnt = dir.path + "/mnt"
        mkdir(mnt)
        let script = OpGenerator.prelude + """
          mount -t overlay overlay -o "$1" "$2" 2>/dev/null || { echo MOUNTFAIL; dmesg 2>/dev/null | grep overlayfs | tail -1; exit 0; }
          trap 'cd /; umount "$2" 2>/dev/null' EXIT
          cd "$2" || exit 1
          umask \(rng.pick(["022", "022", "000", "077", "027"]))

          """ + gen.lines.joined(separator: "\n") + """

          cd /
          umount "$2" || umount -l "$2"
          echo DONE

          """
        scripts.append(script)
        let result = Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh", mountOptions, mnt])
        stats.failedOperations += result.out.split(separator: "\n").filter { $0.hasPrefix("OPFAIL") }.count
        if result.out.hasPrefix("MOUNTFAIL") {
          // The option probe accepted these options; the layers made the mount fail.
          let ours = Harness.ovltoolView(mountOptions, hash: false)
          if case .success = ours {
            Issue.record("kernel refused the read-write mount of round \(round) (\(result.out.dropFirst(10).trimmingCharacters(in: .whitespacesAndNewlines))) but ovltool accepts the stack\nreplay: \(replay)\noptions: \(options)")
            keep("round\(round)-mountfail")
          }
          return
        }
        if !result.out.contains("DONE") {
          Issue.record("round \(round) script did not finish (status \(result.status)): \(result.stderr.prefix(2000))\nreplay: \(replay)")
          return
        }
        layers.append(upper)
        stats.layers += 1
        // fsck: what the kernel made is clean (the base layer, made by hand with stray
        // whiteouts and xattrs, is not the kernel's). One exception is the kernel's own:
        // with index=on,userxattr it indexes devices and symlinks it cannot give an origin,
        // then refuses to mount (ENODATA), and fsck rightly says so.
        let problems = FsckSupport.problems(mountOptions).filter {
          !$0.contains(" \(base): ") && !$0.contains("without origin (user xattrs cannot be set on it)")
        }
        if !problems.isEmpty {
          Issue.record("fsck -n finds problems in a kernel-made stack (round \(round)):\n\(problems.prefix(10).joined(separator: "\n"))\nreplay: \(replay)\noptions: \(options)")
          keep("round\(round)-fsck")
        }

        // Lower-only view of the stack so far: the kernel never writes to it.
        let lowerOnly = "lowerdir=\(layers.reversed().joined(separator: ":"))" + (options.isEmpty ? "" : "," + options)
        compare(lowerOnly, label: "round \(round)/\(rounds), lower-only", snapshotFirst: false, &stats)

        if round == rounds {
          if RandomViewTests.environment("OVLTOOL_RANDOM_VERBOSE") != nil {
            print("stack \(seed): \(rounds) rounds, options [\(options)], \(stats.operations) operations so far")
            if RandomViewTests.environment("OVLTOOL_RANDOM_KEEP") != nil { keep("all") }
          }
          // The last upper as upper: the kernel's read-only mount writes xattrs, so
          // ovltool goes first (inside compare) and the snapshot before both.
          compare(mountOptions, label: "round \(round)/\(rounds), last upper as upper", snapshotFirst: true, &stats)

          // Sometimes read the stack once more with other options (redirects or metacopy
          // files that must not be followed, index or xino switched): errors must match too.
          let avoid = Set((RandomViewTests.environment("OVLTOOL_RANDOM_AVOID") ?? "").split(separator: ",").map(String.init))
          if rng.chance(35) && !avoid.contains("reread") {
            let other = randomOptionParts().filter { !avoid.contains($0) }.joined(separator: ",")
            let suffix = other.isEmpty ? "" : "," + other
            compare("lowerdir=\(layers.reversed().joined(separator: ":"))" + suffix,
                    label: "round \(round)/\(rounds), lower-only, read with [\(other)]", snapshotFirst: false, &stats)
            compare("lowerdir=\(layers.dropLast().reversed().joined(separator: ":")),upperdir=\(upper),workdir=\(work)" + suffix,
                    label: "round \(round)/\(rounds), last upper as upper, read with [\(other)]", snapshotFirst: true, &stats)
          }
        }
      }
    }

    mutating func randomOptionParts() -> [String] {
      var parts: [String] = []
      func maybe(_ key: String, _ values: [String], _ percent: Int, _ rng: inout SplitMix64) {
        if rng.chance(percent) { parts.append("\(key)=\(rng.pick(values))") }
      }
      maybe("redirect_dir", ["on", "on", "follow", "nofollow", "off"], 60, &rng)
      maybe("metacopy", ["on", "on", "off"], 50, &rng)
      maybe("index", ["on", "off"], 45, &rng)
      maybe("nfs_export", ["on", "off"], 25, &rng)
      maybe("xino", ["on", "off", "auto"], 35, &rng)
      maybe("uuid", ["on", "off", "null", "auto"], 35, &rng)
      if rng.chance(20) { parts.append("userxattr") }
      // Shuffle (the kernel applies options in order, but the rules are order-free).
      for i in stride(from: parts.count - 1, to: 0, by: -1) { parts.swapAt(i, rng.below(i + 1)) }
      return parts
    }

    /// Picks a random option combination; combinations the kernel refuses must be refused by
    /// ovltool too (checked on a tiny probe stack with an upper), then another is tried.
    mutating func chooseOptions(_ stats: inout Stats) -> Bool {
      let probe = dir.path + "/probe"
      for attempt in 0..<8 {
        var parts = randomOptionParts()
        if let fixed = RandomViewTests.environment("OVLTOOL_RANDOM_OPTIONS") {
          parts = fixed == "defaults" ? [] : fixed.split(separator: ",").map(String.init)
        }
        let avoid = Set((RandomViewTests.environment("OVLTOOL_RANDOM_AVOID") ?? "").split(separator: ",").map(String.init))
        if parts.contains(where: avoid.contains) { continue }
        let candidate = parts.joined(separator: ",")

        let p = probe + "\(attempt)"
        for sub in ["l1", "l2", "u", "w"] { mkdir(p + "/" + sub) }
        FileManager.default.createFile(atPath: p + "/l1/f", contents: Data("f".utf8))
        mkdir(p + "/l2/d")
        let probeOptions = "lowerdir=\(p)/l1:\(p)/l2,upperdir=\(p)/u,workdir=\(p)/w" + (candidate.isEmpty ? "" : "," + candidate)
        let ours = Harness.ovltoolView(probeOptions, hash: true, ino: true)
        let kernel = Harness.kernelView(probeOptions, in: dir, hash: true, ino: true)
        stats.comparisons += 1
        if Self.differs(ours, kernel) { stats.mismatches += 1 }
        Harness.compare(ours, kernel, spec: "option probe (two lowers, empty upper)\noptions: \(candidate)\nreplay: \(replay)")
        if kernel.lines != nil {
          options = candidate
          userxattr = parts.contains("userxattr")
          return true
        }
        stats.refusedCombos.insert(candidate)
      }
      return false
    }

    static func differs(_ ours: Swift.Result<[String], OvlError>, _ kernel: Harness.KernelView) -> Bool {
      switch (ours, kernel.lines) {
      case (.failure, nil): return false
      case (.success(let a), .some(let b)): return a != b
      default: return true
      }
    }

    mutating func compare(_ stackOptions: String, label: String, snapshotFirst: Bool, _ stats: inout Stats) {
      let keepRoot = RandomViewTests.environment("OVLTOOL_RANDOM_KEEP")
      var snapshot: String?
      if snapshotFirst, let keepRoot {
        snapshot = keepRoot + "/\(seed)-\(label.filter { $0.isLetter || $0.isNumber })"
        Harness.run(["/bin/sh", "-c", "rm -rf \"$2\" && mkdir -p \"$2\" && cp -a \"$1\"/. \"$2\"/", "sh", dir.path, snapshot!])
      }
      let ours = Harness.ovltoolView(stackOptions, hash: true, ino: true)
      let kernel = Harness.kernelView(stackOptions, in: dir, hash: true, ino: true)
      stats.comparisons += 1
      let bad = Self.differs(ours, kernel)
      if bad {
        stats.mismatches += 1
        if let snapshot {
          writeScripts(to: snapshot)
          // A copy has new inode numbers, which breaks index=on stacks (origin file handles);
          // keep the layers themselves too, at the end (after the kernel's mounts wrote to them).
          pendingMove = pendingMove ?? snapshot + "-inplace"
        } else {
          keep(label.filter { $0.isLetter || $0.isNumber })
        }
      } else if let snapshot {
        Harness.run(["/bin/rm", "-rf", snapshot])
      }
      let kept = keepRoot.map { "\nlayers and scripts kept under \($0)/\(seed)-*" } ?? "\n(set OVLTOOL_RANDOM_KEEP=DIR to keep the layers)"
      Harness.compare(ours, kernel, spec: """
        replay: \(replay)
        \(label); options: \(options.isEmpty ? "(defaults)" : options)
        stack: \(stackOptions.replacingOccurrences(of: dir.path, with: "$T"))  (T=\(dir.path))\(kept)
        """)
    }

    /// Keeps a copy of the layers and the scripts under OVLTOOL_RANDOM_KEEP (after the fact).
    func keep(_ label: String) {
      guard let keepRoot = RandomViewTests.environment("OVLTOOL_RANDOM_KEEP") else { return }
      let target = keepRoot + "/\(seed)-\(label)"
      Harness.run(["/bin/sh", "-c", "rm -rf \"$2\" && mkdir -p \"$2\" && cp -a \"$1\"/. \"$2\"/", "sh", dir.path, target])
      writeScripts(to: target)
    }

    func writeScripts(to target: String) {
      for (i, s) in scripts.enumerated() {
        try? s.write(toFile: target + "/round\(i + 1).sh", atomically: false, encoding: .utf8)
      }
    }

    func mkdir(_ path: String) {
      try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
  }

    static func environment(_ key: String) -> String? {
      guard let v = ProcessInfo.processInfo.environment[key], !v.isEmpty else { return nil }
      return v
    }

  // MARK: - The namespace model and the operation generator

  /// What the merged tree should look like after the operations so far: path → node. Inode
  /// ids track hard links (a rename between two links of one file changes nothing).
  struct Model {
    enum Kind { case dir, file, symlink, fifo, device }
    struct Node {
      var kind: Kind
      var inode: Int
    }
    var entries: [String: Node] = [:]
    var nextInode = 1

    /// Sorted (Dictionary order is randomized per process, the generator must not be).
    func paths(_ filter: (String, Node) -> Bool) -> [String] {
      entries.filter { filter($0.key, $0.value) }.map(\.key).sorted()
    }

    static func depth(_ path: String) -> Int { path.isEmpty ? 0 : path.split(separator: "/").count }
    static func join(_ dir: String, _ name: String) -> String { dir.isEmpty ? name : dir + "/" + name }
    static func parent(_ path: String) -> String {
      guard let slash = path.lastIndex(of: "/") else { return "" }
      return String(path[..<slash])
    }

    func isEmptyDir(_ path: String) -> Bool {
      let prefix = path + "/"
      return !entries.keys.contains { $0.hasPrefix(prefix) }
    }

    mutating func add(_ path: String, _ kind: Kind) {
      entries[path] = Node(kind: kind, inode: nextInode)
      nextInode += 1
    }

    mutating func removeTree(_ path: String) {
      let prefix = path + "/"
      for key in entries.keys where key == path || key.hasPrefix(prefix) { entries[key] = nil }
    }

    mutating func moveTree(_ from: String, _ to: String) {
      let prefix = from + "/"
      var moved: [String: Node] = [:]
      for (key, node) in entries where key == from || key.hasPrefix(prefix) {
        moved[to + key.dropFirst(from.count)] = node
        entries[key] = nil
      }
      removeTree(to)
      entries.merge(moved) { $1 }
    }
  }

  struct OpGenerator {
    var rng: SplitMix64
    var model: Model
    let throughMount: Bool
    let userxattr: Bool
    var lines: [String] = []
    var count = 0

    static let maxDepth = 4
    static let avoidHardlinks = (RandomViewTests.environment("OVLTOOL_RANDOM_AVOID") ?? "").split(separator: ",").contains("hardlink")

    /// Shell helpers: never write through a symlink or into a fifo; report failures. (No
    /// redirections on special builtins such as `:`: a failed one ends a POSIX shell.)
    static let prelude = """
      ok() { [ ! -L "$1" ] && [ ! -p "$1" ]; }
      wr() { ok "$1" && printf '%s' "$2" > "$1"; }
      ap() { ok "$1" && printf '%s' "$2" >> "$1"; }
      big() { ok "$1" && head -c "$2" /dev/zero | tr '\\000' "$3" > "$1"; }
      pat() { ok "$1" && printf '%s' "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
      trn() { ok "$1" && truncate -s "$2" "$1"; }
      emp() { ok "$1" && true > "$1"; }
      chm() { [ ! -L "$1" ] && chmod "$2" "$1"; }
      sock() { python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$1"; }
      f() { echo "OPFAIL $*"; }

      """

    static let names = ["a", "b", "c", "d", "e", "f", "g", "h", "sub", "data", "x y", "caf\u{e9}", "n.txt", "k-1",
                        String(repeating: "L", count: 100)]

    func q(_ s: String) -> String { "'" + s + "'" }

    mutating func emit(_ line: String) {
      count += 1
      lines.append("\(line) || f \(count)")
    }

    func dirs(maxDepth: Int = OpGenerator.maxDepth - 1) -> [String] {
      [""] + model.paths { $1.kind == .dir && Model.depth($0) <= maxDepth }
    }

    /// A name in `dir` that does not exist yet (nil after a few tries).
    mutating func newPath(in dir: String) -> String? {
      for _ in 0..<4 {
        let name = rng.chance(4) ? rng.pick(Self.names) : rng.pick(Array(Self.names.dropLast()))
        let path = Model.join(dir, name)
        if model.entries[path] == nil { return path }
      }
      return nil
    }

    mutating func randomText(_ maxLength: Int) -> String {
      let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;-_=+/\n")
      return String((0..<rng.between(0, maxLength)).map { _ in rng.pick(alphabet) })
    }

    mutating func symlinkTarget() -> String {
      switch rng.below(6) {
      case 0: return "/nonexistent-ovltool/" + rng.pick(Self.names.dropLast())
      case 1: return String(repeating: "t/", count: rng.between(10, 120)) + "end"
      case 2: return "."
      default:
        // Relative and without "..": a target never leaves the tree, wherever the link moves.
        return (0..<rng.between(1, 3)).map { _ in rng.pick(Array(Self.names.dropLast())) }.joined(separator: "/")
      }
    }

    mutating func xattrName() -> String {
      let user = ["user.a", "user.b", "user.color", "user.mime_type"]
      switch rng.below(20) {
      case 0: return "trusted.t"
      case 1: return userxattr ? "trusted.overlay.t" : "user.overlay.t"
      case 2 where !throughMount: return userxattr ? "user.overlay.overlay.e" : "trusted.overlay.overlay.e"
      default: return rng.pick(user)
      }
    }

    mutating func xattrValue() -> String {
      switch rng.below(5) {
      case 0: return "0x" + (0..<rng.between(1, 8)).map { _ in String(format: "%02x", rng.below(256)) }.joined()
      case 1: return String(repeating: "v", count: rng.between(100, 1500))
      default: return "v" + String(rng.next() % 100000)
      }
    }

    mutating func writeContent(_ path: String) {
      switch rng.below(10) {
      case 0, 1: emit("big \(q(path)) \(rng.pick([4096, 65536, 100_000, 300_001, rng.between(1, 20000)])) \(rng.pick(["x", "y", "z"]))")
      case 2: emit("emp \(q(path))")
      default: emit("wr \(q(path)) \(q(randomText(60)))")
      }
    }

    mutating func generate(count n: Int) {
      for _ in 0..<n { step() }
    }

    mutating func step() {
      let nonDirs = model.paths { $1.kind != .dir }
      let files = model.paths { $1.kind == .file }
      let allDirs = model.paths { $1.kind == .dir }
      let all = model.paths { _, _ in true }
      //            create mkdir over app trunc patch rmdir rm  rmr mvf mvd chmod chown touch ln  lns xattr xrm fifo dev
      let weights = throughMount
        ? [16, 9, 7, 5, 3, 3, 3, 5, 3, 6, 7, 5, 4, 5, 4, 4, 6, 2, 2, 1]
        : [24, 16, 3, 2, 2, 1, 1, 2, 1, 2, 2, 5, 4, 5, 4, 4, 6, 1, 2, 1]  // the base layer grows
      switch rng.weighted(weights) {
      case 0:  // create a file (or overwrite one that happens to exist)
        let dir = rng.pick(dirs())
        guard let path = newPath(in: dir) else { return }
        model.add(path, .file)
        writeContent(path)
      case 1:
        let dir = rng.pick(dirs())
        guard let path = newPath(in: dir) else { return }
        model.add(path, .dir)
        if rng.chance(25) {
          emit("mkdir -m \(rng.pick(["0700", "0755", "1777", "0500", "2775"])) \(q(path))")
        } else {
          emit("mkdir \(q(path))")
        }
      case 2:
        guard !files.isEmpty else { return }
        writeContent(rng.pick(files))
      case 3:
        guard !files.isEmpty else { return }
        emit("ap \(q(rng.pick(files))) \(q(randomText(40)))")
      case 4:
        guard !files.isEmpty else { return }
        emit("trn \(q(rng.pick(files))) \(rng.pick([0, 1, 7, 4096, 70000, rng.between(0, 300)]))")
      case 5:
        guard !files.isEmpty else { return }
        emit("pat \(q(rng.pick(files))) \(rng.between(0, 5000)) \(q(randomText(10) + "P"))")
      case 6:
        let empty = allDirs.filter { model.isEmptyDir($0) }
        guard !empty.isEmpty else { return }
        let path = rng.pick(empty)
        model.removeTree(path)
        emit("rmdir \(q(path))")
      case 7:
        guard !nonDirs.isEmpty else { return }
        let path = rng.pick(nonDirs)
        model.entries[path] = nil
        emit("rm -f \(q(path))")
      case 8:
        guard !allDirs.isEmpty else { return }
        let path = rng.pick(allDirs)
        model.removeTree(path)
        emit("rm -rf \(q(path))")
      case 9:  // rename a non-directory, maybe over another non-directory
        guard !nonDirs.isEmpty else { return }
        let from = rng.pick(nonDirs)
        let dir = rng.pick(dirs())
        var to: String
        if rng.chance(30), let victim = model.paths({ Model.parent($0) == dir && $1.kind != .dir && $0 != from }).element(using: &rng) {
          to = victim
          if model.entries[to]!.inode == model.entries[from]!.inode { return }  // same file: mv refuses
        } else {
          guard let p = newPath(in: dir) else { return }
          to = p
        }
        model.moveTree(from, to)
        emit("mv -T \(q(from)) \(q(to))")
      case 10:  // rename a directory, maybe over an empty directory
        guard !allDirs.isEmpty else { return }
        let from = rng.pick(allDirs)
        let subtreeDepth = (model.paths { k, _ in k.hasPrefix(from + "/") }.map { Model.depth($0) }.max() ?? Model.depth(from)) - Model.depth(from)
        let targets = dirs().filter { $0 != from && !$0.hasPrefix(from + "/") && Model.depth($0) + 1 + subtreeDepth <= Self.maxDepth + 1 }
        guard !targets.isEmpty else { return }
        let dir = rng.pick(targets)
        var to: String
        let emptyDirs = model.paths { Model.parent($0) == dir && $1.kind == .dir && $0 != from && model.isEmptyDir($0) && !from.hasPrefix($0 + "/") }
        if rng.chance(25), !emptyDirs.isEmpty {
          to = rng.pick(emptyDirs)
        } else {
          guard let p = newPath(in: dir) else { return }
          to = p
        }
        model.moveTree(from, to)
        emit("mv -T \(q(from)) \(q(to))")
      case 11:
        let targets = [""] + all.filter { model.entries[$0]!.kind != .symlink }
        let path = rng.pick(targets)
        emit("chm \(q(path.isEmpty ? "." : path)) \(rng.pick(["0644", "0755", "0600", "0700", "4755", "2755", "1777", "0000", "0444", "0711", "6750", "0640"]))")
      case 12:
        let path = rng.pick([""] + all)
        let ids = ["0", "1", "2", "1000", "65534", "12345"]
        emit("chown -h \(rng.pick(ids)):\(rng.pick(ids)) \(q(path.isEmpty ? "." : path))")
      case 13:
        let path = rng.pick([""] + all)
        let stamp = "\(1_400_000_000 + rng.below(300_000_000))" + (rng.chance(50) ? ".\(rng.between(0, 999_999_999))" : "")
        emit("touch -h \(rng.pick(["", "-m ", "-a "]))-d @\(stamp) \(q(path.isEmpty ? "." : path))")
      case 14:  // hard link
        guard !nonDirs.isEmpty, !Self.avoidHardlinks else { return }
        let from = rng.pick(nonDirs)
        guard let to = newPath(in: rng.pick(dirs())) else { return }
        model.entries[to] = model.entries[from]
        emit("ln \(q(from)) \(q(to))")
      case 15:
        guard let to = newPath(in: rng.pick(dirs())) else { return }
        model.add(to, .symlink)
        emit("ln -s \(q(symlinkTarget())) \(q(to))")
      case 16:
        let path = rng.pick([""] + all.filter { model.entries[$0]!.kind != .symlink })
        emit("setfattr -h -n \(xattrName()) -v \(q(xattrValue())) \(q(path.isEmpty ? "." : path))")
      case 17:
        let path = rng.pick([""] + all.filter { model.entries[$0]!.kind != .symlink })
        emit("setfattr -h -x \(xattrName()) \(q(path.isEmpty ? "." : path)) 2>/dev/null")
      case 18:
        guard let to = newPath(in: rng.pick(dirs())) else { return }
        model.add(to, .fifo)
        emit("mkfifo -m \(rng.pick(["0644", "0600", "0666"])) \(q(to))")
      default:
        guard let to = newPath(in: rng.pick(dirs())) else { return }
        if !throughMount && rng.chance(20) {
          model.add(to, .device)
          emit("sock \(q(to))")
        } else {
          model.add(to, .device)
          emit(rng.chance(50) ? "mknod \(q(to)) c 1 3" : "mknod -m 0660 \(q(to)) b 7 0")
        }
      }
    }

    /// A few extras in the base layer only, after everything else: char 0/0 "whiteouts"
    /// made with mknod (a whiteout in the lowest layer), not part of the model.
    mutating func finishBase() {
      if rng.chance(30), let path = newPath(in: rng.pick(dirs())) {
        emit("mknod \(q(path)) c 0 0")
      }
    }
  }
}

extension Array {
  fileprivate func element(using rng: inout SplitMix64) -> Element? {
    isEmpty ? nil : self[rng.below(count)]
  }
}
