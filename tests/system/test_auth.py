"""SMTP AUTH (RFC 4954) against the real daemon: PLAIN and LOGIN with smtplib, swaks and a raw
client; refusals, cancel, bad base64, the brakes on guessing (per connection and held
replies), auth = required, the login in the envelope and the accepted log line, reload, and a
session that leaves while its password is being checked.

Most tests run twice: over plaintext ([auth] plaintext = yes) and after STARTTLS (plaintext
off, a self-signed certificate), through the `transport` fixture. No assertion is about time.
"""
import base64
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import warnings

import pytest

from conftest import SLACK, make_message, queued_id, wait_for

SWAKS = shutil.which("swaks")


def _swaks_tls():
    """swaks --tls needs Perl's Net::SSLeay (Debian: libnet-ssleay-perl)."""
    return subprocess.run(["perl", "-MNet::SSLeay", "-e", "1"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


SWAKS_TLS = bool(SWAKS) and _swaks_tls()
HOSTNAME = "relay.test.example"
LONG_USER = "u" * 200          # with LONG_PASS, a PLAIN initial response beyond 512 octets
LONG_PASS = "p" * 255
SLOW_COST = 13                 # bcrypt cost of carol's hash: checks that take a while


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def plain(user, password, authzid=""):
    return b64("%s\0%s\0%s" % (authzid, user, password))


def sha512_crypt(password):
    out = subprocess.run(["openssl", "passwd", "-6", password], check=True,
                         stdout=subprocess.PIPE, timeout=30).stdout
    return out.decode().strip()


def bcrypt(password, cost):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2 ** cost))


def write_passwd(path, alice="secret", extra=()):
    lines = ["# test users",
             "alice:{PLAIN}%s" % alice,
             "bob:{SHA512-CRYPT}%s" % sha512_crypt("hunter2"),
             "%s:{PLAIN}%s" % (LONG_USER, LONG_PASS)] + list(extra)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def start(daemons, tmp_path, transport="plain", listener=None, auth=None, extra_users=(),
          **sections):
    """A daemon with AUTH on its listener (optional unless listener= says otherwise).
    transport "plain": [auth] plaintext = yes; "starttls": a certificate, STARTTLS offered,
    plaintext off; "starttls+plaintext": both."""
    passwd = os.path.join(str(tmp_path), "passwd")
    write_passwd(passwd, extra=extra_users)
    a = {"passwd_file": passwd, "plaintext": "yes"}
    lst = {"auth": "optional"}
    if transport.startswith("starttls"):
        from certs import make_cert
        cert, key = make_cert(str(tmp_path), HOSTNAME)
        sections["tls"] = {"cert": cert, "key": key}
        lst["tls"] = "starttls"
        a["plaintext"] = "yes" if transport.endswith("+plaintext") else "no"
    a.update(auth or {})
    lst.update(listener or {})
    d = daemons(auth=a, **{"listener.main": lst}, **sections)
    d.transport = transport
    d.passwd = passwd
    return d


def secure(c):
    """STARTTLS on a raw client (after EHLO), then EHLO again."""
    r = c.cmd("STARTTLS")
    assert r.startswith("220 2.0.0"), r
    assert c.buf == b""
    c.sock = tls_context().wrap_socket(c.sock, server_hostname=HOSTNAME)
    return c.ehlo()


def connect(d):
    """A raw client that said EHLO (and ran STARTTLS for a TLS daemon); .ehlo_reply kept."""
    c = d.client()
    r = c.ehlo()
    if d.transport == "starttls":
        r = secure(c)
    c.ehlo_reply = r
    return c


def smtp(d):
    """smtplib after EHLO (and STARTTLS for a TLS daemon)."""
    s = smtplib.SMTP("127.0.0.1", d.port, local_hostname="client.example", timeout=10 * SLACK)
    s.ehlo()
    if d.transport == "starttls":
        s.starttls(context=tls_context())
        s.ehlo()
    return s


def auth_lines(d):
    return [l for l in d.log.split("\n") if "event=auth " in l]


def auth_metric(d, result):
    return d.metric("ringrelay_auth_total", {"result": result})


@pytest.fixture(params=["plain", "starttls"])
def transport(request):
    return request.param


# ---- EHLO ----

