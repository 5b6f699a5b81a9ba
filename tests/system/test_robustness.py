"""Timeouts, error limits, slow and vanishing clients, a full spool, SIGTERM, SIGHUP, metrics."""
import os
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import (IS_ASAN, SLACK, Client, ConnectionClosed, QUEUED_RE, make_message, parse_replies,
                      queued_id, wait_for)


def test_idle_timeout_after_ehlo(daemons):
    d = daemons(limits={"idle_timeout": "2s"})
    with d.client() as c:
        c.ehlo()
        r = c.reply(timeout=15)            # nothing sent: the server speaks first
        assert r.startswith("421 4.4.2"), r
        assert c.is_closed(5)
    assert d.metric("ringrelay_protocol_errors_total", {"reason": "timeout"}) == 1


def test_idle_timeout_before_helo_and_in_transaction(daemons):
    d = daemons(limits={"idle_timeout": "2s"})
    c1 = d.client()
    c2 = d.client()
    c2.ehlo()
    assert c2.cmd("MAIL FROM:<a@example.com>").code == 250
    c2.send(b"RCPT TO:<b@exa")           # half a command
    for c in (c1, c2):
        r = c.reply(timeout=15)
        assert r.startswith("421 4.4.2"), r
        assert c.is_closed(5)
        c.close()
    assert d.export() == []


def test_activity_keeps_session_alive(daemons):
    d = daemons(limits={"idle_timeout": "2s"})
    with d.client() as c:
        c.ehlo()
        for _ in range(4):                 # 4 x 1 s < 2 s between commands
            time.sleep(1)
            assert c.cmd("NOOP").code == 250
        queued_id(c.send_message(make_message("alive")))


def test_max_errors(daemons):
    d = daemons(limits={"max_errors": 3})
    with d.client() as c:
        c.ehlo()
        assert c.cmd("FOO").startswith("500 5.5.1")
        assert c.cmd("BAR").startswith("500 5.5.1")
        c.send(b"BAZ\r\n")
        rs = parse_replies(c.read_until_closed(10))
    assert [r.code for r in rs] == [500, 421], rs
    assert rs[1].startswith("421 4.7.0")
    assert d.metric("ringrelay_protocol_errors_total", {"reason": "too_many_errors"}) == 1


def test_max_errors_mixed_faults(daemons):
    d = daemons(limits={"max_errors": 3})
    with d.client() as c:
        c.ehlo()
        assert c.cmd("RCPT TO:<b@example.net>").startswith("503")     # sequence
        assert c.cmd("NOOP " + "x" * 600).startswith("500 5.5.2")      # too long
        c.send(b"NOOP\n")                                              # bare LF
        rs = parse_replies(c.read_until_closed(10))
    assert [r.code for r in rs] == [550, 421], rs


def test_good_commands_do_not_count_as_errors(daemons):
    d = daemons(limits={"max_errors": 3})
    with d.client() as c:
        c.ehlo()
        for _ in range(2):
            assert c.cmd("FOO").code == 500
        for _ in range(10):
            assert c.cmd("NOOP").code == 250
        queued_id(c.send_message(make_message()))
        assert c.cmd("VRFY x").code == 252


