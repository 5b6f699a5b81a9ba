"""
The bundled bench tools: ringbench (load generator) and ringsink (sink) against each other and
against ringrelay, in short runs on loopback.

Checked: the counts of both sides agree (messages, recipients, bytes); the JSON is one object
on the last line; --per-connection, --recipients, --size lists and ranges, --body, --no-pipelining
and --rate do what they say; ringsink's fault injection shows up as the asked reply codes in
ringbench's replies (bounds loose enough never to flake); --dump writes each message's content
to its own file; ringsink's BDAT (chunks counted and dumped as sent, refused chunks read,
garbage sizes 501 and close, --no-chunking, faults and delays at the chunks); STARTTLS and implicit TLS with AUTH PLAIN against ringrelay, certificate
checks with --ca; errors by kind (refused connection, timeout, protocol, auth, tls); hostile
peers on both sides. Nothing is timed except lower bounds that a delay guarantees.

Binaries: RINGBENCH_BIN / RINGSINK_BIN, else next to RINGRELAY_BIN, else in the build
directory above it (build/asan/ringrelay uses build/ringbench: `make asan` builds no bench
tools).
"""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from certs import make_cert
from conftest import REPO, RINGRELAY_BIN, SLACK, child_env, free_port, wait_for
from peers import relay_sections
from test_auth import sha512_crypt

HOSTNAME = "relay.test.example"
RUN_TIMEOUT = 60.0          # safety net for one ringbench run (never an assertion about speed)


def _tool(env, name):
    path = os.environ.get(env)
    if path:
        return path if os.path.isabs(path) else os.path.join(REPO, path)
    d = os.path.dirname(RINGRELAY_BIN)
    for cand in (os.path.join(d, name), os.path.join(os.path.dirname(d), name),
                 os.path.join(REPO, "build", name)):
        if os.path.exists(cand):
            return cand
    return os.path.join(d, name)


RINGBENCH = _tool("RINGBENCH_BIN", "ringbench")
RINGSINK = _tool("RINGSINK_BIN", "ringsink")
SANITIZER_MARKERS = ("AddressSanitizer", "runtime error", "LeakSanitizer")

pytestmark = pytest.mark.skipif(not (os.path.exists(RINGBENCH) and os.path.exists(RINGSINK)),
                                reason="ringbench/ringsink not built")


class Sink:
    """A ringsink on 127.0.0.1 (port 0: it picks one and says which on its ready line)."""

    def __init__(self, workdir, *args, threads=2, port=0):
        self.workdir = workdir
        self.args = ["--listen", "127.0.0.1:%d" % port, "--threads", str(threads), "--json"] + \
            [str(a) for a in args]
        self.out_path = os.path.join(workdir, "sink.%d.out" % id(self))
        self.err_path = os.path.join(workdir, "sink.%d.err" % id(self))
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([RINGSINK] + self.args, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, env=child_env(leaks=True))
        m = wait_for(lambda: re.search(r"ready listen=127\.0\.0\.1:(\d+)", self.err()),
                     10 * SLACK)
        if not m:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("ringsink not ready: %s" % self.err())
        self.port = int(m.group(1))
        self.result = None

    def err(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def lines(self):
        with open(self.out_path, "rb") as f:
            return [l for l in f.read().decode().split("\n") if l.strip()]

    def snapshot(self):
        """The counts so far (SIGUSR1 makes it print one JSON line)."""
        n = len(self.lines())
        self.proc.send_signal(signal.SIGUSR1)
        assert wait_for(lambda: len(self.lines()) > n, 10 * SLACK), self.err()
        return json.loads(self.lines()[-1])

    def stop(self):
        """SIGTERM: it must exit 0 and print one JSON object (the final counts)."""
        if self.result is not None:
            return self.result
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(20 * SLACK)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("ringsink did not exit after SIGTERM: %s" % self.err())
        err = self.err()
        assert rc == 0, "ringsink exited %s: %s" % (rc, err)
        for marker in SANITIZER_MARKERS:
            assert marker not in err, err
        self.result = json.loads(self.lines()[-1])
        return self.result


def bench(port, *args, timeout=RUN_TIMEOUT, rc=0):
    """One ringbench run; its last line parsed as JSON."""
    cmd = [RINGBENCH, "--server", "127.0.0.1:%d" % port, "--json", "--quiet"] + \
        [str(a) for a in args]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout * SLACK,
                       env=child_env(leaks=True))
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == rc, "ringbench %s exited %s: %s" % (args, p.returncode, err)
    for marker in SANITIZER_MARKERS:
        assert marker not in err, err
    lines = [l for l in p.stdout.decode().split("\n") if l.strip()]
    assert lines, "no output: %s" % err
    res = json.loads(lines[-1])
    for key in ("messages_ok", "messages_failed", "seconds", "msgs_per_s", "latency_ms",
                "replies", "errors", "connections", "bytes"):
        assert key in res, (key, res)
    for q in ("p50", "p90", "p99", "p999", "max"):
        assert q in res["latency_ms"], res
    return res


