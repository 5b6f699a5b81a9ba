"""The relaying notice (issue 5), end to end: a real daemon in relay_mode = notify with
passwd-file AUTH and a hosted_domains file, delivering to an smtp-sink.

  - An authenticated client sends from a domain we do not host: the message is accepted and
    delivered, and exactly one notice reaches the sink: from <>, to the login's address,
    From postmaster@hostname, Subject "Notification of Relaying from 127.0.0.1",
    Auto-Submitted, every placeholder filled (no '{' left), event=notified and
    ringrelay_relay_notifications_total.
  - More messages within notify_interval, on connections that land on both workers (the
    client moves between the workers' CPUs; the queue id says which worker took a
    message): still one notice. The daemon runs with -v,
    so every further call logs event=notify_claimed_before: the test waits for those, not
    for time.
  - {registered_to}: the host_registry owner; without a registry, the forward-confirmed
    reverse DNS name (a dnsmasq peer answers the PTR of 127.0.0.1), also for many notices
    at once; "unknown" when the resolver does not answer.
  - A login without '@' gets its notice at login@hostname; an operator's template is used
    and {help} is relay_help.
  - After relay_enforce_after (set in the past, then SIGHUP): the same message is refused
    with 553 5.7.1 and no notice is made.
  - -t reports an unknown placeholder of the template as FILE:LINE.

Needs the session wiring (net/smtp_commands.c calling notify_relaying after the 250) and
resources_load() calling notify_template_load(). No assertion is about time.
"""
import base64
import os
import re
import signal
import socket
import subprocess

import pytest

from conftest import RINGRELAY_BIN, SLACK, child_env, make_message, queued_id, wait_for
from peers import events, relay_sections, wait_events, wait_metric

HOSTNAME = "relay.test.example"
LOGIN = "jdoe@customer.example"
PASSWORD = "s3cret"
SENDER = "someone@elsewhere.example"
REGISTRY_OWNER = "Loopback Test Networks Ltd (test pool)"
ENFORCE = "2099-01-01"
WORKERS = 2

pytestmark = pytest.mark.relay


def plain(user, password):
    return base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()


def start(daemons, peers, tmp_path, registry=True, dns=None, policy=None, args=("-v",),
          leaks=False):
    """A daemon in notify mode delivering to a fresh smtp-sink; returns (daemon, sink).
    leaks: LeakSanitizer at exit (sanitizer builds)."""
    sink = peers.sink()
    passwd = tmp_path / "passwd"
    passwd.write_text("%s:{PLAIN}%s\nalice:{PLAIN}%s\n" % (LOGIN, PASSWORD, PASSWORD))
    hosted = tmp_path / "hosted"
    hosted.write_text("customer.example\n")
    pol = {"relay_mode": "notify", "relay_enforce_after": ENFORCE,
           "hosted_domains": str(hosted), "notify_interval": "1d"}
    if registry:
        reg = tmp_path / "registry"
        reg.write_text("# CIDR owner description\n10.0.0.0/8 Someone Else\n"
                       "127.0.0.0/8 %s\n" % REGISTRY_OWNER)
        pol["host_registry"] = str(reg)
    pol.update(policy or {})
    relay = relay_sections(sink.port)
    if dns is not None:
        relay["dns_servers"] = "127.0.0.1:%d" % dns.port
    d = daemons(start=False, args=args, server={"hostname": HOSTNAME, "workers": WORKERS},
                auth={"passwd_file": str(passwd), "plaintext": "yes"},
                policy=pol, relay=relay, **{"listener.main": {"auth": "optional"}})
    d.leaks = leaks
    d.start()
    return d, sink


def relay_one(d, login=LOGIN, sender=SENDER, tag="m"):
    """One message from sender on a fresh connection, authenticated as login; its queue id."""
    with d.client() as c:
        c.ehlo()
        r = c.cmd("AUTH PLAIN " + plain(login, PASSWORD))
        assert r.code == 235, r
        qid = queued_id(c.send_message(make_message("relayed " + tag,
                                                    headers={"X-Test-Id": tag}),
                                       mail_from=sender, rcpts=("rcpt@example.net",)))
    return qid


