"""Regression tests for defects found in review: each one failed before its fix."""
import socket
import threading

from conftest import QUEUED_RE, make_message, queued_id
from test_robustness import tmpfs_spool  # noqa: F401  (fixture)


def codes(rs):
    return [r.code for r in rs]


def test_bdat_zero_last_after_content_without_crlf(daemon):
    """BDAT 0 LAST after a chunk that does not end in CRLF: the final CRLF is added, no crash."""
    with daemon.client() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 3\r\nabc")
        assert codes(c.replies(3)) == [250, 250, 250]
        c.send(b"BDAT 0 LAST\r\n")
        qid = queued_id(c.reply())
        assert c.cmd("NOOP").code == 250
    assert [(e["qid"], m) for e, m in daemon.export()] == [(qid, b"abc\r\n")]


def test_half_close_after_final_dot_still_gets_250(daemon):
    """A client that shuts its sending side right after the final dot gets its 250."""
    for i in range(20):
        with daemon.client() as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<a@example.com>").code == 250
            assert c.cmd("RCPT TO:<b@example.net>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(make_message("half %d" % i) + b".\r\n")
            c.sock.shutdown(socket.SHUT_WR)
            qid = queued_id(c.reply())
            assert qid
    assert len(daemon.export()) == 20


def test_half_close_after_ehlo_gets_the_reply(daemon):
    for _ in range(20):
        with daemon.client() as c:
            c.send(b"EHLO x\r\n")
            c.sock.shutdown(socket.SHUT_WR)
            assert c.reply().code == 250


def test_spool_write_failure_never_runs_the_body_as_commands(daemons, tmpfs_spool):  # noqa: F811
    """The device fills in the middle of DATA: one 452 after the real end of the message, and
    the command-like lines inside the body are never executed."""
    d = daemons(server={"spool_dir": tmpfs_spool, "spool_min_free": 0, "segment_size": "1M"},
                limits={"max_message_size": "20M"})
    body = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * (6 * 1024 * 1024 // 80)
    body += b"NOOP\r\nRSET\r\nHELP\r\nMAIL FROM:<evil@example.com>\r\n"
    with d.client() as c:
        c.ehlo()
        # a SIZE below the free space gets past the MAIL check; the content is larger
        assert c.cmd("MAIL FROM:<a@example.com> SIZE=1000").code == 250
        assert c.cmd("RCPT TO:<b@example.net>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(body + b".\r\n")
        r = c.reply(timeout=30)
        assert r.startswith("452 4.3.1") or r.startswith("451 4.3.0"), r
        assert c.cmd("NOOP").code == 250  # the next reply belongs to this NOOP: nothing extra
    assert d.export() == []


def test_spool_full_answers_every_message_of_a_combined_write(daemons, tmpfs_spool):  # noqa: F811
    """The device fills while several sessions' records go out in one combined write (the
    writes of a loop pass leave together). A failed write answers its message at once and
    the session takes its pipelined next message, which writes again: every message still
    gets exactly one answer, what was acknowledged is exported intact, and the daemon
    serves on and stops cleanly. (The combined write was handed out again while its own
    completion was still being shared out.)"""
    d = daemons(server={"spool_dir": tmpfs_spool, "spool_min_free": 0, "segment_size": "1M",
                        "workers": 1},
                limits={"max_message_size": "300K"})
    sessions, per_session, rounds = 8, 2, 4
    body = (b"y" * 78 + b"\r\n") * (120 * 1024 // 80)
    acked, answers = {}, {"ok": 0, "full": 0, "mail": 0}
    clients = [d.client() for _ in range(sessions)]
    for c in clients:
        c.ehlo()
    for rnd in range(rounds):
        wire, contents = [], []
        for i in range(sessions):
            data = b""
            for k in range(per_session):
                content = b"Subject: r%d s%d m%d\r\n\r\n" % (rnd, i, k) + body
                contents.append(content)
                data += (b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n"
                         b"BDAT %d LAST\r\n" % len(content)) + content
            wire.append(data)
        start = threading.Barrier(sessions)

        def send(c, data):
            start.wait(10)
            c.send(data)
        senders = [threading.Thread(target=send, args=(c, data))
                   for c, data in zip(clients, wire)]
        for t in senders:
            t.start()
        for i, c in enumerate(clients):
            for k in range(per_session):
                mail, rcpt, end = c.replies(3, timeout=30)
                where = (rnd, i, k, mail, rcpt, end)
                if mail.code == 452:  # the free space sampled since then is short
                    assert mail.startswith("452 4.3.1"), where
                    assert (rcpt.code, end.code) == (503, 503), where
                    answers["mail"] += 1
                    continue
                assert (mail.code, rcpt.code) == (250, 250), where
                m = QUEUED_RE.match(end.last.encode())
                if m:
                    acked[m.group(1).decode()] = contents[i * per_session + k]
                    answers["ok"] += 1
                else:
                    assert end.startswith("452 4.3.1") or end.startswith("451 4.3.0"), where
                    answers["full"] += 1
        for t in senders:
            t.join(30)
    for c in clients:
        c.sentinel()  # nothing answered twice
        c.close()
    assert answers["full"], "no write failed on the 3 MiB spool: %r" % answers
    got = d.export_by_qid()
    assert set(got) == set(acked), "exported %r, acknowledged %r" % (sorted(got), sorted(acked))
    for qid, content in acked.items():
        assert got[qid][1] == content
