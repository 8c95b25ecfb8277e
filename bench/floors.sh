#!/bin/bash
# bench/floors.sh: `ovltool tree --json` of the merged view against its floor, the tools
# that read the same metadata from the layers: `find -printf` (type, mode, owner, size,
# mtime, target: one statx per entry) plus `getfattr -R -h -d -m -` (every xattr) over the
# same layers (l1, l2, l3, upper). Warm cache; the sides alternate, BENCH_REPS runs each
# (default 5), and each side's median is taken (the floor's run is the sum of its two
# tools). The other floors: fsck -n against getfattr -R in bench/fsck.sh, export and apply
# against GNU tar in bench/image.sh.
#
#   DIR (argument)   a stack made by bench/mkstack.sh; default: bench/stackcache.sh's stack
#                    of 10^5 entries (built once, kept in /var/tmp/ovltool-bench)
#   OVLTOOL          ovltool binary (default .build/release/ovltool)
#   BENCH_TABLE      file the row is appended to (bench/table.sh)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
OVLTOOL=${OVLTOOL:-$REPO/.build/release/ovltool}
REPS=${BENCH_REPS:-5}
. "$REPO/bench/table.sh"
. "$REPO/bench/stackcache.sh"
[ -x "$OVLTOOL" ] || { echo "floors.sh: $OVLTOOL not found (make build, or set OVLTOOL)" >&2; exit 1; }
if [ $# -ge 1 ]; then
    DIR=$(cd "$1" && pwd) || exit 1
else
    DIR=$(cached_stack 100000) || exit 1
fi
OPTS="lowerdir=$DIR/l1:$DIR/l2:$DIR/l3,upperdir=$DIR/upper,workdir=$DIR/work,index=on,redirect_dir=on"
LAYERS=("$DIR/l1" "$DIR/l2" "$DIR/l3" "$DIR/upper")

# seconds CMD...: wall seconds of one run (output to /dev/null); fails if CMD does
seconds() {
    local s e
    s=$(date +%s%N)
    "$@" > /dev/null 2>&1 || { echo "floors.sh: failed: $*" >&2; return 1; }
    e=$(date +%s%N)
    awk -v s="$s" -v e="$e" 'BEGIN { printf "%.3f", (e - s) / 1e9 }'
}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

ours=(); floor=()
for ((i = 0; i <= REPS; i++)); do
    f1=$(seconds find "${LAYERS[@]}" -printf '%y %m %U %G %s %T@ %p %l\n') || exit 1
    f2=$(seconds getfattr --absolute-names -R -h -d -m - "${LAYERS[@]}") || exit 1
    t=$(seconds "$OVLTOOL" tree --json -o "$OPTS") || exit 1
    f=$(awk -v a="$f1" -v b="$f2" 'BEGIN { printf "%.3f", a + b }')
    [ "$i" = 0 ] && { echo "  warm-up: find+getfattr ${f}s, tree ${t}s"; continue; }
    echo "  run $i: find ${f1}s + getfattr ${f2}s = ${f}s, tree --json ${t}s"
    floor+=("$f"); ours+=("$t")
done
bench_row "tree --json / find -printf + getfattr -R ($(cat "$DIR/entries" 2>/dev/null || echo '?') entries, median of $REPS)" \
    "$(median "${ours[@]}")" "$(median "${floor[@]}")" 1.0
