#!/bin/sh
# run-demo.sh - `make run`: start ringrelay in the foreground from the example configuration,
# on loopback, with its state under ./run. Stop it with Ctrl-C (SIGINT) or SIGTERM.
set -eu
cd "$(dirname "$0")/.."
sh deploy/demo-files.sh .
conf=deploy/ringrelay.conf.example
build/ringrelay -t -c "$conf"
port=$(sed -n 's/^listen *= *127.0.0.1:\([0-9]*\).*/\1/p' "$conf" | head -n 1)
metrics=$(sed -n 's/^metrics_listen *= *\([^ #]*\).*/\1/p' "$conf" | head -n 1)
cat <<TXT
ringrelay: SMTP on 127.0.0.1:$port (STARTTLS) and 127.0.0.1:2465 (implicit TLS),
           metrics at http://$metrics/metrics
  try:  swaks --server 127.0.0.1:$port --tls --auth PLAIN --auth-user demo@example.com \\
              --auth-password demo --from demo@example.com --to someone@example.net
  list: build/ringctl -c $conf spool
TXT
exec build/ringrelay -c "$conf"
