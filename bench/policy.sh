#!/bin/bash
# policy.sh - the durable accept rate with the relay policy on and off, in the same run.
#
# Usage: bench/policy.sh [-m MESSAGES] [-s SESSIONS] [-r REPS] [-d]
# Load: smtp-source (SESSIONS sessions, 1 KiB messages; -d reuses connections). "off": no
# maps, no limits. "on": hosted_domains of 10,000 domains, sender_logins of 10,000 entries,
# host_registry of 1,000 networks, relay_mode notify, ip_hourly_messages and the user limits
# set (high enough never to refuse), trusted_networks = 127.0.0.0/8. smtp-source cannot
# authenticate, so each MAIL takes the relay check and the per-address limit (one shared
# token bucket, the hottest key there is); the sender rules of authenticated clients are
# measured per call in tests/unit/test_policy.c. The runs alternate off/on, REPS each;
# medians. ringrelay has one worker on a machine of 2 CPUs or fewer (as in accept.sh).
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh  # pid_ticks, median

MSGS=20000 SESSIONS=50 REPS=3 REUSE="" WORKERS=0
[ "$(nproc)" -le 2 ] && WORKERS=1
while getopts "m:s:r:d" o; do
    case $o in
    m) MSGS=$OPTARG ;; s) SESSIONS=$OPTARG ;; r) REPS=$OPTARG ;; d) REUSE=-d ;;
    *) echo "usage: $0 [-m N] [-s N] [-r N] [-d]" >&2; exit 2 ;;
    esac
done

WORK=$(mktemp -d /tmp/ringrelay-policy.XXXXXX)
PORT=31125 PORT_METRICS=31126
cleanup() {
    [ -n "${RR_PID:-}" ] && kill "$RR_PID" 2>/dev/null && wait "$RR_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

for i in $(seq 0 9999); do echo "customer$i.example"; done >"$WORK/hosted"
for i in $(seq 0 9999); do echo "@customer$i.example login$i"; done >"$WORK/logins"
for i in $(seq 0 999); do echo "10.$((i / 256)).$((i % 256)).0/24 owner$i Customer $i"; done \
    >"$WORK/registry"

POLICY_ON=(-o "policy.hosted_domains=$WORK/hosted" -o "policy.sender_logins=$WORK/logins"
           -o "policy.host_registry=$WORK/registry" -o policy.relay_mode=notify
           -o policy.relay_enforce_after=2099-01-01 -o policy.ip_hourly_messages=1000000000
           -o policy.user_hourly_messages=1000000000 -o policy.user_hourly_recipients=1000000000)

# run MODE - one fresh relay, one smtp-source run; prints "msgs_per_s relay_cpu_us_per_msg".
run() {
    local extra=() t0 t1 c0 c1
    [ "$1" = on ] && extra=("${POLICY_ON[@]}")
    rm -rf "$WORK/spool" "$WORK/log"
    build/ringrelay -o "listener.default.listen=127.0.0.1:$PORT" -o "server.workers=$WORKERS" \
        -o "server.spool_dir=$WORK/spool" -o "server.metrics_listen=127.0.0.1:$PORT_METRICS" \
        -o "relay.smarthost=[127.0.0.1]:9" -o "policy.trusted_networks=127.0.0.0/8" \
        "${extra[@]}" 2>"$WORK/log" &
    RR_PID=$!
    for _ in $(seq 200); do grep -q event=ready "$WORK/log" 2>/dev/null && break; sleep 0.05; done
    c0=$(pid_ticks "$RR_PID"); t0=$(now)
    smtp-source $REUSE -s "$SESSIONS" -m "$MSGS" -l 1024 -f sender@customer7.example \
        -t someone@example.net "127.0.0.1:$PORT" >/dev/null
    t1=$(now); c1=$(pid_ticks "$RR_PID")
    kill "$RR_PID"; wait "$RR_PID" 2>/dev/null || true; RR_PID=""
    awk -v m="$MSGS" -v t0="$t0" -v t1="$t1" -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.0f %.1f\n", m / (t1 - t0), c / hz * 1e6 / m }'
}

declare -A R C
for mode in off on; do R[$mode]=""; C[$mode]=""; done
for ((i = 0; i < REPS; i++)); do
    for mode in off on; do
        read -r rate cpu < <(run "$mode")
        R[$mode]+="$rate"$'\n'; C[$mode]+="$cpu"$'\n'
    done
done
printf '%-8s %10s %22s\n' policy "msgs/s" "relay CPU us/msg"
for mode in off on; do
    R[$mode]=$(printf '%s' "${R[$mode]}" | median); C[$mode]=$(printf '%s' "${C[$mode]}" | median)
    printf '%-8s %10s %22s\n' "$mode" "${R[$mode]}" "${C[$mode]}"
done
awk -v a="${R[on]}" -v b="${R[off]}" -v c="${C[on]}" -v d="${C[off]}" \
    'BEGIN { printf "on/off: rate %.3f, CPU per message %.3f\n", a / b, c / d }'