def test_ehlo_advertises_auth(daemons, tmp_path, transport):
    d = start(daemons, tmp_path, transport)
    with connect(d) as c:
        kw = [l[4:] for l in c.ehlo_reply.lines[1:]]
        assert "AUTH PLAIN LOGIN" in kw, kw
        assert "STARTTLS" not in kw      # not offered again once TLS is up, nor without it
        c.quit()


def test_ehlo_no_auth_before_tls_when_plaintext_is_off(daemons, tmp_path):
    d = start(daemons, tmp_path, "starttls")
    with d.client() as c:
        kw = [l[4:] for l in c.ehlo().lines[1:]]
        assert "STARTTLS" in kw and not any(k.startswith("AUTH") for k in kw), kw
        r = c.cmd("AUTH PLAIN " + plain("alice", "secret"))
        assert r.startswith("538 5.7.11"), r
        assert "Encryption required" in r.last
        c.sentinel()
        c.quit()
    assert auth_metric(d, "refused") == 1
    assert "event=rejected code=538" in d.log


def test_no_auth_where_the_listener_has_none(daemons, tmp_path):
    d = start(daemons, tmp_path, listener={"auth": "none"})
    with d.client() as c:
        kw = [l[4:] for l in c.ehlo().lines[1:]]
        assert not any(k.startswith("AUTH") for k in kw), kw
        assert c.cmd("AUTH PLAIN " + plain("alice", "secret")).startswith("502 5.5.1")
        c.sentinel()
        c.quit()


# ---- the mechanisms ----

def test_plain_with_initial_response_smtplib_envelope_and_log(daemons, tmp_path, transport):
    d = start(daemons, tmp_path, transport)
    msg = make_message("authenticated")
    s = smtp(d)
    try:
        code, resp = s.login("alice", "secret")      # AUTH PLAIN <initial response>
        assert code == 235 and resp == b"2.7.0 Authentication successful", (code, resp)
        assert s.sendmail("a@example.com", ["b@example.net"], msg) == {}
    finally:
        s.quit()
    (env, eml), = d.export()
    assert eml == msg
    assert env["login"] == "alice"
    assert "event=accepted id=%s from=<a@example.com> nrcpt=1 size=%d login=alice " \
        % (env["qid"], len(msg)) in d.log, d.log
    assert auth_metric(d, "success") == 1
    assert any("result=success login=alice" in l and "mech=PLAIN" in l for l in auth_lines(d))
    assert "secret" not in d.log


def test_unauthenticated_message_has_empty_login(daemons, tmp_path):
    d = start(daemons, tmp_path)
    with d.client() as c:
        c.ehlo()
        qid = queued_id(c.send_message(make_message()))
        c.quit()
    (env, _), = d.export()
    assert env["login"] == ""
    assert "event=accepted id=%s from=<a@example.com> nrcpt=1" % qid in d.log
    line = [l for l in d.log.split("\n") if "event=accepted id=" + qid in l][0]
    assert " login= " in line, line


def test_plain_without_initial_response(daemons, tmp_path, transport):
    d = start(daemons, tmp_path, transport)
    with connect(d) as c:
        r = c.cmd("AUTH PLAIN")
        assert r.last == "334 ", r
        r = c.cmd(plain("alice", "secret"))
        assert r.startswith("235 2.7.0"), r
        c.sentinel()
        c.quit()


def test_plain_empty_initial_response_is_a_failed_login(daemons, tmp_path):
    d = start(daemons, tmp_path)
    with connect(d) as c:
        r = c.cmd("AUTH PLAIN =")
        assert r.startswith("535 5.7.8"), r
        c.sentinel()
        c.quit()
    assert auth_metric(d, "malformed") == 1


def test_login_mechanism(daemons, tmp_path, transport):
    d = start(daemons, tmp_path, transport)
    with connect(d) as c:
        assert c.cmd("AUTH LOGIN").last == "334 VXNlcm5hbWU6"      # "Username:"
        assert c.cmd(b64("bob")).last == "334 UGFzc3dvcmQ6"        # "Password:"
        r = c.cmd(b64("hunter2"))
        assert r.startswith("235 2.7.0"), r
        c.quit()
    with connect(d) as c:                                          # user as initial response
        assert c.cmd("AUTH LOGIN " + b64("alice")).last == "334 UGFzc3dvcmQ6"
        assert c.cmd(b64("secret")).startswith("235 2.7.0")
        c.quit()
    s = smtp(d)
    try:
        s.user, s.password = "alice", "secret"
        code, resp = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        assert code == 235, resp
    finally:
        s.quit()
    assert auth_metric(d, "success") == 3
    assert sum("mech=LOGIN" in l for l in auth_lines(d)) == 3


