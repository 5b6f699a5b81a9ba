"""Outbound delivery through a smarthost: Postfix smtp-sink as the next hop (tests/system/peers.py).

Relayed content is compared with what was sent: the body and the original headers exactly,
header fields the relay may prepend (Received:) tolerated. Temporary failures (4xx, 421,
dropped connections, nothing listening) are retried and nothing is lost; permanent ones (5xx)
bounce to the sender; a message from <> is never bounced; the queue lifetime ends in a bounce;
a SIGTERM keeps deferred messages for the next start; finished segment files are removed.
"""
import os
import re
import time

import pytest

from conftest import SLACK, dot_stuff, queued_id, wait_for
from peers import (big_content, check_dsn, deliveries, delivered_rcpts, events, lf, marker,
                   relay_sections, ringctl_queue, same_message, send_one, tagged_message,
                   wait_delivered, wait_events, wait_queue_empty)

pytestmark = pytest.mark.relay


def relay_daemon(daemons, sink_port, server=None, **relay):
    return daemons(relay=relay_sections(sink_port, **relay), server=server or {})


def one_dump(sink, tag, run=None):
    """The single complete transaction at the sink carrying tag."""
    def find():
        return [g for g in sink.find(marker(tag))
                if g.mail_from != "" and (run is None or "/run-%d/" % run in g.path)]
    got = wait_for(find, 10 * SLACK, interval=0.1)
    assert got and len(got) == 1, "want exactly one transaction with %s (run %s), got %r" \
        % (tag, run, sink.dumps())
    return got[0]


def test_relays_exact_content(peers, daemons):
    sink = peers.sink()
    d = relay_daemon(daemons, sink.port)
    msgs = {
        "dots": (tagged_message("dots", ["first", ".starts with a dot", "..two dots", ".",
                                         "", " . space dot", "...", "last ."]), False),
        "eightbit": (tagged_message("eightbit", ["caf\u00e9 \u00fcber \u65e5\u672c\u8a9e",
                                                 "\u00a0nbsp and \u20ac"]), True),
        "big": (big_content("big"), False),
    }
    qids = {}
    for tag, (content, eight) in msgs.items():
        qids[tag] = send_one(d, content, mail_from="sender-%s@example.com" % tag,
                             rcpts=["rcpt-%s@example.net" % tag], eight_bit=eight)
    wait_delivered(d, {qids[t]: ["rcpt-%s@example.net" % t] for t in msgs}, timeout=60)
    for tag, (content, _) in msgs.items():
        dump = one_dump(sink, tag)
        assert dump.mail_from == "sender-%s@example.com" % tag
        assert dump.rcpts == ["rcpt-%s@example.net" % tag]
        if tag == "eightbit":       # RFC 6152: 8-bit content goes with BODY=8BITMIME
            assert "BODY=8BITMIME" in dump.mail_args.upper(), dump.mail_args
        assert same_message(dump.content, lf(content)), \
            "%s: relayed content differs (got %d bytes, sent %d)" % (tag, len(dump.content),
                                                                    len(content))
        ev = events(d, "delivered", id=qids[tag])
        assert len(ev) == 1, ev
        assert ev[0]["to"] == "<rcpt-%s@example.net>" % tag
        assert ev[0].get("relay", "").endswith(":%d" % sink.port), ev[0]
    wait_queue_empty(d)
    assert deliveries(d, "delivered") == 3
    assert deliveries(d, "bounced") == 0


