"""Crash safety: SIGKILL under load, restart on the same spool, nothing acknowledged is lost."""
import os
import random
import socket
import subprocess
import threading
import time

from conftest import SLACK, Client, ConnectionClosed, QUEUED_RE, dot_stuff
from conftest import queued_id as queued_id_of

SMTP_SOURCE = "/usr/sbin/smtp-source"
THREADS = 8
KILL_AFTER = 1.5          # seconds of load before SIGKILL
RUN_LIMIT = 30.0          # safety net for the sender threads


def make_body(tid, seq, rnd, round_=0):
    size = rnd.choice([200, 2000, 20000, 120000])
    lines = [b"From: <t%d@example.com>" % tid, b"To: <r%d@example.net>" % tid,
             b"Message-ID: <%d.%d.%d@crash.test>" % (round_, tid, seq),
             b"X-Seq: %d-%d-%d" % (round_, tid, seq),
             b"Subject: crash test", b""]
    n = 0
    while n < size:
        line = b"%d-%d line %d " % (tid, seq, n) + b"abcdefghij" * rnd.randint(0, 9)
        if rnd.random() < 0.05:
            line = b"." + line                     # needs dot-stuffing
        lines.append(line)
        n += len(line) + 2
    return b"\r\n".join(lines) + b"\r\n"


class Sender(threading.Thread):
    def __init__(self, tid, port, stop, reuse):
        super().__init__(daemon=True)
        self.tid, self.port, self.stop, self.reuse = tid, port, stop, reuse
        self.acked = {}        # qid -> (from, [rcpt], bytes)
        self.sent = {}         # "tid-seq" -> bytes, every message whose content was sent
        self.errors = 0
        self.rnd = random.Random(tid)
        self.round = 0

    def run(self):
        deadline = time.monotonic() + RUN_LIMIT
        seq = 0
        c = None
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                if c is None:
                    c = Client(self.port, timeout=5)
                    c.ehlo("t%d.example" % self.tid)
                seq += 1
                body = make_body(self.tid, seq, self.rnd, self.round)
                mail_from = "t%d@example.com" % self.tid
                rcpts = ["r%d@example.net" % self.tid, "s%d.%d@example.org" % (self.tid, seq)]
                # pipelined MAIL/RCPT/DATA
                c.send(("MAIL FROM:<%s>\r\n" % mail_from
                        + "".join("RCPT TO:<%s>\r\n" % r for r in rcpts) + "DATA\r\n").encode())
                rs = c.replies(2 + len(rcpts))
                if [r.code for r in rs] != [250] * (1 + len(rcpts)) + [354]:
                    raise AssertionError("unexpected replies %r" % rs)
                self.sent["%d-%d-%d" % (self.round, self.tid, seq)] = body
                c.send(dot_stuff(body) + b".\r\n")
                r = c.reply()
                m = QUEUED_RE.match(r.last.encode())
                if not m:
                    raise AssertionError("unexpected reply %r" % r)
                self.acked[m.group(1).decode()] = (mail_from, rcpts, body)
                if not self.reuse:
                    c.quit()
                    c = None
            except (ConnectionClosed, OSError, socket.timeout):
                self.errors += 1
                if c:
                    c.close()
                c = None
                if not self.stop.is_set():
                    time.sleep(0.05)
        if c:
            c.close()


def load_and_kill(d, kill_after, with_smtp_source=True):
    """Run the senders (and smtp-source) against d, SIGKILL d after kill_after seconds, stop
    the senders; returns (acked, sent) of this round."""
    stop = threading.Event()
    senders = [Sender(i, d.port, stop, reuse=(i % 2 == 0)) for i in range(THREADS)]
    for s in senders:                  # each round sends different messages
        s.rnd.seed(s.tid * 1000 + d.restarts)
        s.round = d.restarts
    load = None
    if with_smtp_source and os.access(SMTP_SOURCE, os.X_OK):
        load = subprocess.Popen([SMTP_SOURCE, "-s", "10", "-m", "1000000", "-l", "2000",
                                 "-f", "load@example.com", "-t", "sink@example.net",
                                 "127.0.0.1:%d" % d.port],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for s in senders:
            s.start()
        time.sleep(kill_after * SLACK)
        d.kill()
        stop.set()
        for s in senders:
            s.join(20 * SLACK)
            assert not s.is_alive(), "sender thread did not stop"
    finally:
        stop.set()
        if load is not None:
            try:
                load.wait(10)          # it fails once the daemon is gone: tolerated
            except subprocess.TimeoutExpired:
                load.kill()
                load.wait(10)
    acked, sent = {}, {}
    for s in senders:
        acked.update(s.acked)
        sent.update(s.sent)
    return acked, sent


def check_spool(d, acked, sent):
    """Every acknowledged message is there, whole, with its envelope; nothing is torn."""
    got = d.export_by_qid()
    missing = sorted(set(acked) - set(got))
    assert not missing, "acknowledged but lost after SIGKILL: %s" % missing[:20]
    for qid, (mail_from, rcpts, body) in acked.items():
        env, eml = got[qid]
        assert eml == body, "content differs for %s" % qid
        assert env["from"] == mail_from
        assert env["rcpt"] == rcpts
        assert env["size"] == str(len(body))
    # Anything else that survived is whole: a test message is exactly what was sent.
    for qid, (env, eml) in got.items():
        if env["from"].startswith("t") and qid not in acked:
            seq = eml.split(b"X-Seq: ", 1)[1].split(b"\r\n", 1)[0].decode()
            assert eml == sent[seq], "torn message %s" % qid
    return got


def test_sigkill_loses_nothing_acknowledged(daemons):
    d = daemons(server={"workers": 2})
    acked, sent = load_and_kill(d, KILL_AFTER)
    assert len(acked) > 0, "no message was acknowledged before the kill"
    d.start(new_ports=True)          # same spool_dir
    assert "event=spool_recovered" in d.log
    check_spool(d, acked, sent)
    # The restarted daemon serves.
    with d.client() as c:
        c.ehlo()
        r = c.send_message(b"Subject: after restart\r\n\r\nok\r\n")
        assert r.code == 250
    total = d.metric("ringrelay_queue_messages")
    assert total is not None and total >= len(acked) + 1


def test_repeated_sigkill(daemons):
    """Three rounds of load and SIGKILL on the same spool, small segments so that they
    rotate; after each restart everything acknowledged so far is still there."""
    d = daemons(server={"workers": 2, "segment_size": "256K"})
    acked, sent = {}, {}
    for rnd in range(3):
        if rnd:
            d.start(new_ports=True)
        a, s = load_and_kill(d, 0.7, with_smtp_source=False)
        acked.update(a)
        sent.update(s)
    d.start(new_ports=True)
    assert len(acked) > 0
    got = check_spool(d, acked, sent)
    assert d.metric("ringrelay_queue_messages") == len(got)


def test_sigterm_restart_keeps_messages(daemons):
    d = daemons()
    with d.client() as c:
        c.ehlo()
        qids = [queued_id_of(c.send_message(b"Subject: %d\r\n\r\nx\r\n" % i)) for i in range(5)]
    assert d.stop() == 0
    d.start(new_ports=True)
    assert "event=spool_recovered messages=5 " in d.log, d.log
    assert d.metric("ringrelay_queue_messages") == 5
    assert sorted(d.export_by_qid()) == sorted(qids)
