"""
Per-IP connection limits enforced in the kernel ([bpf] enabled = yes | auto): the programs are
loaded for real (root), sources are loopback addresses 127.0.0.N.

A connection over a limit is refused by a TCP reset before accept: connect() fails with
ECONNREFUSED, the daemon's accept counter does not move, the kernel's refused counter does.
Also: close accounting, the rate limit and its recovery, exempt networks, SIGHUP changing the
limits without new programs, nothing left in the kernel after SIGTERM or kill -9, and auto
falling back to userspace without the privileges (test_ip_limits.py covers that mode itself).
"""
import errno
import os
import re
import signal
import smtplib
import socket
import subprocess
import time

import pytest

import conftest
from conftest import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF programs needs root")

IDS_RE = re.compile(r"event=ip_limits enforced=kernel programs=([0-9,]+)")


def kernel_daemon(daemons, **bpf):
    """A daemon with the kernel programs required; loopback is not exempt."""
    cfg = {"enabled": "yes", "exempt_networks": "::1/128", "max_connections_per_ip": 0,
           "max_connects_per_ip_per_s": 0}
    cfg.update(bpf)
    return daemons(bpf=cfg)


def program_ids(d):
    m = IDS_RE.search(d.log)
    assert m, d.log
    return [int(x) for x in m.group(1).split(",")]


