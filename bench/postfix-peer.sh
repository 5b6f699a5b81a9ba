#!/bin/bash
# postfix-peer.sh - a private, loopback-only Postfix 3.7 instance for benchmarks and tests.
#
# Usage:
#   bench/postfix-peer.sh start DIR PORT [RELAYHOST:PORT]
#       Writes DIR/config/{main.cf,master.cf}, uses DIR/queue as queue_directory,
#       DIR/data as data_directory and DIR/maillog as the log file (no syslog needed),
#       then runs "postfix -c DIR/config start" (as root; daemons run as mail_owner
#       postfix). Returns once smtpd answers "220" on 127.0.0.1:PORT. Prints nothing
#       but errors. Only 127.0.0.1:PORT is listened on; mydestination is empty and any
#       recipient is accepted from 127.0.0.0/8.
#       With RELAYHOST:PORT: all mail is relayed to [RELAYHOST]:PORT (end-to-end runs).
#       Without it: "accept-only" mode, every accepted message is kept in the queue
#       (hold queue) and never delivered - see the comment at ACCEPT-ONLY below.
#       PF_PROCESS_LIMIT=N in the environment sets default_process_limit (default 100);
#       the master also sizes its listen backlog from it, so many sessions opened at once
#       wait in the kernel's queue instead of overflowing it.
#   bench/postfix-peer.sh stop DIR
#       "postfix -c DIR/config stop", waits (bounded) for the master to exit, then
#       kills any process still belonging to this instance (and only this instance).
#   bench/postfix-peer.sh queue-count DIR
#       Prints the number of messages in the instance's queue (maildrop, incoming,
#       active, deferred and hold; files still being written are not counted).
#
# Needs root and the Debian 12 "postfix" package (user postfix, group postdrop); it
# never reads or changes /etc/postfix/main.cf or /var/spool/postfix. DIR is created if
# missing and must be reachable by the postfix user (it is chmod'ed 0755). Re-running
# "start" on a stopped DIR rewrites the configuration but keeps the queue.
# Release held mail of an accept-only instance with: postsuper -c DIR/config -H ALL

set -u

PROG=${0##*/}
POSTFIX=/usr/sbin/postfix
MAIL_OWNER=postfix
SETGID_GROUP=postdrop

die() { echo "$PROG: $*" >&2; exit 1; }

usage() {
	cat >&2 <<EOF
usage: $PROG start DIR PORT [RELAYHOST:PORT]
       $PROG stop DIR
       $PROG queue-count DIR
EOF
	exit 2
}

# Absolute, symlink-free path of an existing directory.
absdir() { (cd "$1" 2>/dev/null && pwd -P); }

check_port() {
	case $1 in
	'' | *[!0-9]*) return 1 ;;
	esac
	[ "$1" -ge 1 ] && [ "$1" -le 65535 ]
}

# True when something on 127.0.0.1:$1 accepts a TCP connection.
port_open() {
	timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# True when an SMTP server on 127.0.0.1:$1 greets with 220.
smtp_ready() {
	# shellcheck disable=SC2016
	timeout 3 bash -c '
		exec 3<>/dev/tcp/127.0.0.1/'"$1"' || exit 1
		IFS= read -r line <&3 || exit 1
		printf "QUIT\r\n" >&3
		case $line in 220*) exit 0 ;; *) exit 1 ;; esac' 2>/dev/null
}

# PID of the running master of the instance in $1, or nothing.
master_pid() {
	local pidf=$1/queue/pid/master.pid pid
	[ -r "$pidf" ] || return 1
	pid=$(awk '{ print $1; exit }' "$pidf" 2>/dev/null)
	case $pid in '' | *[!0-9]*) return 1 ;; esac
	kill -0 "$pid" 2>/dev/null || return 1
	# Make sure the PID was not recycled: it must be a Postfix master of this instance.
	tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" |
		grep -qxF "MAIL_CONFIG=$1/config" || return 1
	echo "$pid"
}

