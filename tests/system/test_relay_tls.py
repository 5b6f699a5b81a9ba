"""Outbound STARTTLS ([relay] tls = may | none | encrypt | verify) against real peers on
loopback: TlsSink (tests/system/peers.py), a Python SMTP server with STARTTLS through the ssl module,
with certificates made by openssl (tests/system/certs.py), and dnsmasq for next-hop names.

  may      STARTTLS when offered, exact bytes over TLS (1.3 and 1.2); plaintext when not
           offered; a broken handshake (garbage, close) or a stalled one (timeout) is logged,
           counted and retried once in plaintext on a new connection, never more; a refused
           STARTTLS (454) goes on in plaintext on the same connection
  none     never STARTTLS
  encrypt  not offered, refused, broken or stalled handshake: deferred with a 4.7.x reason,
           nothing delivered, no plaintext retry
  verify   CA and name checked: smarthost by name and MX host name deliver; wrong CA, wrong
           name, and an [address] smarthost (no name to match) are deferred
  a reply injected behind the 220 to STARTTLS is never taken: TLS fails to start
  a bad record after the handshake ends the connection; the message is retried
  a peer stalled in the handshake does not hold up the worker's other deliveries
  SIGHUP switches the mode for the next connections
Counted in ringrelay_relay_tls_total{result}; logged as event=relay_tls / relay_tls_failed.

Nothing leaves loopback: smarthosts are [127.0.0.1] or names in the test zone rr.test,
answered by a dnsmasq on loopback.
"""
import os
import re
import signal
import ssl

import pytest

from certs import make_ca, make_cert
from conftest import SLACK, dot_stuff, wait_for
from peers import (big_content, common_port, events, lf, relay_sections, ringctl_queue,
                   same_message, send_one, tagged_message, wait_delivered, wait_events,
                   wait_queue_empty)

pytestmark = pytest.mark.relay

RESULTS = ("success", "resumed", "failure", "timeout")


@pytest.fixture
def pki(tmp_path):
    d = str(tmp_path)
    other = os.path.join(d, "other")
    os.makedirs(other)
    ca = make_ca(d)
    return {
        "ca": ca,
        "other_ca": make_ca(other, name="Other CA"),
        "self": make_cert(d, "sink.rr.test", prefix="self"),             # self-signed
        "leaf": make_cert(d, "sink.rr.test", ca=ca, prefix="leaf"),
        "mx": make_cert(d, "mx1.rr.test", ca=ca, prefix="mx"),
        "wrongname": make_cert(d, "other.rr.test", ca=ca, prefix="wrongname"),
    }


def tls_counts(d):
    return {r: d.metric("ringrelay_relay_tls_total", {"result": r}, default=0.0)
            for r in RESULTS}


def relay_daemon(daemons, smarthost_port=None, server=None, **relay):
    """A daemon relaying to [127.0.0.1]:smarthost_port (None: MX lookups, or relay's own
    smarthost); relay: more [relay] keys."""
    return daemons(relay=relay_sections(smarthost_port, **relay), server=server or {})


def wire_content(tx, content):
    """tx's DATA section is content dot-stuffed, maybe behind prepended header fields."""
    want = dot_stuff(content)
    data = tx.data
    assert data.endswith(want), "wire bytes differ: %r ... != %r ..." % (data[-300:],
                                                                        want[-300:])
    prefix = data[:len(data) - len(want)]
    assert same_message(lf(prefix + want), lf(want)), "not header fields: %r" % prefix[:300]


def wait_transactions(sink, count, timeout=30.0):
    got = wait_for(lambda: len(sink.transactions) >= count, timeout * SLACK, interval=0.05)
    assert got, "sink got %d transactions, want %d; conns %r" % (
        len(sink.transactions), count, sink.conns_snapshot())
    return sink.transactions


def starttls_conns(sink):
    return [c for c in sink.conns_snapshot() if c.starttls]


# ---------------------------------------------------------------------------------------------
# may (the default), none

