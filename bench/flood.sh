#!/bin/bash
# flood.sh - the legitimate accept rate while one source address floods connections: no
# flood, flood with the per-IP limits in the kernel ([bpf] enabled = yes), flood with them
# in userspace (enabled = no), and Postfix 3.7 with its anvil limits set to the same numbers,
# no flood and flood, all in the same run. See bench/README.md ("bench/flood.sh").
#
# Usage: bench/flood.sh [-m MESSAGES] [-s SESSIONS] [-l BYTES] [-r REPS] [-d] [-w WORKERS]
#                       [-c FLOOD_CONCURRENCY] [-H HOLD_MS] [-F FLOOD_RATE]
#                       [-L CONNECTIONS_PER_IP] [-R CONNECTS_PER_IP_PER_S]
#                       [-T TIMEOUT] [-b] [-x] [-P] [-k]
#   -m -s -l -d  the legitimate load: smtp-source -s SESSIONS -m MESSAGES -l BYTES [-d]
#                (defaults 20000, 50, 1024, one connection per message)
#   -w           ringrelay engine threads; default 1 on a machine of 2 CPUs or fewer
#   -c -H -F     the flood: connflood --concurrency (100) --hold-ms (0: close after the
#                greeting line) --rate (default none: as fast as it can)
#   -L -R        the limits on both servers (default 50 open connections and 20 new
#                connections a second per address, ringrelay's defaults)
#   -T           bound on each smtp-source run, in seconds (default 60)
#   -b           also a "no flood, enabled = yes" row (the kernel programs' cost on
#                legitimate traffic alone)
#   -x           skip the control row (the same flood aimed at a closed port)
#   -P           skip the Postfix rows
#   -k           keep the working directory (logs) and print where it is
#
# Choices (the README says more):
# - Sources. smtp-source cannot choose its address: its 50 sessions come from 127.0.0.1 and,
#   one connection per message, open thousands of connections a second - far over any
#   per-address limit. Real legitimate mail comes from many addresses each under the limits;
#   the nearest model here is to exempt the legitimate address and nothing else:
#   [bpf] exempt_networks = 127.0.0.1/32 (not the default 127.0.0.0/8, which would exempt
#   the flooder too) and Postfix's smtpd_client_event_limit_exceptions = 127.0.0.1/32 (its
#   default, $mynetworks, is 127.0.0.0/8 here). The flood comes from 127.0.0.66, outside.
#   Exempt addresses are still counted by the kernel programs, so their cost on legitimate
#   connections is in the figures.
# - One ringrelay worker on a machine of 2 CPUs (as accept.sh and policy.sh, so the no-flood
#   row compares with their tables): the worker pins itself to the first CPU, the second is
#   left to smtp-source and the flooder. The flooder is pinned to the last CPU so it never
#   preempts the worker directly; smtp-source and Postfix are left to the scheduler, as in
#   the other scripts. On loopback the kernel's work for each flood SYN (the refusal, or the
#   handshake) runs in the flooder's own system calls, so it shows in "flooder CPUs", not
#   in the server's CPU; the control row (the same flood at a closed port, which the kernel
#   refuses like the BPF program does) shows what the flood costs the legitimate load
#   through the shared CPUs alone.
# Every run has a fresh relay and spool (a fresh Postfix instance); the rows alternate
# within each of REPS repetitions; medians are printed.
# Needs root (Postfix), Debian's postfix package, curl, and build/ringrelay and
# build/connflood (make; BUILD_DIR=dir in the environment takes them from elsewhere).
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh  # median, now, pid_ticks