def program_exists(pid):
    r = subprocess.run(["bpftool", "prog", "show", "id", str(pid)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    return r.returncode == 0


def cgroup_attachments():
    """Program ids attached to any cgroup (bpftool cgroup tree)."""
    r = subprocess.run(["bpftool", "cgroup", "tree"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    return {int(x) for x in re.findall(r"^\s*(\d+)\s", r.stdout.decode(), re.M)}


def connect_from(d, source, timeout=5.0):
    """A connection from source that got its greeting: the socket, or the errno of a
    refusal (ECONNREFUSED: reset before accept)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    try:
        s.connect(("127.0.0.1", d.port))
    except OSError as e:
        s.close()
        return e.errno
    greeting = s.recv(512)
    assert greeting.startswith(b"220"), greeting
    return s


def connect_eventually(d, source, timeout=10):
    """connect_from until it is not refused (closes still on their way through the kernel):
    the socket, or None after timeout."""
    got = []

    def attempt():
        r = connect_from(d, source)
        if isinstance(r, int):
            return False
        got.append(r)
        return True

    return got[0] if wait_for(attempt, timeout) else None


def accepted(d):
    return d.metric("ringrelay_connections_total", {"listener": "main"}, 0)


def kernel_refused(d):
    return d.metric("ringrelay_bpf_connections_refused_total", None, 0)


def send_mail_from(d, source):
    with smtplib.SMTP("127.0.0.1", d.port, source_address=(source, 0), timeout=10) as s:
        s.ehlo("client.example")
        s.sendmail("a@example.com", ["b@example.net"], b"Subject: t\r\n\r\nhello\r\n")


def close_all(socks):
    for s in socks:
        if not isinstance(s, int):
            s.close()


def test_excess_connections_are_refused_in_the_kernel(daemons):
    d = kernel_daemon(daemons, max_connections_per_ip=3)
    assert "enforced=kernel" in d.log
    socks = [connect_from(d, "127.0.0.2") for _ in range(3)]
    assert all(not isinstance(s, int) for s in socks), socks
    before_acc, before_ref = accepted(d), kernel_refused(d)
    refused = [connect_from(d, "127.0.0.2") for _ in range(5)]
    assert refused == [errno.ECONNREFUSED] * 5
    # The engine never saw them; the kernel counted them.
    assert accepted(d) == before_acc == 3
    assert kernel_refused(d) == before_ref + 5
    # Another source is not affected.
    send_mail_from(d, "127.0.0.3")
    # Once the flood's connections close, the same source connects again.
    close_all(socks)
    s = connect_eventually(d, "127.0.0.2")
    assert s, "127.0.0.2 still refused after its connections closed"
    s.close()
    send_mail_from(d, "127.0.0.2")


def test_close_accounting_is_exact(daemons):
    """Open to the limit and close, many rounds: every round gets the full limit again,
    so no close was missed and no open counted twice."""
    d = kernel_daemon(daemons, max_connections_per_ip=4)
    for _ in range(5):
        first = connect_eventually(d, "127.0.0.4")
        assert first, "refused with none open"
        socks = [first]
        while len(socks) < 4:
            s = connect_from(d, "127.0.0.4")
            assert not isinstance(s, int), "refused with %d of 4 open" % len(socks)
            socks.append(s)
        assert connect_from(d, "127.0.0.4") == errno.ECONNREFUSED
        # half closed by the client first, half by the server (QUIT)
        for i, s in enumerate(socks):
            if i % 2:
                s.sendall(b"QUIT\r\n")
                s.recv(512)
            s.close()


def test_connection_rate_is_limited_and_recovers(daemons):
    rate = 5
    d = kernel_daemon(daemons, max_connects_per_ip_per_s=rate)
    start = time.monotonic()
    results = []
    for _ in range(4 * rate):
        r = connect_from(d, "127.0.0.5")
        if not isinstance(r, int):
            r.close()
            r = 0
        results.append(r)
    elapsed = time.monotonic() - start
    ok = results.count(0)
    assert results.count(errno.ECONNREFUSED) == len(results) - ok
    # a burst of `rate`, then one more for every 1/rate s that passed (bound, not timing)
    assert rate <= ok <= rate + int(elapsed * rate) + 1, (ok, elapsed)
    assert ok < len(results)
    assert kernel_refused(d) == len(results) - ok
    s = connect_eventually(d, "127.0.0.5")
    assert s, "still refused after the window"
    s.close()


def test_exempt_networks_are_counted_never_refused(daemons):
    d = kernel_daemon(daemons, max_connections_per_ip=2, exempt_networks="127.0.0.6/32")
    socks = [connect_from(d, "127.0.0.6") for _ in range(6)]
    assert all(not isinstance(s, int) for s in socks), socks
    socks += [connect_from(d, "127.0.0.7") for _ in range(3)]
    assert socks[-1] == errno.ECONNREFUSED  # the same limit, outside the exempt network
    close_all(socks)


def test_sighup_changes_limits_not_programs(daemons):
    d = kernel_daemon(daemons, max_connections_per_ip=2)
    ids = program_ids(d)
    socks = [connect_from(d, "127.0.0.8") for _ in range(2)]
    assert connect_from(d, "127.0.0.8") == errno.ECONNREFUSED
    d.set("bpf", "max_connections_per_ip", 4)
    d.write_config()
    d.signal(signal.SIGHUP)
    assert wait_for(lambda: "event=reloaded" in d.log, 10)
    socks += [connect_from(d, "127.0.0.8") for _ in range(2)]
    assert all(not isinstance(s, int) for s in socks), socks
    assert connect_from(d, "127.0.0.8") == errno.ECONNREFUSED
    # the sessions open across the reload are still served
    for s in socks:
        s.sendall(b"NOOP\r\n")
        assert s.recv(512).startswith(b"250")
    assert d.log.count("event=ip_limits ") == 1 and program_ids(d) == ids
    assert all(program_exists(i) for i in ids)
    close_all(socks)


def test_nothing_left_in_the_kernel_after_sigterm_or_kill(daemons):
    d = kernel_daemon(daemons, max_connections_per_ip=1)
    ids = program_ids(d)
    assert all(program_exists(i) for i in ids)
    assert set(ids) & cgroup_attachments()
    assert d.stop() == 0
    # the kernel frees programs after an RCU grace period, not at the exit itself
    assert wait_for(lambda: not any(program_exists(i) for i in ids), 10), ids
    assert not set(ids) & cgroup_attachments()

    d.start()
    ids = program_ids(d)
    s = connect_from(d, "127.0.0.9")  # a live connection counted at the kill
    d.kill()
    s.close()
    assert wait_for(lambda: not any(program_exists(i) for i in ids), 10), ids
    assert not set(ids) & cgroup_attachments()
    if os.path.isdir("/sys/fs/bpf"):
        assert not [n for n in os.listdir("/sys/fs/bpf") if "connlimit" in n]

    # The next start on the same ports loads afresh, with fresh counts.
    d.start()
    s = connect_from(d, "127.0.0.9")
    assert not isinstance(s, int), s
    assert connect_from(d, "127.0.0.9") == errno.ECONNREFUSED
    s.close()


def unprivileged_bin(workdir):
    """A wrapper that runs the daemon as root with every capability dropped."""
    path = os.path.join(workdir, "ringrelay-nocaps")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec setpriv --bounding-set=-all --inh-caps=-all %s \"$@\"\n"
                % conftest.RINGRELAY_BIN)
    os.chmod(path, 0o755)
    return path


def test_auto_without_privileges_falls_back_to_userspace(daemons, monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "RINGRELAY_BIN", unprivileged_bin(str(tmp_path)))
    d = daemons(bpf={"enabled": "auto", "exempt_networks": "::1/128",
                     "max_connections_per_ip": 1})
    assert "event=ip_limits enforced=userspace" in d.log
    s = connect_from(d, "127.0.0.10")
    c = socket.create_connection(("127.0.0.1", d.port), timeout=5,
                                 source_address=("127.0.0.10", 0))
    assert c.recv(512).startswith(b"421 4.7.0")
    c.close()
    s.close()


def test_yes_without_privileges_refuses_to_start(daemons, monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "RINGRELAY_BIN", unprivileged_bin(str(tmp_path)))
    d = daemons(start=False, bpf={"enabled": "yes"})
    with pytest.raises(AssertionError, match="exited with"):
        d.start()
    assert "level=fatal event=ip_limits enforced=none" in d.log
    d.proc = None
