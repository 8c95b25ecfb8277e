#!/bin/bash
# bench/run.sh [DIR]
#
# Benchmark `ovltool tree --json --hash` against the Python oracle walking a
# kernel overlay mount of the same stack.
#
#   DIR            stack made by bench/mkstack.sh (DIR/{l1,l2,l3,upper,work});
#                  if omitted, one is built in a temp dir and removed at exit
#   BENCH_ENTRIES  entries for the temp stack (default 100000)
#   BENCH_REPS     timed repetitions, best is reported (default 3)
#   OVLTOOL        ovltool binary (default .build/release/ovltool)
#   BENCH_KEEP=1   keep the temp stack and the outputs
#
# Prints best wall seconds and peak RSS of (a) python3 Tests/oracle/ovlwalk.py
# MNT --hash and (b) ovltool tree --json --hash -o ..., the ratio b/a, and
# whether both outputs are identical (after dropping ovltool's ,"layer":N).
# Needs root (mount).
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
OVLTOOL=${OVLTOOL:-$REPO/.build/release/ovltool}
REPS=${BENCH_REPS:-3}
. "$REPO/bench/table.sh"
WALK=$REPO/Tests/oracle/ovlwalk.py

TMP=$(mktemp -d /tmp/ovlbench.XXXXXX)
MNT=$TMP/mnt
MOUNTED=0
cleanup() {
    if [ "$MOUNTED" = 1 ]; then
        umount "$MNT" || umount -l "$MNT"
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "kept: $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ $# -ge 1 ]; then
    DIR=$(cd "$1" && pwd) || exit 1
else
    DIR=$TMP/stack
    echo "building stack in $DIR (${BENCH_ENTRIES:-100000} entries)..."
    # its own mount namespace: see bench/stackcache.sh
    unshare --mount --propagation private "$REPO/bench/mkstack.sh" "$DIR" "${BENCH_ENTRIES:-100000}" || exit 1
fi
for l in l1 l2 l3 upper work; do
    [ -d "$DIR/$l" ] || { echo "run.sh: $DIR/$l missing (not a mkstack.sh stack?)" >&2; exit 1; }
done

OPTS="lowerdir=$DIR/l1:$DIR/l2:$DIR/l3,upperdir=$DIR/upper,workdir=$DIR/work"
mkdir -p "$MNT"
if ! mount -t overlay overlay -o "ro,$OPTS" "$MNT"; then
    echo "run.sh: read-only overlay mount with upperdir failed:" >&2
    dmesg 2>/dev/null | grep -i overlay | tail -3 >&2
    exit 1
fi
MOUNTED=1

HAVE_TOOL=1
if [ ! -x "$OVLTOOL" ]; then
    echo "NOTE: $OVLTOOL not found (build with 'swift build -c release' or set OVLTOOL);"
    echo "      timing only the python oracle."
    HAVE_TOOL=0
fi

# measure OUT CMD...: run CMD with stdout to OUT; prints "wall_s maxrss_kib rc"
# (wall clock via perf_counter, peak RSS via wait4 rusage, as GNU time does)
measure() {
    python3 - "$@" <<'PYEOF'
import os, sys, time
out = sys.argv[1]
cmd = sys.argv[2:]
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(fd, 1)
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
t = time.perf_counter() - t0
rc = os.waitstatus_to_exitcode(status)
print('%.3f %d %d' % (t, ru.ru_maxrss, rc))
PYEOF
}

CMD_A=(python3 "$WALK" "$MNT" --hash)
CMD_B=("$OVLTOOL" tree --json --hash -o "$OPTS")

# entries and data in the merged view (from the warm-up output)
echo "warming up (untimed pass of each)..."
read -r t rss rc_a < <(measure "$TMP/a.jsonl" "${CMD_A[@]}")
if [ "$rc_a" != 0 ]; then
    echo "WARNING: ovlwalk exit status $rc_a ($(grep -c '"error":' "$TMP/a.jsonl") error lines), e.g.:"
    grep '"error":' "$TMP/a.jsonl" | head -3
fi
python3 - "$TMP/a.jsonl" <<'PYEOF'
import json, sys
n = size = 0
kinds = {}
for line in open(sys.argv[1], 'rb'):
    n += 1
    try:
        o = json.loads(line.decode('utf-8', 'surrogateescape'))
    except ValueError:
        continue
    kinds[o.get('type', 'error')] = kinds.get(o.get('type', 'error'), 0) + 1
    if o.get('type') == 'file':
        size += o['size']
print('merged view: %d entries (%s), %.1f MiB file data'
      % (n, ', '.join('%s %d' % kv for kv in sorted(kinds.items())), size / 2**20))
PYEOF
if [ "$HAVE_TOOL" = 1 ]; then
    read -r t rss rc_b < <(measure "$TMP/b.jsonl" "${CMD_B[@]}")
    [ "$rc_b" != 0 ] && echo "WARNING: ovltool exit status $rc_b"
fi

best() {  # best NAME CMD... -> sets BEST_T BEST_RSS
    local i t rss rc
    BEST_T=; BEST_RSS=0
    for ((i = 1; i <= REPS; i++)); do
        read -r t rss rc < <(measure /dev/null "${@:2}")
        echo "  $1 run $i: ${t}s, ${rss} KiB, rc=$rc"
        if [ -z "$BEST_T" ] || awk -v a="$t" -v b="$BEST_T" 'BEGIN { exit !(a < b) }'; then
            BEST_T=$t
        fi
        [ "$rss" -gt "$BEST_RSS" ] && BEST_RSS=$rss
    done
}

echo "timing ($REPS runs each, best taken)..."
best a "${CMD_A[@]}"; A_T=$BEST_T; A_RSS=$BEST_RSS
if [ "$HAVE_TOOL" = 1 ]; then
    best b "${CMD_B[@]}"; B_T=$BEST_T; B_RSS=$BEST_RSS
fi

echo
echo "stack: $DIR"
awk -v t="$A_T" -v r="$A_RSS" 'BEGIN { printf "(a) python ovlwalk --hash : %8.3f s   peak RSS %7.1f MiB\n", t, r / 1024 }'
if [ "$HAVE_TOOL" = 1 ]; then
    awk -v t="$B_T" -v r="$B_RSS" 'BEGIN { printf "(b) ovltool tree --hash   : %8.3f s   peak RSS %7.1f MiB\n", t, r / 1024 }'
    awk -v a="$A_T" -v b="$B_T" 'BEGIN { printf "ratio b/a: %.2f\n", b / a }'
    bench_row "tree --json --hash / python ovlwalk.py on a mount (best of $REPS)" "$B_T" "$A_T" -
    sed -E 's/,"layer":[0-9]+//g' "$TMP/b.jsonl" > "$TMP/b.nolayer.jsonl"
    if cmp -s "$TMP/a.jsonl" "$TMP/b.nolayer.jsonl"; then
        echo "outputs identical: yes ($(wc -l < "$TMP/a.jsonl") lines)"
    else
        echo "outputs identical: NO (a=$(wc -l < "$TMP/a.jsonl") lines, b=$(wc -l < "$TMP/b.nolayer.jsonl") lines); first differences:"
        diff "$TMP/a.jsonl" "$TMP/b.nolayer.jsonl" | head -20 | cut -c1-300
        [ "${BENCH_KEEP:-0}" = 1 ] || echo "(set BENCH_KEEP=1 to keep $TMP/a.jsonl and b.jsonl)"
    fi
else
    echo "(b) skipped: no ovltool binary at $OVLTOOL"
fi