MSGS=20000 SESSIONS=50 SIZE=1024 REPS=3 REUSE="" WORKERS=0
FLOOD_C=100 FLOOD_HOLD=0 FLOOD_RATE="" LIMIT_CONNS=50 LIMIT_RATE=20 TIMEOUT=60
ROW_QUIET_BPF=0 ROW_CONTROL=1 ROW_POSTFIX=1 KEEP=0
[ "$(nproc)" -le 2 ] && WORKERS=1
while getopts "m:s:l:r:dw:c:H:F:L:R:T:bxPk" o; do
    case $o in
    m) MSGS=$OPTARG ;; s) SESSIONS=$OPTARG ;; l) SIZE=$OPTARG ;; r) REPS=$OPTARG ;;
    d) REUSE=-d ;; w) WORKERS=$OPTARG ;; c) FLOOD_C=$OPTARG ;; H) FLOOD_HOLD=$OPTARG ;;
    F) FLOOD_RATE=$OPTARG ;; L) LIMIT_CONNS=$OPTARG ;; R) LIMIT_RATE=$OPTARG ;;
    T) TIMEOUT=$OPTARG ;; b) ROW_QUIET_BPF=1 ;; x) ROW_CONTROL=0 ;; P) ROW_POSTFIX=0 ;;
    k) KEEP=1 ;;
    *) sed -n '/^# Usage:/,/^#   -k/s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
    esac
done
for v in MSGS SESSIONS SIZE REPS WORKERS FLOOD_C FLOOD_HOLD LIMIT_CONNS LIMIT_RATE TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "flood.sh: $v must be a number, got '${!v}'" >&2; exit 2; }
done
[ -z "$FLOOD_RATE" ] || [[ $FLOOD_RATE =~ ^[1-9][0-9]*$ ]] || { echo "flood.sh: bad -F" >&2; exit 2; }
if [ "$REPS" -lt 1 ] || [ "$REPS" -gt 50 ]; then echo "flood.sh: -r from 1 to 50" >&2; exit 2; fi
BUILD_DIR=${BUILD_DIR:-build}  # where the binaries are (make BUILD=...)
for b in "$BUILD_DIR/ringrelay" "$BUILD_DIR/connflood"; do
    [ -x "$b" ] || { echo "flood.sh: $b missing (run make)" >&2; exit 1; }
done
command -v smtp-source >/dev/null || { echo "flood.sh: smtp-source missing (postfix package)" >&2; exit 1; }
if [ "$ROW_POSTFIX" = 1 ] && [ "$(id -u)" -ne 0 ]; then
    echo "flood.sh: the Postfix rows need root (or -P)" >&2; exit 1
fi

LEGIT_SRC=127.0.0.1 FLOOD_SRC=127.0.0.66
PORT_RR=31225 PORT_METRICS=31226 PORT_PF=31227 PORT_CLOSED=31228
WORK=$(mktemp -d /tmp/ringrelay-flood.XXXXXX)
chmod 755 "$WORK"
# Private copies: a rebuild by someone else during the run changes nothing here.
cp "$BUILD_DIR/ringrelay" "$BUILD_DIR/connflood" "$WORK/"
HZ=$(getconf CLK_TCK)
# The relay's one worker pins itself to the first CPU this process may use
# (engine_assign_cpus); the flooder goes on the last one, so it never preempts that worker
# directly. smtp-source and Postfix are left to the scheduler, as in the other scripts.
FLOOD_CPU=$(awk '/^Cpus_allowed_list/ { n = split($2, c, /[-,]/); print c[n] }' /proc/self/status)
PROBLEMS="" NOTES=""

cleanup() {
    [ -n "${FLOOD_PID:-}" ] && kill "$FLOOD_PID" 2>/dev/null
    [ -n "${RR_PID:-}" ] && rr_kill
    [ -n "${PF_DIR:-}" ] && bench/postfix-peer.sh stop "$PF_DIR" >/dev/null 2>&1
    if [ "$KEEP" = 1 ]; then echo "flood.sh: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
fail() { echo "flood.sh: error: $*" >&2; exit 1; }
problem() { echo "flood.sh: warning: $*" >&2; PROBLEMS+="  $*"$'\n'; }
note() { NOTES+="  $*"$'\n'; }

# jnum KEY - the number under "KEY" in the one-line JSON object on stdin (0 if absent).
jnum() { awk -v k="\"$1\":" '{ i = index($0, k); if (!i) { print 0; exit }
                               s = substr($0, i + length(k)); sub(/[,}].*/, "", s); print s + 0 }'; }

