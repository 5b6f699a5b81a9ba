"""Outbound delivery by MX lookup: dnsmasq answers for the zone rr.test on a high loopback port
(relay.dns_servers), smtp-sinks listen on 127.0.0.x, all on one port (relay.port).

  mx.rr.test      MX 10 mail.rr.test       -> 127.0.0.2 (sink "good")
  sender.rr.test  MX 10 mail.rr.test       -> 127.0.0.2 (the senders' domain: bounces land here)
  two.rr.test     MX 10 dead.rr.test       -> 127.0.0.3 (nothing listens)
                  MX 20 backup.rr.test     -> 127.0.0.4 (sink "backup")
  aonly.rr.test   no MX, A 127.0.0.5       (implicit MX; sink "aonly")
  reject.rr.test  MX 10 rejecting.rr.test  -> 127.0.0.6 (sink "reject": 550 to every RCPT)
  null.rr.test    MX 0 .                   (RFC 7505 null MX: bounce)
  nx.rr.test      NXDOMAIN                 (bounce)
  stuck.rr.test   MX 10 dead.rr.test       -> 127.0.0.3 (nothing listens: deferred)
"""
import time

import pytest

from conftest import SLACK, queued_id, wait_for
from peers import (check_dsn, common_port, deliveries, events, lf, marker, relay_sections,
                   same_message, send_one, tagged_message, wait_delivered, wait_events,
                   wait_queue_empty)

pytestmark = pytest.mark.relay

SENDER = "someone@sender.rr.test"
MX = [("mx.rr.test", "mail.rr.test", 10), ("sender.rr.test", "mail.rr.test", 10),
      ("two.rr.test", "dead.rr.test", 10), ("two.rr.test", "backup.rr.test", 20),
      ("reject.rr.test", "rejecting.rr.test", 10), ("stuck.rr.test", "dead.rr.test", 10)]
HOSTS = [("mail.rr.test", "127.0.0.2"), ("dead.rr.test", "127.0.0.3"),
         ("backup.rr.test", "127.0.0.4"), ("aonly.rr.test", "127.0.0.5"),
         ("rejecting.rr.test", "127.0.0.6")]
NULL_MX = ["null.rr.test"]


class World:
    def __init__(self, peers, daemons, dns_running=True, **relay):
        self.port = common_port(["127.0.0.%d" % i for i in range(1, 7)])
        self.good = peers.sink(host="127.0.0.2", port=self.port, name="good")
        self.backup = peers.sink(host="127.0.0.4", port=self.port, name="backup")
        self.aonly = peers.sink(host="127.0.0.5", port=self.port, name="aonly")
        self.reject = peers.sink("-f", "rcpt", "-B", "550 5.1.1 No such user here",
                                 host="127.0.0.6", port=self.port, name="reject")
        self.dns = peers.dns(mx=MX, hosts=HOSTS, null_mx=NULL_MX, start=dns_running)
        self.dns.choose_port()
        self.d = daemons(relay=relay_sections(port=self.port,
                                              dns_servers="127.0.0.1:%d" % self.dns.port,
                                              **relay))

    def sinks(self):
        return [self.good, self.backup, self.aonly, self.reject]

    def where(self, tag):
        """Names of the sinks that got an original (non-bounce) transaction with tag."""
        return sorted(s.name for s in self.sinks()
                      for x in s.find(marker(tag)) if x.mail_from != "")

    def bounces(self):
        return [x for x in self.good.dumps() if x.mail_from == ""]


def relay_host(ev):
    return ev.get("relay", "")


def check_one_delivery(w, tag, rcpt, sink, names):
    content = tagged_message(tag)
    qid = send_one(w.d, content, mail_from=SENDER, rcpts=[rcpt])
    wait_delivered(w.d, {qid: [rcpt]})
    got = sink.wait_find(marker(tag))
    assert len(got) == 1 and got[0].rcpts == [rcpt], got
    assert same_message(got[0].content, lf(content))
    assert w.where(tag) == [sink.name], w.where(tag)
    ev = events(w.d, "delivered", id=qid)[0]
    assert relay_host(ev).endswith(":%d" % w.port), ev
    assert any(n in relay_host(ev) for n in names), ev
    wait_queue_empty(w.d)
    return qid


def test_mx_delivery(peers, daemons):
    w = World(peers, daemons)
    check_one_delivery(w, "mx", "user@mx.rr.test", w.good, ("mail.rr.test", "127.0.0.2"))
    assert "query[MX] mx.rr.test" in w.dns.log


def test_best_mx_dead_second_mx_used(peers, daemons):
    w = World(peers, daemons)
    qid = check_one_delivery(w, "two", "user@two.rr.test", w.backup,
                             ("backup.rr.test", "127.0.0.4"))
    assert not events(w.d, "bounced", id=qid)


def test_implicit_mx_from_a_record(peers, daemons):
    w = World(peers, daemons)
    check_one_delivery(w, "aonly", "user@aonly.rr.test", w.aonly,
                       ("aonly.rr.test", "127.0.0.5"))


@pytest.mark.parametrize("domain", ["null.rr.test", "nx.rr.test"])
def test_undeliverable_domain_bounces_to_sender(peers, daemons, domain):
    w = World(peers, daemons)
    rcpt = "user@" + domain
    tag = "bounce-" + domain.split(".")[0]
    qid = send_one(w.d, tagged_message(tag), mail_from=SENDER, rcpts=[rcpt])
    ev = wait_events(w.d, "bounced", id=qid)[0]
    assert ev["to"] == "<%s>" % rcpt
    assert not events(w.d, "deferred", id=qid), "a permanent DNS answer must not be retried"
    got = wait_for(w.bounces, 20 * SLACK, interval=0.1)
    assert got and len(got) == 1, got
    check_dsn(got[0], SENDER, [rcpt], marker(tag), status_class="5")
    assert w.where(tag) == []
    wait_queue_empty(w.d)


