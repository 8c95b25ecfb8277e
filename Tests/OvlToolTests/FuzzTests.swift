import Foundation
import OvlFormat
import OvlOperations
import OvlStack
import Testing

/// Random-mutation fuzzing of every decoder of untrusted bytes (libFuzzer's
/// `-sanitize=fuzzer` needs a toolchain build this machine does not have): seeds from
/// `Fixtures/fuzz/<decoder>/`, mutated by bit flips, byte changes, inserts, deletes,
/// truncation, duplication and splicing with another seed. A decoder must return or throw,
/// never trap or hang; a codec that decodes must encode back to something it decodes
/// again the same. `OVLTOOL_FUZZ_INPUTS` (per decoder, default 3,000) runs longer
/// (`make fuzz`); `OVLTOOL_FUZZ_SEED` picks the mutations.
@Suite struct FuzzTests {
  static var inputs: Int { ProcessInfo.processInfo.environment["OVLTOOL_FUZZ_INPUTS"].flatMap { Int($0) } ?? 3000 }
  static var seed: UInt64 { ProcessInfo.processInfo.environment["OVLTOOL_FUZZ_SEED"].flatMap { UInt64($0) } ?? 0xF022 }

  static func corpus(_ name: String) -> [[UInt8]] {
    let dir = Harness.repository + "/Fixtures/fuzz/" + name
    let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
    let seeds = files.compactMap { FileManager.default.contents(atPath: dir + "/" + $0).map { [UInt8]($0) } }
    return seeds.isEmpty ? [[]] : seeds
  }

  /// One mutation of `input` (or of a splice of two seeds).
  static func mutate(_ input: [UInt8], _ seeds: [[UInt8]], _ rng: inout SplitMix64) -> [UInt8] {
    var b = input
    for _ in 0...rng.below(4) {
      switch rng.below(8) {
      case 0 where !b.isEmpty:
        let i = rng.below(b.count)
        b[i] ^= UInt8(1) << UInt8(rng.below(8))
      case 1 where !b.isEmpty:
        b[rng.below(b.count)] = [0, 0xFF, 0x2F, 0x3A, 0x2C, 0x5C, 0x0A, 0x20, 0x22, 0x2B, 0x2D][rng.below(11)]
      case 2:
        b.insert(UInt8(truncatingIfNeeded: rng.next()), at: rng.below(b.count + 1))
      case 3 where !b.isEmpty:
        b.remove(at: rng.below(b.count))
      case 4 where !b.isEmpty:
        b = Array(b.prefix(rng.below(b.count)))
      case 5 where !b.isEmpty && b.count < 4096:
        let i = rng.below(b.count)
        let n = rng.below(min(64, b.count - i)) + 1
        b.insert(contentsOf: b[i..<(i + n)], at: i)
      case 6:
        let other = seeds[rng.below(seeds.count)]
        let cut = rng.below(b.count + 1)
        let from = rng.below(other.count + 1)
        b = Array(b.prefix(cut)) + Array(other.suffix(from: from))
      default:
        if !b.isEmpty { b[rng.below(b.count)] = UInt8(truncatingIfNeeded: rng.next()) }
      }
    }
    return b
  }

  /// Runs `body` on every seed and `inputs` mutations of them.
  static func fuzz(_ name: String, _ body: ([UInt8]) -> Void) {
    let seeds = corpus(name)
    // A stream per decoder, the same on every run (no hashValue: it is seeded per process).
    var rng = SplitMix64(seed: seed)
    for (i, c) in name.utf8.enumerated() { rng = SplitMix64(seed: rng.next() ^ UInt64(c) << UInt64(i % 56)) }
    for s in seeds { body(s) }
    var current = seeds[0]
    for n in 0..<inputs {
      if n % 16 == 0 { current = seeds[rng.below(seeds.count)] }
      current = mutate(current, seeds, &rng)
      if current.count > 65536 { current = Array(current.prefix(4096)) }
      body(current)
    }
  }

  @Test func fileHandles() {
    Self.fuzz("filehandle") { bytes in
      if case .handle(let h)? = try? FileHandle.decode(bytes) {
        // An index name made from a decoded handle decodes to the same handle.
        if case .handle(let again)? = try? FileHandle.decode(indexName: h.indexName) {
          #expect(again.bytes == h.bytes)
        }
      }
      _ = try? FileHandle.decode(bytes, littleEndianHost: false)
    }
  }

  @Test func indexNames() {
    Self.fuzz("indexname") { bytes in _ = try? FileHandle.decode(indexName: bytes) }
  }