# PIDs of every process of the instance in $1: Postfix exports MAIL_CONFIG (set by
# "postfix -c") to the master and all its children (export_environment default).
instance_pids() {
	local p
	for p in /proc/[0-9]*; do
		[ "${p#/proc/}" = "$$" ] && continue
		tr '\0' '\n' 2>/dev/null <"$p/environ" |
			grep -qxF "MAIL_CONFIG=$1/config" && echo "${p#/proc/}"
	done
}

cmd_start() {
	[ $# -eq 2 ] || [ $# -eq 3 ] || usage
	local dir=$1 port=$2 relay=${3:-} relayhost relay_port mode
	local process_limit=${PF_PROCESS_LIMIT:-100}
	case $process_limit in '' | *[!0-9]*) die "PF_PROCESS_LIMIT: not a number" ;; esac
	[ "$(id -u)" -eq 0 ] || die "must run as root (Postfix master is started as root)"
	[ -x "$POSTFIX" ] || die "$POSTFIX not found (install the Debian postfix package)"
	getent passwd "$MAIL_OWNER" >/dev/null || die "user $MAIL_OWNER missing"
	getent group "$SETGID_GROUP" >/dev/null || die "group $SETGID_GROUP missing"
	check_port "$port" || die "bad PORT '$port'"
	if [ -n "$relay" ]; then
		relay_port=${relay##*:}
		relayhost=${relay%:*}
		relayhost=${relayhost#[}
		relayhost=${relayhost%]}
		if [ "$relayhost" = "$relay" ] || ! check_port "$relay_port"; then
			die "bad RELAYHOST:PORT '$relay'"
		fi
		case $relayhost in
		127.*) ;;
		*) die "relay host must be a loopback address (127.x.x.x), got '$relayhost'" ;;
		esac
		mode=relay
	else
		# Never used for delivery (mail is held), but keeps anything that is
		# released later on loopback: port 9 (discard) normally refuses.
		relayhost=127.0.0.1 relay_port=9 mode=accept-only
	fi

	mkdir -p "$dir" || die "cannot create $dir"
	dir=$(absdir "$dir") || die "cannot resolve $dir"
	case $dir in
	*[[:space:],=\$\"\'\\]*) die "DIR must not contain blanks or special characters: '$dir'" ;;
	esac
	[ -n "$(master_pid "$dir")" ] && die "an instance is already running in $dir"
	port_open "$port" && die "127.0.0.1:$port is already in use"

	# Postfix daemons (user postfix, no chroot) chdir into DIR/queue: every parent
	# must be searchable by them, and the root-owned dirs must not be group/other
	# writable or "postfix check" complains.
	chown root:root "$dir" || die "cannot chown $dir"
	chmod 0755 "$dir" || die "cannot chmod $dir"
	if ! su -s /bin/sh "$MAIL_OWNER" -c "cd '$dir'" 2>/dev/null; then
		die "user $MAIL_OWNER cannot reach $dir (a parent directory is not searchable)"
	fi
	mkdir -p "$dir/config" "$dir/queue" || die "cannot create $dir/config or $dir/queue"
	chown root:root "$dir/config" "$dir/queue" || die "cannot chown $dir/config $dir/queue"
	chmod 0755 "$dir/config" "$dir/queue" || die "cannot chmod $dir/config $dir/queue"
	: >>"$dir/maillog" || die "cannot create $dir/maillog"

	umask 022
	cat >"$dir/config/main.cf" <<EOF || die "cannot write $dir/config/main.cf"
# Generated by bench/postfix-peer.sh ($mode mode) - private benchmark instance.
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = $MAIL_OWNER
setgid_group = $SETGID_GROUP

# Logging to a file through postlogd (postlog service in master.cf); no syslog.
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
syslog_name = postfix-peer

# Identity: fixed names so Postfix never needs the system's FQDN.
myhostname = postfix-peer.localdomain
mydomain = localdomain
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
append_dot_mydomain = no
biff = no
smtpd_banner = \$myhostname ESMTP postfix-peer

# Loopback only, IPv4 only.
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
smtpd_peername_lookup = no

# No DNS at all (disable_dns_lookups is obsolete in 3.7).
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
relayhost = [$relayhost]:$relay_port
smtp_tls_security_level = none
smtpd_tls_security_level = none

# No throttling of 50+ concurrent loopback sessions.
default_process_limit = $process_limit
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_client_new_tls_session_rate_limit = 0
smtpd_client_auth_rate_limit = 0
EOF

	if [ "$mode" = accept-only ]; then
		cat >>"$dir/config/main.cf" <<'EOF' || die "cannot write main.cf"

# ACCEPT-ONLY: every message is put on the hold queue by smtpd (the access action
# HOLD, for every client, evaluated once per message at DATA). smtpd and cleanup
# run exactly the normal receive path - cleanup writes the queue file, fsyncs it
# and only then smtpd answers 250 - cleanup merely files it under hold/ instead of
# incoming/. The queue manager never sees the message, so nothing is delivered,
# nothing is retried and there is no defer-log or bounce work (which
# "defer_transports = smtp" would add per message, making the peer look slower
# than its receive path really is). Release with "postsuper -H ALL".
smtpd_data_restrictions = check_client_access static:HOLD
# in_flow_delay (default 1s) makes cleanup wait for a token that the queue manager
# hands out as it takes mail out of incoming/; held mail never reaches the queue
# manager, so tokens run short (measured: ~20% fewer msgs/s with the default).
in_flow_delay = 0
EOF
	fi

	cat >"$dir/config/master.cf" <<EOF || die "cannot write $dir/config/master.cf"
# Generated by bench/postfix-peer.sh. Only one inet listener; no chroot anywhere
# (so nothing has to be copied into the queue directory).
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:$port inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF

	# "postfix start" creates the queue sub-directories (post-install
	# create-missing), checks the instance and waits for the master to initialise.
	local out
	if ! out=$(env -u MAIL_CONFIG "$POSTFIX" -c "$dir/config" start 2>&1); then
		echo "$out" >&2
		tail -n 20 "$dir/maillog" >&2 2>/dev/null
		die "postfix start failed for $dir"
	fi

	local i
	for i in $(seq 1 100); do
		smtp_ready "$port" && return 0
		sleep 0.1
	done
	echo "$out" >&2
	tail -n 20 "$dir/maillog" >&2 2>/dev/null
	die "Postfix in $dir does not accept SMTP on 127.0.0.1:$port after 10 s"
}