@pytest.mark.parametrize("mode,version", [(None, ssl.TLSVersion.TLSv1_3),
                                          ("may", ssl.TLSVersion.TLSv1_2),
                                          ("encrypt", ssl.TLSVersion.TLSv1_3)])
def test_starttls_offered_exact_bytes_over_tls(peers, daemons, pki, mode, version):
    """STARTTLS when offered: EHLO, STARTTLS, handshake, EHLO again, and the messages (a
    dot-stuffed one and 1 MiB, which takes many records and sends) arrive byte for byte."""
    sink = peers.tls_sink(*pki["self"], max_version=version)
    relay = {} if mode is None else {"tls": mode}
    d = relay_daemon(daemons, sink.port, **relay)
    msgs = {"small": tagged_message("small", [".", "..", ".x", "x.", "", "last"]),
            "big": big_content("big")}
    qids = {tag: send_one(d, content, rcpts=["%s@example.net" % tag])
            for tag, content in msgs.items()}
    wait_delivered(d, {qids[t]: ["%s@example.net" % t] for t in msgs}, timeout=60)
    txs = wait_transactions(sink, 2)
    want_version = "TLSv1.3" if version == ssl.TLSVersion.TLSv1_3 else "TLSv1.2"
    by_rcpt = {tx.rcpts[0]: tx for tx in txs}
    for tag, content in msgs.items():
        tx = by_rcpt["RCPT TO:<%s@example.net>" % tag]
        assert tx.tls == want_version, tx.tls
        wire_content(tx, content)
    assert not sink.bad_lines
    for c in starttls_conns(sink):
        assert c.tls == want_version and c.ehlos == 2, c   # RFC 3207 4.2: EHLO again
        assert c.injected == b"", c                        # nothing pipelined behind STARTTLS
        assert c.sni is None, c        # [127.0.0.1]: no SNI for an address (RFC 6066 3)
    ev = wait_events(d, "relay_tls")
    assert ev[0]["version"] == want_version and ev[0]["verified"] == "no", ev
    assert ev[0]["remote"].endswith(":%d" % sink.port), ev
    assert ev[0].get("cipher"), ev
    counts = tls_counts(d)
    assert counts["success"] + counts["resumed"] == len(starttls_conns(sink)) >= 1, counts
    assert counts["failure"] == counts["timeout"] == 0, counts
    assert not events(d, "relay_tls_failed")
    wait_queue_empty(d)


@pytest.mark.parametrize("curve", ["prime256v1", "secp384r1"])
def test_peer_without_x25519(peers, daemons, pki, curve):
    """Our client sends an X25519 key share first (tls/tls.c); a peer with only a NIST curve
    asks for another (HelloRetryRequest in TLS 1.3) and the delivery goes on over TLS."""
    sink = peers.tls_sink(*pki["self"])
    sink.ctx.set_ecdh_curve(curve)   # the server's only group
    d = relay_daemon(daemons, sink.port)
    qid = send_one(d, tagged_message("nist", ["one line"]), rcpts=["nist@example.net"])
    wait_delivered(d, {qid: ["nist@example.net"]})
    txs = wait_transactions(sink, 1)
    assert txs[0].tls == "TLSv1.3", txs[0].tls
    counts = tls_counts(d)
    assert counts["success"] == 1 and counts["failure"] == 0, counts
    wait_queue_empty(d)


def test_may_not_offered_plaintext(peers, daemons, pki):
    sink = peers.tls_sink(*pki["self"], starttls=False)
    d = relay_daemon(daemons, sink.port, tls="may")
    content = tagged_message("plain")
    qid = send_one(d, content)
    wait_delivered(d, {qid: ["r@example.net"]})
    tx = wait_transactions(sink, 1)[0]
    assert tx.tls is None
    wire_content(tx, content)
    assert not any(l.upper().startswith(b"STARTTLS") for c in sink.conns_snapshot()
                   for l in c.commands)
    assert not events(d, "relay_tls") and not events(d, "relay_tls_failed")
    assert tls_counts(d) == dict.fromkeys(RESULTS, 0.0)


