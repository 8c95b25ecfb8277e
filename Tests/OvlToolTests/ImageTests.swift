import Foundation
import Testing

/// OCI layers: `export`, `apply`, `diff`, `merge` against the kernel and the peers (umoci,
/// GNU tar). Each case is a bash script run in a private mount namespace; the script prints
/// the two views it compares into files, and the test compares them. Views are the oracle
/// walker's lines (type, mode, owner, size, content hash, target, rdev, xattrs; mtimes and
/// the root entry dropped) plus the hardlink groups.
@Suite(.serialized, .enabled(if: Harness.kernelTestsEnabled)) struct ImageTests {
  static let peersAvailable: Bool = Harness.run(["/bin/sh", "-c", "command -v umoci && command -v tar && command -v python3"]).status == 0

  /// Shell functions every case uses.
  static let prelude = #"""
    set -eu
    T="$OVLTOOL"; WALK="$WALKER"
    # The view of a tree: walker lines without mtimes and without the root entry, then the
    # hardlink groups (paths of each multiply-linked inode, sorted).
    view() {
      python3 "$WALK" "$1" --hash | sed -E 's/,"mtime":[0-9]+//' | grep -v '^{"path":"/",' || true
      python3 - "$1" <<'PY'
    import os, sys
    root = os.fsencode(sys.argv[1]); groups = {}
    for d, dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f); st = os.lstat(p)
            if st.st_nlink > 1 and not os.path.islink(p):
                groups.setdefault((st.st_dev, st.st_ino), []).append(os.path.relpath(p, root))
    for g in sorted(sorted(x) for x in groups.values() if len(x) > 1):
        print("links", b" ".join(g).decode("utf-8", "backslashreplace"))
    PY
    }
    # The kernel's view of a stack: `kview OPTS OUT`.
    kview() { mkdir -p "$W/mnt"; mount -t overlay overlay -o "$1" "$W/mnt"; view "$W/mnt" > "$2"; umount "$W/mnt"; }
    # A lower tree with every kind of entry, xattrs, a hardlink pair, a non-UTF-8 name.
    mklower() {
      mkdir -p "$1"/{a,b,c/d,keep,op/sub,mv/inner}
      echo hi > "$1/a/f"; echo x > "$1/b/g"; echo y > "$1/c/d/h"; echo k > "$1/keep/k"
      setfattr -n user.foo -v bar "$1/keep/k"; ln "$1/keep/k" "$1/keep/k.link"
      mkfifo "$1/fifo"; ln -s a/f "$1/sym"; mknod "$1/null" c 1 3
      echo o > "$1/op/sub/o"; echo m > "$1/mv/inner/m"; echo meta > "$1/metafile"
      printf 'n' > "$1/$(printf 'latin\xe9')"
    }
    # Changes through a kernel mount: `mutate MOUNTPOINT`.
    mutate() {
      ( cd "$1"
        rm a/f; rm -rf c; mkdir c; echo new > c/n; rm -rf b; mkdir b; echo z > b/z
        ln keep/k keep/k2; echo data > newf; ln newf newf2; mknod dev c 1 5
        chmod 700 keep; setfattr -n user.bar -v 1 newf; mkdir -p deep/er/est; touch deep/er/est/f
        mv mv mvd 2>/dev/null || cp -a mv mvd && rm -rf mv
        chmod 600 metafile; chown 7:8 metafile
        printf 'x' > "$(printf 'new\xff')"; rm -rf op/sub; mkdir op/sub; echo again > op/sub/again )
    }
    """#

  static func run(_ script: String, in dir: Harness.TempDir) -> Harness.Result {
    let full = prelude + "\nW=\"$1\"; cd \"$W\"\n" + script
    return Harness.run(
      ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/bash", "-c", full, "bash", dir.path],
      environment: ["OVLTOOL": Harness.ovltool, "WALKER": Harness.walker, "LC_ALL": "C"])
  }

  static func expectSameFiles(_ dir: Harness.TempDir, _ a: String, _ b: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let x = (try? String(contentsOfFile: dir.path + "/" + a, encoding: .utf8)) ?? "<missing \(a)>"
    let y = (try? String(contentsOfFile: dir.path + "/" + b, encoding: .utf8)) ?? "<missing \(b)>"
    #expect(!x.isEmpty && x.split(separator: "\n").count > 5, "\(a) is (nearly) empty", sourceLocation: sourceLocation)
    let difference = Harness.diff(x.split(separator: "\n").map(String.init), y.split(separator: "\n").map(String.init))
    #expect(x == y, "\(a) != \(b):\n\(difference)", sourceLocation: sourceLocation)
  }

  // MARK: - export → umoci unpack == kernel view

  struct ExportCase: Sendable, CustomTestStringConvertible {
    var label: String
    var options: String
    var resolve: Bool
    var testDescription: String { label }
  }

  static let exportCases = [
    ExportCase(label: "default", options: "", resolve: false),
    ExportCase(label: "redirect_dir+metacopy --resolve", options: ",redirect_dir=on,metacopy=on", resolve: true),
    ExportCase(label: "userxattr", options: ",userxattr", resolve: false),
  ]

  @Test(arguments: exportCases) func exportUnpackedByUmociEqualsKernelView(_ c: ExportCase) throws {
    guard Self.peersAvailable else { Issue.record("umoci missing: run make deps"); return }
    let dir = Harness.TempDir("img-export")
    let r = Self.run("""
      O='\(c.options)'
      mkdir -p l0 l1 up wk w1 base
      mklower l0
      # A first layer made by the kernel: opaque dir and whiteouts below the tested upper.
      mkdir -p mnt; mount -t overlay overlay -o lowerdir=l0,upperdir=l1,workdir=w1$O mnt
      ( cd mnt; rm -rf op; mkdir op; echo first > op/first; rm b/g; mkdir b/inb; echo q > b/inb/q ); umount mnt
      mount -t overlay overlay -o lowerdir=l1:l0,upperdir=up,workdir=wk$O mnt; mutate mnt; umount mnt
      # The base image: the merged view of the lowers.
      mount -t overlay overlay -o ro,lowerdir=l1:l0$O mnt; cp -a mnt/. base/; umount mnt
      kview "ro,lowerdir=up:l1:l0$O" kernel.txt
      $T export -o "lowerdir=l1:l0,upperdir=up,workdir=wk$O" \(c.resolve ? "--resolve" : "") --output layer.tar > digests.txt
      umoci init --layout oci >/dev/null; umoci new --image oci:base >/dev/null
      umoci unpack --image oci:base b >/dev/null; cp -a base/. b/rootfs/; umoci repack --image oci:base b >/dev/null
      umoci raw add-layer --image oci:base --tag t layer.tar >/dev/null
      umoci raw unpack --image oci:t ru >/dev/null 2>&1
      view ru > umoci.txt
      """, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    Self.expectSameFiles(dir, "kernel.txt", "umoci.txt")
  }

  /// `--oci-layout` on top of a umoci-made base: skopeo reads and copies it (verifying
  /// every digest), umoci unpacks it to the kernel's view.
  @Test func ociLayoutIsReadBySkopeoAndUmoci() throws {
    guard Self.peersAvailable, Harness.run(["/bin/sh", "-c", "command -v skopeo"]).status == 0 else {
      Issue.record("umoci/skopeo missing: run make deps"); return
    }
    let dir = Harness.TempDir("img-layout")
    let r = Self.run("""
      mkdir -p l0 up wk mnt; mklower l0
      mount -t overlay overlay -o lowerdir=l0,upperdir=up,workdir=wk mnt; mutate mnt; umount mnt
      kview ro,lowerdir=up:l0 kernel.txt
      umoci init --layout oci >/dev/null; umoci new --image oci:base >/dev/null
      umoci unpack --image oci:base b >/dev/null; cp -a l0/. b/rootfs/; umoci repack --image oci:base b >/dev/null
      $T export -o lowerdir=l0,upperdir=up,workdir=wk --oci-layout oci --tag v2 --base base --compress gzip --descriptor d.json >/dev/null 2>&1
      skopeo inspect oci:oci:v2 > inspect.json
      skopeo copy oci:oci:v2 dir:"$W/copy" >/dev/null
      # zstd (umoci 0.4.7 has no zstd): skopeo reads it.
      $T export -o lowerdir=l0,upperdir=up,workdir=wk --oci-layout oci --tag v3 --base base --compress zstd >/dev/null 2>&1
      skopeo copy oci:oci:v3 dir:"$W/copy3" >/dev/null
      umoci raw unpack --image oci:v2 ru >/dev/null 2>&1
      view ru > umoci.txt
      grep -q "$(python3 -c "import json; print(json.load(open('d.json'))['digest'])")" inspect.json
      """, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    Self.expectSameFiles(dir, "kernel.txt", "umoci.txt")
  }

  @Test func exportRefusesRedirectAndMetacopyWithoutResolve() throws {
    let dir = Harness.TempDir("img-refuse")
    let r = Self.run("""
      mkdir -p l0 up wk mnt; mklower l0
      mount -t overlay overlay -o lowerdir=l0,upperdir=up,workdir=wk,redirect_dir=on,metacopy=on mnt; mutate mnt
      head -c 3000000 /dev/urandom > mnt/0big; umount mnt   # more than any buffer, before the refused names
      set +e; $T export -o lowerdir=l0,upperdir=up,workdir=wk,redirect_dir=on,metacopy=on --output layer.tar; echo "status $?" > status.txt
      # To standard output: refused before the first byte.
      $T export -o lowerdir=l0,upperdir=up,workdir=wk,redirect_dir=on,metacopy=on --output - > stdout.tar 2>/dev/null
      echo "status $? bytes $(stat -c %s stdout.tar)" >> status.txt
      """, in: dir)
    let status = (try? String(contentsOfFile: dir.path + "/status.txt", encoding: .utf8)) ?? ""
    #expect(status == "status 2\nstatus 2 bytes 0\n", "\(r.stderr)")
    #expect(r.stderr.contains("mvd") && r.stderr.contains("metafile"), "\(r.stderr)")
    #expect(!FileManager.default.fileExists(atPath: dir.path + "/layer.tar"))
  }

  /// A refused or failed export takes nothing the user had: an existing output file keeps
  /// its contents, a device or FIFO named as output is written in place and never removed
  /// (`--output /dev/null` as root once deleted /dev/null), no temporary file is left; a
  /// successful export replaces a file whole and writes to a device without fsync errors.
  @Test func exportNeverRemovesWhatItDidNotMake() throws {
    let dir = Harness.TempDir("img-output")
    let r = Self.run("""
      mkdir -p l0 up wk mnt ok-up ok-wk; mklower l0
      mount -t overlay overlay -o lowerdir=l0,upperdir=up,workdir=wk,redirect_dir=on,metacopy=on mnt; mutate mnt; umount mnt
      echo kept > layer.tar; mknod null c 1 3; mkfifo fifo; ln -s layer.tar link.tar
      O=lowerdir=l0,upperdir=up,workdir=wk,redirect_dir=on,metacopy=on
      set +e
      $T export -o $O --output layer.tar 2>/dev/null; echo "file $? $(cat layer.tar)" > status.txt
      $T export -o $O --output link.tar 2>/dev/null; echo "link $? $(cat link.tar) $(stat -c %F link.tar)" >> status.txt
      $T export -o $O --output null 2>/dev/null; echo "device $? $(stat -c %F null)" >> status.txt
      (cat fifo > fifo.out &) ; $T export -o $O --output fifo 2>/dev/null; echo "fifo $? $(stat -c %F fifo)" >> status.txt
      sleep 0.2; echo "fifo bytes $(stat -c %s fifo.out)" >> status.txt
      # Success: to the device (no fsync error), over the file (replaced whole), through the link.
      echo new > ok-up/f
      $T export -o lowerdir=l0,upperdir=ok-up,workdir=ok-wk --output null > /dev/null; echo "device ok $? $(stat -c %F null)" >> status.txt
      $T export -o lowerdir=l0,upperdir=ok-up,workdir=ok-wk --output layer.tar > /dev/null; echo "file ok $? $(tar -tf layer.tar | tr '\\n' ' ')" >> status.txt
      $T export -o lowerdir=l0,upperdir=ok-up,workdir=ok-wk --output link.tar --descriptor d.json > /dev/null; echo "link ok $? $(stat -c %F link.tar) $(tar -tf layer.tar | tr '\\n' ' ')" >> status.txt
      ls -A | grep ovltool >> status.txt
      exit 0
      """, in: dir)
    let status = (try? String(contentsOfFile: dir.path + "/status.txt", encoding: .utf8)) ?? ""
    #expect(status == """
      file 2 kept
      link 2 kept symbolic link
      device 2 character special file
      fifo 2 fifo
      fifo bytes 0
      device ok 0 character special file
      file ok 0 f\u{20}
      link ok 0 symbolic link f\u{20}

      """, "\(r.stderr)")
    #expect(FileManager.default.fileExists(atPath: dir.path + "/d.json"))
  }

  // MARK: - Reproducibility

  @Test func exportIsReproducible() throws {
    let dir = Harness.TempDir("img-repro")
    let r = Self.run("""
      mkdir -p l0 up wk mnt; mklower l0
      mount -t overlay overlay -o lowerdir=l0,upperdir=up,workdir=wk mnt; mutate mnt; umount mnt
      for z in none gzip zstd; do
        $T export -o lowerdir=l0,upperdir=up,workdir=wk --compress $z --output a.$z | grep digest >> one.txt
        $T export -o lowerdir=l0,upperdir=up,workdir=wk --compress $z --output b.$z | grep digest >> two.txt
      done
      # A copy: other inode numbers, other readdir order, other whiteout inodes.
      cp -a l0 l0c; cp -a up upc; mkdir wkc
      for z in none gzip zstd; do
        $T export -o lowerdir=l0c,upperdir=upc,workdir=wkc --compress $z --output c.$z | grep digest >> three.txt
      done
      cmp a.none b.none
      # SOURCE_DATE_EPOCH clamps every mtime.
      SOURCE_DATE_EPOCH=1000 $T export -o lowerdir=l0,upperdir=up,workdir=wk --output e.tar >/dev/null
      tar --list -v --full-time -f e.tar | awk '{print $4}' | sort -u > dates.txt
      zstd -dc a.zstd | cmp - a.none; gzip -dc a.gzip | cmp - a.none
      tar --list -f a.none > list.txt
      """, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    let one = try String(contentsOfFile: dir.path + "/one.txt", encoding: .utf8)
    #expect(one.split(separator: "\n").count == 3)
    #expect(one == (try String(contentsOfFile: dir.path + "/two.txt", encoding: .utf8)))
    #expect(one == (try String(contentsOfFile: dir.path + "/three.txt", encoding: .utf8)))
    let dates = try String(contentsOfFile: dir.path + "/dates.txt", encoding: .utf8)
    #expect(dates.split(separator: "\n").allSatisfy { $0 <= "1970-01-01" }, "\(dates)")
    // Whiteouts never become hardlinks; opaque markers only where the lower has content.
    let list = try String(contentsOfFile: dir.path + "/list.txt", encoding: .utf8)
    #expect(list.contains("a/.wh.f") && list.contains("b/.wh..wh..opq") && list.contains("op/sub/.wh..wh..opq"))
    #expect(!list.contains("deep/.wh..wh..opq"))
  }

  // MARK: - apply: a GNU tar / umoci layer applied by ovltool == umoci's unpack

  @Test func applyGnuTarLayerEqualsUmociUnpack() throws {
    guard Self.peersAvailable else { Issue.record("umoci missing: run make deps"); return }
    let dir = Harness.TempDir("img-apply")
    let r = Self.run(#"""
      mkdir -p l0 up wk src; mklower l0
      # A layer by hand with GNU tar: whiteouts, an opaque marker after its siblings, a
      # hardlink to a base file, a new dir over a deleted file, xattrs, a same-layer re-add.
      cd src; mkdir -p a c op deep/x keep
      touch a/.wh.f; echo n > c/n; touch c/.wh..wh..opq; touch op/.wh.sub; echo new > deep/x/y
      cp -a ../l0/keep/k keep/k; ln keep/k keep/k3; echo again > sym; setfattr -n user.t -v 1 sym
      mkdir metafile; echo in > metafile/in; touch .wh.fifo; echo readd > readd; touch .wh.readd
      cd ..
      tar --xattrs --format=pax --sort=name --numeric-owner -cf layer.tar -C src .
      $T apply -o lowerdir=l0,upperdir=up,workdir=wk layer.tar > applied.txt
      kview "ro,lowerdir=up:l0" ovltool.txt
      umoci init --layout oci >/dev/null; umoci new --image oci:base >/dev/null
      umoci unpack --image oci:base b >/dev/null; cp -a l0/. b/rootfs/; umoci repack --image oci:base b >/dev/null
      umoci raw add-layer --image oci:base --tag t layer.tar >/dev/null
      umoci raw unpack --image oci:t ru >/dev/null 2>&1
      view ru > umoci.txt
      # --diffid: the right one passes, a wrong one exits 3 and changes nothing.
      d=$(awk '{print $2}' applied.txt); mkdir up2 wk2
      $T apply -o lowerdir=l0,upperdir=up2,workdir=wk2 --diffid "$d" layer.tar >/dev/null
      mkdir up3 wk3; set +e
      $T apply -o lowerdir=l0,upperdir=up3,workdir=wk3 --diffid sha256:0000000000000000000000000000000000000000000000000000000000000000 layer.tar 2>/dev/null
      echo "status $? entries $(find up3 wk3 -mindepth 1 | wc -l) xattrs $(getfattr -d -m - up3 2>/dev/null | grep -c =)" > wrong.txt
      """#, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    Self.expectSameFiles(dir, "umoci.txt", "ovltool.txt")
    // A layer file with the wrong DiffID is refused before anything is written.
    #expect((try? String(contentsOfFile: dir.path + "/wrong.txt", encoding: .utf8)) == "status 3 entries 0 xattrs 0\n")
  }

  /// The DiffID apply prints is the digest of the uncompressed stream for every form of
  /// input: a plain tar file (hashed on the second core during the check pass), the same
  /// tar with trailing padding, gzip and zstd (hashed while decompressed) and standard
  /// input (spooled, then a plain file). A big plain layer refused at its first entry ends
  /// with exit 2 at once, its hash stopped and joined: the process never exits while the
  /// hashing thread runs (it crashed once in libcrypto's exit handlers that way).
  @Test func diffIDOfEveryInputFormAndARefusalDuringTheHash() throws {
    let dir = Harness.TempDir("img-diffid")
    let r = Self.run(#"""
      mkdir -p l0 src; mklower l0
      mkdir -p src/d; head -c 3000000 /dev/urandom > src/d/big; echo small > src/s
      tar --format=pax --sort=name -cf layer.tar -C src .
      cp layer.tar padded.tar; head -c 20480 /dev/zero >> padded.tar
      gzip -k -c layer.tar > layer.tar.gz; zstd -q -c layer.tar > layer.tar.zst
      for f in layer.tar padded.tar layer.tar.gz layer.tar.zst stdin; do
        rm -rf up wk; mkdir up wk
        if [ $f = stdin ]; then $T apply -o lowerdir=l0,upperdir=up,workdir=wk - < layer.tar
        else $T apply -o lowerdir=l0,upperdir=up,workdir=wk $f; fi | awk '{print $2}' > got.txt
        case $f in *.gz) want=$(gzip -dc $f | sha256sum);; *.zst) want=$(zstd -dc $f | sha256sum);;
          stdin) want=$(sha256sum < layer.tar);; *) want=$(sha256sum < $f);; esac
        echo "$f $([ "$(cat got.txt)" = "sha256:${want%% *}" ] && echo same || echo "differs: $(cat got.txt) ${want%% *}")"
      done > diffids.txt
      # 64 MiB of data after a refused first entry: refused before the hash can end.
      python3 -c "
      import tarfile, io
      t = tarfile.open('refused.tar', 'w', format=tarfile.PAX_FORMAT)
      i = tarfile.TarInfo('../escape'); i.size = 1; t.addfile(i, io.BytesIO(b'x'))
      i = tarfile.TarInfo('big'); i.size = 64 << 20; t.addfile(i, io.BytesIO(bytes(64 << 20)))
      t.close()"
      rm -rf up wk; mkdir up wk; set +e
      for i in 1 2 3 4 5 6 7 8; do $T apply -o lowerdir=l0,upperdir=up,workdir=wk refused.tar 2>/dev/null; echo "status $?"; done | sort | uniq -c > refused.txt
      """#, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    let diffids = (try? String(contentsOfFile: dir.path + "/diffids.txt", encoding: .utf8)) ?? ""
    #expect(diffids == "layer.tar same\npadded.tar same\nlayer.tar.gz same\nlayer.tar.zst same\nstdin same\n", "\(diffids)")
    let refused = (try? String(contentsOfFile: dir.path + "/refused.txt", encoding: .utf8)) ?? ""
    #expect(refused.trimmingCharacters(in: .whitespaces) == "8 status 2\n", "\(refused)")
  }

  @Test func exportApplyRoundTripIsByteIdentical() throws {
    let dir = Harness.TempDir("img-round")
    let r = Self.run("""
      mkdir -p l0 up wk mnt up2 wk2; mklower l0
      mount -t overlay overlay -o lowerdir=l0,upperdir=up,workdir=wk mnt; mutate mnt; umount mnt
      $T export -o lowerdir=l0,upperdir=up,workdir=wk --compress zstd --output l.tar.zst >/dev/null
      $T apply -o lowerdir=l0,upperdir=up2,workdir=wk2 l.tar.zst >/dev/null
      $T export -o lowerdir=l0,upperdir=up2,workdir=wk2 --compress zstd --output l2.tar.zst >/dev/null
      cmp l.tar.zst l2.tar.zst
      kview ro,lowerdir=up:l0 one.txt; kview ro,lowerdir=up2:l0 two.txt
      # xattr whiteouts (kernel >= 6.7) give the same view.
      mkdir up3 wk3; $T apply -o lowerdir=l0,upperdir=up3,workdir=wk3 --whiteouts xattr l.tar.zst >/dev/null
      kview ro,lowerdir=up3:l0 three.txt
      """, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    Self.expectSameFiles(dir, "one.txt", "two.txt")
    Self.expectSameFiles(dir, "one.txt", "three.txt")
  }

  // MARK: - Hostile layers

  struct Hostile: Sendable, CustomTestStringConvertible {
    var label: String
    /// Python building `evil.tar` with `tarfile` (t = the open TarFile, add(name, **kw)).
    var python: String
    var message: String
    var options = ""
    var testDescription: String { label }
  }

  static let hostile = [
    Hostile(label: "absolute path", python: "add('/outside/x')", message: "absolute path"),
    Hostile(label: "dot-dot", python: "add('a/../../outside/x')", message: "'..'"),
    Hostile(label: "symlink in the layer", python: "add('s', type=tarfile.SYMTYPE, linkname='../outside'); add('s/x')", message: "symlink"),
    Hostile(label: "symlink in the stack", python: "add('lowlink/x')", message: "symlink"),
    Hostile(label: "hardlink outside", python: "add('h', type=tarfile.LNKTYPE, linkname='../outside/secret')", message: "'..'"),
    Hostile(label: "hardlink absolute", python: "add('h', type=tarfile.LNKTYPE, linkname='/etc/passwd')", message: "absolute"),
    Hostile(label: "hardlink missing", python: "add('h', type=tarfile.LNKTYPE, linkname='nothere')", message: "neither in the layer nor in the stack"),
    Hostile(label: "long name", python: "add('d/' + 'n' * 256)", message: "255"),
    Hostile(label: "duplicate", python: "add('dup'); add('dup')", message: "duplicate"),
    Hostile(label: "whiteout of ..", python: "add('a/.wh..')", message: "invalid whiteout"),
    Hostile(label: "device refused", python: "add('dev', type=tarfile.CHRTYPE, devmajor=8, devminor=0)", message: "not permitted", options: "--no-devices"),
    Hostile(label: "truncated", python: "add('big', data=b'x' * 100000); TRUNCATE", message: "truncated"),
    Hostile(label: "garbage", python: "GARBAGE", message: "layer"),
    // Headers libarchive would skip or half-read: refused with the file and the entry named
    // (GNU tar exits 2 on each), never applied without the damaged entry.
    Hostile(label: "bad checksum in the 5th header", python: "[add('f%d' % i) for i in range(8)]; BADSUM", message: "layer evil.tar, entry 5 (after \"f3\", header at byte 4096"),
    Hostile(label: "malformed PAX record", python: "[add('f%d' % i) for i in range(4)]; add('f4', pax_headers={'comment': 'x'}); add('f5'); BADPAX", message: "malformed pax"),
    // Refused late, after good entries: the first pass still refuses before any change.
    Hostile(label: "symlink escape after 6 entries", python: "add('d', type=tarfile.DIRTYPE, mode=0o755); [add('d/f%d' % i) for i in range(5)]; add('s', type=tarfile.SYMTYPE, linkname='d'); add('s/x')", message: "goes through the symlink"),
    Hostile(label: "file as a parent after 5 entries", python: "[add('f%d' % i) for i in range(5)]; add('f2/x')", message: "f2' is not a directory"),
    Hostile(label: "hardlink to a later-whited-out name", python: "[add('f%d' % i) for i in range(3)]; add('a/.wh.x'); add('h', type=tarfile.LNKTYPE, linkname='a/x')", message: "neither in the layer nor in the stack"),
    Hostile(label: "truncated gzip", python: "add('a'); add('b', data=os.urandom(300000)); GZTRUNC", message: "layer evil.tar, entry 3 (after \"b\", at the end of the stream): corrupt or truncated compressed stream"),
  ]

  @Test(arguments: hostile) func hostileLayerIsRefusedAndNothingOutsideChanges(_ c: Hostile) throws {
    let dir = Harness.TempDir("img-hostile")
    let r = Self.run(#"""
      mkdir -p l0/a outside up wk; echo secret > outside/secret; echo x > l0/a/x; ln -s ../outside l0/lowlink
      python3 - <<'PY'
      import gzip, io, os, tarfile
      buf = io.BytesIO(); t = tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT)
      def add(name, data=b'x', **kw):
          i = tarfile.TarInfo(name); i.mode = 0o644
          for k, v in kw.items(): setattr(i, k, v)
          if i.type == tarfile.REGTYPE: i.size = len(data); t.addfile(i, io.BytesIO(data))
          else: t.addfile(i)
      TRUNCATE = GARBAGE = BADSUM = BADPAX = GZTRUNC = None
      \#(["TRUNCATE", "GARBAGE", "BADSUM", "BADPAX", "GZTRUNC"].reduce(c.python) { $0.replacingOccurrences(of: $1, with: $1 + " = 1") })
      t.close(); data = buf.getvalue()
      if TRUNCATE: data = data[:3000]
      if GARBAGE: data = b'\x1f\x8b' + bytes(range(256)) * 4
      if BADSUM: data = bytearray(data); data[4096 + 100] ^= 0x55
      if BADPAX: data = bytearray(data); i = data.find(b'comment='); data[i - 3:i - 1] = b'99'
      if GZTRUNC: data = gzip.compress(data)[:200000]
      open('evil.tar', 'wb').write(data)
      PY
      find outside l0 -printf '%p %s %m %T@\n' | sort > before.txt
      { find up wk -printf '%p %s %m\n' | sort; getfattr -R -d -m - up wk 2>/dev/null; } > layers-before.txt
      set +e; $T apply -o lowerdir=l0,upperdir=up,workdir=wk \#(c.options) evil.tar 2> err.txt; echo "status $?" > status.txt; set -e
      find outside l0 -printf '%p %s %m %T@\n' | sort > after.txt
      { find up wk -printf '%p %s %m\n' | sort; getfattr -R -d -m - up wk 2>/dev/null; } > layers-after.txt
      cmp -s layers-before.txt layers-after.txt && echo unchanged > layers.txt || echo changed > layers.txt
      cmp before.txt after.txt
      """#, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    let status = (try? String(contentsOfFile: dir.path + "/status.txt", encoding: .utf8)) ?? ""
    let err = (try? String(contentsOfFile: dir.path + "/err.txt", encoding: .utf8)) ?? ""
    #expect(status == "status 2\n", "\(err)")
    #expect(err.contains(c.message), "\(err)")
    // Refused by the first pass, before any change: the upper and work dirs of the
    // never-mounted stack are exactly as they were, wherever the bad entry is.
    let layers = (try? String(contentsOfFile: dir.path + "/layers.txt", encoding: .utf8)) ?? ""
    #expect(layers == "unchanged\n", "refused, but the upper or work dir changed")
    #expect(err.contains("nothing was changed"), "\(err)")
  }

  /// `.wh..wh..opq` at the layer's root (also as `./.wh..wh..opq`, also on a userxattr
  /// stack): the layer replaces everything below, so the kernel's view of the result shows
  /// only the layer's entries (the kernel ignores an opaque mark on the upper root; every
  /// lower name gets a whiteout, the upper's own entries go).
  @Test(arguments: ["", "./"]) func opaqueMarkerAtTheLayerRoot(_ prefix: String) throws {
    let dir = Harness.TempDir("img-root-opaque")
    let r = Self.run(#"""
      mkdir -p l0/d up wk m upx wkx; echo a > l0/a; echo c > l0/d/c; mkdir up/old; echo o > up/old/o
      python3 - <<'PY'
      import tarfile, io
      t = tarfile.open('root.tar', 'w', format=tarfile.PAX_FORMAT)
      t.addfile(tarfile.TarInfo('\#(prefix).wh..wh..opq'))
      i = tarfile.TarInfo('\#(prefix)onlyfile'); i.size = 4; i.mode = 0o644; t.addfile(i, io.BytesIO(b'only'))
      i = tarfile.TarInfo('\#(prefix)d'); i.type = tarfile.DIRTYPE; i.mode = 0o755; t.addfile(i)
      i = tarfile.TarInfo('\#(prefix)d/new'); i.size = 1; i.mode = 0o644; t.addfile(i, io.BytesIO(b'n'))
      t.close()
      PY
      $T apply -o lowerdir=l0,upperdir=up,workdir=wk root.tar > /dev/null
      mount -t overlay o m -o lowerdir=l0,upperdir=up,workdir=wk; (cd m && find . | sort) > kernel.txt; umount m
      $T apply -o lowerdir=l0,upperdir=upx,workdir=wkx,userxattr root.tar > /dev/null
      mount -t overlay o m -o lowerdir=l0,upperdir=upx,workdir=wkx,userxattr; (cd m && find . | sort) > kernelx.txt; umount m
      """#, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    for file in ["kernel.txt", "kernelx.txt"] {
      let view = (try? String(contentsOfFile: dir.path + "/" + file, encoding: .utf8)) ?? ""
      #expect(view == ".\n./d\n./d/new\n./onlyfile\n", "\(file): \(view)")
    }
  }

  /// `apply --whiteouts xattr` turns each char whiteout into an xattr whiteout in one rename
  /// over it: killed before every write, a name once hidden stays hidden at every later
  /// crash point (an unlink of the char whiteout before the link of the xattr one, as
  /// before, uncovered the lower file for one write), and the kernel mounts each state with
  /// the upper as a lower layer.
  @Test func xattrWhiteoutConversionNeverUncoversTheLowerFile() throws {
    let dir = Harness.TempDir("img-xwh-crash")
    let r = Self.run(#"""
      mkdir -p l0/d mnt; for n in a b c; do echo $n > l0/d/$n; done
      python3 - <<'PY'
      import tarfile
      t = tarfile.open('l.tar', 'w', format=tarfile.PAX_FORMAT)
      i = tarfile.TarInfo('d'); i.type = tarfile.DIRTYPE; i.mode = 0o755; t.addfile(i)
      for n in 'abc': t.addfile(tarfile.TarInfo('d/.wh.' + n))
      t.close()
      PY
      prev=0; n=1
      while [ $n -le 300 ]; do
        rm -rf up wk; mkdir up wk
        set +e; OVLTOOL_FAULT=$n $T apply --whiteouts xattr -o lowerdir=l0,upperdir=up,workdir=wk l.tar > /dev/null 2>&1; s=$?; set -e
        mount -t overlay o mnt -o ro,lowerdir=up:l0 2>/dev/null || { echo "write $n: the kernel refuses the layers"; break; }
        hidden=0; for x in a b c; do [ -e mnt/d/$x ] || hidden=$((hidden + 1)); done
        listed=$(ls mnt/d | tr '\n' ' '); umount mnt
        [ $hidden -ge $prev ] || echo "write $n: $hidden names hidden, $prev at the write before (listed: $listed)"
        prev=$hidden
        [ $s = 0 ] && break
        [ $s = 137 ] || { echo "write $n: exit $s"; break; }
        n=$((n + 1))
      done
      [ $prev = 3 ] || echo "the complete apply hides $prev names, not 3"
      echo "writes $n" >&2
      """#, in: dir)
    #expect(r.status == 0 && r.out.isEmpty, "\(r.out)\(r.stderr)")
    let writes = r.stderr.split(separator: "\n").first { $0.hasPrefix("writes ") }.flatMap { Int($0.dropFirst(7)) } ?? 0
    #expect(writes > 6, "\(r.stderr)")
  }

  /// A crash at any write of `apply` leaves the record of the interrupted layer in the work
  /// dir: `fsck -n` reports it (exit 4), the kernel mounts the stack, and applying the same
  /// layer again completes it (the record goes, fsck is clean, the view is the one a
  /// complete apply gives). A layer refused part-way leaves the record too. Every 5th write
  /// in `make test`; `OVLTOOL_APPLY_FAULT_STEP=1` crashes at every one.
  @Test func interruptedApplyIsReportedAndCompletedByApplyingAgain() throws {
    let dir = Harness.TempDir("img-journal")
    let step = ProcessInfo.processInfo.environment["OVLTOOL_APPLY_FAULT_STEP"] ?? "5"
    let r = Self.run("STEP=\(step)\n" + #"""
      mkdir -p l0/d l0/e; echo a > l0/d/a; echo b > l0/e/b
      python3 - <<'PY'
      import tarfile, io
      t = tarfile.open('l.tar', 'w', format=tarfile.PAX_FORMAT)
      def add(name, data=None, kind=None, **kw):
          i = tarfile.TarInfo(name); i.mode = 0o644
          if kind: i.type = kind
          for k, v in kw.items(): setattr(i, k, v)
          if data is not None: i.size = len(data); t.addfile(i, io.BytesIO(data))
          else: t.addfile(i)
      add('d', kind=tarfile.DIRTYPE, mode=0o755); add('d/.wh.a')
      for n in range(40): add('d/f%d' % n, b'x' * n)
      add('e', kind=tarfile.DIRTYPE, mode=0o700); add('e/.wh..wh..opq'); add('e/n', b'new')
      add('d/h', kind=tarfile.LNKTYPE, linkname='d/f3'); add('s', kind=tarfile.SYMTYPE, linkname='d/f1')
      t.close()
      PY
      mkdir full fullw; $T apply -o lowerdir=l0,upperdir=full,workdir=fullw l.tar > /dev/null
      kview ro,lowerdir=l0,upperdir=full,workdir=fullw full.txt
      n=1
      while [ $n -le 400 ]; do
        rm -rf up wk; mkdir up wk
        set +e; OVLTOOL_FAULT=$n $T apply -o lowerdir=l0,upperdir=up,workdir=wk l.tar > /dev/null 2>&1; s=$?; set -e
        [ $s = 0 ] && break
        [ $s = 137 ] || { echo "write $n: exit $s"; break; }
        if [ -e wk/ovltool-apply ]; then
          set +e; $T fsck -n -o lowerdir=l0,upperdir=up,workdir=wk > fsck.txt 2>&1; f=$?; set -e
          [ $f = 4 ] && grep -q "did not finish" fsck.txt || echo "write $n: fsck -n exit $f: $(cat fsck.txt)"
        fi
        mount -t overlay o mnt -o lowerdir=l0,upperdir=up,workdir=wk 2>/dev/null && umount mnt || echo "write $n: the kernel refuses the stack"
        $T apply -o lowerdir=l0,upperdir=up,workdir=wk l.tar > /dev/null || echo "write $n: applying again failed"
        [ -e wk/ovltool-apply ] && echo "write $n: the record is still there"
        $T fsck -n -o lowerdir=l0,upperdir=up,workdir=wk > /dev/null 2>&1 || echo "write $n: fsck -n after applying again: exit $?"
        kview ro,lowerdir=l0,upperdir=up,workdir=wk again.txt
        cmp -s full.txt again.txt || echo "write $n: applied again, not the complete layer"
        n=$((n + ${STEP:-1}))
      done
      echo "writes $n" >&2
      # Refused part-way (the second entry): by the first pass, so nothing is written.
      python3 -c "
      import tarfile, io
      t = tarfile.open('bad.tar', 'w', format=tarfile.PAX_FORMAT)
      i = tarfile.TarInfo('ok'); i.size = 1; t.addfile(i, io.BytesIO(b'o')); t.addfile(tarfile.TarInfo('/abs')); t.close()"
      mkdir bu bw; set +e; $T apply -o lowerdir=l0,upperdir=bu,workdir=bw bad.tar > /dev/null 2>&1; echo "refused $?" >&2
      $T fsck -n -o lowerdir=l0,upperdir=bu,workdir=bw > /dev/null 2>&1; echo "fsck $?" >&2; set -e
      [ -z "$(ls -A bu)$(ls -A bw)" ] || echo "refused part-way, but the upper or work dir changed: $(ls -A bu bw)"
      """#, in: dir)
    #expect(r.status == 0 && r.out.isEmpty, "\(r.out)\(r.stderr)")
    #expect(r.stderr.contains("refused 2") && r.stderr.contains("fsck 0"), "\(r.stderr)")
    let writes = r.stderr.split(separator: "\n").first { $0.hasPrefix("writes ") }.flatMap { Int($0.dropFirst(7)) } ?? 0
    #expect(writes > 10, "\(r.stderr)")
    print("apply crash sweep: \(writes - 1) writes, every \(step)th crashed and checked")
  }

  @Test func smuggledOverlayXattrIsNotApplied() throws {
    let dir = Harness.TempDir("img-smuggle")
    let r = Self.run(#"""
      mkdir -p l0/d up wk; echo below > l0/d/below
      python3 - <<'PY'
      import tarfile, io
      t = tarfile.open('evil.tar', 'w', format=tarfile.PAX_FORMAT)
      i = tarfile.TarInfo('d'); i.type = tarfile.DIRTYPE; i.mode = 0o755
      i.pax_headers = {'SCHILY.xattr.trusted.overlay.opaque': 'y', 'SCHILY.xattr.trusted.overlay.redirect': '/etc', 'SCHILY.xattr.user.ok': '1'}
      t.addfile(i); t.close()
      PY
      $T apply -o lowerdir=l0,upperdir=up,workdir=wk evil.tar > /dev/null 2> err.txt
      getfattr -d -m- --absolute-names up/d > xattrs.txt
      kview ro,lowerdir=up:l0 view.txt
      """#, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    let xattrs = (try? String(contentsOfFile: dir.path + "/xattrs.txt", encoding: .utf8)) ?? ""
    #expect(xattrs.contains("user.ok") && !xattrs.contains("opaque") && !xattrs.contains("redirect"), "\(xattrs)")
    let view = (try? String(contentsOfFile: dir.path + "/view.txt", encoding: .utf8)) ?? ""
    #expect(view.contains("/d/below"))
  }

  // MARK: - diff and merge

  @Test func mergeAndDiffEqualTheStackedView() throws {
    let dir = Harness.TempDir("img-merge")
    let r = Self.run("""
      mkdir -p l0 l1 w1 up wk mnt; mklower l0
      mount -t overlay overlay -o lowerdir=l0,upperdir=l1,workdir=w1 mnt; mutate mnt; umount mnt
      mount -t overlay overlay -o lowerdir=l1:l0,upperdir=up,workdir=wk mnt
      ( cd mnt; rm -rf keep c; mkdir c; echo 3 > c/three; echo more > b/more; rm newf; mkdir -p op/sub/deeper ); umount mnt
      kview ro,lowerdir=up:l1:l0 stacked.txt
      $T merge -o lowerdir=l1:l0,upperdir=up,workdir=wk --to-upper merged >/dev/null
      kview ro,lowerdir=merged:l0 merged.txt
      $T merge -o lowerdir=l1:l0,upperdir=up,workdir=wk --to-tar flat.tar --flatten >/dev/null
      mkdir flat; tar --xattrs --xattrs-include='*' -xpf flat.tar -C flat; view flat > flat.txt
      grep -v '^{"path":"/",' stacked.txt > stacked-noroot.txt || true
      $T diff l0 flat --to-upper d >/dev/null
      kview ro,lowerdir=d:l0 diffed.txt
      $T diff l0 flat --to-tar d.tar >/dev/null
      mkdir up4 wk4; $T apply -o lowerdir=l0,upperdir=up4,workdir=wk4 d.tar >/dev/null
      kview ro,lowerdir=up4:l0 diffed-tar.txt
      """, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    Self.expectSameFiles(dir, "stacked.txt", "merged.txt")
    Self.expectSameFiles(dir, "stacked.txt", "flat.txt")
    Self.expectSameFiles(dir, "stacked.txt", "diffed.txt")
    Self.expectSameFiles(dir, "stacked.txt", "diffed-tar.txt")
  }

  /// Random changes through kernel mounts (two layers over a random base), then `merge` over
  /// the base and `--flatten` must equal the stacked view. OVLTOOL_RANDOM_SEED picks the
  /// first seed.
  /// Every stack is made with one option set (default, index=on, userxattr,
  /// redirect_dir=on), with touches, chowns and new names for base files among the
  /// changes; the views compare mtimes (whole seconds, as in a tar) of everything but
  /// directories, owners, modes, xattrs and hard link groups. `diff` of the base tree and
  /// the flattened view, applied over the base, must give the stacked view too.
  static let randomMergeCases: [(Int, String)] = [(1, ""), (2, "index=on"), (3, "userxattr"), (4, "redirect_dir=on"), (5, "index=on,redirect_dir=on")]

  @Test(arguments: randomMergeCases) func mergeOfRandomKernelStacksEqualsTheStackedView(_ round: Int, _ options: String) throws {
    let seed = (Int(ProcessInfo.processInfo.environment["OVLTOOL_RANDOM_SEED"] ?? "") ?? 7) + round
    let o = options.isEmpty ? "" : "," + options
    let dir = Harness.TempDir("img-random")
    let r = Self.run(#"""
      mkdir -p l0 l1 w1 up wk mnt
      # Random operations in a tree: `rnd SEED DIR COUNT`.
      rnd() { python3 - "$@" <<'PY'
      import os, random, sys, shutil
      rng = random.Random(int(sys.argv[1])); root = sys.argv[2]; n = int(sys.argv[3])
      def entries():
          out = []
          for d, dirs, files in os.walk(root):
              out += [os.path.join(d, x) for x in dirs + files]
          return out
      for i in range(n):
          e = entries(); dirs = [root] + [x for x in e if os.path.isdir(x) and not os.path.islink(x)]
          op = rng.choice(["file", "file", "dir", "rm", "rmdir", "chmod", "xattr", "link", "link", "symlink", "append", "touch", "chown"])
          d = rng.choice(dirs); name = os.path.join(d, "n%d" % rng.randrange(40))
          try:
              if op == "file": open(name, "w").write("f%d" % rng.randrange(1000))
              elif op == "dir": os.mkdir(name)
              elif op == "rm" and e:
                  x = rng.choice(e)
                  if os.path.isdir(x) and not os.path.islink(x): shutil.rmtree(x)
                  else: os.unlink(x)
              elif op == "rmdir":
                  x = rng.choice(dirs)
                  if x != root: shutil.rmtree(x); os.mkdir(x)
              elif op == "chmod" and e:
                  x = rng.choice(e)
                  if not os.path.islink(x): os.chmod(x, 0o700 | rng.randrange(0o100))
              elif op == "xattr" and e:
                  x = rng.choice(e)
                  if not os.path.islink(x): os.setxattr(x, "user.r", b"%d" % rng.randrange(9))
              elif op == "link":
                  files = [x for x in e if os.path.isfile(x) and not os.path.islink(x)]
                  if files: os.link(rng.choice(files), name)
              elif op == "symlink": os.symlink("t%d" % rng.randrange(9), name)
              elif op == "append":
                  files = [x for x in e if os.path.isfile(x) and not os.path.islink(x)]
                  if files: open(rng.choice(files), "a").write("+")
              elif op == "touch" and e:
                  x = rng.choice(e); t = 1500000000 + rng.randrange(10**8)
                  os.utime(x, (t, t), follow_symlinks=False)
              elif op == "chown" and e:
                  os.chown(rng.choice(e), rng.randrange(3), rng.randrange(3), follow_symlinks=False)
          except OSError:
              pass
      PY
      }
      # The view with the mtimes of everything but directories, in whole seconds.
      tview() { mkdir -p "$W/mnt"; mount -t overlay overlay -o "$1" "$W/mnt"
        { python3 "$WALK" "$W/mnt" --hash | grep -v '^{"path":"/",' | python3 -c '
      import sys, re
      for line in sys.stdin:
          if "\"type\":\"dir\"" in line: line = re.sub(r",\"mtime\":[0-9]+", "", line)
          else: line = re.sub(r"\"mtime\":([0-9]+)", lambda m: "\"mtime\":%d" % (int(m.group(1)) // 10**9), line)
          sys.stdout.write(line)'
          view "$W/mnt" | grep '^links ' || true; } > "$2"; umount "$W/mnt"; }
      rnd \#(seed) l0 200
      mount -t overlay overlay -o lowerdir=l0,upperdir=l1,workdir=w1\#(o) mnt; rnd \#(seed + 100) mnt 150; umount mnt
      mount -t overlay overlay -o lowerdir=l1:l0,upperdir=up,workdir=wk\#(o) mnt; rnd \#(seed + 200) mnt 150; umount mnt
      # The stack as merge reads it: up as the upper (with index=on its index decides hard
      # links; as a lower layer it would not).
      tview ro,lowerdir=l1:l0,upperdir=up,workdir=wk\#(o) stacked.txt
      $T merge -o lowerdir=l1:l0,upperdir=up,workdir=wk\#(o) --to-upper merged >/dev/null
      tview ro,lowerdir=merged:l0\#(o) merged.txt
      $T merge -o lowerdir=l1:l0,upperdir=up,workdir=wk\#(o) --to-tar m.tar >/dev/null
      mkdir up2 wk2; $T apply -o lowerdir=l0,upperdir=up2,workdir=wk2\#(o) m.tar >/dev/null
      tview ro,lowerdir=up2:l0\#(o) merged-tar.txt
      $T merge -o lowerdir=l1:l0,upperdir=up,workdir=wk\#(o) --flatten --to-upper flat >/dev/null
      view flat > flat.txt; kview ro,lowerdir=l1:l0,upperdir=up,workdir=wk\#(o) stacked-plain.txt
      $T diff l0 flat --to-upper d >/dev/null
      tview ro,lowerdir=d:l0 diffed.txt   # diff writes the trusted.overlay.* namespace
      $T diff l0 flat --to-tar d.tar >/dev/null
      mkdir up4 wk4; $T apply -o lowerdir=l0,upperdir=up4,workdir=wk4\#(o) d.tar >/dev/null
      tview ro,lowerdir=up4:l0\#(o) diffed-tar.txt
      """#, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    Self.expectSameFiles(dir, "stacked.txt", "merged.txt")
    Self.expectSameFiles(dir, "stacked.txt", "merged-tar.txt")
    Self.expectSameFiles(dir, "stacked-plain.txt", "flat.txt")
    Self.expectSameFiles(dir, "stacked.txt", "diffed.txt")
    Self.expectSameFiles(dir, "stacked.txt", "diffed-tar.txt")
  }

  @Test func hardlinkToALowerFileCopiesItUpFirst() throws {
    let dir = Harness.TempDir("img-lowerlink")
    let r = Self.run(#"""
      mkdir -p l0/d up wk; echo lowerdata > l0/d/f; setfattr -n user.x -v 1 l0/d/f
      python3 -c "
      import tarfile
      t = tarfile.open('h.tar', 'w', format=tarfile.PAX_FORMAT)
      i = tarfile.TarInfo('d/h'); i.type = tarfile.LNKTYPE; i.linkname = 'd/f'; t.addfile(i); t.close()"
      $T apply -o lowerdir=l0,upperdir=up,workdir=wk h.tar >/dev/null
      stat -c '%i %h' up/d/f up/d/h > links.txt
      getfattr -n user.x --only-values up/d/f > x.txt
      """#, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    let links = ((try? String(contentsOfFile: dir.path + "/links.txt", encoding: .utf8)) ?? "").split(separator: "\n")
    #expect(links.count == 2 && links[0] == links[1] && links[0].hasSuffix(" 2"), "\(links)")
    #expect((try? String(contentsOfFile: dir.path + "/x.txt", encoding: .utf8)) == "1")
  }

  /// The bulk path: a layer in no particular order (a child before its directory's entry),
  /// several chunks of files in one directory, hard links to files whose first name went
  /// out in an earlier chunk and across directories, a file too big for the queue, modes the umask cuts, setuid, owners,
  /// every special type, new trees under merged directories. The result mounted equals
  /// umoci's unpack, fsck finds nothing, and a crash at any of several writes leaves a stack
  /// that mounts with no file half-written.
  @Test func bulkApplyEqualsUmociAndSurvivesACrash() throws {
    guard Self.peersAvailable else { Issue.record("umoci missing: run make deps"); return }
    let dir = Harness.TempDir("img-bulk")
    let r = Self.run(#"""
      mkdir -p l0 up wk; mklower l0
      python3 - <<'PY'
      import io, os, tarfile
      t = tarfile.open('bulk.tar', 'w', format=tarfile.PAX_FORMAT)
      def add(name, data=None, **kw):
          i = tarfile.TarInfo(name)
          for k, v in kw.items(): setattr(i, k, v)
          if data is not None: i.size = len(data)
          t.addfile(i, io.BytesIO(data) if data is not None else None)
      add('big/f0', b'early child', mode=0o644)            # before its directory's entry
      add('big', type=tarfile.DIRTYPE, mode=0o750, uid=7, gid=8)
      for n in range(1, 3000):
          add('big/f%d' % n, os.urandom(n % 700), mode=(0o666, 0o644, 0o600, 0o4755)[n % 4], uid=n % 3, gid=n % 5)
      add('big/l2999', type=tarfile.LNKTYPE, linkname='big/f5')           # first name in chunk 1
      i = tarfile.TarInfo('keep'); i.type = tarfile.DIRTYPE; i.mode = 0o711; i.uid = 5; i.gid = 6
      i.pax_headers = {'SCHILY.xattr.user.d': 'x'}; t.addfile(i)           # a merged dir's attributes
      add('a', type=tarfile.DIRTYPE, mode=0o755)                          # the same as below: unchanged
      add('keep/fromkeep', type=tarfile.LNKTYPE, linkname='big/f2998')    # other dir, merged
      add('a/new', b'in a merged dir')
      add('a/tree/deeper/x', b'x')                                        # parents not listed
      add('huge', os.urandom(3 << 20), mode=0o640)
      add('s', type=tarfile.SYMTYPE, linkname='big/f1', uid=3, gid=4)
      add('p', type=tarfile.FIFOTYPE, mode=0o620)
      add('cdev', type=tarfile.CHRTYPE, devmajor=1, devminor=7, mode=0o600)
      add('sticky', type=tarfile.DIRTYPE, mode=0o1777)
      i = tarfile.TarInfo('x'); i.size = 1; i.pax_headers = {'SCHILY.xattr.user.k': 'v'}; t.addfile(i, io.BytesIO(b'1'))
      t.close()
      PY
      umask 022
      $T apply -o lowerdir=l0,upperdir=up,workdir=wk bulk.tar > applied.txt
      kview "ro,lowerdir=up:l0" ovltool.txt
      $T fsck -n -o lowerdir=l0,upperdir=up,workdir=wk > fsck.txt   # exit 0: nothing found
      umoci init --layout oci >/dev/null; umoci new --image oci:base >/dev/null
      umoci unpack --image oci:base b >/dev/null; cp -a l0/. b/rootfs/; umoci repack --image oci:base b >/dev/null
      umoci raw add-layer --image oci:base --tag t bulk.tar >/dev/null
      umoci raw unpack --image oci:t ru >/dev/null 2>&1
      view ru > umoci.txt
      # A crash at several writes of the bulk path (the first ones make directories, the
      # later ones publish chunks of files): the kernel mounts the stack, each file it shows
      # is whole (as in the layer) or absent, fsck reports nothing but the interrupted layer,
      # and the same apply again completes it: the view of a whole apply.
      for n in 5 40 120 400 900; do
        rm -rf up2 wk2; mkdir up2 wk2; set +e
        OVLTOOL_FAULT=$n $T apply -o lowerdir=l0,upperdir=up2,workdir=wk2 bulk.tar >/dev/null 2>&1; s=$?; set -e
        [ $s = 137 ] || { echo "write $n: exit $s" >> crash.txt; continue; }
        mkdir -p m; mount -t overlay overlay -o ro,lowerdir=up2:l0 m
        for f in m/big/* m/huge; do [ -e "$f" ] || continue; cmp -s "$f" "ru/${f#m/}" || echo "write $n: $f not whole" >> crash.txt; done
        umount m
        set +e; $T fsck -n -o lowerdir=l0,upperdir=up2,workdir=wk2 > fsck2.txt; f=$?; set -e
        # (A crash before the record is written — the first writes set the stack up — leaves
        # nothing of the layer: fsck is clean.)
        if [ -e wk2/ovltool-apply ]; then
          [ $f = 4 ] && grep -q "did not finish" fsck2.txt && [ "$(grep -c . fsck2.txt)" = 1 ] || echo "write $n: fsck $f: $(cat fsck2.txt)" >> crash.txt
        else
          [ $f = 0 ] || echo "write $n: fsck $f without a record: $(cat fsck2.txt)" >> crash.txt
        fi
        $T apply -o lowerdir=l0,upperdir=up2,workdir=wk2 bulk.tar > /dev/null
        kview "ro,lowerdir=up2:l0" again.txt
        cmp -s ovltool.txt again.txt || echo "write $n: applied again, not the whole layer" >> crash.txt
        $T fsck -n -o lowerdir=l0,upperdir=up2,workdir=wk2 > /dev/null || echo "write $n: fsck after applying again" >> crash.txt
      done
      touch crash.txt
      """#, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    Self.expectSameFiles(dir, "umoci.txt", "ovltool.txt")
    let crash = (try? String(contentsOfFile: dir.path + "/crash.txt", encoding: .utf8)) ?? "(missing)"
    #expect(crash.isEmpty, "\(crash)")
  }

  /// A whiteout acts on the layers below only, wherever it stands in the layer: `d/` and
  /// `d/new` before `.wh.d` give what `.wh.d` first gives — the lower `d` hidden, the
  /// layer's `d` kept.
  @Test func sameLayerWhiteoutAfterItsDirectoryHidesOnlyTheLowerOne() throws {
    let dir = Harness.TempDir("img-samewh")
    let r = Self.run(#"""
      mkdir -p l0/d up1 wk1 up2 wk2 m; echo old > l0/d/old; echo k > l0/d/keep
      python3 -c "
      import gzip, io, os, tarfile
      for name, order in (('after.tar', ('d', 'd/new', 'd/.wh.keep2', '.wh.d')), ('before.tar', ('.wh.d', 'd', 'd/new'))):
          t = tarfile.open(name, 'w', format=tarfile.PAX_FORMAT)
          for n in order:
              i = tarfile.TarInfo(n)
              if n == 'd': i.type = tarfile.DIRTYPE; i.mode = 0o755
              data = b'new' if n == 'd/new' else b''
              i.size = len(data); t.addfile(i, io.BytesIO(data))
          t.close()"
      $T apply -o lowerdir=l0,upperdir=up1,workdir=wk1 after.tar >/dev/null
      $T apply -o lowerdir=l0,upperdir=up2,workdir=wk2 before.tar >/dev/null
      for u in up1 up2; do mount -t overlay overlay -o ro,lowerdir=$u:l0 m; echo "$u: $(ls m/d | tr '\n' ' ')" >> seen.txt; umount m; done
      """#, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    #expect((try? String(contentsOfFile: dir.path + "/seen.txt", encoding: .utf8)) == "up1: new \nup2: new \n")
  }

  /// A file a layer adds to a directory with a default ACL gets the access ACL the kernel
  /// gives it (`tar -x` through a mount: copy-up of the directory, the file created in the
  /// upper, chmod): the bulk path builds it in its own directory.
  @Test func applyGivesNewFilesTheDefaultACLAsTheKernel() throws {
    let dir = Harness.TempDir("img-acl")
    let r = Self.run(#"""
      mkdir -p l0/acl up wk up2 wk2 m
      python3 -c "
      import io, os, struct, tarfile
      acl = struct.pack('<I', 2) + b''.join(struct.pack('<HHI', t, p, i) for t, p, i in
          ((1, 7, 0xFFFFFFFF), (2, 7, 7), (4, 5, 0xFFFFFFFF), (0x10, 7, 0xFFFFFFFF), (0x20, 5, 0xFFFFFFFF)))
      os.setxattr('l0/acl', 'system.posix_acl_default', acl)
      t = tarfile.open('l.tar', 'w', format=tarfile.PAX_FORMAT)
      for n in range(3):
          i = tarfile.TarInfo('acl/f%d' % n); i.size = 2; i.mode = (0o640, 0o600, 0o755)[n]; t.addfile(i, io.BytesIO(b'hi'))
      t.close()"
      mount -t overlay overlay -o lowerdir=l0,upperdir=up,workdir=wk m; tar -xf l.tar -C m; umount m
      $T apply -o lowerdir=l0,upperdir=up2,workdir=wk2 l.tar > /dev/null
      for u in up up2; do (cd $u; for f in acl/f0 acl/f1 acl/f2; do stat -c '%n %A' $f; getfattr -n system.posix_acl_access -e hex $f 2>/dev/null | grep =; done) > $u.txt; done
      """#, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    let kernel = (try? String(contentsOfFile: dir.path + "/up.txt", encoding: .utf8)) ?? ""
    let ours = (try? String(contentsOfFile: dir.path + "/up2.txt", encoding: .utf8)) ?? ""
    #expect(kernel.contains("system.posix_acl_access=0x02"), "the kernel gave no ACL: \(kernel)")
    #expect(kernel == ours)
  }

  /// Descriptors stay bounded whatever the number of directories: under `ulimit -n 256`,
  /// a layer that adds a name to each of 2,000 merged directories of the lower (the first
  /// pass looks each one up in the merged view, the bulk path copies each up) and makes
  /// 2,000 new ones is applied, equals `tar -x` through a kernel mount, and the result is
  /// checked and exported under the same limit.
  @Test func applyOfMoreDirectoriesThanTheDescriptorLimit() throws {
    let dir = Harness.TempDir("img-manydirs")
    let r = Self.run(#"""
      mkdir -p l0 up wk up2 wk2 m
      python3 - <<'PY'
      import io, os, tarfile
      for n in range(2000):
          os.makedirs('l0/d%d/sub' % n); open('l0/d%d/old' % n, 'w').write('old')
      t = tarfile.open('many.tar', 'w', format=tarfile.PAX_FORMAT)
      def add(name, data=None, **kw):
          i = tarfile.TarInfo(name)
          for k, v in kw.items(): setattr(i, k, v)
          if data is not None: i.size = len(data)
          t.addfile(i, io.BytesIO(data) if data is not None else None)
      for n in range(2000):
          add('d%d/sub/new' % n, b'new %d' % n)
          add('n%d' % n, type=tarfile.DIRTYPE, mode=0o755)
          add('n%d/f' % n, b'f %d' % n)
      t.close()
      PY
      mount -t overlay overlay -o lowerdir=l0,upperdir=up,workdir=wk m; tar -xf many.tar -C m; umount m
      kview "ro,lowerdir=up:l0" kernel.txt
      ( ulimit -n 256
        $T apply -o lowerdir=l0,upperdir=up2,workdir=wk2 many.tar > /dev/null
        $T fsck -n -o lowerdir=l0,upperdir=up2,workdir=wk2 > fsck.txt
        $T export -o lowerdir=l0,upperdir=up2,workdir=wk2 --output out.tar > /dev/null )
      kview "ro,lowerdir=up2:l0" ovltool.txt
      tar -tf out.tar | grep -c '/new$' > exported.txt
      """#, in: dir)
    #expect(r.status == 0, "\(r.stderr)")
    Self.expectSameFiles(dir, "kernel.txt", "ovltool.txt")
    #expect((try? String(contentsOfFile: dir.path + "/exported.txt", encoding: .utf8)) == "2000\n")
  }
}
