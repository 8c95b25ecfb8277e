import Foundation

/// A raw, entry-by-entry dump of an overlay's upper and work directories (not the merged
/// view), to compare what the kernel wrote with what ovltool wrote.
///
/// The dumper is a small python3 script (written into the test's temp dir) so that it can
/// run inside the private mount namespace of a test, where a tmpfs or loop fs holding the
/// layers is visible. One JSON object per line, keys sorted:
///
///     {"path":"upper/a/f","type":"file","mode":420,"uid":0,"gid":0,"size":5,"blocks":8,
///      "nlink":1,"rdev":null,"mtime":1700000000000000000,"flags":524288,
///      "links":["upper/a/f"],"xattrs":{"trusted.overlay.origin":"00fb1d…"}}
///
/// Normalisations done by the dumper (everything else is raw):
/// * Paths are `upper/…` and `work/…` (the work dir root is `work`, its subdirs
///   `work/work` and `work/index`). Names starting with `#` (kernel temp names, a
///   per-boot counter) are shown as `#TMP0`, `#TMP1`… in an order that depends only on
///   their type, mode, size and link count.
/// * Inode numbers are not printed. Instead `links` lists every dumped path (in upper and
///   work) that is the same inode, which checks hard links (index entry == upper name)
///   without depending on inode numbers.
/// * `overlay.uuid` (random per overlay) is shown as `<uuid N bytes>`: only its presence
///   and length are compared.
/// * An xattr value that is an `ovl_fb` file handle (byte 0 = 0, byte 1 = 0xfb) whose
///   handle type and fid equal `name_to_handle_at()` of an object of the same side's own
///   upper/work tree (the index dir's `upper` xattr, dir index entries with nfs_export)
///   is shown as `fb flags=04 type=01 uuid=… -> upper/a`: the side-specific inode
///   number/generation become the path they point to. Handles into the (shared) lower
///   layers stay raw bytes, so origins and index names are compared byte for byte.
/// * `flags` is FS_IOC_GETFLAGS (regular files and dirs only), e.g. the noatime flag the
///   kernel copies to the upper inode; `blocks` is st_blocks (512-byte units).
enum RawTree {
  struct Entry: Equatable {
    var path: String
    var fields: [String: String]  // every key but path and xattrs, canonically rendered
    var xattrs: [String: String]
    var type: String { fields["type"] ?? "?" }
  }

