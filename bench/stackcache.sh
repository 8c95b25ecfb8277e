#!/bin/bash
# bench/stackcache.sh: sourced by the benchmarks that need a big kernel-made stack
# (scale.sh, floors.sh). `cached_stack N` prints the directory of bench/mkstack.sh's stack
# of about N entries (files capped at 4 KiB: metadata, not data), building it the first time
# into $CACHE/stack-$GENERATOR-N; $GENERATOR is the generator's version (mkstack.sh itself
# and how it is called), so a changed generator builds anew. $DIR/entries holds the number
# of entries in its layers.
CACHE=${CACHE:-${BENCH_SCALE_CACHE:-/var/tmp/ovltool-bench}}
GENERATOR=$( (cat "$REPO/bench/mkstack.sh"; echo "MKSTACK_MAX_SIZE=4096 seed=1") | sha256sum | cut -c1-12)

cached_stack() {
    local dir=$CACHE/stack-$GENERATOR-$1
    if [ ! -e "$dir/done" ]; then
        rm -rf "$dir"
        mkdir -p "$CACHE"
        echo "bench: building the stack of $1 entries in $dir (once)..." >&2
        # In a mount namespace of its own: a namespace another process makes meanwhile
        # (unshare --mount) would copy a stage's mount and keep its upper in use, and the
        # next stage's mount, with that upper as a lower, would fail with EBUSY.
        MKSTACK_MAX_SIZE=4096 unshare --mount --propagation private "$REPO/bench/mkstack.sh" "$dir" "$1" >&2 || { rm -rf "$dir"; return 1; }
        find "$dir/l1" "$dir/l2" "$dir/l3" "$dir/upper" "$dir/work" -mindepth 1 | wc -l > "$dir/entries"
        touch "$dir/done"
    fi
    echo "$dir"
}
