#!/bin/bash
# bench/fsck.sh [DIR]
#
# Benchmark `ovltool fsck -n` against a plain metadata walk of the same layers: every
# entry of l1, l2, l3, upper and work lstat'ed and every xattr read (listxattr plus
# getxattr, without following symlinks), in one Python process, as `find` with lstat plus
# reading every xattr would, without a process per file.
#
#   DIR                  stack made by bench/mkstack.sh (DIR/{l1,l2,l3,upper,work});
#                        if omitted, one is built in a temp dir and removed at exit
#   FSCK_BENCH_ENTRIES   entries for the temp stack (default 200000)
#   BENCH_REPS           timed repetitions, best is reported (default 3)
#   OVLTOOL              ovltool binary (default .build/release/ovltool)
#
# Prints best wall seconds and peak RSS of both, and the ratio fsck/walk (goal <= 1.5).
# fsck runs with -n: mkstack.sh's deliberate stale whiteouts make it exit 4. Needs root.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
OVLTOOL=${OVLTOOL:-$REPO/.build/release/ovltool}
REPS=${BENCH_REPS:-3}
TMP=$(mktemp -d /tmp/ovlfsckbench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

if [ $# -ge 1 ]; then
    DIR=$(cd "$1" && pwd) || exit 1
else
    DIR=$TMP/stack
    echo "building stack in $DIR (${FSCK_BENCH_ENTRIES:-200000} entries)..."
    "$REPO/bench/mkstack.sh" "$DIR" "${FSCK_BENCH_ENTRIES:-200000}" || exit 1
fi
[ -x "$OVLTOOL" ] || { echo "fsck.sh: $OVLTOOL not found (make build, or set OVLTOOL)" >&2; exit 1; }
OPTS="lowerdir=$DIR/l1:$DIR/l2:$DIR/l3,upperdir=$DIR/upper,workdir=$DIR/work"

cat > "$TMP/walk.py" <<'PYEOF'
import os, sys
n = 0
for layer in sys.argv[1:]:
    for root, dirs, files in os.walk(layer):
        for name in dirs + files:
            p = os.path.join(root, name)
            os.lstat(p)
            try:
                for a in os.listxattr(p, follow_symlinks=False):
                    os.getxattr(p, a, follow_symlinks=False)
            except OSError:
                pass
            n += 1
print(n)
PYEOF

# measure CMD...: prints "wall_s maxrss_kib rc" (wall clock, peak RSS via wait4)
measure() {
    python3 - "$@" <<'PYEOF'
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
print('%.3f %d %d' % (time.perf_counter() - t0, ru.ru_maxrss, os.waitstatus_to_exitcode(status)))
PYEOF
}

best() {  # best NAME CMD... -> BEST_T BEST_RSS
    local i t rss rc
    BEST_T=; BEST_RSS=0
    for ((i = 0; i <= REPS; i++)); do
        read -r t rss rc < <(measure "${@:2}")
        [ "$i" = 0 ] && { echo "  $1 warm-up: ${t}s, rc=$rc"; continue; }
        echo "  $1 run $i: ${t}s, ${rss} KiB, rc=$rc"
        if [ -z "$BEST_T" ] || awk -v a="$t" -v b="$BEST_T" 'BEGIN { exit !(a < b) }'; then BEST_T=$t; fi
        [ "$rss" -gt "$BEST_RSS" ] && BEST_RSS=$rss
    done
}

echo "entries in the layers: $(python3 "$TMP/walk.py" "$DIR/l1" "$DIR/l2" "$DIR/l3" "$DIR/upper" "$DIR/work")"
best walk python3 "$TMP/walk.py" "$DIR/l1" "$DIR/l2" "$DIR/l3" "$DIR/upper" "$DIR/work"; A_T=$BEST_T; A_RSS=$BEST_RSS
best fsck "$OVLTOOL" fsck -n -o "$OPTS"; B_T=$BEST_T; B_RSS=$BEST_RSS
echo
awk -v t="$A_T" -v r="$A_RSS" 'BEGIN { printf "(a) metadata walk (lstat + xattrs): %8.3f s   peak RSS %7.1f MiB\n", t, r / 1024 }'
awk -v t="$B_T" -v r="$B_RSS" 'BEGIN { printf "(b) ovltool fsck -n              : %8.3f s   peak RSS %7.1f MiB\n", t, r / 1024 }'
awk -v a="$A_T" -v b="$B_T" 'BEGIN { printf "ratio b/a: %.2f (goal <= 1.5)\n", b / a }'
