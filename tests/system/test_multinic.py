"""
Several NICs and several cores, for real (root): network namespaces joined to this one by
veth pairs stand in for the NICs; nothing leaves the machine.

  listeners   one daemon listens on loopback and on a veth's addresses, IPv4 and IPv6 at
              once; clients inside the namespace and on loopback each get a message accepted.
  steering    a client pinned to one CPU connects over loopback (whose receive work runs on
              the sending CPU): every connection lands on the worker pinned to that CPU
              (SO_INCOMING_CPU on the workers' listening sockets with [bpf] enabled = no;
              the reuseport program with yes).
  egress      [relay] source_addresses with %INTERFACE: the same destination is routed
              through two veths to two sinks (one per namespace, holding the same address);
              the address alone follows the routing table, ADDRESS%DEV leaves through DEV,
              a device with no way to the destination fails the connection; an IPv6
              destination never gets an IPv4 source.
  tune-nics   deploy/tune-nics.sh on veths with several queues inside a namespace: --dry-run
              plans and changes nothing, a run writes what it planned, a second run nothing.

Every name (namespace, interface, subnet) carries this process's pid, so two runs side by
side (the optimised and the ASan pass) never meet; everything made is removed at teardown,
and namespaces left by a run that died are removed by the next one. Every wait is bounded.
"""
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

import conftest
from conftest import SLACK, free_port, wait_for
from peers import events, relay_sections, send_one, tagged_message, wait_delivered, wait_events

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and veths need root"),
    pytest.mark.skipif(not shutil.which("ip"), reason="needs iproute2's ip"),
]

PY = "/usr/bin/python3"
PID = os.getpid()
NS_PREFIX = "rrmn-"
CMD_TIMEOUT = 30
TUNE_NICS = os.path.join(conftest.REPO, "deploy", "tune-nics.sh")


def sh(*argv, check=True, timeout=CMD_TIMEOUT):
    """Run a command (bounded); returns the CompletedProcess, stdout and stderr as text."""
    r = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout * SLACK, universal_newlines=True)
    if check and r.returncode != 0:
        raise AssertionError("%s: exit %d\n%s%s" % (" ".join(argv), r.returncode, r.stdout,
                                                    r.stderr))
    return r


def v4(k, host):
    """Host (1 or 2) of this run's IPv4 link k: 10.(96+k).X.Y/30, X.Y from the pid."""
    t = PID % 16384
    return "10.%d.%d.%d" % (96 + k, t >> 6, ((t & 0x3f) << 2) + host)


def v6(k, host):
    """Host of this run's IPv6 link k: fd72:PID:K::host/64 (as the kernel writes it)."""
    return str(ipaddress.ip_address("fd72:%x:%x:%x::%x" % (PID >> 16, PID & 0xffff, k, host)))


def service_v4():
    """An address of this run that two namespaces both hold (a /32 on their lo)."""
    t = PID % 16384
    return "10.112.%d.%d" % (t >> 6, ((t & 0x3f) << 2) + 1)


