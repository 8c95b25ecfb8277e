#!/bin/bash
# bench/scale.sh: time per entry and peak RSS of fsck -n, tree --json, export and apply
# as the stack grows (issue 17): they must stay flat (time per entry within 1.3x from 10^5
# to 10^6 entries) and bounded (peak RSS < 64 MiB at 10^6, with <= 10^4 names a directory:
# what grows with the largest directory and the depth, not with the entry count).
#
# Each stack is bench/mkstack.sh's 3-layer stack (every layer above the bottom one written
# through a kernel mount with index=on,redirect_dir=on; 16-44 names a directory), files
# capped at 4 KiB (metadata, not data, is measured), built once and kept in
# $BENCH_SCALE_CACHE/stack-$GENERATOR-N (a new generator version builds anew; remove the
# directory to get the space back). Then one directory of 10^6 names (empty files in a
# plain upper), for its RSS.
#
#   BENCH_SCALE         the largest size (default 1000000; 10000000 adds a stack of 10^7:
#                       ~45 GB of disk and an hour to build)
#   BENCH_SCALE_REPS    timed runs of each command at each size, the median is reported
#                       (default 3)
#   BENCH_SCALE_CACHE   where the stacks are kept (default /var/tmp/ovltool-bench)
#   OVLTOOL             ovltool binary (default .build/release/ovltool)
#   BENCH_TABLE         file the rows are appended to (bench/table.sh)
#
# The rows for `make bench`'s table: "<command> time/entry 10^6 / 10^5" (goal 1.3) and
# "<command> peak RSS at 10^6 (MiB) / 64 MiB" (ours and baseline in MiB, goal 1.0). Needs
# root (mount, mknod, chown). `bash bench/scale.sh --build` only builds what is missing.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
OVLTOOL=${OVLTOOL:-$REPO/.build/release/ovltool}
MAX=${BENCH_SCALE:-1000000}
REPS=${BENCH_SCALE_REPS:-3}
CACHE=${BENCH_SCALE_CACHE:-/var/tmp/ovltool-bench}
. "$REPO/bench/table.sh"
. "$REPO/bench/measure.sh"
[ -x "$OVLTOOL" ] || { echo "scale.sh: $OVLTOOL not found (make build, or set OVLTOOL)" >&2; exit 1; }
. "$REPO/bench/stackcache.sh"
mkdir -p "$CACHE"
RUN=$(mktemp -d "$CACHE/run.XXXXXX")
trap 'rm -rf "$RUN"' EXIT
trap 'exit 130' INT TERM

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

stack() { cached_stack "$@"; }

# The one directory of 10^6 names: empty files in the upper, an empty lower.
bigdir() {
    local dir=$CACHE/bigdir-1
    if [ ! -e "$dir/done" ]; then
        rm -rf "$dir"
        echo "scale: making one directory of 10^6 names in $dir (once)..." >&2
        mkdir -p "$dir/lower" "$dir/upper/big" "$dir/work"
        python3 -c '
import os, sys
d = sys.argv[1]
for i in range(1000000):
    os.close(os.open("%s/f%07d" % (d, i), os.O_CREAT | os.O_WRONLY, 0o644))' "$dir/upper/big" || return 1
        echo 1000002 > "$dir/entries"
        touch "$dir/done"
    fi
    echo "$dir"
}

# run_size N DIR LOWERS: REPS runs of each command on the stack in DIR; sets T_<cmd>
# (median wall seconds), M_<cmd> (peak RSS in KiB, the highest of the runs) and N_<cmd>
# (entries it handles: those of the layers for fsck and tree, of the layer for export and
# apply).
run_size() {
    local n=$1 dir=$2 lowers=$3 entries opts cmd i t r c ts rss
    entries=$(cat "$dir/entries")
    opts="lowerdir=$lowers,upperdir=$dir/upper,workdir=$dir/work,index=on,redirect_dir=on"
    # The upper the exported layer is applied to: the same lowers, an empty upper.
    local aopts="lowerdir=$lowers,upperdir=$RUN/up,workdir=$RUN/wk,index=on,redirect_dir=on"
    echo "scale: $n: $entries entries in the layers"
    # warm the cache (and check the stack is clean: a kernel-made stack has no findings)
    measure "$OVLTOOL" fsck -n -o "$opts" > /dev/null 2>&1
    "$OVLTOOL" export --resolve -o "$opts" --output "$RUN/layer.tar" > /dev/null 2>&1 || return 1
    local layer_entries
    layer_entries=$(tar -tf "$RUN/layer.tar" 2>/dev/null | wc -l)
    echo "scale: $n: $layer_entries entries in the exported layer"
    for cmd in fsck tree export apply; do
        ts=(); rss=0
        for ((i = 1; i <= REPS; i++)); do
            case $cmd in
                fsck) read -r t r c < <(measure "$OVLTOOL" fsck -n -o "$opts" 2>/dev/null) ;;
                tree) read -r t r c < <(measure "$OVLTOOL" tree --json -o "$opts" 2>/dev/null) ;;
                export) read -r t r c < <(measure "$OVLTOOL" export --resolve -o "$opts" --output "$RUN/again.tar" 2>/dev/null) ;;
                apply)
                    rm -rf "$RUN/up" "$RUN/wk"; mkdir "$RUN/up" "$RUN/wk"
                    read -r t r c < <(measure "$OVLTOOL" apply -o "$aopts" "$RUN/layer.tar" 2>/dev/null) ;;
            esac
            [ "$c" = 0 ] || { echo "scale: $cmd at $n exited $c" >&2; return 1; }
            ts+=("$t"); [ "$r" -gt "$rss" ] && rss=$r
        done
        t=$(median "${ts[@]}")
        printf -v "T_$cmd" '%s' "$t"
        printf -v "M_$cmd" '%s' "$rss"
        local e=$entries
        case $cmd in export|apply) e=$layer_entries ;; esac
        printf -v "N_$cmd" '%s' "$e"
        awk -v n="$n" -v c="$cmd" -v t="$t" -v e="$e" -v r="$rss" \
            'BEGIN { printf "scale: %-8s %-7s %8.3f s  %6.2f us/entry  peak RSS %6.1f MiB\n", n, c, t, t / e * 1e6, r / 1024 }'
    done
    rm -rf "$RUN/up" "$RUN/wk" "$RUN/layer.tar" "$RUN/again.tar"
}