def test_5xx_bounce_reaches_sender(peers, daemons):
    """Recipient domain routed to a sink that says 550, sender domain to a good one: the
    bounce arrives at the good sink, with the remote reply in it."""
    w = World(peers, daemons)
    rcpt = "gone@reject.rr.test"
    qid = send_one(w.d, tagged_message("rejected"), mail_from=SENDER, rcpts=[rcpt])
    ev = wait_events(w.d, "bounced", id=qid)[0]
    assert "550" in ev.get("reason", ""), ev
    got = wait_for(w.bounces, 20 * SLACK, interval=0.1)
    assert got and len(got) == 1, got
    ds = check_dsn(got[0], SENDER, [rcpt], marker("rejected"), status_class="5")
    assert "No such user here" in ds, ds[:3000]
    assert "5.1.1" in ds
    wait_queue_empty(w.d)
    assert deliveries(w.d, "bounced") >= 1
    assert deliveries(w.d, "delivered") >= 1          # the bounce itself


def test_mixed_recipients(peers, daemons):
    """One message, five recipients in five domains: each good one delivered to its own next
    hop, only the two failed ones reported to the sender."""
    w = World(peers, daemons)
    good = {"a@mx.rr.test": w.good, "b@two.rr.test": w.backup, "c@aonly.rr.test": w.aonly}
    failed = ["d@null.rr.test", "e@nx.rr.test"]
    content = tagged_message("mixed")
    qid = send_one(w.d, content, mail_from=SENDER, rcpts=list(good) + failed)
    wait_delivered(w.d, {qid: list(good)})
    for rc in failed:
        wait_events(w.d, "bounced", id=qid, to=rc)
    for rc, sink in good.items():
        got = [x for x in sink.wait_find(marker("mixed")) if x.mail_from == SENDER]
        assert len(got) == 1 and got[0].rcpts == [rc], (rc, got)
        assert same_message(got[0].content, lf(content))
    # every failed recipient is in a bounce; no delivered one is
    bounces = wait_for(lambda: (sum(len([rc for rc in failed
                                         if rc.encode() in b.content]) for b in w.bounces())
                                >= len(failed)) and w.bounces(), 20 * SLACK, 0.1)
    assert bounces, w.bounces()
    for b in bounces:
        mine = [rc for rc in failed if rc.encode() in b.content]
        check_dsn(b, SENDER, mine, marker("mixed"), status_class="5")
        for rc in good:
            assert ("Final-Recipient: rfc822; " + rc).encode() not in b.content, rc
    wait_queue_empty(w.d)


def test_dns_down_defers_then_delivers(peers, daemons):
    w = World(peers, daemons, dns_running=False)
    qid = send_one(w.d, tagged_message("dnsdown"), mail_from=SENDER, rcpts=["u@mx.rr.test"])
    wait_events(w.d, "deferred", id=qid, timeout=40)
    assert not events(w.d, "bounced", id=qid), "no DNS answer is a temporary failure"
    assert not events(w.d, "delivered")
    w.dns.start()
    wait_delivered(w.d, {qid: ["u@mx.rr.test"]}, timeout=40)
    assert w.where("dnsdown") == ["good"]
    wait_queue_empty(w.d)
    time.sleep(0.2)
    assert not events(w.d, "bounced")


def seg_files(d):
    import os
    spool = d.sections["server"]["spool_dir"]
    return {f for f in os.listdir(spool) if f.endswith(".seg")}


def test_deferred_message_does_not_pin_later_segments(peers, daemons):
    """A message whose destination is down stays queued while much more mail is delivered:
    its outcomes live in its own segment, so only that segment (and the one being written)
    stays on disk, not every segment written after it."""
    port = common_port(["127.0.0.2", "127.0.0.3"])
    good = peers.sink(host="127.0.0.2", port=port, name="good")
    dns = peers.dns(mx=MX, hosts=HOSTS, null_mx=NULL_MX)
    d = daemons(relay=relay_sections(port=port, dns_servers="127.0.0.1:%d" % dns.port,
                                     retry_min="1h", retry_max="1h"),
                server={"segment_size": "64K", "workers": 1})
    stuck = send_one(d, tagged_message("stuck"), rcpts=("u@stuck.rr.test",))
    wait_events(d, "deferred", id=stuck, timeout=20 * SLACK)
    body = ["line %03d %s" % (i, "p" * 60) for i in range(80)]  # ~6 KB each
    want, seen = {}, set()
    with d.client() as c:
        c.ehlo()
        for i in range(60):
            r = c.send_message(tagged_message("pin-%d" % i, body), rcpts=["p%d@mx.rr.test" % i])
            assert r.code == 250, r
            want[queued_id(r)] = ["p%d@mx.rr.test" % i]
            seen |= seg_files(d)
    assert len(seen) >= 4, "segments did not rotate: %s" % sorted(seen)
    wait_delivered(d, want, timeout=60 * SLACK)

    def few():
        return len(seg_files(d)) <= 3  # the stuck message's, the current, one prepared
    assert wait_for(few, 30 * SLACK, interval=0.2), \
        "segments pinned by one deferred message: %s" % sorted(seg_files(d))
    # the deferred message is still there, with its recipient open
    out = d.ringctl("queue").stdout.decode()
    assert stuck in out and "u@stuck.rr.test" in out, out
    # and survives a restart with its segment
    d.stop()
    d.start()
    out = d.ringctl("queue").stdout.decode()
    assert stuck in out, out
