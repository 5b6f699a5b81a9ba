"""
Inbound TLS under awkward timing, with real clients: STARTTLS while earlier replies are still
being sent, SIGTERM in the middle of a handshake, and a TLS client that floods while its
session cannot take input (its AUTH check is out) and must not take every receive buffer of
its worker. No assertion is about time: waits are safety nets.
"""
import base64
import os
import queue
import select
import shutil
import socket
import ssl
import tempfile
import threading
import time

import pytest

from conftest import SLACK, parse_replies, queued_id, wait_for
from conftest import Client
from test_tls import client_ctx, pki, tls_daemon  # noqa: F401 (pki: fixture)


def tls_client(port, bufs=None):
    """An implicit-TLS Client; bufs: its socket's send and receive buffer sizes."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if bufs:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufs)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufs)
    raw.settimeout(10 * SLACK)
    raw.connect(("127.0.0.1", port))
    c = Client.__new__(Client)
    c.timeout, c.buf, c.closed = 10 * SLACK, b"", False
    c.sock = client_ctx().wrap_socket(raw, server_hostname="relay.test.example")
    c.greeting = c.reply()
    return c


def test_replies_being_sent_at_starttls_go_out_once(daemons, pki):
    """Sixteen 512-octet NOOPs fill one receive buffer exactly, so STARTTLS arrives in the
    next one, in the same pass of the worker: the NOOP replies' send is in flight when
    STARTTLS is read. Every reply before the 220 must still be sent exactly once."""
    d = tls_daemon(daemons, pki)
    c = d.client()
    c.ehlo()
    noop = b"NOOP " + b"x" * 505 + b"\r\n"
    assert len(noop) * 16 == 8192          # one receive buffer (ENGINE_BUF_BYTES)
    c.send(noop * 16 + b"STARTTLS\r\n")
    replies = [c.reply() for _ in range(17)]
    assert [r.code for r in replies] == [250] * 16 + [220], replies
    assert c.buf == b""
    # nothing else in the clear: the next bytes are the server's side of the handshake
    c.sock = client_ctx().wrap_socket(c.sock, server_hostname="relay.test.example")
    r = c.cmd("EHLO client.example")
    assert r.code == 250 and r.lines[0].startswith("250-relay.test.example"), r
    c.sentinel()
    c.quit()


def test_sigterm_during_a_handshake(daemons, pki):
    """A session whose handshake is under way has nowhere to put a 421: SIGTERM closes it at
    once (not after the linger, as a handshake timeout), and the daemon exits 0."""
    d = tls_daemon(daemons, pki, limits={"idle_timeout": "300s"})
    silent = socket.create_connection(("127.0.0.1", d.smtps_port), timeout=10 * SLACK)
    half = socket.create_connection(("127.0.0.1", d.smtps_port), timeout=10 * SLACK)
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
    plain = d.client()
    plain.ehlo()
    plain.send(b"STARTTLS\r\n")
    assert plain.reply().code == 220        # and no ClientHello follows
    c = tls_client(d.smtps_port)             # a handshake that finished: gets the 421
    c.ehlo()
    assert d.stop() == 0, d.log
    for s in (silent, half, plain.sock):
        s.settimeout(10 * SLACK)
        assert s.recv(100) == b""            # closed, no plaintext
        s.close()
    assert c.reply().startswith("421 4.3.2"), d.log
    c.close()
    assert 'error="handshake timeout"' not in d.log, d.log
    assert "event=stopped" in d.log


# ---- a flood while the session cannot take input ----

class HeldDovecot:
    """A Dovecot auth socket that takes AUTH requests and answers only when told: a
    password check that lasts as long as the test needs it to."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="rrdv", dir="/tmp")   # sun_path is short
        self.socket = os.path.join(self.dir, "auth-client")
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.socket)
        self.srv.listen(4)
        self.requests = queue.Queue()
        self.conn = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        try:
            self.conn, _ = self.srv.accept()
            self.conn.sendall(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\nCUID\t1\n"
                              b"COOKIE\t" + b"0" * 32 + b"\nDONE\n")
            buf = b""
            while True:
                data = self.conn.recv(4096)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    fields = line.split(b"\t")
                    if fields[0] == b"AUTH":
                        self.requests.put(fields[1].decode())
        except OSError:
            return

    def grant(self, rid):
        self.conn.sendall(("OK\t%s\tuser=alice\n" % rid).encode())

    def close(self):
        for s in (self.conn, self.srv):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)


def test_a_tls_flood_does_not_take_every_receive_buffer(daemons, pki):
    """While a session waits for its AUTH verdict it reads no input; a TLS client that keeps
    sending meanwhile is held to CONN_IN_BUFS_MAX buffers of ciphertext, as a plaintext one
    is, instead of taking every receive buffer of its worker: another client on the same
    worker is still served."""
    dv = HeldDovecot()
    try:
        d = tls_daemon(daemons, pki, server={"workers": 1},
                       listener_smtps={"auth": "optional"},
                       auth={"dovecot_socket": dv.socket, "plaintext": "no"})
        a = tls_client(d.smtps_port)
        a.ehlo()
        a.send("AUTH PLAIN %s\r\n" % base64.b64encode(b"\0alice\0secret").decode())
        rid = dv.requests.get(timeout=10 * SLACK)    # a's session now waits for the verdict
        a.send(b"NOOP\r\n")                           # input that waits behind it
        time.sleep(0.2)                               # (decrypted on its own: a small list)
        sent = [0]

        def flood():
            chunk = b"NOOP\r\n" * 2700                # one 16 KB record per write
            try:
                while True:
                    a.sock.sendall(chunk)
                    sent[0] += len(chunk)
            except (OSError, ValueError):
                pass

        t = threading.Thread(target=flood, daemon=True)
        t.start()
        # until the relay stops reading from a (its buffers held, or all of them taken)
        last, still = -1, 0
        while still < 5 and sent[0] < 256 << 20:
            time.sleep(0.1)
            still = still + 1 if sent[0] == last else 0
            last = sent[0]
        b = d.client()                                # the same worker: its one buffer ring
        assert b.cmd("EHLO other.example").code == 250
        b.quit()
        dv.grant(rid)                                 # (a's socket is the flood's alone)
        assert wait_for(lambda: "event=auth result=success login=alice" in d.log, 10 * SLACK)
    finally:
        dv.close()                                    # an unanswered check fails now
        if "t" in locals():
            socket.socket.shutdown(a.sock, socket.SHUT_RDWR)   # ends the flood
            t.join(10 * SLACK)
        if "a" in locals():
            a.close()                                 # unread replies: a reset, at once


