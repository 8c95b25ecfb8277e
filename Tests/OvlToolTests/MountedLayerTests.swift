import Foundation
import OvlFormat
import Testing

/// A stack that a mounted overlay uses is never written: fsck repairs exit 8, every write
/// command fails with "in use", and the upper is left as it was, whatever form the mount's
/// options took. ovltool runs from `/`, so no relative path can match by accident of the
/// working directory. Each case runs in a private mount namespace of its own.
@Suite struct MountedLayerTests {
  struct Form: CustomTestStringConvertible, Sendable {
    let name: String
    /// Shell lines that mount an overlay ($D the test dir, $S our stack under it, $O the
    /// oracle dir of the repository); the stack's layers are $S/lower, $S/upper, $S/work.
    let mount: String
    let inUse: Bool
    var testDescription: String { name }
  }

  static let forms: [Form] = [
    Form(name: "absolute", mount: #"mount -t overlay x "$D/m" -o "lowerdir=$S/lower,upperdir=$S/upper,workdir=$S/work""#, inUse: true),
    Form(name: "relative, from the mount point's parent", mount: #"(cd "$S" && mount -t overlay x m -o lowerdir=lower,upperdir=upper,workdir=work)"#, inUse: true),
    Form(name: "relative, mount point elsewhere", mount: #"(cd "$S" && mount -t overlay x "$D/far/away/m" -o lowerdir=lower,upperdir=upper,workdir=work)"#, inUse: true),
    Form(name: "lowerdir+= and datadir+=, relative", mount: #"(cd "$S" && python3 "$O/fsmount.py" "$D/m" lowerdir+=lower datadir+=data upperdir=upper workdir=work metacopy=on redirect_dir=on)"#, inUse: true),
    Form(name: "layers given by descriptor", mount: #"python3 "$O/fsmount.py" "$D/m" "lowerdir+=$S/lower" "upperdir=@$S/upper" "workdir=@$S/work""#, inUse: true),
    Form(name: "escaped commas and colons", mount: #"mkdir -p "$D/a,b:c" && mount --bind "$S" "$D/a,b:c" && mount -t overlay x "$D/m" -o 'lowerdir='"$D"'/a\,b\:c/lower,upperdir='"$D"'/a\,b:c/upper,workdir='"$D"'/a\,b:c/work'"#, inUse: true),
    Form(name: "bind-mounted layers", mount: #"mkdir -p "$D/b" && mount --bind "$S" "$D/b" && mount -t overlay x "$D/m" -o "lowerdir=$D/b/lower,upperdir=$D/b/upper,workdir=$D/b/work""#, inUse: true),
    Form(name: "layers renamed after the mount", mount: #"mv "$S" "$D/old" && mount -t overlay x "$D/m" -o "lowerdir=$D/old/lower,upperdir=$D/old/upper,workdir=$D/old/work" && mv "$D/old" "$S""#, inUse: true),
    Form(name: "another mount namespace", mount: #"unshare --mount --propagation private sh -c 'mount -t overlay x "$1/m" -o "lowerdir=$2/lower,upperdir=$2/upper,workdir=$2/work" && touch "$1/ready" && exec sleep 120' sh "$D" "$S" & HOLDER=$!; for i in $(seq 100); do [ -e "$D/ready" ] && break; sleep 0.1; done; if grep -q " $D/m " /proc/self/mountinfo; then echo "leaked into ours"; fi; [ -e "$D/ready" ]"#, inUse: true),
    Form(name: "another stack mounted with relative paths", mount: #"mkdir -p "$D/o/lower" "$D/o/upper" "$D/o/work" && (cd "$D/o" && mount -t overlay x "$D/m" -o lowerdir=lower,upperdir=upper,workdir=work)"#, inUse: false),
  ]

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"), arguments: forms)
  func mountedStackIsNeverWritten(_ form: Form) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("mounted")
    let script = #"""
      set -u
      D="$1"; S="$D/s"; O="$2"; T="$3"; HOLDER=""
      mkdir -p "$S/lower/d" "$S/data" "$S/upper" "$S/work" "$S/m" "$D/m" "$D/far/away/m"
      echo data > "$S/lower/f"; mknod "$S/upper/orphan" c 0 0
      \#(form.mount) || { echo "mount failed"; exit 3; }
      before=$(cd "$S/upper" && find . -printf '%p %y %m %s\n' | sort; getfattr -R -h -d -m - . 2>/dev/null)
      cd /
      OPTS="lowerdir=$S/lower,upperdir=$S/upper,workdir=$S/work"
      "$T" fsck -p -o "$OPTS" >/dev/null 2>&1; echo "fsck-p=$?"
      "$T" fsck -n -o "$OPTS" >/dev/null 2>&1; echo "fsck-n=$?"
      "$T" rm -o "$OPTS" /f 2>"$D/rm.err"; echo "rm=$?"; cat "$D/rm.err"
      "$T" mkdir -o "$OPTS" /newdir 2>/dev/null; echo "mkdir=$?"
      after=$(cd "$S/upper" && find . -printf '%p %y %m %s\n' | sort; getfattr -R -h -d -m - . 2>/dev/null)
      [ "$before" = "$after" ] && echo "upper unchanged"
      [ -n "$HOLDER" ] && kill "$HOLDER"
      exit 0
      """#
    let r = Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh", dir.path, Harness.repository + "/Tests/oracle", Harness.ovltool])
    let out = r.out + r.stderr
    #expect(!out.contains("mount failed") && !out.contains("leaked"), "\(out)")
    if form.inUse {
      #expect(out.contains("fsck-p=8"), "\(out)")
      // -n still checks (and finds the orphan whiteout), changing nothing.
      #expect(out.contains("fsck-n=4"), "\(out)")
      #expect(out.contains("rm=2") && out.contains("in use by the overlay mounted at"), "\(out)")
      #expect(out.contains("mkdir=2"), "\(out)")
      #expect(out.contains("upper unchanged"), "\(out)")
    } else {
      // Not ours: fsck repairs the orphan whiteout and the writes go through.
      #expect(out.contains("fsck-p=1") && out.contains("rm=0") && out.contains("mkdir=0"), "\(out)")
    }
  }

  /// The mountinfo codec: the strings as the kernel shows them, octal escapes, the
  /// mounter's `\,` and `\:` in `lowerdir=`, `::` data-only layers, the `+=` forms literal.
  @Test func parsesOverlayMountsOfMountinfo() {
    let table = Array(#"""
      22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
      49 27 0:41 / /tmp/probe/s/mnt rw,relatime - overlay x rw,lowerdir=/tmp/s/lo\134\054w\134:1:/tmp/s/lo\040w2::/tmp/s/d1,upperdir=/tmp/s/up,workdir=/tmp/s/wk,redirect_dir=on,uuid=on,metacopy=on
      50 27 0:42 / /tmp/m\040x rw,relatime - overlay none rw,lowerdir+=/tmp/s/lo\054w:1,lowerdir+=s/lo\040w2,datadir+=/tmp/s/d1,upperdir=up,workdir=/tmp/wk
      garbage
      """#.utf8)
    let mounts = OverlayMountEntry.parseTable(table)
    #expect(mounts.count == 2)
    let first = mounts[0].layers.map { "\($0.role.rawValue) \(String(decoding: $0.path, as: UTF8.self))" }
    #expect(first == ["lowerdir /tmp/s/lo,w:1", "lowerdir /tmp/s/lo w2", "lowerdir /tmp/s/d1", "upperdir /tmp/s/up", "workdir /tmp/s/wk"])
    #expect(String(decoding: mounts[1].mountPoint, as: UTF8.self) == "/tmp/m x")
    let second = mounts[1].layers.map { "\($0.role.rawValue) \(String(decoding: $0.path, as: UTF8.self))" }
    #expect(second == ["lowerdir /tmp/s/lo,w:1", "lowerdir s/lo w2", "lowerdir /tmp/s/d1", "upperdir up", "workdir /tmp/wk"])
  }
}