def test_sha512_crypt_user(daemons, tmp_path):
    d = start(daemons, tmp_path)
    with connect(d) as c:
        assert c.cmd("AUTH PLAIN " + plain("bob", "hunter")).startswith("535 5.7.8")
        assert c.cmd("AUTH PLAIN " + plain("bob", "hunter2")).startswith("235 2.7.0")
        c.quit()
    assert "hunter" not in d.log


def test_wrong_password_and_unknown_user(daemons, tmp_path, transport):
    d = start(daemons, tmp_path, transport)
    s = smtp(d)
    try:
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth("PLAIN", lambda challenge=None: "\0alice\0wrong")
        assert e.value.smtp_code == 535
        assert e.value.smtp_error == b"5.7.8 Authentication credentials invalid"
    finally:
        s.close()
    with connect(d) as c:
        r = c.cmd("AUTH PLAIN " + plain("nobody", "secret"))
        assert r.last == "535 5.7.8 Authentication credentials invalid", r
        c.sentinel()
        # a failed AUTH leaves the session as it was: mail goes on (auth optional, loopback)
        queued_id(c.send_message(make_message()))
        c.quit()
    assert auth_metric(d, "failure") == 2
    assert "event=rejected code=535 reason=auth_failed" in d.log
    assert any("result=failure login=nobody" in l for l in auth_lines(d))
    assert "wrong" not in d.log


def test_authzid(daemons, tmp_path):
    d = start(daemons, tmp_path)
    with connect(d) as c:
        r = c.cmd("AUTH PLAIN " + plain("alice", "secret", authzid="bob"))
        assert r.startswith("535 5.7.8"), r
        r = c.cmd("AUTH PLAIN " + plain("alice", "secret", authzid="alice"))
        assert r.startswith("235 2.7.0"), r
        c.quit()
    assert auth_metric(d, "refused") == 1 and auth_metric(d, "success") == 1


@pytest.mark.skipif(not SWAKS, reason="swaks not installed")
@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks(daemons, tmp_path, transport, mech):
    if transport == "starttls" and not SWAKS_TLS:
        pytest.skip("swaks --tls needs Net::SSLeay (libnet-ssleay-perl)")
    d = start(daemons, tmp_path, transport)

    def swaks(password):
        args = [SWAKS, "--server", "127.0.0.1:%d" % d.port, "--auth", mech,
                "--auth-user", "alice", "--auth-password", password,
                "--from", "a@example.com", "--to", "b@example.net",
                "--helo", "client.example", "--timeout", str(int(20 * SLACK))]
        if d.transport == "starttls":
            args.append("--tls")
        return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=60 * SLACK)

    r = swaks("secret")
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out
    assert "235 2.7.0 Authentication successful" in out, out
    assert "250 2.0.0 Ok: queued as" in out, out
    r = swaks("not-it")
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode != 0, out
    assert "535 5.7.8 Authentication credentials invalid" in out, out
    (env, _), = d.export()
    assert env["login"] == "alice"


# ---- ends of an exchange that are not a verdict ----

def test_cancel(daemons, tmp_path, transport):
    d = start(daemons, tmp_path, transport)
    with connect(d) as c:
        assert c.cmd("AUTH PLAIN").last == "334 "
        r = c.cmd("*")
        assert r.startswith("501 5.0.0"), r
        assert c.cmd("AUTH LOGIN").last == "334 VXNlcm5hbWU6"
        assert c.cmd(b64("alice")).last == "334 UGFzc3dvcmQ6"
        assert c.cmd("*").startswith("501 5.0.0")
        c.sentinel()
        # the session is back to normal: AUTH works afterwards
        assert c.cmd("AUTH PLAIN " + plain("alice", "secret")).startswith("235 2.7.0")
        c.quit()
    assert auth_metric(d, "cancelled") == 2
    assert auth_metric(d, "failure") == 0


def test_client_gone_in_the_middle_of_an_exchange(daemons, tmp_path, transport):
    d = start(daemons, tmp_path, transport)
    c = connect(d)
    assert c.cmd("AUTH LOGIN").last == "334 VXNlcm5hbWU6"
    assert c.cmd(b64("alice")).last == "334 UGFzc3dvcmQ6"
    c.close()                                   # no password, no QUIT
    assert wait_for(lambda: auth_metric(d, "cancelled") == 1, 10 * SLACK)
    assert any("reason=connection_closed" in l for l in auth_lines(d)), auth_lines(d)
    assert auth_metric(d, "failure") == 0