def code(res, c):
    return res["replies"].get(str(c), 0)


# ---------------------------------------------------------------------------------------------
# ringbench against ringsink

def test_counts_agree(sinks):
    s = sinks()
    r = bench(s.port, "--messages", 600, "--connections", 12, "--recipients", 3,
              "--size", 2000)
    got = s.stop()
    assert r["messages_ok"] == 600 and r["messages_failed"] == 0, r
    assert r["replies"] == {"250": 600}, r
    assert r["errors"] == {}, r
    assert r["bytes"] == 600 * 2000 and r["recipients_ok"] == 1800, r
    assert got["messages"] == 600 and got["recipients"] == 1800, got
    assert got["bytes"] == 600 * 2000, got
    assert got["connections"] == r["connections"] == 12, (got, r)
    assert got["replies"]["354"] == 600, got
    assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"], r


@pytest.mark.parametrize("per_conn,messages,sessions", [(1, 60, 4), (5, 100, 4)])
def test_per_connection(sinks, per_conn, messages, sessions):
    s = sinks()
    r = bench(s.port, "--messages", messages, "--connections", sessions, "--per-connection",
              per_conn)
    got = s.stop()
    assert r["messages_ok"] == messages == got["messages"], (r, got)
    want = messages // per_conn
    # each session's last connection may carry fewer messages
    assert want <= r["connections"] <= want + sessions, r
    assert got["connections"] == r["connections"], (got, r)
    assert got["replies"]["221"] == r["connections"], got   # every connection said QUIT


def test_no_pipelining_and_size_list(sinks, tmp_path):
    dump = str(tmp_path / "dump")
    s = sinks("--dump", dump)
    r = bench(s.port, "--messages", 90, "--connections", 3, "--no-pipelining",
              "--size", "300,1K,10000", "--recipients", 2)
    got = s.stop()
    assert r["messages_ok"] == 90 == got["messages"] == got["dumped"], (r, got)
    assert got["recipients"] == 180 and got["bytes"] == r["bytes"], (r, got)
    sizes = {os.path.getsize(os.path.join(dump, f)) for f in os.listdir(dump)}
    assert sizes <= {300, 1024, 10000} and len(sizes) >= 2, sizes


def test_size_range(sinks, tmp_path):
    dump = str(tmp_path / "dump")
    s = sinks("--dump", dump)
    r = bench(s.port, "--messages", 50, "--connections", 5, "--size", "200-100K")
    got = s.stop()
    assert r["messages_ok"] == 50 and got["bytes"] == r["bytes"], (r, got)
    files = os.listdir(dump)
    assert len(files) == 50
    for f in files:
        with open(os.path.join(dump, f), "rb") as fh:
            data = fh.read()
        assert 200 <= len(data) <= 100 * 1024, len(data)
        assert data.startswith(b"From: <bench@ringbench.example>\r\n"), data[:100]
        assert data.endswith(b"\r\n") and b"\n." not in data and b"\r\r" not in data


