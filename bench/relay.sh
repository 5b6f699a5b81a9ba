#!/bin/bash
# relay.sh - end-to-end relay rate: ringrelay against Postfix 3.7, measured in the same run.
# Postfix's smtp-source is the load, Postfix's smtp-sink the next hop (a sink that stores
# nothing); each relay accepts the messages and delivers every one of them to the sink.
# See bench/README.md for the method and how to read the table.
#
# Usage: bench/relay.sh [-m MESSAGES] [-s SESSIONS] [-l BYTES] [-r REPS] [-w WORKERS]
#                       [-T TIMEOUT] [-o section.key=value]... [-k]
#   -w  ringrelay engine threads; default 1 on a machine of 2 CPUs or fewer (the load
#       generator needs a core of its own there), else 0 (one per CPU)
#   -T  seconds one run may take from the start of smtp-source to the last delivery
#       (default 300); past it the script prints what is still queued and fails
#   -o  an extra ringrelay override (e.g. -o relay.destination_concurrency=50); repeatable
#   -k  keep the work directory (relay logs of every run) and print its path
# Prints one table: median end-to-end msgs/s of REPS runs, the accept-only rate during the
# same runs, the drain time after smtp-source finished, the relay's CPU per message, and the
# ratios ringrelay/Postfix. Exits 1 when a run times out or the sink's count is not exact.
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh  # busy_ticks, median, now, pid_ticks, self_seconds

MSGS=20000 SESSIONS=50 SIZE=1024 REPS=3 WORKERS=0 TIMEOUT=300 KEEP="" RR_EXTRA=()
[ "$(nproc)" -le 2 ] && WORKERS=1
while getopts "m:s:l:r:w:T:o:k" o; do
    case $o in
    m) MSGS=$OPTARG ;; s) SESSIONS=$OPTARG ;; l) SIZE=$OPTARG ;; r) REPS=$OPTARG ;;
    w) WORKERS=$OPTARG ;; T) TIMEOUT=$OPTARG ;; o) RR_EXTRA+=(-o "$OPTARG") ;; k) KEEP=1 ;;
    *) echo "usage: $0 [-m N] [-s N] [-l N] [-r N] [-w N] [-T SECONDS] [-o KEY=VALUE]... [-k]" >&2
       exit 2 ;;
    esac
done