  /// Shell shared by the kernel-differential scripts (`$d` = the case dir, `$o` = its out
  /// dir; env FS, KOPTS, TOPTS with `@R@`, FIXTURE): notes the start time, mounts the case's
  /// filesystem on `$R` (host: the temp dir itself; tmpfs, xfs or btrfs: inside the private
  /// mount namespace), and materialises the fixture twice, `$R/k` (kernel) and `$R/t`
  /// (ovltool), `t` keeping only its upper and work dir: both sides use `k`'s lowers.
  static let twinStacks = #"""
    date +%s%N > "$o/start"
    R=$d/fs; mkdir -p "$R"
    case "$FS" in
      tmpfs) mount -t tmpfs -o mode=0755,size=512m tmpfs "$R" ;;
      xfs) truncate -s 512m "$d/xfs.img"; mkfs.xfs -q "$d/xfs.img"; mount -o loop "$d/xfs.img" "$R" ;;
      btrfs) truncate -s 512m "$d/btrfs.img"; mkfs.btrfs -q "$d/btrfs.img" >/dev/null; mount -o loop "$d/btrfs.img" "$R" ;;
    esac
    KOPTS=$(printf %s "$KOPTS" | sed "s|@R@|$R|g"); TOPTS=$(printf %s "$TOPTS" | sed "s|@R@|$R|g")
    mkdir -p "$R/k" "$R/t" "$d/mk" "$d/mt"
    "$FIXTURE" "$d/spec" "$R/k" >/dev/null
    "$FIXTURE" "$d/spec" "$R/t" >/dev/null
    for x in "$R"/t/*; do case "${x##*/}" in upper|work) ;; *) rm -rf "$x" ;; esac; done
    """#

  /// Writes the dumper into `dir` and returns its path.
  static func installDumper(in dir: String) throws -> String {
    let path = dir + "/rawtree.py"
    try dumper.write(toFile: path, atomically: true, encoding: .utf8)
    return path
  }

  /// Parses the dumper's output. Lines that are not objects are returned as errors.
  static func parse(_ text: String) -> (entries: [Entry], errors: [String]) {
    var entries: [Entry] = []
    var errors: [String] = []
    for line in text.split(separator: "\n") {
      guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
        let path = object["path"] as? String
      else {
        errors.append(String(line))
        continue
      }
      var fields: [String: String] = [:]
      var xattrs: [String: String] = [:]
      for (key, value) in object where key != "path" {
        if key == "xattrs", let x = value as? [String: Any] {
          for (n, v) in x { xattrs[n] = "\(v)" }
        } else {
          fields[key] = render(key, value)
        }
      }
      entries.append(Entry(path: path, fields: fields, xattrs: xattrs))
    }
    return (entries, errors)
  }

  static func render(_ key: String, _ value: Any) -> String {
    if value is NSNull { return "-" }
    if key == "mode", let n = value as? Int { return "0" + String(n, radix: 8) }
    if key == "flags", let n = value as? Int { return "0x" + String(n, radix: 16) }
    if let a = value as? [Any] { return "[" + a.map { "\($0)" }.joined(separator: " ") + "]" }
    return "\(value)"
  }

  /// Whether a difference in `field` is legitimate (see `differences`).
  static func exempt(_ path: String, _ field: String, _ type: String) -> Bool {
    // The size of a small XFS directory counts its names' lengths; in the work dir those are
    // the kernel's temp names (`#%x` of a boot-wide counter) and ovltool's.
    if field == "size" && type == "dir" && path.hasPrefix("work") { return true }
    // Compared separately with a tolerance, regular files only (dirs, symlinks and
    // specials: allocation depends on whether xattrs fit in the inode, ext4 dirs never
    // shrink, and so on).
    return field == "blocks"
  }

  /// st_blocks of two copies of the same regular file: equal up to one fs block for an
  /// external xattr block plus 1/64 (so a sparse file that was filled, or a hole that
  /// was lost, shows up, but allocation details don't).
  static func blocksClose(_ a: String, _ b: String, size: String) -> Bool {
    guard let x = Int(a), let y = Int(b) else { return a == b }
    let sizeBlocks = (Int(size) ?? 0) / 512
    return abs(x - y) <= 8 + sizeBlocks / 64
  }

  /// Every difference as `path: field: kernel X vs ovltool Y`.
  ///
  /// mtimes: a time stamped during the run (>= `runStart`, ns) is "now" and cannot be
  /// equal on both sides; such an mtime only has to be "during the run" on both sides.
  /// The kernel stamps "now" on: the work dir root, `work/work` and `work/index` (created
  /// or changed by every r/w mount and by each index entry; the work dir root is also
  /// materialised at a different time for each side); dir index entries (nfs_export=on:
  /// mkdir'ed, times never set); and a metacopy upper whose data gets copied up later
  /// (`ovl_copy_up_meta_inode_data` writes the data into the existing upper inode and does
  /// not put its times back, so the file — with its index entry and aliases — gets the time
  /// of the data copy). Every other mtime is the lower's (restored on copied-up parents
  /// after each child) and must be equal to the nanosecond.
  static func differences(kernel: [Entry], ovltool: [Entry], runStart: Int64) -> [String] {
    var out: [String] = []
    let k = Dictionary(kernel.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a })
    let o = Dictionary(ovltool.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a })
    // Which whiteouts share one inode is the writer's business (the kernel shares one per
    // mount, makes its own for the orphans its mount cleans up, and stops sharing at
    // EMLINK): the shared whiteout's temp in the work dir and the link counts and link
    // lists of whiteouts are not compared.
    func isWhiteout(_ e: Entry) -> Bool { e.type == "char" && e.fields["rdev"] == "[0 0]" }
    func isSharedWhiteoutTemp(_ e: Entry) -> Bool { isWhiteout(e) && e.path.hasPrefix("work/") && e.path.contains("/#") }
    for path in Set(k.keys).union(o.keys).sorted() {
      guard let a = k[path] else {
        if let b = o[path], isSharedWhiteoutTemp(b) { continue }
        out.append("\(path): only in ovltool's result (\(o[path]!.type))")
        continue
      }
      guard let b = o[path] else {
        if isSharedWhiteoutTemp(a) { continue }
        out.append("\(path): only in the kernel's result (\(a.type))")
        continue
      }
      for field in Set(a.fields.keys).union(b.fields.keys).sorted() {
        let x = a.fields[field] ?? "(none)", y = b.fields[field] ?? "(none)"
        if x == y { continue }
        if (field == "links" || field == "nlink") && isWhiteout(a) && isWhiteout(b) { continue }
        if field == "blocks" {
          if a.type != "file" || b.type != "file" || blocksClose(x, y, size: a.fields["size"] ?? "0") { continue }
          out.append("\(path): blocks: kernel \(x) vs ovltool \(y) (size \(a.fields["size"] ?? "?"))")
          continue
        }
        if field == "mtime", let tx = Int64(x), let ty = Int64(y), tx >= runStart {
          if ty >= runStart { continue }
          out.append("\(path): mtime: kernel \(x) (stamped during the run) vs ovltool \(y) (before the run)")
          continue
        }
        if exempt(path, field, a.type) { continue }
        out.append("\(path): \(field): kernel \(x) vs ovltool \(y)")
      }
      for name in Set(a.xattrs.keys).union(b.xattrs.keys).sorted() {
        switch (a.xattrs[name], b.xattrs[name]) {
        case (let x?, let y?) where x != y: out.append("\(path): xattr \(name): kernel \(show(x)) vs ovltool \(show(y))")
        case (let x?, nil): out.append("\(path): xattr \(name): kernel \(show(x)) vs ovltool (missing)")
        case (nil, let y?): out.append("\(path): xattr \(name): kernel (missing) vs ovltool \(show(y))")
        default: break
        }
      }
    }
    return out
  }

  /// A merged-view line (oracle walker / `tree --json`) with an mtime stamped during the
  /// run replaced by `"run"` (see `differences`).
  static func normalizeViewLine(_ line: String, runStart: Int64) -> String {
    guard let r = line.range(of: #""mtime":[0-9]+"#, options: .regularExpression),
      let t = Int64(line[r].dropFirst(8)), t >= runStart
    else { return line }
    return line.replacingCharacters(in: r, with: #""mtime":"run""#)
  }

  static func show(_ v: String) -> String { v.isEmpty ? "(empty)" : v }

  static let dumper = #"""
    import ctypes, ctypes.util, fcntl, json, os, stat, struct, sys

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    AT_FDCWD = -100
    FS_IOC_GETFLAGS = 0x80086601
    TYPES = [(stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "symlink"), (stat.S_ISCHR, "char"),
             (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket")]

    def handle(path):
        # name_to_handle_at(AT_FDCWD, path, fh, &mnt, 0) with a 128-byte buffer: the same
        # type and bytes the kernel's exportfs_encode_inode_fh gives (spec 3.2).
        buf = ctypes.create_string_buffer(8 + 128)
        struct.pack_into("=Ii", buf, 0, 128, 0)
        mnt = ctypes.c_int(0)
        if libc.name_to_handle_at(AT_FDCWD, path, buf, ctypes.byref(mnt), 0) != 0:
            return None
        nbytes, htype = struct.unpack_from("=Ii", buf, 0)
        return (htype & 0xff, buf.raw[8:8 + nbytes].hex())

    def inode_flags(path, st):
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOATIME)
        except OSError:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            b = bytearray(8)
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, b)
            return struct.unpack("=q", bytes(b))[0] & 0xffffffff
        except OSError:
            return None
        finally:
            os.close(fd)

    def walk(top, label, out):
        stack = [(label, top)]
        while stack:
            rel, p = stack.pop()
            st = os.lstat(p)
            out.append((rel, p, st))
            if stat.S_ISDIR(st.st_mode):
                names = sorted(os.listdir(p))
                temps = [n for n in names if n.startswith(b"#")]
                def key(n):
                    s = os.lstat(os.path.join(p, n))
                    return (stat.S_IFMT(s.st_mode), s.st_mode, s.st_size, s.st_nlink, n)
                temps.sort(key=key)
                shown = {n: b"#TMP%d" % i for i, n in enumerate(temps)}
                for n in reversed(names):
                    stack.append((rel + b"/" + shown.get(n, n), os.path.join(p, n)))

    def normalize(name, v, byfh):
        if name.endswith("overlay.uuid"):
            return "<uuid %d bytes>" % len(v)
        if len(v) >= 21 and v[0] == 0 and v[1] == 0xfb and 21 <= v[2] <= len(v):
            fb = v[:v[2]]
            target = byfh.get((fb[4], fb[21:].hex()))
            if target is not None:
                return "fb flags=%02x type=%02x uuid=%s -> %s" % (fb[3], fb[4], fb[5:21].hex(), target.decode("utf-8", "backslashreplace"))
        return v.hex()

    def main():
        upper, work = os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2])
        entries = []
        walk(upper, b"upper", entries)
        walk(work, b"work", entries)
        byfh, byino = {}, {}
        for rel, p, st in entries:
            h = handle(p)
            if h:
                byfh.setdefault(h, rel)
            byino.setdefault((st.st_dev, st.st_ino), []).append(rel.decode("utf-8", "backslashreplace"))
        for rel, p, st in entries:
            rec = {"path": rel.decode("utf-8", "backslashreplace")}
            for pred, name in TYPES:
                if pred(st.st_mode):
                    rec["type"] = name
            rec["mode"] = stat.S_IMODE(st.st_mode)
            rec["uid"], rec["gid"] = st.st_uid, st.st_gid
            rec["size"], rec["blocks"], rec["nlink"] = st.st_size, st.st_blocks, st.st_nlink
            dev = stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            rec["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)] if dev else None
            rec["mtime"] = st.st_mtime_ns
            rec["flags"] = inode_flags(p, st)
            rec["links"] = sorted(byino[(st.st_dev, st.st_ino)])
            if stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(p).decode("utf-8", "backslashreplace")
            xs = {}
            for n in sorted(os.listxattr(p, follow_symlinks=False)):
                xs[n] = normalize(n, os.getxattr(p, n, follow_symlinks=False), byfh)
            rec["xattrs"] = xs
            print(json.dumps(rec, sort_keys=True))

    main()
    """#
}
