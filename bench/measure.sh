#!/bin/bash
# bench/measure.sh: sourced by the benchmarks that time one command at a time.
#
# measure CMD...: runs CMD with its standard output discarded and prints
# "wall_s maxrss_kib rc" (wall clock; peak RSS from wait4's rusage). CMD's standard error
# is measure's own: `measure CMD 2>/dev/null` silences it.
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
