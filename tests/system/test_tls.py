"""
Inbound TLS: STARTTLS (RFC 3207) and implicit TLS listeners, with real clients (Python's ssl
and smtplib, openssl s_client, swaks): versions, ECDSA and RSA certificates, resumption,
the pipelined-plaintext injection, broken and stalled handshakes, certificate reload.
"""
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import SLACK, Client, free_port, make_message, wait_for, queued_id
from certs import make_ca, make_cert


def client_ctx(cafile=None, minv=None, maxv=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if minv:
        ctx.minimum_version = minv
    if maxv:
        ctx.maximum_version = maxv
    return ctx


@pytest.fixture
def pki(tmp_path):
    d = str(tmp_path)
    ca = make_ca(d)
    return {
        "dir": d,
        "ca": ca,
        "ec": make_cert(d, "relay.test.example", ca=ca, kind="ec", prefix="ec"),
        "rsa": make_cert(d, "relay.test.example", ca=ca, kind="rsa", prefix="rsa"),
        "other": make_cert(d, "other.test.example", ca=ca, kind="ec", prefix="other"),
    }


def tls_daemon(daemons, pki, kind="ec", start=True, **extra):
    cert, key = pki[kind]
    sections = {
        "listener_main": {"tls": "starttls"},
        "listener_smtps": {"listen": "127.0.0.1:%d" % free_port(), "tls": "implicit"},
        "tls": {"cert": cert, "key": key},
    }
    for k, v in extra.items():
        sections.setdefault(k, {}).update(v)
    d = daemons(start=start, **sections)
    d.smtps_port = int(d.sections["listener.smtps"]["listen"].rsplit(":", 1)[1])
    return d


def tls_client(port, ctx=None, server_hostname="relay.test.example"):
    """A raw client wrapped in TLS from the first byte (implicit TLS)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10 * SLACK)
    s = (ctx or client_ctx()).wrap_socket(raw, server_hostname=server_hostname)
    c = Client.__new__(Client)
    c.timeout, c.sock, c.buf, c.closed = 10 * SLACK, s, b"", False
    c.greeting = c.reply()
    return c


def starttls(c, ctx=None, server_hostname="relay.test.example"):
    """STARTTLS on a raw Client after EHLO; returns the same client, now over TLS."""
    r = c.cmd("STARTTLS")
    assert r.code == 220, r
    assert c.buf == b""
    c.sock = (ctx or client_ctx()).wrap_socket(c.sock, server_hostname=server_hostname)
    return c


def handshakes(d, result):
    return d.metric("ringrelay_tls_handshakes_total", {"result": result}, 0)


# ---- implicit TLS ----

def test_implicit_tls_smtplib_sends_a_message(daemons, pki):
    d = tls_daemon(daemons, pki)
    ctx = client_ctx(pki["ca"][0])
    ctx.check_hostname = False      # smtplib names the server by its address; the chain is checked
    with smtplib.SMTP_SSL("127.0.0.1", d.smtps_port, context=ctx, timeout=10 * SLACK) as s:
        code, _ = s.ehlo()
        assert code == 250
        assert "STARTTLS" not in s.esmtp_features and "starttls" not in s.esmtp_features
        body = make_message("over tls", ["line %d" % i for i in range(20000)])
        s.sendmail("a@example.com", ["b@example.net"], body)
    assert handshakes(d, "success") == 1
    msgs = wait_for(d.export, 10 * SLACK)
    assert len(msgs) == 1 and msgs[0][1] == body


def test_implicit_tls_versions_and_rsa_certificate(daemons, pki):
    d = tls_daemon(daemons, pki, kind="rsa")
    for ver in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        c = tls_client(d.smtps_port, client_ctx(pki["ca"][0], minv=ver, maxv=ver))
        assert c.greeting.code == 220
        assert c.sock.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                                     ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[ver]
        cipher = c.sock.cipher()[0]
        assert "GCM" in cipher or "CHACHA20" in cipher, cipher
        if ver == ssl.TLSVersion.TLSv1_2:
            assert cipher.startswith("ECDHE-RSA-"), cipher
        c.ehlo()
        c.quit()
    assert handshakes(d, "success") == 2


def test_old_protocol_versions_are_refused(daemons, pki):
    d = tls_daemon(daemons, pki)
    ctx = client_ctx(maxv=ssl.TLSVersion.TLSv1_1)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    raw = socket.create_connection(("127.0.0.1", d.smtps_port), timeout=10 * SLACK)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        ctx.wrap_socket(raw, server_hostname="relay.test.example")
    raw.close()
    assert wait_for(lambda: handshakes(d, "failure") >= 1, 5 * SLACK)
    assert "event=tls_failed" in d.log
    # the worker goes on serving
    c = tls_client(d.smtps_port)
    c.ehlo()
    c.quit()


def test_resumed_sessions_are_cheap_reconnects(daemons, pki):
    d = tls_daemon(daemons, pki)
    sess = os.path.join(pki["dir"], "sess.pem")
    for ver in ("-tls1_3", "-tls1_2"):
        first = subprocess.run(["openssl", "s_client", ver, "-connect",
                                "127.0.0.1:%d" % d.smtps_port, "-ign_eof", "-sess_out", sess],
                               input=b"QUIT\r\n", stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=20 * SLACK)
        assert b"220 relay.test.example" in first.stdout, first.stdout[-2000:]
        second = subprocess.run(["openssl", "s_client", ver, "-connect",
                                 "127.0.0.1:%d" % d.smtps_port, "-ign_eof", "-sess_in", sess],
                                input=b"QUIT\r\n", stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=20 * SLACK)
        assert b"Reused, TLSv1." in second.stdout, second.stdout[-3000:]
    assert handshakes(d, "resumed") == 2
    assert handshakes(d, "success") == 2
    assert "resumed=yes" in d.log


def s_client_temp_key(port, *args):
    """openssl s_client against port with args; its "Server Temp Key" (the key exchange
    group it got), or None when the handshake failed."""
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-ign_eof"]
                       + list(args), input=b"QUIT\r\n", stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20 * SLACK)
    out = r.stdout.decode("utf-8", "replace")
    m = re.search(r"Server Temp Key: ([^\n]+)", out)
    if m and "220 relay.test.example" in out:
        return m.group(1)
    return None


def test_key_exchange_groups(daemons, pki):
    """X25519 is preferred; a client with only P-256 (or only another group the server
    keeps) completes too. Default clients (Python's ssl, OpenSSL) get X25519."""
    d = tls_daemon(daemons, pki)
    port = d.smtps_port
    for ver in ("-tls1_3", "-tls1_2"):
        assert s_client_temp_key(port, ver) == "X25519, 253 bits"
        assert s_client_temp_key(port, ver, "-groups", "P-256").startswith("ECDH, prime256v1")
        # both offered, P-256 first: in TLS 1.3 the one key share the client sent is taken
        # rather than costing a HelloRetryRequest round trip; in TLS 1.2 wolfSSL takes the
        # client's first 256-bit group
        temp = s_client_temp_key(port, ver, "-groups", "P-256:X25519")
        assert temp.startswith("ECDH, prime256v1"), temp
    assert s_client_temp_key(port, "-tls1_3", "-groups", "X25519") == "X25519, 253 bits"
    for g, want in (("P-384", "ECDH, secp384r1"), ("P-521", "ECDH, secp521r1"),
                    ("X448", "X448"), ("ffdhe2048", "DH, 2048 bits")):
        temp = s_client_temp_key(port, "-tls1_3", "-groups", g)
        assert temp and temp.startswith(want), (g, temp)
    # TLS 1.2 with an ECDSA P-256 certificate needs P-256 among the client's groups (RFC 8422
    # 5.1), as with OpenSSL servers: X25519 alone fails there, and the failure is counted.
    assert s_client_temp_key(port, "-tls1_2", "-groups", "X25519") is None
    assert wait_for(lambda: handshakes(d, "failure") == 1, 5 * SLACK)
    c = tls_client(port)  # Python's ssl with its defaults
    assert c.sock.version() == "TLSv1.3"
    c.ehlo()
    c.quit()
    assert wait_for(lambda: re.findall(r"event=tls peer=\S+ version=TLSv1.3 \S+ group=(\S+)",
                                       d.log)[-1:] == ["X25519"], 5 * SLACK)
    assert "group=SECP256R1" in d.log


def test_key_exchange_groups_rsa_tls12(daemons, pki):
    """With an RSA certificate the curve constraint of TLS 1.2 goes away: X25519 alone works
    in both versions."""
    d = tls_daemon(daemons, pki, kind="rsa")
    for ver in ("-tls1_3", "-tls1_2"):
        assert s_client_temp_key(d.smtps_port, ver, "-groups", "X25519") == "X25519, 253 bits"
        temp = s_client_temp_key(d.smtps_port, ver, "-groups", "P-256")
        assert temp.startswith("ECDH, prime256v1"), temp


def test_garbage_instead_of_a_client_hello(daemons, pki):
    d = tls_daemon(daemons, pki)
    for junk in (b"EHLO plaintext.example\r\n", os.urandom(3000),
                 b"\x16\x03\x01\x40\x00" + b"\x01" * 20):
        s = socket.create_connection(("127.0.0.1", d.smtps_port), timeout=10 * SLACK)
        s.sendall(junk)
        if junk.startswith(b"\x16"):
            s.shutdown(socket.SHUT_WR)   # a truncated record, then the end
        s.settimeout(10 * SLACK)
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        s.close()
        assert b"220" not in data     # no plaintext ever comes out of a TLS listener
    assert wait_for(lambda: handshakes(d, "failure") >= 2, 5 * SLACK)
    assert handshakes(d, "success") == 0
    c = tls_client(d.smtps_port)
    c.ehlo()
    c.quit()


def test_a_stalled_handshake_is_cut(daemons, pki):
    d = tls_daemon(daemons, pki, limits={"idle_timeout": "2s"})
    silent = socket.create_connection(("127.0.0.1", d.smtps_port), timeout=10 * SLACK)
    half = socket.create_connection(("127.0.0.1", d.smtps_port), timeout=10 * SLACK)
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
    # meanwhile the worker serves others
    c = tls_client(d.smtps_port)
    c.ehlo()
    c.quit()
    for s in (silent, half):
        s.settimeout(20 * SLACK)
        assert s.recv(100) == b""
        s.close()
    assert handshakes(d, "timeout") == 2
    assert d.log.count('error="handshake timeout"') == 2


# ---- STARTTLS ----

def test_starttls_advertised_only_before_tls(daemons, pki):
    d = tls_daemon(daemons, pki)
    c = d.client()
    r = c.ehlo()
    assert "250-STARTTLS" in r.text or "250 STARTTLS" in r.text
    starttls(c)
    # all state is reset: MAIL needs a fresh EHLO
    assert c.cmd("MAIL FROM:<a@example.com>").code == 503
    r = c.ehlo()
    assert "STARTTLS" not in r.text
    r = c.cmd("STARTTLS")
    assert r.code == 554 and "5.5.1" in r.last
    assert c.send_message(make_message("after starttls")).code == 250
    c.quit()
    assert handshakes(d, "success") == 1


def test_starttls_not_offered_without_tls_listener(daemons, pki):
    cert, key = pki["ec"]
    d = daemons(tls={"cert": cert, "key": key})
    c = d.client()
    assert "STARTTLS" not in c.ehlo().text
    assert c.cmd("STARTTLS").code == 502
    c.quit()


def test_starttls_with_argument_is_a_syntax_error(daemons, pki):
    d = tls_daemon(daemons, pki)
    c = d.client()
    c.ehlo()
    assert c.cmd("STARTTLS now").code == 501
    c.quit()


def test_plaintext_pipelined_after_starttls_is_never_executed(daemons, pki):
    """RFC 3207 section 4.2 / CVE-2011-0411: STARTTLS and RSET in one segment."""
    d = tls_daemon(daemons, pki)
    c = d.client()
    c.ehlo()
    c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@example.com>\r\n")
    r = c.reply()
    assert r.code == 220, r
    # nothing else may follow in plaintext: the 220 is all
    c.sock.settimeout(0.5)
    try:
        extra = c.sock.recv(100)
    except socket.timeout:
        extra = b""
    assert extra == b"", extra
    c.sock.settimeout(10 * SLACK)
    c.sock = client_ctx().wrap_socket(c.sock, server_hostname="relay.test.example")
    # the first reply inside TLS answers our EHLO; no RSET or MAIL reply precedes it
    r = c.cmd("EHLO client.example")
    assert r.code == 250 and r.lines[0].startswith("250-relay.test.example"), r
    c.sentinel()
    assert c.cmd("MAIL FROM:<a@example.com>").code == 250  # no transaction was left open
    c.quit()
    assert "injected@example.com" not in d.log


def test_openssl_s_client_starttls_smtp(daemons, pki):
    d = tls_daemon(daemons, pki)
    r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                        "127.0.0.1:%d" % d.port, "-CAfile", pki["ca"][0],
                        "-verify_hostname", "relay.test.example", "-verify_return_error",
                        "-crlf", "-quiet"],
                       input=b"QUIT\n", stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20 * SLACK)
    out = r.stdout.decode("utf-8", "replace")
    # s_client said EHLO and STARTTLS in the clear, verified the chain and the name, then
    # our QUIT went inside TLS
    assert r.returncode == 0 and "verify return:1" in out, out
    assert "221 2.0.0" in out, out
    assert handshakes(d, "success") == 1


