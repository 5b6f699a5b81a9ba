"""
What only the kernel side of the per-IP limits has ([bpf] enabled = yes | auto), with the
programs loaded for real (root): a reload changes the limits and keeps the programs; after
SIGTERM, and after kill -9, nothing of ours is left in the kernel (programs, cgroup
attachments, pins) and the next start works; without privileges, auto falls back to
userspace and yes refuses to start. The limits themselves are tested in both modes by
test_ip_limits.py, whose helpers this file uses.
"""
import os
import re
import signal
import socket
import struct
import subprocess

import pytest

import conftest
from conftest import wait_for
from test_ip_limits import assert_refused, attempt, close_all, limits_daemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF programs needs root")

IDS_RE = re.compile(r"event=ip_limits enforced=kernel programs=([0-9,]+)")


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


def test_sighup_changes_limits_not_programs(daemons):
    """The limits are the programs' data: a reload changes them, the programs stay."""
    d = limits_daemon(daemons, "yes", max_connections_per_ip=1)
    ids = program_ids(d)
    held = attempt(d, "127.0.0.8")
    assert held.ok
    assert_refused("yes", attempt(d, "127.0.0.8"), "ip_connections")
    d.set("bpf", "max_connections_per_ip", 2)
    d.write_config()
    d.signal(signal.SIGHUP)
    assert wait_for(lambda: "event=reloaded" in d.log, 10)
    more = attempt(d, "127.0.0.8")
    assert more.ok, more
    assert d.log.count("event=ip_limits ") == 1 and program_ids(d) == ids
    assert all(program_exists(i) for i in ids)
    close_all([held, more])


def test_nothing_left_in_the_kernel_after_sigterm_or_kill(daemons):
    d = limits_daemon(daemons, "yes", max_connections_per_ip=1)
    ids = program_ids(d)
    assert all(program_exists(i) for i in ids)
    assert set(ids) & cgroup_attachments()
    assert d.stop() == 0
    # the kernel frees programs after an RCU grace period, not at the exit itself
    assert wait_for(lambda: not any(program_exists(i) for i in ids), 10), ids
    assert not set(ids) & cgroup_attachments()

    d.start()
    ids = program_ids(d)
    a = attempt(d, "127.0.0.9")  # a live connection counted at the kill
    assert a.ok
    d.kill()
    a.close()
    assert wait_for(lambda: not any(program_exists(i) for i in ids), 10), ids
    assert not set(ids) & cgroup_attachments()
    if os.path.isdir("/sys/fs/bpf"):
        assert not [n for n in os.listdir("/sys/fs/bpf") if "connlimit" in n]

    # The next start on the same ports loads afresh, with fresh counts.
    d.start()
    a = attempt(d, "127.0.0.9")
    assert a.ok, a
    assert_refused("yes", attempt(d, "127.0.0.9"), "ip_connections")
    a.close()


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
    assert "event=ip_limits enforced=userspace reason=" in d.log
    a = attempt(d, "127.0.0.10")
    assert a.ok, a
    assert_refused("no", attempt(d, "127.0.0.10"), "ip_connections")
    a.close()


def test_yes_without_privileges_refuses_to_start(daemons, monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "RINGRELAY_BIN", unprivileged_bin(str(tmp_path)))
    d = daemons(start=False, bpf={"enabled": "yes"})
    with pytest.raises(AssertionError, match="exited with"):
        d.start()
    assert "level=fatal event=ip_limits enforced=none" in d.log
    d.proc = None


def forged_syn(src, dst, sport, dport):
    """An IPv4 SYN from src (any address: the raw socket does not check it)."""
    def csum(b):
        if len(b) % 2:
            b += b"\0"
        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        s = (s >> 16) + (s & 0xffff)
        s += s >> 16
        return (~s) & 0xffff
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 12345, 0, 5 << 4, 0x02, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + tcp


def test_forged_syns_cost_the_owner_nothing(daemons):
    """SYNs forged with a client's address never complete a handshake: they take none of
    its places nor its rate (the kernel counts at establishment, not at the SYN)."""
    d = limits_daemon(daemons, "yes", max_connections_per_ip=2, max_connects_per_ip_per_s=2)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        for i in range(20):
            raw.sendto(forged_syn("127.0.0.11", "127.0.0.1", 41000 + i, d.port),
                       ("127.0.0.1", 0))
    finally:
        raw.close()
    held = [attempt(d, "127.0.0.11") for _ in range(2)]
    assert all(a.ok for a in held), held
    close_all(held)
