#!/bin/bash
# loadgen.sh - the cost of the load generator itself: ringbench against Postfix's
# smtp-source, both driving the same ringsink, pinned the same way, in the same run.
#
# Usage: bench/loadgen.sh [-m MESSAGES] [-s SESSIONS] [-l BYTES] [-r REPS] [-d]
#   -m messages per run (default 20000; 50000 with -d), -s sessions (50), -l smtp-source's
#   payload bytes (1024), -r runs of each tool per placement (3), -d reuse connections
#   (smtp-source -d; ringbench --per-connection 0) instead of one per message.
#   BUILD=DIR takes the tools from DIR (default build/).
#
# Two placements, each with a fresh ringsink (--threads 1):
#   shared  generator and sink both on CPU 0: the generator's CPU cost per message is taken
#           away from the sink's, so the rate shows how cheap the generator is;
#   split   generator on CPU 0, sink on CPU 1 (the sink may be the limit here).
# ringbench runs with --threads 1 and --size set to the content size smtp-source sends (its
# payload plus its headers, as ringsink counts it), so both put the same bytes on the wire
# per message. Rate = messages / the script's own wall clock around the tool; CPU = the
# tool's user + system time (GNU time) per message. Every run must bring the sink's message
# count up by exactly MESSAGES, or the script fails. Medians of REPS runs; the tools
# alternate run by run.
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh  # median

MSGS="" SESSIONS=50 LEN=1024 REPS=3 REUSE=""
while getopts "m:s:l:r:d" o; do
    case $o in
    m) MSGS=$OPTARG ;; s) SESSIONS=$OPTARG ;; l) LEN=$OPTARG ;; r) REPS=$OPTARG ;;
    d) REUSE=-d ;;
    *) echo "usage: $0 [-m N] [-s N] [-l BYTES] [-r N] [-d]" >&2; exit 2 ;;
    esac
done
[ -n "$MSGS" ] || { [ -n "$REUSE" ] && MSGS=50000 || MSGS=20000; }
PER_CONN=1
[ -n "$REUSE" ] && PER_CONN=0
B=${BUILD:-build}  # the build directory (make BUILD=...)
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
if [ ! -x "$SMTP_SOURCE" ]; then
    echo "$0: smtp-source not found (Debian's postfix package)" >&2
    exit 1
fi
if [ ! -x "$B/ringbench" ] || [ ! -x "$B/ringsink" ]; then echo "$0: run make first" >&2; exit 1; fi
[ "$(nproc)" -ge 2 ] || { echo "$0: needs 2 CPUs" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "$0: needs GNU time (Debian's time package)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/ringrelay-loadgen.XXXXXX)
SINK_PID=""
cleanup() {
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# start_sink CPU - a fresh ringsink pinned to CPU; sets SINK_PID and PORT.
start_sink() {
    if [ -n "$SINK_PID" ]; then
        kill "$SINK_PID"
        wait "$SINK_PID" 2>/dev/null || true
    fi
    : >"$WORK/sink.out"
    taskset -c "$1" "$B/ringsink" --listen 127.0.0.1:0 --threads 1 --json \
        >"$WORK/sink.out" 2>"$WORK/sink.err" &
    SINK_PID=$!
    for _ in $(seq 100); do grep -q ready "$WORK/sink.err" && break; sleep 0.05; done
    PORT=$(sed -n 's/.*listen=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/sink.err")
    [ -n "$PORT" ] || { echo "ringsink did not start" >&2; cat "$WORK/sink.err" >&2; exit 1; }
}

# sink_count KEY - the sink's count KEY so far (SIGUSR1 prints a JSON line).
sink_count() {
    local n
    n=$(wc -l <"$WORK/sink.out")
    kill -USR1 "$SINK_PID"
    for _ in $(seq 100); do [ "$(wc -l <"$WORK/sink.out")" -gt "$n" ] && break; sleep 0.02; done
    tail -1 "$WORK/sink.out" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"
}

# run TOOL - one run of TOOL (smtp-source or ringbench) on CPU 0; prints "msgs/s cpu_us".
run() {
    local before after t0 t1 cpu
    before=$(sink_count messages)
    t0=$EPOCHREALTIME
    if [ "$1" = smtp-source ]; then
        /usr/bin/time -o "$WORK/time" -f "%U %S" taskset -c 0 "$SMTP_SOURCE" $REUSE \
            -s "$SESSIONS" -m "$MSGS" -l "$LEN" "127.0.0.1:$PORT" >/dev/null
    else
        /usr/bin/time -o "$WORK/time" -f "%U %S" taskset -c 0 "$B/ringbench" --threads 1 \
            --server "127.0.0.1:$PORT" --connections "$SESSIONS" --messages "$MSGS" \
            --size "$SIZE" --per-connection "$PER_CONN" --quiet >/dev/null
    fi
    t1=$EPOCHREALTIME
    after=$(sink_count messages)
    if [ $((after - before)) -ne "$MSGS" ]; then
        echo "$1: the sink got $((after - before)) messages, not $MSGS" >&2
        exit 1
    fi
    cpu=$(awk '{print $1 + $2}' "$WORK/time")
    awk -v n="$MSGS" -v a="$t0" -v b="$t1" -v c="$cpu" \
        'BEGIN { printf "%.0f %.1f\n", n / (b - a), c * 1e6 / n }'
}

# The content size smtp-source sends, as the sink stores it: ringbench sends the same.
start_sink 1
b0=$(sink_count bytes)
"$SMTP_SOURCE" -s 1 -m 10 -l "$LEN" "127.0.0.1:$PORT" >/dev/null
b1=$(sink_count bytes)
SIZE=$(((b1 - b0) / 10))

CONNS="one connection per message"
[ -n "$REUSE" ] && CONNS="connections reused"
printf 'load: %s sessions, %s messages of %s content bytes (smtp-source -l %s), %s; %s runs, %s\n\n' \
    "$SESSIONS" "$MSGS" "$SIZE" "$LEN" "$CONNS" "$REPS" medians
declare -A MR=() MC=()
printf '%-8s %-12s %10s %16s\n' placement generator "msgs/s" "gen CPU us/msg"
for placement in shared split; do
    if [ "$placement" = shared ]; then start_sink 0; else start_sink 1; fi
    declare -A R=() C=()
    for ((i = 0; i < REPS; i++)); do
        for tool in smtp-source ringbench; do
            read -r rate cpu < <(run "$tool")
            R[$tool]+="$rate"$'\n'
            C[$tool]+="$cpu"$'\n'
        done
    done
    for tool in smtp-source ringbench; do
        MR[$placement,$tool]=$(printf '%s' "${R[$tool]}" | median)
        MC[$placement,$tool]=$(printf '%s' "${C[$tool]}" | median)
        printf '%-8s %-12s %10s %16s\n' "$placement" "$tool" "${MR[$placement,$tool]}" \
            "${MC[$placement,$tool]}"
    done
    unset R C
done 2>&1
echo
for placement in shared split; do
    awk -v p="$placement" -v rr="${MR[$placement,ringbench]}" \
        -v sr="${MR[$placement,smtp-source]}" -v rc="${MC[$placement,ringbench]}" \
        -v sc="${MC[$placement,smtp-source]}" \
        'BEGIN { printf "%-8s ringbench/smtp-source: rate %.2fx   generator CPU per message %.2fx\n",
                 p, rr / sr, rc / sc }'
done
