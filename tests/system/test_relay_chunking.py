"""Outbound CHUNKING (RFC 3030): the relay sends a message as one "BDAT n LAST" chunk when the
next hop offers CHUNKING and [relay] chunking is on (the default), else DATA.

  content  byte for byte at a ringsink --dump (which keeps BDAT chunks exactly as they came):
           lines starting with ".", 1 MiB (many spool reads, one chunk), a message that came
           in without a final CRLF (the relay's reader stores it with one, so it goes with
           one), a message that came in with bare LFs (stored, and sent, as CRLF); n is the
           exact byte count; an empty message goes as "BDAT 0 LAST". The same messages by
           DATA (chunking = no, or a sink without CHUNKING) give the same dumps.
  wire     the MAIL, RCPT and BDAT commands and the chunk as the raw Python sink sees them,
           with and without PIPELINING, and over STARTTLS (TlsSink with CHUNKING).
  faults   ringsink --fail through the BDAT path: some recipients refused 550 (those are
           bounced, the others delivered; a chunk with no recipient left is read and refused
           and the relay goes on after RSET), 451 to BDAT LAST (deferred, then delivered by a
           sink that accepts), MAIL refused 550 (bounced) or 451 (deferred).
Messages from <> are used where only the relay's outcomes are counted, so no bounce message
joins the traffic.
"""
import os
import re

import pytest

from certs import make_cert
from conftest import SLACK, free_port, queued_id, wait_for
from peers import (big_content, events, relay_sections, send_one, tagged_message, wait_delivered,
                   wait_events, wait_queue_empty)
from test_bench_tools import RINGSINK

pytestmark = [pytest.mark.relay,
              pytest.mark.skipif(not os.path.exists(RINGSINK), reason="ringsink not built")]


def relay_daemon(daemons, sink_port, limits=None, server=None, **relay):
    return daemons(relay=relay_sections(sink_port, **relay), limits=limits or {},
                   server=server or {})


def send_bdat(d, content, mail_from="s@example.com", rcpts=("r@example.net",)):
    """One message to the relay as a single BDAT LAST chunk (content as it is); its queue id."""
    with d.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % mail_from).code == 250
        for r in rcpts:
            assert c.cmd("RCPT TO:<%s>" % r).code == 250
        c.send(b"BDAT %d LAST\r\n" % len(content) + content)
        qid = queued_id(c.reply(timeout=60))
        c.quit()
    return qid


def dumps_by_tag(dump_dir, count, timeout=30.0):
    """{X-Test-Id: content} of the dump files, once there are count of them."""
    def files():
        try:
            names = os.listdir(dump_dir)
        except FileNotFoundError:
            return []
        return names if len(names) >= count else []
    names = wait_for(files, timeout * SLACK, interval=0.1)
    assert names and len(names) == count, "want %d dumps, have %r" % (count, names)
    out = {}
    for n in names:
        with open(os.path.join(dump_dir, n), "rb") as f:
            data = f.read()
        m = re.search(rb"\r\nX-Test-Id: ([^\r\n]+)\r\n", data)
        assert m, data[:300]
        tag = m.group(1).decode()
        assert tag not in out, "two dumps of %s" % tag
        out[tag] = data
    return out


# (what the relay gets, how, what the next hop must get)
def corpus():
    nocrlf = tagged_message("nocrlf", ["the last line has no line end"])[:-2]
    barelf = tagged_message("barelf", ["a", "b"]).replace(b"\r\n", b"\n")
    return [
        ("dots", "data", tagged_message("dots", [".", "..", ".x", "x.", "", " . space", "...",
                                                 ".end"])),
        ("big", "data", big_content("big")),
        ("nocrlf", "bdat", nocrlf),
        ("barelf", "bdat", barelf),
    ]


def stored(content):
    """What the relay stores for content: CRLF line ends, the last line ended."""
    out = re.sub(rb"\r?\n", b"\r\n", content)
    return out if out.endswith(b"\r\n") else out + b"\r\n"


@pytest.mark.parametrize("mode", ["bdat", "chunking_no", "sink_without_chunking"])
def test_content_exact_bdat_and_data(daemons, sinks, tmp_path, mode):
    dump = str(tmp_path / "dump")
    sink = sinks("--threads", 1, "--dump", dump,
                 *(["--no-chunking"] if mode == "sink_without_chunking" else []))
    relay = {"chunking": "no"} if mode == "chunking_no" else {}
    d = relay_daemon(daemons, sink.port, limits={"bare_line_endings": "normalize"}, **relay)
    want, qids = {}, {}
    for tag, how, content in corpus():
        send = send_one if how == "data" else send_bdat
        qids[tag] = send(d, content, rcpts=["%s@example.net" % tag])
        want[tag] = stored(content)
    wait_delivered(d, {qids[t]: ["%s@example.net" % t] for t in qids}, timeout=60)
    got = dumps_by_tag(dump, len(want))
    for tag in want:
        assert got[tag] == want[tag], "%s: %d bytes at the sink, want %d" % (
            tag, len(got[tag]), len(want[tag]))
    wait_queue_empty(d)
    counts = sink.stop()
    assert counts["messages"] == len(want), counts
    assert counts["bytes"] == sum(len(w) for w in want.values()), counts
    if mode == "bdat":
        assert counts["bdat_chunks"] == len(want) and "354" not in counts["replies"], counts
    else:
        assert counts["bdat_chunks"] == 0 and counts["replies"]["354"] == len(want), counts