# proc_ticks PID... - CPU ticks of these processes and of their reaped children.
proc_ticks() {
    local p
    for p in "$@"; do cat "/proc/$p/stat" 2>/dev/null; done |
        awk '{sub(/^.*\) /, ""); t += $12 + $13 + $14 + $15} END {print t + 0}'
}

# port_free PORT - nothing listens on 127.0.0.1:PORT.
port_free() { ! timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
for p in $PORT_RR $PORT_METRICS $PORT_PF $PORT_CLOSED; do
    port_free "$p" || fail "127.0.0.1:$p is in use"
done

# --- ringrelay ---

# rr_start ROW ENABLED - a fresh relay and spool with [bpf] enabled = ENABLED; returns 1
# (with RR_WHY set) when it does not come up: enabled = yes without the kernel programs.
rr_start() {
    RR_DIR=$WORK/rr.$1.$2.$RUN
    mkdir -p "$RR_DIR"
    "$WORK/ringrelay" -o "listener.default.listen=127.0.0.1:$PORT_RR" -o "server.workers=$WORKERS" \
        -o "server.spool_dir=$RR_DIR/spool" -o "server.metrics_listen=127.0.0.1:$PORT_METRICS" \
        -o "server.control_socket=$RR_DIR/control.sock" -o "relay.smarthost=[127.0.0.1]:9" \
        -o "policy.trusted_networks=127.0.0.0/8" -o "bpf.enabled=$2" \
        -o "bpf.max_connections_per_ip=$LIMIT_CONNS" -o "bpf.max_connects_per_ip_per_s=$LIMIT_RATE" \
        -o "bpf.exempt_networks=$LEGIT_SRC/32" 2>"$RR_DIR/log" &
    RR_PID=$!
    for _ in $(seq 200); do
        grep -q event=ready "$RR_DIR/log" 2>/dev/null && break
        kill -0 "$RR_PID" 2>/dev/null || break
        sleep 0.05
    done
    if ! grep -q event=ready "$RR_DIR/log" 2>/dev/null; then
        RR_WHY=$(grep -m1 -e event=ip_limits -e level=fatal -e level=crit "$RR_DIR/log" ||
                 tail -n 1 "$RR_DIR/log")
        # The log line's reason="..." when there is one: the table has room for that.
        [[ $RR_WHY =~ reason=(\"[^\"]*\"|[^\ ]*) ]] && RR_WHY="enabled = $2 failed: ${BASH_REMATCH[1]}"
        rr_kill
        return 1
    fi
    RR_ENFORCED=$(grep -m1 -o 'event=ip_limits enforced=[a-z]*' "$RR_DIR/log" | sed 's/.*=//')
}
# rr_metrics - "accepted connections_total bpf_refused conn_refused conn_refused_labels"
# from /metrics; conn_refused is the sum of ringrelay_connections_refused_total over its
# labels, "-" when the relay has no such family yet.
rr_metrics() {
    curl -s --max-time 2 "http://127.0.0.1:$PORT_METRICS/metrics" | awk '
        /^ringrelay_messages_accepted_total / { a = $2 }
        /^ringrelay_connections_total[{ ]/ { c += $2 }
        /^ringrelay_bpf_connections_refused_total / { b = $2; bseen = 1 }
        /^ringrelay_connections_refused_total[{ ]/ { r += $2; rseen = 1
            # the label values joined by "/": {limit="rate",where="kernel"} -> rate/kernel
            k = split($1, q, "\""); l = ""
            for (i = 2; i <= k; i += 2) l = l (l ? "/" : "") q[i]
            lab = lab (lab ? "," : "") (l ? l : "all") "=" $2 }
        END { printf "%d %d %s %s %s\n", a, c, bseen ? b : "-", rseen ? r : "-", lab ? lab : "-" }'
}
# rr_kill - SIGTERM, and SIGKILL if the relay has not exited within 15 s (bounded).
rr_kill() {
    kill "$RR_PID" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$RR_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$RR_PID" 2>/dev/null; then
        problem "ringrelay (pid $RR_PID) still running 15 s after SIGTERM: killed"
        kill -KILL "$RR_PID" 2>/dev/null || true
    fi
    wait "$RR_PID" 2>/dev/null || true; RR_PID=""
}
rr_stop() {
    rr_kill
    if [ "$KEEP" = 1 ]; then rm -rf "$RR_DIR/spool"; else rm -rf "$RR_DIR"; fi
}

# --- Postfix ---

# pf_start ROW - a fresh private instance (bench/postfix-peer.sh, accept-only: every message
# is fsync'ed into the hold queue), then anvil's limits set to ours and the instance
# reloaded: postfix-peer.sh writes main.cf with every client limit off.
pf_start() {
    PF_DIR=$WORK/postfix.$1.$RUN
    bench/postfix-peer.sh start "$PF_DIR" "$PORT_PF" || fail "Postfix did not start"
    postconf -c "$PF_DIR/config" -e \
        "smtpd_client_connection_count_limit = $LIMIT_CONNS" \
        "smtpd_client_connection_rate_limit = $LIMIT_RATE" \
        "anvil_rate_time_unit = 1s" \
        "smtpd_client_event_limit_exceptions = $LEGIT_SRC/32" || fail "postconf -e failed"
    postfix -c "$PF_DIR/config" reload >/dev/null 2>&1 || fail "postfix reload failed"
    # The master restarts its children with the new main.cf; one idle second lets the
    # smtpd that answered the readiness probe go.
    sleep 1
}
pf_accepted() { bench/postfix-peer.sh queue-count "$PF_DIR"; }
pf_ticks() {  # every process of the instance: the master's cutime holds those gone
    # shellcheck disable=SC2046
    proc_ticks $(grep -lzxF "MAIL_CONFIG=$PF_DIR/config" /proc/[0-9]*/environ 2>/dev/null |
        sed 's,^/proc/,,; s,/environ$,,')
}
pf_stop() {
    bench/postfix-peer.sh stop "$PF_DIR" >/dev/null 2>&1 || true
    if [ "$KEEP" = 1 ]; then rm -rf "$PF_DIR/queue"; else rm -rf "$PF_DIR"; fi
    PF_DIR=""
}

# --- one measured run ---

# flood_start PORT - connflood from FLOOD_SRC to PORT in the background; it stops on
# SIGTERM (flood_stop) or after TIMEOUT + 10 s, whichever comes first.
flood_start() {
    local rate=()
    [ -n "$FLOOD_RATE" ] && rate=(--rate "$FLOOD_RATE")
    taskset -c "$FLOOD_CPU" "$WORK/connflood" --source "$FLOOD_SRC" --concurrency "$FLOOD_C" \
        --hold-ms "$FLOOD_HOLD" --duration $((TIMEOUT + 10)) "${rate[@]}" --json \
        "127.0.0.1:$1" >"$WORK/flood.json" 2>"$WORK/flood.err" &
    FLOOD_PID=$!
    sleep 0.5  # the flood is under way before the first legitimate session
}
# flood_stop - SIGTERM, then its summary (bounded wait: it exits within a loop pass).
flood_stop() {
    kill -TERM "$FLOOD_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$FLOOD_PID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$FLOOD_PID" 2>/dev/null || true
    wait "$FLOOD_PID" 2>/dev/null || true; FLOOD_PID=""
    [ -s "$WORK/flood.err" ] && problem "connflood said: $(head -c 300 "$WORK/flood.err")"
    FLOOD_JSON=$(tail -n 1 "$WORK/flood.json" 2>/dev/null || true)
}

# measure ROW SYSTEM PORT FLOOD_TARGET - one smtp-source run against PORT with the flood
# aimed at FLOOD_TARGET ("" = no flood). smtp-source is stopped after TIMEOUT seconds: under
# a flood a server may not get through MESSAGES in any reasonable time, and the rate is then
# measured over those seconds. Appends one line to $WORK/rows.ROW, the columns of the table:
# "legit_msgs_s server_cpu_us_per_msg done_% flood_att_s refused_% 421_% 220_% other_%
#  flooder_cpus connections_total bpf_refused conn_refused conn_refused_by_label"
# ("-" where not measured).
measure() {
    local row=$1 sys=$2 port=$3 target=$4 t0 t1 c0 c1 rc acc m=() f=() secs say=problem
    # In a flood row, legitimate mail refused or slowed is the result being measured: it is
    # said under "notes"; in a row without flood it is a fault of the set-up.
    [ -n "$target" ] && say=note
    FLOOD_JSON=""
    [ -n "$target" ] && flood_start "$target"
    c0=$("${sys}_ticks"); t0=$(now)
    rc=0
    timeout "$TIMEOUT" smtp-source $REUSE -s "$SESSIONS" -m "$MSGS" -l "$SIZE" \
        -f bench@example.com -t sink@example.net "127.0.0.1:$port" >/dev/null 2>"$WORK/src.err" || rc=$?
    t1=$(now); c1=$("${sys}_ticks")
    [ -n "$target" ] && flood_stop
    if [ "$rc" = 124 ]; then
        $say "${LABEL[$row]}, run $RUN: smtp-source stopped after $TIMEOUT s (-T)"
    elif [ "$rc" != 0 ]; then
        $say "${LABEL[$row]}, run $RUN: smtp-source exited $rc"
    fi
    if [ -s "$WORK/src.err" ]; then
        $say "${LABEL[$row]}, run $RUN: smtp-source said: $(sort "$WORK/src.err" | uniq -c | sort -rn | head -n 3 | tr -s ' \n' ' ;' | head -c 300)"
    fi
    if [ "$sys" = rr ]; then
        read -r -a m < <(rr_metrics)
        acc=${m[0]:-0}
    else
        acc=$(pf_accepted)
        m=(- - - - -)
        # Anvil's refusals are logged: a cross-check that its limits were in force.
        if [ -n "$target" ]; then
            PF_RATE_LOGS+="$(grep -c 'Connection rate limit exceeded' "$PF_DIR/maillog" || true)"$'\n'
            PF_CONC_LOGS+="$(grep -c 'Connection concurrency limit exceeded' "$PF_DIR/maillog" || true)"$'\n'
        fi
    fi
    [ "$acc" = "$MSGS" ] || $say "${LABEL[$row]}, run $RUN: $acc of $MSGS messages accepted"
    if [ -n "$FLOOD_JSON" ]; then
        secs=$(jnum seconds <<<"$FLOOD_JSON")
        read -r -a f < <(awk -v s="$secs" -v a="$(jnum attempts <<<"$FLOOD_JSON")" \
                 -v r="$(jnum refused <<<"$FLOOD_JSON")" -v g4="$(jnum greeting_421 <<<"$FLOOD_JSON")" \
                 -v g2="$(jnum greeting_220 <<<"$FLOOD_JSON")" \
                 -v cpu="$(jnum cpu_user_s <<<"$FLOOD_JSON") $(jnum cpu_sys_s <<<"$FLOOD_JSON")" \
                 'BEGIN { split(cpu, c, " "); p = a ? 100 / a : 0
                          printf "%.0f %.1f %.1f %.1f %.1f %.2f\n", s ? a / s : 0, r * p, g4 * p,
                                 g2 * p, (a - r - g4 - g2) * p, s ? (c[1] + c[2]) / s : 0 }')
        echo "$FLOOD_JSON" >>"$WORK/flood.$row.log"
    elif [ -n "$target" ]; then
        problem "${LABEL[$row]}, run $RUN: no summary from connflood"
        f=(- - - - - -)
    else
        f=(- - - - - -)
    fi
    awk -v n="$acc" -v m="$MSGS" -v t0="$t0" -v t1="$t1" -v c="$((c1 - c0))" -v hz="$HZ" \
        'BEGIN { printf "%.0f %.1f %.1f ", n / (t1 - t0), n ? c / hz * 1e6 / n : 0, 100 * n / m }' \
        >>"$WORK/rows.$row"
    echo "${f[*]} ${m[1]} ${m[2]} ${m[3]} ${m[4]}" >>"$WORK/rows.$row"
}
rr_ticks() { pid_ticks "$RR_PID"; }

# run_rr ROW ENABLED FLOOD_TARGET - one ringrelay run; a relay that does not start (enabled
# = yes without the kernel programs) marks the row unavailable and the run is skipped.
declare -A UNAVAILABLE ENFORCED
PF_RATE_LOGS="" PF_CONC_LOGS=""
run_rr() {
    [ -n "${UNAVAILABLE[$1]:-}" ] && return 0
    if ! rr_start "$1" "$2"; then
        UNAVAILABLE[$1]=$RR_WHY
        echo "flood.sh: $1: ringrelay did not start with [bpf] enabled = $2: $RR_WHY" >&2
        return 0
    fi
    ENFORCED[$1]=$RR_ENFORCED
    measure "$1" rr "$PORT_RR" "$3"
    rr_stop
}
run_pf() {
    pf_start "$1"
    measure "$1" pf "$PORT_PF" "$2"
    pf_stop
}

ROWS=(quiet)
[ "$ROW_QUIET_BPF" = 1 ] && ROWS+=(quiet-bpf)
ROWS+=(bpf user)
[ "$ROW_CONTROL" = 1 ] && ROWS+=(control)
[ "$ROW_POSTFIX" = 1 ] && ROWS+=(pf-quiet pf-flood)
declare -A LABEL=(
    [quiet]="ringrelay, no flood (enabled = no)"  [quiet-bpf]="ringrelay, no flood (enabled = yes)"
    [bpf]="ringrelay, flood, enabled = yes"       [user]="ringrelay, flood, enabled = no"
    [control]="ringrelay, flood to a closed port" [pf-quiet]="postfix, no flood"
    [pf-flood]="postfix, flood (anvil)"
)

flood_desc="connflood --source $FLOOD_SRC --concurrency $FLOOD_C"
[ "$FLOOD_HOLD" != 0 ] && flood_desc+=" --hold-ms $FLOOD_HOLD"
flood_desc+=" ${FLOOD_RATE:+--rate $FLOOD_RATE}"
[ -z "$FLOOD_RATE" ] && flood_desc+="(as fast as it can)"
echo "load: smtp-source $REUSE -s $SESSIONS -m $MSGS -l $SIZE from $LEGIT_SRC (exempt);" \
     "flood: $flood_desc, pinned to CPU $FLOOD_CPU;" \
     "limits: $LIMIT_CONNS open, $LIMIT_RATE/s per address; ringrelay workers=$WORKERS on" \
     "$(nproc) CPUs; $REPS runs each, alternating, medians" >&2

for ((RUN = 1; RUN <= REPS; RUN++)); do
    for row in "${ROWS[@]}"; do
        echo "flood.sh: run $RUN/$REPS: ${LABEL[$row]}" >&2
        case $row in
        quiet) run_rr quiet no "" ;;
        quiet-bpf) run_rr quiet-bpf yes "" ;;
        bpf) run_rr bpf yes "$PORT_RR" ;;
        user) run_rr user no "$PORT_RR" ;;
        control) run_rr control no "$PORT_CLOSED" ;;
        pf-quiet) run_pf pf-quiet "" ;;
        pf-flood) run_pf pf-flood "$PORT_PF" ;;
        esac
    done
