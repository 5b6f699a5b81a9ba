"""Load with Postfix's smtp-source: every message stored complete, group commit at work."""
import os
import re
import socket
import subprocess
import threading

import pytest

from conftest import SLACK

SMTP_SOURCE = "/usr/sbin/smtp-source"
pytestmark = pytest.mark.skipif(not os.access(SMTP_SOURCE, os.X_OK),
                                reason="smtp-source not installed")

HEADER_RE = re.compile(rb"^From: <a@example\.com>\r\nTo: <b@example\.net>\r\nDate: [^\r\n]+\r\n"
                       rb"Message-Id: <[^\r\n]+>\r\n\r\n")


def capture_smtp_source(args):
    """Run smtp-source once (-m 1) against a minimal in-test SMTP sink; return the content it
    sent (dot-unstuffed, without the final '.')."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(20)
    port = srv.getsockname()[1]
    got = {}

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(20)
        f = conn.makefile("rb")
        conn.sendall(b"220 sink ESMTP\r\n")
        for _ in range(100):
            line = f.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb == b"DATA":
                conn.sendall(b"354 go\r\n")
                data = []
                for _ in range(100000):
                    l = f.readline()
                    if l in (b".\r\n", b""):
                        break
                    data.append(l[1:] if l.startswith(b".") else l)
                got["content"] = b"".join(data)
                conn.sendall(b"250 ok\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                break
            else:
                conn.sendall(b"250 ok\r\n")
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    r = subprocess.run([SMTP_SOURCE, "-m", "1", "-s", "1"] + args + ["127.0.0.1:%d" % port],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    t.join(20)
    srv.close()
    assert r.returncode == 0, r.stdout
    return got["content"]


def split_body(eml):
    m = HEADER_RE.match(eml)
    assert m, "unexpected head: %r" % eml[:300]
    return eml[m.end():]


def test_smtp_source_2000_messages(daemon):
    args = ["-l", "1024", "-f", "a@example.com", "-t", "b@example.net"]
    expected_body = split_body(capture_smtp_source(args))
    assert len(expected_body) >= 1024
    r = subprocess.run([SMTP_SOURCE, "-s", "50", "-m", "2000"] + args
                       + ["127.0.0.1:%d" % daemon.port],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120 * SLACK)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    listed = daemon.spool_list()
    assert len(listed) == 2000
    assert daemon.metric("ringrelay_messages_accepted_total") == 2000
    assert daemon.metric("ringrelay_connections_total", {"listener": "main"}) == 2000
    assert daemon.metric("ringrelay_accept_latency_seconds_count") == 2000
    fsyncs = daemon.metric("ringrelay_spool_fsyncs_total")
    assert fsyncs is not None and 0 < fsyncs < 2000, fsyncs
    # the records written in one loop pass leave as one write: with 50 sessions, fewer
    # writes than messages (each message is at least one record)
    writes = daemon.metric("ringrelay_spool_writes_total")
    assert writes is not None and 0 < writes < 2000, writes
    msgs = daemon.export()
    assert len(msgs) == 2000
    assert len({env["qid"] for env, _ in msgs}) == 2000
    for env, eml in msgs:
        assert env["from"] == "a@example.com" and env["rcpt"] == ["b@example.net"], env
        assert env["size"] == str(len(eml))
        assert split_body(eml) == expected_body, env["qid"]
    assert daemon.log.count("event=accepted") == 2000


def test_smtp_source_connection_reuse(daemon):
    args = ["-l", "300", "-f", "a@example.com", "-t", "b@example.net"]
    expected_body = split_body(capture_smtp_source(args))
    r = subprocess.run([SMTP_SOURCE, "-d", "-s", "10", "-m", "500"] + args
                       + ["127.0.0.1:%d" % daemon.port],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120 * SLACK)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    assert daemon.metric("ringrelay_messages_accepted_total") == 500
    conns = daemon.metric("ringrelay_connections_total", {"listener": "main"})
    assert 1 <= conns <= 10, conns
    msgs = daemon.export()
    assert len(msgs) == 500
    for env, eml in msgs:
        assert split_body(eml) == expected_body
