#!/usr/bin/python3
"""
idlehold.py - open N SMTP sessions to one server, bring each to "greeted and EHLO answered",
then hold them all idle: the memory a server spends per idle session (bench/compare.sh,
scenario d).

USAGE
  idlehold.py --server HOST:PORT --sessions N [--in-flight K] [--timeout S] [--hold S]
              [--helo NAME] [--any-destination]

CONTRACT
  - Opens N TCP connections (at most K, default 200, not yet held at any moment, so the
    server's listen backlog never overflows), reads each greeting (must be 220, one or more
    lines), sends "EHLO NAME", reads the reply to its last line (must be 250). A session that
    gets there is "held"; anything else (refused, reset, closed, another code, a line over
    1000 bytes, no answer within the time left) counts as "failed" and is closed. Nothing is
    retried: held + failed = N once the set-up phase ends.
  - Set-up is bounded by --timeout (default 120 s); then one JSON line goes to stdout
    (flushed): {"phase":"held","held":H,"failed":F,"errors":{kind:count},"seconds":T}.
  - Then it holds, sending nothing, until SIGTERM or SIGINT, or at most --hold seconds
    (default 600). A held session the server closes meanwhile counts as "dropped". At the
    end every socket is closed (QUIT is not sent: the session ends as a client that goes
    away) and a last JSON line is printed: {"phase":"done","held":H,"dropped":D,...}.
  - Raises its own RLIMIT_NOFILE soft limit to N + 64 (up to the hard limit; it stops with
    exit 1 if the hard limit is lower). Exit 0 otherwise, 2 on a usage error.

SECURITY
  Traffic only to a loopback address unless --any-destination. It reads at most 1000 bytes
  per reply line and looks only at the codes.
"""
import argparse
import errno
import ipaddress
import json
import resource
import selectors
import signal
import socket
import sys
import time

LINE_BYTES_MAX = 1000
RECV_BYTES = 4096

# Session states.
CONNECTING, GREETING, EHLO, HELD = range(4)


def parse_args():
    ap = argparse.ArgumentParser(description="hold N idle SMTP sessions (after EHLO)")
    ap.add_argument("--server", required=True, help="HOST:PORT (IPv4)")
    ap.add_argument("--sessions", type=int, required=True)
    ap.add_argument("--in-flight", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=120.0, help="set-up bound, seconds")
    ap.add_argument("--hold", type=float, default=600.0, help="hold bound, seconds")
    ap.add_argument("--helo", default="idlehold.invalid")
    ap.add_argument("--any-destination", action="store_true")
    a = ap.parse_args()
    host, _, port = a.server.rpartition(":")
    try:
        a.addr = (str(ipaddress.IPv4Address(host)), int(port))
    except ValueError:
        ap.error("--server must be IPV4:PORT")
    if not a.any_destination and not ipaddress.IPv4Address(host).is_loopback:
        ap.error("the server must be a loopback address (or --any-destination)")
    if not 1 <= a.sessions <= 1000000 or not 1 <= a.in_flight <= 10000:
        ap.error("--sessions 1..1000000, --in-flight 1..10000")
    if not 0 < a.timeout <= 3600 or not 0 <= a.hold <= 86400:
        ap.error("--timeout 0..3600, --hold 0..86400")
    return a


class Session:
    __slots__ = ("sock", "state", "buf")

    def __init__(self, sock):
        self.sock, self.state, self.buf = sock, CONNECTING, b""


def final_reply(s):
    """The code of the reply's last line once it is complete, None while incomplete;
    raises ValueError on an overlong line."""
    while True:
        nl = s.buf.find(b"\n")
        if nl < 0:
            if len(s.buf) > LINE_BYTES_MAX:
                raise ValueError("long_line")
            return None
        line, s.buf = s.buf[:nl + 1], s.buf[nl + 1:]
        if len(line) > LINE_BYTES_MAX:
            raise ValueError("long_line")
        if line[3:4] != b"-":
            return line[:3]


def main():
    a = parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.sessions + 64
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            print("idlehold: RLIMIT_NOFILE hard limit %d < %d" % (hard, need), file=sys.stderr)
            return 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    sel = selectors.DefaultSelector()
    errors = {}
    held = failed = started = 0
    pending = 0   # started, neither held nor failed
    t0 = time.monotonic()
    deadline = t0 + a.timeout

    def fail(s, kind):
        nonlocal failed, pending
        errors[kind] = errors.get(kind, 0) + 1
        failed += 1
        pending -= 1
        sel.unregister(s.sock)
        s.sock.close()

    held_socks = []
    while (held + failed < a.sessions) and not stop:
        now = time.monotonic()
        if now >= deadline:
            break
        while pending < a.in_flight and started < a.sessions:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            started += 1
            pending += 1
            rc = sock.connect_ex(a.addr)
            if rc not in (0, errno.EINPROGRESS):
                errors[errno.errorcode.get(rc, str(rc))] = \
                    errors.get(errno.errorcode.get(rc, str(rc)), 0) + 1
                failed += 1
                pending -= 1
                sock.close()
                continue
            s = Session(sock)
            sel.register(sock, selectors.EVENT_WRITE, s)
        for key, _ in sel.select(timeout=min(0.5, max(0.0, deadline - now))):
            s = key.data
            if s.state == CONNECTING:
                err = s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(s, errno.errorcode.get(err, str(err)))
                    continue
                s.state = GREETING
                sel.modify(s.sock, selectors.EVENT_READ, s)
                continue
            try:
                data = s.sock.recv(RECV_BYTES)
            except OSError as e:
                fail(s, errno.errorcode.get(e.errno, "recv"))
                continue
            if not data:
                fail(s, "closed")
                continue
            s.buf += data
            try:
                code = final_reply(s)
            except ValueError as e:
                fail(s, str(e))
                continue
            if code is None:
                continue
            if s.state == GREETING:
                if code != b"220":
                    fail(s, "greeting_" + code.decode("ascii", "replace"))
                    continue
                try:
                    s.sock.send(b"EHLO " + a.helo.encode() + b"\r\n")  # a few bytes: fits
                except OSError as e:
                    fail(s, errno.errorcode.get(e.errno, "send"))
                    continue
                s.state = EHLO
            elif s.state == EHLO:
                if code != b"250":
                    fail(s, "ehlo_" + code.decode("ascii", "replace"))
                    continue
                s.state = HELD
                held += 1
                pending -= 1
                held_socks.append(s)   # stays registered: a close by the server is seen
            else:   # HELD: the server spoke unasked (a 421 before closing, say)
                pass
    # Sessions still under way when the set-up bound passed.
    for key in list(sel.get_map().values()):
        s = key.data
        if s.state != HELD:
            fail(s, "timeout" if not stop else "aborted")
    setup_s = time.monotonic() - t0
    print(json.dumps({"phase": "held", "held": held, "failed": failed, "errors": errors,
                      "seconds": round(setup_s, 3)}), flush=True)

    dropped = 0
    hold_end = time.monotonic() + a.hold
    while not stop and held - dropped > 0:
        left = hold_end - time.monotonic()
        if left <= 0:
            break
        for key, _ in sel.select(timeout=min(0.5, left)):
            s = key.data
            try:
                data = s.sock.recv(RECV_BYTES)
            except OSError:
                data = b""
            if not data:
                dropped += 1
                sel.unregister(s.sock)
                s.sock.close()
                s.state = None
    for s in held_socks:
        if s.state == HELD:
            sel.unregister(s.sock)
            s.sock.close()
    print(json.dumps({"phase": "done", "held": held, "dropped": dropped,
                      "held_seconds": round(time.monotonic() - t0 - setup_s, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
