"""SMTP AUTH against a real Dovecot ([auth] dovecot_socket): ringrelay asks Dovecot's auth-client
socket (tests/system/dovecot.py starts one per test, auth service only, nothing on the network).

Logins right and wrong, with SHA512-CRYPT and PLAIN users, through PLAIN and LOGIN; users
Dovecot verifies but refuses (nologin, proxy); Dovecot not running, started, stopped and started
again under a running relay (454 while it is away, no restart of the relay needed); a reload to
another Dovecot (the success cache does not carry over); a good login answered while wrong ones
are held back by Dovecot's failure delay; `-t` with a socket that does not exist yet.

Dovecot penalises a client address with recent failures (up to 15 s before its next check):
each test has its own Dovecot and keeps its failures few. No assertion is about time: the one
test about order (a good login not held behind wrong ones) gives Dovecot a failure delay far
above any round trip.
"""
import base64
import select
import signal
import smtplib
import subprocess

import pytest

from conftest import RINGRELAY_BIN, SLACK, child_env, make_message, wait_for
from dovecot import dovecot_factory

USERS = {
    "alice": "alice pw",                                       # {SHA512-CRYPT}
    "bob": ("bob pw", "PLAIN"),
    "carol": ("carol pw", "PLAIN", "nologin reason=gone"),    # verified, but no access
    "dave": ("dave pw", "PLAIN", "proxy host=192.0.2.9"),     # served elsewhere
}


def b64(s):
    return base64.b64encode(s.encode()).decode()


def plain(user, password):
    return b64("\0%s\0%s" % (user, password))


def _readable(sock):
    """Whether sock has something to read now (without waiting)."""
    return bool(select.select([sock], [], [], 0)[0])


@pytest.fixture
def dovecots():
    with dovecot_factory() as make:
        yield make


def relay(daemons, socket_path, **auth):
    a = {"dovecot_socket": socket_path, "plaintext": "yes"}
    a.update(auth)
    return daemons(auth=a, **{"listener.main": {"auth": "optional"}})


def smtp(d, source=None):
    s = smtplib.SMTP("127.0.0.1", d.port, local_hostname="client.example",
                     timeout=60 * SLACK, source_address=(source, 0) if source else None)
    s.ehlo()
    return s


def login(d, user, password, mech="PLAIN"):
    """(code, text) of one AUTH on a fresh connection."""
    s = smtp(d)
    try:
        s.user, s.password = user, password
        return s.auth(mech, s.auth_plain if mech == "PLAIN" else s.auth_login,
                      initial_response_ok=True)
    except smtplib.SMTPAuthenticationError as e:
        return e.smtp_code, e.smtp_error
    finally:
        s.close()


def test_logins_and_the_login_on_the_message(daemons, dovecots):
    dv = dovecots(USERS)
    d = relay(daemons, dv.socket)
    msg = make_message("via dovecot")
    s = smtp(d)
    try:
        code, text = s.login("alice", "alice pw")
        assert code == 235, (code, text)
        assert s.sendmail("a@example.com", ["b@example.net"], msg) == {}
    finally:
        s.quit()
    (env, eml), = d.export()
    assert env["login"] == "alice" and eml == msg
    assert login(d, "bob", "bob pw", "LOGIN")[0] == 235
    assert login(d, "bob", "bob pw", "PLAIN")[0] == 235
    assert d.log.count("event=dovecot_connected") == 1, d.log   # one connection for all
    for secret in ("alice pw", "bob pw"):
        assert secret not in d.log


def test_refusals(daemons, dovecots):
    dv = dovecots(USERS)
    d = relay(daemons, dv.socket)
    code, text = login(d, "alice", "wrong")
    assert code == 535 and text.startswith(b"5.7.8"), (code, text)
    assert login(d, "carol", "carol pw")[0] == 535          # nologin
    assert login(d, "dave", "dave pw")[0] == 535            # proxy
    assert login(d, "nobody", "x")[0] == 535
    assert "event=auth_denied backend=dovecot user=carol reason=nologin" in d.log, d.log
    assert "event=auth_denied backend=dovecot user=dave reason=proxy" in d.log, d.log
    # the client's address reached Dovecot (rip=): auth_verbose names it with the user
    assert "passwd-file(alice,127.0.0.1" in dv.log, dv.log
    for secret in ("carol pw", "dave pw", "wrong"):
        assert secret not in d.log


