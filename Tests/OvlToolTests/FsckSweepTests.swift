import Foundation
import Testing

/// Corruption sweeps: kernel-made stacks damaged in several ways at once (xattrs deleted or
/// rewritten, stray whiteouts, copies of copied-up objects, lower data removed, temps and
/// markers left in the work dir). `-y` must leave a stack the kernel mounts and reads, and a
/// second run must report it clean. Also: the questions asked without -n/-p/-y, and a
/// nested overlay used as a lower layer.
@Suite(.serialized) struct FsckSweepTests {
  func sh(_ script: String, _ dir: Harness.TempDir, _ fsck: String = "") -> Harness.Result {
    Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", "cd \"$1\"\n" + script, "sh", dir.path, fsck])
  }

  static let damages = [
    "mknod u/stray c 0 0",
    "mknod u/e/stray2 c 0 0",
    "setfattr -x trusted.overlay.impure u",
    "rm -f u/d",
    "mkdir -p w/work/x/y/z",
    "setfattr -n trusted.overlay.redirect -v nowhere u/e",
    "setfattr -n trusted.overlay.redirect -v 'a//b' u/dd",
    "setfattr -n trusted.overlay.opaque -v yes u/x",
    "rm -f l2/mc",
    "cp -a u/file u/file.copy",
    "setfattr -n trusted.overlay.origin -v 0x00fb u/file",
    "rm -f l2/x/z",
    "mkdir -p w/work/incompat/volatile; touch w/work/incompat/volatile/dirty",
    "[ ! -d w/index ] || touch w/index/junk",
    "[ ! -d w/index ] || for e in w/index/00*; do [ -f \"$e\" ] && setfattr -x trusted.overlay.origin \"$e\" && break; done",
    "cp -a u u.new && cp -a w w.new && rm -rf u w && mv u.new u && mv w.new w",
    "rm -f u/mc3",
    "rm -rf u/x && mknod u/x c 0 0",
    "setfattr -n trusted.overlay.nlink -v U+9 u/hl1",
    "rm -f u/x/z",
  ]

  static let optionSets = ["", ",redirect_dir=on", ",index=on", ",index=on,redirect_dir=on,metacopy=on", ",index=on,nfs_export=on"]

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"), arguments: Array(1...40))
  func damagedKernelStacksAreRepaired(_ seed: Int) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    var random = SplitMix64(seed: UInt64(seed) &* 7919)
    let options = random.pick(Self.optionSets)
    var chosen: [String] = []
    for _ in 0..<4 { chosen.append(random.pick(Self.damages)) }
    let dir = Harness.TempDir("fscks")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let made = sh("set -e\nOPTS='\(options)'\n" + FsckKernelTests.kernelMade + "\nset +e\n" + chosen.joined(separator: " 2>/dev/null\n") + " 2>/dev/null\ntrue", dir)
    try #require(made.status == 0, "\(made.stderr)")
    let label = "options '\(options)', damage: \(chosen.joined(separator: "; "))"
    let args = ["-o", "lowerdir=\(dir.path)/l1:\(dir.path)/l2", "-o", "upperdir=\(dir.path)/u", "-o", "workdir=\(dir.path)/w"]
      + (options.isEmpty ? [] : ["-o", String(options.dropFirst())])
    let repaired = Harness.run([fsck] + args + ["-y"])
    #expect(repaired.status == 0 || repaired.status == 1, "\(label): -y gave \(repaired.status)\n\(repaired.out)\(repaired.stderr)")
    let view = sh("""
      mount -t overlay overlay -o "lowerdir=l1:l2,upperdir=u,workdir=w\(options)" m || exit 3
      ls -lR m >/dev/null && find m -type f -exec cat {} + >/dev/null && touch m/written; rc=$?; umount m; exit $rc
      """, dir)
    #expect(view.status == 0, "\(label): the kernel cannot mount or read the repaired stack (\(view.status)): \(view.stderr)")
    let again = Harness.run([fsck] + args + ["-n"])
    #expect(again.status == 0, "\(label): second run\n\(again.out)\(again.stderr)")
  }

  /// Without -n/-p/-y fsck.overlay asks; answers come from standard input (Enter takes the
  /// default answer, end of input too).
  @Test(.enabled(if: getuid() == 0, "needs root (mknod)"))
  func asksPerProblem() throws {
    let dir = Harness.TempDir("fscks")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let made = Harness.run(["/bin/sh", "-c", "cd \"$1\"; mkdir l u w; mknod u/a c 0 0; mknod u/b c 0 0", "sh", dir.path])
    try #require(made.status == 0)
    let args = ["-o", "lowerdir=\(dir.path)/l,upperdir=\(dir.path)/u,workdir=\(dir.path)/w"]
    let r = Harness.run([fsck] + args, stdin: Data("maybe\ny\nn\n".utf8))
    #expect(r.status == 4, "\(r.out)")
    #expect(r.out.components(separatedBy: "remove the whiteout? [Y/n]").count == 4, "asked again after 'maybe': \(r.out)")
    let left = (try? FileManager.default.contentsOfDirectory(atPath: dir.path + "/u")) ?? []
    #expect(left.count == 1)
    let defaults = Harness.run([fsck] + args, stdin: Data())
    #expect(defaults.status == 1)
  }

  /// A lower that is itself an overlay mount: checked through its merged view, never written.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"))
  func nestedOverlayLower() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("fscks")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let r = sh("""
      set -e; mkdir -p il iu iw inner u w m; echo a > il/a; echo b > il/b
      mount -t overlay overlay -o lowerdir=il,upperdir=iu,workdir=iw inner; rm inner/b
      mount -t overlay overlay -o lowerdir=inner,upperdir=u,workdir=w,index=on,nfs_export=on m; echo x >> m/a; rm m/a; umount m
      "$2" -o lowerdir="$1/inner" -o upperdir="$1/u" -o workdir="$1/w" -o index=on,nfs_export=on -n && echo n=0 || echo n=$?
      "$2" -o lowerdir="$1/inner" -o upperdir="$1/u" -o workdir="$1/w" -p && echo p=0 || echo p=$?
      umount inner
      """, dir, fsck)
    #expect(r.out.contains("n=0") && r.out.contains("p=0"), "\(r.out)\(r.stderr)")
  }
}