def test_wire_bytes_are_crlf_and_dot_stuffed(peers, daemons):
    """The exact bytes on the wire (a Python recorder; smtp-sink's dump hides line ends)."""
    raw = peers.raw_sink()
    d = relay_daemon(daemons, raw.port)
    content = tagged_message("wire", [".", "..", ".x", "x.", " .", "", "\tindent",
                                      "x" * 998, ".end"])
    qid = send_one(d, content, rcpts=["w1@example.net", "w2@example.org"])
    wait_delivered(d, {qid: ["w1@example.net", "w2@example.org"]})
    assert wait_for(lambda: raw.transactions, 5 * SLACK)
    assert len(raw.transactions) == 1, [t.data[:200] for t in raw.transactions]
    tx = raw.transactions[0]
    assert not raw.bad_lines, "command lines without CRLF: %r" % raw.bad_lines
    assert re.match(r"(?i)^MAIL FROM:<s@example\.com>( |$)", tx.mail), tx.mail
    assert sorted(re.match(r"(?i)^RCPT TO:<([^>]*)>", r).group(1) for r in tx.rcpts) \
        == ["w1@example.net", "w2@example.org"], tx.rcpts
    data = tx.data
    assert not re.search(rb"(?<!\r)\n", data), "bare LF on the wire"
    assert not re.search(rb"\r(?!\n)", data), "bare CR on the wire"
    want = dot_stuff(content)
    assert data.endswith(want), "wire bytes differ:\n%r\n!=\n%r" % (data[-600:], want[-600:])
    prefix = data[:len(data) - len(want)]
    assert same_message(lf(prefix + want), lf(want)), "not header fields before the message: %r" \
        % prefix[:500]


def test_several_recipients_one_transaction(peers, daemons):
    sink = peers.sink()
    d = relay_daemon(daemons, sink.port)
    rcpts = ["one@example.net", "two@example.net", "Three@example.org"]
    content = tagged_message("multi")
    qid = send_one(d, content, rcpts=rcpts)
    wait_delivered(d, {qid: rcpts})
    dump = one_dump(sink, "multi")
    assert sorted(dump.rcpts) == sorted(rcpts)
    assert same_message(dump.content, lf(content))
    assert delivered_rcpts(d, qid) == sorted(rcpts)
    wait_queue_empty(d)


def test_4xx_at_rcpt_deferred_then_delivered(peers, daemons):
    sink = peers.sink("-r", "rcpt")
    d = relay_daemon(daemons, sink.port)
    content = tagged_message("soft")
    qid = send_one(d, content)
    ev = wait_events(d, "deferred", id=qid)[0]
    assert ev["to"] == "<r@example.net>"
    assert "450" in ev.get("reason", "") or "4.3.0" in ev.get("reason", ""), ev
    entries, _ = ringctl_queue(d)
    assert qid in entries, entries
    e = entries[qid]
    assert e.state in ("deferred", "active", "queued"), e
    assert e.sender == "s@example.com" and "r@example.net" in e.line, e
    assert e.last and ("450" in e.last or "4.3.0" in e.last), e
    assert deliveries(d, "deferred") >= 1
    assert d.metric("ringrelay_queue_messages") == 1
    assert not events(d, "delivered") and not events(d, "bounced")
    sink.restart()                         # now it accepts
    wait_delivered(d, {qid: ["r@example.net"]})
    dump = one_dump(sink, "soft", run=1)
    assert same_message(dump.content, lf(content))
    wait_queue_empty(d)
    entries, _ = ringctl_queue(d)
    assert not entries, entries
    assert not events(d, "bounced")


def test_5xx_at_rcpt_bounced(peers, daemons):
    """550 at RCPT: bounced at once (no retry). The bounce goes from <> to the sender through
    the same smarthost, which refuses it too: it is dropped, never bounced in turn."""
    sink = peers.sink("-f", "rcpt", "-B", "550 5.1.1 No such user here")
    d = relay_daemon(daemons, sink.port)
    qid = send_one(d, tagged_message("hard"), mail_from="origin@example.com",
                   rcpts=["nobody@example.net"])
    ev = wait_events(d, "bounced", id=qid)[0]
    assert ev["to"] == "<nobody@example.net>"
    assert "550" in ev.get("reason", ""), ev
    # the bounce message: a new id, to the original sender, refused -> dropped
    dsn = wait_events(d, "bounced", to="origin@example.com")
    dsn_ids = {e["id"] for e in dsn}
    assert qid not in dsn_ids and len(dsn_ids) == 1, dsn
    wait_queue_empty(d)
    assert not events(d, "deferred", id=qid), "a 5xx must not be retried"
    time.sleep(1.0 * SLACK)                # a bounce of the bounce would show up by now
    ids = {e["id"] for n in ("delivered", "deferred", "bounced") for e in events(d, n)}
    assert ids == {qid} | dsn_ids, ids
    assert deliveries(d, "bounced") >= 2
    assert deliveries(d, "delivered") == 0
    assert not sink.dumps(), "the sink refused every RCPT, yet got %r" % sink.dumps()