WORK=$(mktemp -d /tmp/ringrelay-relay.XXXXXX)
chmod 755 "$WORK"
PORT_SINK=31035 PORT_RR=31036 PORT_PF=31037 PORT_METRICS=31038
METRICS_URL=http://127.0.0.1:$PORT_METRICS/metrics
cleanup() {
    set +e  # every step, even after one fails
    [ -n "${SRC_PID:-}" ] && kill "$(cat "$WORK/src.pid" 2>/dev/null)" "$SRC_PID" 2>/dev/null
    [ -n "${RR_PID:-}" ] && kill "$RR_PID" 2>/dev/null && wait "$RR_PID" 2>/dev/null
    [ -n "${SINK_PID:-}" ] && kill "$SINK_PID" 2>/dev/null
    [ -n "${PF_DIR:-}" ] && bench/postfix-peer.sh stop "$PF_DIR" >/dev/null 2>&1
    if [ -n "$KEEP" ]; then
        rm -rf "$WORK"/rr.*/spool "$WORK"/postfix.*/queue
        echo "relay.sh: logs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
# Private copies: every run starts the same binary even if build/ is rebuilt meanwhile.
if [ ! -x build/ringrelay ] || [ ! -x build/ringctl ]; then
    echo "relay.sh: build/ringrelay or build/ringctl missing: run make first" >&2; exit 1
fi
cp build/ringrelay build/ringctl "$WORK/"

fail() { echo "relay.sh: error: $*" >&2; exit 1; }
PROBLEMS=""
problem() { echo "relay.sh: warning: $*" >&2; PROBLEMS+="  $*"$'\n'; }

# sink_count [sess] - messages the sink has received so far ("." seen), or with "sess"
# the SMTP sessions it has seen end: from the last complete "sess=N quit=N mesg=N\r"
# record that smtp-sink -c writes and flushes at every such event.
sink_count() {
    local rec last="sess=0 quit=0 mesg=0"
    while IFS= read -r -d $'\r' rec; do last=$rec; done < <(tail -c 256 "$WORK/sink.out")
    if [ "${1:-}" = sess ]; then last=${last#sess=}; echo "${last%% *}"; else echo "${last##*mesg=}"; fi
}

# idle_check - the CPU figures assume an otherwise idle machine: note it when more than a
# tenth of a CPU was busy over the half second before a run.
idle_check() {
    local b0 b1
    b0=$(busy_ticks); sleep 0.5; b1=$(busy_ticks)
    awk -v b="$((b1 - b0))" -v hz="$(getconf CLK_TCK)" 'BEGIN { exit !(b / hz / 0.5 > 0.1) }' &&
        NOTES+="  before $1: $(awk -v b="$((b1 - b0))" -v hz="$(getconf CLK_TCK)" \
            'BEGIN { printf "%.0f", 100 * b / hz / 0.5 }')% of a CPU busy with something else"$'\n'
    return 0
}
NOTES=""

# deadline_passed T0 - true once TIMEOUT seconds have gone by since T0.
deadline_passed() { [ $(( ${EPOCHREALTIME%.*} - ${1%.*} )) -ge "$TIMEOUT" ]; }

# proc_ticks PID... - CPU ticks of these processes and of their reaped children (utime,
# stime, cutime, cstime); processes that vanished meanwhile count 0.
proc_ticks() {
    local p
    for p in "$@"; do cat "/proc/$p/stat" 2>/dev/null; done |
        awk '{sub(/^.*\) /, ""); t += $12 + $13 + $14 + $15} END {print t + 0}'
}

# --- the relays: start, "all delivered" test, diagnostics for a run that times out ---

# ringrelay: a fresh spool and log for every run, relaying everything to the sink.
rr_start() {
    [ -n "${RR_PID:-}" ] && kill "$RR_PID" && wait "$RR_PID" 2>/dev/null
    RR_PID="" RR_DIR=$WORK/rr.$1
    mkdir -p "$RR_DIR"
    "$WORK/ringrelay" -o "listener.default.listen=127.0.0.1:$PORT_RR" -o "server.workers=$WORKERS" \
        -o "server.spool_dir=$RR_DIR/spool" -o "server.metrics_listen=127.0.0.1:$PORT_METRICS" \
        -o "server.control_socket=$RR_DIR/control.sock" \
        -o "relay.smarthost=[127.0.0.1]:$PORT_SINK" -o relay.tls=none "${RR_EXTRA[@]}" \
        2>"$RR_DIR/log" &
    RR_PID=$!
    for _ in $(seq 200); do grep -q event=ready "$RR_DIR/log" 2>/dev/null && break; sleep 0.05; done
    grep -q event=ready "$RR_DIR/log" || { tail -n 20 "$RR_DIR/log" >&2; fail "ringrelay not ready after 10 s"; }
    read -r RR_D0 _ < <(rr_counts)
}
# rr_counts - "delivered queue deferred bounced" from ringrelay's /metrics.
rr_counts() {
    curl -s --max-time 2 "$METRICS_URL" | awk '
        /^ringrelay_deliveries_total\{result="delivered"\}/ {d = $2}
        /^ringrelay_deliveries_total\{result="deferred"\}/ {f = $2}
        /^ringrelay_deliveries_total\{result="bounced"\}/ {b = $2}
        /^ringrelay_queue_messages / {q = $2; seen = 1}
        END { if (seen) print d + 0, q + 0, f + 0, b + 0; else print "? ? ? ?" }'
}
# rr_done - every message delivered: the delivered counter up by MSGS, the queue empty.
rr_done() {
    local d q
    read -r d q _ < <(rr_counts)
    LAST_STATE="delivered=$((d - RR_D0)) queue=$q"
    [ "$d" != "?" ] && [ $((d - RR_D0)) -ge "$MSGS" ] && [ "$q" -eq 0 ]
}
rr_diag() {
    echo "ringrelay: $(rr_counts | awk '{print "delivered " $1 ", queue " $2 ", deferred " $3 ", bounced " $4}')" >&2
    echo "ringrelay queue (first 10):" >&2
    timeout 10 "$WORK/ringctl" -s "$RR_DIR/control.sock" queue 2>&1 | head -n 10 >&2 || true
    echo "ringrelay log, last 20 lines other than accepted/delivered:" >&2
    grep -v -e event=accepted -e event=delivered "$RR_DIR/log" | tail -n 20 >&2
}
# rr_check - after a run: deferrals, bounces and warnings in the log are worth a word.
rr_check() {
    local d q f b w
    read -r d q f b < <(rr_counts)
    if [ "$f" != 0 ] || [ "$b" != 0 ]; then
        problem "ringrelay run $1: $f deferred, $b bounced delivery attempts"
    fi
    [ $((d - RR_D0)) -eq "$MSGS" ] || problem "ringrelay run $1: delivered counter up by $((d - RR_D0)), not $MSGS"
    w=$(grep -c -e level=warn -e level=err -e level=crit "$RR_DIR/log" || true)
    [ "$w" = 0 ] || problem "ringrelay run $1: $w warning/error lines in its log ($RR_DIR/log)"
}
rr_proc_ticks() { proc_ticks "$RR_PID"; }
rr_stop() { kill "$RR_PID"; wait "$RR_PID" 2>/dev/null || true; RR_PID=""; rm -rf "$RR_DIR/spool"; }

# Postfix: a fresh instance (queue and maillog) for every run, relayhost = the sink.
pf_start() {
    [ -n "${PF_DIR:-}" ] && bench/postfix-peer.sh stop "$PF_DIR" >/dev/null 2>&1
    PF_DIR=$WORK/postfix.$1
    bench/postfix-peer.sh start "$PF_DIR" "$PORT_PF" "127.0.0.1:$PORT_SINK" || fail "Postfix did not start"
}
# pf_done - the queue (maildrop, incoming, active, deferred, hold) is empty. Only asked
# once smtp-source has finished: smtpd answers 250 after cleanup has written the queue
# file, so by then every accepted message is in the queue or already delivered.
pf_done() {
    local q
    q=$(bench/postfix-peer.sh queue-count "$PF_DIR") || q="?"
    LAST_STATE="queue=$q"
    [ "$q" = 0 ]
}
pf_diag() {
    echo "postfix: $(bench/postfix-peer.sh queue-count "$PF_DIR") messages in its queue" >&2
    postqueue -c "$PF_DIR/config" -p 2>&1 | head -n 12 >&2 || true
    echo "postfix maillog, last 10 lines other than status=sent:" >&2
    grep -v status=sent "$PF_DIR/maillog" | tail -n 10 >&2
}
pf_check() {
    local n
    n=$(grep -c -e status=deferred -e status=bounced "$PF_DIR/maillog" || true)
    [ "$n" = 0 ] || problem "postfix run $1: $n deferred/bounced deliveries in its maillog"
}
pf_proc_ticks() {  # every process of the instance: the master's cutime holds those gone
    # shellcheck disable=SC2046
    proc_ticks $(grep -lzxF "MAIL_CONFIG=$PF_DIR/config" /proc/[0-9]*/environ 2>/dev/null |
        sed 's,^/proc/,,; s,/environ$,,')
}
pf_stop() { bench/postfix-peer.sh stop "$PF_DIR" >/dev/null 2>&1 || true; PF_DIR=""; rm -rf "$WORK"/postfix.*/queue; }

# --- one measured run ---

# sink_sessions_since N - sets R_SESS: sessions the sink has seen end since its count was N,
# once the count has stood still for 0.3 s (at most 5 s). Called after the relay stopped:
# a relay keeps idle connections open for a while (Postfix caches them for 2 s), and the
# sink counts a session when it ends.
sink_sessions_since() {
    local a b
    a=$(sink_count sess)
    for _ in $(seq 16); do
        sleep 0.3; b=$(sink_count sess)
        [ "$a" = "$b" ] && break
        a=$b
    done
    R_SESS=$((a - $1))
}

# run_e2e NAME PORT RUN - smtp-source against the relay on PORT, then polls NAME's done
# test every 50 ms until everything is delivered (or TIMEOUT). Sets R_E2E, R_ACC (seconds
# from the start of smtp-source to the last delivery, and to smtp-source's end), R_CPU
# (relay CPU seconds: the machine's busy time over the run minus this script's own, which
# includes smtp-source and the polling, minus the sink's), R_PCPU (the user and system
# time of the relay's own processes; unlike R_CPU it does not grow with whatever else runs
# on the machine), R_OTHER (R_CPU - R_PCPU) and R_SS0 (the sink's session count at the
# start).
run_e2e() {
    local name=$1 port=$2 run=$3 t0 t_acc="" t_end b0 b1 s0 s1 k0 k1 n0 n1 rc p0 p1
    n0=$(sink_count); R_SS0=$(sink_count sess); p0=$("${name}_proc_ticks")
    rm -f "$WORK/src.end" "$WORK/src.rc"
    self_seconds "$WORK/times"; k0=$SELF_SECONDS; s0=$(pid_ticks "$SINK_PID")
    b0=$(busy_ticks); t0=$(now)
    ( smtp-source -s "$SESSIONS" -m "$MSGS" -l "$SIZE" -f bench@example.com \
          -t sink@example.net "127.0.0.1:$port" >/dev/null 2>"$WORK/src.err" &
      echo $! >"$WORK/src.pid"; wait $!
      echo $? >"$WORK/src.rc"; now >"$WORK/src.end" ) &
    SRC_PID=$!
    LAST_STATE=""
    while :; do
        if [ -z "$t_acc" ] && [ -s "$WORK/src.end" ]; then
            t_acc=$(<"$WORK/src.end")
        fi
        if [ -n "$t_acc" ] && "${name}_done"; then
            t_end=$(now)
            break
        fi
        if deadline_passed "$t0"; then
            if [ -z "$t_acc" ]; then
                echo "smtp-source still running; its stderr:" >&2
                tail -n 5 "$WORK/src.err" >&2
            fi
            "${name}_diag"
            kill "$(<"$WORK/src.pid")" 2>/dev/null || true
            fail "${LABEL[$name]} run $run: not all $MSGS messages delivered after $TIMEOUT s ($LAST_STATE; sink got $(( $(sink_count) - n0 )))"
        fi
        sleep 0.05
    done
    b1=$(busy_ticks); s1=$(pid_ticks "$SINK_PID"); p1=$("${name}_proc_ticks")
    wait "$SRC_PID" || true; SRC_PID=""
    self_seconds "$WORK/times"; k1=$SELF_SECONDS
    rc=$(<"$WORK/src.rc")
    [ "$rc" = 0 ] || problem "${LABEL[$name]} run $run: smtp-source exited $rc: $(tail -n 1 "$WORK/src.err")"
    [ -s "$WORK/src.err" ] && problem "${LABEL[$name]} run $run: smtp-source said: $(sort "$WORK/src.err" | uniq -c | sort -rn | head -n 3 | tr '\n' ';')"
    # The sink counts a message when its "." arrives, before it answers 250; give it a
    # bounded moment all the same, then the count must be exact (more = duplicates).
    for _ in $(seq 100); do
        n1=$(sink_count)
        [ $((n1 - n0)) -ge "$MSGS" ] && break
        sleep 0.05
    done
    sleep 0.2; n1=$(sink_count)
    [ $((n1 - n0)) -eq "$MSGS" ] || problem "${LABEL[$name]} run $run: the sink received $((n1 - n0)) messages, not $MSGS"
    SINK_GOT[$name]=$(( ${SINK_GOT[$name]:-0} + n1 - n0 ))
    read -r R_E2E R_ACC R_CPU R_PCPU R_OTHER < <(awk -v t0="$t0" -v ta="$t_acc" -v te="$t_end" \
        -v b="$((b1 - b0))" -v s="$((s1 - s0))" -v k0="$k0" -v k1="$k1" -v p="$((p1 - p0))" \
        -v hz="$(getconf CLK_TCK)" 'BEGIN {
            printf "%.3f %.3f %.3f %.3f %.3f\n", te - t0, ta - t0, (b - s) / hz - (k1 - k0),
                   p / hz, (b - s - p) / hz - (k1 - k0) }')
    # Busy time that is neither the relay's processes', the sink's nor this script's:
    # interrupt work not charged to a process and kernel threads (a few per cent), or
    # something else that ran on the machine.
    if awk -v o="$R_OTHER" -v e="$R_E2E" 'BEGIN { exit !(o / e > 0.1) }'; then
        NOTES+="  during ${LABEL[$name]} run $run: $(awk -v o="$R_OTHER" -v e="$R_E2E" \
            'BEGIN { printf "%.0f", 100 * o / e }')% of a CPU busy outside the relay, the sink and the load"$'\n'
    fi
}

declare -A E2E ACC TAIL CPU PCPU SESS SINK_GOT
declare -A LABEL=([rr]=ringrelay [pf]=postfix)
measure() {  # measure NAME PORT: REPS runs, medians into E2E ACC TAIL CPU PCPU SESS [NAME]
    local e2es="" accs="" tails="" cpus="" pcpus="" sess="" e a c i
    for ((i = 1; i <= REPS; i++)); do
        idle_check "${LABEL[$1]} run $i"
        "$1_start" "$i"
        run_e2e "$1" "$2" "$i"
        e=$R_E2E a=$R_ACC c=$R_CPU
        "$1_check" "$i"
        "$1_stop"
        sink_sessions_since "$R_SS0"
        echo "  ${LABEL[$1]} run $i: end-to-end $e s, smtp-source $a s, relay CPU $c s" \
             "(its processes $R_PCPU s, others $R_OTHER s), $R_SESS sessions to the sink" >&2
        pcpus+="$(awk -v m="$MSGS" -v c="$R_PCPU" 'BEGIN{printf "%.1f", c * 1e6 / m}')"$'\n'
        sess+="$R_SESS"$'\n'
        e2es+="$(awk -v m="$MSGS" -v s="$e" 'BEGIN{printf "%.0f", m / s}')"$'\n'
        accs+="$(awk -v m="$MSGS" -v s="$a" 'BEGIN{printf "%.0f", m / s}')"$'\n'
        tails+="$(awk -v e="$e" -v a="$a" 'BEGIN{printf "%.2f", e - a}')"$'\n'
        cpus+="$(awk -v m="$MSGS" -v c="$c" 'BEGIN{printf "%.1f", c * 1e6 / m}')"$'\n'
    done
    E2E[$1]=$(printf '%s' "$e2es" | median)
    ACC[$1]=$(printf '%s' "$accs" | median)
    TAIL[$1]=$(printf '%s' "$tails" | median)
    CPU[$1]=$(printf '%s' "$cpus" | median)
    SESS[$1]=$(printf '%s' "$sess" | median)
    PCPU[$1]=$(printf '%s' "$pcpus" | median)
}

echo "load: smtp-source -s $SESSIONS -m $MSGS -l $SIZE -> relay -> smtp-sink, $REPS runs each," \
     "medians; ringrelay workers=$WORKERS on $(nproc) CPUs" >&2

# The next hop for both relays: one smtp-sink for the whole script, counting every "."
# it receives (-c writes "sess=N quit=N mesg=N" records, flushed one by one).
smtp-sink -u postfix -c "127.0.0.1:$PORT_SINK" 1000 >"$WORK/sink.out" 2>"$WORK/sink.err" &
SINK_PID=$!
for i in $(seq 100); do
    timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT_SINK" 2>/dev/null && break
    kill -0 "$SINK_PID" 2>/dev/null || { cat "$WORK/sink.err" >&2; fail "smtp-sink did not start"; }
    [ "$i" = 100 ] && fail "smtp-sink does not accept on 127.0.0.1:$PORT_SINK after 5 s"
    sleep 0.05
done

measure rr "$PORT_RR"
measure pf "$PORT_PF"
kill "$SINK_PID"; SINK_PID=""

printf '\n%-10s %11s %14s %8s %17s %16s %14s %12s\n' system "e2e msgs/s" "accept msgs/s" \
    "drain s" "relay CPU us/msg" "(processes only)" "sink sessions" "sink got"
for s in rr pf; do
    printf '%-10s %11s %14s %8s %17s %16s %14s %12s\n' "${LABEL[$s]}" "${E2E[$s]}" "${ACC[$s]}" \
        "${TAIL[$s]}" "${CPU[$s]}" "${PCPU[$s]}" "${SESS[$s]}" "${SINK_GOT[$s]}/$((MSGS * REPS))"
done
awk -v e="${E2E[rr]}" -v pe="${E2E[pf]}" -v a="${ACC[rr]}" -v pa="${ACC[pf]}" \
    -v c="${CPU[rr]}" -v pc="${CPU[pf]}" -v q="${PCPU[rr]}" -v pq="${PCPU[pf]}" 'BEGIN {
        printf "\nringrelay/postfix: end-to-end %.2fx   accept %.2fx   CPU per message %.2fx" \
               " (processes only %.2fx)\n", e / pe, a / pa, c / pc, q / pq }'
[ -z "$NOTES" ] ||
    printf '\nnot idle (the "relay CPU" column is too high by that much):\n%s' "$NOTES"
if [ -n "$PROBLEMS" ]; then
    printf '\nproblems:\n%s' "$PROBLEMS"
    exit 1
fi