@pytest.mark.parametrize("pipelining", [True, False])
def test_wire_one_chunk_exact_size(peers, daemons, pipelining):
    """The raw sink sees MAIL, RCPT..., then "BDAT n LAST" with n the stored size and the
    content unstuffed; without PIPELINING the same commands, one at a time."""
    raw = peers.raw_sink(chunking=True, pipelining=pipelining)
    d = relay_daemon(daemons, raw.port)
    content = tagged_message("wire", [".", "..", ".x", "", "x" * 998, ".end"])
    qid = send_one(d, content, rcpts=["w1@example.net", "w2@example.org"])
    wait_delivered(d, {qid: ["w1@example.net", "w2@example.org"]})
    assert wait_for(lambda: raw.transactions, 5 * SLACK)
    tx = raw.transactions[0]
    assert not raw.bad_lines, raw.bad_lines
    assert tx.bdat and tx.chunks == [len(content)], tx.chunks
    assert tx.data == content
    verbs = [l.split(b" ", 1)[0].upper() for l in tx.commands[:4]]
    assert verbs == [b"MAIL", b"RCPT", b"RCPT", b"BDAT"], tx.commands
    assert tx.commands[3] == b"BDAT %d LAST\r\n" % len(content), tx.commands[3]
    wait_queue_empty(d)


def test_starttls_then_bdat(peers, daemons, tmp_path):
    """Over STARTTLS: EHLO again, then the chunk; 1 MiB takes many records and sends."""
    cert, key = make_cert(str(tmp_path), "sink.rr.test")
    sink = peers.tls_sink(cert, key, chunking=True)
    d = relay_daemon(daemons, sink.port, tls="may")
    msgs = {"small": tagged_message("small", [".", "..", ".x", "last"]),
            "big": big_content("tlsbig")}
    qids = {t: send_one(d, c, rcpts=["%s@example.net" % t]) for t, c in msgs.items()}
    wait_delivered(d, {qids[t]: ["%s@example.net" % t] for t in msgs}, timeout=60)
    assert wait_for(lambda: len(sink.transactions) >= 2, 10 * SLACK)
    by_rcpt = {tx.rcpts[0]: tx for tx in sink.transactions}
    for tag, content in msgs.items():
        tx = by_rcpt["RCPT TO:<%s@example.net>" % tag]
        assert tx.tls and tx.bdat and tx.chunks == [len(content)], (tx.tls, tx.chunks)
        assert tx.data == content
    for c in sink.conns_snapshot():
        if c.tls:
            assert c.ehlos == 2 and c.injected == b"", c
    assert not sink.bad_lines
    wait_queue_empty(d)


def test_rcpt_refused_bounced_others_delivered(daemons, sinks, tmp_path):
    """Half the RCPTs refused 550 at random (a fixed seed): per message, the refused recipients
    bounce and the others are delivered in one transaction; a message with none left still
    sends its chunk, which the sink reads and refuses (554), and the connection goes on."""
    dump = str(tmp_path / "dump")
    sink = sinks("--threads", 1, "--dump", dump, "--seed", 7, "--fail", "rcpt:550:0.5")
    d = relay_daemon(daemons, sink.port)
    n = 16
    qids = {}
    for i in range(n):
        qids[i] = send_one(d, tagged_message("r%d" % i), mail_from="",
                           rcpts=["a%d@example.net" % i, "b%d@example.net" % i])

    def settled():
        return len(events(d, "delivered")) + len(events(d, "bounced")) >= 2 * n
    assert wait_for(settled, 30 * SLACK, interval=0.1), d.all_logs()[-4000:]
    outcome = {}
    for i, qid in qids.items():
        ok = {e["to"] for e in events(d, "delivered", id=qid)}
        bad = {e["to"]: e for e in events(d, "bounced", id=qid)}
        assert len(ok) + len(bad) == 2 and not ok & set(bad), (i, ok, bad)
        for e in bad.values():
            assert "550" in e.get("reason", "") and "Injected rcpt" in e["reason"], e
        outcome[i] = len(ok)
    assert not events(d, "deferred")
    assert 1 in outcome.values(), outcome          # one of two refused, the other delivered
    wait_queue_empty(d)
    got = dumps_by_tag(dump, sum(1 for v in outcome.values() if v))
    assert set(got) == {"r%d" % i for i, v in outcome.items() if v}, sorted(got)
    counts = sink.stop()
    delivered = sum(outcome.values())
    assert counts["recipients"] == delivered and counts["replies"]["550"] == 2 * n - delivered
    assert counts["messages"] == sum(1 for v in outcome.values() if v), counts
    assert counts["bdat_chunks"] == n, counts      # every message sent its chunk
    assert counts["replies"].get("554", 0) == sum(1 for v in outcome.values() if not v), counts