def service_v6():
    return str(ipaddress.ip_address("fd72:%x:%x:ff::5" % (PID >> 16, PID & 0xffff)))


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Net:
    """Namespaces and veths of one test, all named after this process; remove() undoes them
    (processes started inside first, then the namespaces, which take their veth ends and so
    the root ends too)."""

    def __init__(self, tag):
        self.tag = tag
        self.namespaces = []
        self.procs = []
        self.links = []

    def ns(self, k):
        name = "%s%d-%s%d" % (NS_PREFIX, PID, self.tag, k)
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def ifname(self, side, k):
        name = "rm%d%s%s%d" % (PID, self.tag, side, k)
        assert len(name) <= 15, name
        return name

    def veth(self, ns, k, queues=None, both_inside=False):
        """A veth pair for link k: (root end, namespace end), addresses v4/v6 host 1 on the
        root end, host 2 inside, both up. both_inside: the pair lives inside ns, unaddressed."""
        a, b = self.ifname("r", k), self.ifname("n", k)
        q = ["numtxqueues", str(queues), "numrxqueues", str(queues)] if queues else []
        if both_inside:
            sh("ip", "-n", ns, "link", "add", a, *q, "type", "veth", "peer", "name", b, *q)
            return a, b
        sh("ip", "link", "add", a, *q, "type", "veth", "peer", "name", b, *q, "netns", ns)
        self.links.append(a)
        sh("ip", "addr", "add", v4(k, 1) + "/30", "dev", a)
        sh("ip", "addr", "add", v6(k, 1) + "/64", "dev", a, "nodad")
        sh("ip", "link", "set", a, "up")
        sh("ip", "-n", ns, "addr", "add", v4(k, 2) + "/30", "dev", b)
        sh("ip", "-n", ns, "addr", "add", v6(k, 2) + "/64", "dev", b, "nodad")
        sh("ip", "-n", ns, "link", "set", b, "up")
        return a, b

    def popen(self, ns, argv, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", ns] + argv, **kw)
        self.procs.append(p)
        return p

    def remove(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        for name in self.links:
            sh("ip", "link", "del", name, check=False)
        for name in self.namespaces:
            sh("ip", "netns", "del", name, check=False)


def remove_stale_namespaces():
    """Namespaces of earlier runs whose process is gone (a run killed before its teardown),
    with the processes left inside them."""
    r = sh("ip", "netns", "list", check=False)
    for line in r.stdout.split("\n"):
        m = re.match(r"^(%s(\d+)-\S+)" % re.escape(NS_PREFIX), line)
        if m and int(m.group(2)) != PID and not pid_alive(int(m.group(2))):
            pids = sh("ip", "netns", "pids", m.group(1), check=False).stdout.split()
            for p in pids:
                try:
                    os.kill(int(p), signal.SIGKILL)
                except (ValueError, OSError):
                    pass
            sh("ip", "netns", "del", m.group(1), check=False)


@pytest.fixture
def net():
    remove_stale_namespaces()
    n = Net("t")
    yield n
    n.remove()


# ---------------------------------------------------------------------------------------------
# 1. listeners on every NIC, IPv4 and IPv6 at once

NS_CLIENT = r"""
import smtplib, sys
host, port, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = smtplib.SMTP(host, port, timeout=20)
s.ehlo("ns-client.test")
msg = ("From: <a@example.com>\r\nTo: <b@example.net>\r\nSubject: %s\r\nX-Test-Id: %s\r\n\r\n"
       "Sent from inside a namespace.\r\n" % (tag, tag))
s.mail("a@example.com")
s.rcpt("b@example.net")
code, text = s.data(msg.encode())
print(code, text.decode())
s.quit()
"""


def ns_send(net, ns, host, port, tag):
    p = net.popen(ns, [PY, "-c", NS_CLIENT, host, str(port), tag], stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE, universal_newlines=True)
    out, err = p.communicate(timeout=30 * SLACK)
    assert p.returncode == 0, "client in %s to %s: exit %d\n%s%s" % (ns, host, p.returncode,
                                                                     out, err)
    return out.strip()


def port_free_v6(port):
    """port can be bound on ::1 now (conftest's port_is_free is IPv4 only)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        try:
            s.bind(("::1", port))
        except OSError:
            return False
        return True


def local_send(host, port, tag):
    c = conftest.Client(port, host=host)
    c.ehlo()
    r = c.send_message(tagged_message(tag))
    c.quit()
    return r


def listening_daemon(daemons, hosts, args=(), **sections):
    """A daemon whose listener takes one port on every address of hosts (127.0.0.1 and ::1
    among them: the port is chosen free on both)."""
    port = next(p for p in (free_port() for _ in range(50)) if port_free_v6(p))
    d = daemons(start=False, args=args, **sections)
    d.port, d.metrics_port = port, free_port()
    d.sections["server"]["metrics_listen"] = "127.0.0.1:%d" % d.metrics_port
    d.sections["listener.main"]["listen"] = ", ".join(
        ("[%s]:%d" if ":" in h else "%s:%d") % (h, port) for h in hosts)
    d.start()
    return d


def test_listens_on_loopback_and_veth_ipv4_and_ipv6(net, daemons):
    ns = net.ns(0)
    net.veth(ns, 0)
    d = listening_daemon(daemons, ("127.0.0.1", "::1", v4(0, 1), v6(0, 1)),
                         policy={"trusted_networks": "127.0.0.0/8, ::1/128, %s/30, %s/64"
                                 % (v4(0, 0), v6(0, 0))})
    port = d.port
    listen = events(d, "ready")[0]["listen"].split(",")
    assert sorted(listen) == sorted("main=" + a for a in d.sections["listener.main"]["listen"]
                                    .split(", ")), listen

    sent = {}
    sent["ns-v4"] = ns_send(net, ns, v4(0, 1), port, "ns-v4")
    sent["ns-v6"] = ns_send(net, ns, v6(0, 1), port, "ns-v6")
    sent["lo-v4"] = local_send("127.0.0.1", port, "lo-v4").last
    sent["lo-v6"] = local_send("::1", port, "lo-v6").last
    for tag, reply in sent.items():
        assert reply.startswith("250 "), "%s: %r" % (tag, reply)

    # each accepted from where it was sent, and on disk with its own content
    peers = sorted(ev["peer"] for ev in wait_events(d, "accepted", count=4))
    assert peers == sorted(["127.0.0.1", "::1", v4(0, 2), v6(0, 2)]), peers
    stored = {}
    for env, eml in d.export():
        m = re.search(rb"X-Test-Id: (\S+)", eml)
        if m:
            stored[m.group(1).decode()] = env
    assert sorted(stored) == sorted(sent), stored


# ---------------------------------------------------------------------------------------------
# 2. steering: a connection is served by the worker on the CPU that received it

# A client process pinned to one CPU: over loopback the SYN is processed on the sending CPU,
# so the listening socket marked with that CPU (SO_INCOMING_CPU) must take it.
PINNED_CLIENT = r"""
import os, socket, sys
cpu, port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
os.sched_setaffinity(0, {cpu})
for host in sys.argv[4:]:
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=20)
        assert s.recv(512).startswith(b"220"), "no greeting"
        s.sendall(b"QUIT\r\n")
        s.recv(512)
        s.close()
print(os.sched_getaffinity(0))
"""

CONNECT_RE = re.compile(r"event=connect session=(\d+):\d+ peer=(\S+)")
STEER_CONNECTIONS = 12            # per CPU and address family


def worker_sessions(d):
    """The worker of every session the daemon logged (event=connect, -v), in order."""
    return [int(m.group(1)) for m in CONNECT_RE.finditer(d.log)]


def steering_daemon(daemons, bpf):
    """Two workers (conftest's default), each pinned to one CPU: worker i to the i-th CPU
    this process may run on, as engine_assign_cpus does for the daemon it starts."""
    return listening_daemon(daemons, ("127.0.0.1", "::1"), args=("-v",),
                            bpf={"enabled": bpf})


# [bpf] enabled = no: the listening sockets' SO_INCOMING_CPU alone steers. With the BPF
# programs (enabled = yes) the reuseport program picks the worker itself, which the daemon
# counts (ringrelay_bpf_steered_total).
@pytest.mark.parametrize("bpf", ["no", "yes"])
def test_connection_lands_on_worker_of_receiving_cpu(daemons, bpf):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to tell the workers apart")
    d = steering_daemon(daemons, bpf)
    workers = int(d.sections["server"]["workers"])
    assert workers == 2
    # the workers' CPUs: the first two this process (and so the daemon) may run on
    for expect_worker, cpu in enumerate(cpus[:workers]):
        before = len(worker_sessions(d))
        r = sh(PY, "-c", PINNED_CLIENT, str(cpu), str(d.port), str(STEER_CONNECTIONS),
               "127.0.0.1", "::1", timeout=60)
        assert r.stdout.strip() == "{%d}" % cpu, r.stdout
        want = before + 2 * STEER_CONNECTIONS
        got = wait_for(lambda: len(worker_sessions(d)) >= want, 10 * SLACK)
        assert got, "want %d event=connect lines, log:\n%s" % (want, d.log[-4000:])
        sessions = worker_sessions(d)[before:want]
        assert sessions == [expect_worker] * len(sessions), \
            "client on CPU %d: sessions on workers %r, want all on worker %d" % (
                cpu, sessions, expect_worker)
    steered = d.metric("ringrelay_bpf_steered_total", None, 0)
    if bpf == "yes":
        assert steered >= 2 * STEER_CONNECTIONS * workers, steered
    else:
        assert steered == 0, steered


# ---------------------------------------------------------------------------------------------
# 3. egress: source addresses per NIC

# A sink that records, per message, the client address it came from and the X-Test-Id.
SINK = r"""
import re, socket, sys, threading
record = sys.argv[1]
lock = threading.Lock()

def serve(c, peer):
    f = c.makefile("rb")
    c.sendall(b"220 sink ESMTP\r\n")
    tag = None
    for line in f:
        verb = line.strip().split(b" ", 1)[0].upper()
        if verb in (b"EHLO", b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            c.sendall(b"250 ok\r\n")
        elif verb == b"DATA":
            c.sendall(b"354 go\r\n")
            for body in f:
                if body == b".\r\n":
                    break
                m = re.match(rb"X-Test-Id: (\S+)", body)
                if m:
                    tag = m.group(1).decode()
            with lock, open(record, "a") as out:
                out.write("%s %s\n" % (peer, tag))
            c.sendall(b"250 2.0.0 kept\r\n")
        elif verb == b"QUIT":
            c.sendall(b"221 bye\r\n")
            break
        else:
            c.sendall(b"502 no\r\n")
    c.close()

def listen(fam, addr, port):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)
    while True:
        c, peer = s.accept()
        threading.Thread(target=serve, args=(c, peer[0]), daemon=True).start()

port = int(sys.argv[2])
ts = [threading.Thread(target=listen, args=(socket.AF_INET6 if ":" in a else socket.AF_INET,
                                           a, port), daemon=True) for a in sys.argv[3:]]
for t in ts:
    t.start()
for t in ts:
    t.join()
"""


class Egress:
    """Two namespaces A (link 1) and B (link 2), each holding the service addresses
    (service_v4/6) on its lo with a sink on them; the root routes the service through A
    (metric 100) and through B (metric 200), so the routing table alone picks A."""

    def __init__(self, net, workdir):
        self.net = net
        self.port = free_port()
        self.records = {}
        self.links = {}
        for name, k in (("A", 1), ("B", 2)):
            ns = net.ns(k)
            root, inside = net.veth(ns, k)
            self.links[name] = root
            sh("ip", "-n", ns, "addr", "add", service_v4() + "/32", "dev", "lo")
            sh("ip", "-n", ns, "addr", "add", service_v6() + "/128", "dev", "lo", "nodad")
            sh("ip", "-n", ns, "route", "add", "default", "via", v4(k, 1))
            sh("ip", "-n", ns, "-6", "route", "add", "default", "via", v6(k, 1))
            metric = "100" if name == "A" else "200"
            sh("ip", "route", "add", service_v4() + "/32", "via", v4(k, 2), "dev", root,
               "metric", metric)
            sh("ip", "-6", "route", "add", service_v6() + "/128", "via", v6(k, 2), "dev", root,
               "metric", metric)
            record = os.path.join(workdir, "sink-%s.txt" % name)
            open(record, "w").close()
            self.records[name] = record
            net.popen(ns, [PY, "-c", SINK, record, str(self.port), service_v4(), service_v6(),
                           v4(k, 2), v6(k, 2)],
                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
        # both sinks answer (through the routing table: A)
        for addr in (service_v4(), service_v6()):
            def up(addr=addr):
                try:
                    socket.create_connection((addr, self.port), 1).close()
                    return True
                except OSError:
                    return False
            assert wait_for(up, 10 * SLACK), "sink on %s:%d does not answer" % (addr, self.port)

    def seen(self, name):
        """{tag: client address} recorded by sink name."""
        with open(self.records[name]) as f:
            return {tag: peer for peer, tag in (line.split() for line in f if line.strip())}

    def wait_seen(self, name, tag):
        got = wait_for(lambda: tag in self.seen(name), 20 * SLACK, interval=0.1)
        assert got, "sink %s did not get %s: A %r, B %r" % (name, tag, self.seen("A"),
                                                            self.seen("B"))
        return self.seen(name)[tag]


@pytest.fixture
def egress(net, tmp_path):
    return Egress(net, str(tmp_path))


def relay_through(daemons, eg, dest, sources):
    """A daemon delivering to dest ([address]) at the sinks' port from sources."""
    return daemons(relay=relay_sections(None, smarthost="[%s]:%d" % (dest, eg.port),
                                        source_addresses=sources, connect_timeout="3s"))


def deliver(d, tag):
    qid = send_one(d, tagged_message(tag))
    wait_delivered(d, {qid: ["r@example.net"]})
    return qid


def test_source_address_follows_routing_table_without_interface(daemons, egress):
    # B's address, no device: the route (metric 100) goes through A, which sees B's address
    d = relay_through(daemons, egress, service_v4(), v4(2, 1))
    deliver(d, "plain-v4")
    assert egress.wait_seen("A", "plain-v4") == v4(2, 1)
    assert "plain-v4" not in egress.seen("B")


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_source_interface_picks_the_device(daemons, egress, family):
    # B's address on B's device: the connection leaves through B although the routing table
    # prefers A, and B's sink sees B's address
    dev = egress.links["B"]
    if family == "v4":
        d = relay_through(daemons, egress, service_v4(), "%s%%%s" % (v4(2, 1), dev))
        want = v4(2, 1)
    else:
        d = relay_through(daemons, egress, service_v6(), "[%s]%%%s" % (v6(2, 1), dev))
        want = v6(2, 1)
    tag = "dev-" + family
    deliver(d, tag)
    assert egress.wait_seen("B", tag) == want
    assert tag not in egress.seen("A")


def test_source_interface_without_a_way_fails(daemons, egress):
    # A's sink address through B's device: nothing there answers for it, the connection
    # fails and the message is deferred (never sent through A instead)
    dev = egress.links["B"]
    d = daemons(relay=relay_sections(None, smarthost="[%s]:%d" % (v4(1, 2), egress.port),
                                     source_addresses="%s%%%s" % (v4(2, 1), dev),
                                     connect_timeout="3s"))
    qid = send_one(d, tagged_message("no-way"))
    ev = wait_events(d, "deferred", id=qid, timeout=30)
    assert ev, d.log
    assert "no-way" not in egress.seen("A") and "no-way" not in egress.seen("B")


def test_family_mismatch_lets_the_kernel_choose(daemons, egress):
    # only an IPv4 source (on B) for an IPv6 destination: it is not used, the kernel picks
    # the IPv6 source of the preferred route (A's link); an IPv4 destination still gets B
    dev = egress.links["B"]
    d = relay_through(daemons, egress, service_v6(), "%s%%%s" % (v4(2, 1), dev))
    deliver(d, "mismatch-v6")
    assert egress.wait_seen("A", "mismatch-v6") == v6(1, 1)

    mixed = "%s%%%s, [%s]%%%s" % (v4(2, 1), dev, v6(2, 1), dev)
    d6 = relay_through(daemons, egress, service_v6(), mixed)
    deliver(d6, "mixed-v6")
    assert egress.wait_seen("B", "mixed-v6") == v6(2, 1)
    d4 = relay_through(daemons, egress, service_v4(), mixed)
    deliver(d4, "mixed-v4")
    assert egress.wait_seen("B", "mixed-v4") == v4(2, 1)


def test_config_check_reports_unknown_interface(daemons, net):
    ns = net.ns(3)
    root, _ = net.veth(ns, 3)
    d = daemons(start=False, relay={"source_addresses": "%s%%%s, 192.0.2.77%%rm%dnone" % (
        v4(3, 1), root, PID)})
    d.sections["listener.main"]["listen"] = "127.0.0.1:%d" % free_port()
    d.write_config()
    r = subprocess.run([conftest.RINGRELAY_BIN, "-c", d.config, "-t"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=30 * SLACK,
                       cwd=d.workdir, env=conftest.child_env())
    assert r.returncode != 0
    lines = [l for l in r.stderr.split("\n") if l]
    assert lines == ["%s:%d: source_addresses: unknown interface rm%dnone: No such device"
                     % (d.config, config_line(d.config, "source_addresses"), PID)], r.stderr


def config_line(path, key):
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.startswith(key + " "):
                return n
    raise AssertionError("%s not in %s" % (key, path))


# ---------------------------------------------------------------------------------------------
# 4. deploy/tune-nics.sh

PLAN_RE = re.compile(r"^tune-nics: (\[dry-run\] )?(\S+): (rx|tx)-(\d+) (rps_cpus|xps_cpus): "
                     r"CPUs (\S+) (?:-> (\S+) \(mask \S+\)|\(unchanged\))$")


def cpu_set(text):
    """"0-1,3" or "none" -> {0, 1, 3}"""
    out = set()
    if text == "none":
        return out
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def mask_set(text):
    """A sysfs CPU mask ("3", "00000000,00000003") -> {0, 1}"""
    v = int(text.replace(",", ""), 16)
    return {i for i in range(v.bit_length()) if v >> i & 1}


def queue_masks(ns, dev):
    """{(kind, q, file): CPUs} of dev inside ns, as sysfs holds them."""
    r = sh("ip", "netns", "exec", ns, "sh", "-c",
           "for f in /sys/class/net/%s/queues/*/rps_cpus /sys/class/net/%s/queues/*/xps_cpus;"
           " do echo \"$f $(cat $f)\"; done" % (dev, dev))
    out = {}
    for line in r.stdout.split("\n"):
        m = re.match(r"^/sys/class/net/\S+/queues/(rx|tx)-(\d+)/(\S+) (\S+)$", line)
        if m:
            out[(m.group(1), int(m.group(2)), m.group(3))] = mask_set(m.group(4))
    return out


def tune(ns, *args):
    r = sh("ip", "netns", "exec", ns, "bash", TUNE_NICS, *args)
    return r.stdout.split("\n")


def test_tune_nics_plans_applies_and_is_idempotent(net):
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    ns = net.ns(4)
    multi, _ = net.veth(ns, 4, queues=2, both_inside=True)
    single, _ = net.veth(ns, 5, both_inside=True)
    cpu_list = ",".join(str(c) for c in cpus)
    before = {dev: queue_masks(ns, dev) for dev in (multi, single)}
    assert before[multi], "no queue masks in sysfs for %s" % multi

    # the plan: RPS over every worker CPU (no interrupts per queue), XPS queue q -> CPU q
    want = {
        multi: {("rx", 0, "rps_cpus"): set(cpus), ("rx", 1, "rps_cpus"): set(cpus),
                ("tx", 0, "xps_cpus"): {cpus[0]}, ("tx", 1, "xps_cpus"): {cpus[1]}},
        single: {("rx", 0, "rps_cpus"): set(cpus), ("tx", 0, "xps_cpus"): set(cpus)},
    }
    out = tune(ns, "--dry-run", "--cpus", cpu_list, multi, single)
    plan = {}
    for line in out:
        m = PLAN_RE.match(line)
        if m:
            assert m.group(1), "a dry run line without [dry-run]: %r" % line
            plan[(m.group(2), m.group(3), int(m.group(4)), m.group(5))] = \
                cpu_set(m.group(7) or m.group(6))
    for dev, masks in want.items():
        for (kind, q, f), cset in masks.items():
            assert plan.get((dev, kind, q, f)) == cset, "plan for %s %s-%d %s: %r\n%s" % (
                dev, kind, q, f, plan.get((dev, kind, q, f)), "\n".join(out))
    assert {dev: queue_masks(ns, dev) for dev in want} == before, "--dry-run changed sysfs"

    # a run writes what was planned
    out = tune(ns, "--cpus", cpu_list, multi, single)
    assert any(" -> " in l for l in out), "\n".join(out)
    for dev, masks in want.items():
        have = queue_masks(ns, dev)
        for key, cset in masks.items():
            assert have[key] == cset, "%s %r: %r, planned %r" % (dev, key, have[key], cset)

    # a second run finds everything in place and changes nothing
    out = tune(ns, "--cpus", cpu_list, multi, single)
    changes = [l for l in out if " -> " in l]
    assert not changes, "second run changed:\n%s" % "\n".join(changes)
    assert sum(1 for l in out if l.endswith("(unchanged)")) == 6, "\n".join(out)
    for dev, masks in want.items():
        have = queue_masks(ns, dev)
        assert all(have[k] == v for k, v in masks.items()), have


def test_tune_nics_refuses_unknown_interface(net):
    ns = net.ns(6)
    r = sh("ip", "netns", "exec", ns, "bash", TUNE_NICS, "--dry-run", "rm%dnone" % PID,
           check=False)
    assert r.returncode != 0
    assert "no interface 'rm%dnone'" % PID in r.stderr, r.stderr
