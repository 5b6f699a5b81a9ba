#!/bin/bash
# auth.sh - the cost of one SMTP AUTH on ringrelay: a SHA512-CRYPT check (a login not seen
# in the last minute) against a hit in the cache of recent successes.
#
# Usage: bench/auth.sh [-n LOGINS] [-c CLIENTS] [-r REPS]
# A passwd-file of LOGINS accounts with SHA512-CRYPT hashes (5000 rounds, as Dovecot and
# `openssl passwd -6` make them). Each login is one plaintext session (AUTH over TLS adds
# the handshake, measured by bench/tls.sh): EHLO, AUTH PLAIN, QUIT, from CLIENTS parallel
# Python clients. "miss": every account logs in once (each check hashes); "hit": one account
# logs in LOGINS times (after the first, the cache answers). Reported per login: the relay's
# CPU (worker and hash helpers: the whole process) and the client's median AUTH round trip.
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh  # pid_ticks, median

LOGINS=400 CLIENTS=4 REPS=3
while getopts "n:c:r:" o; do
    case $o in
    n) LOGINS=$OPTARG ;; c) CLIENTS=$OPTARG ;; r) REPS=$OPTARG ;;
    *) echo "usage: $0 [-n LOGINS] [-c CLIENTS] [-r REPS]" >&2; exit 2 ;;
    esac
done

WORK=$(mktemp -d /tmp/ringrelay-auth.XXXXXX)
PORT=31587 PORT_METRICS=31588
cleanup() {
    [ -n "${RR_PID:-}" ] && kill "$RR_PID" 2>/dev/null && wait "$RR_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

python3 - "$WORK/users" "$LOGINS" <<'PY'
import subprocess, sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(n):
        h = subprocess.run(["openssl", "passwd", "-6", "pw%d" % i], check=True,
                           stdout=subprocess.PIPE).stdout.decode().strip()
        f.write("user%d@example.com:{SHA512-CRYPT}%s\n" % (i, h))
PY

start_relay() {
    cat >"$WORK/ringrelay.conf" <<EOF
[server]
hostname = relay.bench.example
workers = 1
spool_dir = $WORK/spool
metrics_listen = 127.0.0.1:$PORT_METRICS
control_socket = $WORK/control.sock
[listener.submission]
listen = 127.0.0.1:$PORT
auth = required
[auth]
passwd_file = $WORK/users
plaintext = yes
max_failures = 100
[relay]
smarthost = [127.0.0.1]:9
EOF
    build/ringrelay -c "$WORK/ringrelay.conf" 2>"$WORK/ringrelay.log" &
    RR_PID=$!
    for _ in $(seq 100); do grep -q event=ready "$WORK/ringrelay.log" && return; sleep 0.05; done
    echo "ringrelay did not start" >&2; cat "$WORK/ringrelay.log" >&2; exit 1
}

# logins MODE - CLIENTS parallel clients share LOGINS logins; prints "seconds p50_ms".
logins() {
    python3 - "$PORT" "$LOGINS" "$CLIENTS" "$1" <<'PY'
import base64, multiprocessing, socket, statistics, sys, time
port, n, k, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def reply(s, buf):
    while True:
        while b"\r\n" not in buf[0]:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("connection closed")
            buf[0] += chunk
        line, buf[0] = buf[0].split(b"\r\n", 1)
        if line[3:4] != b"-":
            return line

def run(idx):
    lat = []
    for i in range(idx, n, k):
        u, p = ("user%d@example.com" % i, "pw%d" % i) if mode == "miss" else \
               ("user0@example.com", "pw0")
        s = socket.create_connection(("127.0.0.1", port)); buf = [b""]
        reply(s, buf)
        s.sendall(b"EHLO bench\r\n"); reply(s, buf)
        t = time.perf_counter()
        s.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0" + u.encode() + b"\0" + p.encode())
                  + b"\r\n")
        r = reply(s, buf)
        lat.append(time.perf_counter() - t)
        assert r.startswith(b"235"), r
        s.sendall(b"QUIT\r\n"); reply(s, buf); s.close()
    return lat

t0 = time.perf_counter()
with multiprocessing.Pool(k) as pool:
    lats = [x for part in pool.map(run, range(k)) for x in part]
print("%.3f %.3f" % (time.perf_counter() - t0, statistics.median(lats) * 1000))
PY
}

start_relay
hz=$(getconf CLK_TCK)
printf '%-6s | %-10s | %-14s | %s\n' mode "logins/s" "relay CPU/login" "AUTH p50 (ms)"
for mode in miss hit; do
    rates="" cpus="" lats=""
    for ((r = 0; r < REPS; r++)); do
        if [ "$mode" = miss ]; then   # a fresh process: an empty cache
            kill "$RR_PID"; wait "$RR_PID" 2>/dev/null || true; start_relay
        fi
        c0=$(pid_ticks "$RR_PID")
        read -r secs p50 < <(logins "$mode")
        c1=$(pid_ticks "$RR_PID")
        rates+="$(awk -v n="$LOGINS" -v s="$secs" 'BEGIN{printf "%.0f", n / s}')"$'\n'
        cpus+="$(awk -v n="$LOGINS" -v c="$((c1 - c0))" -v hz="$hz" \
            'BEGIN{printf "%.0f", c / hz * 1e6 / n}')"$'\n'
        lats+="$p50"$'\n'
    done
    printf '%-6s | %10s | %11s us | %s\n' "$mode" "$(printf '%s' "$rates" | median)" \
        "$(printf '%s' "$cpus" | median)" "$(printf '%s' "$lats" | median)"
done