def test_dump_body_file(sinks, tmp_path):
    body = tmp_path / "body.txt"
    body.write_bytes(b"Subject: dots\n\n.leading dot\nplain\r\n..two\n.\nno final newline")
    want = b"Subject: dots\r\n\r\n.leading dot\r\nplain\r\n..two\r\n.\r\nno final newline\r\n"
    dump = str(tmp_path / "dump")
    s = sinks("--dump", dump)
    r = bench(s.port, "--messages", 12, "--connections", 3, "--body", str(body),
              "--from", "a@example.com", "--to", "b@example.net")
    got = s.stop()
    assert r["messages_ok"] == 12 and got["dumped"] == 12, (r, got)
    assert r["bytes"] == got["bytes"] == 12 * len(want), (r, got)
    files = sorted(os.listdir(dump))
    assert len(files) == 12 and all(re.match(r"^\d+-\d+-\d+\.eml$", f) for f in files), files
    for f in files:
        with open(os.path.join(dump, f), "rb") as fh:
            assert fh.read() == want


def test_fail_rcpt_550_all(sinks):
    s = sinks("--fail", "rcpt:550:1.0")
    r = bench(s.port, "--messages", 200, "--connections", 4)
    got = s.stop()
    assert r["messages_ok"] == 0 and r["messages_failed"] == 200, r
    assert code(r, 550) == 200, r                   # every RCPT
    assert code(r, 554) == 200, r                   # DATA without recipients
    assert code(r, 250) == 0 and r["errors"] == {}, r
    assert got["messages"] == 0 and got["faults"] == 200, got


def test_fail_dot_451_half(sinks):
    n = 400
    s = sinks("--fail", "dot:451:0.5")
    r = bench(s.port, "--messages", n, "--connections", 8, "--recipients", 2)
    got = s.stop()
    assert code(r, 250) + code(r, 451) == n, r
    assert 100 <= code(r, 451) <= 300, r            # 10 standard deviations either side
    assert r["messages_ok"] == code(r, 250) == got["messages"], (r, got)
    assert r["messages_failed"] == code(r, 451) == got["replies"]["451"], (r, got)
    assert got["recipients"] == 2 * got["messages"], got


def test_fail_percentage_drop_and_421(sinks):
    n = 300
    s = sinks("--fail", "mail:drop:20%", "--fail", "dot:421:0.1")
    r = bench(s.port, "--messages", n, "--connections", 6)
    got = s.stop()
    assert r["messages_ok"] + r["messages_failed"] == n, r
    assert r["messages_ok"] == got["messages"], (r, got)
    # a drop reads as the server's close, or as a reset when pipelined bytes were unread
    drops = r["errors"].get("closed", 0) + r["errors"].get("reset", 0)
    assert 10 <= drops <= 120, r                    # 20% of the MAIL commands
    assert set(r["errors"]) <= {"closed", "reset"}, r
    assert code(r, 421) == got["replies"].get("421", 0), (r, got)
    assert r["messages_failed"] == drops + code(r, 421), r
    # every drop and 421 ended a connection of its own
    assert r["connections"] >= drops + code(r, 421), r


def test_delay_is_in_latency(sinks):
    s = sinks("--delay", "dot:60")
    r = bench(s.port, "--messages", 20, "--connections", 2)
    s.stop()
    assert r["messages_ok"] == 20, r
    assert r["latency_ms"]["p50"] >= 60, r          # a lower bound: the delay cannot be skipped


def test_greeting_refused(sinks):
    s = sinks("--fail", "greeting:554:1.0")
    r = bench(s.port, "--messages", 3, "--connections", 1)
    s.stop()
    assert r["messages_failed"] == 3 and code(r, 554) == 3, r


def test_rate_mode(sinks):
    s = sinks()
    r = bench(s.port, "--rate", 200, "--duration", "1s", "--connections", 4, "--threads", 2)
    got = s.stop()
    assert r["messages_ok"] + r["messages_failed"] + r["messages_unsent"] == 200, r
    assert r["messages_ok"] == got["messages"] > 0, (r, got)
    assert r["rate"] == 200, r
    assert r["latency_ms"]["max"] >= r["latency_ms"]["p50"] > 0, r
    s2 = sinks()
    r = bench(s2.port, "--rate", 500, "--messages", 50, "--connections", 3, "--per-connection",
              1)
    got = s2.stop()
    assert r["messages_ok"] == 50 == got["messages"], (r, got)
    # sessions connect ahead of need: at most one spare connection each
    assert 50 <= r["connections"] == got["connections"] <= 53, (r, got)