def test_dovecot_away_then_back(daemons, dovecots):
    dv = dovecots(USERS, start=False)
    d = relay(daemons, dv.socket)           # the socket does not exist yet: fine
    code, text = login(d, "alice", "alice pw")
    assert code == 454 and text.startswith(b"4.7.0"), (code, text)
    assert "event=dovecot_down" in d.log
    dv.start()
    assert login(d, "alice", "alice pw")[0] == 235
    assert "event=dovecot_up" in d.log
    assert dv.stop() == []
    # alice is in the success cache now; bob was never checked, so Dovecot must answer
    assert login(d, "bob", "bob pw")[0] == 454
    dv.start()
    assert login(d, "bob", "bob pw")[0] == 235
    assert d.log.count("event=dovecot_down") == 2, d.log


def test_reload_to_another_dovecot(daemons, dovecots):
    one = dovecots({"alice": "first"})
    two = dovecots({"alice": ("second", "PLAIN")})
    d = relay(daemons, one.socket)
    assert login(d, "alice", "first")[0] == 235             # and cached, for one's socket
    d.set("auth", "dovecot_socket", two.socket)
    d.write_config()
    d.signal(signal.SIGHUP)
    assert wait_for(lambda: "event=reloaded" in d.log, 10 * SLACK), d.log
    assert login(d, "alice", "second")[0] == 235
    assert login(d, "alice", "first")[0] == 535             # the cache did not carry over


def test_good_login_not_held_behind_wrong_ones(daemons, dovecots):
    """Wrong passwords wait in Dovecot (auth_failure_delay, here 5 s: far above a round
    trip, below ringrelay's 30 s reply timeout); a right one sent meanwhile from another
    address is answered while they still wait: requests to Dovecot run side by side, a few
    wrong passwords cannot stall every login."""
    dv = dovecots(USERS, settings={"auth_failure_delay": "5 secs"})
    d = relay(daemons, dv.socket)
    waiting = []
    for i in range(3):
        c = d.client()
        c.ehlo()
        c.send("AUTH PLAIN %s\r\n" % plain("alice", "wrong%d" % i))
        waiting.append(c)
    # Dovecot has seen the three before the good one is sent: its log says so
    assert wait_for(lambda: dv.log.count("Password mismatch") >= 3, 20 * SLACK), dv.log
    # the right one, from 127.0.0.2: Dovecot's penalty for 127.0.0.1 does not apply
    s = smtp(d, source="127.0.0.2")
    try:
        assert s.login("alice", "alice pw")[0] == 235
    finally:
        s.close()
    assert not any(_readable(c.sock) for c in waiting), "a wrong password was answered first"
    for c in waiting:
        r = c.reply(timeout=60 * SLACK)
        assert r.startswith("535 5.7.8"), r
        c.close()



def test_check_config_does_not_need_the_socket(tmp_path):
    conf = tmp_path / "ringrelay.conf"
    spool = tmp_path / "spool"
    conf.write_text("[server]\nhostname = relay.test.example\nspool_dir = %s\n"
                    "[auth]\ndovecot_socket = %s\n" % (spool, tmp_path / "no" / "auth-client"))
    r = subprocess.run([RINGRELAY_BIN, "-c", str(conf), "-t"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30 * SLACK, env=child_env())
    assert r.returncode == 0 and b"configuration ok" in r.stdout + r.stderr, r
    users = tmp_path / "users"
    users.write_text("alice:{PLAIN}x\n")
    conf.write_text(conf.read_text() + "passwd_file = %s\n" % users)
    r = subprocess.run([RINGRELAY_BIN, "-c", str(conf), "-t"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30 * SLACK, env=child_env())
    assert r.returncode != 0, r
    assert b"%s:6: set [auth] passwd_file or dovecot_socket, not both" % str(conf).encode() \
        in r.stdout + r.stderr, r