def test_none_never_says_starttls(peers, daemons, pki):
    sink = peers.tls_sink(*pki["self"])
    d = relay_daemon(daemons, sink.port, tls="none")
    content = tagged_message("none")
    qid = send_one(d, content)
    wait_delivered(d, {qid: ["r@example.net"]})
    tx = wait_transactions(sink, 1)[0]
    assert tx.tls is None
    wire_content(tx, content)
    assert not starttls_conns(sink), sink.conns_snapshot()
    assert tls_counts(d) == dict.fromkeys(RESULTS, 0.0)


@pytest.mark.parametrize("broken", ["garbage", "close"])
def test_may_broken_handshake_retried_once_in_plaintext(peers, daemons, pki, broken):
    """The sink answers 220 to STARTTLS and then breaks the handshake, on every connection:
    one failure is logged and counted, the same address is tried again without STARTTLS,
    the message goes in plaintext, and there is no third connection."""
    sink = peers.tls_sink(*pki["self"], handshake=broken)
    d = relay_daemon(daemons, sink.port, tls="may")
    content = tagged_message("retry-" + broken)
    qid = send_one(d, content)
    wait_delivered(d, {qid: ["r@example.net"]})
    tx = wait_transactions(sink, 1)[0]
    assert tx.tls is None
    wire_content(tx, content)
    ev = wait_events(d, "relay_tls_failed")
    assert len(ev) == 1, ev
    assert ev[0]["stage"] == "handshake" and ev[0]["next"] == "plaintext_retry", ev
    assert ev[0]["remote"].endswith(":%d" % sink.port), ev
    wait_queue_empty(d)
    # the idle connection says QUIT; then the sink has seen exactly the two connections
    assert wait_for(lambda: all(c.done for c in sink.conns_snapshot()), 20 * SLACK)
    conns = sink.conns_snapshot()
    assert len(conns) == 2, conns
    assert conns[0].starttls and conns[0].tls is None, conns
    assert not conns[1].starttls and conns[1].ehlos == 1, conns
    counts = tls_counts(d)
    assert counts["failure"] == 1 and counts["success"] == counts["timeout"] == 0, counts


@pytest.mark.parametrize("mode", ["may", "encrypt"])
def test_reply_injected_behind_the_220_is_never_taken(peers, daemons, pki, mode):
    """The 220 to STARTTLS and a forged reply come in one segment: TLS fails to start (the
    forged bytes are neither a reply nor TLS); may retries in plaintext, encrypt defers."""
    sink = peers.tls_sink(*pki["self"], handshake="inject")
    d = relay_daemon(daemons, sink.port, tls=mode)
    content = tagged_message("inject-" + mode)
    qid = send_one(d, content)
    ev = wait_events(d, "relay_tls_failed")
    assert ev[0]["error"] == "data after the 220 to STARTTLS", ev
    assert not events(d, "relay_tls"), "a handshake followed the injected bytes"
    assert all(c.tls is None for c in sink.conns_snapshot()), sink.conns_snapshot()
    if mode == "may":
        wait_delivered(d, {qid: ["r@example.net"]})
        tx = wait_transactions(sink, 1)[0]
        assert tx.tls is None
        wire_content(tx, content)
        assert tls_counts(d)["failure"] == 1
    else:
        check_deferred(d, sink, qid, r"4\.7\.5 Cannot start TLS: .*data after the 220")


