#!/bin/bash
# bench/image.sh: ovltool export/apply against GNU tar on the same upper, on tmpfs,
# uncompressed, the median of BENCH_REPS runs each (default 7, alternating), printed as
# ratios (ovltool / tar). Goal (issue 17): <= 1.0x.
#   export: `ovltool export` vs `tar --xattrs --format=pax --sort=name -c` of the upper
#   apply:  `ovltool apply` into an empty upper vs `tar --xattrs -x` into an empty dir
# BENCH_IMAGE_ENTRIES (default 10000) sets the size of the upper.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
OVLTOOL=${OVLTOOL:-$REPO/.build/release/ovltool}
N=${BENCH_IMAGE_ENTRIES:-10000}
. "$REPO/bench/table.sh"
[ -x "$OVLTOOL" ] || { echo "image.sh: build first (make build)" >&2; exit 1; }
T=$(mktemp -d /dev/shm/ovlbench-image.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"
mkdir -p lower upper work
# The upper: N entries in N/100 directories, 1-4 KiB files, every 20th a hardlink, every
# 25th with a user xattr, 1% whiteouts of lower files.
python3 - "$N" <<'PY'
import os, sys
n = int(sys.argv[1]); dirs = max(1, n // 100)
for d in range(dirs):
    os.makedirs(f"lower/d{d}", exist_ok=True); os.makedirs(f"upper/d{d}", exist_ok=True)
    open(f"lower/d{d}/gone", "w").write("x")
    os.mknod(f"upper/d{d}/gone", 0o20000, 0)
    for f in range(99):
        p = f"upper/d{d}/f{f}"
        if f % 20 == 19: os.link(f"upper/d{d}/f{f-1}", p); continue
        with open(p, "wb") as h: h.write(os.urandom(1024 + (f * 37 % 3072)))
        if f % 25 == 0: os.setxattr(p, "user.bench", b"1")
PY
REPS=${BENCH_REPS:-7}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# pair PREP_A A PREP_B B: A and B run alternately REPS times, each after its PREP (untimed:
# emptying the target), so that drift in this VM's speed hits both alike; prints the
# median run of each (the best of a few runs rewards luck, not speed).
pair() {
  local as=() bs=() s e i
  for ((i = 0; i < REPS; i++)); do
    "$1"; s=$(date +%s.%N); "$2" >/dev/null 2>&1; e=$(date +%s.%N); as+=("$(echo "$e-$s" | bc)")
    "$3"; s=$(date +%s.%N); "$4" >/dev/null 2>&1; e=$(date +%s.%N); bs+=("$(echo "$e-$s" | bc)")
  done
  echo "$(median "${as[@]}") $(median "${bs[@]}")"
}
none() { :; }
tar_c() { tar --xattrs --format=pax --sort=name -cf "$T/t.tar" -C "$T/upper" .; }
ovl_c() { "$OVLTOOL" export -o "lowerdir=$T/lower,upperdir=$T/upper,workdir=$T/work" --output "$T/o.tar"; }
tar_prep() { rm -rf "$T/x"; mkdir "$T/x"; }
tar_x() { tar --xattrs -xf "$T/t.tar" -C "$T/x"; }
ovl_prep() { rm -rf "$T/u2" "$T/w2"; mkdir "$T/u2" "$T/w2"; }
ovl_x() { "$OVLTOOL" apply -o "lowerdir=$T/lower,upperdir=$T/u2,workdir=$T/w2" "$T/o.tar"; }
read -r tc oc <<< "$(pair none tar_c none ovl_c)"; read -r tx ox <<< "$(pair tar_prep tar_x ovl_prep ovl_x)"
printf 'image: %d entries  export %.3fs vs tar -c %.3fs = %.2fx   apply %.3fs vs tar -x %.3fs = %.2fx\n' \
  "$(find upper | wc -l)" "$oc" "$tc" "$(echo "$oc/$tc" | bc -l)" "$ox" "$tx" "$(echo "$ox/$tx" | bc -l)"
bench_row "export $(find upper | wc -l) entries / tar -c (median of $REPS)" "$oc" "$tc" 1.0
bench_row "apply $(find upper | wc -l) entries / tar -x (median of $REPS)" "$ox" "$tx" 1.0
