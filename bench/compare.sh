#!/bin/bash
# compare.sh - one table: ringsink alone (the ceiling), ringrelay and Postfix 3.7, each in
# turn under the same ringbench load on this machine, both relays delivering to the same
# kind of next hop (a ringsink). `make bench` runs it. Method and how to read the table:
# bench/README.md, section "bench/compare.sh".
#
# Usage: bench/compare.sh [-S SCENARIOS] [-m MESSAGES] [-s SESSIONS] [-r REPS] [-p PER_CONN]
#                         [-n IDLE] [-N IDLE_POSTFIX] [-E SECONDS] [-R RATE] [-H SCHEME]
#                         [-w WORKERS] [-C SUT_CPUS:LOAD_CPUS | -C none] [-T TIMEOUT] [-P] [-k]
#   -S  scenarios to run, any of "abcde" (default all):
#         a  1 KiB, 1 recipient, SESSIONS sessions, plaintext
#         b  10 KiB, 5 recipients
#         c  a new implicit-TLS connection and AUTH PLAIN for every message
#         d  IDLE concurrent idle sessions (greeted, EHLO answered): memory per session
#         e  open loop at half of each system's own (a) accept rate, for -E seconds
#   -m  messages per run in a, b and c (default 20000)
#   -s  concurrent sessions of ringbench in a, b, c and e (default 50)
#   -r  runs of every system in every scenario (default 3); the table shows medians
#   -p  messages per connection in a, b and e (ringbench --per-connection; default 0:
#       sessions kept for as long as the run lasts; 1: a connection per message)
#   -n  idle sessions held in d against ringrelay and the ceiling (default 10000)
#   -N  idle sessions held in d against Postfix (default 1000: each is an smtpd process)
#   -E  seconds of open-loop load in e (default 10)
#   -R  messages/s for e, the same for every system (default: half of each system's (a)
#       median accept rate; needed when a is not run)
#   -H  password scheme of the AUTH account in c: SHA512-CRYPT (default) or PLAIN
#   -w  ringrelay engine threads (default: one per CPU of the relay's CPU set)
#   -C  CPU placement: the system under test on SUT_CPUS, ringbench, the next-hop sink and
#       this script on LOAD_CPUS (taskset lists; default on 2 CPUs "0:1", on more the first
#       half and the second half); "none": no pinning
#   -T  seconds a run may take, load and delivery together (default 300)
#   -P  no Postfix rows (without root, or without Debian's postfix and dovecot-core)
#   -k  keep the work directory (logs of every run) and print its path
# BUILD_DIR=DIR takes ringrelay, ringbench and ringsink from DIR (default build/).
# Prints the table on stdout, progress and details of every run on stderr. Exits 1 when a
# run went wrong (failed messages, a sink count that is not exact, a timeout, held sessions
# missing), after printing everything that was measured; 2 on a usage error.
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh  # busy_ticks, median, now, pid_ticks, self_seconds

usage() { sed -n '/^# Usage:/,/^# BUILD_DIR/s/^# \{0,1\}//p' "$0" >&2; exit 2; }

SCEN=abcde MSGS=20000 SESSIONS=50 REPS=3 PER_CONN=0 IDLE=10000 IDLE_PF=1000 E_SECS=10
RATE="" SCHEME=SHA512-CRYPT WORKERS="" PIN="" TIMEOUT=300 NO_PF="" KEEP=""
while getopts "S:m:s:r:p:n:N:E:R:H:w:C:T:Pkh" o; do
    case $o in
    S) SCEN=$OPTARG ;; m) MSGS=$OPTARG ;; s) SESSIONS=$OPTARG ;; r) REPS=$OPTARG ;;
    p) PER_CONN=$OPTARG ;; n) IDLE=$OPTARG ;; N) IDLE_PF=$OPTARG ;; E) E_SECS=$OPTARG ;;
    R) RATE=$OPTARG ;; H) SCHEME=$OPTARG ;; w) WORKERS=$OPTARG ;; C) PIN=$OPTARG ;;
    T) TIMEOUT=$OPTARG ;; P) NO_PF=1 ;; k) KEEP=1 ;;
    *) usage ;;
    esac
done
[ $OPTIND -gt $# ] || usage
for v in "$MSGS" "$SESSIONS" "$REPS" "$PER_CONN" "$IDLE" "$IDLE_PF" "$E_SECS" "$TIMEOUT" \
         ${RATE:+"$RATE"} ${WORKERS:+"$WORKERS"}; do
    case $v in '' | *[!0-9]*) echo "compare.sh: not a whole number: '$v'" >&2; usage ;; esac
done
[[ $SCEN =~ ^[a-e]+$ ]] || { echo "compare.sh: -S takes letters of abcde" >&2; usage; }
if ! { [ "$REPS" -ge 1 ] && [ "$REPS" -le 100 ] && [ "$MSGS" -ge 1 ] && [ "$SESSIONS" -ge 1 ] &&
        [ "$SESSIONS" -le 10000 ] && [ "$IDLE" -ge 10 ] && [ "$IDLE" -le 100000 ] &&
        [ "$IDLE_PF" -ge 10 ] && [ "$IDLE_PF" -le 20000 ] && [ "$E_SECS" -ge 1 ] &&
        [ "$E_SECS" -le 3600 ] && [ "$TIMEOUT" -ge 10 ] && [ "$TIMEOUT" -le 86400 ]; }; then
    echo "compare.sh: a number out of its range" >&2; usage
fi
case $SCHEME in SHA512-CRYPT | PLAIN) ;; *) usage ;; esac
has() { [[ $SCEN == *"$1"* ]]; }
if has e && ! has a && [ -z "$RATE" ]; then
    echo "compare.sh: scenario e needs a (its rate is half of a's) or -R RATE" >&2; exit 2