done

# --- the table: the median of each column over the row's runs ---

# col ROW N - the median of column N (1-based) of the row's runs, "-" if not measured.
col() {
    local v
    v=$(awk -v n="$2" '$n != "-" { print $n }' "$WORK/rows.$1")
    if [ -z "$v" ]; then echo -; else printf '%s\n' "$v" | median; fi
}
BASE_RR=$( [ -f "$WORK/rows.quiet" ] && col quiet 1 || echo "")
BASE_PF=$( [ -f "$WORK/rows.pf-quiet" ] && col pf-quiet 1 || echo "")

printf '\n%-36s %8s %7s %10s %6s | %8s %7s %6s %6s %6s %7s\n' "" "legit" "vs no" \
    "server CPU" "done" "flood" "refused" "421" "220" "other" "flooder"
printf '%-36s %8s %7s %10s %6s | %8s %7s %6s %6s %6s %7s\n' "row" "msgs/s" "flood" "us/msg" \
    "%" "att/s" "%" "%" "%" "%" "CPUs"
for row in "${ROWS[@]}"; do
    if [ -n "${UNAVAILABLE[$row]:-}" ] || [ ! -f "$WORK/rows.$row" ]; then
        printf '%-36s %s\n' "${LABEL[$row]}" "not measured: ${UNAVAILABLE[$row]:-no run}"
        continue
    fi
    legit=$(col "$row" 1)
    base=$BASE_RR; [[ $row == pf-* ]] && base=$BASE_PF
    ratio=$(awk -v r="$legit" -v b="$base" 'BEGIN { if (b > 0) printf "%.3f", r / b; else print "-" }')
    printf '%-36s %8s %7s %10s %6s | %8s %7s %6s %6s %6s %7s\n' "${LABEL[$row]}" "$legit" \
        "$ratio" "$(col "$row" 2)" "$(col "$row" 3)" "$(col "$row" 4)" "$(col "$row" 5)" \
        "$(col "$row" 6)" "$(col "$row" 7)" "$(col "$row" 8)" "$(col "$row" 9)"