def test_bad_base64(daemons, tmp_path):
    d = start(daemons, tmp_path)
    with connect(d) as c:
        r = c.cmd("AUTH PLAIN !!!!")
        assert r.startswith("501 5.5.2"), r
        assert c.cmd("AUTH PLAIN").last == "334 "
        r = c.cmd("not base64 at all")
        assert r.startswith("501 5.5.2"), r
        assert c.cmd("AUTH LOGIN").last == "334 VXNlcm5hbWU6"
        assert c.cmd("YWxpY2U").startswith("501 5.5.2")   # padding missing
        c.sentinel()
        c.quit()
    assert auth_metric(d, "malformed") == 3
    assert d.metric("ringrelay_protocol_errors_total", {"reason": "syntax"}) == 3
    assert "event=rejected code=501" in d.log


REFUSALS = [
    # (name, commands before, the AUTH command, expected reply, metric result)
    ("unknown_mechanism", [], "AUTH CRAM-MD5", "504 5.5.4", "malformed"),
    ("no_mechanism", [], "AUTH", "501 5.5.4", "malformed"),
    ("two_arguments", [], "AUTH PLAIN abcd efgh", "501 5.5.4", "malformed"),
    ("in_transaction", ["MAIL FROM:<a@example.com>"], "AUTH PLAIN " + plain("alice", "secret"),
     "503 5.5.1", "refused"),
    ("already_authenticated", ["AUTH PLAIN " + plain("alice", "secret")],
     "AUTH PLAIN " + plain("alice", "secret"), "503 5.5.1", "refused"),
]


@pytest.mark.parametrize("name,before,command,expect,result", REFUSALS,
                         ids=[r[0] for r in REFUSALS])
def test_refusals(daemons, tmp_path, name, before, command, expect, result):
    d = start(daemons, tmp_path)
    with connect(d) as c:
        for b in before:
            assert c.cmd(b).code < 400
        r = c.cmd(command)
        assert r.startswith(expect), r
        c.sentinel()
        c.quit()
    assert auth_metric(d, result) == 1
    assert "event=rejected code=%s" % expect[:3] in d.log


def test_auth_before_ehlo(daemons, tmp_path):
    d = start(daemons, tmp_path)
    with d.client() as c:
        assert c.cmd("AUTH PLAIN " + plain("alice", "secret")).startswith("503 5.5.1")
        c.sentinel()
        c.quit()


def test_long_initial_response_is_not_a_long_command(daemons, tmp_path, transport):
    d = start(daemons, tmp_path, transport)
    line = "AUTH PLAIN " + plain(LONG_USER, LONG_PASS, authzid=LONG_USER)
    assert len(line) + 2 > 512
    with connect(d) as c:
        assert c.cmd(line).startswith("235 2.7.0")
        c.quit()
    # the same line in two writes (held across input buffers)
    with connect(d) as c:
        c.send(line[:300])
        c.send(line[300:] + "\r\n")
        assert c.reply().startswith("235 2.7.0")
        c.quit()
    # and as a response line
    with connect(d) as c:
        assert c.cmd("AUTH PLAIN").last == "334 "
        c.send(plain(LONG_USER, LONG_PASS, authzid=LONG_USER)[:100])
        c.send(plain(LONG_USER, LONG_PASS, authzid=LONG_USER)[100:] + "\r\n")
        assert c.reply().startswith("235 2.7.0")
        c.quit()


def test_overlong_lines(daemons, tmp_path):
    d = start(daemons, tmp_path)
    with connect(d) as c:
        assert c.cmd("AUTH PLAIN").last == "334 "
        r = c.cmd("QUFB" * 1500)                       # 6000 octets: beyond any credentials
        assert r.startswith("500 5.5.6"), r
        assert c.cmd("AUTH PLAIN").last == "334 "
        r = c.cmd("QUFB" * 3500)                       # 14000: beyond RFC 4954's 12288
        assert r.startswith("500 5.5.6"), r
        r = c.cmd("AUTH PLAIN " + "QUFB" * 3500)
        assert r.startswith("500 5.5.6"), r
        c.sentinel()
        # an ordinary command is still held to 512 octets
        assert c.cmd("NOOP " + "x" * 600).startswith("500 5.5.2")
        c.quit()
    assert auth_metric(d, "malformed") == 3