  @Test func redirects() {
    Self.fuzz("redirect") { bytes in _ = try? Redirect(value: bytes) }
  }

  @Test func metacopyNlinkAndSmallXattrs() {
    Self.fuzz("metacopy") { bytes in
      _ = try? Metacopy(value: bytes)
      _ = Protattr(value: bytes)
      _ = OverlayUUID(value: bytes)
    }
    Self.fuzz("nlink") { bytes in
      if let n = NlinkXattr(value: bytes) { #expect(NlinkXattr(value: n.value) == n) }
    }
  }

  @Test func posixACLs() {
    Self.fuzz("acl") { bytes in
      if let acl = PosixACL(xattr: bytes) {
        #expect(PosixACL(xattr: acl.xattrValue) == acl)
        _ = acl.create(mode: 0o777, isDirectory: true)
      }
    }
  }

  @Test func mountTables() {
    Self.fuzz("mountinfo") { bytes in _ = OverlayMountEntry.parseTable(bytes) }
  }

  @Test func mountOptions() {
    Self.fuzz("options") { bytes in
      var parser = StackOptionParser()
      try? parser.add(options: String(decoding: bytes, as: UTF8.self))
    }
  }

  @Test func scripts() {
    Self.fuzz("script") { bytes in _ = try? Script.parse(bytes) }
  }

  @Test func json() {
    Self.fuzz("json") { bytes in
      if let value = try? JSONValue(parsing: bytes) { #expect((try? JSONValue(parsing: value.encoded())) == value) }
    }
  }

  /// Mutated tar, tar.gz and GNU tar layers through `ovltool apply` (LayerReader, the bulk
  /// path, the namespace operations) into a throwaway upper on a tmpfs inside a private
  /// mount namespace, beside a lower with symlinks pointing out: every run exits with a
  /// status (0, or 2 for a refused layer — never a signal or a hang), nothing outside the
  /// upper and work dirs changes, and an applied layer leaves a stack the kernel mounts.
  /// `OVLTOOL_FUZZ_LAYERS` (default 150) runs more.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs")) func layers() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let count = ProcessInfo.processInfo.environment["OVLTOOL_FUZZ_LAYERS"].flatMap { Int($0) } ?? 150
    let dir = Harness.TempDir("fuzz-tar")
    let seeds = Self.corpus("tar")
    var rng = SplitMix64(seed: Self.seed ^ 0x7A2)
    try FileManager.default.createDirectory(atPath: dir.path + "/in", withIntermediateDirectories: true)
    for n in 0..<count {
      var bytes = seeds[rng.below(seeds.count)]
      // Mutations land in the headers (the first 1,536 bytes) more often than in data.
      for _ in 0...rng.below(6) {
        if bytes.isEmpty { break }
        let i = rng.chance(70) ? rng.below(min(bytes.count, 1536)) : rng.below(bytes.count)
        switch rng.below(4) {
        case 0: bytes[i] ^= UInt8(1) << UInt8(rng.below(8))
        case 1: bytes[i] = [0, 0x30, 0x2F, 0x2E, 0x20, 0xFF, 0x37][rng.below(7)]
        case 2: bytes = Array(bytes.prefix(i))
        default: bytes[i] = UInt8(truncatingIfNeeded: rng.next())
        }
      }
      try Data(bytes).write(to: URL(fileURLWithPath: dir.path + "/in/\(n)"))
    }
    let r = Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", #"""
      D="$1"; T="$2"; cd "$D"; mkdir -p w outside m; mount -t tmpfs t w
      mkdir -p w/l/d; echo low > w/l/d/f; ln -s ../../outside w/l/d/out; echo secret > outside/secret
      find outside -printf '%p %s %m\n' > outside.before
      for f in in/*; do
        rm -rf w/u w/k; mkdir w/u w/k
        timeout 20 "$T" apply -o lowerdir=w/l,upperdir=w/u,workdir=w/k "$f" > /dev/null 2> err; s=$?
        case $s in
          0) mount -t overlay o m -o lowerdir=w/l,upperdir=w/u,workdir=w/k 2>/dev/null && umount m || echo "$f: applied, but the kernel refuses it";;
          2) ;;
          *) echo "$f: exit $s: $(head -c 300 err)";;
        esac
        grep -q "Fatal error" err && echo "$f: $(head -c 300 err)"
      done
      find outside -printf '%p %s %m\n' | cmp -s - outside.before || echo "outside changed"
      true
      """#, "sh", dir.path, Harness.ovltool])
    #expect(r.status == 0 && r.out.isEmpty, "\(r.out)\(r.stderr)")
  }
}