def worker_of(qid):
    """The worker that accepted a message: bits 14-19 of its queue id (core/spool_writer.c)."""
    return (int(qid, 16) >> 14) & 63


def notices(sink):
    return sink.find(b"Subject: Notification of Relaying from ")


def check_notice(dump, login_addr, registered_to, help_text=None, sender=SENDER, login=LOGIN):
    """dump is a relaying notice to login_addr with every placeholder filled."""
    assert dump.mail_from == "", "a notice comes from <>: %r" % dump
    assert dump.rcpts == [login_addr], dump
    msg = dump.message()
    assert msg["From"] == "postmaster@" + HOSTNAME, msg["From"]
    assert msg["To"] == login_addr, msg["To"]
    assert msg["Subject"] == "Notification of Relaying from 127.0.0.1", msg["Subject"]
    assert msg["Auto-Submitted"] == "auto-generated", msg["Auto-Submitted"]
    assert msg["Date"] and msg["Message-ID"], msg.items()
    assert msg.get_content_type() == "text/plain", msg.get_content_type()
    body = msg.get_payload(decode=True).decode("utf-8")
    assert "{" not in body and "}" not in body, "a placeholder is left:\n" + body
    for value in ("127.0.0.1", sender, login, registered_to, HOSTNAME, ENFORCE,
                  help_text or "postmaster@" + HOSTNAME):
        assert value in body, "%r is missing from the notice:\n%s" % (value, body)
    # {date}: when the relayed message was sent, an RFC 5322 date
    assert re.search(r"on (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d [A-Z][a-z]{2} \d{4} "
                     r"\d\d:\d\d:\d\d \+0000,", body), body
    return body


def wait_claims(d, count):
    """Every notify_relaying call so far was decided: one notice claimed, count refused."""
    wait_events(d, "notified", 1)
    wait_events(d, "notify_claimed_before", count)


def test_one_notice_across_workers(daemons, peers, tmp_path):
    d, sink = start(daemons, peers, tmp_path)
    first = relay_one(d, tag="first")
    # the message itself is accepted and delivered, and one notice arrives
    sink.wait_find(b"X-Test-Id: first")
    got = sink.wait_find(b"Subject: Notification of Relaying from ")
    check_notice(got[0], LOGIN, REGISTRY_OWNER)
    ev = wait_events(d, "notified", 1)[0]
    assert ev["login"] == LOGIN and ev["domain"] == "elsewhere.example", ev
    assert ev["ip"] == "127.0.0.1" and ev.get("id"), ev
    wait_metric(d, "ringrelay_relay_notifications_total", lambda v: v == 1)

    # more within the interval, each on its own connection, until both workers accepted
    # some (and at least three more): still one notice. A connection is served by the
    # worker of the CPU that received it (over loopback, the client's), so the client
    # moves between the workers' CPUs: the first WORKERS this process may run on.
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < WORKERS:
        pytest.skip("needs %d CPUs to reach both workers" % WORKERS)
    seen = {worker_of(first)}
    tags = []
    try:
        while len(tags) < 40 and (len(seen) < WORKERS or len(tags) < 3):
            os.sched_setaffinity(0, {cpus[len(tags) % WORKERS]})
            tags.append("more%d" % len(tags))
            seen.add(worker_of(relay_one(d, tag=tags[-1])))
    finally:
        os.sched_setaffinity(0, cpus)
    assert seen == set(range(WORKERS)), "every message landed on worker(s) %r" % seen
    wait_claims(d, len(tags))
    for tag in tags:
        sink.wait_find(b"X-Test-Id: " + tag.encode())
    # every message and the notice delivered: nothing more is on its way
    wait_events(d, "delivered", len(tags) + 2)
    assert len(notices(sink)) == 1, notices(sink)
    assert len(events(d, "notified")) == 1
    assert d.metric("ringrelay_relay_notifications_total") == 1

    # another sender domain is another notice
    relay_one(d, sender="x@third.example", tag="third")
    wait_events(d, "notified", 2)
    got = wait_for(lambda: len(notices(sink)) == 2 and notices(sink), 20 * SLACK)
    assert got, notices(sink)
    assert len(events(d, "notified", domain="third.example")) == 1