def test_slow_data_is_cut_off(daemons):
    d = daemons(limits={"idle_timeout": "2s", "min_data_rate": 1000})
    with d.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.com>").code == 250
        assert c.cmd("RCPT TO:<b@example.net>").code == 250
        assert c.cmd("DATA").code == 354
        got = None
        deadline = time.monotonic() + 12 * SLACK
        for i in range(int(12 * SLACK)):         # one byte a second, at most ~12 s
            if time.monotonic() > deadline:
                break
            try:
                c.send(b"x")
            except OSError:
                pass
            try:
                got = c.reply(timeout=1.0 / SLACK)
                break
            except socket.timeout:
                continue
            except ConnectionClosed:
                break
        assert got is not None, "no reply to a 1 byte/s DATA within %d s" % (12 * SLACK)
        assert got.startswith("421 4.4.2"), got
        assert c.is_closed(5)
    assert d.export() == []
    assert d.metric("ringrelay_protocol_errors_total", {"reason": "too_slow"}) == 1


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_disconnect_mid_data_leaves_nothing(daemon, how):
    c = daemon.client()
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@example.com>").code == 250
    assert c.cmd("RCPT TO:<b@example.net>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(b"Subject: half\r\n\r\n" + b"partial line\r\n" * 2000)
    if how == "rst":
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    assert wait_for(lambda: daemon.metric("ringrelay_connections_active") == 0, 5 * SLACK), \
        "ringrelay_connections_active = %r" % daemon.metric("ringrelay_connections_active")
    assert daemon.export() == []
    # still serving
    with daemon.client() as c2:
        c2.ehlo()
        qid = queued_id(c2.send_message(make_message("after disconnect")))
    assert [e["qid"] for e, _ in daemon.export()] == [qid]
    # the lost message is counted, whether the peer closed (FIN) or reset (RST)
    assert daemon.metric("ringrelay_messages_rejected_total", {"reason": "aborted"}) == 1, \
        "messages_rejected_total{reason=aborted} after a %s mid-DATA" % how.upper()


@pytest.mark.parametrize("when", ["after_greeting", "after_ehlo", "in_transaction"])
def test_disconnect_without_quit_then_sigterm(daemon, when):
    """A client that just goes away must not disturb the daemon: it keeps serving and
    SIGTERM still ends it with exit code 0 (checked by the fixture)."""
    c = daemon.client()
    if when != "after_greeting":
        c.ehlo()
    if when == "in_transaction":
        c.cmd("MAIL FROM:<a@example.com>")
        c.cmd("RCPT TO:<b@example.net>")
    c.close()
    assert wait_for(lambda: daemon.metric("ringrelay_connections_active") == 0, 5 * SLACK), \
        "ringrelay_connections_active = %r" % daemon.metric("ringrelay_connections_active")
    with daemon.client() as c2:
        c2.ehlo()
        queued_id(c2.send_message(make_message()))
    assert daemon.stop() == 0
    assert "AddressSanitizer" not in daemon.log


def test_many_clients_vanish(daemon):
    for i in range(50):
        c = daemon.client()
        if i % 2:
            c.ehlo()
        c.close()
    assert wait_for(lambda: daemon.metric("ringrelay_connections_active") == 0, 5 * SLACK), \
        "ringrelay_connections_active = %r" % daemon.metric("ringrelay_connections_active")
    assert daemon.metric("ringrelay_connections_total", {"listener": "main"}) == 50
    with daemon.client() as c:
        c.ehlo()
        queued_id(c.send_message(make_message()))


# ---- spool full -------------------------------------------------------------------------

@pytest.fixture
def tmpfs_spool(daemons, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "tmpfs-spool"
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(path)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    if r.returncode != 0:
        pytest.skip("cannot mount tmpfs: %s" % r.stdout.decode(errors="replace"))
    yield str(path)
    problems = daemons.stop_all()          # the daemon must be gone before the unmount
    subprocess.run(["umount", str(path)], timeout=30)
    assert not problems, "\n\n".join(problems)


@pytest.mark.parametrize("declare_size", [False, True], ids=["no_size", "size_param"])
def test_spool_full(daemons, tmpfs_spool, declare_size):
    d = daemons(server={"spool_dir": tmpfs_spool, "spool_min_free": 0, "segment_size": "1M"},
                limits={"max_message_size": "300K"})
    acked = {}
    full_seen = []
    other = []
    body_line = b"0123456789" * 7 + b"\r\n"
    with d.client() as c:
        c.ehlo()
        for i in range(40):
            content = b"Subject: fill %d\r\n\r\n" % i + body_line * (200 * 1024 // len(body_line))
            size = " SIZE=%d" % len(content) if declare_size else ""
            r = c.cmd("MAIL FROM:<a@example.com>%s" % size)
            if r.startswith("452 4.3.1"):
                full_seen.append(("MAIL", i))
                break
            assert r.code == 250, r
            assert c.cmd("RCPT TO:<b@example.net>").code == 250
            r = c.cmd("DATA")
            if r.code != 354:
                other.append((i, r))
                c.cmd("RSET")
                continue
            c.send(content + b".\r\n")
            r = c.reply(timeout=30)
            m = QUEUED_RE.match(r.last.encode())
            if m:
                acked[m.group(1).decode()] = content
            elif r.startswith("452 4.3.1"):
                full_seen.append(("DATA", i))
                break
            else:
                other.append((i, r))
        # once full, still full: and the session is still usable
        r = c.cmd("NOOP")
        assert r.code == 250
    assert full_seen, "no 452 4.3.1 after 40 x 200 KiB on a 3 MiB spool; others: %r" % other
    assert not other, "unexpected replies: %r" % other
    got = d.export_by_qid()
    assert set(got) == set(acked), "exported %r, acknowledged %r" % (sorted(got), sorted(acked))
    for qid, content in acked.items():
        assert got[qid][1] == content
    assert d.metric("ringrelay_messages_rejected_total", {"reason": "spool_full"}) >= 1


# ---- signals ----------------------------------------------------------------------------

def open_data_session(d):
    busy = d.client()
    busy.ehlo()
    assert busy.cmd("MAIL FROM:<a@example.com>").code == 250
    assert busy.cmd("RCPT TO:<b@example.net>").code == 250
    assert busy.cmd("DATA").code == 354
    return busy


def test_sigterm_during_data(daemon):
    busy = open_data_session(daemon)
    first = b"Subject: sigterm\r\n\r\nfirst half\r\n"
    busy.send(first)
    idle = daemon.client()
    idle.ehlo()
    daemon.signal(signal.SIGTERM)
    # the idle session is told at once
    r = idle.reply(timeout=10)
    assert r.startswith("421 4.3.2"), r
    idle.close()
    # the busy one finishes its message, gets its 250, then the 421
    second = b"second half\r\n"
    busy.send(second + b".\r\n")
    rs = parse_replies(busy.read_until_closed(15))
    assert [r.code for r in rs] == [250, 421], rs
    qid = queued_id(rs[0])
    assert rs[1].startswith("421 4.3.2")
    busy.close()
    assert daemon.stop() == 0
    # nothing acknowledged is lost
    (env, eml), = daemon.export()
    assert env["qid"] == qid and eml == first + second
    # no new connections after SIGTERM
    with pytest.raises(OSError):
        Client(daemon.port, timeout=2)


def test_sigterm_closes_idle_sessions_while_one_is_busy(daemon):
    """Idle sessions get 421 4.3.2 and are disconnected at once, even while another session
    (on either worker) still finishes its DATA."""
    busy = open_data_session(daemon)
    busy.send(b"Subject: busy\r\n\r\n")
    idle = [daemon.client() for _ in range(6)]
    for c in idle:
        c.ehlo()
    daemon.signal(signal.SIGTERM)
    not_closed = []
    try:
        for i, c in enumerate(idle):
            r = c.reply(timeout=10)
            assert r.startswith("421 4.3.2"), r
        for i, c in enumerate(idle):
            if not c.is_closed(3):
                not_closed.append(i)
    finally:
        busy.send(b"done\r\n.\r\n")
        rs = parse_replies(busy.read_until_closed(15))
        for c in idle:
            c.close()
        busy.close()
    assert [r.code for r in rs] == [250, 421], rs
    assert not not_closed, ("idle sessions %s got 421 4.3.2 but stayed connected while the "
                            "busy session was in DATA" % not_closed)
    assert daemon.stop() == 0


def test_sigterm_idle_exits_zero_quickly(daemon):
    clients = [daemon.client() for _ in range(5)]
    for c in clients[:3]:
        c.ehlo()
    daemon.signal(signal.SIGTERM)
    for c in clients:
        r = c.reply(timeout=10)
        assert r.startswith("421 4.3.2"), r
        c.close()
    assert daemon.stop() == 0
    assert "event=stopped" in daemon.log


def test_sighup_reload_keeps_sessions(daemons):
    d = daemons(limits={"max_recipients": 2})
    keep = d.client()
    keep.ehlo()
    assert keep.cmd("MAIL FROM:<a@example.com>").code == 250
    assert keep.cmd("RCPT TO:<r1@example.net>").code == 250
    d.set("limits", "max_recipients", 4)
    d.write_config()
    d.signal(signal.SIGHUP)
    assert wait_for(lambda: "event=reloaded" in d.log, 10 * SLACK), d.log
    # the open session and its transaction survive the reload
    assert keep.cmd("NOOP").code == 250
    assert keep.cmd("DATA").code == 354
    keep.send(b"Subject: across reload\r\n\r\nx\r\n.\r\n")
    queued_id(keep.reply())
    # a new transaction on the same session has the new limit
    assert keep.cmd("MAIL FROM:<a@example.com>").code == 250
    codes = [keep.cmd("RCPT TO:<n%d@example.net>" % i).code for i in range(5)]
    assert codes == [250, 250, 250, 250, 452], codes
    assert keep.cmd("DATA").code == 354
    keep.send(b"Subject: four\r\n\r\nx\r\n.\r\n")
    queued_id(keep.reply())
    keep.polite_close()
    # and so does a new session
    with d.client() as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.com>")
        codes = [c.cmd("RCPT TO:<m%d@example.net>" % i).code for i in range(5)]
        assert codes == [250, 250, 250, 250, 452], codes
    rc = sorted(len(e["rcpt"]) for e, _ in d.export())
    assert rc == [1, 4]


def test_sighup_with_broken_config_keeps_running(daemons):
    d = daemons()
    with open(d.config, "a") as f:
        f.write("\n[limits]\nno_such_key = 1\n")
    d.signal(signal.SIGHUP)
    assert wait_for(lambda: "reload_failed" in d.log, 10 * SLACK), d.log
    with d.client() as c:
        c.ehlo()
        queued_id(c.send_message(make_message()))


@pytest.mark.skipif(not IS_ASAN, reason="needs a sanitizer build (RINGRELAY_BIN=build/asan/...)")
def test_no_leaks_at_exit(daemons):
    """LeakSanitizer at exit, after a little of everything: sessions, messages, a refusal,
    a metrics scrape, a reload."""
    d = daemons(start=False)
    d.leaks = True
    d.start()
    with d.client() as c:
        c.ehlo()
        for i in range(3):
            queued_id(c.send_message(make_message("leak %d" % i)))
        c.cmd("FOO")
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 3 LAST\r\nabc")
        assert [r.code for r in c.replies(3)] == [250, 250, 250]
    d.metrics_text()
    d.signal(signal.SIGHUP)
    assert wait_for(lambda: "event=reloaded" in d.log, 10 * SLACK)
    rc = d.stop()
    assert "LeakSanitizer" not in d.log, d.log[-6000:]
    assert rc == 0


# ---- metrics ----------------------------------------------------------------------------

METRIC_NAMES = [
    ("ringrelay_connections_total", "counter"),
    ("ringrelay_messages_accepted_total", "counter"),
    ("ringrelay_messages_rejected_total", "counter"),
    ("ringrelay_recipients_rejected_total", "counter"),
    ("ringrelay_protocol_errors_total", "counter"),
    ("ringrelay_spool_fsyncs_total", "counter"),
    ("ringrelay_accept_latency_seconds", "histogram"),
    ("ringrelay_build_info", "gauge"),
    ("ringrelay_connections_active", "gauge"),
    ("ringrelay_queue_messages", "gauge"),
]

def _check_names(text, names):
    for name, typ in names:
        assert "# TYPE %s %s\n" % (name, typ) in text, name
        assert "# HELP %s " % name in text, name


def test_metrics_endpoint(daemon):
    with daemon.client() as c:
        c.ehlo()
        queued_id(c.send_message(make_message()))
        c.cmd("FOO")
    status, headers, text = daemon.http_get("/metrics")
    assert status == 200
    ctype = {k.lower(): v for k, v in headers.items()}["content-type"]
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype
    _check_names(text, METRIC_NAMES)
    assert text.endswith("\n")
    m = daemon.metrics()      # every sample line parses
    assert m[("ringrelay_messages_accepted_total", frozenset())] == 1
    assert m[("ringrelay_connections_total", frozenset({("listener", "main")}))] == 1
    assert m[("ringrelay_protocol_errors_total",
              frozenset({("reason", "unknown_command")}))] == 1
    assert m[("ringrelay_accept_latency_seconds_count", frozenset())] == 1
    assert ("ringrelay_accept_latency_seconds_bucket", frozenset({("le", "+Inf")})) in m
    assert ("ringrelay_accept_latency_seconds_sum", frozenset()) in m
    assert any(k[0] == "ringrelay_build_info" and dict(k[1]).get("version") for k in m)
    # buckets are cumulative
    buckets = sorted((float(dict(k[1])["le"]), v) for k, v in m.items()
                     if k[0] == "ringrelay_accept_latency_seconds_bucket")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1] == (float("inf"), 1)



@pytest.mark.parametrize("path,expect", [("/nothing", 404), ("/metricsx", 404),
                                         ("/metrics/../etc", 404), ("/", 200)])
def test_metrics_other_paths(daemon, path, expect):
    status, _, _ = daemon.http_get(path)
    assert status == expect


def test_metrics_bad_requests(daemon):
    for req in (b"POST /metrics HTTP/1.0\r\n\r\n", b"garbage\r\n\r\n"):
        s = socket.create_connection(("127.0.0.1", daemon.metrics_port), timeout=10 * SLACK)
        s.sendall(req)
        data = b""
        for _ in range(100):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        assert data.startswith(b"HTTP/1.0 400"), data[:100]
    # a client that sends nothing does not block the others
    idle = socket.create_connection(("127.0.0.1", daemon.metrics_port), timeout=10)
    try:
        assert daemon.metric("ringrelay_messages_accepted_total") == 0
    finally:
        idle.close()


# ---- more life-cycle corners ------------------------------------------------------------

def test_vanish_during_greeting_delay(daemons):
    d = daemons(limits={"greeting_delay": "1s"})
    for _ in range(10):
        c = Client(d.port, greet=False)
        c.close()
    assert wait_for(lambda: d.metric("ringrelay_connections_active") == 0, 5 * SLACK), \
        "ringrelay_connections_active = %r" % d.metric("ringrelay_connections_active")
    with Client(d.port, greet=False) as c:
        assert c.reply(timeout=15).code == 220
        c.ehlo()
        queued_id(c.send_message(make_message()))


def test_connection_limit(daemons):
    d = daemons(server={"workers": 1}, limits={"max_connections": 2})
    a, b = d.client(), d.client()
    c = Client(d.port, greet=False)
    rs = parse_replies(c.read_until_closed(10))
    assert [r.code for r in rs] == [421], rs
    assert rs[0].startswith("421 4.7.0")
    c.close()
    a.quit()
    assert wait_for(lambda: d.metric("ringrelay_connections_active") == 1, 5 * SLACK)
    with d.client() as c2:             # a slot is free again
        c2.ehlo()
        queued_id(c2.send_message(make_message()))
    b.quit()
    assert d.metric("ringrelay_protocol_errors_total", {"reason": "connection_limit"}) == 1


def test_sighup_changes_trusted_networks(daemons):
    d = daemons(policy={"trusted_networks": "127.0.0.0/8"})
    with d.client() as c:
        c.ehlo()
        queued_id(c.send_message(make_message()))
    d.set("policy", "trusted_networks", "10.0.0.0/8")
    d.write_config()
    d.signal(signal.SIGHUP)
    assert wait_for(lambda: "event=reloaded" in d.log, 10 * SLACK), d.log
    with d.client() as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.com>")
        assert c.cmd("RCPT TO:<b@example.net>").startswith("554 5.7.1")


def test_sighup_under_load(daemon):
    smtp_source = "/usr/sbin/smtp-source"
    if not os.access(smtp_source, os.X_OK):
        pytest.skip("smtp-source not installed")
    p = subprocess.Popen([smtp_source, "-s", "5", "-m", "400", "-l", "500", "-f",
                          "a@example.com", "-t", "b@example.net", "127.0.0.1:%d" % daemon.port],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(5):
            time.sleep(0.1)
            daemon.signal(signal.SIGHUP)
        out, _ = p.communicate(timeout=120 * SLACK)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, out
    assert wait_for(lambda: daemon.log.count("event=reloaded") == 5, 10 * SLACK), daemon.log
    assert daemon.metric("ringrelay_messages_accepted_total") == 400
    assert len(daemon.spool_list()) == 400


def test_bdat_stall_times_out(daemons):
    d = daemons(limits={"idle_timeout": "2s", "min_data_rate": 1000})
    with d.client() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 100 LAST\r\n"
               + b"x" * 10)
        assert [r.code for r in c.replies(2)] == [250, 250]
        r = c.reply(timeout=15)
        assert r.startswith("421 4.4.2"), r
        assert c.is_closed(5)
    assert d.export() == []


def test_many_concurrent_clients(daemon):
    import threading
    n = 100
    results = [None] * n
    start = threading.Barrier(n, timeout=30)

    def one(i):
        try:
            with Client(daemon.port, timeout=20) as c:
                start.wait()
                c.ehlo()
                m = make_message("concurrent %d" % i, ["client %d" % i])
                results[i] = (queued_id(c.send_message(m)), m)
        except Exception as e:          # reported below
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60 * SLACK)
    errors = [r for r in results if not isinstance(r, tuple)]
    assert not errors, errors[:5]
    got = daemon.export_by_qid()
    assert len(got) == n
    for qid, m in results:
        assert got[qid][1] == m
    assert wait_for(lambda: daemon.metric("ringrelay_connections_active") == 0, 5 * SLACK)


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_clients_that_leave_without_reading(daemon, how):
    """Commands sent, connection gone before the replies: the replies cannot be delivered."""
    for i in range(40):
        c = Client(daemon.port, greet=(i % 2 == 0))
        c.send(b"EHLO x.example\r\n" if i % 4 < 2 else
               b"EHLO x.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n")
        if how == "rst":
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    assert wait_for(lambda: daemon.metric("ringrelay_connections_active") == 0, 10 * SLACK), \
        "ringrelay_connections_active = %r" % daemon.metric("ringrelay_connections_active")
    with daemon.client() as c:
        c.ehlo()
        queued_id(c.send_message(make_message()))


