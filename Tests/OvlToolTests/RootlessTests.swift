import Foundation
import Testing

/// ovltool run by an unprivileged user (uid 4242, no capabilities: `setpriv`) on layers that
/// user owns, with `userxattr`, against the kernel's rootless mount of an identical copy
/// (made by the same user in its own user namespace: `unshare -Urm`). Each script runs as
/// root only to set the stage, in a private mount namespace.
@Suite(.serialized) struct RootlessTests {
  /// Shell functions for the scripts: `as_user CMD…` runs CMD as uid 4242 with no
  /// capabilities; `kernel_do DIR CMD` runs CMD in the merged dir of a rootless mount of
  /// DIR's layers (mounted by uid 4242 in its own user namespace, unmounted after).
  static let prelude = #"""
    set -u
    T="$OVLTOOL"
    as_user() { setpriv --reuid 4242 --regid 4242 --clear-groups --inh-caps=-all --bounding-set=-all -- "$@"; }
    layers() {  # DIR: a lower with files, a dir, a hard link, all owned by 4242
      mkdir -p "$1/l/d" "$1/l/ed" "$1/u" "$1/w" "$1/m"
      echo f > "$1/l/f"; echo del > "$1/l/del"; echo x > "$1/l/d/x"; echo own > "$1/l/own"
      echo h > "$1/l/h1"; ln "$1/l/h1" "$1/l/h2"; echo n > "$1/l/sub_n"; mkdir "$1/l/sub"
      chown -R 4242:4242 "$1"; chmod 0755 "$1"
    }
    opts() { echo "lowerdir=$1/l,upperdir=$1/u,workdir=$1/w,userxattr"; }
    kernel_do() {
      as_user unshare -Urm sh -c 'mount -t overlay o -o "$2" "$1/m" && cd "$1/m" && sh -c "$3"; s=$?; cd /; umount "$1/m"; exit $s' sh "$1" "$(opts "$1")" "$2"
    }
    dump() {  # DIR: the upper, raw, without inode numbers (and the uuid, which is random)
      (cd "$1/u" && find . -printf '%p %y %m %U:%G %s\n' | sort; getfattr -R -h -d -m - -e hex . 2>/dev/null | grep -v '^user.overlay.uuid=')
    }
    """#

  static func run(_ script: String, in dir: Harness.TempDir) -> Harness.Result {
    Harness.run(
      ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/bash", "-c", prelude + "\nW=\"$1\"; chmod 0755 \"$W\"; cd \"$W\"\n" + script, "bash", dir.path],
      environment: ["OVLTOOL": Harness.ovltool, "LC_ALL": "C"])
  }

  static let enabled = Harness.kernelTestsEnabled && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")

  /// The same changes through ovltool as uid 4242 and through the kernel's rootless mount:
  /// the same upper (empty origins, char 0/0 whiteouts, `user.overlay.opaque`, impure), and
  /// every command succeeds although the work dir the kernel makes is mode 0000.
  @Test(.enabled(if: enabled, "needs root (to set the stage), setpriv and overlayfs"))
  func changesAsAPlainUserMatchTheKernelsRootlessMount() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("rootless")
    let r = Self.run(#"""
      layers k; layers o
      kernel_do "$W/k" 'echo more >> f; rm del; rm -r ed; mkdir ed; chmod 0640 own; setfattr -n user.k -v 1 d/x; ln h1 h3; touch sub/new'
      # A kernel mount made o's work dir as for k (mode 0000, owned by 4242).
      kernel_do "$W/o" 'true'
      printf 'f\nmore\n' > data; : > empty; chmod 0644 data empty
      O=$(opts "$W/o")
      as_user "$T" put -o "$O" data /f
      as_user "$T" rm -o "$O" /del
      as_user "$T" rm -r -o "$O" /ed
      as_user "$T" mkdir -o "$O" /ed
      as_user "$T" chmod -o "$O" 0640 /own
      as_user "$T" setxattr -o "$O" user.k 1 /d/x
      as_user "$T" ln -o "$O" /h1 /h3
      as_user "$T" put -o "$O" empty /sub/new
      dump k > k.txt; dump o > o.txt
      """#, in: dir)
    #expect(r.status == 0, "\(r.out) \(r.stderr)")
    let k = Self.expectSameUpper(dir, "ovltool as uid 4242 (-) vs the kernel's rootless mount (+)")
    #expect(k.contains("# file: f\nuser.overlay.origin=0x\n"), "the kernel's rootless copy-up has an empty origin:\n\(k)")
  }

  /// The script's dumps of the kernel's upper (k.txt) and ovltool's (o.txt) must be equal;
  /// returns the kernel's.
  @discardableResult
  static func expectSameUpper(_ dir: Harness.TempDir, _ label: String, sourceLocation: SourceLocation = #_sourceLocation) -> String {
    let k = (try? String(contentsOfFile: dir.path + "/k.txt", encoding: .utf8)) ?? "<none>"
    let o = (try? String(contentsOfFile: dir.path + "/o.txt", encoding: .utf8)) ?? "<none>"
    if k != o {
      Issue.record("\(label):\n\(Harness.diff(o.split(separator: "\n").map(String.init), k.split(separator: "\n").map(String.init)))", sourceLocation: sourceLocation)
    }
    return k
  }

  /// Inside a user namespace (`unshare -Ur`: uid 4242 is root there, with capabilities in
  /// that namespace only) ovltool writes what the kernel's mount made in the same kind of
  /// namespace writes — empty origins (no file handles it could decode), the namespace's
  /// owners — and refuses a chown to an id the namespace does not map (EINVAL) before any
  /// copy-up.
  @Test(.enabled(if: enabled, "needs root (to set the stage), setpriv and overlayfs"))
  func changesInAUserNamespaceMatchTheKernel() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("rootless-userns")
    let r = Self.run(#"""
      layers k; layers o
      kernel_do "$W/k" 'chmod 0600 f; rm del; rm -r ed; mkdir ed; chown 0:0 own; setfattr -n user.k -v 1 d/x'
      kernel_do "$W/o" 'true'
      O=$(opts "$W/o")
      ns() { as_user unshare -Ur "$T" "$@"; }
      ns chmod -o "$O" 0600 /f && ns rm -o "$O" /del && ns rm -r -o "$O" /ed && ns mkdir -o "$O" /ed &&
        ns chown -o "$O" 0:0 /own && ns setxattr -o "$O" user.k 1 /d/x || echo "a change failed"
      dump k > k.txt; dump o > o.txt
      ns chown -o "$O" 1000:1000 /sub_n 2> e.txt; echo "unmapped $?"; cat e.txt
      dump o > o2.txt; cmp -s o.txt o2.txt && echo "upper unchanged"
      """#, in: dir)
    #expect(r.status == 0 && !r.out.contains("failed"), "\(r.out) \(r.stderr)")
    #expect(r.out.contains("unmapped 1") && r.out.contains("no mapping") && r.out.contains("upper unchanged"), "\(r.out)")
    Self.expectSameUpper(dir, "ovltool in a user namespace (-) vs the kernel's mount in one (+)")
  }

  /// What the kernel refuses this user fails before anything is copied up: chown to another
  /// owner, a device node, a `trusted.*` attribute (EPERM, exit 1); and a `trusted.overlay.*`
  /// stack is refused up front (exit 2), not read as if it had no overlay xattrs.
  @Test(.enabled(if: enabled, "needs root (to set the stage), setpriv and overlayfs"))
  func refusalsComeBeforeAnyCopyUp() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("rootless-refusals")
    let r = Self.run(#"""
      layers o; O=$(opts "$W/o")
      as_user "$T" mkdir -o "$O" /made || echo "mkdir failed"
      dump o > before.txt
      as_user "$T" chown -o "$O" 0:0 /own 2> e1.txt; echo "chown $?"
      as_user "$T" mknod -o "$O" /sub/null c 1 3 2> e2.txt; echo "mknod $?"
      as_user "$T" setxattr -o "$O" trusted.x 1 /d/x 2> e3.txt; echo "setxattr $?"
      dump o > after.txt
      cmp -s before.txt after.txt && echo "upper unchanged" || diff before.txt after.txt
      grep -h "not permitted" e1.txt e2.txt e3.txt | wc -l
      # A trusted.* stack (made by root) read by the user without userxattr.
      mkdir -p t/l1/d t/l2/d t/u t/w; echo a > t/l2/d/a; setfattr -n trusted.overlay.opaque -v y t/l1/d; chown -R 4242:4242 t
      as_user "$T" ls -o lowerdir=t/l1:t/l2 /d 2> e4.txt; echo "ls $?"; cat e4.txt
      """#, in: dir)
    #expect(r.status == 0, "\(r.out) \(r.stderr)")
    #expect(r.out.contains("chown 1\nmknod 1\nsetxattr 1\nupper unchanged\n3\n"), "\(r.out)")
    #expect(r.out.contains("ls 2") && r.out.contains("trusted.overlay"), "\(r.out)")
  }

  /// `--rootless-owners` as uid 4242 without a user namespace: a layer exported by root with
  /// root-owned files, setuid and setgid bits, char and block devices, a FIFO, a hard link, a
  /// user xattr and a whiteout is applied into the user's own layers (everything the user's,
  /// mode 0700, the rest in `user.containers.override_stat`, devices and the FIFO as empty
  /// files, as containers/storage keeps them with force_mask) and exported again byte for
  /// byte. Without the flag the same apply is refused (EPERM) and changes nothing.
  @Test(.enabled(if: enabled, "needs root (to set the stage), setpriv and overlayfs"))
  func rootlessOwnersRoundTripAsAPlainUser() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("rootless-owners")
    let r = Self.run(#"""
      layers s; layers o
      # Root's upper: what an image layer holds and a plain user cannot make.
      mkdir -p s/u/etc/ssl s/u/dev s/u/srv
      echo conf > s/u/etc/conf; chmod 0640 s/u/etc/conf; chown 0:42 s/u/etc/conf
      echo su > s/u/etc/su; chmod 4755 s/u/etc/su
      echo sg > s/u/srv/sg; chown 1000:1000 s/u/srv/sg; chmod 2711 s/u/srv/sg
      ln s/u/etc/su s/u/etc/su2; setfattr -n user.note -v hi s/u/etc/conf
      mknod s/u/dev/null c 1 3; mknod s/u/dev/sda b 8 0; mkfifo s/u/dev/fifo; chmod 0620 s/u/dev/fifo
      chmod 0750 s/u/srv; chown 1000:1000 s/u/srv; mknod s/u/del c 0 0
      ln -s ../etc/conf s/u/srv/link; chown -h 4242:4242 s/u/srv/link
      chown 0:0 s/u s/u/etc s/u/etc/ssl s/u/dev; touch -d @1700000000 s/u/etc/ssl s/u/dev s/u/srv s/u/etc s/u
      "$T" export -o "$(opts "$W/s")" --output layer.tar > /dev/null
      # Without the flag a plain user cannot make this layer: refused, nothing changed.
      dump o > before.txt
      as_user "$T" apply -o "$(opts "$W/o")" layer.tar 2> refused.txt; echo "status $?" >> refused.txt
      dump o > after.txt; cmp before.txt after.txt || exit 1
      as_user "$T" apply --rootless-owners -o "$(opts "$W/o")" layer.tar > /dev/null || exit 1
      (cd o/u && find . -printf '%p %y %m %U:%G %s\n' | sort; getfattr -R -h -d -m user.containers -e text . 2>/dev/null) > upper.txt
      as_user "$T" export --rootless-owners -o "$(opts "$W/o")" --output o/again.tar > /dev/null || exit 1; mv o/again.tar again.tar
      cmp layer.tar again.tar && echo identical > cmp.txt
      tar -tvf layer.tar > layer.txt; tar -tvf again.tar > again.txt; diff layer.txt again.txt
      true
      """#, in: dir)
    #expect(r.status == 0, "\(r.out) \(r.stderr)")
    let cmp = (try? String(contentsOfFile: dir.path + "/cmp.txt", encoding: .utf8)) ?? ""
    #expect(cmp == "identical\n", "the layer exported again differs from the one applied")
    let refused = (try? String(contentsOfFile: dir.path + "/refused.txt", encoding: .utf8)) ?? ""
    #expect(refused.contains("status 1") || refused.contains("status 2"), "\(refused)")
    let upper = (try? String(contentsOfFile: dir.path + "/upper.txt", encoding: .utf8)) ?? ""
    for line in [
      "./dev/null f 700 4242:4242 0", "./dev/sda f 700 4242:4242 0", "./dev/fifo f 700 4242:4242 0",
      "./etc/su f 700 4242:4242 3", "./srv d 700 4242:4242", "./srv/link l 777 4242:4242",
      "# file: dev/null\nuser.containers.override_stat=\"0:0:0644:char-1-3\"",
      "# file: dev/sda\nuser.containers.override_stat=\"0:0:0644:block-8-0\"",
      "# file: dev/fifo\nuser.containers.override_stat=\"0:0:0620:pipe\"",
      "# file: etc/su\nuser.containers.override_stat=\"0:0:4755:file\"",
      "# file: srv\nuser.containers.override_stat=\"1000:1000:0750:dir\"",
      "# file: srv/sg\nuser.containers.override_stat=\"1000:1000:2711:file\"",
    ] {
      #expect(upper.contains(line), "missing in the upper: \(line)\n\(upper)")
    }
  }

  /// Every command as uid 4242 on its own layers after a kernel rootless mount changed them:
  /// copy-up, apply-script, fsck -n/-p/-y (clean, exit 0), export, apply into a second stack
  /// of the user's (the kernel's view of it equals the first's), diff and merge.
  @Test(.enabled(if: enabled, "needs root (to set the stage), setpriv and overlayfs"))
  func everyCommandRunsAsAPlainUser() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("rootless-all")
    let r = Self.run(#"""
      layers o; layers p
      kernel_do "$W/o" 'echo more >> f; rm del; mkdir -p new/deep; echo n > new/deep/n; ln h1 h3'
      O=$(opts "$W/o"); P=$(opts "$W/p")
      step() { name=$1; shift; as_user "$@" > "out.$name" 2> "err.$name"; echo "$name $?"; }
      {
        step copy-up "$T" copy-up -o "$O" /d/x /own
        printf 'mkdir /made\nchmod 0600 /f\nmv /sub_n /moved\n' > o/script
        step apply-script "$T" apply-script -o "$O" o/script
        step fsck-n "$T" fsck -n -o "$O"
        step fsck-p "$T" fsck -p -o "$O"
        step fsck-y "$T" fsck -y -o "$O"
        step export "$T" export -o "$O" --output o/layer.tar
        step apply "$T" apply -o "$P" o/layer.tar
        step fsck-p-after "$T" fsck -n -o "$P"
        step diff "$T" diff p/l o/u --to-tar o/diff.tar
        step merge "$T" merge -o "$O" --to-tar o/merged.tar
      } > steps.txt
      kernel_do "$W/o" 'find . -printf "%p %y %m %s\n" | sort' > view-o.txt
      kernel_do "$W/p" 'find . -printf "%p %y %m %s\n" | sort' > view-p.txt
      cmp view-o.txt view-p.txt && echo same > views.txt
      for f in err.*; do [ -s "$f" ] && { echo "== $f"; cat "$f"; }; done > errors.txt
      true
      """#, in: dir)
    #expect(r.status == 0, "\(r.out) \(r.stderr)")
    let steps = (try? String(contentsOfFile: dir.path + "/steps.txt", encoding: .utf8)) ?? ""
    let errors = (try? String(contentsOfFile: dir.path + "/errors.txt", encoding: .utf8)) ?? ""
    #expect(steps == "copy-up 0\napply-script 0\nfsck-n 0\nfsck-p 0\nfsck-y 0\nexport 0\napply 0\nfsck-p-after 0\ndiff 0\nmerge 0\n", "\(steps)\n\(errors)")
    #expect((try? String(contentsOfFile: dir.path + "/views.txt", encoding: .utf8)) == "same\n", "the applied layer's view differs from the stack exported")
  }

  /// A work/work that root's mount left (mode 0000, owned by root): a plain user and a user
  /// namespace that does not map root cannot use it; as the kernel's next mount does, it is
  /// replaced (it is empty), and the change goes ahead.
  @Test(.enabled(if: enabled, "needs root (to set the stage), setpriv and overlayfs"))
  func aWorkDirLeftByRootIsReplaced() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("rootless-workdir")
    let r = Self.run(#"""
      layers o; layers n
      for x in o n; do mount -t overlay o -o "$(opts "$W/$x")" "$x/m"; umount "$x/m"; done
      stat -c '%U %a' o/w/work > before.txt
      as_user "$T" rm -o "$(opts "$W/o")" /del; echo "plain $?" > status.txt
      as_user unshare -Ur "$T" rm -o "$(opts "$W/n")" /del; echo "userns $?" >> status.txt
      stat -c '%u %a' o/w/work n/w/work > after.txt
      """#, in: dir)
    #expect(r.status == 0, "\(r.out) \(r.stderr)")
    #expect((try? String(contentsOfFile: dir.path + "/before.txt", encoding: .utf8)) == "root 0\n")
    #expect((try? String(contentsOfFile: dir.path + "/status.txt", encoding: .utf8)) == "plain 0\nuserns 0\n", "\(r.stderr)")
    #expect((try? String(contentsOfFile: dir.path + "/after.txt", encoding: .utf8)) == "4242 700\n4242 0\n")
  }
}
