import Foundation
import Testing

/// fsck against the real kernel: stacks the kernel made itself are clean (exit 0 under -n,
/// nothing changed under -p), and stacks the kernel refuses or shows wrongly mount and show
/// correctly after the repair.
@Suite(.serialized) struct FsckKernelTests {
  /// Runs `script` in a private mount namespace with `$1` = the test dir and `$2` = fsck.overlay.
  func sh(_ script: String, _ dir: Harness.TempDir, _ fsck: String = "") -> Harness.Result {
    Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", "cd \"$1\"\n" + script, "sh", dir.path, fsck])
  }

  func runFsck(_ fsck: String, _ dir: Harness.TempDir, lower: String = "l1:l2", upper: String = "u", work: String = "w", _ args: [String]) -> Harness.Result {
    let lowers = lower.split(separator: ":").map { dir.path + "/" + $0 }.joined(separator: ":")
    return Harness.run([fsck, "-o", "lowerdir=\(lowers)", "-o", "upperdir=\(dir.path)/\(upper)", "-o", "workdir=\(dir.path)/\(work)"] + args)
  }

  /// Every file's type, mode, link count and xattrs (hex): what -p must leave alone.
  func dump(_ dir: Harness.TempDir) -> String {
    Harness.run(["/bin/sh", "-c", """
      cd "$1" && find . -path ./m -prune -o -printf '%p %y %m %n\\n' | sort
      find . -path ./m -prune -o -print0 | sort -z | xargs -0 getfattr -h -d -e hex -m - --absolute-names 2>/dev/null
      """, "sh", dir.path]).out
  }

  /// Two lowers and a kernel mount doing creates, writes, renames, hard links, chmods,
  /// deletes and rmdirs, with `$2` extra mount options.
  static let kernelMade = """
    set -e
    mkdir -p l1 l2 u w m
    mkdir -p l2/a/b l2/d/sub l2/e l1/x l2/x; echo hi > l2/a/b/f; echo f > l2/file; echo g > l2/d/g
    echo hl > l2/hl1; ln l2/hl1 l2/hl2; echo x > l1/x/y; echo z > l2/x/z; echo mc > l2/mc; echo mc2 > l2/mc2
    mount -t overlay overlay -o lowerdir=l1:l2,upperdir=u,workdir=w$OPTS m
    cd m
    echo more >> file; mkdir newdir; touch newdir/n; rm -f x/z; rm -rf e; mkdir e; touch e/new
    mv d dd 2>/dev/null || true; mv a/b bb 2>/dev/null || true; mv bb bbb 2>/dev/null || true
    echo w >> hl1; ln hl1 hl3 2>/dev/null || true; chmod 600 mc; mv mc2 mc3 2>/dev/null || true
    mkdir -p d2; touch d2/q; mv d2 x/d3 2>/dev/null || true; rm -f x/y; rm -rf newdir; rm -f hl2; ln -s file sym
    cd ..; umount m
    """

  static let optionSets = [
    "", ",redirect_dir=on", ",index=on", ",index=on,redirect_dir=on,metacopy=on", ",index=on,nfs_export=on",
    ",userxattr", ",uuid=off,index=on", ",xino=on,redirect_dir=on",
  ]

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"), arguments: optionSets)
  func kernelMadeStacksAreClean(_ options: String) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("fsckk")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let made = sh("OPTS='\(options)'\n" + Self.kernelMade, dir)
    try #require(made.status == 0, "\(made.stderr)")
    let extra = options.isEmpty ? [] : ["-o", String(options.dropFirst())]
    let checked = runFsck(fsck, dir, extra + ["-n"])
    #expect(checked.status == 0, "\(options): \(checked.out)\(checked.stderr)")
    let before = dump(dir)
    let preened = runFsck(fsck, dir, extra + ["-p"])
    #expect(preened.status == 0, "\(options): \(preened.out)\(preened.stderr)")
    #expect(dump(dir) == before, "-p changed a kernel-made stack (\(options))")
  }

  /// composefs-style stacks: metacopy files in `meta` whose absolute redirects point into
  /// data-only layers two levels deep (`meta::data1::data2`), without an upper, with an
  /// upper the kernel only read through, and changed through a mount (metadata-only
  /// copy-ups, a rename and a hard link of a metacopy file, a data copy-up from the deeper
  /// data layer, a mkdir). fsck reported the copied-up metacopy files as lost data.
  struct DataOnlyStack: Sendable, CustomTestStringConvertible {
    var label: String
    var options: String
    var upper: Bool
    /// Shell run in the mount `m`; empty for none.
    var changes: String
    var userxattr = false
    var testDescription: String { label }
  }

  static let dataOnlyLayers = """
    set -e
    mkdir -p meta/sub data1/objects/ab data2/objects/cd data2/objects/ab u w m
    printf abc > data1/objects/ab/f1; printf shadowed > data2/objects/ab/f1
    printf deeper > data2/objects/cd/f2; printf other > data2/objects/cd/f3
    for f in f1:/objects/ab/f1:3 sub/f2:/objects/cd/f2:6 g:/objects/cd/f3:5 sub/f3:/objects/cd/f3:5; do
      n=${f%%:*}; rest=${f#*:}; r=${rest%:*}; truncate -s ${rest##*:} meta/$n
      setfattr -n $NS.overlay.metacopy meta/$n; setfattr -n $NS.overlay.redirect -v $r meta/$n
    done
    echo plain > meta/plain
    """

  static let dataOnlyStacks = [
    DataOnlyStack(label: "lowers only", options: ",metacopy=on", upper: false, changes: ""),
    DataOnlyStack(label: "upper read through", options: ",metacopy=on,redirect_dir=on", upper: true,
      changes: "cat f1 g sub/f2 sub/f3 >/dev/null"),
    DataOnlyStack(label: "upper changed", options: ",metacopy=on,redirect_dir=on", upper: true,
      changes: "chmod 600 f1; chmod 640 sub/f2; mv g g2; echo more >> sub/f3; ln f1 f1link; echo w >> plain; mkdir newdir; touch newdir/x"),
    DataOnlyStack(label: "upper changed, index=on", options: ",metacopy=on,redirect_dir=on,index=on", upper: true,
      changes: "chmod 600 f1; chmod 640 sub/f2; mv g g2; echo more >> sub/f3; ln f1 f1link; echo w >> plain; mkdir newdir; touch newdir/x"),
    // userxattr refuses metacopy=on (copy-ups are full), but the kernel still follows the
    // lower metacopy files into the data-only layers.
    DataOnlyStack(label: "upper changed, userxattr", options: ",userxattr", upper: true,
      changes: "chmod 600 f1; chmod 640 sub/f2; mv g g2; echo more >> sub/f3; ln f1 f1link; echo w >> plain; mkdir newdir; touch newdir/x",
      userxattr: true),
  ]

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"), arguments: dataOnlyStacks)
  func dataOnlyStacksAreClean(_ s: DataOnlyStack) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("fsckk")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let lowers = "lowerdir=\(dir.path)/meta::\(dir.path)/data1::\(dir.path)/data2"
    let stack = lowers + (s.upper ? ",upperdir=\(dir.path)/u,workdir=\(dir.path)/w" : "") + s.options
    var script = "NS=\(s.userxattr ? "user" : "trusted")\n" + Self.dataOnlyLayers
    if !s.changes.isEmpty {
      script += "\nmount -t overlay overlay -o '\(stack)' m; (cd m; \(s.changes)); umount m\n"
      // The chmods must have been metadata-only copy-ups.
      if s.changes.contains("chmod") && !s.userxattr { script += "getfattr -n trusted.overlay.metacopy u/f1 u/sub/f2 >/dev/null\n" }
    }
    let made = sh(script, dir)
    try #require(made.status == 0, "\(made.stderr)")
    let checked = Harness.run([fsck, "-o", stack, "-n", "-v"])
    #expect(checked.status == 0, "-n: \(checked.out)\(checked.stderr)")
    let before = dump(dir)
    let preened = Harness.run([fsck, "-o", stack, "-p"])
    #expect(preened.status == 0, "-p: \(preened.out)\(preened.stderr)")
    #expect(dump(dir) == before, "-p changed a kernel-made stack")
    Harness.compare(Harness.ovltoolView(stack), Harness.kernelView(stack, in: dir), spec: s.label)
  }

  /// Index entries renamed so that the name is no longer the hex of their origin: the
  /// kernel's mount deletes such an entry (ESTALE), and the lower hard links of its inode
  /// fall back to their old lower data as separate inodes. fsck puts each entry back under
  /// its origin's name (exchanging two that swapped names); a second name of a valid entry
  /// goes, as the kernel would remove it; an origin the kernel cannot read (ENODATA at
  /// mount) comes back from the name. After -y the kernel shows every file as before
  /// the damage (data, inode numbers, link counts) and the index holds the same names.
  struct IndexRename: Sendable, CustomTestStringConvertible {
    var label: String
    var options: String
    var damage: String
    var statuses: (check: Int32, yes: Int32)
    var testDescription: String { label + options }
  }

  static let indexRenames: [IndexRename] = {
    let renamed = "e=$(ls w/index | head -1); case $e in *c) n=${e%?}d;; *) n=${e%?}c;; esac; mv w/index/$e w/index/$n"
    let swapped = "set -- $(ls w/index); mv w/index/$1 w/index/tmp; mv w/index/$2 w/index/$1; mv w/index/tmp w/index/$2"
    let notHex = "e=$(ls w/index | head -1); mv w/index/$e w/index/foo"
    let second = "e=$(ls w/index | head -1); case $e in *c) n=${e%?}d;; *) n=${e%?}c;; esac; ln w/index/$e w/index/$n"
    let malformed = "e=$(ls w/index | head -1); setfattr -n $NS.overlay.origin -v 0x0102 w/index/$e"
    return [",index=on", ",index=on,userxattr", ",index=on,nfs_export=on"].flatMap { options in
      [
        IndexRename(label: "renamed to a free name", options: options, damage: renamed, statuses: (4, 1)),
        IndexRename(label: "two entries swapped", options: options, damage: swapped, statuses: (4, 1)),
        IndexRename(label: "renamed to a name that is not hex", options: options, damage: notHex, statuses: (4, 1)),
        IndexRename(label: "a second name of a valid entry", options: options, damage: second, statuses: (0, 1)),
        // ENODATA at mount; the origin comes back from the name (not removed from the inode).
        IndexRename(label: "origin made malformed", options: options, damage: malformed, statuses: (4, 1)),
      ]
    }
  }()

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"), arguments: indexRenames)
  func misnamedIndexEntries(_ r: IndexRename) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("fsckk")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let opts = "lowerdir=l1:l2,upperdir=u,workdir=w\(r.options)"
    let view = """
      mount -t overlay overlay -o '\(opts)' m || exit 3
      for f in m/*; do stat -c '%i %h %n' $f; cat $f; done; umount m; ls w/index
      """
    let made = sh("""
      set -e; mkdir -p l1 l2 u w m
      echo hl > l2/hl1; ln l2/hl1 l2/hl2; ln l2/hl1 l2/hl3; echo ha > l2/ha1; ln l2/ha1 l2/ha2; echo solo > l2/solo
      mount -t overlay overlay -o '\(opts)' m; echo w >> m/hl1; echo w >> m/ha2; echo s >> m/solo; umount m
      [ $(ls w/index | wc -l) -ge 2 ]
      """, dir)
    try #require(made.status == 0, "\(made.stderr)")
    let before = sh(view, dir)
    try #require(before.status == 0, "\(before.stderr)")
    let damaged = sh("NS=\(r.options.contains("userxattr") ? "user" : "trusted")\n" + r.damage, dir)
    try #require(damaged.status == 0, "\(damaged.stderr)")
    let extra = ["-o", String(r.options.dropFirst())]
    let checked = runFsck(fsck, dir, extra + ["-n"])
    #expect(checked.status == r.statuses.check, "-n: \(checked.out)\(checked.stderr)")
    let yes = runFsck(fsck, dir, extra + ["-y"])
    #expect(yes.status == r.statuses.yes, "-y: \(yes.out)\(yes.stderr)")
    let again = runFsck(fsck, dir, extra + ["-n"])
    #expect(again.status == 0 && again.out.isEmpty, "second run: \(again.out)\(again.stderr)")
    let after = sh(view, dir)
    #expect(after.status == 0 && after.out == before.out, "before:\n\(before.out)\nafter:\n\(after.out)\(after.stderr)")
  }

  /// A whiteout the kernel made in a merged dir, replaced by an xattr whiteout (as an image
  /// builder writes them): lookup still hides the lower file but readdir lists it, in the
  /// upper layer whatever the dir's `opaque` says (`x` included), unless the dir is impure.
  /// After -y (a char 0/0 whiteout again) the kernel shows what it showed before the
  /// damage, and the dir keeps its xattrs.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"), arguments: [("", false), ("", true), (",userxattr", false)])
  func upperXattrWhiteoutInAMergedDir(_ options: String, _ markedX: Bool) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("fsckk")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let made = sh("OPTS='\(options)'\n" + Self.kernelMade + "\n[ -c u/x/z ]", dir)
    try #require(made.status == 0, "\(made.stderr)")
    let stack = "lowerdir=\(dir.path)/l1:\(dir.path)/l2,upperdir=\(dir.path)/u,workdir=\(dir.path)/w\(options)"
    // Dir mtimes change with the damage and the repair; the rest must not.
    func view() -> [String]? {
      Harness.kernelView(stack, in: dir).lines?.map { $0.replacingOccurrences(of: #""mtime":[0-9]+,"#, with: "", options: .regularExpression) }
    }
    let ns = options.isEmpty ? "trusted" : "user"
    let xattrs = "getfattr -h -d -e hex -m - u/x 2>/dev/null"
    let before = view()
    let mark = markedX ? "setfattr -n \(ns).overlay.opaque -v x u/x; " : ""
    let damaged = sh(mark + "rm u/x/z; : > u/x/z; setfattr -n \(ns).overlay.whiteout -v '' u/x/z; [ -z \"$(getfattr -h --only-values -n \(ns).overlay.impure u/x 2>/dev/null)\" ]", dir)
    try #require(damaged.status == 0, "\(damaged.stderr)")
    let dirXattrs = sh(xattrs, dir).out
    let broken = sh("mount -t overlay overlay -o '\(stack)' m; ls m/x; umount m", dir)
    #expect(broken.out.split(separator: "\n").contains("z"), "readdir did not list the xattr whiteout: \(broken.out)")
    let extra = options.isEmpty ? [] : ["-o", String(options.dropFirst())]
    let checked = runFsck(fsck, dir, extra + ["-n"])
    #expect(checked.status == 4, "-n: \(checked.out)\(checked.stderr)")
    let yes = runFsck(fsck, dir, extra + ["-y"])
    #expect(yes.status == 1, "-y: \(yes.out)\(yes.stderr)")
    let again = runFsck(fsck, dir, extra + ["-n"])
    #expect(again.status == 0 && again.out.isEmpty, "second run: \(again.out)\(again.stderr)")
    #expect(sh("[ -c u/x/z ] && [ \"$(stat -c %t:%T u/x/z)\" = 0:0 ]", dir).status == 0, "not a char 0/0 whiteout")
    #expect(sh(xattrs, dir).out == dirXattrs, "the dir's xattrs changed")
    let after = view()
    #expect(before != nil && after == before, "before:\n\(before ?? [])\nafter:\n\(after ?? [])")
    Harness.compare(Harness.ovltoolView(stack), Harness.kernelView(stack, in: dir), spec: "after repair")
  }

  /// fsck.overlay's use-after-free (redirects chaining through two layers) reported a false
  /// orphan whiteout and -p brought a deleted file back.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"))
  func redirectChainThroughTwoLayers() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("fsckk")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let made = sh("""
      set -e; mkdir -p l2/a/b l1 u w w0 m; touch l2/a/b/f
      mount -t overlay overlay -o lowerdir=l2,upperdir=l1,workdir=w0,redirect_dir=on m; mv m/a/b m/bb; umount m
      mount -t overlay overlay -o lowerdir=l1:l2,upperdir=u,workdir=w,redirect_dir=on m; mv m/bb m/bbb; rm m/bbb/f; umount m
      """, dir)
    try #require(made.status == 0, "\(made.stderr)")
    #expect(runFsck(fsck, dir, ["-n"]).status == 0)
    #expect(runFsck(fsck, dir, ["-p"]).status == 0)
    let view = sh("mount -t overlay overlay -o lowerdir=l1:l2,upperdir=u,workdir=w,redirect_dir=on m && ls -A m/bbb; umount m", dir)
    #expect(view.out.isEmpty, "a deleted file came back: \(view.out)")
  }

  /// overlay/056's kernel-made case: impure removed from dirs holding copied-up objects.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"))
  func missingImpureOnKernelCopyUps() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("fsckk")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let made = sh("""
      set -e; mkdir -p l1/testdir1 l1/testdir2/subdir l2 u w m u/testdir1 u/testdir2; touch l1/testdir1/foo
      mount -t overlay overlay -o lowerdir=l1,upperdir=u,workdir=w m; touch m/testdir1/foo m/testdir2/subdir; umount m
      setfattr -x trusted.overlay.impure u/testdir1; setfattr -x trusted.overlay.impure u/testdir2
      """, dir)
    try #require(made.status == 0, "\(made.stderr)")
    #expect(runFsck(fsck, dir, lower: "l1", ["-n"]).status == 4)
    #expect(runFsck(fsck, dir, lower: "l1", ["-p"]).status == 1)
    let check = sh("getfattr --only-values -n trusted.overlay.impure u/testdir1 u/testdir2", dir)
    #expect(check.out == "yy", "\(check.out)\(check.stderr)")
    #expect(runFsck(fsck, dir, lower: "l1", ["-n"]).status == 0)
  }

  struct Damage: Sendable, CustomTestStringConvertible {
    var label: String
    var options: String
    /// Shell run on the kernel-made stack (cwd = its dir) to break it.
    var damage: String
    /// Shell run through a r/w mount at `m` that fails before the repair and works after;
    /// nil where the kernel copes with the damage (fsck still reports it).
    var probe: String?
    var statuses: (check: Int32, preen: Int32, yes: Int32)
    var testDescription: String { label }
  }

  static let damages: [Damage] = [
    Damage(label: "relative redirect with a '/' (readdir EINVAL)", options: ",redirect_dir=on",
      damage: "mkdir -p l2/s/x; setfattr -n trusted.overlay.redirect -v s/x u/dd",
      probe: "ls m >/dev/null && ls m/dd >/dev/null", statuses: (4, 1, 0)),
    Damage(label: "absolute redirect with an empty component", options: ",redirect_dir=on",
      damage: "setfattr -n trusted.overlay.redirect -v /a//b u/bbb",
      probe: "ls m >/dev/null && ls m/bbb >/dev/null", statuses: (4, 1, 0)),
    Damage(label: "volatile marker left behind", options: "",
      damage: "mount -t overlay overlay -o lowerdir=l1:l2,upperdir=u,workdir=w,volatile m && touch m/v && umount m",
      probe: "touch m/probe", statuses: (4, 4, 1)),
    Damage(label: "index name that is not a handle", options: ",index=on",
      damage: "touch w/index/foo", probe: "ls m >/dev/null", statuses: (4, 1, 0)),
    Damage(label: "index entry without origin", options: ",index=on",
      damage: "e=$(ls w/index | grep -v '^#' | head -1); setfattr -x trusted.overlay.origin \"w/index/$e\"",
      probe: "cat m/hl1 >/dev/null", statuses: (4, 1, 0)),
    Damage(label: "upper and work copied to new inodes (ESTALE)", options: ",index=on",
      damage: "cp -a u u.new && cp -a w w.new && rm -rf u w && mv u.new u && mv w.new w",
      probe: "cat m/hl1 >/dev/null", statuses: (4, 1, 0)),
    Damage(label: "work dir nested too deep (read-only mount)", options: "",
      damage: "mkdir -p w/work/a/b/c/d", probe: "touch m/probe", statuses: (4, 1, 0)),
    Damage(label: "index temp nested too deep (logged at every mount)", options: ",index=on",
      damage: "mkdir -p 'w/index/#77/b/c'", probe: nil, statuses: (0, 1, 0)),
    Damage(label: "xattr whiteout in a dir that does not merge (broken ls)", options: "",
      damage: "mkdir u/pure; : > u/pure/gone; setfattr -n trusted.overlay.whiteout -v '' u/pure/gone",
      probe: "ls -l m/pure", statuses: (4, 1, 0)),
    // The upper root is impure: readdir looks the name up and drops it (a warning; a dir
    // that is not impure lists it: upperXattrWhiteoutInAMergedDir).
    Damage(label: "xattr whiteout hiding a lower file in an impure dir", options: "",
      damage: "rm u/file; : > u/file; setfattr -n trusted.overlay.whiteout -v '' u/file",
      probe: nil, statuses: (0, 1, 0)),
    Damage(label: "xattr whiteout hiding a lower file in an impure dir, userxattr", options: ",userxattr",
      damage: "rm u/file; : > u/file; setfattr -n user.overlay.whiteout -v '' u/file",
      probe: nil, statuses: (0, 1, 0)),
    Damage(label: "malformed origin (logged, ignored)", options: "",
      damage: "setfattr -n trusted.overlay.origin -v 0x0102 u/file", probe: nil, statuses: (4, 1, 0)),
    Damage(label: "metacopy file whose lower data is gone (EIO)", options: ",index=on,redirect_dir=on,metacopy=on",
      damage: "rm l2/mc", probe: "! stat m/mc 2>&1 | grep -q 'Input/output error'", statuses: (4, 4, 1)),
    Damage(label: "stray whiteouts, impure removed, redirect whiteout removed", options: ",redirect_dir=on",
      damage: "mknod u/stray c 0 0; mknod u/dd/stray c 0 0; setfattr -x trusted.overlay.impure u; rm u/d",
      probe: nil, statuses: (4, 1, 0)),
    Damage(label: "deleted lower file uncovered (nfs_export whiteout index, EIO)", options: ",index=on,nfs_export=on",
      damage: "rm u/x/z", probe: "ls -l m/x", statuses: (4, 1, 0)),
    Damage(label: "index nlink out of range (stat shows a wrong count)", options: ",index=on",
      damage: "setfattr -n trusted.overlay.nlink -v U+9 u/hl1", probe: "[ \"$(stat -c %h m/hl1)\" = 2 ]", statuses: (0, 1, 0)),
    Damage(label: "copied-up dir deleted offline (orphan dir index, nfs_export)", options: ",index=on,nfs_export=on",
      damage: "rm -rf u/x && mknod u/x c 0 0", probe: nil, statuses: (0, 1, 0)),
    Damage(label: "whiteout inside an opaque dir", options: "",
      damage: "mknod u/e/x c 0 0", probe: nil, statuses: (4, 1, 0)),
  ]

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"), arguments: damages)
  func repairMakesTheKernelMount(_ d: Damage) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("fsckk")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let made = sh("OPTS='\(d.options)'\n" + Self.kernelMade + "\n" + d.damage, dir)
    try #require(made.status == 0, "\(made.stderr)")
    let opts = "lowerdir=l1:l2,upperdir=u,workdir=w\(d.options)"
    // Without a probe: the kernel mounts and lists the stack before and after.
    let probe = "mount -t overlay overlay -o '\(opts)' m 2>/dev/null || exit 3\n(\(d.probe ?? "ls -lR m")) >/dev/null 2>&1; rc=$?; umount m; exit $rc"
    if d.probe != nil {
      let broken = sh(probe, dir)
      #expect(broken.status != 0, "the damage did not break the kernel's view")
    }
    let extra = d.options.isEmpty ? [] : ["-o", String(d.options.dropFirst())]
    let checked = runFsck(fsck, dir, extra + ["-n"])
    #expect(checked.status == d.statuses.check, "-n: \(checked.out)\(checked.stderr)")
    let preened = runFsck(fsck, dir, extra + ["-p"])
    #expect(preened.status == d.statuses.preen, "-p: \(preened.out)\(preened.stderr)")
    let yes = runFsck(fsck, dir, extra + ["-y"])
    #expect(yes.status == d.statuses.yes, "-y: \(yes.out)\(yes.stderr)")
    let fixed = sh(probe, dir)
    #expect(fixed.status == 0, "after repair the kernel still fails (\(fixed.status)): \(fixed.stderr)")
    let again = runFsck(fsck, dir, extra + ["-n"])
    #expect(again.status == 0, "second run: \(again.out)\(again.stderr)")
  }
}