fi

BUILD_DIR=${BUILD_DIR:-build}  # where the binaries are (make BUILD=...)
for b in ringrelay ringbench ringsink; do
    [ -x "$BUILD_DIR/$b" ] || { echo "compare.sh: $BUILD_DIR/$b missing: run make first" >&2; exit 1; }
done
if [ -z "$NO_PF" ]; then
    [ "$(id -u)" = 0 ] || { echo "compare.sh: the Postfix rows need root (or -P)" >&2; exit 1; }
    for b in /usr/sbin/postfix /usr/sbin/postconf /usr/sbin/dovecot; do
        [ -x "$b" ] || { echo "compare.sh: $b missing (postfix, dovecot-core; or -P)" >&2; exit 1; }
    done
fi
for b in taskset python3 curl openssl; do
    command -v "$b" >/dev/null || { echo "compare.sh: $b missing" >&2; exit 1; }
done

# CPU placement: the system under test (SUT) and the harness (LOAD).
NCPU=$(nproc)
if [ -z "$PIN" ]; then
    if [ "$NCPU" -ge 2 ]; then
        PIN="0-$((NCPU / 2 - 1)):$((NCPU / 2))-$((NCPU - 1))"
        [ "$NCPU" = 2 ] && PIN=0:1
    else
        PIN=none
    fi
fi
if [ "$PIN" = none ]; then
    SUT=() LOAD=()
else
    [[ $PIN =~ ^[0-9,-]+:[0-9,-]+$ ]] || { echo "compare.sh: -C SUT:LOAD or none" >&2; usage; }
    SUT=(taskset -c "${PIN%%:*}") LOAD=(taskset -c "${PIN#*:}")
fi
# cpu_count LIST - how many CPUs a taskset list names.
cpu_count() {
    python3 -c 'import sys; n = 0
for part in sys.argv[1].split(","):
    a, _, b = part.partition("-"); n += int(b or a) - int(a) + 1
print(n)' "$1"
}
LOAD_NCPU=$NCPU
[ "$PIN" = none ] || LOAD_NCPU=$(cpu_count "${PIN#*:}")
if [ -z "$WORKERS" ]; then
    if [ "$PIN" = none ]; then WORKERS=0; [ "$NCPU" -le 2 ] && WORKERS=1
    else WORKERS=$(cpu_count "${PIN%%:*}"); fi
fi

# Descriptors: IDLE sessions on one side and as many on the other, in one process each.
need_fd=$((IDLE + IDLE_PF + 2000))
if [ "$(ulimit -n)" -lt "$need_fd" ]; then
    hard=$(ulimit -Hn)
    if [ "$hard" != unlimited ] && [ "$hard" -lt "$need_fd" ]; then
        ulimit -Hn "$need_fd" 2>/dev/null ||
            { echo "compare.sh: cannot raise RLIMIT_NOFILE to $need_fd (lower -n, -N)" >&2; exit 1; }
    fi
    ulimit -n "$need_fd"
fi

