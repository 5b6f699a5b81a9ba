"""RFC 2920 pipelining, improper pipelining, pregreet, and RFC 3030 BDAT."""
import time

import pytest

from conftest import Client, dot_stuff, make_message, parse_replies, queued_id


def codes(replies):
    return [r.code for r in replies]


def test_pipelined_transaction_in_one_write(daemon):
    m1 = make_message("pipelined 1", ["one", ".dot"])
    m2 = b"Subject: bdat\r\n\r\nchunked\r\n"
    with daemon.client() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b1@example.net>\r\n"
               b"RCPT TO:<b2@example.net>\r\nRCPT TO:<b3@example.net>\r\nDATA\r\n")
        r = c.replies(5)
        assert codes(r) == [250, 250, 250, 250, 354], r
        # content, the end, and the next transaction by BDAT, and QUIT: all in one write
        c.send(dot_stuff(m1) + b".\r\n"
               + b"MAIL FROM:<c@example.com>\r\nRCPT TO:<d@example.net>\r\n"
               + b"BDAT %d LAST\r\n" % len(m2) + m2 + b"QUIT\r\n")
        rest = parse_replies(c.read_until_closed(10))
    # exactly one reply per command, in order
    assert codes(rest) == [250, 250, 250, 250, 221], rest
    q1, q2 = queued_id(rest[0]), queued_id(rest[3])
    got = daemon.export_by_qid()
    assert set(got) == {q1, q2}
    assert got[q1][1] == m1
    assert got[q1][0]["rcpt"] == ["b1@example.net", "b2@example.net", "b3@example.net"]
    assert got[q2][1] == m2
    assert got[q2][0]["from"] == "c@example.com" and got[q2][0]["rcpt"] == ["d@example.net"]
    assert "improper_pipelining" not in daemon.log


def test_pipelined_group_with_refusals(daemon):
    with daemon.client() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<@>\r\nRCPT TO:<ok@example.net>\r\n"
               b"NOOP\r\nVRFY x\r\nDATA\r\n")
        r = c.replies(6)
        assert codes(r) == [250, 501, 250, 250, 252, 354], r
        c.send(b"hi\r\n.\r\n")
        queued_id(c.reply())
        # a group whose every RCPT fails: DATA is refused, nothing waits for content
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<@>\r\nDATA\r\n")
        r = c.replies(3)
        assert codes(r) == [250, 501, 554], r
        c.sentinel()
    (env, eml), = daemon.export()
    assert env["rcpt"] == ["ok@example.net"] and eml == b"hi\r\n"


def test_many_pipelined_transactions_in_one_write(daemon):
    """Twenty complete transactions in one write: twenty 250s for each of MAIL, RCPT, DATA, end."""
    n = 20
    # DATA must end a group: write MAIL/RCPT/DATA, then content + next MAIL/RCPT/DATA, ...
    blob = b"MAIL FROM:<s0@example.com>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n"
    with daemon.client() as c:
        c.ehlo()
        c.send(blob)
        assert codes(c.replies(3)) == [250, 250, 354]
        qids = []
        for i in range(n):
            tail = b"" if i == n - 1 else (
                b"MAIL FROM:<s%d@example.com>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n" % (i + 1))
            c.send(b"Subject: %d\r\n\r\nbody %d\r\n.\r\n" % (i, i) + tail)
            r = c.replies(1 if i == n - 1 else 4)
            qids.append(queued_id(r[0]))
            if i < n - 1:
                assert codes(r[1:]) == [250, 250, 354], r
        c.sentinel()
    got = daemon.export_by_qid()
    assert len(got) == n and set(got) == set(qids)
    for i, q in enumerate(qids):
        assert got[q][1] == b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i)
        assert got[q][0]["from"] == "s%d@example.com" % i