def test_after_enforcement_date_refused(daemons, peers, tmp_path):
    d, sink = start(daemons, peers, tmp_path)
    relay_one(d, tag="before")
    sink.wait_find(b"Subject: Notification of Relaying from ")
    # the dated switch-over: relay_enforce_after in the past, reloaded
    d.set("policy", "relay_enforce_after", "2020-01-01")
    d.write_config()
    d.signal(signal.SIGHUP)
    wait_events(d, "reloaded", 1)
    with d.client() as c:
        c.ehlo()
        assert c.cmd("AUTH PLAIN " + plain(LOGIN, PASSWORD)).code == 235
        r = c.cmd("MAIL FROM:<%s>" % SENDER)
        assert r.code == 553 and r.last.startswith("553 5.7.1"), r
        # a hosted sender still goes
        assert c.cmd("MAIL FROM:<jdoe@customer.example>").code == 250
    assert len(events(d, "notified")) == 1
    assert len(notices(sink)) == 1


def test_registered_to_from_reverse_dns(daemons, peers, tmp_path):
    # no host_registry: the PTR of 127.0.0.1 (dnsmasq's probe.rr.test host record), checked
    # forward (probe.rr.test has the address 127.0.0.1)
    dns = peers.dns()
    d, sink = start(daemons, peers, tmp_path, registry=False, dns=dns)
    relay_one(d)
    got = sink.wait_find(b"Subject: Notification of Relaying from ")
    check_notice(got[0], LOGIN, "probe.rr.test")
    assert wait_events(d, "notified", 1)[0]["registered_to"] == "probe.rr.test"


def test_many_domains_share_the_lookups(daemons, peers, tmp_path):
    # one notice per sender domain; the PTR and forward lookups of their notices wait on one
    # lookup in flight or come from the cache
    dns = peers.dns()
    d, sink = start(daemons, peers, tmp_path, registry=False, dns=dns)
    count = 30
    with d.client() as c:
        c.ehlo()
        assert c.cmd("AUTH PLAIN " + plain(LOGIN, PASSWORD)).code == 235
        for i in range(count):
            queued_id(c.send_message(make_message("many %d" % i),
                                     mail_from="user@domain%d.example" % i,
                                     rcpts=("rcpt@example.net",)))
    wait_events(d, "notified", count)
    got = wait_for(lambda: len(notices(sink)) == count and notices(sink), 30 * SLACK)
    assert got, "%d notices of %d" % (len(notices(sink)), count)
    for dump in got:
        sender = re.search(r"user@domain\d+\.example", dump.content.decode()).group(0)
        check_notice(dump, LOGIN, "probe.rr.test", sender=sender)
    domains = sorted(ev["domain"] for ev in events(d, "notified"))
    assert domains == sorted("domain%d.example" % i for i in range(count)), domains


def test_registered_to_unknown(daemons, peers, tmp_path):
    # no registry and a resolver that knows nothing of 127.0.0.1's reverse zone
    dns = peers.dns()
    dns.stop()
    d, sink = start(daemons, peers, tmp_path, registry=False, dns=dns)
    relay_one(d)
    got = sink.wait_find(b"Subject: Notification of Relaying from ", timeout=60)
    check_notice(got[0], LOGIN, "unknown")


def test_bare_login_and_operator_template(daemons, peers, tmp_path):
    tmpl = tmp_path / "notice.txt"
    tmpl.write_text("Dear {login},\n{from} went out via {hostname} from {ip} "
                    "({registered_to}) on {date}.\nRefused from {enforce_date}.\n"
                    "Help: {help}\nLiteral braces stay: { } {{ip}}\n")
    d, sink = start(daemons, peers, tmp_path,
                    policy={"notify_template": str(tmpl), "relay_help": "https://isp.test/help"})
    relay_one(d, login="alice")
    got = sink.wait_find(b"Subject: Notification of Relaying from ")
    dump = got[0]
    assert dump.rcpts == ["alice@" + HOSTNAME], dump
    body = dump.message().get_payload(decode=True).decode()
    assert body.startswith("Dear alice,\n%s went out via %s from 127.0.0.1 (%s) on "
                           % (SENDER, HOSTNAME, REGISTRY_OWNER)), body
    assert "Help: https://isp.test/help\n" in body, body
    assert "Literal braces stay: { } {127.0.0.1}\n" in body, body