def test_swaks_starttls_and_implicit(daemons, pki):
    d = tls_daemon(daemons, pki)
    for args in (["--tls"], ["--tlsc", "--port", str(d.smtps_port)]):
        cmd = ["swaks", "--server", "127.0.0.1", "--port", str(d.port), "--from",
               "a@example.com", "--to", "b@example.net", "--timeout", str(int(20 * SLACK))] + args
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=60 * SLACK)
        out = r.stdout.decode("utf-8", "replace")
        assert r.returncode == 0, out
        assert "TLS started" in out and re.search(r"<~  250 2\.0\.0 Ok: queued as", out), out
    assert handshakes(d, "success") == 2
    assert len(wait_for(d.export, 10 * SLACK)) == 2


def test_many_pipelined_messages_over_tls(daemons, pki):
    d = tls_daemon(daemons, pki)
    c = tls_client(d.smtps_port)
    c.ehlo()
    n = 60
    batch = b""
    for i in range(n):
        body = make_message("m%d" % i, ["x" * 900] * 20)
        batch += (b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        batch += body + b".\r\n"
    # DATA ends a pipelining group: send message by message, but each in one write
    for i in range(n):
        one = batch[:batch.index(b"DATA\r\n") + 6]
        rest = batch[len(one):]
        c.send(one)
        assert [r.code for r in c.replies(3)] == [250, 250, 354]
        end = rest.index(b"\r\n.\r\n") + 5
        c.send(rest[:end])
        assert c.reply().code == 250
        batch = rest[end:]
    c.quit()
    assert len(wait_for(lambda: len(d.export()) == n and d.export(), 20 * SLACK)) == n


# ---- certificate reload ----

def subject_of(port):
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port],
                       input=b"", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=20 * SLACK)
    m = re.search(rb"subject=CN\s*=\s*(\S+)", r.stdout)
    assert m, r.stdout[-2000:]
    return m.group(1).decode()


