#!/bin/bash
# bench/fsck.sh [DIR]
#
# Benchmark `ovltool fsck -n` against `getfattr -R -h -d -m -` over the same layers (l1,
# l2, l3, upper, work): one walk that reads every entry's status and every xattr, the floor
# a metadata check cannot go below on one thread. Warm cache; the two sides alternate and
# each side's median is taken.
#
#   DIR                  stack made by bench/mkstack.sh (DIR/{l1,l2,l3,upper,work}, made
#                        by kernel mounts with index=on,redirect_dir=on); if omitted, one
#                        is built in a temp dir and removed at exit
#   FSCK_BENCH_ENTRIES   entries planned for the temp stack (default 135000: ~143k in
#                        the layers)
#   BENCH_REPS           timed runs of each side, the median is reported (default 5)
#   OVLTOOL              ovltool binary (default .build/release/ovltool)
#   BENCH_TABLE          file the ratio row is appended to (bench/table.sh)
#
# Prints each run, the medians and peak RSS of both, and the ratio fsck/getfattr (goal
# <= 1.0). The stack is kernel-made, so fsck must find nothing: any exit status but 0
# fails the benchmark. Needs root.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
OVLTOOL=${OVLTOOL:-$REPO/.build/release/ovltool}
REPS=${BENCH_REPS:-5}
. "$REPO/bench/table.sh"
. "$REPO/bench/measure.sh"
TMP=$(mktemp -d /tmp/ovlfsckbench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

if [ $# -ge 1 ]; then
    DIR=$(cd "$1" && pwd) || exit 1
else
    DIR=$TMP/stack
    echo "building stack in $DIR (${FSCK_BENCH_ENTRIES:-135000} entries)..."
    # its own mount namespace: see bench/stackcache.sh
    unshare --mount --propagation private "$REPO/bench/mkstack.sh" "$DIR" "${FSCK_BENCH_ENTRIES:-135000}" || exit 1
fi
[ -x "$OVLTOOL" ] || { echo "fsck.sh: $OVLTOOL not found (make build, or set OVLTOOL)" >&2; exit 1; }
OPTS="lowerdir=$DIR/l1:$DIR/l2:$DIR/l3,upperdir=$DIR/upper,workdir=$DIR/work,index=on,redirect_dir=on"


LAYERS=("$DIR/l1" "$DIR/l2" "$DIR/l3" "$DIR/upper" "$DIR/work")
A=(getfattr --absolute-names -R -h -d -m - "${LAYERS[@]}")
B=("$OVLTOOL" fsck -n -o "$OPTS")

# One warm-up of each, then REPS runs of each side, alternating.
echo "entries in the layers: $(find "${LAYERS[@]}" -mindepth 1 | wc -l)"
A_TS=(); B_TS=(); A_RSS=0; B_RSS=0; FAIL=0
for ((i = 0; i <= REPS; i++)); do
    read -r ta ra ca < <(measure "${A[@]}")
    read -r tb rb cb < <(measure "${B[@]}")
    if [ "$i" = 0 ]; then
        echo "  warm-up: getfattr ${ta}s rc=$ca, fsck ${tb}s rc=$cb"
        continue
    fi
    echo "  run $i: getfattr ${ta}s ${ra} KiB rc=$ca, fsck ${tb}s ${rb} KiB rc=$cb"
    A_TS+=("$ta"); B_TS+=("$tb")
    [ "$ra" -gt "$A_RSS" ] && A_RSS=$ra
    [ "$rb" -gt "$B_RSS" ] && B_RSS=$rb
    [ "$cb" = 0 ] || FAIL=1
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
A_T=$(median "${A_TS[@]}"); B_T=$(median "${B_TS[@]}")
echo
awk -v t="$A_T" -v r="$A_RSS" 'BEGIN { printf "(a) getfattr -R -h -d -m - : %8.3f s   peak RSS %7.1f MiB (median of runs)\n", t, r / 1024 }'
awk -v t="$B_T" -v r="$B_RSS" 'BEGIN { printf "(b) ovltool fsck -n        : %8.3f s   peak RSS %7.1f MiB\n", t, r / 1024 }'
bench_row "fsck -n / getfattr -R ($(find "${LAYERS[@]}" -mindepth 1 | wc -l) entries, median of $REPS)" "$B_T" "$A_T" 1.0
if [ "$FAIL" = 1 ]; then
    echo "fsck.sh: fsck -n did not exit 0 on a kernel-made stack:" >&2
    "${B[@]}" -v >&2
    exit 1
fi