def test_null_sender_is_never_bounced(peers, daemons):
    sink = peers.sink("-f", "rcpt", "-B", "550 5.1.1 No such user here")
    d = relay_daemon(daemons, sink.port)
    qid = send_one(d, tagged_message("nullsender"), mail_from="", rcpts=["x@example.net"])
    ev = wait_events(d, "bounced", id=qid)[0]
    assert ev["to"] == "<x@example.net>"
    wait_queue_empty(d)
    time.sleep(1.5 * SLACK)                # a bounce would have been made and tried by now
    ids = {e["id"] for n in ("delivered", "deferred", "bounced") for e in events(d, n)}
    assert ids == {qid}, "a message from <> caused another message: %s" % ids
    assert d.metric("ringrelay_queue_messages") == 0
    assert d.metric("ringrelay_messages_accepted_total") == 1
    entries, _ = ringctl_queue(d)
    assert not entries


# (name, smtp-sink flags of the failing run; None = nothing listens)
TEMPFAILS = [
    ("nothing_listens", None),
    ("greeting_450", ["-r", "connect"]),
    ("drop_after_rcpt", ["-q", "rcpt"]),
    ("drop_after_data", ["-q", "data"]),
    ("drop_after_dot", ["-q", "."]),
    ("421_at_mail", ["-Q", "mail"]),
    ("421_after_dot", ["-Q", "."]),
    ("450_after_dot", ["-r", "."]),
]


@pytest.mark.parametrize("name,flags", TEMPFAILS, ids=[t[0] for t in TEMPFAILS])
def test_temporary_failure_retried_never_lost(peers, daemons, name, flags):
    sink = peers.sink(*(flags or []), start=flags is not None)
    d = relay_daemon(daemons, sink.port)
    sent = {}
    for i in range(2):
        tag = "%s-%d" % (name, i)
        content = tagged_message(tag)
        sent[tag] = (send_one(d, content, rcpts=["t%d@example.net" % i]), content, i)
    for tag, (qid, _, _) in sent.items():
        wait_events(d, "deferred", id=qid)
    assert not events(d, "delivered") and not events(d, "bounced")
    entries, _ = ringctl_queue(d)
    assert set(q for q, _, _ in sent.values()) <= set(entries), entries
    if sink.running():
        sink.restart()
    else:
        sink.start()
    wait_delivered(d, {qid: ["t%d@example.net" % i] for qid, _, i in sent.values()})
    for tag, (qid, content, _) in sent.items():
        # delivered by the second run of the sink (the first never said 250 to it)
        dump = one_dump(sink, tag, run=sink.runs - 1)
        assert same_message(dump.content, lf(content)), tag
        assert len(events(d, "delivered", id=qid)) == 1
    wait_queue_empty(d)
    assert not events(d, "bounced")
    assert deliveries(d, "deferred") >= 2 and deliveries(d, "delivered") == 2


