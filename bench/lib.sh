# shellcheck shell=bash
# lib.sh - helpers shared by the benchmark scripts (sourced by bench/accept.sh and
# bench/relay.sh; not run on its own).

# busy_ticks - CPU ticks spent by the whole machine (everything but idle and iowait).
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }

# median - the middle value of the numbers on stdin.
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

# now - wall-clock seconds with microseconds, without a fork (bash 5's EPOCHREALTIME).
now() { echo "$EPOCHREALTIME"; }

# pid_ticks PID - CPU ticks (user + system) spent so far by process PID, 0 if it is gone.
pid_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13; exit}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# self_seconds FILE - sets SELF_SECONDS to the CPU seconds (user + system) spent so far by
# this shell and by every child it has reaped (with their reaped children). Call it as a
# plain command: bash's "times" must run in this very shell (in a pipe or $(...) it would
# report a fresh subshell), so its output goes through the scratch file FILE.
self_seconds() {
    times >"$1"
    # shellcheck disable=SC2034  # read by the caller
    SELF_SECONDS=$(awk 'function sec(s,  m) { m = s; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", s)
                                             sub(/s$/, "", s); return m * 60 + s }
                        { t += sec($1) + sec($2) } END { printf "%.3f\n", t }' "$1")
}