def test_rate_mode_waits_count_in_latency(sinks):
    """Open loop: a server slower than the rate makes messages wait, and the wait is part of
    their latency (measured from the due time): with one session, 100/s offered and 50 ms per
    message, the tenth message is due at 90 ms and answered at 500 ms at the earliest."""
    s = sinks("--delay", "dot:50")
    r = bench(s.port, "--rate", 100, "--messages", 10, "--connections", 1)
    s.stop()
    assert r["messages_ok"] == 10, r
    assert r["latency_ms"]["max"] >= 400, r


# ---------------------------------------------------------------------------------------------
# errors by kind, hostile peers

def test_connect_refused():
    port = free_port()
    r = bench(port, "--messages", 3, "--connections", 1)
    assert r["messages_failed"] == 3 and r["errors"] == {"connect_refused": 3}, r
    assert r["connections"] == 0, r


class FakeServer:
    """A scripted server: each connection gets `script(conn)` on its own thread."""

    def __init__(self, script):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.script = script
        self.stopping = False
        self.conns = []
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            c.settimeout(10)
            self.conns.append(c)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        try:
            self.script(c)
        except OSError:
            pass

    def close(self):
        self.stopping = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def test_bare_lf_reply_is_protocol_error():
    def script(c):
        c.sendall(b"220 hi\n")
        c.recv(1000)
    srv = FakeServer(script)
    try:
        r = bench(srv.port, "--messages", 2, "--connections", 1, "--timeout", "5s")
    finally:
        srv.close()
    assert r["errors"] == {"protocol": 2} and r["messages_failed"] == 2, r


def test_silent_server_times_out():
    def script(c):
        c.sendall(b"220 hi\r\n")
        while c.recv(1000):
            pass
    srv = FakeServer(script)
    try:
        r = bench(srv.port, "--messages", 2, "--connections", 2, "--timeout", "300ms")
    finally:
        srv.close()
    assert r["errors"] == {"timeout": 2} and r["messages_failed"] == 2, r


def test_starttls_injection_refused():
    """Plaintext behind the 220 to STARTTLS (CVE-2011-0411) fails the start of TLS."""
    def script(c):
        c.sendall(b"220 hi\r\n")
        c.recv(1000)
        c.sendall(b"250-hi\r\n250 STARTTLS\r\n")
        c.recv(1000)
        c.sendall(b"220 go ahead\r\n250 injected\r\n")
        c.recv(1000)
    srv = FakeServer(script)
    try:
        r = bench(srv.port, "--messages", 1, "--connections", 1, "--starttls",
                  "--timeout", "5s")
    finally:
        srv.close()
    assert r["errors"] == {"tls": 1}, r


