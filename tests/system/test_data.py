"""DATA content: what is stored (byte for byte), what is refused, and SMTP smuggling."""
import pytest

from conftest import make_message, queued_id

HDR = b"From: <a@example.com>\r\nSubject: data\r\n\r\n"

# (name, bytes on the wire before the final ".\r\n", bytes that must be stored)
STORED = [
    ("plain", HDR + b"hello\r\n", HDR + b"hello\r\n"),
    ("empty", b"", b""),
    ("one_empty_line", b"\r\n", b"\r\n"),
    ("dot_stuffed", HDR + b"..x\r\n", HDR + b".x\r\n"),
    ("dot_stuffed_first_line", b"..x\r\n", b".x\r\n"),
    ("dot_stuffed_lone_dot", HDR + b"..\r\n", HDR + b".\r\n"),
    ("dot_stuffed_three", HDR + b"...\r\n", HDR + b"..\r\n"),
    ("dot_mid_line", HDR + b"a.b\r\n.\x2e.\r\n", HDR + b"a.b\r\n..\r\n"),
    ("eight_bit", HDR + bytes(range(0x80, 0x100)) + b"\r\n", HDR + bytes(range(0x80, 0x100)) + b"\r\n"),
    ("tabs_and_controls", HDR + b"\tx\x01\x7f\r\n", HDR + b"\tx\x01\x7f\r\n"),
    ("line_of_1000_octets", HDR + b"y" * 998 + b"\r\n", HDR + b"y" * 998 + b"\r\n"),
    ("many_empty_lines", b"\r\n" * 500, b"\r\n" * 500),
    ("crlf_dot_inside_line", HDR + b"x\r\n .\r\n", HDR + b"x\r\n .\r\n"),
]

SPLITS = ["one_write", "byte_by_byte", "seven_bytes", "around_terminator"]


def send_split(c, wire, how):
    if how == "one_write":
        c.send(wire)
    elif how == "byte_by_byte":
        for i in range(len(wire)):
            c.send(wire[i:i + 1])
    elif how == "seven_bytes":
        for i in range(0, len(wire), 7):
            c.send(wire[i:i + 7])
    elif how == "around_terminator":
        # the end of content (CR LF . CR LF) in pieces
        cut = max(len(wire) - 5, 0)
        c.send(wire[:cut])
        for piece in (wire[cut:cut + 1], wire[cut + 1:cut + 3], wire[cut + 3:]):
            if piece:
                c.send(piece)


def open_data(c, mail_from="a@example.com", rcpt="b@example.net"):
    assert c.cmd("MAIL FROM:<%s>" % mail_from).code == 250
    assert c.cmd("RCPT TO:<%s>" % rcpt).code == 250
    r = c.cmd("DATA")
    assert r.code == 354, r


# Every stored-bytes row under every split, except byte by byte for long messages (slow, and
# the seven-byte split already cuts them everywhere that matters).
STORED_SPLITS = [(n, w, st, how) for (n, w, st) in STORED for how in SPLITS
                 if not (how == "byte_by_byte" and len(w) > 600)]


@pytest.mark.parametrize("name,wire,stored,how", STORED_SPLITS,
                         ids=["%s-%s" % (r[0], r[3]) for r in STORED_SPLITS])
def test_stored_bytes(daemon, name, wire, stored, how):
    with daemon.client() as c:
        c.ehlo()
        open_data(c)
        send_split(c, wire + b".\r\n", how)
        qid = queued_id(c.reply())
        c.sentinel()
    (env, eml), = daemon.export()
    assert env["qid"] == qid
    assert eml == stored
    assert env["size"] == str(len(stored))


def test_huge_message_in_one_write(daemon):
    lines = [b"%08d " % i + b"abcdefghijklmnopqrstuvwxyz0123456789" * 2 + b"\r\n" for i in range(50000)]
    lines[100] = b"..stuffed\r\n"
    content = HDR + b"".join(lines)                 # ~4.1 MB
    with daemon.client() as c:
        c.ehlo()
        open_data(c)
        c.send(content + b".\r\n" + b"NOOP\r\n")     # the NOOP after the end is pipelined
        qid = queued_id(c.reply(timeout=60))
        assert c.reply().startswith("250 2.0.0")
        c.sentinel()
    (env, eml), = daemon.export()
    assert env["qid"] == qid
    assert eml == content.replace(b"..stuffed\r\n", b".stuffed\r\n")


def test_many_small_writes_large_message(daemon):
    content = HDR + b"".join(b"line %d of many\r\n" % i for i in range(20000))
    with daemon.client() as c:
        c.ehlo()
        open_data(c)
        wire = content + b".\r\n"
        for i in range(0, len(wire), 1000):
            c.send(wire[i:i + 1000])
        qid = queued_id(c.reply(timeout=60))
    (env, eml), = daemon.export()
    assert env["qid"] == qid and eml == content


