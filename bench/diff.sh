#!/bin/bash
# bench/diff.sh: `ovltool diff OLD NEW --to-tar FILE` against umoci's naive repack of the
# same change, on tmpfs, best of 3, printed as speedups (umoci / ovltool). Goal (issue 6):
# >= 3x.
#   OLD: N entries in N/100 directories, 1-4 KiB files, every 20th a hardlink, every 25th
#        with a user xattr, mtimes in whole seconds (as unpacked from an image; umoci's
#        tar rounds mtimes to the nearest second where tar and ovltool truncate).
#   NEW: a copy of OLD with ~1% of the files modified (content of the same or another
#        size, or mode and xattr only), ~1% deleted, ~1% added (files, some symlinks) and
#        one directory replaced by another with other names.
#   ovltool: `ovltool diff OLD NEW --to-tar` (uncompressed; also timed with --compress gzip).
#   umoci:   an image whose one layer is OLD (setup, not timed); then `umoci unpack` of it,
#            the same change made in bundle/rootfs (the script that made NEW, which touches
#            only the changed names: cheaper than `rsync -a --delete NEW/ rootfs/`), and
#            `umoci repack` to a new tag, timed together; repack alone is timed too, on a
#            bundle unpacked and changed once (repack without --refresh-bundle diffs against
#            the unpack's mtree each time). umoci 0.4.7 (Debian's) has no repack
#            --compress: it always writes gzip; --compress=none is used where it exists,
#            and the line says which ("umoci gzip" or "umoci none").
# Then, not timed: each layer (ovltool's and umoci's) applied with `ovltool apply` over OLD
# and mounted read-only must show NEW (type, mode, owner, size, whole-second mtime of
# non-directories, symlink target, content, user xattrs, hardlink groups); "ok" or exit 1.
# BENCH_DIFF_ENTRIES (default 10000) sets the size of OLD. Needs root (mount, umoci as root).
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/bench/table.sh"
OVLTOOL=${OVLTOOL:-$REPO/.build/release/ovltool}
N=${BENCH_DIFF_ENTRIES:-10000}
[ -x "$OVLTOOL" ] || { echo "diff.sh: build first (make build)" >&2; exit 1; }
command -v umoci >/dev/null || { echo "diff.sh: needs umoci (make deps)" >&2; exit 1; }
T=$(mktemp -d /dev/shm/ovlbench-diff.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"
python3 - "$N" <<'PY'
import os, sys
n = int(sys.argv[1]); dirs = max(1, n // 100)
for d in range(dirs):
    os.makedirs(f"old/d{d}")
    for f in range(99):
        p = f"old/d{d}/f{f}"
        if f % 20 == 19: os.link(f"old/d{d}/f{f-1}", p); continue
        with open(p, "wb") as h: h.write(os.urandom(1024 + (f * 37 % 3072)))
        if f % 25 == 0: os.setxattr(p, "user.bench", b"1")
        os.utime(p, (1600000000, 1600000000))
PY
# The change, deterministic (seeded data, fixed mtimes) so that NEW and umoci's rootfs get
# the same bytes. Prints how many names it changed.
cat > change.py <<'PY'
import os, random, shutil, sys
root, n = sys.argv[1], int(sys.argv[2]); dirs = max(1, n // 100)
rng = random.Random(6); t = 1700000000; changed = 0
def data(size): return rng.randbytes(size)
replaced = dirs // 2
for d in range(dirs):
    if d == replaced: continue
    for f in range(99):
        p, k = f"{root}/d{d}/f{f}", (d * 99 + f) % 100
        if k == 7:  # modified: same size, other size, or mode and xattr only
            kind = (d * 99 + f) // 100 % 3
            if kind == 2:
                os.chmod(p, 0o640); os.setxattr(p, "user.bench", b"2")
            else:
                with open(p, "r+b" if kind == 0 else "wb") as h:
                    h.write(data(os.path.getsize(p) if kind == 0 else 1024 + rng.randrange(3072)))
                os.utime(p, (t, t))
            changed += 1
        elif k == 41:
            os.unlink(p); changed += 1
    p = f"{root}/d{d}/n0"
    if d % 10 == 9: os.symlink("f0", p)
    else:
        with open(p, "wb") as h: h.write(data(1024 + rng.randrange(3072)))
        if d % 4 == 0: os.setxattr(p, "user.bench", b"new")
        os.utime(p, (t, t))
    changed += 1
d = f"{root}/d{replaced}"
shutil.rmtree(d); os.mkdir(d); changed += 100
for f in range(50):
    with open(f"{d}/g{f}", "wb") as h: h.write(data(1024 + rng.randrange(3072)))
    os.utime(f"{d}/g{f}", (t, t))
print(changed)
PY
cp -a old new
changed=$(python3 change.py new "$N")
# umoci's image with OLD as its one layer.
umoci init --layout img
umoci new --image img:base
umoci unpack --image img:base base >/dev/null
cp -a old/. base/rootfs/
umoci repack --image img:base base
rm -rf base
if umoci repack --help | grep -q -- --compress; then UCOMP=(--compress=none); ucomp=none; else UCOMP=(); ucomp=gzip; fi

best() { local b=999; for i in 1 2 3; do local s=$(date +%s.%N); "$@" >/dev/null 2>&1; local e=$(date +%s.%N); b=$(echo "x=$e-$s; if (x<$b) x else $b" | bc); done; echo $b; }
ovl_d() { rm -f "$T/o.tar"; "$OVLTOOL" diff "$T/old" "$T/new" --to-tar "$T/o.tar"; }
ovl_dz() { rm -f "$T/o.tar.gz"; "$OVLTOOL" diff "$T/old" "$T/new" --to-tar "$T/o.tar.gz" --compress gzip; }
umoci_all() {
  rm -rf "$T/b"
  umoci unpack --image "$T/img:base" "$T/b"
  python3 "$T/change.py" "$T/b/rootfs" "$N"
  umoci repack "${UCOMP[@]}" --image "$T/img:new" "$T/b"
}
umoci_repack() { umoci repack "${UCOMP[@]}" --image "$T/img:new" "$T/b"; }
od=$(best ovl_d); oz=$(best ovl_dz); ua=$(best umoci_all); ur=$(best umoci_repack)

# Correctness: each layer applied over OLD, mounted, equals NEW.
ulayer=$(python3 - <<'PY'
import json
def blob(d): return json.load(open("img/blobs/" + d.replace(":", "/")))
m = [m for m in json.load(open("img/index.json"))["manifests"]
     if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "new"][0]
print("img/blobs/" + blob(m["digest"])["layers"][-1]["digest"].replace(":", "/"))
PY
)
# Hardlink groups by the names that share an inode, not st_nlink: a lower file whose other
# name a whiteout hides still counts both links.
cat > list.py <<'PY'
import hashlib, os, stat, sys
root = sys.argv[1]; groups = {}; out = []
for dp, dns, fns in os.walk(root):
    dns.sort()
    for name in sorted(dns + fns):
        p = os.path.join(dp, name); r = os.path.relpath(p, root); st = os.lstat(p)
        line = [r, stat.filemode(st.st_mode), f"{st.st_uid}:{st.st_gid}"]
        if stat.S_ISLNK(st.st_mode): line.append("-> " + os.readlink(p))
        elif not stat.S_ISDIR(st.st_mode):
            line += [str(st.st_size), str(int(st.st_mtime)), hashlib.sha256(open(p, "rb").read()).hexdigest()]
            groups.setdefault((st.st_dev, st.st_ino), []).append(r)
        if not stat.S_ISLNK(st.st_mode):
            line += sorted(f"{x}={os.getxattr(p, x)!r}" for x in os.listxattr(p) if x.startswith("user."))
        out.append(" ".join(line))
out += sorted("link " + " ".join(g) for g in groups.values() if len(g) > 1)
print("\n".join(out))
PY
check() {  # check NAME LAYER: LAYER applied over OLD shows NEW
  mkdir "$T/$1.u" "$T/$1.w" "$T/$1.m"
  "$OVLTOOL" apply -o "lowerdir=$T/old,upperdir=$T/$1.u,workdir=$T/$1.w" "$2" >/dev/null
  unshare -m sh -c 'mount -t overlay overlay -o "ro,lowerdir=$1.u:$2" "$1.m" && python3 "$3" "$1.m"' - "$T/$1" "$T/old" "$T/list.py" > "$T/$1.list"
  cmp -s "$T/new.list" "$T/$1.list" && echo ok || { echo "FAIL ($1: diff $T/new.list $T/$1.list)"; diff "$T/new.list" "$T/$1.list" | head -20 >&2; return 1; }
}
python3 list.py new > new.list
ook=$(check ovl o.tar) || { echo "$ook"; exit 1; }
uok=$(check umoci "$ulayer") || { echo "$uok"; exit 1; }
printf 'diff: %d entries, %d changed  ovltool %.3fs (gzip %.3fs)  umoci unpack+change+repack %.3fs = %.1fx (repack alone %.3fs = %.1fx, umoci %s)  layers %s/%s KiB  check ovltool %s, umoci %s\n' \
  "$(find old | wc -l)" "$changed" "$od" "$oz" "$ua" "$(echo "$ua/$od" | bc -l)" "$ur" "$(echo "$ur/$od" | bc -l)" "$ucomp" \
  "$(($(stat -c %s o.tar) / 1024))" "$(($(stat -c %s "$ulayer") / 1024))" "$ook" "$uok"
bench_row "diff --to-tar $(find old | wc -l) entries / umoci unpack+change+repack (best of 3)" "$od" "$ua" -