WORK=$(mktemp -d /tmp/ringrelay-compare.XXXXXX)
chmod 755 "$WORK"
PORT_RR=31051 PORT_PF=31052 PORT_PF_TLS=31053 PORT_METRICS=31054
HZ=$(getconf CLK_TCK)
RR_PID="" SINK_PID="" SINK_FD="" RB_PID="" PF_DIR="" DV_PID="" HOLD_PIDS=()
cleanup() {
    set +e  # every step, even after one fails
    [ -n "$RB_PID" ] && kill "$RB_PID" 2>/dev/null
    for p in "${HOLD_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    [ -n "$RR_PID" ] && kill "$RR_PID" 2>/dev/null && wait "$RR_PID" 2>/dev/null
    [ -n "$PF_DIR" ] && bench/postfix-peer.sh stop "$PF_DIR" >/dev/null 2>&1
    dv_stop
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
    if [ -n "$KEEP" ]; then
        rm -rf "$WORK"/*/spool "$WORK"/*/queue
        echo "compare.sh: logs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# The script and what it starts without a placement of its own (ringbench, the next-hop
# sink, the idle holder) run on the LOAD CPUs; the systems measured get taskset -c SUT.
[ "$PIN" = none ] || taskset -p -c "${PIN#*:}" $$ >/dev/null
# Private copies: a rebuild while the script runs changes nothing.
cp "$BUILD_DIR/ringrelay" "$BUILD_DIR/ringbench" "$BUILD_DIR/ringsink" "$WORK/"

PROBLEMS="" NOTES=""
problem() { echo "compare.sh: problem: $*" >&2; PROBLEMS+="  $*"$'\n'; }
note() { NOTES+="  $*"$'\n'; }
log() { echo "compare.sh: $*" >&2; }
fnum() { awk -v v="$2" "BEGIN { printf \"$1\", v }"; }  # fnum FORMAT NUMBER

# --- the shared certificate and account (scenario c) ---
if has c; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 -subj /CN=relay.bench.example 2>/dev/null
    chmod 644 "$WORK/key.pem" "$WORK/cert.pem"
    AUTH_USER=bench@example.com AUTH_PASS=bench-$RANDOM$RANDOM
    if [ "$SCHEME" = PLAIN ]; then HASH=$AUTH_PASS
    else HASH=$(printf '%s\n' "$AUTH_PASS" | openssl passwd -6 -stdin); fi
    printf '%s:{%s}%s\n' "$AUTH_USER" "$SCHEME" "$HASH" >"$WORK/users"
    chmod 644 "$WORK/users"
fi

# --- ringsink: the ceiling, and the next hop of both relays ---

# sink_start CPUS... - a fresh ringsink (one thread) with its counts on $WORK/sink.out;
# sets SINK_PID, SINK_PORT, SINK_FD (a reader of its counts). CPUS: a taskset prefix.
sink_start() {
    sink_stop
    : >"$WORK/sink.out"
    "$@" "$WORK/ringsink" --listen 127.0.0.1:0 --threads 1 --json \
        --max-connections $((IDLE + 1000)) >"$WORK/sink.out" 2>"$WORK/sink.err" &
    SINK_PID=$!
    for _ in $(seq 200); do grep -q ready "$WORK/sink.err" && break; sleep 0.02; done
    SINK_PORT=$(sed -n 's/.*listen=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/sink.err")
    [ -n "$SINK_PORT" ] || { cat "$WORK/sink.err" >&2; echo "compare.sh: ringsink did not start" >&2; exit 1; }
    exec {SINK_FD}<"$WORK/sink.out"
}
sink_stop() {
    if [ -n "$SINK_PID" ]; then
        kill "$SINK_PID" 2>/dev/null || true
        wait "$SINK_PID" 2>/dev/null || true
    fi
    [ -n "$SINK_FD" ] && exec {SINK_FD}<&-
    SINK_PID="" SINK_FD=""
}
# sink_snap - sets SNAP_M and SNAP_R: messages and recipients the sink has answered 250 so
# far (SIGUSR1 makes it print a JSON line; read without a fork, at most 2 s).
sink_snap() {
    local line="" part i
    kill -USR1 "$SINK_PID"
    for ((i = 0; i < 400; i++)); do
        if IFS= read -r part <&"$SINK_FD"; then line+=$part; break; fi
        line+=$part
        sleep 0.005
    done
    if [[ $line =~ \"messages\":([0-9]+),\"recipients\":([0-9]+) ]]; then
        SNAP_M=${BASH_REMATCH[1]} SNAP_R=${BASH_REMATCH[2]}
    else
        echo "compare.sh: no counts from ringsink: '$line'" >&2; exit 1
    fi
}

# --- ringrelay ---

# rr_start SCENARIO - a fresh relay (spool, log) for one run, on the SUT CPUs, relaying to
# the sink; a TLS + AUTH listener for c, room for the idle sessions for d.
rr_start() {
    RR_DIR=$WORK/rr.$1.$RUN
    mkdir -p "$RR_DIR"
    local tls=none auth=none
    [ "$1" = c ] && tls=implicit auth=required
    {
        printf '[server]\nhostname = relay.bench.example\nworkers = %s\n' "$WORKERS"
        printf 'spool_dir = %s\nmetrics_listen = 127.0.0.1:%s\ncontrol_socket = %s\n' \
            "$RR_DIR/spool" "$PORT_METRICS" "$RR_DIR/control.sock"
        printf '[listener.bench]\nlisten = 127.0.0.1:%s\ntls = %s\nauth = %s\n' "$PORT_RR" "$tls" "$auth"
        if [ "$1" = c ]; then
            printf '[tls]\ncert = %s\nkey = %s\n' "$WORK/cert.pem" "$WORK/key.pem"
            printf '[auth]\npasswd_file = %s\n' "$WORK/users"
        fi
        printf '[limits]\nmax_connections = %s\n' $((IDLE + 1000))
        printf '[relay]\nsmarthost = [127.0.0.1]:%s\ntls = none\n' "${SINK_PORT:-9}"
    } >"$RR_DIR/ringrelay.conf"
    "${SUT[@]}" "$WORK/ringrelay" -c "$RR_DIR/ringrelay.conf" 2>"$RR_DIR/log" &
    RR_PID=$!
    for _ in $(seq 200); do grep -q event=ready "$RR_DIR/log" 2>/dev/null && return 0; sleep 0.05; done
    tail -n 20 "$RR_DIR/log" >&2
    echo "compare.sh: ringrelay not ready after 10 s" >&2; exit 1
}
rr_stop() {
    [ -n "$RR_PID" ] || return 0
    kill "$RR_PID" 2>/dev/null || true
    wait "$RR_PID" 2>/dev/null || true
    RR_PID=""
    rm -rf "$RR_DIR/spool"
}
# rr_check - deferrals, bounces and warnings of this run.
rr_check() {
    local c w
    c=$(curl -s --max-time 2 "http://127.0.0.1:$PORT_METRICS/metrics" | awk '
        /^ringrelay_deliveries_total\{result="(deferred|bounced)"\}/ { n += $2 } END { print n + 0 }')
    [ "$c" = 0 ] || problem "ringrelay $1 run $RUN: $c deferred or bounced delivery attempts"
    w=$(grep -c -e level=warn -e level=err -e level=crit "$RR_DIR/log" || true)
    [ "$w" = 0 ] || problem "ringrelay $1 run $RUN: $w warning/error lines in its log ($RR_DIR/log)"
}

# --- Postfix (and, for c, a private Dovecot as its SASL backend) ---

dv_start() {
    DV_DIR=$WORK/dv.$RUN
    mkdir -p "$DV_DIR"
    chmod 755 "$DV_DIR"
    cat >"$DV_DIR/dovecot.conf" <<EOF
base_dir = $DV_DIR/run
state_dir = $DV_DIR/state
log_path = $DV_DIR/dovecot.log
info_log_path = $DV_DIR/dovecot.log
protocols =
ssl = no
disable_plaintext_auth = no
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  args = scheme=CRYPT $WORK/users
}
userdb {
  driver = static
  args = uid=postfix gid=postfix home=/nonexistent
}
service auth {
  unix_listener auth-client {
    path = $DV_DIR/auth-client
    mode = 0666
  }
}
EOF
    # Its own session and process group: stopped as a group (master, auth, log, anvil...).
    "${SUT[@]}" setsid /usr/sbin/dovecot -F -c "$DV_DIR/dovecot.conf" >"$DV_DIR/dovecot.out" 2>&1 &
    DV_PID=$!
    for _ in $(seq 200); do
        [ -S "$DV_DIR/auth-client" ] && return 0
        kill -0 "$DV_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$DV_DIR/dovecot.out" "$DV_DIR/dovecot.log" >&2 2>/dev/null
    echo "compare.sh: dovecot did not start" >&2; exit 1
}
dv_pids() { if [ -n "$DV_PID" ]; then pgrep -g "$DV_PID" 2>/dev/null || true; fi; }
dv_stop() {
    [ -n "$DV_PID" ] || return 0
    kill -TERM -- "-$DV_PID" 2>/dev/null || true
    for _ in $(seq 100); do [ -z "$(dv_pids)" ] && break; sleep 0.05; done
    kill -KILL -- "-$DV_PID" 2>/dev/null || true
    wait "$DV_PID" 2>/dev/null || true
    DV_PID=""
}

# pf_start SCENARIO - a fresh instance for one run on the SUT CPUs (the master and every
# process it starts inherit the placement), relaying to the sink.
pf_start() {
    PF_DIR=$WORK/pf.$1.$RUN
    # For d, room for the idle sessions from the start: the master sizes its listen backlog
    # from the process limit, and a reload would keep the old backlog (connections beyond it
    # were lost in the kernel's accept queue and never greeted).
    local limit=100
    [ "$1" = d ] && limit=$((IDLE_PF + 100))
    PF_PROCESS_LIMIT=$limit "${SUT[@]}" bench/postfix-peer.sh start "$PF_DIR" "$PORT_PF" "127.0.0.1:${SINK_PORT:-9}" ||
        { echo "compare.sh: Postfix did not start" >&2; exit 1; }
    local pfc=$PF_DIR/config reload=""
    if [ "$1" = c ]; then
        dv_start
        postconf -c "$pfc" -e "smtpd_tls_cert_file = $WORK/cert.pem" \
            "smtpd_tls_key_file = $WORK/key.pem" "smtpd_tls_loglevel = 0" \
            "smtpd_tls_session_cache_database = btree:$PF_DIR/data/smtpd_scache" \
            "smtpd_tls_protocols = >=TLSv1.2" "smtpd_tls_mandatory_protocols = >=TLSv1.2" \
            "smtpd_sasl_type = dovecot" "smtpd_sasl_path = $DV_DIR/auth-client"
        postconf -c "$pfc" -M "127.0.0.1:$PORT_PF_TLS/inet=127.0.0.1:$PORT_PF_TLS inet n - n - - smtpd -o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=may -o smtpd_sasl_auth_enable=yes -o smtpd_relay_restrictions=permit_sasl_authenticated,reject"
        postconf -c "$pfc" -M "tlsmgr/unix=tlsmgr unix - - n 1000? 1 tlsmgr"
        reload=1
    fi
    if [ -n "$reload" ]; then
        postfix -c "$pfc" reload >/dev/null 2>&1
        sleep 1  # the master re-reads master.cf and opens the new listener
        if [ "$1" = c ]; then
            for _ in $(seq 100); do
                echo QUIT | timeout 3 openssl s_client -quiet -connect "127.0.0.1:$PORT_PF_TLS" 2>/dev/null |
                    grep -q '^220' && return 0
                sleep 0.1
            done
            tail -n 20 "$PF_DIR/maillog" >&2
            echo "compare.sh: Postfix's TLS listener does not answer" >&2; exit 1
        fi
    fi
}
pf_stop() {
    [ -n "$PF_DIR" ] || return 0
    bench/postfix-peer.sh stop "$PF_DIR" >/dev/null 2>&1 || true
    dv_stop
    rm -rf "$PF_DIR/queue"
    PF_DIR=""
}
pf_pids() {
    grep -lzxF "MAIL_CONFIG=$PF_DIR/config" /proc/[0-9]*/environ 2>/dev/null |
        sed 's,^/proc/,,; s,/environ$,,'
    dv_pids
}
pf_check() {
    local n
    n=$(grep -c -e status=deferred -e status=bounced "$PF_DIR/maillog" || true)
    [ "$n" = 0 ] || problem "postfix $1 run $RUN: $n deferred/bounced deliveries in its maillog"
}

# --- measuring the processes of a system ---

# sys_pids SYSTEM - the processes of the system under test.
sys_pids() {
    case $1 in
    ceiling) echo "$SINK_PID" ;;
    ringrelay) echo "$RR_PID" ;;
    postfix) pf_pids ;;
    esac
}
# proc_ticks PID... - CPU ticks of these processes and of their reaped children (utime,
# stime, cutime, cstime); a process gone meanwhile counts 0 (Postfix's master holds the
# time of the children it reaped).
proc_ticks() {
    local p
    for p in "$@"; do cat "/proc/$p/stat" 2>/dev/null; done |
        awk '{sub(/^.*\) /, ""); t += $12 + $13 + $14 + $15} END {print t + 0}'
}
# hwm_snap FILE PID... - appends "pid VmHWM_kB" for every process (one grep for all).
hwm_snap() {
    local f=$1 p files=()
    shift
    for p in "$@"; do files+=("/proc/$p/status"); done
    [ ${#files[@]} -gt 0 ] || return 0
    { grep -sH '^VmHWM:' "${files[@]}" || true; } |
        awk '{ split($1, f, "/"); print f[3], $2 }' >>"$f"
}
# hwm_sum FILE - sum over the processes of each one's largest VmHWM, and the largest
# single one, in kB.
hwm_sum() {
    awk '{ if ($2 > m[$1]) m[$1] = $2 } END { for (p in m) { s += m[p]; if (m[p] > x) x = m[p]; n++ }
          print s + 0, x + 0, n + 0 }' "$1"
}
# mem_now PID... - "rss_kB pss_kB" summed over the processes (smaps_rollup).
mem_now() {
    local p
    for p in "$@"; do cat "/proc/$p/smaps_rollup" 2>/dev/null; done |
        awk '/^Rss:/ { r += $2 } /^Pss:/ { s += $2 } END { print r + 0, s + 0 }'
}

# --- one loaded run (a, b, c, e) ---

declare -A VALS=() GOT=() WANT=()
# add SCEN SYSTEM METRIC VALUE - one run's value, for the median.
add() { VALS[$1,$2,$3]+="$4"$'\n'; }

# ringbench's arguments per scenario; RATE_FOR[system] for e.
declare -A RATE_FOR=()
rb_args() {  # rb_args SCEN SYSTEM PORT
    RB=(--server "127.0.0.1:$3" --connections "$SESSIONS" --json --quiet --timeout 30s)
    case $1 in
    a) RB+=(--messages "$MSGS" --size 1K --recipients 1 --per-connection "$PER_CONN") ;;
    b) RB+=(--messages "$MSGS" --size 10K --recipients 5 --per-connection "$PER_CONN") ;;
    c) RB+=(--messages "$MSGS" --size 1K --recipients 1 --per-connection 1 --tls
            --auth "$AUTH_USER:$AUTH_PASS") ;;
    e) RB+=(--rate "${RATE_FOR[$2]}" --duration "${E_SECS}s" --size 1K --recipients 1
            --per-connection "$PER_CONN") ;;
    esac
}
RCPTS() { case $1 in b) echo 5 ;; *) echo 1 ;; esac; }