# (name, limits, wire before ".\r\n", expected reply, metric reason)
REFUSED = [
    ("bare_lf", {}, HDR + b"a\nb\r\n", "550 5.5.2", "bare_line_ending"),
    ("bare_lf_at_start", {}, b"\nx\r\n", "550 5.5.2", "bare_line_ending"),
    ("bare_cr", {}, HDR + b"a\rb\r\n", "550 5.5.2", "bare_line_ending"),
    ("bare_cr_before_crlf", {}, HDR + b"a\r\r\n", "550 5.5.2", "bare_line_ending"),
    ("nul", {}, HDR + b"a\x00b\r\n", "550 5.6.0", "nul"),
    ("line_1001_octets", {}, HDR + b"z" * 999 + b"\r\n", "552 5.5.2", "line_too_long"),
    ("line_100k", {}, HDR + b"z" * 100000 + b"\r\n", "552 5.5.2", "line_too_long"),
    ("too_big", {"max_message_size": "10K"}, HDR + (b"q" * 98 + b"\r\n") * 150, "552 5.3.4",
     "size"),
    ("too_big_by_one", {"max_message_size": "1K"}, (b"q" * 98 + b"\r\n") * 10 + b"q" * 23 + b"\r\n",
     "552 5.3.4", "size"),
]


@pytest.mark.parametrize("how", ["one_write", "seven_bytes"])
@pytest.mark.parametrize("name,limits,wire,expect,reason", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_after_real_end(daemons, name, limits, wire, expect, reason, how):
    d = daemons(limits=limits)
    with d.client() as c:
        c.ehlo()
        open_data(c)
        send_split(c, wire + b".\r\n", how)
        r = c.reply()
        assert r.startswith(expect), r
        c.sentinel()           # exactly one reply, and the session goes on
        good = make_message("after refusal")
        qid = queued_id(c.send_message(good))
    (env, eml), = d.export()
    assert env["qid"] == qid and eml == good
    assert d.metric("ringrelay_messages_rejected_total", {"reason": reason}) == 1
    assert "event=rejected code=%s" % expect[:3] in d.log


SMUGGLE_TAIL = b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@y.example>\r\nDATA\r\nsmuggled\r\n.\r\n"
SMUGGLING = [
    ("lf_dot_crlf", b"\n.\r\n"),
    ("lf_dot_lf", b"\n.\n"),
    ("crlf_dot_lf", b"\r\n.\n"),
    ("cr_dot_crlf", b"\r.\r\n"),
    ("crlf_dot_cr", b"\r\n.\r"),
    ("cr_dot_cr", b"\r.\r"),
    ("lf_dot_cr_lf", b"\n.\r\n\n"),
    ("crlf_dot_nul_crlf", b"\r\n.\x00\r\n"),
]


@pytest.mark.parametrize("how", ["one_write", "byte_by_byte"])
@pytest.mark.parametrize("name,fake_end", SMUGGLING, ids=[s[0] for s in SMUGGLING])
def test_smuggling_rejected(daemon, name, fake_end, how):
    wire = HDR + b"hello" + fake_end + SMUGGLE_TAIL     # ends in the real CRLF . CRLF
    with daemon.client() as c:
        c.ehlo()
        open_data(c)
        send_split(c, wire, how)
        r = c.reply()
        assert r.code == 550, r
        c.sentinel()           # no reply for a smuggled MAIL/RCPT/DATA
        # no transaction is open: the smuggled MAIL was never executed
        assert c.cmd("RCPT TO:<victim@y.example>").startswith("503 5.5.1")
    assert daemon.export() == []
    assert "evil@x.example" not in daemon.log
    assert "event=accepted" not in daemon.log


@pytest.mark.parametrize("name,fake_end", SMUGGLING[:5], ids=[s[0] for s in SMUGGLING[:5]])
def test_smuggling_normalize_is_one_message(daemons, name, fake_end):
    d = daemons(limits={"bare_line_endings": "normalize"})
    wire = HDR + b"hello" + fake_end + SMUGGLE_TAIL
    with d.client() as c:
        c.ehlo()
        open_data(c)
        c.send(wire)
        qid = queued_id(c.reply())
        c.sentinel()
    (env, eml), = d.export()
    assert env["qid"] == qid
    assert env["from"] == "a@example.com" and env["rcpt"] == ["b@example.net"]
    assert b"MAIL FROM:<evil@x.example>\r\n" in eml and b"smuggled\r\n" in eml
    assert eml.endswith(b"smuggled\r\n")
    assert b"\n" not in eml.replace(b"\r\n", b"") and b"\r" not in eml.replace(b"\r\n", b"")


NORMALIZE = [
    ("bare_lf", HDR + b"a\nb\r\n", HDR + b"a\r\nb\r\n"),
    ("bare_lf_last", HDR + b"a\nb\n\r\n", HDR + b"a\r\nb\r\n\r\n"),
    ("all_bare_lf", b"Subject: x\n\nbody\n\r\n", b"Subject: x\r\n\r\nbody\r\n\r\n"),
    ("bare_cr", HDR + b"a\rb\r\n", HDR + b"a\r\nb\r\n"),
    ("crlf_untouched", HDR + b"a\r\nb\r\n", HDR + b"a\r\nb\r\n"),
]


@pytest.mark.parametrize("name,wire,stored", NORMALIZE, ids=[n[0] for n in NORMALIZE])
def test_normalize_stores_crlf(daemons, name, wire, stored):
    d = daemons(limits={"bare_line_endings": "normalize"})
    with d.client() as c:
        c.ehlo()
        open_data(c)
        # a bare LF before the terminator cannot end DATA: end with a real CRLF . CRLF
        c.send(wire + b".\r\n")
        qid = queued_id(c.reply())
        c.sentinel()
    (env, eml), = d.export()
    assert env["qid"] == qid
    assert eml == stored