def test_pipelining_behind_auth_is_refused(daemons, tmp_path):
    d = start(daemons, tmp_path)
    with connect(d) as c:
        c.send("AUTH PLAIN\r\n%s\r\n" % plain("alice", "secret"))
        assert c.reply().startswith("554 5.5.0")
        assert c.is_closed(5)
    with connect(d) as c:                      # LOGIN takes two round trips
        c.send("AUTH LOGIN %s\r\n%s\r\n" % (b64("alice"), b64("secret")))
        assert c.reply().startswith("554 5.5.0")
        assert c.is_closed(5)
    assert auth_metric(d, "success") == 0


def test_pipelining_behind_auth_plain_with_initial_response(daemons, tmp_path):
    """RFC 4954 4: AUTH with the initial response of a one-round-trip mechanism (PLAIN) may
    be followed in its group; what follows is answered after the verdict, and judged by it."""
    d = start(daemons, tmp_path, listener={"auth": "required"})
    with connect(d) as c:
        c.send("AUTH PLAIN %s\r\nMAIL FROM:<a@example.com>\r\n" % plain("alice", "nope"))
        assert c.reply().startswith("535 5.7.8")
        assert c.reply().startswith("530 5.7.0")
        c.sentinel()
        c.quit()
    for _ in range(2):                         # a check in the pool, then a cached success
        with connect(d) as c:
            c.send("AUTH PLAIN %s\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>"
                   "\r\nRSET\r\n" % plain("alice", "secret"))
            assert c.reply().startswith("235 2.7.0")
            assert [c.reply().code for _ in range(3)] == [250, 250, 250]
            c.sentinel()
            c.quit()
    assert auth_metric(d, "success") == 2
    assert auth_metric(d, "failure") == 1
    assert "reason=cached" in "\n".join(auth_lines(d))


# ---- policy ----

def test_auth_required(daemons, tmp_path, transport):
    d = start(daemons, tmp_path, transport, listener={"auth": "required"})
    with connect(d) as c:
        r = c.cmd("MAIL FROM:<a@example.com>")
        assert r.startswith("530 5.7.0"), r
        assert c.cmd("AUTH PLAIN " + plain("alice", "secret")).startswith("235 2.7.0")
        qid = queued_id(c.send_message(make_message("after auth")))
        c.quit()
    assert d.metric("ringrelay_messages_rejected_total", {"reason": "auth_required"}) == 1
    env, _ = d.export_by_qid()[qid]
    assert env["login"] == "alice"


def test_authenticated_client_may_relay(daemons, tmp_path):
    d = start(daemons, tmp_path, policy={"trusted_networks": "10.0.0.0/8"})
    with connect(d) as c:
        assert c.cmd("MAIL FROM:<a@example.com>").code == 250
        assert c.cmd("RCPT TO:<b@example.net>").startswith("554 5.7.1")
        assert c.cmd("RSET").code == 250
        assert c.cmd("AUTH PLAIN " + plain("alice", "secret")).startswith("235 2.7.0")
        queued_id(c.send_message(make_message()))
        c.quit()


# ---- the brakes ----

def test_max_failures_closes(daemons, tmp_path, transport):
    d = start(daemons, tmp_path, transport, auth={"max_failures": 3})
    with connect(d) as c:
        for _ in range(2):
            assert c.cmd("AUTH PLAIN " + plain("alice", "nope")).startswith("535 5.7.8")
        r = c.cmd("AUTH PLAIN " + plain("alice", "nope"))
        assert r.startswith("535 5.7.8"), r
        r = c.reply()
        assert r.last == "421 4.7.0 %s Error: too many authentication failures" % HOSTNAME, r
        assert c.is_closed(5)
    assert auth_metric(d, "failure") == 3
    assert "event=rejected code=421 reason=auth_failures" in d.log


def test_malformed_credentials_count_as_failures(daemons, tmp_path):
    d = start(daemons, tmp_path, auth={"max_failures": 2})
    with connect(d) as c:
        assert c.cmd("AUTH PLAIN " + b64("no nul bytes here")).startswith("535 5.7.8")
        assert c.cmd("AUTH PLAIN " + plain("alice", "secret", authzid="bob")) \
            .startswith("535 5.7.8")
        assert c.reply().startswith("421 4.7.0")
        assert c.is_closed(5)