# load_run SCEN SYSTEM - start the system (and its next hop), run ringbench, wait until the
# sink has every message accepted, measure, stop everything.
load_run() {
    local scen=$1 sys=$2 port t0 t_rb t_end p0 p1 b0 b1 s0 s1 k0 k1 n0 r0 rc ok fail unsent
    local secs rate p50 p99 nr e2e_s got_m got_r other load_cpu
    nr=$(RCPTS "$scen")
    : >"$WORK/hwm"
    case $sys in
    ceiling) sink_start "${SUT[@]}"; port=$SINK_PORT ;;
    ringrelay) sink_start "${LOAD[@]}"; rr_start "$scen"; port=$PORT_RR ;;
    postfix) sink_start "${LOAD[@]}"; pf_start "$scen"; port=$PORT_PF
             [ "$scen" = c ] && port=$PORT_PF_TLS ;;
    esac
    rb_args "$scen" "$sys" "$port"
    # shellcheck disable=SC2046
    p0=$(proc_ticks $(sys_pids "$sys"))
    sink_snap; n0=$SNAP_M r0=$SNAP_R
    s0=$(pid_ticks "$SINK_PID"); self_seconds "$WORK/times"; k0=$SELF_SECONDS
    b0=$(busy_ticks); t0=$(now)
    timeout -k 5 "$TIMEOUT" "$WORK/ringbench" "${RB[@]}" >"$WORK/rb.out" 2>"$WORK/rb.err" &
    RB_PID=$!
    rc=0; wait "$RB_PID" || rc=$?
    RB_PID=""; t_rb=$(now)
    # End to end: until the sink has every message ringbench got a 250 for (polled at once:
    # the parsing and checks come after).
    ok=0
    [[ $(tail -n 1 "$WORK/rb.out") =~ \"messages_ok\":([0-9]+) ]] && ok=${BASH_REMATCH[1]}
    t_end=""
    while :; do
        sink_snap
        if [ $((SNAP_R - r0)) -ge $((ok * nr)) ]; then t_end=$(now); break; fi
        [ $(( ${EPOCHREALTIME%.*} - ${t0%.*} )) -ge "$TIMEOUT" ] && break
        sleep 0.01
    done
    b1=$(busy_ticks)
    # shellcheck disable=SC2046
    p1=$(proc_ticks $(sys_pids "$sys"))
    # shellcheck disable=SC2046
    hwm_snap "$WORK/hwm" $(sys_pids "$sys")
    s1=$(pid_ticks "$SINK_PID"); self_seconds "$WORK/times"; k1=$SELF_SECONDS
    read -r ok fail unsent secs rate p50 p99 < <(tail -n 1 "$WORK/rb.out" | python3 -c '
import json, sys
try:
    j = json.loads(sys.stdin.read())
except ValueError:
    print("0 0 0 0 0 0 0"); sys.exit()
l = j["latency_ms"]
print(j["messages_ok"], j["messages_failed"], j.get("messages_unsent", 0), j["seconds"],
      j["msgs_per_s"], l["p50"], l["p99"])')
    [ "$rc" = 0 ] || problem "$sys $scen run $RUN: ringbench exited $rc: $(tail -n 2 "$WORK/rb.err" | tr '\n' ' ')"
    [ "$fail" = 0 ] || problem "$sys $scen run $RUN: $fail messages failed ($(grep -o '"replies":{[^}]*}' "$WORK/rb.out"), $(grep -o '"errors":{[^}]*}' "$WORK/rb.out"))"
    [ "$unsent" = 0 ] || note "$sys $scen run $RUN: $unsent messages unsent by the end of the open-loop run"
    # The count must be exact: fewer is lost mail, more is duplicates (a moment's grace).
    sleep 0.2; sink_snap
    got_m=$((SNAP_M - n0)) got_r=$((SNAP_R - r0))
    if [ -z "$t_end" ]; then
        problem "$sys $scen run $RUN: the sink has $got_r of $((ok * nr)) recipients after $TIMEOUT s"
    elif [ "$got_m" != "$ok" ] || [ "$got_r" != $((ok * nr)) ]; then
        problem "$sys $scen run $RUN: the sink got $got_m messages / $got_r recipients for $ok accepted x $nr"
    fi
    GOT[$scen,$sys]=$(( ${GOT[$scen,$sys]:-0} + got_m )) WANT[$scen,$sys]=$(( ${WANT[$scen,$sys]:-0} + ok ))
    case $sys in
    ringrelay) rr_check "$scen" ;;
    postfix) pf_check "$scen" ;;
    esac
    read -r rss_sum rss_max nproc < <(hwm_sum "$WORK/hwm")
    case $sys in
    ringrelay) rr_stop ;;
    postfix) pf_stop ;;
    esac
    [ "$sys" = ceiling ] && s1=$s0  # the sink is the system here, counted in p
    sink_stop
    e2e_s=""
    [ -n "$t_end" ] && e2e_s=$(awk -v s="$secs" -v a="$t_rb" -v e="$t_end" 'BEGIN { printf "%.4f", s + (e - a) }')
    add "$scen" "$sys" acc "$rate"
    [ -n "$e2e_s" ] && [ "$ok" -gt 0 ] && add "$scen" "$sys" e2e "$(fnum %.1f "$(awk -v n="$ok" -v s="$e2e_s" 'BEGIN { print n / s }')")"
    add "$scen" "$sys" p50 "$p50"
    add "$scen" "$sys" p99 "$p99"
    [ "$ok" -gt 0 ] && add "$scen" "$sys" cpu "$(awk -v t="$((p1 - p0))" -v n="$ok" -v hz="$HZ" 'BEGIN { printf "%.4f", t / hz / n * 1000 }')"
    add "$scen" "$sys" rss "$(fnum %.1f "$(awk -v k="$rss_sum" 'BEGIN { print k / 1024 }')")"
    # Busy time of the machine that is neither the system's, the sink's nor this script's
    # (ringbench included): interrupt work charged to no process, or other work.
    other=$(awk -v b="$((b1 - b0))" -v p="$((p1 - p0))" -v s="$((s1 - s0))" -v k0="$k0" -v k1="$k1" \
        -v hz="$HZ" -v t0="$t0" -v te="${t_end:-$t_rb}" \
        'BEGIN { o = (b - p - s) / hz - (k1 - k0); printf "%.2f", o / (te - t0) }')
    # The harness's CPU (ringbench, this script, and the next-hop sink when it is not the
    # system): near all of the LOAD CPUs means the load, not the system, set the rate.
    load_cpu=$(awk -v k="$(awk -v a="$k0" -v b="$k1" 'BEGIN { print b - a }')" -v s="$((s1 - s0))" \
        -v hz="$HZ" -v t0="$t0" -v te="${t_end:-$t_rb}" 'BEGIN { printf "%.2f", (k + s / hz) / (te - t0) }')
    if awk -v l="$load_cpu" -v n="$LOAD_NCPU" 'BEGIN { exit !(l > 0.9 * n) }'; then
        note "$sys $scen run $RUN: the load side used $load_cpu of its $LOAD_NCPU CPU(s): the harness may have set the rate"
    fi
    if awk -v o="$other" 'BEGIN { exit !(o > 0.1) }'; then
        note "$sys $scen run $RUN: $(awk -v o="$other" 'BEGIN { printf "%.0f", o * 100 }')% of a CPU busy outside the system, the sink and the load"
    fi
    log "$scen $sys run $RUN: accepted $ok ($fail failed) in $secs s = $rate/s, end to end ${e2e_s:-?} s," \
        "p50 $p50 ms p99 $p99 ms, CPU $(( p1 - p0 )) ticks (load side $load_cpu CPUs), peak RSS ${rss_sum} kB over $nproc processes" \
        "(largest $rss_max kB), sink got $got_m msgs / $got_r rcpts"
}

