#!/bin/bash
# accept.sh - durable accept rate: ringrelay against Postfix 3.7, measured in the same run,
# with Postfix's smtp-source as the load and smtp-sink as the ceiling (a sink that stores
# nothing). See bench/README.md for the method and how to read the table.
#
# Usage: bench/accept.sh [-m MESSAGES] [-s SESSIONS] [-l BYTES] [-r REPS] [-w WORKERS] [-d]
#   -d  reuse connections (smtp-source -d); default is one connection per message
#   -w  ringrelay engine threads; default 1 on a machine of 2 CPUs or fewer (the load
#       generator needs a core of its own there), else 0 (one per CPU)
# Prints one table: median msgs/s of REPS runs, server CPU ms per 1000 messages, fsyncs per
# message (ringrelay), and the ratios ringrelay/Postfix and ringrelay/ceiling.
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh  # busy_ticks, median

MSGS=20000 SESSIONS=50 SIZE=1024 REPS=3 REUSE="" WORKERS=0
[ "$(nproc)" -le 2 ] && WORKERS=1
while getopts "m:s:l:r:w:d" o; do
    case $o in
    m) MSGS=$OPTARG ;; s) SESSIONS=$OPTARG ;; l) SIZE=$OPTARG ;; r) REPS=$OPTARG ;;
    w) WORKERS=$OPTARG ;; d) REUSE=-d ;;
    *) echo "usage: $0 [-m N] [-s N] [-l N] [-r N] [-w N] [-d]" >&2; exit 2 ;;
    esac
done

WORK=$(mktemp -d /tmp/ringrelay-bench.XXXXXX)
chmod 755 "$WORK"
PORT_SINK=31025 PORT_RR=31026 PORT_PF=31027 PORT_METRICS=31028
cleanup() {
    [ -n "${RR_PID:-}" ] && kill "$RR_PID" 2>/dev/null && wait "$RR_PID" 2>/dev/null
    [ -n "${SINK_PID:-}" ] && kill "$SINK_PID" 2>/dev/null
    bench/postfix-peer.sh stop "$WORK/postfix" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# run_load PORT - one smtp-source run; prints "seconds server_cpu_seconds".
run_load() {
    local t0 t1 b0 b1 client
    b0=$(busy_ticks); t0=$(date +%s.%N)
    client=$( { /usr/bin/time -f "%U %S" smtp-source $REUSE -s "$SESSIONS" -m "$MSGS" \
        -l "$SIZE" -f bench@example.com -t sink@example.net "127.0.0.1:$1" >/dev/null; } 2>&1 \
        | tail -n 1)
    t1=$(date +%s.%N); b1=$(busy_ticks)
    awk -v t0="$t0" -v t1="$t1" -v b0="$b0" -v b1="$b1" -v c="$client" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { split(c, u, " "); printf "%.3f %.3f\n", t1 - t0, (b1 - b0) / hz - u[1] - u[2] }'
}

declare -A RATE CPU
measure() {  # measure NAME PORT: REPS runs, medians into RATE[NAME], CPU[NAME]
    local rates="" cpus="" r
    for ((i = 0; i < REPS; i++)); do
        [ -n "${BEFORE_RUN:-}" ] && $BEFORE_RUN
        read -r secs cpu < <(run_load "$2")
        rates+="$(awk -v m="$MSGS" -v s="$secs" 'BEGIN{printf "%.0f", m / s}')"$'\n'
        cpus+="$(awk -v m="$MSGS" -v c="$cpu" 'BEGIN{printf "%.1f", c * 1e6 / m}')"$'\n'
    done
    RATE[$1]=$(printf '%s' "$rates" | median)
    CPU[$1]=$(printf '%s' "$cpus" | median)
}

echo "load: smtp-source $REUSE -s $SESSIONS -m $MSGS -l $SIZE, $REPS runs each, medians;" \
     "ringrelay workers=$WORKERS on $(nproc) CPUs" >&2

# 1. ceiling: smtp-sink accepts and stores nothing
smtp-sink -u postfix -c "127.0.0.1:$PORT_SINK" 1000 >/dev/null 2>&1 &
SINK_PID=$!
sleep 0.3
measure sink "$PORT_SINK"
kill "$SINK_PID"; SINK_PID=""

# 2. ringrelay, fresh spool for each run
rr_start() {
    [ -n "${RR_PID:-}" ] && kill "$RR_PID" && wait "$RR_PID" 2>/dev/null
    rm -rf "$WORK/rr"; mkdir -p "$WORK/rr"
    build/ringrelay -o "listener.default.listen=127.0.0.1:$PORT_RR" -o "server.workers=$WORKERS" \
        -o "server.spool_dir=$WORK/rr/spool" -o "server.metrics_listen=127.0.0.1:$PORT_METRICS" \
        2>"$WORK/rr/log" &
    RR_PID=$!
    for _ in $(seq 100); do grep -q event=ready "$WORK/rr/log" 2>/dev/null && break; sleep 0.05; done
}
BEFORE_RUN=rr_start measure ringrelay "$PORT_RR"
metrics=$(curl -s "http://127.0.0.1:$PORT_METRICS/metrics")
FSYNCS=$(awk '/^ringrelay_spool_fsyncs_total/{f=$2} /^ringrelay_messages_accepted_total/{a=$2}
    END{printf "%.3f", a ? f / a : 0}' <<<"$metrics")
kill "$RR_PID"; wait "$RR_PID" 2>/dev/null || true; RR_PID=""

# 3. Postfix 3.7, accept-only (held in its queue, fsync'd per message as usual)
pf_start() {
    bench/postfix-peer.sh stop "$WORK/postfix" >/dev/null 2>&1 || true
    rm -rf "$WORK/postfix"
    bench/postfix-peer.sh start "$WORK/postfix" "$PORT_PF"
}
BEFORE_RUN=pf_start measure postfix "$PORT_PF"
bench/postfix-peer.sh stop "$WORK/postfix" >/dev/null 2>&1 || true

printf '\n%-12s %12s %22s\n' system "msgs/s" "server CPU us/msg"
for s in sink ringrelay postfix; do
    printf '%-12s %12s %22s\n' "$s" "${RATE[$s]}" "${CPU[$s]}"
done
printf '\nringrelay fsyncs per message: %s\n' "$FSYNCS"
awk -v r="${RATE[ringrelay]}" -v p="${RATE[postfix]}" -v c="${RATE[sink]}" \
    'BEGIN { printf "ringrelay/postfix: %.2fx   ringrelay/ceiling: %.0f%%\n", r / p, 100 * r / c }'
