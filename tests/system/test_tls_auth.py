"""
AUTH over implicit TLS (port 465 style), the way customers' mail clients do it: Python's
smtplib.SMTP_SSL and swaks --tlsc, PLAIN and LOGIN, good and bad passwords, on a listener
with auth = required; and the same account over STARTTLS on the submission listener.
"""
import os
import smtplib
import ssl
import subprocess

import pytest

from certs import make_cert
from conftest import SLACK, free_port, make_message, wait_for
from test_auth import sha512_crypt

HOSTNAME = "relay.test.example"


def ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


@pytest.fixture
def relay(daemons, tmp_path):
    d = str(tmp_path)
    cert, key = make_cert(d, HOSTNAME)
    users = os.path.join(d, "users")
    with open(users, "w") as f:
        f.write("carol@example.com:{SHA512-CRYPT}%s\n" % sha512_crypt("c0rrect horse"))
    r = daemons(start=False, tls={"cert": cert, "key": key},
                auth={"passwd_file": users, "plaintext": "no"},
                listener_main={"tls": "starttls", "auth": "required"},
                listener_smtps={"listen": "127.0.0.1:%d" % free_port(), "tls": "implicit",
                                "auth": "required"})
    r.start()
    r.smtps_port = int(r.sections["listener.smtps"]["listen"].rsplit(":", 1)[1])
    return r


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_smtplib_implicit_tls_login(relay, mech):
    with smtplib.SMTP_SSL("127.0.0.1", relay.smtps_port, context=ctx(),
                          timeout=20 * SLACK) as s:
        s.ehlo("client.example")
        assert mech in s.esmtp_features["auth"].split()
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("carol@example.com", "wrong", initial_response_ok=(mech == "PLAIN"))
        assert e.value.smtp_code == 535
        s.user, s.password = "carol@example.com", "c0rrect horse"
        code, _ = s.auth(mech, getattr(s, "auth_" + mech.lower()),
                         initial_response_ok=(mech == "PLAIN"))
        assert code == 235
        s.sendmail("carol@example.com", ["dave@example.net"], make_message("implicit"))
    (env, _), = wait_for(relay.export, 10 * SLACK)
    assert env["login"] == "carol@example.com"
    assert "login=carol@example.com" in relay.log


def test_smtplib_starttls_login_and_mail_before_auth(relay):
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=20 * SLACK) as s:
        s.ehlo("client.example")
        assert "auth" not in s.esmtp_features      # not offered before TLS
        s.starttls(context=ctx())
        s.ehlo("client.example")
        code, msg = s.mail("carol@example.com")
        assert code == 530 and msg.startswith(b"5.7.0"), msg
        s.rset()
        s.login("carol@example.com", "c0rrect horse")
        s.sendmail("carol@example.com", ["dave@example.net"], make_message("starttls"))
    assert relay.metric("ringrelay_auth_total", {"result": "success"}) == 1


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks_implicit_tls(relay, mech):
    def swaks(password):
        return subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(relay.smtps_port), "--tlsc",
             "--auth", mech, "--auth-user", "carol@example.com", "--auth-password", password,
             "--from", "carol@example.com", "--to", "dave@example.net",
             "--helo", "client.example", "--timeout", str(int(20 * SLACK))],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60 * SLACK)
    r = swaks("nope")
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode != 0 and "535 5.7.8" in out, out
    r = swaks("c0rrect horse")
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out
    assert "235 2.7.0" in out and "250 2.0.0 Ok: queued as" in out, out
    assert relay.metric("ringrelay_tls_handshakes_total", {"result": "success"}) == 2
