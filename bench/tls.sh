#!/bin/bash
# tls.sh - TLS handshakes per second on one ringrelay worker, full and resumed, against
# Postfix 3.7's smtpd in the same run (implicit TLS on both, the same ECDSA P-256 or RSA
# certificate). See bench/README.md for the method.
#
# Usage: bench/tls.sh [-t SECONDS] [-c CLIENTS] [-r REPS] [-k ec|rsa]
# The load is CLIENTS parallel `openssl s_time` loops (connect, handshake, close). Each mode
# runs REPS times for SECONDS; the table gives medians of handshakes per second and of the
# server's CPU per handshake (the machine's busy time minus the clients' own CPU), and the
# rate one core could sustain at that cost. TLS 1.3 resumption is measured with a Python
# client (s_time does not read the session ticket a TLS 1.3 server sends after the handshake).
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh  # busy_ticks, median

SECS=5 CLIENTS=4 REPS=3 KIND=ec
while getopts "t:c:r:k:" o; do
    case $o in
    t) SECS=$OPTARG ;; c) CLIENTS=$OPTARG ;; r) REPS=$OPTARG ;; k) KIND=$OPTARG ;;
    *) echo "usage: $0 [-t SECONDS] [-c CLIENTS] [-r REPS] [-k ec|rsa]" >&2; exit 2 ;;
    esac
done

WORK=$(mktemp -d /tmp/ringrelay-tls.XXXXXX)
chmod 755 "$WORK"
PORT_RR=31465 PORT_PF=31466 PORT_METRICS=31467 PORT_PF_SMTP=31468
cleanup() {
    [ -n "${RR_PID:-}" ] && kill "$RR_PID" 2>/dev/null && wait "$RR_PID" 2>/dev/null
    bench/postfix-peer.sh stop "$WORK/postfix" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$KIND" = rsa ]; then newkey=(-newkey rsa:2048); else
    newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1); fi
openssl req -x509 "${newkey[@]}" -nodes -keyout "$WORK/key.pem" -out "$WORK/cert.pem" \
    -days 2 -subj /CN=relay.bench.example 2>/dev/null
chmod 644 "$WORK/key.pem"

cat >"$WORK/ringrelay.conf" <<EOF
[server]
hostname = relay.bench.example
workers = 1
spool_dir = $WORK/spool
metrics_listen = 127.0.0.1:$PORT_METRICS
control_socket = $WORK/control.sock
[listener.smtps]
listen = 127.0.0.1:$PORT_RR
tls = implicit
[tls]
cert = $WORK/cert.pem
key = $WORK/key.pem
[relay]
smarthost = [127.0.0.1]:9
EOF
build/ringrelay -c "$WORK/ringrelay.conf" 2>"$WORK/ringrelay.log" &
RR_PID=$!

bench/postfix-peer.sh start "$WORK/postfix" "$PORT_PF_SMTP"
PFC="$WORK/postfix/config"
postconf -c "$PFC" -e "smtpd_tls_cert_file = $WORK/cert.pem" "smtpd_tls_key_file = $WORK/key.pem" \
    "smtpd_tls_security_level = may" "smtpd_tls_loglevel = 0" \
    "smtpd_tls_session_cache_database = btree:$WORK/postfix/data/smtpd_scache" \
    "smtpd_tls_mandatory_protocols = >=TLSv1.2" "smtpd_tls_protocols = >=TLSv1.2"
postconf -c "$PFC" -M "127.0.0.1:$PORT_PF/inet=127.0.0.1:$PORT_PF inet n - n - - smtpd -o smtpd_tls_wrappermode=yes"
grep -q '^tlsmgr' "$PFC/master.cf" ||
    postconf -c "$PFC" -M "tlsmgr/unix=tlsmgr unix - - n 1000? 1 tlsmgr"
postfix -c "$PFC" reload >/dev/null 2>&1
for _ in $(seq 100); do
    echo | timeout 2 openssl s_client -connect "127.0.0.1:$PORT_PF" 2>/dev/null | grep -q '^220' \
        && echo | timeout 2 openssl s_client -connect "127.0.0.1:$PORT_RR" 2>/dev/null | grep -q '^220' \
        && break
    sleep 0.1