# --- one idle run (d) ---

# holder_start N - an idle holder of N sessions on the LOAD CPUs; waits (bounded) until it
# has held them; sets H_HELD H_FAILED.
holder_start() {
    local n=$1 f=$WORK/hold.${#HOLD_PIDS[@]} line=""
    python3 bench/tools/idlehold.py --server "127.0.0.1:$PORT_D" --sessions "$n" \
        --timeout "$TIMEOUT" --hold "$TIMEOUT" >"$f" 2>"$f.err" &
    HOLD_PIDS+=($!)
    for _ in $(seq $((TIMEOUT * 10 + 50))); do
        line=$(head -n 1 "$f")
        [ -n "$line" ] && break
        kill -0 "${HOLD_PIDS[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    if [[ $line =~ \"held\":\ ([0-9]+),\ \"failed\":\ ([0-9]+).*\"seconds\":\ ([0-9.]+) ]]; then
        H_HELD=${BASH_REMATCH[1]} H_FAILED=${BASH_REMATCH[2]} H_SECS=${BASH_REMATCH[3]}
        [ "$H_FAILED" = 0 ] || problem "$IDLE_SYS d run $RUN: $H_FAILED of $n idle sessions failed: $line"
    else
        H_HELD=0 H_FAILED=$n H_SECS=-
        problem "$IDLE_SYS d run $RUN: the idle holder did not report ($(tail -n 2 "$f.err" | tr '\n' ' '))"
    fi
}
holders_stop() {
    local p
    for p in "${HOLD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${HOLD_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    HOLD_PIDS=()
}

idle_run() {
    local sys=$1 n=$IDLE n1 m0r m0p m1r m1p m2r m2p held d_r d_p marg_r secs
    [ "$sys" = postfix ] && n=$IDLE_PF
    n1=$((n / 10))
    IDLE_SYS=$sys
    : >"$WORK/hwm"
    case $sys in
    ceiling) sink_start "${SUT[@]}"; PORT_D=$SINK_PORT ;;
    ringrelay) SINK_PORT=9; rr_start d; PORT_D=$PORT_RR ;;
    postfix) SINK_PORT=9; pf_start d; PORT_D=$PORT_PF ;;
    esac
    sleep 0.5
    # shellcheck disable=SC2046
    read -r m0r m0p < <(mem_now $(sys_pids "$sys"))
    holder_start "$n1"; held=$H_HELD secs=$H_SECS
    sleep 1  # let the servers finish what follows the EHLO reply
    # shellcheck disable=SC2046
    read -r m1r m1p < <(mem_now $(sys_pids "$sys"))
    holder_start $((n - n1)); held=$((held + H_HELD)) secs="$secs + $H_SECS"
    sleep 1
    # shellcheck disable=SC2046
    read -r m2r m2p < <(mem_now $(sys_pids "$sys"))
    # shellcheck disable=SC2046
    hwm_snap "$WORK/hwm" $(sys_pids "$sys")
    holders_stop
    read -r rss_sum rss_max nproc < <(hwm_sum "$WORK/hwm")
    case $sys in
    ceiling) sink_stop ;;
    ringrelay) rr_stop ;;
    postfix) pf_stop ;;
    esac
    SINK_PORT=""
    [ "$held" -gt 0 ] || return 0
    # Per session: the growth from the system at rest to N sessions held, over N (RSS for
    # the single-process systems; for Postfix the proportional set size, so that the library
    # pages its thousand smtpd processes share count once). Also the marginal cost, from
    # N/10 held to N held, which leaves out what the first sessions touch once.
    d_r=$(awk -v a="$m0r" -v b="$m2r" -v n="$held" 'BEGIN { printf "%.2f", (b - a) / n }')
    d_p=$(awk -v a="$m0p" -v b="$m2p" -v n="$held" 'BEGIN { printf "%.2f", (b - a) / n }')
    marg_r=$(awk -v a="$m1r" -v b="$m2r" -v n="$((n - n1))" 'BEGIN { printf "%.2f", (b - a) / n }')
    if [ "$sys" = postfix ]; then add d "$sys" idle "$d_p"; else add d "$sys" idle "$d_r"; fi
    add d "$sys" rss "$(fnum %.1f "$(awk -v k="$rss_sum" 'BEGIN { print k / 1024 }')")"
    add d "$sys" held "$held"
    log "d $sys run $RUN: $held sessions held (set up in $secs s); RSS $m0r -> $m1r -> $m2r kB, PSS $m0p -> $m1p -> $m2p kB" \
        "($nproc processes); per session RSS $d_r kB, PSS $d_p kB, marginal RSS $marg_r kB"
    note "d $sys run $RUN: $held idle sessions: RSS +$d_r KiB, PSS +$d_p KiB per session (marginal, from $n1 to $n held: RSS +$marg_r KiB)"
}

