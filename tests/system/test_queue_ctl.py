"""ringctl queue commands (queue, flush, delete, hold, release) on deferred messages.

Nothing listens at the smarthost at first, so every message is deferred; retry_min is an hour,
so once the sink listens only `ringctl flush` (or a release) can explain a delivery.
"""
import re
import subprocess
import time

import pytest

from conftest import RINGCTL_BIN, SLACK, child_env, wait_for
from peers import (deliveries, events, marker, relay_sections, ringctl_queue, send_one,
                   tagged_message, wait_delivered, wait_events, wait_queue_empty)

pytestmark = pytest.mark.relay

UNKNOWN = "0123456789ABCDEF"


class Setup:
    def __init__(self, peers, daemons, n=3):
        self.sink = peers.sink(start=False)    # port chosen, nothing listens yet
        self.d = daemons(relay=relay_sections(self.sink.port, retry_min="1h", retry_max="1h"))
        self.msgs = []                          # (qid, tag, sender, rcpts)
        for i in range(n):
            tag = "ctl-%d" % i
            sender = "sender%d@example.com" % i
            rcpts = ["r%d@example.net" % i, "other%d@example.org" % i]
            qid = send_one(self.d, tagged_message(tag), mail_from=sender, rcpts=rcpts)
            self.msgs.append((qid, tag, sender, rcpts))
        for qid, _, _, rcpts in self.msgs:
            for rc in rcpts:
                wait_events(self.d, "deferred", id=qid, to=rc)

    def ctl(self, *args):
        r = self.d.ringctl(*args)
        return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8",
                                                                                   "replace")

    def ok(self, *args):
        rc, out, err = self.ctl(*args)
        assert rc == 0 and out.startswith("ok"), "ringctl %s: exit %d, %r %r" % (args, rc,
                                                                                  out, err)
        return out

    def delivered(self, qid):
        return events(self.d, "delivered", id=qid)

    def at_sink(self, tag):
        return [x for x in self.sink.find(marker(tag)) if x.mail_from != ""]


def summary_count(summary):
    for line in summary:
        m = re.search(r"(\d+) messages?\b", line)
        if m:
            return int(m.group(1))
    raise AssertionError("no message count in the summary %r" % summary)


def test_queue_lists_deferred_messages(peers, daemons):
    s = Setup(peers, daemons)
    entries, summary = ringctl_queue(s.d)
    assert sorted(entries) == sorted(q for q, _, _, _ in s.msgs), entries
    for qid, _, sender, rcpts in s.msgs:
        e = entries[qid]
        assert e.sender == sender, e
        for rc in rcpts:
            assert rc in e.line, (rc, e)
        assert e.state == "deferred", e
        assert e.next, e
        assert e.last, "no last error shown: %r" % e
    assert summary_count(summary) == 3
    assert s.d.metric("ringrelay_queue_messages") == 3
    assert deliveries(s.d, "deferred") >= 3


def test_flush_retries_now(peers, daemons):
    s = Setup(peers, daemons)
    s.sink.start()
    time.sleep(1.5)                             # retry_min is 1h: nothing may go out by itself
    assert not events(s.d, "delivered"), "delivered before the flush with retry_min = 1h"
    s.ok("flush")
    wait_delivered(s.d, {q: rc for q, _, _, rc in s.msgs})
    for _, tag, _, rcpts in s.msgs:
        got = s.at_sink(tag)
        assert len(got) == 1 and sorted(got[0].rcpts) == sorted(rcpts), got
    wait_queue_empty(s.d)
    entries, summary = ringctl_queue(s.d)
    assert not entries and summary_count(summary) == 0