@pytest.mark.parametrize("mode", ["may", "encrypt"])
def test_starttls_refused(peers, daemons, pki, mode):
    """454 to STARTTLS: may goes on in plaintext on the same connection (RFC 3207 4), encrypt
    defers; both log and count it."""
    sink = peers.tls_sink(*pki["self"], handshake="refuse")
    d = relay_daemon(daemons, sink.port, tls=mode)
    content = tagged_message("refused-" + mode)
    qid = send_one(d, content)
    ev = wait_events(d, "relay_tls_failed")
    assert ev[0]["stage"] == "starttls" and "454 4.7.0" in ev[0]["error"], ev
    assert tls_counts(d)["failure"] >= 1
    if mode == "may":
        wait_delivered(d, {qid: ["r@example.net"]})
        tx = wait_transactions(sink, 1)[0]
        assert tx.tls is None
        wire_content(tx, content)
        conns = sink.conns_snapshot()
        assert len(conns) == 1 and conns[0].starttls and conns[0].ehlos == 1, conns
    else:
        check_deferred(d, sink, qid, r"4\.7\.5 TLS is required, but host \S+ refused to start "
                                     r"TLS: 454 4\.7\.0")


def test_reload_switches_mode(peers, daemons, pki):
    """SIGHUP: the new [relay] tls applies to the next connections (a cached connection keeps
    the TLS it has; the test waits for it to end)."""
    sink = peers.tls_sink(*pki["self"])
    d = relay_daemon(daemons, sink.port, tls="may")
    q1 = send_one(d, tagged_message("before-reload"))
    wait_delivered(d, {q1: ["r@example.net"]})
    assert wait_for(lambda: all(c.done for c in sink.conns_snapshot()), 20 * SLACK)
    d.set("relay", "tls", "none")
    d.write_config()
    d.signal(signal.SIGHUP)
    wait_events(d, "reloaded")
    q2 = send_one(d, tagged_message("after-reload"))
    wait_delivered(d, {q2: ["r@example.net"]})
    txs = wait_transactions(sink, 2)
    assert [tx.tls for tx in txs] == ["TLSv1.3", None], [tx.tls for tx in txs]
    assert len(starttls_conns(sink)) == 1, sink.conns_snapshot()


# ---------------------------------------------------------------------------------------------
# encrypt

def check_deferred(d, sink, qid, reason_re):
    """qid was deferred for reason_re (log and ringctl queue) and nothing reached the sink."""
    ev = wait_events(d, "deferred", id=qid)
    assert re.search(reason_re, ev[0].get("reason", "")), ev
    entries, _ = ringctl_queue(d)
    assert qid in entries, entries
    assert entries[qid].last and re.search(reason_re, entries[qid].last), entries[qid]
    assert not events(d, "delivered")
    assert not sink.transactions, sink.transactions
    assert not any(l.upper().startswith(b"MAIL") for c in sink.conns_snapshot()
                   for l in c.commands)


def test_encrypt_not_offered_deferred(peers, daemons, pki):
    sink = peers.tls_sink(*pki["self"], starttls=False)
    d = relay_daemon(daemons, sink.port, tls="encrypt")
    qid = send_one(d, tagged_message("enc-notoffered"))
    check_deferred(d, sink, qid, r"4\.7\.4 TLS is required, but was not offered by host "
                                 r"\[127\.0\.0\.1\]:%d" % sink.port)
    assert d.metric("ringrelay_queue_messages") == 1
    assert tls_counts(d) == dict.fromkeys(RESULTS, 0.0)


def test_encrypt_handshake_failure_deferred(peers, daemons, pki):
    sink = peers.tls_sink(*pki["self"], handshake="garbage")
    d = relay_daemon(daemons, sink.port, tls="encrypt")
    qid = send_one(d, tagged_message("enc-garbage"))
    check_deferred(d, sink, qid, r"4\.7\.5 Cannot start TLS: handshake failure")
    ev = wait_events(d, "relay_tls_failed")
    assert ev[0]["next"] == "fail" and ev[0]["stage"] == "handshake", ev
    assert all(c.starttls for c in sink.conns_snapshot()), "a plaintext retry under encrypt"
    assert tls_counts(d)["failure"] >= 1


# ---------------------------------------------------------------------------------------------
# stalled handshakes