def test_check_reports_unknown_placeholder(tmp_path):
    tmpl = tmp_path / "notice.txt"
    tmpl.write_text("Hello {login},\nthis is {bogus}.\n")
    conf = tmp_path / "r.conf"
    conf.write_text("[server]\nspool_dir = %s\n[policy]\nnotify_template = %s\n"
                    % (tmp_path / "spool", tmpl))
    r = subprocess.run([RINGRELAY_BIN, "-t", "-c", str(conf)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30 * SLACK, env=child_env())
    assert r.returncode != 0, r
    assert ("%s:2: unknown placeholder {bogus}" % tmpl) in r.stderr.decode(), r.stderr


class Blackhole:
    """A DNS server that takes every query and answers none: a lookup stays in flight until
    the resolver gives up."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def wait_query(self, timeout):
        """The next query that arrives (bounded wait)."""
        self.sock.settimeout(timeout)
        return self.sock.recv(4096)

    def close(self):
        self.sock.close()


def test_stop_while_the_notice_waits_for_dns(daemons, peers, tmp_path):
    # SIGTERM while the notice's PTR lookup is unanswered: a clean exit (0, no sanitizer
    # report, no leak), the relayed message delivered
    hole = Blackhole()
    try:
        d, sink = start(daemons, peers, tmp_path, registry=False, dns=hole, leaks=True)
        relay_one(d, tag="stop")
        hole.wait_query(20 * SLACK)               # the PTR query is out, and stays so
        sink.wait_find(b"X-Test-Id: stop")
        assert d.stop(timeout=30) == 0, d.log[-4000:]
    finally:
        hole.close()
    assert "event=bug" not in d.log


def test_reload_while_the_notice_waits_for_dns(daemons, peers, tmp_path):
    # SIGHUP with other dns_servers while the PTR lookup waits: the query moves to the new
    # servers (or, if the first gave up meanwhile, the notice says "unknown"); one notice
    hole = Blackhole()
    dns = peers.dns()
    try:
        d, sink = start(daemons, peers, tmp_path, registry=False, dns=hole, leaks=True)
        relay_one(d, tag="reload")
        hole.wait_query(20 * SLACK)
        d.set("relay", "dns_servers", "127.0.0.1:%d" % dns.port)
        d.write_config()
        d.signal(signal.SIGHUP)
        wait_events(d, "reloaded", 1)
        ev = wait_events(d, "notified", 1, timeout=60)[0]
        assert ev["registered_to"] in ("probe.rr.test", "unknown"), ev
        got = sink.wait_find(b"Subject: Notification of Relaying from ", timeout=60)
        check_notice(got[0], LOGIN, ev["registered_to"])
        assert d.stop(timeout=30) == 0, d.log[-4000:]
    finally:
        hole.close()
    assert len(events(d, "notified")) == 1


def test_registry_and_template_reload_on_sighup(daemons, peers, tmp_path):
    d, sink = start(daemons, peers, tmp_path)
    relay_one(d, sender="a@first.example", tag="first")
    check_notice(sink.wait_find(b"Subject: Notification of Relaying from ")[0], LOGIN,
                 REGISTRY_OWNER, sender="a@first.example")
    (tmp_path / "registry").write_text("127.0.0.0/8 Renumbered Owner Ltd\n")
    tmpl = tmp_path / "notice.txt"
    tmpl.write_text("Reloaded template: {from} via {ip} ({registered_to}).\n")
    d.set("policy", "notify_template", str(tmpl))
    d.write_config()
    d.signal(signal.SIGHUP)
    wait_events(d, "reloaded", 1)
    relay_one(d, sender="b@second.example", tag="second")
    wait_events(d, "notified", 2)
    got = wait_for(lambda: len(notices(sink)) == 2 and notices(sink), 20 * SLACK)
    assert got, notices(sink)
    bodies = [g.message().get_payload(decode=True).decode() for g in got]
    assert ("Reloaded template: b@second.example via 127.0.0.1 (Renumbered Owner Ltd).\n"
            in bodies), bodies