def test_repeated_failures_hold_replies_back(daemons, tmp_path):
    d = start(daemons, tmp_path, auth={"max_failures": 10})
    with connect(d) as c:
        for _ in range(5):
            assert c.cmd("AUTH PLAIN " + plain("alice", "guess"), timeout=60) \
                .startswith("535 5.7.8")
        # the right password now is held back too, and then succeeds
        assert c.cmd("AUTH PLAIN " + plain("alice", "secret"), timeout=60) \
            .startswith("235 2.7.0")
        c.sentinel()
        c.quit()
    assert d.metric("ringrelay_auth_delays_total") >= 2
    held = [l for l in auth_lines(d) if "delay_ms=0" not in l]
    assert len(held) >= 2, auth_lines(d)
    assert any("result=success" in l for l in held), held


# ---- STARTTLS ----

def test_starttls_verb(daemons, tmp_path):
    d = start(daemons, tmp_path, "starttls+plaintext", listener={"auth": "required"})
    with d.client() as c:
        c.ehlo()
        assert c.cmd("STARTTLS now").startswith("501 5.5.4")
        assert c.cmd("AUTH PLAIN " + plain("alice", "secret")).startswith("235 2.7.0")
        kw = [l[4:] for l in secure(c).lines[1:]]
        assert "AUTH PLAIN LOGIN" in kw and "STARTTLS" not in kw, kw
        # RFC 3207: the login from before TLS is forgotten
        assert c.cmd("MAIL FROM:<a@example.com>").startswith("530 5.7.0")
        assert c.cmd("STARTTLS").startswith("554 5.5.1")
        assert c.cmd("AUTH PLAIN " + plain("alice", "secret")).startswith("235 2.7.0")
        assert c.cmd("MAIL FROM:<a@example.com>").code == 250
        c.quit()


def test_starttls_not_offered_on_a_plain_listener(daemons, tmp_path):
    d = start(daemons, tmp_path)
    with connect(d) as c:
        assert c.cmd("STARTTLS").startswith("502 5.5.1")
        c.sentinel()
        c.quit()


# ---- reload, slow checks ----

def test_reload_replaces_passwords(daemons, tmp_path):
    d = start(daemons, tmp_path)
    with connect(d) as c:
        assert c.cmd("AUTH PLAIN " + plain("alice", "secret")).startswith("235 2.7.0")
        c.quit()
    write_passwd(d.passwd, alice="changed")
    d.signal(signal.SIGHUP)
    assert wait_for(lambda: "event=reloaded" in d.log, 10 * SLACK), d.log
    with connect(d) as c:
        # the success cache does not outlive the database it was made on
        assert c.cmd("AUTH PLAIN " + plain("alice", "secret")).startswith("535 5.7.8")
        assert c.cmd("AUTH PLAIN " + plain("alice", "changed")).startswith("235 2.7.0")
        c.quit()


def test_session_gone_while_its_check_runs(daemons, tmp_path):
    d = start(daemons, tmp_path, extra_users=["carol:{BLF-CRYPT}%s" % bcrypt("slow", SLOW_COST)])
    for _ in range(3):
        c = d.client()
        c.ehlo()
        c.send("AUTH PLAIN %s\r\n" % plain("carol", "slow"))
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
    # every check comes back to a closed session; the daemon logs it and lives on
    assert wait_for(lambda: sum("login=carol" in l for l in auth_lines(d)) == 3, 30 * SLACK), \
        d.log
    assert auth_metric(d, "success") == 3
    with connect(d) as c:
        assert c.cmd("AUTH PLAIN " + plain("carol", "slow"), timeout=30).startswith("235")
        c.quit()


def test_stop_while_a_check_runs(daemons, tmp_path):
    d = start(daemons, tmp_path, extra_users=["carol:{BLF-CRYPT}%s" % bcrypt("slow", SLOW_COST)])
    c = d.client()
    c.ehlo()
    c.send("AUTH PLAIN %s\r\n" % plain("carol", "slow"))
    assert d.stop() == 0, d.log
    c.close()
    assert "event=stopped" in d.log


# ---- metrics ----

def test_metric_families(daemons, tmp_path):
    d = start(daemons, tmp_path)
    text = d.metrics_text()
    for result in ("success", "failure", "malformed", "cancelled", "refused", "error"):
        assert 'ringrelay_auth_total{result="%s"} 0' % result in text, text
    assert "ringrelay_auth_delays_total 0" in text