def test_a_session_short_of_plaintext_buffers_resumes(daemons, pki):
    """128 sessions wait for their AUTH verdicts, each with CONN_IN_BUFS_MAX (8) records
    decrypted into the worker's 1024 plaintext buffers and more behind: a new session then
    finds none for its EHLO, waits, and is answered once buffers come back; so is every
    held session, in order."""
    dv = HeldDovecot()
    held = []
    try:
        d = tls_daemon(daemons, pki, server={"workers": 1},
                       limits={"max_connections": 300, "idle_timeout": "60s"},
                       listener_smtps={"auth": "optional"},
                       auth={"dovecot_socket": dv.socket, "plaintext": "no"})
        rids = []
        for _ in range(128):                          # AUTH_DOVECOT_INFLIGHT_MAX checks
            a = tls_client(d.smtps_port)
            a.ehlo()
            a.send("AUTH PLAIN %s\r\n" % base64.b64encode(b"\0alice\0secret").decode())
            rids.append(dv.requests.get(timeout=10 * SLACK))
            for _ in range(10):
                a.send(b"NOOP\r\n")                  # a record each: a buffer each
            held.append(a)
        time.sleep(0.5)                               # (let the last ones be decrypted)
        c = tls_client(d.smtps_port)
        c.send(b"EHLO client.example\r\n")
        for rid in rids:
            dv.grant(rid)
        assert c.reply(timeout=30).code == 250
        for a in held:
            assert a.reply().startswith("235 2.7.0")
            assert [a.reply().code for _ in range(10)] == [250] * 10
            a.quit()
        c.quit()
    finally:
        dv.close()


# ---- a lot of input over TLS ----

def converse(c, data, timeout, read_first=True):
    """Write data on c's TLS socket while reading whatever comes back, from one thread (an
    SSL object takes no concurrent read and write), until the relay closes; the replies.
    read_first False: read nothing until the relay stops taking input (or all is written)."""
    sock, out, got = c.sock, memoryview(data), bytearray(c.buf)
    c.buf = b""
    sock.setblocking(False)
    reading = read_first
    deadline = time.monotonic() + timeout * SLACK
    while time.monotonic() < deadline:
        try:
            while reading or not out:
                chunk = sock.recv(65536)
                if not chunk:
                    return parse_replies(bytes(got))
                got += chunk
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except ConnectionResetError:
            return parse_replies(bytes(got))
        if out:
            try:
                n = sock.send(out[:16384])
                out = out[n:]
                continue
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
        r, w, _ = select.select([sock] if reading or not out else [], [sock] if out else [],
                                [], 0.5)
        if out and not w:
            reading = True           # the relay holds back: now take its replies
    raise AssertionError("the relay did not finish in time; %d bytes unsent, %d read"
                         % (len(out), len(got)))


def test_tls_client_that_does_not_read_at_first(daemons, pki):
    """A million pipelined commands over TLS, most written before a reply is read: the relay
    holds back (its reply buffer, then its input) and every command gets exactly one reply,
    in order."""
    d = tls_daemon(daemons, pki)
    c = tls_client(d.smtps_port, bufs=1 << 16)   # no autotuned megabytes on our side
    c.ehlo()
    n = 1000000
    rs = converse(c, b"NOOP\r\nVRFY x\r\n" * (n // 2) + b"QUIT\r\n", 120, read_first=False)
    assert len(rs) == n + 1, rs[-3:]
    assert all(r.code == (250 if i % 2 == 0 else 252) for i, r in enumerate(rs[:n]))
    assert rs[-1].code == 221


def test_two_hundred_bdat_transactions_in_one_tls_write(daemons, pki):
    """Each message is committed while the next ones wait, decrypted or not: all are
    accepted, in order, with their own content."""
    d = tls_daemon(daemons, pki)
    c = tls_client(d.smtps_port)
    c.ehlo()
    n = 200
    contents = [b"Subject: %d\r\n\r\n" % i + b"y" * 998 + b"\r\n" + (b"z" * 97 + b"\r\n") * i
                for i in range(n)]
    blob = b"".join(b"MAIL FROM:<s%d@example.com>\r\nRCPT TO:<r@example.net>\r\nBDAT %d LAST\r\n"
                    % (i, len(m)) + m for i, m in enumerate(contents)) + b"QUIT\r\n"
    rs = converse(c, blob, 120)
    assert [r.code for r in rs] == [250] * (3 * n) + [221], [r for r in rs if r.code != 250][:5]
    qids = [queued_id(rs[3 * i + 2]) for i in range(n)]
    got = d.export_by_qid()
    assert len(got) == n
    for i, q in enumerate(qids):
        assert got[q][1] == contents[i] and got[q][0]["from"] == "s%d@example.com" % i