IMPROPER = [
    # (name, setup: 'none' | 'ehlo' | 'helo', the one write, replies expected before the 554)
    ("ehlo_then_command_before_reply", "none", b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\n",
     []),
    ("noop_noop_before_ehlo", "none", b"NOOP\r\nNOOP\r\n", []),
    ("helo_session_mail_rcpt", "helo",
     b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n", []),
    ("helo_then_mail", "none", b"HELO c.example\r\nMAIL FROM:<a@example.com>\r\n", []),
    ("data_then_content", "ehlo",
     b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
     b"Subject: smuggled\r\n\r\nx\r\n.\r\n", [250, 250]),
    ("ehlo_in_middle", "ehlo", b"RSET\r\nEHLO again.example\r\nNOOP\r\n", [250]),
    ("data_then_quit", "ehlo",
     b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nQUIT\r\n", [250, 250]),
]


@pytest.mark.parametrize("name,setup,blob,before", IMPROPER, ids=[x[0] for x in IMPROPER])
def test_improper_pipelining(daemon, name, setup, blob, before):
    with daemon.client() as c:
        if setup == "ehlo":
            c.ehlo()
        elif setup == "helo":
            c.helo()
        c.send(blob)
        rs = parse_replies(c.read_until_closed(10))
    assert codes(rs) == before + [554], rs
    assert rs[-1].startswith("554 5.5.0"), rs
    assert daemon.export() == []
    assert daemon.metric("ringrelay_protocol_errors_total",
                         {"reason": "improper_pipelining"}) == 1
    assert "improper_pipelining" in daemon.log


def test_pregreet(daemons):
    d = daemons(limits={"greeting_delay": "1s"})
    # talks first: 554 and closed, never a 220
    c = Client(d.port, greet=False)
    c.send(b"EHLO eager.example\r\n")
    rs = parse_replies(c.read_until_closed(10))
    assert codes(rs) == [554], rs
    assert rs[0].startswith("554 5.5.0")
    c.close()
    # waits: gets the 220 after the delay and is served
    with Client(d.port, greet=False) as c:
        g = c.reply(timeout=15)
        assert g.startswith("220 "), g
        c.ehlo()
        queued_id(c.send_message(make_message("patient")))
    assert d.metric("ringrelay_protocol_errors_total", {"reason": "pregreet"}) == 1
    assert len(d.export()) == 1


def test_bdat_chunks(daemon):
    chunks = [b"Subject: chunks\r\n\r\n", b"line one\r", b"\nMAIL FROM:<x@y>\r\n",
              b".\r\n..not stuffed\r\n", b"\r\n.\r\n", b"", b"last line\r\n"]
    with daemon.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.com>").code == 250
        assert c.cmd("RCPT TO:<b@example.net>").code == 250
        for ch in chunks:
            c.send(b"BDAT %d\r\n" % len(ch) + ch)
            r = c.reply()
            assert r.startswith("250 2.0.0"), r
            assert "%d octets" % len(ch) in r.last
        r = c.cmd("DATA")
        assert r.startswith("503 5.5.1"), r       # DATA after BDAT
        c.send(b"BDAT 0 LAST\r\n")
        qid = queued_id(c.reply())
        c.sentinel()
    (env, eml), = daemon.export()
    assert env["qid"] == qid
    assert eml == b"".join(chunks)        # BDAT content is stored as sent, no unstuffing


def test_bdat_last_with_data_in_one_write(daemon):
    with daemon.client() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 5 LAST\r\nhello")
        rs = c.replies(3)
        assert codes(rs) == [250, 250, 250]
        qid = queued_id(rs[2])
        c.sentinel()
    (env, eml), = daemon.export()
    assert env["qid"] == qid
    assert eml == b"hello\r\n"   # the missing final CRLF is added (lines end in CRLF)


def test_bdat_large_chunks(daemon):
    body = b"".join(b"%07d " % i + b"z" * 70 + b"\r\n" for i in range(3000))  # ~234 KB
    with daemon.client() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n")
        assert codes(c.replies(2)) == [250, 250]
        half = len(body) // 2
        c.send(b"BDAT %d\r\n" % half + body[:half])
        assert c.reply().code == 250
        c.send(b"BDAT %d LAST\r\n" % (len(body) - half) + body[half:])
        qid = queued_id(c.reply())
    (env, eml), = daemon.export()
    assert env["qid"] == qid and eml == body


@pytest.mark.parametrize("setup,payload,expect", [
    ("ehlo", b"MAIL FROM:<x@example.com>\r\n", "503 5.5.1"),
    ("ehlo", b"QUIT\r\nNOOP", "503 5.5.1"),
    ("mail", b"RCPT TO:<v@example.net>\r\n", "554 5.5.1"),
], ids=["ready_mail_payload", "ready_quit_payload", "no_rcpt_rcpt_payload"])
def test_bdat_without_transaction_consumes_its_bytes(daemon, setup, payload, expect):
    with daemon.client() as c:
        c.ehlo()
        if setup == "mail":
            assert c.cmd("MAIL FROM:<a@example.com>").code == 250
        c.send(b"BDAT %d\r\n" % len(payload) + payload)
        r = c.reply()
        assert r.startswith(expect), r
        # the payload was not executed: still no transaction / no recipient, still connected
        if setup == "ehlo":
            assert c.cmd("RCPT TO:<b@example.net>").startswith("503 5.5.1")
        else:
            assert c.cmd("DATA").startswith("554 5.5.1")
        c.sentinel()
    assert daemon.export() == []


def test_bdat_before_helo_consumes_its_bytes(daemon):
    with daemon.client() as c:
        c.send(b"BDAT 6\r\n")
        time.sleep(0.2)   # a separate write, so it is not improper pipelining
        c.send(b"QUIT\r\n")
        r = c.reply()
        assert r.startswith("503 5.5.1"), r
        c.sentinel()      # QUIT inside the chunk was not executed


def test_large_pipelined_group_many_rcpts(daemons):
    """More replies than the server's reply buffer holds: all arrive, in order."""
    d = daemons(limits={"max_recipients": 500})
    rcpts = ["rcpt%03d@example.net" % i for i in range(300)]
    with d.client() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@example.com>\r\n"
               + b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts) + b"DATA\r\n")
        rs = c.replies(302)
        assert codes(rs) == [250] * 301 + [354]
        c.send(b"Subject: many\r\n\r\nx\r\n.\r\n")
        qid = queued_id(c.reply())
        c.sentinel()
    (env, eml), = d.export()
    assert env["qid"] == qid and env["rcpt"] == rcpts