# --- the runs ---

SYSTEMS=(ceiling ringrelay)
[ -z "$NO_PF" ] && SYSTEMS+=(postfix)
declare -A TITLE=(
    [a]="a: 1 KiB, 1 rcpt"
    [b]="b: 10 KiB, 5 rcpts"
    [c]="c: TLS+AUTH per msg"
    [d]="d: idle sessions"
    [e]="e: open loop"
)
conn_words="sessions kept"
[ "$PER_CONN" = 1 ] && conn_words="a connection per message"
[ "$PER_CONN" -gt 1 ] && conn_words="$PER_CONN messages per connection"

log "load: ringbench, $SESSIONS sessions ($conn_words in a, b, e), $MSGS messages in a, b, c;" \
    "$REPS runs; ringrelay workers=$WORKERS; placement $PIN (system:load) on $NCPU CPUs"
for scen in a b c e d; do
    has "$scen" || continue
    if [ "$scen" = e ]; then
        for sys in "${SYSTEMS[@]}"; do
            if [ -n "$RATE" ]; then RATE_FOR[$sys]=$RATE
            else
                RATE_FOR[$sys]=$(printf '%s' "${VALS[a,$sys,acc]:-}" | median |
                    awk '{ r = int($1 / 2); print (r < 1 ? 1 : r) }')
            fi
        done
        TITLE[e]="e: open loop, 50% of a"
        [ -n "$RATE" ] && TITLE[e]="e: open loop, $RATE/s"
    fi
    for ((RUN = 1; RUN <= REPS; RUN++)); do
        for sys in "${SYSTEMS[@]}"; do
            if [ "$scen" = c ] && [ "$sys" = ceiling ]; then continue; fi  # ringsink has no TLS
            if [ "$scen" = d ]; then idle_run "$sys"; else load_run "$scen" "$sys"; fi
        done
    done
