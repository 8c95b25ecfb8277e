#!/bin/bash
# bench/namespace.sh: `ovltool apply-script` with 10,000 mixed namespace operations against
# the same script through a kernel mount (Tests/oracle/ovlops.py doing each line with the
# system call it names), same filesystem, same run, printed as a ratio (ovltool / kernel).
# The stack: one lower of 260 dirs x 40 files. The operations: new files (put), copy-ups by
# chmod/chown/touch/setxattr, whiteouts (rm), renames of files, hard links, symlinks, mkdir,
# rm -r of lower dirs. The mount is not timed (as ovltool's start-up is); ovltool's time
# includes its fsyncs, the kernel's none. Needs root; runs in a private mount namespace.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
OVLTOOL=${OVLTOOL:-$REPO/.build/release/ovltool}
BASE=${BENCH_DIR:-/tmp}
OPS=${BENCH_NAMESPACE_OPS:-10000}
[ -x "$OVLTOOL" ] || { echo "namespace.sh: build first (make build)" >&2; exit 1; }
T=$(mktemp -d "$BASE/ovlbench-ns.XXXXXX")
trap 'rm -rf "$T"' EXIT

python3 - "$T" "$OPS" <<'PY'
import os, random, sys
t, ops = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
lower = t + "/lower"
for d in range(260):
    os.makedirs(f"{lower}/d{d}")
    for f in range(40):
        with open(f"{lower}/d{d}/f{f}", "w") as fh:
            fh.write(f"file {d} {f}\n" * 4)
with open(t + "/data", "w") as fh:
    fh.write("new contents\n" * 20)
lines, n = [], 0
files = [f"d{d}/f{f}" for d in range(260) for f in range(40)]
rng.shuffle(files)
removed_dirs = set()
while len(lines) < ops:
    k = rng.randrange(100)
    d = rng.randrange(250)
    if d in removed_dirs:
        continue
    if not files:
        break
    f = files.pop()
    if f.split("/")[0] in {f"d{x}" for x in removed_dirs}:
        continue
    n += 1
    if k < 20: lines.append(f"put {t}/data d{d}/new{n}")
    elif k < 32: lines.append(f"chmod 0600 {f}")
    elif k < 40: lines.append(f"chown 1:1 {f}")
    elif k < 46: lines.append(f"touch -d 1600000000 {f}")
    elif k < 52: lines.append(f"setxattr user.k v{n} {f}")
    elif k < 66: lines.append(f"rm {f}")
    elif k < 76: lines.append(f"mv {f} {f}.moved")
    elif k < 82: lines.append(f"ln {f} {f}.link")
    elif k < 88: lines.append(f"symlink ../target d{d}/sym{n}")
    elif k < 96: lines.append(f"mkdir d{d}/dir{n}")
    elif k < 99: lines.append(f"put {t}/data {f}")
    else:
        victim = 250 + len(removed_dirs)
        if victim < 260:
            removed_dirs.add(victim)
            lines.append(f"rm -r d{victim}")
with open(t + "/script", "w") as fh:
    fh.write("\n".join(lines[:ops]) + "\n")
PY

exec unshare --mount --propagation private bash -s "$T" "$OVLTOOL" "$REPO" <<'INNER'
set -eu
T=$1 OVLTOOL=$2 REPO=$3
. "$REPO/bench/table.sh"
now() { date +%s.%N; }
fresh() { rm -rf "$T/u" "$T/w"; mkdir -p "$T/u" "$T/w" "$T/m"; sync; sleep 1; }
kernel_run() {
  mount -t overlay bench -o "lowerdir=$T/lower,upperdir=$T/u,workdir=$T/w" "$T/m"
  local s=$(now)
  python3 "$REPO/Tests/oracle/ovlops.py" "$T/m" "$T/script" > "$T/kernel.fail" 2> "$T/kernel.err" || { cat "$T/kernel.err" >&2; exit 1; }
  local e=$(now)
  umount "$T/m"
  echo "$e - $s" | bc
}
ovltool_run() {
  local s=$(now)
  "$OVLTOOL" apply-script --keep-going -o "lowerdir=$T/lower,upperdir=$T/u,workdir=$T/w" "$T/script" 2> "$T/ovltool.err" || true
  local e=$(now)
  echo "$e - $s" | bc
}
best_k=999999 best_o=999999
# Removing the last round's 10,000 files keeps the disk busy after sync returns: every run
# starts after a settle, and the order alternates.
for round in 1 2 3 4; do
  if [ $((round % 2)) = 1 ]; then
    fresh; sleep 2; k=$(kernel_run); fresh; sleep 2; o=$(ovltool_run)
  else
    fresh; sleep 2; o=$(ovltool_run); fresh; sleep 2; k=$(kernel_run)
  fi
  best_k=$(echo "if ($k < $best_k) $k else $best_k" | bc)
  best_o=$(echo "if ($o < $best_o) $o else $best_o" | bc)
done
echo "apply-script, $(wc -l < "$T/script") mixed operations ($(wc -l < "$T/kernel.fail") failing through the kernel, $(grep -c '^ovltool:' "$T/ovltool.err" || true) in ovltool), best of 4:"
printf '  kernel (python driver) %8.3f s   ovltool %8.3f s   ratio %.2f (goal <= 2)\n' "$best_k" "$best_o" "$(echo "$best_o / $best_k" | bc -l)"
bench_row "apply-script $(wc -l < "$T/script") operations / kernel (python driver) (best of 4)" "$best_o" "$best_k" 2
INNER
