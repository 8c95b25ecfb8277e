import Foundation
import Testing

/// fsck.overlay's format gaps and layer-handling bugs, each against the kernel: userxattr
/// stacks, a read-only lower, duplicate origins, origins of the wrong type, data-only layers.
@Suite(.serialized) struct FsckLayerTests {
  func sh(_ script: String, _ dir: Harness.TempDir, _ fsck: String = "") -> Harness.Result {
    Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", "set -e; cd \"$1\"\n" + script, "sh", dir.path, fsck])
  }

  func run(_ fsck: String, _ dir: Harness.TempDir, lower: String = "l1", _ args: [String]) -> Harness.Result {
    let lowers = lower.replacingOccurrences(of: "@", with: dir.path + "/")
    return Harness.run([fsck, "-o", "lowerdir=\(lowers)", "-o", "upperdir=\(dir.path)/u", "-o", "workdir=\(dir.path)/w"] + args)
  }

  /// fsck.overlay added trusted.overlay.impure to userxattr stacks; here the namespace is
  /// detected from the upper layer and only user.overlay.* is ever written.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"))
  func userxattrStackNeverGainsTrustedXattrs() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("fscku")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let made = sh("""
      mkdir -p l1/d l1/e u w m; echo a > l1/d/f; echo b > l1/e/g
      mount -t overlay overlay -o lowerdir=l1,upperdir=u,workdir=w,userxattr m; echo x >> m/d/f; rm m/e/g; umount m
      setfattr -x user.overlay.impure u/d; mknod u/e/stray c 0 0
      """, dir)
    try #require(made.status == 0, "\(made.stderr)")
    #expect(run(fsck, dir, lower: "@l1", ["-n"]).status == 4)
    let repaired = run(fsck, dir, lower: "@l1", ["-p"])
    #expect(repaired.status == 1, "\(repaired.out)\(repaired.stderr)")
    let trusted = Harness.run(["/bin/sh", "-c", "getfattr -R -h -d -m '^trusted\\.' --absolute-names \"$1/u\" 2>/dev/null", "sh", dir.path])
    #expect(trusted.out.isEmpty, "trusted xattrs written: \(trusted.out)")
    let impure = Harness.run(["/bin/sh", "-c", "getfattr --only-values -n user.overlay.impure \"$1/u/d\"", "sh", dir.path])
    #expect(impure.out == "y")
    #expect(run(fsck, dir, lower: "@l1", ["-o", "userxattr", "-n"]).status == 0)
    let view = sh("mount -t overlay overlay -o lowerdir=l1,upperdir=u,workdir=w,userxattr m; ls m/e; cat m/d/f; umount m", dir)
    #expect(view.status == 0 && view.out == "a\nx\n", "\(view.out)\(view.stderr)")
  }

  /// fsck.overlay's `flags & !FL_OPT_MASK` made a read-only lower wipe the upper scan. Here
  /// the lower is checked but left alone (4), and the upper is repaired.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"))
  func readOnlyLowerIsCheckedNotChangedAndUpperStillRepaired() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("fscku")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let r = sh("""
      mkdir -p l1 ro u w; mknod l1/lowerstray c 0 0; mknod u/upperstray c 0 0
      mount --bind l1 ro; mount -o remount,ro,bind ro
      "$2" -o lowerdir="$1/ro" -o upperdir="$1/u" -o workdir="$1/w" -p && rc=0 || rc=$?; echo "rc=$rc"
      [ -c l1/lowerstray ] && echo lowerkept; [ -e u/upperstray ] || echo upperfixed
      umount ro
      """, dir, fsck)
    #expect(r.out.contains("rc=4") && r.out.contains("lowerkept") && r.out.contains("upperfixed"), "\(r.out)\(r.stderr)")
  }

  /// overlay/059: `cp -a` of a copied-up file gives two upper files one origin.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"))
  func duplicateOriginsAfterCopy() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("fscku")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let made = sh("""
      mkdir -p l1 u w m; echo a > l1/a
      mount -t overlay overlay -o lowerdir=l1,upperdir=u,workdir=w m; echo x >> m/a; umount m
      cp -a u/a u/b
      """, dir)
    try #require(made.status == 0, "\(made.stderr)")
    #expect(run(fsck, dir, lower: "@l1", ["-n"]).status == 4)
    #expect(run(fsck, dir, lower: "@l1", ["-p"]).status == 4)
    #expect(run(fsck, dir, lower: "@l1", ["-y"]).status == 1)
    #expect(run(fsck, dir, lower: "@l1", ["-n"]).status == 0)
    let inodes = sh("mount -t overlay overlay -o lowerdir=l1,upperdir=u,workdir=w m; stat -c %i m/a m/b; umount m", dir)
    let lines = inodes.out.split(separator: "\n")
    #expect(lines.count == 2 && lines[0] != lines[1], "\(inodes.out)\(inodes.stderr)")
  }

  /// An origin naming a lower dir on a regular file: the kernel logs "invalid origin".
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"))
  func originOfTheWrongType() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("fscku")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let made = sh("""
      mkdir -p l1/d u w m; echo a > l1/file
      mount -t overlay overlay -o lowerdir=l1,upperdir=u,workdir=w,index=on m; echo x >> m/file; touch m/d; umount m
      v=$(getfattr -n trusted.overlay.origin -e hex u/d | sed -n 's/^trusted.overlay.origin=//p')
      setfattr -n trusted.overlay.origin -v "$v" u/file; mv u/file u/renamed; setfattr -x trusted.overlay.origin u/d
      """, dir)
    try #require(made.status == 0, "\(made.stderr)")
    // The kernel copes (a warning, not counted), -p tidies it.
    let checked = run(fsck, dir, lower: "@l1", ["-n"])
    #expect(checked.status == 0 && checked.out.contains("origin names a dir"), "\(checked.out)")
    #expect(run(fsck, dir, lower: "@l1", ["-p"]).status == 1)
    #expect(run(fsck, dir, lower: "@l1", ["-n"]).out.isEmpty)
  }

  /// Data-only layers (`::`, which fsck.overlay rejects with 8): metacopy files in a lower
  /// whose data is reached by an absolute redirect into the data layer.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"))
  func dataOnlyLayers() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("fscku")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let made = sh("""
      mkdir -p l1 d/objects u w m; printf abc > d/objects/f; truncate -s 3 l1/f
      setfattr -n trusted.overlay.metacopy l1/f; setfattr -n trusted.overlay.redirect -v /objects/f l1/f
      mount -t overlay overlay -o ro,lowerdir=l1::d,metacopy=on m; cat m/f; umount m
      """, dir)
    try #require(made.status == 0 && made.out == "abc", "\(made.out)\(made.stderr)")
    let lowerOnly = { (args: [String]) in
      Harness.run([fsck, "-o", "lowerdir=\(dir.path)/l1::\(dir.path)/d", "-o", "metacopy=on"] + args)
    }
    #expect(lowerOnly(["-n"]).status == 0)
    #expect(run(fsck, dir, lower: "@l1::@d", ["-n"]).status == 0)
    #expect(Harness.run(["/bin/rm", dir.path + "/d/objects/f"]).status == 0)
    let gone = lowerOnly(["-n"])
    #expect(gone.status == 4 && gone.out.contains("/f"), "\(gone.out)\(gone.stderr)")
  }

  /// Where the kernel looks for a metacopy file's data in data-only layers (`ovl_lookup`:
  /// only after a lower metacopy, and only if the last redirect it read on the way was
  /// absolute; a plain dir walked in a regular lower resets that, an opaque dir, a file, a
  /// whiteout or a symlink on the way do not). Each case as the kernel reads it, fsck -n
  /// agreeing (0 where it reads the data, 4 where it fails with EIO), and ovltool's cat too.
  static let dataLookups: [(label: String, setup: String, reads: Bool)] = [
    ("upper metacopy redirected straight into the data layer",
     "mkdir -p u/x; truncate -s 3 u/h; setfattr -n trusted.overlay.metacopy u/h; setfattr -n trusted.overlay.redirect -v /objects/f u/h", false),
    ("a plain dir of a lower regular layer on the absolute path", "mkdir -p l2/objects", false),
    ("an opaque dir of a lower regular layer on the absolute path", "mkdir -p l2/objects; setfattr -n trusted.overlay.opaque -v y l2/objects", true),
    ("a file of a lower regular layer on the absolute path", "touch l2/objects", true),
    ("a lower upper metacopy over a lower metacopy", "truncate -s 3 u/f; setfattr -n trusted.overlay.metacopy u/f", true),
  ]

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"), arguments: 0..<dataLookups.count)
  func dataOnlyLookupAsTheKernel(_ index: Int) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let c = Self.dataLookups[index]
    let dir = Harness.TempDir("fscku")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let made = sh("""
      mkdir -p l1 l2 d/objects u w m; printf abc > d/objects/f
      truncate -s 3 l1/f; setfattr -n trusted.overlay.metacopy l1/f; setfattr -n trusted.overlay.redirect -v /objects/f l1/f
      \(c.setup)
      """, dir)
    try #require(made.status == 0, "\(made.stderr)")
    let stack = "lowerdir=\(dir.path)/l1:\(dir.path)/l2::\(dir.path)/d,upperdir=\(dir.path)/u,workdir=\(dir.path)/w,metacopy=on,redirect_dir=on"
    let file = c.label.hasPrefix("upper") ? "h" : "f"
    let kernel = sh("mount -t overlay overlay -o '\(stack)' m; cat m/\(file) && rc=0 || rc=$?; umount m; exit $rc", dir)
    #expect((kernel.status == 0 && kernel.out == "abc") == c.reads, "\(c.label): the kernel: \(kernel.out)\(kernel.stderr)")
    let checked = Harness.run([fsck, "-o", stack, "-n"])
    #expect(checked.status == (c.reads ? 0 : 4), "\(c.label): \(checked.out)\(checked.stderr)")
    let cat = Harness.run([Harness.ovltool, "cat", "-o", stack, "/" + file])
    #expect((cat.status == 0 && cat.out == "abc") == c.reads, "\(c.label): ovltool cat: \(cat.out)\(cat.stderr)")
  }

  /// Changes made offline by ovltool itself (apply-script: rm, mv, mkdir, ln, chmod, put) on
  /// a kernel-made stack leave it clean, and the kernel agrees it mounts.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"), arguments: [",redirect_dir=on", ",index=on,redirect_dir=on,metacopy=on", ",index=on,nfs_export=on"])
  func offlineChangesByOvltoolAreClean(_ options: String) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("fscku")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let made = sh("OPTS='\(options)'\n" + FsckKernelTests.kernelMade, dir)
    try #require(made.status == 0, "\(made.stderr)")
    let script = dir.path + "/changes"
    try """
      rm /file
      mv /dd /ddd
      mkdir /new
      ln /hl1 /hl4
      chmod 0600 /mc3
      mv /x /x2
      rm -r /bbb
      put /dev/null /new/empty
      mv /a /new/a
      """.write(toFile: script, atomically: true, encoding: .utf8)
    let stack = "lowerdir=\(dir.path)/l1:\(dir.path)/l2,upperdir=\(dir.path)/u,workdir=\(dir.path)/w\(options)"
    let applied = Harness.run([Harness.ovltool, "apply-script", "--keep-going", "-o", stack, script])
    #expect(applied.status == 0 || applied.status == 1, "\(applied.stderr)")
    let checked = run(fsck, dir, lower: "@l1:@l2", ["-o", String(options.dropFirst()), "-n"])
    #expect(checked.status == 0, "\(checked.out)\(checked.stderr)")
  }
}