done

# --- the table ---

# med SCEN SYSTEM METRIC - the median of the runs, or "-".
med() {
    local v=${VALS[$1,$2,$3]:-}
    if [ -z "$v" ]; then echo -; else printf '%s' "$v" | median; fi
}
# ratio A B [FORMAT] - A/B, or "-".
ratio() {
    if [ "$1" = - ] || [ "$2" = - ]; then echo -; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2fx", a / b }'
}
FMT='%-23s %-19s %9s %9s %8s %8s %9s %9s %9s %12s\n'
row() { # row SCEN LABEL acc e2e p50 p99 cpu rss idle got
    # shellcheck disable=SC2059  # one format for every row
    printf "$FMT" "$@"
}
fmt() {  # fmt FORMAT VALUE - "-" stays
    if [ "$2" = - ]; then echo -; else fnum "$1" "$2"; fi
}

echo
echo "ringrelay against Postfix 3.7 and the ceiling (ringsink alone): $(date -u +%Y-%m-%d), $(uname -n)," \
     "$NCPU CPUs, $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
echo "ringbench: $SESSIONS sessions ($conn_words in a, b, e), $MSGS messages per run in a, b, c;" \
     "$REPS runs, medians; ringrelay workers=$WORKERS; placement system:load = $PIN;" \
     "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