def test_bdat_451_deferred_then_delivered(daemons, sinks, tmp_path):
    port = free_port()
    first = sinks("--threads", 1, "--fail", "dot:451:1", port=port)
    d = relay_daemon(daemons, port)
    contents = {"def%d" % i: tagged_message("def%d" % i) for i in range(2)}
    qids = {t: send_one(d, c, rcpts=["%s@example.net" % t]) for t, c in contents.items()}
    for t, qid in qids.items():
        ev = wait_events(d, "deferred", id=qid)[0]
        assert "451" in ev.get("reason", "") and "Injected dot" in ev["reason"], ev
    assert not events(d, "delivered") and not events(d, "bounced")
    counts = first.stop()
    assert counts["messages"] == 0 and counts["bdat_chunks"] >= 2, counts
    assert counts["replies"]["451"] == counts["bdat_chunks"], counts
    dump = str(tmp_path / "dump")
    sinks("--threads", 1, "--dump", dump, port=port)
    wait_delivered(d, {qid: ["%s@example.net" % t] for t, qid in qids.items()}, timeout=60)
    got = dumps_by_tag(dump, 2)
    for t, c in contents.items():
        assert got[t] == c
    wait_queue_empty(d)
    assert not events(d, "bounced")


@pytest.mark.parametrize("code,outcome", [(550, "bounced"), (451, "deferred")])
def test_mail_refused(daemons, sinks, code, outcome):
    """MAIL refused: the pipelined RCPTs get 503 and the chunk is read and refused; the MAIL
    reply decides for every recipient."""
    sink = sinks("--threads", 1, "--fail", "mail:%d:1" % code)
    d = relay_daemon(daemons, sink.port)
    qid = send_one(d, tagged_message("mail%d" % code), mail_from="",
                   rcpts=["m1@example.net", "m2@example.net"])
    evs = wait_events(d, outcome, count=2, id=qid)
    for e in evs:
        assert str(code) in e.get("reason", "") and "Injected mail" in e["reason"], e
    assert not events(d, "delivered")
    counts = sink.snapshot()
    assert counts["bdat_chunks"] >= 1 and counts["messages"] == 0, counts
    assert counts["replies"]["503"] >= 3, counts   # two RCPTs and the chunk, per attempt


def test_refused_chunk_then_next_message_same_connection(daemons, sinks):
    """After a refused BDAT the relay says RSET and the connection carries the next message
    (one worker, one connection to the destination: every message goes over it)."""
    sink = sinks("--threads", 1, "--seed", 3, "--fail", "dot:550:0.5")
    d = relay_daemon(daemons, sink.port, server={"workers": 1}, destination_concurrency="1")
    n = 10
    qids = [send_one(d, tagged_message("seq%d" % i), mail_from="",
                     rcpts=["s%d@example.net" % i]) for i in range(n)]

    def settled():
        return len(events(d, "delivered")) + len(events(d, "bounced")) >= n
    assert wait_for(settled, 30 * SLACK, interval=0.1), d.all_logs()[-4000:]
    bounced = [e for e in events(d, "bounced") if e["id"] in qids]
    assert bounced and len(bounced) < n, bounced
    counts = sink.stop()
    assert counts["messages"] == n - len(bounced), counts
    assert counts["replies"]["550"] == len(bounced) == counts["faults"], counts
    assert counts["connections"] == 1, counts      # RSET, and the connection went on
    # 250s: EHLO, and per message MAIL, RCPT, and BDAT LAST or (refused) the RSET after it
    assert counts["replies"]["250"] == 1 + 3 * n, counts


def test_empty_message_is_bdat_0_last(peers, daemons):
    """An empty message (BDAT 0 LAST in; the reader keeps it empty) goes as "BDAT 0 LAST"."""
    raw = peers.raw_sink(chunking=True)
    d = relay_daemon(daemons, raw.port)
    qid = send_bdat(d, b"", rcpts=["e@example.net"])
    wait_delivered(d, {qid: ["e@example.net"]})
    assert wait_for(lambda: raw.transactions, 5 * SLACK)
    tx = raw.transactions[0]
    assert tx.bdat and tx.chunks == [0] and tx.data == b"", tx.chunks
    assert tx.commands[2] == b"BDAT 0 LAST\r\n", tx.commands
