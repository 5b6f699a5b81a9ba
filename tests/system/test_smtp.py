"""SMTP conversation tests: sending with smtplib and swaks, and every reply of the command set."""
import os
import re
import shutil
import smtplib
import socket
import subprocess

import pytest

from conftest import SLACK, Client, free_port, make_message, queued_id

SWAKS = shutil.which("swaks")


def smtplib_send(port, msg, mail_from="a@example.com", rcpts=("b@example.net",)):
    """One message by smtplib, step by step; returns the queue id from the 250."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example",
                      timeout=10 * SLACK) as s:
        code, _ = s.ehlo()
        assert code == 250
        assert s.has_extn("pipelining") and s.has_extn("chunking") and s.has_extn("8bitmime")
        code, resp = s.mail(mail_from)
        assert code == 250, resp
        for r in rcpts:
            code, resp = s.rcpt(r)
            assert code == 250, resp
        code, resp = s.data(msg)
        assert code == 250, resp
        m = re.match(rb"^2\.0\.0 Ok: queued as ([0-9A-F]{16})$", resp)
        assert m, resp
        return m.group(1).decode()


def test_smtplib_stores_exact_bytes_and_envelope(daemon):
    msg = make_message("exact", ["first line", ".starts with a dot", "..two dots", ".",
                                 "", "tab\there", "last"])
    qid = smtplib_send(daemon.port, msg, rcpts=("b@example.net", "C@Example.ORG"))
    msgs = daemon.export()
    assert len(msgs) == 1
    env, eml = msgs[0]
    assert eml == msg
    assert env["qid"] == qid
    assert env["from"] == "a@example.com"
    assert env["rcpt"] == ["b@example.net", "C@example.org"]  # domain lower-cased, local kept
    assert env["size"] == str(len(msg))
    assert env["helo"] == "client.example"
    assert env["proto"] == "ESMTP"
    assert env["listener"] == "main"
    assert env["ip"] == "127.0.0.1"
    assert "event=accepted id=%s from=<a@example.com> nrcpt=2 size=%d" % (qid, len(msg)) \
        in daemon.log
    assert daemon.metric("ringrelay_messages_accepted_total") == 1
    assert daemon.metric("ringrelay_connections_total", {"listener": "main"}) == 1
    lines = daemon.spool_list()
    assert len(lines) == 1 and lines[0].startswith(qid)


def test_sendmail_null_sender_and_8bit(daemon):
    msg = make_message("8bit", ["caf\u00e9 \u00fcber"])
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=10 * SLACK) as s:
        refused = s.sendmail("", ["b@example.net"], msg, mail_options=["BODY=8BITMIME"])
        assert refused == {}
    (env, eml), = daemon.export()
    assert eml == msg
    assert env["from"] == ""
    assert env["body"] == "8BITMIME"


def test_several_messages_on_one_connection_with_rset(daemon):
    sent = []
    with daemon.client() as c:
        c.ehlo()
        for i in range(3):
            m = make_message("msg %d" % i, ["body %d" % i])
            r = c.send_message(m, mail_from="s%d@example.com" % i,
                               rcpts=["r%d@example.net" % i, "x%d@example.net" % i])
            sent.append((queued_id(r), m, i))
            assert c.cmd("RSET").startswith("250 2.0.0")
        # An abandoned transaction: MAIL, RCPT, RSET -> nothing stored.
        assert c.cmd("MAIL FROM:<abandoned@example.com>").code == 250
        assert c.cmd("RCPT TO:<nobody@example.net>").code == 250
        assert c.cmd("RSET").startswith("250 2.0.0")
        # RSET really ended it: RCPT needs MAIL again.
        assert c.cmd("RCPT TO:<nobody@example.net>").startswith("503 5.5.1")
        m = make_message("after rset")
        r = c.send_message(m)
        sent.append((queued_id(r), m, None))
        c.quit()
    got = daemon.export_by_qid()
    assert len(got) == 4
    for qid, m, i in sent:
        env, eml = got[qid]
        assert eml == m
        if i is not None:
            assert env["from"] == "s%d@example.com" % i
            assert env["rcpt"] == ["r%d@example.net" % i, "x%d@example.net" % i]
    assert not any(env["from"] == "abandoned@example.com" for env, _ in got.values())
    assert daemon.metric("ringrelay_messages_accepted_total") == 4


def test_helo_session(daemon):
    with daemon.client() as c:
        r = c.cmd("HELO old.client.example")
        assert r.lines == ["250 relay.test.example"]
        m = make_message("helo")
        qid = queued_id(c.send_message(m))
        c.quit()
    (env, eml), = daemon.export()
    assert env["qid"] == qid and eml == m
    assert env["proto"] == "SMTP"
    assert env["helo"] == "old.client.example"


def test_greeting_and_ehlo_keywords(daemon):
    with daemon.client() as c:
        assert c.greeting.lines == ["220 relay.test.example ESMTP ringrelay"]
        r = c.ehlo()
        assert r.lines[0].startswith("250-relay.test.example")
        kw = [l[4:] for l in r.lines[1:]]
        assert kw == ["PIPELINING", "SIZE 36700160", "8BITMIME", "ENHANCEDSTATUSCODES",
                      "CHUNKING", "SMTPUTF8"]
        assert all(l.startswith("250-") for l in r.lines[:-1]) and r.lines[-1].startswith("250 ")


# (name, commands before (each must not fail), the command, expected reply prefix)
REPLIES = [
    ("mail_before_helo", [], "MAIL FROM:<a@example.com>", "503 5.5.1"),
    ("rcpt_before_helo", [], "RCPT TO:<b@example.net>", "503 5.5.1"),
    ("rcpt_before_mail", ["EHLO c.example"], "RCPT TO:<b@example.net>", "503 5.5.1"),
    ("data_before_mail", ["EHLO c.example"], "DATA", "503 5.5.1"),
    ("nested_mail", ["EHLO c.example", "MAIL FROM:<a@example.com>"],
     "MAIL FROM:<a@example.com>", "503 5.5.1"),
    ("data_without_rcpt", ["EHLO c.example", "MAIL FROM:<a@example.com>"], "DATA",
     "554 5.5.1"),
    ("unknown_command", ["EHLO c.example"], "FROBNICATE", "500 5.5.1"),
    ("unknown_before_helo", [], "XYZZY now", "500 5.5.1"),
    ("empty_line", ["EHLO c.example"], "", "500 5.5.1"),
    ("vrfy", ["EHLO c.example"], "VRFY postmaster", "252 "),
    ("vrfy_before_helo", [], "VRFY postmaster", "252 "),
    ("help", ["EHLO c.example"], "HELP", "214 "),
    ("noop", ["EHLO c.example"], "NOOP", "250 2.0.0"),
    ("noop_before_helo", [], "NOOP", "250 2.0.0"),
    ("rset_before_helo", [], "RSET", "250 2.0.0"),
    ("lowercase_noop", ["EHLO c.example"], "noop", "250 2.0.0"),
    ("starttls", ["EHLO c.example"], "STARTTLS", "502 5.5.1"),
    ("auth", ["EHLO c.example"], "AUTH PLAIN AGZvbwBiYXI=", "502 5.5.1"),
    ("expn", ["EHLO c.example"], "EXPN staff", "502 5.5.1"),
    ("ehlo_without_name", [], "EHLO", "501 5.5.4"),
    ("helo_without_name", [], "HELO", "501 5.5.4"),
    ("mail_bad_syntax", ["EHLO c.example"], "MAIL FROM:a@b@c", "501 5.1.7"),
    ("rcpt_bad_syntax", ["EHLO c.example", "MAIL FROM:<a@example.com>"], "RCPT TO:<@>",
     "501 5.1.3"),
    ("data_with_argument", ["EHLO c.example", "MAIL FROM:<a@example.com>",
                            "RCPT TO:<b@example.net>"], "DATA now", "501 5.5.4"),
    ("command_line_512_octets", ["EHLO c.example"], "NOOP " + "x" * 505, "250 2.0.0"),
    ("command_line_513_octets", ["EHLO c.example"], "NOOP " + "x" * 506, "500 5.5.2"),
    ("very_long_line", ["EHLO c.example"], "NOOP " + "x" * 5000, "500 5.5.2"),
    ("nul_in_command", ["EHLO c.example"], "NO\x00OP", "500 5.5.2"),
    ("control_char_in_command", ["EHLO c.example"], "NOOP \x01", "500 5.5.2"),
]


@pytest.mark.parametrize("name,before,command,expect", REPLIES, ids=[r[0] for r in REPLIES])
def test_reply(daemon, name, before, command, expect):
    with daemon.client() as c:
        for b in before:
            r = c.cmd(b)
            assert r.code < 400, (b, r)
        r = c.cmd(command)
        assert r.startswith(expect), r
        # The session goes on, with exactly this one reply.
        c.sentinel()
        c.quit()
    if r.code >= 400:
        assert "event=rejected code=%d " % r.code in daemon.log, daemon.log


def test_bare_lf_command(daemon):
    with daemon.client() as c:
        c.ehlo()
        c.send(b"NOOP\n")
        r = c.reply()
        assert r.startswith("550 5.5.2"), r
        c.sentinel()
        # A bare LF MAIL is not executed: RCPT still has no transaction.
        c.send(b"MAIL FROM:<a@example.com>\n")
        assert c.reply().startswith("550 5.5.2")
        assert c.cmd("RCPT TO:<b@example.net>").startswith("503 5.5.1")
        c.quit()
    assert daemon.metric("ringrelay_protocol_errors_total", {"reason": "bad_bytes"}) >= 2


def test_command_split_across_writes(daemon):
    with daemon.client() as c:
        for part in (b"EH", b"LO c.exa", b"mple\r", b"\n"):
            c.send(part)
        assert c.reply().code == 250
        c.sentinel()


def test_quit(daemon):
    with daemon.client() as c:
        c.ehlo()
        r = c.cmd("QUIT")
        assert r.startswith("221 2.0.0")
        assert c.is_closed(5)


def test_quit_mid_transaction_stores_nothing(daemon):
    with daemon.client() as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.com>")
        c.cmd("RCPT TO:<b@example.net>")
        assert c.cmd("QUIT").code == 221
        assert c.is_closed(5)
    assert daemon.export() == []


def test_relay_denied_outside_trusted_networks(daemons):
    d = daemons(policy={"trusted_networks": "10.0.0.0/8"})
    assert d.metric("ringrelay_recipients_rejected_total", {"reason": "relay_denied"}) == 0
    with d.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.com>").code == 250
        r = c.cmd("RCPT TO:<b@example.net>")
        assert r.startswith("554 5.7.1"), r
        assert "Relay access denied" in r.last
        assert c.cmd("RCPT TO:<c@example.net>").startswith("554 5.7.1")
        assert c.cmd("DATA").startswith("554 5.5.1")
        c.quit()
    assert d.metric("ringrelay_recipients_rejected_total", {"reason": "relay_denied"}) == 2
    assert "event=rejected code=554" in d.log
    assert d.export() == []


def test_trusted_networks_allows_loopback(daemons):
    d = daemons(policy={"trusted_networks": "10.0.0.0/8, 127.0.0.1/32"})
    with d.client() as c:
        c.ehlo()
        queued_id(c.send_message(make_message()))
        c.quit()


def test_auth_required_listener(daemons, tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    d = daemons(auth={"passwd_file": str(passwd)}, **{"listener.main": {"auth": "required"}})
    with d.client() as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@example.com>")
        assert r.startswith("530 5.7.0"), r
        # no transaction was opened
        assert c.cmd("RCPT TO:<b@example.net>").startswith("503 5.5.1")
        c.quit()
    assert d.metric("ringrelay_messages_rejected_total", {"reason": "auth_required"}) == 1
    assert d.export() == []


def test_max_recipients(daemons):
    d = daemons(limits={"max_recipients": 3})
    rcpts = ["r%d@example.net" % i for i in range(5)]
    with d.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.com>").code == 250
        codes = [c.cmd("RCPT TO:<%s>" % r) for r in rcpts]
        assert [r.code for r in codes] == [250, 250, 250, 452, 452]
        assert all(r.startswith("452 4.5.3") for r in codes[3:])
        assert c.cmd("DATA").code == 354
        m = make_message("three")
        c.send(m + b".\r\n")
        qid = queued_id(c.reply())
        c.quit()
    (env, eml), = d.export()
    assert env["qid"] == qid and eml == m
    assert env["rcpt"] == rcpts[:3]
    assert d.metric("ringrelay_recipients_rejected_total",
                    {"reason": "too_many_recipients"}) == 2


def test_size_at_mail(daemons):
    d = daemons(limits={"max_message_size": "10K"})
    with d.client() as c:
        r = c.ehlo()
        assert "250-SIZE 10240" in r.lines
        r = c.cmd("MAIL FROM:<a@example.com> SIZE=10241")
        assert r.startswith("552 5.3.4"), r
        assert c.cmd("RCPT TO:<b@example.net>").startswith("503 5.5.1")
        assert c.cmd("MAIL FROM:<a@example.com> SIZE=10240").code == 250
        assert c.cmd("RSET").code == 250
        assert c.cmd("MAIL FROM:<a@example.com> SIZE=99999999999999999999999").code in (501, 552)
        c.quit()
    assert d.metric("ringrelay_messages_rejected_total", {"reason": "size"}) >= 1


def _content_of_size(n):
    """CRLF-terminated lines totalling exactly n bytes (n >= 2)."""
    full, rest = divmod(n, 80)
    lines = [b"x" * 78 + b"\r\n"] * full
    if rest == 1:
        lines[-1] = b"x" * 79 + b"\r\n"
    elif rest:
        lines.append(b"y" * (rest - 2) + b"\r\n")
    body = b"".join(lines)
    assert len(body) == n, (len(body), n)
    return body


def test_size_in_data(daemons):
    d = daemons(limits={"max_message_size": "10K"})
    with d.client() as c:
        c.ehlo()
        big = _content_of_size(20000)
        r = c.send_message(big)
        assert r.startswith("552 5.3.4"), r
        c.sentinel()
        # exactly the maximum is accepted, one byte more is not
        exact = _content_of_size(10240)
        qid = queued_id(c.send_message(exact))
        r = c.send_message(_content_of_size(10242))
        assert r.startswith("552 5.3.4"), r
        c.quit()
    got = d.export()
    assert [(e["qid"], m) for e, m in got] == [(qid, exact)]
    assert d.metric("ringrelay_messages_rejected_total", {"reason": "size"}) == 2


@pytest.mark.skipif(not SWAKS, reason="swaks not installed")
@pytest.mark.parametrize("extra", [[], ["--pipeline"]], ids=["plain", "pipeline"])
def test_swaks(daemon, extra):
    r = subprocess.run([SWAKS, "--server", "127.0.0.1:%d" % daemon.port, "--from",
                        "a@example.com", "--to", "b@example.net,c@example.net", "--helo",
                        "swaks.example", "--header", "Subject: swaks test", "--body",
                        "Hello from swaks.\n.leading dot\n"] + extra,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30 * SLACK)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out
    assert re.search(r"<-  250 2\.0\.0 Ok: queued as [0-9A-F]{16}", out), out
    (env, eml), = daemon.export()
    assert env["from"] == "a@example.com"
    assert env["rcpt"] == ["b@example.net", "c@example.net"]
    assert env["helo"] == "swaks.example"
    assert b"Subject: swaks test\r\n" in eml
    assert b"\r\nHello from swaks.\r\n.leading dot\r\n" in eml
    assert b"\n" not in eml.replace(b"\r\n", b"")
    assert "improper_pipelining" not in daemon.log


def test_smtputf8(daemon):
    with daemon.client() as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<j\u00fcrgen@example.com>".encode())
        assert r.startswith("553 5.6.7"), r
        r = c.cmd("MAIL FROM:<j\u00fcrgen@example.com> SMTPUTF8".encode())
        assert r.code == 250, r
        assert c.cmd("RCPT TO:<\u00e9l\u00e8ve@\u00e9cole.example>".encode()).code == 250
        assert c.cmd("DATA").code == 354
        m = "Subject: \u00fcber\r\n\r\ngr\u00fc\u00dfe\r\n".encode()
        c.send(m + b".\r\n")
        qid = queued_id(c.reply())
    (env, eml), = daemon.export()
    assert env["qid"] == qid and eml == m
    assert env["smtputf8"] == "1"
    assert env["from"] == "j\u00fcrgen@example.com"
    assert env["rcpt"] == ["\u00e9l\u00e8ve@\u00e9cole.example"]


def _ipv6_loopback(port=0):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", port))
            return s.getsockname()[1]
    except OSError:
        return None


@pytest.mark.skipif(_ipv6_loopback() is None, reason="no IPv6 loopback")
def test_ipv6_listener(daemons):
    for _ in range(20):
        p6 = _ipv6_loopback(free_port())
        if p6:
            break
    d = daemons(start=False)
    d.start()
    d.stop()
    d.set("listener.main", "listen", "127.0.0.1:%d, [::1]:%d" % (d.port, p6))
    d.write_config()
    d.start()
    with Client(p6, host="::1") as c:
        c.ehlo()
        r = c.send_message(make_message("v6"))
        qid = queued_id(r)
    with d.client() as c:
        c.ehlo()
        queued_id(c.send_message(make_message("v4")))
    got = d.export_by_qid()
    assert got[qid][0]["ip"] == "::1"
    assert len(got) == 2


def test_size_counts_stored_bytes_not_wire_bytes(daemons):
    """max_message_size applies to the content after dot-unstuffing."""
    d = daemons(limits={"max_message_size": "1K"})
    content = b".x\r\n" * 256                       # 1024 bytes stored, 1280 on the wire
    with d.client() as c:
        c.ehlo()
        qid = queued_id(c.send_message(content))     # send_message dot-stuffs
    (env, eml), = d.export()
    assert env["qid"] == qid and eml == content


def test_spool_min_free_refuses_mail(daemons):
    d = daemons(server={"spool_min_free": "1000000G"})     # more than any test disk has
    with d.client() as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@example.com>")
        assert r.startswith("452 4.3.1"), r
        r = c.cmd("MAIL FROM:<a@example.com> SIZE=100")
        assert r.startswith("452 4.3.1"), r
        assert c.cmd("RCPT TO:<b@example.net>").startswith("503 5.5.1")
        c.sentinel()
    assert d.metric("ringrelay_messages_rejected_total", {"reason": "spool_full"}) == 2
    assert "event=rejected code=452" in d.log
    assert d.export() == []