@pytest.mark.parametrize("mode", ["may", "encrypt"])
def test_stalled_handshake_times_out(peers, daemons, pki, mode):
    """The sink takes the ClientHello and answers nothing: the handshake deadline
    (command_timeout) ends it with a clean close, a log line and the timeout counter; may then
    delivers in plaintext, encrypt defers."""
    sink = peers.tls_sink(*pki["self"], handshake="stall", bad_conns=1)
    d = relay_daemon(daemons, sink.port, tls=mode, command_timeout="2s")
    content = tagged_message("stall-" + mode)
    qid = send_one(d, content)
    ev = wait_events(d, "relay_tls_failed", timeout=30)
    assert ev[0]["error"] == "timeout" and ev[0]["stage"] == "handshake", ev
    assert wait_for(lambda: sink.conns_snapshot()[0].peer_closed, 10 * SLACK), \
        "the relay did not close the stalled connection: %r" % sink.conns_snapshot()
    assert sink.conns_snapshot()[0].client_hello
    assert tls_counts(d)["timeout"] == 1
    if mode == "may":
        assert ev[0]["next"] == "plaintext_retry", ev
        wait_delivered(d, {qid: ["r@example.net"]})
        tx = wait_transactions(sink, 1)[0]
        assert tx.tls is None
        wire_content(tx, content)
    else:
        assert ev[0]["next"] == "fail", ev
        check_deferred(d, sink, qid, r"4\.7\.5 Cannot start TLS: handshake failure .*timeout")


def test_stalled_handshake_does_not_block_the_worker(peers, daemons, pki):
    """One worker; the MX of one domain stalls in the handshake until the test lets it go.
    Meanwhile the worker accepts and delivers mail for another domain over TLS. Released,
    the stalled peer closes: a handshake failure, then plaintext delivery."""
    port = common_port(["127.0.0.2", "127.0.0.3"])
    stall = peers.tls_sink(*pki["self"], host="127.0.0.2", port=port, handshake="stall",
                           bad_conns=1)
    good = peers.tls_sink(*pki["self"], host="127.0.0.3", port=port)
    dns = peers.dns(mx=[("stall.rr.test", "mx-stall.rr.test", 10),
                        ("good.rr.test", "mx-good.rr.test", 10)],
                    hosts=[("mx-stall.rr.test", "127.0.0.2"), ("mx-good.rr.test", "127.0.0.3")])
    d = relay_daemon(daemons, None, server={"workers": 1}, port=port,
                     dns_servers="127.0.0.1:%d" % dns.port, tls="may",
                     command_timeout="%ds" % int(300 * SLACK))
    q1 = send_one(d, tagged_message("stalled"), rcpts=["x@stall.rr.test"])
    assert wait_for(lambda: stall.conns_snapshot() and stall.conns_snapshot()[0].client_hello,
                    20 * SLACK), stall.conns_snapshot()
    q2 = send_one(d, tagged_message("meanwhile"), rcpts=["y@good.rr.test"])
    wait_delivered(d, {q2: ["y@good.rr.test"]})
    assert wait_transactions(good, 1)[0].tls == "TLSv1.3"
    c0 = stall.conns_snapshot()[0]
    assert not c0.peer_closed and not c0.done, c0   # still in its handshake
    assert not events(d, "relay_tls_failed") and not events(d, "delivered", id=q1)
    stall.release()
    wait_delivered(d, {q1: ["x@stall.rr.test"]})
    assert wait_transactions(stall, 1)[0].tls is None
    ev = events(d, "relay_tls_failed")
    assert len(ev) == 1 and ev[0]["next"] == "plaintext_retry", ev
    counts = tls_counts(d)
    assert counts["failure"] == 1 and counts["timeout"] == 0 and counts["success"] >= 1, counts


# ---------------------------------------------------------------------------------------------
# a bad record after the handshake

