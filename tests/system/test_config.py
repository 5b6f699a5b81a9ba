"""Configuration: -t, FILE:LINE problem reports, -o overrides, embedded defaults."""
import fcntl
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import (READY_TIMEOUT, REPO, child_env, RINGCTL_BIN, RINGRELAY_BIN, SLACK, Client, free_port,
                      make_message, port_is_free, queued_id)

GOOD = """\
# a good configuration
[server]
hostname = relay.test.example   # inline comment
workers = 2
spool_dir = {dir}/spool
metrics_listen = 127.0.0.1:{mport}
spool_min_free = 0
segment_size = 4M

[listener.main]
listen = 127.0.0.1:{port}
auth = none

; another comment style
[limits]
max_message_size = 10M
max_recipients = 5
idle_timeout = 2m
greeting_delay = 0
bare_line_endings = reject
max_errors = 10

[policy]
trusted_networks = 127.0.0.0/8, ::1/128, 10.0.0.0/8
"""


def run(args, cwd=None, timeout=30):
    return subprocess.run([RINGRELAY_BIN] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout * SLACK, cwd=cwd, env=child_env())


def write(tmp_path, text, name="ringrelay.conf"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def good(tmp_path):
    return GOOD.format(dir=tmp_path, port=free_port(), mport=free_port())


def test_check_good_file(tmp_path):
    path = write(tmp_path, good(tmp_path))
    r = run(["-t", "-c", path])
    assert r.returncode == 0, r.stderr
    assert b"configuration ok" in r.stdout
    assert not os.path.exists(tmp_path / "spool")     # -t creates nothing


def test_check_example_config(tmp_path):
    example = os.path.join(REPO, "deploy", "ringrelay.conf.example")
    if not os.path.exists(example):
        pytest.skip("no deploy/ringrelay.conf.example")
    # the demo's certificate and passwd-file, made as `make run` makes them
    subprocess.run(["sh", os.path.join(REPO, "deploy", "demo-files.sh"), str(tmp_path)],
                   check=True, timeout=60)
    r = run(["-t", "-c", example], cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr


# (name, text to append or replace with, the line the problem must be reported at, words)
BAD = [
    ("unknown_key", "[limits]\nmax_recipients = 5\nbogus_key = 1\n", 3, "bogus_key"),
    ("unknown_section", "[server]\nworkers = 1\n[nosuch]\nx = 1\n", 3, "nosuch"),
    ("bad_duration", "[limits]\nidle_timeout = 5x\n", 2, "idle_timeout"),
    ("bad_duration_negative", "[limits]\nidle_timeout = -5s\n", 2, "idle_timeout"),
    ("bad_size", "[limits]\nmax_message_size = 10Q\n", 2, "max_message_size"),
    ("bad_number", "[limits]\nmax_recipients = many\n", 2, "max_recipients"),
    ("bad_listen_port", "[listener.x]\nlisten = 127.0.0.1:99999\n", 2, "listen"),
    ("bad_listen_host", "[listener.x]\nlisten = mail.example.com:25\n", 2, "listen"),
    ("bad_metrics_address", "[server]\nmetrics_listen = 1.2.3:80\n", 2, "metrics_listen"),
    ("bad_network", "[policy]\ntrusted_networks = 10.0.0.0/33\n", 2, "trusted_networks"),
    ("bad_enum", "[limits]\nbare_line_endings = sometimes\n", 2, "bare_line_endings"),
    ("syntax", "[limits]\nthis line has no equals sign\n", 2, ""),
]


@pytest.mark.parametrize("name,text,line,word", BAD, ids=[b[0] for b in BAD])
def test_check_bad_file(tmp_path, name, text, line, word):
    path = write(tmp_path, text)
    r = run(["-t", "-c", path])
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0, err
    assert b"configuration ok" not in r.stdout
    lines = [l for l in err.split("\n") if l]
    assert lines, "no problem reported"
    for l in lines:
        assert re.match(r"^(%s|-o):\d+: \S" % re.escape(path), l), "not FILE:LINE: %r" % l
    assert any(l.startswith("%s:%d: " % (path, line)) and word in l for l in lines), lines


def test_check_reports_every_problem(tmp_path):
    text = ("[server]\nhostname = h.example\nbogus = 1\n[nosuch]\nx = 1\n[limits]\n"
            "idle_timeout = 5x\nmax_recipients = lots\n")
    path = write(tmp_path, text)
    r = run(["-t", "-c", path])
    assert r.returncode != 0
    err = r.stderr.decode()
    for n in (3, 4, 7, 8):
        assert "%s:%d: " % (path, n) in err, err


def test_check_missing_cert_of_starttls_listener(tmp_path):
    text = good(tmp_path) + ("\n[listener.submission]\nlisten = 127.0.0.1:%d\ntls = starttls\n"
                             "\n[tls]\ncert = %s/missing-cert.pem\nkey = %s/missing-key.pem\n"
                             % (free_port(), tmp_path, tmp_path))
    path = write(tmp_path, text)
    cert_line = text.split("\n").index("cert = %s/missing-cert.pem" % tmp_path) + 1
    r = run(["-t", "-c", path])
    err = r.stderr.decode()
    assert r.returncode != 0, err
    assert "%s:%d: " % (path, cert_line) in err and "missing-cert.pem" in err, err


def test_check_starttls_without_cert(tmp_path):
    text = good(tmp_path) + "\n[listener.s]\nlisten = 127.0.0.1:%d\ntls = starttls\n" % free_port()
    path = write(tmp_path, text)
    r = run(["-t", "-c", path])
    assert r.returncode != 0
    assert re.search(r"^%s:\d+: .*cert" % re.escape(path), r.stderr.decode(), re.M), r.stderr


def test_missing_config_file(tmp_path):
    path = str(tmp_path / "nope.conf")
    r = run(["-t", "-c", path])
    assert r.returncode != 0
    assert r.stderr.decode().startswith(path + ":")
    r = run(["-c", path])
    assert r.returncode != 0


def test_bad_config_refuses_to_start(tmp_path):
    path = write(tmp_path, good(tmp_path) + "\n[limits]\nidle_timeout = soon\n")
    r = run(["-c", path])
    assert r.returncode != 0
    assert "idle_timeout" in r.stderr.decode()
    assert not os.path.exists(tmp_path / "spool")


def test_override_on_check(tmp_path):
    path = write(tmp_path, good(tmp_path))
    r = run(["-t", "-c", path, "-o", "limits.max_recipients=7", "-o",
             "listener.main.auth=none"])
    assert r.returncode == 0, r.stderr
    assert b"configuration ok" in r.stdout


@pytest.mark.parametrize("override,word", [
    ("limits.no_such_key=1", "no_such_key"),
    ("nosection.key=1", "nosection"),
    ("limits.max_recipients=abc", "max_recipients"),
    ("limits.max_recipients", ""),
], ids=["unknown_key", "unknown_section", "bad_value", "no_equals"])
def test_override_errors(tmp_path, override, word):
    path = write(tmp_path, good(tmp_path))
    r = run(["-t", "-c", path, "-o", override])
    err = r.stderr.decode()
    assert r.returncode != 0, err
    assert re.search(r"^-o:1: .*%s" % re.escape(word), err, re.M), err
    # and it does not start either
    r = run(["-c", path, "-o", override])
    assert r.returncode != 0


def test_override_applies(daemons):
    d = daemons(limits={"max_recipients": 5}, args=["-o", "limits.max_recipients=2",
                                                    "-o", "server.hostname=over.example"])
    with d.client() as c:
        assert c.greeting.last.startswith("220 over.example ")
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.com>")
        codes = [c.cmd("RCPT TO:<r%d@example.net>" % i).code for i in range(3)]
        assert codes == [250, 250, 452]


def test_embedded_defaults(tmp_path):
    # The default ports are fixed: the two passes of tests/run.sh, which run side by side,
    # take turns here (flock is released when the file closes, even if the test fails).
    with open("/tmp/ringrelay-test-default-ports.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        embedded_defaults(tmp_path)


def listenable(port):
    """Whether a listener could bind port now as the daemon does (SO_REUSEADDR: connections
    of an earlier run still in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
        return True


def embedded_defaults(tmp_path):
    if not (listenable(2525) and listenable(9425)):
        pytest.skip("127.0.0.1:2525 or :9425 is in use")
    log = tmp_path / "log"
    with open(log, "wb") as lf:
        # Embedded defaults but one: the default next hop is an MX lookup through the system
        # resolver, and tests send nothing beyond loopback.
        p = subprocess.Popen([RINGRELAY_BIN, "-o", "relay.smarthost=[127.0.0.1]:9"],
                             stdout=lf, stderr=lf, cwd=str(tmp_path),
                             stdin=subprocess.DEVNULL, env=child_env())
    try:
        deadline = time.monotonic() + READY_TIMEOUT * SLACK
        while b"event=ready" not in log.read_bytes():
            if p.poll() is not None:
                text = log.read_bytes().decode(errors="replace")
                if "Address already in use" in text:
                    pytest.skip("default port taken meanwhile")
                pytest.fail("exited %s before ready:\n%s" % (p.returncode, text))
            assert time.monotonic() < deadline, log.read_bytes()
            time.sleep(0.02)
        text = log.read_bytes().decode()
        assert "127.0.0.1:2525" in text and "127.0.0.1:9425" in text
        with Client(2525) as c:
            assert c.greeting.code == 220
            c.ehlo()
            m = make_message("defaults")
            qid = queued_id(c.send_message(m))
        assert (tmp_path / "spool").is_dir()
        r = subprocess.run([RINGCTL_BIN, "spool"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, cwd=str(tmp_path), timeout=30,
                           env=child_env())
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().startswith(qid)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20 * SLACK)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert p.returncode == 0
    text = log.read_bytes().decode(errors="replace")
    assert "AddressSanitizer" not in text and "runtime error" not in text