def test_sink_hostile_client(sinks):
    s = sinks("--threads", 1, "--no-chunking")     # BDAT not offered: 502
    with socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLACK) as c:
        f = c.makefile("rb")
        assert f.readline().startswith(b"220 ")
        c.sendall(b"X" * 5000 + b"\r\n")                # beyond the line limit
        assert f.readline().startswith(b"500 5.5.6"), "long line"
        c.sendall(b"NOOP\n")                            # bare LF: taken
        assert f.readline().startswith(b"250 ")
        c.sendall(b"RCPT TO:<a@b>\r\nDATA\r\nBDAT 10\r\nMAIL FROM:<a@b>\r\nDATA\r\n")
        for want in (b"503", b"503", b"502", b"250", b"554"):
            assert f.readline().startswith(want), want
        c.sendall(b"BOGUS\r\n" * 30)                    # too many errors: 421 and close
        lines = f.read().split(b"\r\n")
        assert any(l.startswith(b"421 ") for l in lines), lines[-3:]
    # a client that never reads while pipelining a flood, and one that vanishes mid-DATA
    flood = socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLACK)
    flood.sendall(b"EHLO x\r\n" + b"NOOP\r\n" * 2000)
    gone = socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLACK)
    gone.sendall(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhalf a message")
    time.sleep(0.2)
    gone.close()
    r = bench(s.port, "--messages", 20, "--connections", 2)     # still serving
    assert r["messages_ok"] == 20, r
    got = s.stop()                                              # exits despite the flood
    flood.close()
    assert got["messages"] == 20, got


# ---------------------------------------------------------------------------------------------
# ringsink's CHUNKING (RFC 3030)

def sink_session(port):
    """A raw connection to a sink, greeted and EHLO'd; returns (socket, reader, EHLO lines)."""
    c = socket.create_connection(("127.0.0.1", port), timeout=10 * SLACK)
    f = c.makefile("rb")
    assert f.readline().startswith(b"220 ")
    c.sendall(b"EHLO client.example\r\n")
    ehlo = []
    while True:
        line = f.readline()
        assert line.startswith(b"250"), line
        ehlo.append(line[4:].strip().upper())
        if line[3:4] == b" ":
            return c, f, ehlo


def test_sink_bdat_chunks_counted_and_dumped(sinks, tmp_path):
    """Chunks of any size (0 too) make one message; the dump is their bytes exactly as sent
    (no unstuffing, no CRLF added); a chunk without MAIL or recipients is read and refused, so
    the stream stays in step; DATA after BDAT is refused."""
    dump = str(tmp_path / "dump")
    s = sinks("--threads", 1, "--dump", dump)
    c, f, ehlo = sink_session(s.port)
    assert b"CHUNKING" in ehlo, ehlo
    parts = [b"Subject: chunks\r\n\r\n", b".leading dot\r\n..two\r\n.\r\n", b"",
             b"bare\nLF and a ", b"last line without CRLF"]
    wire = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\n"
    for i, p in enumerate(parts):
        wire += b"BDAT %d%s\r\n" % (len(p), b" LAST" if i == len(parts) - 1 else b"") + p
    c.sendall(wire)
    assert f.readline().startswith(b"250 2.1.0") and f.readline().startswith(b"250 2.1.5")
    assert f.readline().startswith(b"250 2.1.5")
    for p in parts[:-1]:
        assert f.readline().startswith(b"250 2.0.0 %d octets received" % len(p))
    assert f.readline().startswith(b"250 2.0.0 Ok: queued as ")
    # refused chunks are read all the same: the next command is understood
    c.sendall(b"BDAT 13\r\nRCPT TO:<x>\r\nNOOP\r\n")
    assert f.readline().startswith(b"503 5.5.1 Error: need MAIL")
    assert f.readline().startswith(b"250 ")
    c.sendall(b"MAIL FROM:<a@example.com>\r\nBDAT 6 LAST\r\nDATA\r\nRSET\r\n")
    assert f.readline().startswith(b"250 2.1.0")
    assert f.readline().startswith(b"554 5.5.1 Error: no valid recipients")
    assert f.readline().startswith(b"250 ")                 # the chunk ended at "DATA\r\n"
    c.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 3\r\nabc"
              b"DATA\r\nBDAT 0 LAST\r\n")
    for want in (b"250 2.1.0", b"250 2.1.5", b"250 2.0.0 3 octets", b"503 5.5.1 Error: DATA after",
                 b"250 2.0.0 Ok: queued"):
        assert f.readline().startswith(want), want
    c.sendall(b"QUIT\r\n")
    assert f.readline().startswith(b"221")
    c.close()
    got = s.stop()
    want = b"".join(parts)
    assert got["messages"] == 2 and got["recipients"] == 3, got
    assert got["bytes"] == len(want) + 3, got
    assert got["bdat_chunks"] == len(parts) + 2 + 2, got
    assert "354" not in got["replies"], got
    files = sorted(os.listdir(dump), key=lambda n: int(n.rsplit("-", 1)[1].split(".")[0]))
    assert len(files) == 2, files
    with open(os.path.join(dump, files[0]), "rb") as fh:
        assert fh.read() == want
    with open(os.path.join(dump, files[1]), "rb") as fh:
        assert fh.read() == b"abc"


@pytest.mark.parametrize("arg", [b"", b"x", b"-1", b"10 LATER", b"1 LAST x", b"0x10",
                                 b"12345678901234567890", b"99999999999999999999 LAST"])