cmd_stop() {
	[ $# -eq 1 ] || usage
	local dir pid pids i
	dir=$(absdir "$1") || die "no such directory: $1"
	[ -f "$dir/config/main.cf" ] || die "$dir is not a postfix-peer instance"
	pid=$(master_pid "$dir")
	if [ -n "$pid" ]; then
		"$POSTFIX" -c "$dir/config" stop >/dev/null 2>&1
		for i in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
	fi
	# Leftovers of this instance only (e.g. daemons still finishing a request).
	for i in $(seq 1 30); do
		pids=$(instance_pids "$dir")
		[ -z "$pids" ] && return 0
		if [ "$i" -lt 20 ]; then
			# shellcheck disable=SC2086
			kill -TERM $pids 2>/dev/null
		else
			# shellcheck disable=SC2086
			kill -KILL $pids 2>/dev/null
		fi
		sleep 0.1
	done
	pids=$(instance_pids "$dir")
	[ -z "$pids" ] || die "processes of $dir survive: $pids"
}

cmd_queue_count() {
	[ $# -eq 1 ] || usage
	local dir q
	dir=$(absdir "$1") || die "no such directory: $1"
	q=$dir/queue
	[ -d "$q" ] || die "$q: no queue directory"
	# Queue files become "ready" (mode 0700) only once complete; in incoming/ and
	# maildrop/ files still being written (0600) are not messages yet.
	{
		find "$q/incoming" "$q/maildrop" -type f -perm -0100 2>/dev/null
		find "$q/active" "$q/deferred" "$q/hold" -type f 2>/dev/null
	} | wc -l
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
queue-count) cmd_queue_count "$@" ;;
*) usage ;;
esac
