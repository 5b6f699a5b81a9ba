"""ringctl against the running daemon, through the control socket."""
import os
import socket
import subprocess

from conftest import RINGCTL_BIN, make_message, queued_id


def ringctl(*args, timeout=10):
    return subprocess.run([RINGCTL_BIN] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


def stats(d):
    r = ringctl("-c", d.config, "stats")
    assert r.returncode == 0, r.stderr
    return dict(line.split(" ", 1) for line in r.stdout.decode().splitlines())


def test_stats_counts_what_the_daemon_did(daemon):
    before = stats(daemon)
    assert before["messages_accepted"] == "0"
    assert int(before["workers"]) >= 1
    with daemon.client() as c:
        c.ehlo()
        for i in range(3):
            queued_id(c.send_message(make_message("stats %d" % i)))
        assert c.cmd("MAIL FROM:<a@example.com> SIZE=999999999999").code == 552
    after = stats(daemon)
    assert after["messages_accepted"] == "3"
    assert after["queue_messages"] == "3"
    assert after["messages_rejected.size"] == "1"
    assert int(after["spool_fsyncs"]) >= 1


def test_stats_by_socket_path(daemon):
    sock = [l.split("=", 1)[1].strip() for l in open(daemon.config)
            if l.strip().startswith("control_socket")][0]
    r = ringctl("-s", sock, "stats")
    assert r.returncode == 0 and b"messages_accepted 0" in r.stdout, r


def test_unknown_request_and_silent_client(daemon):
    sock = [l.split("=", 1)[1].strip() for l in open(daemon.config)
            if l.strip().startswith("control_socket")][0]
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(sock)
        s.sendall(b"frobnicate\n")
        assert s.recv(1000).startswith(b"error unknown command")
    with socket.socket(socket.AF_UNIX) as s:  # says nothing: answered and closed in time
        s.settimeout(5)
        s.connect(sock)
        assert s.recv(1000).startswith(b"error request incomplete")
    assert stats(daemon)["messages_accepted"] == "0"  # still serving


def test_daemon_not_running(tmp_path):
    r = ringctl("-s", str(tmp_path / "nothing.sock"), "stats")
    assert r.returncode == 1
    assert b"is ringrelay running?" in r.stderr
