#!/bin/sh
# install-deps.sh - install every Debian 12 package ringrelay needs to build, run and test.
#
# Run as root on Debian 12. Idempotent: packages already present are left alone, and apt is
# only consulted when something is missing. Installing the mail peers (Postfix, Dovecot,
# dnsmasq) must configure and start nothing: Postfix is preseeded with "No configuration",
# and service starts are refused while the packages install.
set -eu

BUILD="make gcc pkg-config liburing-dev libwolfssl-dev libjemalloc-dev libbpf-dev
       libinih-dev libc-ares-dev libcrypt-dev libidn2-dev linux-libc-dev clang llvm
       libclang-rt-14-dev bpftool"
RUN="openssl ca-certificates iproute2 ethtool"
TEST="python3 python3-pytest swaks libnet-ssleay-perl postfix dovecot-core dnsmasq-base curl procps psmisc
      util-linux"

missing=""
for p in $BUILD $RUN $TEST; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' \
        || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages:$missing (run as root to install them)" >&2
    exit 1
fi

echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections

# Refuse service starts while installing: the peers are started by the tests, never by dpkg.
rcd=/usr/sbin/policy-rc.d
restore=""
if [ -e "$rcd" ]; then
    restore=$(mktemp); cp -p "$rcd" "$restore"
fi
printf '#!/bin/sh\nexit 101\n' > "$rcd"; chmod 755 "$rcd"
cleanup() {
    if [ -n "$restore" ]; then mv -f "$restore" "$rcd"; else rm -f "$rcd"; fi
}
trap cleanup EXIT

apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# The peers are started by the tests only: never at boot either.
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable dovecot.service postfix.service >/dev/null 2>&1 || true
fi
echo "install-deps: done"
