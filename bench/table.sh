#!/bin/bash
# bench/table.sh: the one table of ratios `make bench` prints at the end.
#
# A benchmark sources this file and calls `bench_row NAME OURS BASELINE GOAL` for each
# ratio it measures (OURS and BASELINE in seconds, GOAL the highest ratio that passes, or
# "-" for none); the row is printed at once and, when BENCH_TABLE names a file, appended
# to it. `bash bench/table.sh FILE` prints the collected rows as a Markdown table, with
# the machine they ran on, as ARCHITECTURE.md keeps it.

bench_row() {  # bench_row NAME OURS BASELINE GOAL
    local ratio
    ratio=$(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.2f", a / b }')
    printf 'bench: %s: ours %.3f s, baseline %.3f s, ratio %s (goal %s)\n' "$1" "$2" "$3" "$ratio" "$4"
    if [ -n "${BENCH_TABLE:-}" ]; then
        printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$ratio" "$4" >> "$BENCH_TABLE"
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    [ $# = 1 ] || { echo "usage: $0 FILE" >&2; exit 2; }
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    echo
    echo "Machine: $(nproc) CPUs ($cpu), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r), $(date -u +%Y-%m-%d)"
    echo
    echo '| benchmark | ours (s) | baseline (s) | ratio | goal | |'
    echo '|---|---|---|---|---|---|'
    awk -F'\t' '{
        ok = ($5 == "-") ? "" : (($4 + 0 <= $5 + 0) ? "ok" : "over")
        printf "| %s | %.3f | %.3f | %s | %s | %s |\n", $1, $2, $3, $4, ($5 == "-") ? "-" : "<= " $5, ok
    }' "$1"
fi