SIZES=(100000)
[ "$MAX" -ge 1000000 ] && SIZES+=(1000000)
[ "$MAX" -ge 10000000 ] && SIZES+=(10000000)
if [ "${1:-}" = --build ]; then  # only build what is missing
    for n in "${SIZES[@]}"; do stack "$n" > /dev/null || exit 1; done
    bigdir > /dev/null || exit 1
    exit 0
fi
ROWS=()
for n in "${SIZES[@]}"; do
    dir=$(stack "$n") || { echo "scale: could not build the stack of $n" >&2; exit 1; }
    run_size "$n" "$dir" "$dir/l1:$dir/l2:$dir/l3" || exit 1
    for cmd in fsck tree export apply; do
        t=T_$cmd; m=M_$cmd; e=N_$cmd
        printf -v "T_${cmd}_$n" '%s' "${!t}"
        printf -v "M_${cmd}_$n" '%s' "${!m}"
        printf -v "N_${cmd}_$n" '%s' "${!e}"
    done
done

echo
echo "| entries | command | s | us/entry | peak RSS (MiB) |"
echo "|---|---|---|---|---|"
for n in "${SIZES[@]}"; do
    for cmd in fsck tree export apply; do
        t=T_${cmd}_$n; m=M_${cmd}_$n; e=N_${cmd}_$n
        awk -v e="${!e}" -v c="$cmd" -v t="${!t}" -v r="${!m}" \
            'BEGIN { printf "| %d | %s | %.2f | %.2f | %.1f |\n", e, c, t, t / e * 1e6, r / 1024 }'
    done
done

# The ratios: time per entry at 10^6 against 10^5, peak RSS at 10^6 against 64 MiB.
[ "$MAX" -ge 1000000 ] && for cmd in fsck tree export apply; do
    a=T_${cmd}_1000000; b=T_${cmd}_100000; m=M_${cmd}_1000000; ea=N_${cmd}_1000000; eb=N_${cmd}_100000
    pa=$(awk -v t="${!a}" -v e="${!ea}" 'BEGIN { printf "%.9f", t / e }')
    pb=$(awk -v t="${!b}" -v e="${!eb}" 'BEGIN { printf "%.9f", t / e }')
    bench_row "scale: $cmd time/entry, 10^6 / 10^5 entries (us)" "$(awk -v p="$pa" 'BEGIN { print p * 1e6 }')" "$(awk -v p="$pb" 'BEGIN { print p * 1e6 }')" 1.3
    bench_row "scale: $cmd peak RSS at 10^6 entries / 64 MiB (MiB)" "$(awk -v r="${!m}" 'BEGIN { print r / 1024 }')" 64 1.0
done
if [ "$MAX" -ge 10000000 ]; then
    for cmd in fsck tree export apply; do
        a=T_${cmd}_10000000; b=T_${cmd}_1000000; ea=N_${cmd}_10000000; eb=N_${cmd}_1000000
        bench_row "scale: $cmd time/entry, 10^7 / 10^6 entries (us)" \
            "$(awk -v t="${!a}" -v e="${!ea}" 'BEGIN { print t / e * 1e6 }')" "$(awk -v t="${!b}" -v e="${!eb}" 'BEGIN { print t / e * 1e6 }')" 1.3
    done
fi

# One directory of 10^6 names: its peak RSS (it grows with the largest directory).
dir=$(bigdir) || exit 1
REPS=1 run_size bigdir "$dir" "$dir/lower" || exit 1
for cmd in fsck tree export apply; do
    m=M_$cmd
    awk -v c="$cmd" -v r="${!m}" 'BEGIN { printf "scale: one directory of 10^6 names: %s peak RSS %.1f MiB\n", c, r / 1024 }'
done