def test_certificate_reload_keeps_running_sessions(daemons, pki):
    live_cert = os.path.join(pki["dir"], "live.pem")
    live_key = os.path.join(pki["dir"], "live.key")
    for src, dst in ((pki["ec"][0], live_cert), (pki["ec"][1], live_key)):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read())
    d = tls_daemon(daemons, pki, start=False)
    d.set("tls", "cert", live_cert)
    d.set("tls", "key", live_key)
    d.start()
    assert subject_of(d.smtps_port) == "relay.test.example"
    running = tls_client(d.smtps_port)
    running.ehlo()
    # swap in another certificate and reload
    for src, dst in ((pki["other"][0], live_cert), (pki["other"][1], live_key)):
        with open(src, "rb") as f, open(dst + ".new", "wb") as g:
            g.write(f.read())
        os.rename(dst + ".new", dst)
    d.signal(signal.SIGHUP)
    assert wait_for(lambda: "event=reloaded" in d.log, 10 * SLACK)
    assert subject_of(d.smtps_port) == "other.test.example"
    # the session that began before the reload goes on with its own keys
    assert running.send_message(make_message("across reload")).code == 250
    running.quit()
    # a broken certificate on reload keeps the one in use
    with open(live_key, "w") as f:
        f.write("not a key\n")
    d.signal(signal.SIGHUP)
    assert wait_for(lambda: "event=reload_failed" in d.log, 10 * SLACK)
    assert subject_of(d.smtps_port) == "other.test.example"


def run_check(d, *args):
    from conftest import RINGRELAY_BIN
    d.port = free_port()
    d.sections["listener.main"]["listen"] = "127.0.0.1:%d" % d.port
    d.write_config()
    return subprocess.run([RINGRELAY_BIN, "-c", d.config] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=30 * SLACK, cwd=d.workdir)


def test_tls_listener_without_certificate_refuses_to_start(daemons, pki):
    d = daemons(start=False, listener_main={"tls": "implicit"})
    r = run_check(d)
    assert r.returncode != 0
    assert re.search(rb"ringrelay.conf:\d+: tls: implicit on \[listener.main\] needs \[tls\] "
                     rb"cert and key", r.stdout), r.stdout


def test_check_mode_reports_a_key_that_does_not_match(daemons, pki):
    d = tls_daemon(daemons, pki, start=False)
    d.set("tls", "key", pki["rsa"][1])
    r = run_check(d, "-t")
    assert r.returncode != 0
    assert re.search(rb"ringrelay.conf:\d+: cert: .*does not match", r.stdout), r.stdout
