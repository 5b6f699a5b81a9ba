#!/bin/sh
# demo-files.sh [DIR] - the files `make run` needs besides the example configuration, made
# once under DIR/run (default: the repository): a self-signed certificate for the demo's
# STARTTLS and implicit-TLS listeners, and a Dovecot passwd-file with the demo account
# "demo@example.com", password "demo" (SHA512-CRYPT). Existing files are kept.
set -eu
dir=${1:-$(dirname "$0")/..}
mkdir -p "$dir/run/spool"
cd "$dir/run"
if [ ! -s cert.pem ] || [ ! -s key.pem ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout key.pem -out cert.pem -days 825 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
    chmod 600 key.pem
fi
if [ ! -s users ]; then
    printf 'demo@example.com:{SHA512-CRYPT}%s\n' "$(openssl passwd -6 demo)" > users
    chmod 600 users
fi