def test_bad_record_after_handshake(peers, daemons, pki):
    """The first connection's peer puts bytes that are no TLS record on the wire at MAIL: the
    connection ends (logged, counted), the message is deferred and then delivered over TLS."""
    sink = peers.tls_sink(*pki["self"], handshake="badrecord", bad_conns=1)
    d = relay_daemon(daemons, sink.port, tls="may")
    content = tagged_message("badrecord")
    qid = send_one(d, content)
    ev = wait_events(d, "relay_tls_failed")
    assert ev[0]["stage"] == "session" and ev[0]["next"] == "fail", ev
    wait_events(d, "deferred", id=qid)
    wait_delivered(d, {qid: ["r@example.net"]})
    tx = wait_transactions(sink, 1)[0]
    assert tx.tls == "TLSv1.3"
    wire_content(tx, content)
    counts = tls_counts(d)
    assert counts["failure"] == 1 and counts["success"] >= 2, counts


# ---------------------------------------------------------------------------------------------
# verify

def verify_world(peers, daemons, pki, cert, ca, smarthost=None, mx=False):
    """A TlsSink with cert; the relay in verify mode with CA file ca, reaching the sink as
    sink.rr.test (smarthost by name), as the MX host mx1.rr.test of v.rr.test (mx), or as
    the given smarthost."""
    if mx:
        port = common_port(["127.0.0.2"])
        sink = peers.tls_sink(*pki[cert], host="127.0.0.2", port=port)
    else:
        sink = peers.tls_sink(*pki[cert])
    dns = peers.dns(mx=[("v.rr.test", "mx1.rr.test", 10)],
                    hosts=[("sink.rr.test", "127.0.0.1"), ("mx1.rr.test", "127.0.0.2")])
    relay = {"tls": "verify", "tls_ca_file": pki[ca][0],
             "dns_servers": "127.0.0.1:%d" % dns.port}
    if mx:
        d = relay_daemon(daemons, None, port=port, **relay)
    else:
        d = relay_daemon(daemons, None, smarthost=(smarthost or "sink.rr.test:%d") % sink.port,
                         **relay)
    return sink, d


@pytest.mark.parametrize("route", ["smarthost", "mx"])
def test_verify_delivers_with_ca_and_name(peers, daemons, pki, route):
    mx = route == "mx"
    sink, d = verify_world(peers, daemons, pki, "mx" if mx else "leaf", "ca", mx=mx)
    rcpt = "r@v.rr.test" if mx else "r@example.net"
    content = tagged_message("verify-" + route)
    qid = send_one(d, content, rcpts=[rcpt])
    wait_delivered(d, {qid: [rcpt]})
    tx = wait_transactions(sink, 1)[0]
    assert tx.tls == "TLSv1.3"
    wire_content(tx, content)
    name = "mx1.rr.test" if mx else "sink.rr.test"
    assert starttls_conns(sink)[0].sni == name, starttls_conns(sink)
    ev = wait_events(d, "relay_tls")
    assert ev[0]["verified"] == "yes" and ev[0]["remote"].startswith(name + "["), ev
    assert tls_counts(d)["success"] >= 1


@pytest.mark.parametrize("cert,ca,smarthost", [
    ("leaf", "other_ca", None),               # the chain leads to a CA not in the file
    ("wrongname", "ca", None),                # right CA, the certificate names another host
    ("leaf", "ca", "[127.0.0.1]:%d"),         # an [address] has no name to match
])
def test_verify_failure_deferred(peers, daemons, pki, cert, ca, smarthost):
    sink, d = verify_world(peers, daemons, pki, cert, ca, smarthost=smarthost)
    qid = send_one(d, tagged_message("verify-fail"))
    check_deferred(d, sink, qid, r"4\.7\.5 Cannot start TLS: handshake failure")
    ev = wait_events(d, "relay_tls_failed")
    assert ev[0]["next"] == "fail", ev
    assert all(c.starttls and c.tls is None for c in sink.conns_snapshot()), \
        sink.conns_snapshot()
    if smarthost:
        assert all(c.sni is None for c in sink.conns_snapshot())
    counts = tls_counts(d)
    assert counts["failure"] >= 1 and counts["success"] == 0, counts