done

echo
echo "ringrelay's own counters at the end of a run (medians; one fresh relay per run):"
printf '%-36s %9s %18s %16s %16s  %s\n' row "in force" connections_total bpf_conn_refused \
    conn_refused "conn_refused by label (last run)"
for row in "${ROWS[@]}"; do
    [[ $row == pf-* ]] && continue
    [ -f "$WORK/rows.$row" ] || continue
    printf '%-36s %9s %18s %16s %16s  %s\n' "${LABEL[$row]}" "${ENFORCED[$row]:-?}" \
        "$(col "$row" 10)" "$(col "$row" 11)" "$(col "$row" 12)" \
        "$(tail -n 1 "$WORK/rows.$row" | awk '{print $13}')"
done

# What the flood met, said in words where it is not what the row's name promises.
if [ -f "$WORK/rows.user" ] && [ "$(col user 6)" != - ]; then
    if awk -v a="$(col user 6)" 'BEGIN { exit !(a + 0 == 0) }'; then
        note "enabled = no: the flood got no 421 (220 for $(col user 7)% of its attempts): the userspace per-IP limits are not in force in this build."
    fi
fi
if [ -f "$WORK/rows.bpf" ] && [ "$(col bpf 11)" = 0 ] &&
   awk -v r="$(col bpf 5)" 'BEGIN { exit !(r > 0) }'; then
    note "enabled = yes: connflood saw $(col bpf 5)% of its attempts refused, but ringrelay_bpf_connections_refused_total stayed 0: that counter is not fed from the programs yet."
fi
if [ -n "$PF_RATE_LOGS" ]; then
    note "postfix, flood: anvil's warnings in the maillog per run (median): $(printf '%s' "$PF_RATE_LOGS" | median) 'Connection rate limit exceeded', $(printf '%s' "$PF_CONC_LOGS" | median) 'Connection concurrency limit exceeded'."
fi
note "columns: bench/README.md, section bench/flood.sh. 'other' = timeouts, resets after the handshake, other replies, errors, aborted at the end."
[ -n "$NOTES" ] && printf '\nnotes:\n%s' "$NOTES"
if [ -n "$PROBLEMS" ]; then
    printf '\nproblems:\n%s' "$PROBLEMS"
    exit 1
fi