def test_thousands_of_pipelined_commands(daemon):
    n = 2000
    with daemon.client() as c:
        c.ehlo()
        c.send(b"".join(b"NOOP %d\r\n" % i if i % 3 else b"VRFY u%d\r\n" % i for i in range(n)))
        rs = c.replies(n, timeout=30)
        assert codes(rs) == [250 if i % 3 else 252 for i in range(n)]
        c.sentinel()


def test_three_bdat_transactions_in_one_write(daemon):
    contents = [b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(3)]
    blob = b"".join(b"MAIL FROM:<s%d@example.com>\r\nRCPT TO:<r%d@example.net>\r\n"
                    b"BDAT %d LAST\r\n" % (i, i, len(m)) + m for i, m in enumerate(contents))
    with daemon.client() as c:
        c.ehlo()
        c.send(blob + b"QUIT\r\n")
        rs = parse_replies(c.read_until_closed(15))
    assert codes(rs) == [250] * 9 + [221], rs
    qids = [queued_id(rs[i]) for i in (2, 5, 8)]
    got = daemon.export_by_qid()
    assert len(got) == 3
    for i, q in enumerate(qids):
        env, eml = got[q]
        assert eml == contents[i]
        assert env["from"] == "s%d@example.com" % i and env["rcpt"] == ["r%d@example.net" % i]