def test_queue_lifetime_expiry_bounces(peers, daemons):
    sink = peers.sink("-r", "rcpt")
    d = relay_daemon(daemons, sink.port, queue_lifetime="6s")
    qid = send_one(d, tagged_message("expire"), mail_from="patient@example.com",
                   rcpts=["slow@example.net"])
    wait_events(d, "deferred", id=qid)
    ev = wait_events(d, "bounced", id=qid, timeout=40)[0]
    assert ev["to"] == "<slow@example.net>"
    assert re.search(r"expir|lifetime", ev.get("reason", ""), re.I), ev
    assert not events(d, "delivered", id=qid)
    # the bounce reaches the sender once the next hop accepts again
    sink.restart()
    got = wait_for(lambda: [x for x in sink.dumps() if x.mail_from == ""], 20 * SLACK, 0.1)
    assert got and len(got) == 1, got
    check_dsn(got[0], "patient@example.com", ["slow@example.net"], marker("expire"))
    assert not [x for x in sink.dumps() if x.mail_from == "patient@example.com"], \
        "the expired message itself was delivered"
    wait_queue_empty(d)


def test_sigterm_keeps_deferred_messages(peers, daemons):
    sink = peers.sink("-r", "rcpt")
    d = relay_daemon(daemons, sink.port)
    sent = {}
    for i in range(5):
        tag = "term-%d" % i
        content = tagged_message(tag)
        sent[tag] = (send_one(d, content, rcpts=["k%d@example.net" % i]), content, i)
    for qid, _, _ in sent.values():
        wait_events(d, "deferred", id=qid)
    assert d.stop() == 0
    sink.restart()
    d.start(new_ports=True)                # same spool
    wait_delivered(d, {qid: ["k%d@example.net" % i] for qid, _, i in sent.values()})
    for tag, (qid, content, _) in sent.items():
        dump = one_dump(sink, tag, run=1)
        assert same_message(dump.content, lf(content))
    wait_queue_empty(d)


def seg_files(d):
    spool = d.sections["server"]["spool_dir"]
    try:
        return {f for f in os.listdir(spool) if f.endswith(".seg")}
    except FileNotFoundError:
        return set()


def test_finished_segments_are_removed(peers, daemons):
    sink = peers.sink()
    workers = 2
    d = relay_daemon(daemons, sink.port, server={"segment_size": "64K", "workers": workers})
    seen = set()
    want = {}
    body = ["line %03d %s" % (i, "z" * 60) for i in range(80)]       # ~6 KB each
    with d.client() as c:
        c.ehlo()
        for i in range(60):
            tag = "seg-%d" % i
            r = c.send_message(tagged_message(tag, body), rcpts=["g%d@example.net" % i])
            assert r.code == 250, r
            want[queued_id(r)] = ["g%d@example.net" % i]
            seen |= seg_files(d)
    assert len(seen) >= 3, "segments did not rotate: %s" % sorted(seen)
    wait_delivered(d, want, timeout=60)
    assert len(sink.dumps()) >= 60
    wait_queue_empty(d)

    def cleaned():
        now = seg_files(d)
        return len(now) <= workers and len(now & seen) <= workers
    if not wait_for(cleaned, 20 * SLACK, interval=0.2):
        raise AssertionError("finished segments still there: %s (seen during the run: %s)"
                             % (sorted(seg_files(d)), sorted(seen)))
    # the relay still works afterwards
    qid = send_one(d, tagged_message("seg-after"))
    wait_delivered(d, {qid: ["r@example.net"]})


def test_offline_spool_listing_skips_finished_messages(peers, daemons):
    """ringctl spool (read straight from the segments) lists what still has recipients to
    deliver, not what was delivered and only waits for its segment to be removed."""
    sink = peers.sink()
    d = relay_daemon(daemons, sink.port, retry_min="1h", retry_max="1h")
    done = send_one(d, tagged_message("listed-done"))
    wait_delivered(d, {done: ["r@example.net"]})
    sink.restart("-r", "rcpt")
    open_ = send_one(d, tagged_message("listed-open"))
    wait_events(d, "deferred", id=open_)
    listed = " ".join(d.spool_list())
    assert open_ in listed and done not in listed, listed