echo
row scenario system "accept/s" "e2e/s" "p50 ms" "p99 ms" "CPU s/1k" "RSS MiB" "KiB/idle" "sink got"
for scen in a b c e d; do
    has "$scen" || continue
    label=${TITLE[$scen]}
    for sys in "${SYSTEMS[@]}"; do
        name=$sys
        [ "$scen" = e ] && [ -n "${RATE_FOR[$sys]:-}" ] && name="$sys @${RATE_FOR[$sys]}/s"
        if [ "$scen" = c ] && [ "$sys" = ceiling ]; then
            row "$label" "$name" - - - - - - - -
            note "c: no ceiling row: ringsink has no TLS (yet)"
            label=""; continue
        fi
        if [ "$scen" = d ]; then
            n=$IDLE; [ "$sys" = postfix ] && n=$IDLE_PF
            name="$sys x$(med d "$sys" held)"
            got=-
        else
            got="${GOT[$scen,$sys]:-0}/${WANT[$scen,$sys]:-0}"
        fi
        row "$label" "$name" "$(fmt %.0f "$(med "$scen" "$sys" acc)")" \
            "$(fmt %.0f "$(med "$scen" "$sys" e2e)")" "$(fmt %.2f "$(med "$scen" "$sys" p50)")" \
            "$(fmt %.2f "$(med "$scen" "$sys" p99)")" "$(fmt %.3f "$(med "$scen" "$sys" cpu)")" \
            "$(fmt %.1f "$(med "$scen" "$sys" rss)")" "$(fmt %.2f "$(med "$scen" "$sys" idle)")" "$got"
        label=""
    done
    for peer in postfix ceiling; do
        [ "$peer" = postfix ] && [ -n "$NO_PF" ] && continue
        [ "$peer" = ceiling ] && [ "$scen" = c ] && continue
        cols=()
        for m in acc e2e p50 p99 cpu rss idle; do
            cols+=("$(ratio "$(med "$scen" ringrelay "$m")" "$(med "$scen" "$peer" "$m")")")
        done
        row "" "ringrelay/$peer" "${cols[@]}" ""
    done
done
echo
echo "accept/s: ringbench's messages with a 250 per second of its run (in e: the rate achieved);"
echo "e2e/s: those messages over the time until the next-hop sink had them all; p50/p99: from the"
echo "write of MAIL (in e: from each message's due time) to the reply to the end of data;"
echo "CPU s/1k: user+system seconds of the system's processes per 1000 messages (Postfix: all of"
echo "its instance's processes, and Dovecot's in c); RSS MiB: peak (VmHWM), for Postfix the sum"
echo "over its processes' peaks;"
echo "KiB/idle: memory growth per idle session (d; Postfix: proportional set size, summed)."
echo "Ratios are ringrelay/peer for every column: above 1 is better for rates, below 1 for the rest."

# --- the issue's goals ---
goal() {  # goal TEXT VALUE OP LIMIT
    local v=$2 verdict
    if [ "$v" = - ]; then verdict="not measured"
    elif awk -v v="${v%x}" -v l="$4" -v op="$3" 'BEGIN { exit !(op == ">=" ? v >= l : v <= l) }'; then
        verdict=met
    else verdict="NOT MET"; fi
    printf '  %-52s %10s  (goal %s %s)  %s\n' "$1" "$v" "$3" "$4" "$verdict"
}
echo
echo "goals (issue 7):"
if has a; then
    [ -z "$NO_PF" ] && goal "a: accept, ringrelay/postfix" "$(ratio "$(med a ringrelay acc)" "$(med a postfix acc)")" ">=" 12
    goal "a: accept, ringrelay/ceiling" "$(ratio "$(med a ringrelay acc)" "$(med a ceiling acc)")" ">=" 0.70
    [ -z "$NO_PF" ] && goal "a: end to end, ringrelay/postfix" "$(ratio "$(med a ringrelay e2e)" "$(med a postfix e2e)")" ">=" 8
fi
if has c && [ -z "$NO_PF" ]; then
    goal "c: accept, ringrelay/postfix" "$(ratio "$(med c ringrelay acc)" "$(med c postfix acc)")" ">=" 5
fi
has d && goal "d: KiB per idle plaintext session, ringrelay" "$(fmt %.2f "$(med d ringrelay idle)")" "<=" 4
[ -z "$NOTES" ] || printf '\nnotes:\n%s' "$NOTES"
if [ -n "$PROBLEMS" ]; then
    printf '\nproblems:\n%s' "$PROBLEMS"
    exit 1
fi