def test_bdat_then_rset_discards(daemon):
    with daemon.client() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 15\r\n"
               b"Subject: gone\r\n")
        assert codes(c.replies(3)) == [250, 250, 250]
        assert c.cmd("RSET").code == 250
        assert c.cmd("RCPT TO:<b@example.net>").startswith("503 5.5.1")
        m = b"Subject: kept\r\n\r\nx\r\n"
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT %d LAST\r\n"
               % len(m) + m)
        rs = c.replies(3)
        qid = queued_id(rs[2])
        # a chunk, then EHLO (which also resets), then QUIT: nothing more is stored
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 3\r\nabc")
        assert codes(c.replies(3)) == [250, 250, 250]
        c.ehlo()
        assert c.cmd("RCPT TO:<b@example.net>").startswith("503 5.5.1")
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 3\r\nabc")
        assert codes(c.replies(3)) == [250, 250, 250]
    got = daemon.export()
    assert [(e["qid"], m2) for e, m2 in got] == [(qid, m)]


def test_bdat_disconnect_mid_chunk(daemon):
    c = daemon.client()
    c.ehlo()
    c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 100000\r\n"
           + b"x" * 50000)
    assert codes(c.replies(2)) == [250, 250]
    c.close()
    with daemon.client() as c2:
        c2.ehlo()
        qid = queued_id(c2.send_message(make_message()))
    assert [e["qid"] for e, _ in daemon.export()] == [qid]


def test_bdat_too_big(daemons):
    d = daemons(limits={"max_message_size": "10K"})
    with d.client() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n")
        assert codes(c.replies(2)) == [250, 250]
        chunk = (b"a" * 98 + b"\r\n") * 60
        c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
        assert c.reply().code == 250
        c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        r = c.reply()
        assert r.startswith("552 5.3.4"), r
        c.sentinel()
        m = b"Subject: small\r\n\r\nok\r\n"
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT %d LAST\r\n"
               % len(m) + m)
        qid = queued_id(c.replies(3)[2])
    assert [(e["qid"], m2) for e, m2 in d.export()] == [(qid, m)]


@pytest.mark.parametrize("arg", ["99999999999999999999 LAST", "-5", "5 NOTLAST", "", "5x"])
def test_bdat_bad_syntax_closes(daemon, arg):
    with daemon.client() as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.com>")
        c.cmd("RCPT TO:<b@example.net>")
        c.send(("BDAT %s\r\n" % arg).encode().replace(b"BDAT \r\n", b"BDAT\r\n"))
        rs = parse_replies(c.read_until_closed(10))
    assert codes(rs) == [501], rs
    assert daemon.export() == []


def _send_in_thread(c, data):
    import threading
    err = []

    def run():
        try:
            c.send(data)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, err


def test_client_that_does_not_read(daemon):
    """200000 pipelined commands written before reading a single reply: the server applies
    back-pressure and in the end every command has exactly one reply, in order."""
    n = 200000
    with daemon.client(timeout=60) as c:
        c.ehlo()
        t, err = _send_in_thread(c, b"NOOP\r\nVRFY x\r\n" * (n // 2))
        time.sleep(1)                 # let both directions fill up
        rs = c.replies(n, timeout=120)
        t.join(60)
        assert not t.is_alive() and not err, err
        assert all(r.code == (250 if i % 2 == 0 else 252) for i, r in enumerate(rs))
        c.sentinel()


def test_two_hundred_bdat_transactions_in_one_write(daemon):
    n = 200
    contents = [b"Subject: %d\r\n\r\n" % i + b"y" * 998 + b"\r\n" for i in range(n)]
    blob = b"".join(b"MAIL FROM:<s%d@example.com>\r\nRCPT TO:<r@example.net>\r\nBDAT %d LAST\r\n"
                    % (i, len(m)) + m for i, m in enumerate(contents)) + b"QUIT\r\n"
    with daemon.client(timeout=60) as c:
        c.ehlo()
        t, err = _send_in_thread(c, blob)
        rs = parse_replies(c.read_until_closed(120))
        t.join(60)
        assert not err, err
    assert codes(rs) == [250] * (3 * n) + [221]
    qids = [queued_id(rs[3 * i + 2]) for i in range(n)]
    got = daemon.export_by_qid()
    assert len(got) == n
    for i, q in enumerate(qids):
        assert got[q][1] == contents[i] and got[q][0]["from"] == "s%d@example.com" % i