done

# resume13 PORT SECONDS - a Python loop of TLS 1.3 connections resuming one session.
resume13() {
    python3 - "$1" "$2" <<'PY'
import socket, ssl, sys, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
sess, n, resumed, end = None, 0, 0, time.monotonic() + secs
while time.monotonic() < end:
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), session=sess)
    s.recv(512)                      # the greeting; the ticket came before it
    resumed += s.session_reused
    sess = s.session
    s.close(); n += 1
print("%d connections, %d resumed" % (n, resumed))
PY
}

# load PORT MODE - CLIENTS loops for SECS; prints "handshakes seconds server_cpu_seconds".
load() {
    local b0 b1 t0 t1 out
    b0=$(busy_ticks); t0=$(now)
    out=$(for ((i = 0; i < CLIENTS; i++)); do
        if [ "$2" = resume13 ]; then
            /usr/bin/time -f "cpu %U %S" bash -c "$(declare -f resume13); resume13 $1 $SECS" 2>&1 &
        else
            # shellcheck disable=SC2086
            /usr/bin/time -f "cpu %U %S" openssl s_time -connect "127.0.0.1:$1" $2 \
                -time "$SECS" 2>&1 &
        fi
    done; wait)
    t1=$(now); b1=$(busy_ticks)
    echo "$out" | awk -v t0="$t0" -v t1="$t1" -v b0="$b0" -v b1="$b1" -v hz="$(getconf CLK_TCK)" '
        /connections in .* real seconds/ { n += $1 }
        /connections, .* resumed/ { n += $1 }
        /^cpu / { c += $2 + $3 }
        END { printf "%d %.3f %.3f\n", n, t1 - t0, (b1 - b0) / hz - c }'
}

MODES=("full TLS 1.3|-new -tls1_3" "full TLS 1.2|-new -tls1_2" "resumed TLS 1.2|-reuse -tls1_2"
       "resumed TLS 1.3|resume13")
printf '%-18s | %-28s | %-28s | %s\n' "handshake ($KIND)" "ringrelay (1 worker)" \
    "Postfix 3.7 smtpd" "ratio"
printf '%-18s | %-28s | %-28s | %s\n' "" "per s / CPU us / 1-core cap" \
    "per s / CPU us / 1-core cap" "(per-handshake CPU)"
for m in "${MODES[@]}"; do
    name=${m%%|*} mode=${m#*|}
    declare -A R=() C=()
    for srv in rr pf; do
        port=$PORT_RR; [ $srv = pf ] && port=$PORT_PF
        rates="" cpus=""
        for ((r = 0; r < REPS; r++)); do
            read -r n secs cpu < <(load "$port" "$mode")
            rates+="$(awk -v n="$n" -v s="$secs" 'BEGIN{printf "%.0f", n / s}')"$'\n'
            cpus+="$(awk -v n="$n" -v c="$cpu" 'BEGIN{printf "%.0f", n ? c * 1e6 / n : 0}')"$'\n'
        done
        R[$srv]=$(printf '%s' "$rates" | median)
        C[$srv]=$(printf '%s' "$cpus" | median)
    done
    cap() { awk -v c="$1" 'BEGIN{printf "%.0f", (c > 0 ? 1e6 / c : 0)}'; }
    printf '%-18s | %6s / %5s / %6s        | %6s / %5s / %6s        | %sx\n' "$name" \
        "${R[rr]}" "${C[rr]}" "$(cap "${C[rr]}")" "${R[pf]}" "${C[pf]}" "$(cap "${C[pf]}")" \
        "$(awk -v a="${C[rr]}" -v b="${C[pf]}" 'BEGIN{printf "%.1f", (a > 0 ? b / a : 0)}')"
done
echo "ringrelay handshake counters:"
curl -s "http://127.0.0.1:$PORT_METRICS/metrics" | grep '^ringrelay_tls_handshakes_total'