def test_sink_bdat_garbage_501_and_close(sinks, arg):
    """A size that is no decimal of at most 19 digits, or anything but LAST behind it: 501,
    and the connection closes (where the chunk would end is unknown)."""
    s = sinks("--threads", 1)
    c, f, _ = sink_session(s.port)
    c.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT " + arg +
              b"\r\nNOOP\r\n")
    assert f.readline().startswith(b"250") and f.readline().startswith(b"250")
    assert f.readline().startswith(b"501 5.5.4 Syntax: BDAT"), arg
    try:
        rest = f.read()
    except ConnectionResetError:
        rest = b""
    assert rest == b"", rest                                # closed, NOOP not answered
    c.close()
    assert s.stop()["replies"].get("501") == 1


def test_sink_no_chunking(sinks):
    s = sinks("--threads", 1, "--no-chunking")
    c, f, ehlo = sink_session(s.port)
    assert b"CHUNKING" not in ehlo and b"PIPELINING" in ehlo, ehlo
    c.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 0 LAST\r\n")
    for want in (b"250", b"250", b"502 5.5.1"):
        assert f.readline().startswith(want), want
    c.close()
    assert s.stop()["bdat_chunks"] == 0


def test_sink_bdat_faults_and_size(sinks):
    """--fail data hits the first chunk (read, then refused; the transaction is over, so the
    next chunk gets 503), --fail dot the reply to BDAT LAST; --max-size is checked at LAST."""
    s = sinks("--threads", 1, "--fail", "data:451:1")
    c, f, _ = sink_session(s.port)
    c.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 4\r\nabcd"
              b"BDAT 2 LAST\r\nefNOOP\r\n")
    for want in (b"250", b"250", b"451 4.0.0 Injected data failure", b"503 5.5.1", b"250 "):
        assert f.readline().startswith(want), want
    c.close()
    got = s.stop()
    assert got["messages"] == 0 and got["faults"] == 1 and got["bdat_chunks"] == 2, got

    s = sinks("--threads", 1, "--fail", "dot:550:1", "--max-size", "1K")
    c, f, _ = sink_session(s.port)
    c.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 5 LAST\r\n"
              b"hello")
    for want in (b"250", b"250", b"550 5.0.0 Injected dot failure"):
        assert f.readline().startswith(want), want
    big = b"x" * 700
    c.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 700\r\n" + big +
              b"BDAT 700 LAST\r\n" + big)
    for want in (b"250", b"250", b"250 2.0.0 700 octets", b"552 5.3.4"):
        assert f.readline().startswith(want), want
    c.close()
    got = s.stop()
    assert got["messages"] == 0 and got["faults"] == 1, got


def test_sink_bdat_delay_dot(sinks):
    """--delay dot holds the reply to BDAT LAST (a lower bound only)."""
    s = sinks("--threads", 1, "--delay", "dot:300")
    c, f, _ = sink_session(s.port)
    t0 = time.monotonic()
    c.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 2 LAST\r\nhi")
    for want in (b"250", b"250", b"250 2.0.0 Ok: queued"):
        assert f.readline().startswith(want), want
    assert time.monotonic() - t0 >= 0.3
    c.close()
    assert s.stop()["messages"] == 1


def test_sink_max_connections(sinks):
    s = sinks("--max-connections", 2, threads=1)
    a = socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLACK)
    b = socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLACK)
    assert a.recv(100).startswith(b"220") and b.recv(100).startswith(b"220")
    c = socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLACK)
    assert c.recv(100) == b""                           # closed at once
    for x in (a, b, c):
        x.close()
    assert s.stop()["refused_connections"] == 1


def test_usage_errors():
    for args in (["--help"], []):
        p = subprocess.run([RINGBENCH] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10)
        assert p.returncode == (0 if args else 2), p
    for args in (["--server", "127.0.0.1:1", "--size", "10"],
                 ["--server", "127.0.0.1:1", "--rate", "0"],
                 ["--server", "127.0.0.1:1", "--bogus"],
                 ["--server", "nohostport"]):
        p = subprocess.run([RINGBENCH] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10)
        assert p.returncode == 2 and p.stderr.startswith(b"ringbench: "), (args, p)
    for args in (["--help"], ["--listen", "127.0.0.1:0", "--fail", "rcpt:250:1"],
                 ["--listen", "127.0.0.1:0", "--fail", "quit:550:1"],
                 ["--listen", "127.0.0.1:0", "--fail", "dot:550:2"], []):
        p = subprocess.run([RINGSINK] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10)
        assert p.returncode == (0 if args == ["--help"] else 2), (args, p)