def test_hold_and_release(peers, daemons):
    s = Setup(peers, daemons)
    held, tag, _, rcpts = s.msgs[0]
    s.ok("hold", held)
    entries, _ = ringctl_queue(s.d)
    assert entries[held].state == "held", entries[held]
    assert all(entries[q].state == "deferred" for q, _, _, _ in s.msgs[1:]), entries
    s.sink.start()
    s.ok("flush")
    wait_delivered(s.d, {q: rc for q, _, _, rc in s.msgs[1:]})
    time.sleep(0.5 * SLACK)
    assert not s.delivered(held) and not s.at_sink(tag), "a held message was delivered"
    entries, summary = ringctl_queue(s.d)
    assert list(entries) == [held] and entries[held].state == "held", entries
    # the hold is durable
    assert s.d.stop() == 0
    s.d.start(new_ports=True)
    entries, _ = ringctl_queue(s.d)
    assert list(entries) == [held] and entries[held].state == "held", entries
    s.ok("flush")
    time.sleep(1.0 * SLACK)
    assert not s.delivered(held) and not s.at_sink(tag), "flush delivered a held message"
    # release: it goes out (flush too, in case release keeps the old retry time)
    s.ok("release", held)
    entries, _ = ringctl_queue(s.d)
    assert held not in entries or entries[held].state != "held", entries
    s.ok("flush")
    wait_delivered(s.d, {held: rcpts})
    assert len(s.at_sink(tag)) == 1
    wait_queue_empty(s.d)


def test_delete(peers, daemons):
    s = Setup(peers, daemons)
    gone, tag, _, _ = s.msgs[1]
    s.ok("delete", gone)
    entries, summary = ringctl_queue(s.d)
    assert gone not in entries and len(entries) == 2, entries
    assert summary_count(summary) == 2
    wait_for(lambda: s.d.metric("ringrelay_queue_messages") == 2, 5 * SLACK)
    assert s.d.metric("ringrelay_queue_messages") == 2
    rc, out, err = s.ctl("delete", gone)      # not there any more
    assert rc == 1 and err.strip() and not out, (rc, out, err)
    s.sink.start()
    s.ok("flush")
    others = {q: rc for q, _, _, rc in s.msgs if q != gone}
    wait_delivered(s.d, others)
    wait_queue_empty(s.d)
    # deleted for good, also after a restart
    assert s.d.stop() == 0
    s.d.start(new_ports=True)
    entries, summary = ringctl_queue(s.d)
    assert not entries and summary_count(summary) == 0, entries
    s.ok("flush")
    time.sleep(1.0 * SLACK)
    assert not s.delivered(gone) and not s.at_sink(tag), "a deleted message was delivered"
    assert not events(s.d, "bounced", id=gone), "a deleted message was bounced"


def test_unknown_and_malformed_ids(peers, daemons):
    s = Setup(peers, daemons, n=1)
    for cmd in ("delete", "hold", "release"):
        rc, out, err = s.ctl(cmd, UNKNOWN)
        assert rc == 1, (cmd, rc, out, err)
        assert err.strip() and not out, (cmd, out, err)
    for bad in ("xyz", "0123", "0123456789ABCDEF0", ""):
        rc, out, err = s.ctl("delete", bad)
        assert rc != 0 and err.strip(), (bad, rc, out, err)
    rc, out, err = s.ctl("delete")            # missing argument: usage
    assert rc != 0, (rc, out, err)
    # the queue is untouched
    entries, _ = ringctl_queue(s.d)
    assert list(entries) == [s.msgs[0][0]]


def test_ringctl_against_stopped_daemon(peers, daemons):
    s = Setup(peers, daemons, n=1)
    assert s.d.stop() == 0
    sock = s.d.sections["server"]["control_socket"]
    for args in (["queue"], ["flush"], ["hold", s.msgs[0][0]], ["delete", s.msgs[0][0]]):
        rc, out, err = s.ctl(*args)
        assert rc != 0 and err.strip() and not out, (args, rc, out, err)
        r = subprocess.run([RINGCTL_BIN, "-s", sock] + args, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30 * SLACK, env=child_env())
        assert r.returncode != 0 and r.stderr.strip() and not r.stdout, r
        assert b"running" in r.stderr or sock.encode() in r.stderr, r.stderr
