"""
The relay policy with real clients (issue 5): who may relay, the sender rules of an
authenticated customer in each relay_mode, address tricks, the 452 beyond max_recipients
followed by a real client, the hourly limits hit and recovered, reload of the maps, and the
reply, log line and counter of every refusal. The table of every rule is in
tests/unit/test_policy.c; here each path is shown once through the daemon.
"""
import base64
import os
import signal
import smtplib
import subprocess

import pytest

from conftest import SLACK, free_port, make_message, wait_for
from peers import events, relay_sections, wait_delivered

HOSTED = ["hosted.example", "shop.example"]
LOGINS = [
    "@hosted.example  alice",
    "bob@shop.example bob",
    "@shop.example    alice, carol",
]


def write(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def policy_daemon(daemons, tmp_path, policy=None, listener=None, sink_port=None, **sections):
    d = str(tmp_path)
    users = write(os.path.join(d, "users"),
                  ["alice:{PLAIN}alice-pw", "bob:{PLAIN}bob-pw", "carol:{PLAIN}carol-pw"])
    pol = {
        "hosted_domains": write(os.path.join(d, "hosted"), HOSTED),
        "sender_logins": write(os.path.join(d, "logins"), LOGINS),
        "trusted_networks": "10.99.0.0/16",       # loopback clients are outside
        "relay_mode": "reject",
        "relay_help": "https://help.isp.example/relaying",
    }
    pol.update(policy or {})
    lst = {"auth": "optional"}
    lst.update(listener or {})
    if sink_port:
        sections["relay"] = relay_sections(sink_port)
    return daemons(auth={"passwd_file": users, "plaintext": "yes"}, policy=pol,
                   **{"listener.main": lst}, **sections)


def login(c, user):
    r = c.cmd("AUTH PLAIN " + base64.b64encode(
        ("\0%s\0%s-pw" % (user, user)).encode()).decode())
    assert r.code == 235, r


def session(d, user=None):
    c = d.client()
    c.ehlo()
    if user:
        login(c, user)
    return c


def rejected(d, reason):
    return d.metric("ringrelay_messages_rejected_total", {"reason": reason}, 0)


def mail(c, sender):
    return c.cmd("MAIL FROM:<%s>" % sender)


# ---- who may relay ----

# Every trick an address can play; none is delivered locally, so each is simply denied.
RELAY_TRICKS = [
    "x@example.net",
    "postmaster@hosted.example",
    "postmaster",                                  # RFC 5321 4.1.1.3: no domain
    "X@HOSTED.Example",                            # mixed case
    "x%example.net@hosted.example",                # % hack
    "example.net!x@hosted.example",                # bang path
    '"x@example.net"@hosted.example',              # quoted local part holding @
    "@hosted.example:x@example.net",               # source route
    "@a.example,@hosted.example:x@example.net",
    "x@[127.0.0.1]",                               # address literals
    "x@[IPv6:::1]",
    "x@localhost",
]


def test_unauthenticated_outside_trusted_networks_is_denied(daemons, tmp_path):
    d = policy_daemon(daemons, tmp_path)
    c = session(d)
    assert mail(c, "anyone@hosted.example").code == 250
    for rcpt in RELAY_TRICKS:
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        assert r.code == 554, (rcpt, r)
        assert r.last.startswith("554 5.7.1") and "Relay access denied" in r.last, r
    r = c.cmd("RCPT TO:<x@example.net.>")           # trailing dot: refused either way
    assert r.code in (501, 554), r
    denied = len(RELAY_TRICKS) + (r.code == 554)
    assert c.cmd("DATA").code == 554            # no valid recipients
    c.quit()
    assert d.metric("ringrelay_recipients_rejected_total", {"reason": "relay_denied"}) == denied
    ev = events(d, "rejected", reason="relay_denied")
    assert len(ev) == denied and all(e["code"] == "554" for e in ev), ev


def test_trusted_network_relays_without_auth(daemons, tmp_path):
    d = policy_daemon(daemons, tmp_path, policy={"trusted_networks": "127.0.0.0/8"})
    c = session(d)
    assert c.send_message(make_message("web form"), mail_from="form@anything.example").code == 250
    c.quit()


def test_auth_required_listener(daemons, tmp_path):
    d = policy_daemon(daemons, tmp_path, policy={"trusted_networks": "127.0.0.0/8"},
                      listener={"auth": "required"})
    c = session(d)
    r = mail(c, "alice@hosted.example")
    assert r.code == 530 and r.last.startswith("530 5.7.0"), r
    login(c, "alice")
    assert mail(c, "alice@hosted.example").code == 250
    c.quit()


# ---- sender rules ----

def test_owned_sender_accepted_and_login_recorded(daemons, tmp_path):
    d = policy_daemon(daemons, tmp_path)
    c = session(d, "alice")
    assert c.send_message(make_message("own"), mail_from="Alice.Smith@HOSTED.example").code == 250
    assert c.send_message(make_message("bounce"), mail_from="").code == 250   # <> is fine
    c.quit()
    (env, _), _ = sorted(d.export(), key=lambda m: m[0]["from"], reverse=True)
    assert env["login"] == "alice"


def test_hosted_sender_of_someone_else(daemons, tmp_path):
    d = policy_daemon(daemons, tmp_path)
    c = session(d, "bob")
    r = mail(c, "alice@hosted.example")
    assert r.code == 553 and r.last.startswith("553 5.7.1"), r
    assert "not owned by user bob" in r.last, r
    # exact address beats @domain: bob owns bob@shop.example, not carol's rest of shop
    assert mail(c, "bob@shop.example").code == 250
    c.cmd("RSET")
    assert mail(c, "sales@shop.example").code == 553
    c.quit()
    assert rejected(d, "not_owned") == 2
    assert "reason=not_owned" in d.log


@pytest.mark.parametrize("sender", [
    '"alice@hosted.example"@elsewhere.example',
    "alice%hosted.example@elsewhere.example",
    "hosted.example!alice@elsewhere.example",
    "@hosted.example:alice@elsewhere.example",
    "alice@hosted.example.elsewhere.example",
])
def test_address_tricks_are_judged_by_the_real_domain(daemons, tmp_path, sender):
    d = policy_daemon(daemons, tmp_path)
    c = session(d, "alice")
    r = mail(c, sender)
    assert r.code in (553, 501), r
    if r.code == 553:
        assert "elsewhere.example" in r.last and "not hosted" in r.last, r
    c.quit()


def test_relay_mode_allow(daemons, tmp_path):
    d = policy_daemon(daemons, tmp_path, policy={"relay_mode": "allow"})
    c = session(d, "alice")
    assert c.send_message(make_message("allowed"), mail_from="me@gmail.example").code == 250
    c.quit()


def test_relay_mode_reject_says_why_and_where(daemons, tmp_path):
    d = policy_daemon(daemons, tmp_path)
    c = session(d, "alice")
    r = mail(c, "me@gmail.example")
    assert r.code == 553 and r.last.startswith("553 5.7.1"), r
    assert "gmail.example" in r.last and "https://help.isp.example/relaying" in r.last, r
    c.quit()
    assert rejected(d, "relaying_refused") == 1
    ev = events(d, "rejected")
    assert any(e.get("code") == "553" and e.get("reason") == "relaying_refused" for e in ev), ev


def test_notify_mode_switches_to_reject_on_the_date(daemons, tmp_path):
    d = policy_daemon(daemons, tmp_path, policy={"relay_mode": "notify",
                                                 "relay_enforce_after": "2099-01-01"})
    c = session(d, "alice")
    assert mail(c, "me@gmail.example").code == 250
    c.quit()
    d.stop()
    d.set("policy", "relay_enforce_after", "2020-01-01")
    d.start()
    c = session(d, "alice")
    r = mail(c, "me@gmail.example")
    assert r.code == 553 and r.last.startswith("553 5.7.1"), r
    c.quit()


def test_maps_reload_on_sighup(daemons, tmp_path):
    d = policy_daemon(daemons, tmp_path)
    c = session(d, "carol")
    assert mail(c, "carol@newshop.example").code == 553
    c.quit()
    write(os.path.join(str(tmp_path), "hosted"), HOSTED + ["newshop.example"])
    write(os.path.join(str(tmp_path), "logins"), LOGINS + ["@newshop.example carol"])
    d.signal(signal.SIGHUP)
    assert wait_for(lambda: "event=reloaded" in d.log, 10 * SLACK)
    c = session(d, "carol")
    assert mail(c, "carol@newshop.example").code == 250
    c.quit()


def test_check_reports_a_bad_map_line(daemons, tmp_path):
    from conftest import RINGRELAY_BIN
    bad = write(os.path.join(str(tmp_path), "logins.bad"),
                ["@hosted.example alice", "this-line-has-no-login"])
    cfg = os.path.join(str(tmp_path), "check.conf")
    write(os.path.join(str(tmp_path), "hosted.t"), HOSTED)
    with open(cfg, "w") as f:
        f.write("[server]\nspool_dir = %s\n[policy]\nhosted_domains = %s\nsender_logins = %s\n"
                % (os.path.join(str(tmp_path), "spool"), os.path.join(str(tmp_path), "hosted.t"),
                   bad))
    r = subprocess.run([RINGRELAY_BIN, "-t", "-c", cfg], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30 * SLACK)
    assert r.returncode != 0
    assert ("%s:2:" % bad).encode() in r.stdout, r.stdout


# ---- bulk limits ----

def test_120_recipients_in_three_transactions(peers, daemons, tmp_path):
    sink = peers.sink()
    d = policy_daemon(daemons, tmp_path, sink_port=sink.port)
    rcpts = ["r%03d@example.net" % i for i in range(120)]
    c = session(d, "alice")
    left, qids, rounds = list(rcpts), {}, 0
    while left and rounds < 5:                  # a client that follows 452
        rounds += 1
        assert mail(c, "alice@hosted.example").code == 250
        took, later = [], []
        for r in left:
            rep = c.cmd("RCPT TO:<%s>" % r)
            if rep.code == 250:
                took.append(r)
            else:
                assert rep.code == 452 and rep.last.startswith("452 4.5.3"), rep
                later.append(r)
        assert len(took) == min(50, len(left))
        assert c.cmd("DATA").code == 354
        c.send(make_message("bulk %d" % rounds) + b".\r\n")
        rep = c.reply()
        assert rep.code == 250, rep
        qids[rep.last.split()[-1]] = took
        left = later
    c.quit()
    assert rounds == 3 and not left
    wait_delivered(d, qids, timeout=60)
    got = sorted(r for dump in sink.dumps() if dump.complete for r in dump.rcpts)
    assert got == sorted(rcpts)
    assert d.metric("ringrelay_recipients_rejected_total",
                    {"reason": "too_many_recipients"}) == 70 + 20
    ev = events(d, "rejected", reason="too_many_recipients")
    assert len(ev) == 70 + 20 and all(e["code"] == "452" for e in ev), ev[:3]


def test_120_recipients_with_smtplib(peers, daemons, tmp_path):
    # Python's smtplib as the client: sendmail() returns the recipients refused with 452,
    # and the caller sends them again, as a submission client does
    sink = peers.sink()
    d = policy_daemon(daemons, tmp_path, sink_port=sink.port)
    rcpts = ["s%03d@example.net" % i for i in range(120)]
    s = smtplib.SMTP("127.0.0.1", d.port, local_hostname="client.example", timeout=10 * SLACK)
    s.login("alice", "alice-pw")
    left, rounds = list(rcpts), 0
    while left and rounds < 5:
        rounds += 1
        refused = s.sendmail("alice@hosted.example", left, make_message("smtplib %d" % rounds))
        assert all(code == 452 and msg.startswith(b"4.5.3") for code, msg in refused.values()), \
            refused
        assert len(left) - len(refused) == min(50, len(left)), (len(left), len(refused))
        left = [r for r in left if r in refused]
    s.quit()
    assert rounds == 3 and not left
    acc = events(d, "accepted")
    assert sorted(int(e["nrcpt"]) for e in acc) == [20, 50, 50], acc
    def got():
        return sorted(r for dump in sink.dumps() for r in dump.rcpts)
    assert wait_for(lambda: len(got()) >= 120, 60 * SLACK), len(got())
    assert got() == sorted(rcpts)


def test_hourly_limits_hit_and_recovered(daemons, tmp_path):
    d = policy_daemon(daemons, tmp_path, policy={"user_hourly_messages": 3,
                                                 "user_hourly_recipients": 5,
                                                 "rate_window": "3s"})
    c = session(d, "alice")
    # pipelined, so that all of them are judged at one moment whatever the machine's speed
    c.send(b"MAIL FROM:<alice@hosted.example>\r\nRSET\r\n" * 3 +
           b"MAIL FROM:<alice@hosted.example>\r\n")
    reps = c.replies(7)
    assert [r.code for r in reps] == [250, 250] * 3 + [451], reps
    assert reps[6].last.startswith("451 4.7.1") and "user_hourly_messages" in reps[6].last
    # another login is not affected
    c2 = session(d, "bob")
    assert mail(c2, "bob@shop.example").code == 250
    c2.quit()

    def recovered():
        rep = mail(c, "alice@hosted.example")
        if rep.code == 250:
            return True
        assert rep.code == 451, rep
        return False
    assert wait_for(recovered, 20 * SLACK, interval=0.5)
    # recipients: 5 per window, the sixth and seventh refused (pipelined, as above), the
    # accepted ones kept
    c.send(b"".join(b"RCPT TO:<x%d@example.net>\r\n" % i for i in range(7)))
    reps = c.replies(7)
    assert [r.code for r in reps] == [250] * 5 + [451, 451], reps
    assert reps[5].last.startswith("451 4.7.1") and "user_hourly_recipients" in reps[5].last
    c.cmd("RSET")

    def rcpt_recovered():
        if mail(c, "alice@hosted.example").code != 250:
            return False                          # the message limit, recovering too
        rep = c.cmd("RCPT TO:<again@example.net>")
        c.cmd("RSET")
        assert rep.code in (250, 451), rep
        return rep.code == 250
    assert wait_for(rcpt_recovered, 20 * SLACK, interval=0.5)
    c.quit()
    assert rejected(d, "rate_limited") >= 1
    assert d.metric("ringrelay_recipients_rejected_total", {"reason": "rate_limited"}) >= 2
    ev = events(d, "rejected", reason="rate_limited")
    assert any(e["code"] == "451" and "user_hourly_messages" in e["reply"] for e in ev), ev
    assert any(e["code"] == "451" and "user_hourly_recipients" in e["reply"] for e in ev), ev
    # alice's message and recipient buckets, bob's message bucket: no live entry was evicted
    assert d.metric("ringrelay_ratelimit_keys_total") >= 3
    assert d.metric("ringrelay_ratelimit_evictions_total") == 0


def test_null_sender_counts_against_the_limits(daemons, tmp_path):
    d = policy_daemon(daemons, tmp_path, policy={"user_hourly_messages": 2,
                                                 "rate_window": "1h"})
    c = session(d, "alice")
    for _ in range(2):
        assert c.send_message(make_message("vacation"), mail_from="").code == 250
    r = mail(c, "")
    assert r.code == 451 and r.last.startswith("451 4.7.1"), r
    r = mail(c, "alice@hosted.example")
    assert r.code == 451 and "user_hourly_messages" in r.last, r
    c.quit()
    assert rejected(d, "rate_limited") == 2


def test_ip_hourly_limit(daemons, tmp_path):
    d = policy_daemon(daemons, tmp_path, policy={"ip_hourly_messages": 2, "rate_window": "1h",
                                                 "trusted_networks": "127.0.0.0/8"})
    for i in range(2):
        c = session(d)                            # new connections: the limit is per address
        assert mail(c, "form@anything.example").code == 250
        c.quit()
    c = session(d, "alice")
    r = mail(c, "alice@hosted.example")
    assert r.code == 451 and r.last.startswith("451 4.7.1"), r
    assert "ip_hourly_messages" in r.last, r
    c.quit()
    assert rejected(d, "rate_limited") == 1
    assert any(e["code"] == "451" for e in events(d, "rejected", reason="rate_limited"))


# ---- replies stay one line, and say what they must ----

def test_reject_reply_of_a_long_sender_keeps_the_help(daemons, tmp_path):
    d = policy_daemon(daemons, tmp_path)
    sender = "l" * 64 + "@" + ".".join(["d" * 40] * 4) + ".example"   # 236 bytes
    c = session(d, "alice")
    r = mail(c, sender)
    assert r.code == 553 and r.last.startswith("553 5.7.1 "), r
    assert len(r.last.encode()) + 2 <= 512, len(r.last)
    assert r.last.endswith("Help: https://help.isp.example/relaying"), r.last
    assert "not hosted" in r.last, r.last
    c.quit()


def test_bad_map_on_sighup_keeps_the_old_maps(daemons, tmp_path):
    d = policy_daemon(daemons, tmp_path)
    write(os.path.join(str(tmp_path), "hosted"), HOSTED + ["bad domain line"])
    d.signal(signal.SIGHUP)
    assert wait_for(lambda: "event=reload_failed" in d.log, 10 * SLACK)
    c = session(d, "alice")
    assert mail(c, "alice@hosted.example").code == 250
    c.cmd("RSET")
    assert mail(c, "me@gmail.example").code == 553
    c.quit()