# ---------------------------------------------------------------------------------------------
# against ringrelay

def test_relay_to_sink(daemons, sinks):
    s = sinks()
    d = daemons(relay=relay_sections(s.port))
    r = bench(d.port, "--messages", 200, "--connections", 8, "--recipients", 2,
              "--per-connection", 10, "--size", "1K-8K")
    assert r["messages_ok"] == 200 and r["replies"] == {"250": 200}, r
    assert wait_for(lambda: s.snapshot()["recipients"] >= 400, 60 * SLACK, interval=0.2), \
        s.snapshot()
    got = s.stop()
    assert got["recipients"] == 400, got
    assert got["messages"] <= 200, got      # the relay may group recipients, never duplicate
    # the sink offers CHUNKING: the relay sent every message as one BDAT LAST chunk
    assert got["bdat_chunks"] == got["messages"] and "354" not in got["replies"], got


@pytest.fixture
def tls_relay(daemons, tmp_path, sinks):
    d = str(tmp_path)
    cert, key = make_cert(d, HOSTNAME)
    users = os.path.join(d, "users")
    with open(users, "w") as f:
        f.write("carol@example.com:{SHA512-CRYPT}%s\n" % sha512_crypt("c0rrect horse"))
    sink = sinks()
    r = daemons(start=False, tls={"cert": cert, "key": key},
                auth={"passwd_file": users, "plaintext": "no"},
                listener_main={"tls": "starttls", "auth": "required"},
                listener_smtps={"listen": "127.0.0.1:%d" % free_port(), "tls": "implicit",
                                "auth": "required"},
                relay=relay_sections(sink.port))
    r.start()
    r.smtps_port = int(r.sections["listener.smtps"]["listen"].rsplit(":", 1)[1])
    r.cert = cert
    r.sink = sink
    return r


AUTH = ("--auth", "carol@example.com:c0rrect horse", "--from", "carol@example.com",
        "--to", "dave@example.net")


def test_starttls_and_implicit_tls_with_auth(tls_relay):
    r = bench(tls_relay.port, "--starttls", *AUTH, "--messages", 40, "--connections", 4,
              "--size", "1K-40K")
    assert r["messages_ok"] == 40 and r["errors"] == {}, r
    r = bench(tls_relay.smtps_port, "--tls", *AUTH, "--messages", 30, "--connections", 3,
              "--per-connection", 2)
    assert r["messages_ok"] == 30 and 15 <= r["connections"] <= 18, r
    r = bench(tls_relay.smtps_port, "--tls", *AUTH, "--messages", 10, "--connections", 2,
              "--no-pipelining", "--ca", tls_relay.cert, "--tls-name", HOSTNAME)
    assert r["messages_ok"] == 10, r
    assert wait_for(lambda: tls_relay.sink.snapshot()["recipients"] >= 80, 60 * SLACK,
                    interval=0.2)
    assert tls_relay.metric("ringrelay_auth_total", {"result": "success"}) >= 4 + 15 + 2
    assert tls_relay.metric("ringrelay_tls_handshakes_total", {"result": "success"}) >= 21


def test_tls_failures(tls_relay):
    r = bench(tls_relay.smtps_port, "--tls", *AUTH, "--messages", 2, "--connections", 1,
              "--ca", tls_relay.cert, "--tls-name", "wrong.example")
    assert r["errors"] == {"tls": 2} and r["messages_failed"] == 2, r
    bad = ("--auth", "carol@example.com:wrong", "--from", "carol@example.com")
    r = bench(tls_relay.port, "--starttls", *bad, "--messages", 2, "--connections", 1)
    assert r["errors"] == {"auth": 2} and code(r, 535) == 2, r
    r = bench(tls_relay.port, "--messages", 2, "--connections", 1)    # no TLS, no AUTH
    assert r["messages_failed"] == 2 and code(r, 530) == 2, r
