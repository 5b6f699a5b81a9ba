"""
System-test harness for ringrelay.

Fixtures
  daemons   factory: daemons(limits={...}, server={...}, ...) writes a configuration into its
            own temporary directory (free loopback ports), starts RINGRELAY_BIN (default
            build/ringrelay) with stderr to a file, waits (at most 10 s) for event=ready and
            returns a Daemon. Teardown sends SIGTERM, waits (bounded), and asserts exit code 0
            and no sanitizer report in the log.
  daemon    one daemon with the default configuration.

Helpers
  Client    raw-socket SMTP client: send bytes, read complete replies (multi-line aware),
            detect the close; every read is bounded by a timeout.
  free_port, make_message, parse_env, ...

Everything listens on 127.0.0.1 only. Timeouts are safety nets, never assertions about speed.
"""
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def _bin(env, default):
    path = os.environ.get(env, default)
    if not os.path.isabs(path):
        path = os.path.join(REPO, path)
    return path


RINGRELAY_BIN = _bin("RINGRELAY_BIN", "build/ringrelay")
RINGCTL_BIN = _bin("RINGCTL_BIN", os.path.join(os.path.dirname(RINGRELAY_BIN), "ringctl"))
IS_ASAN = "asan" in RINGRELAY_BIN
# Slower binaries get more generous safety nets (never used as assertions about speed).
SLACK = 3.0 if IS_ASAN else 1.0

SANITIZER_MARKERS = ("AddressSanitizer", "runtime error", "LeakSanitizer",
                     "UndefinedBehaviorSanitizer")


def child_env(leaks=False):
    """Environment for the programs under test. With sanitizer builds, leak checking at exit
    is off unless asked for (test_robustness.py::test_no_leaks_at_exit checks it on its own),
    so one exit-time leak does not fail every test; set ASAN_OPTIONS to override."""
    env = os.environ.copy()
    if "ASAN_OPTIONS" not in env:
        env["ASAN_OPTIONS"] = "detect_leaks=%d" % (1 if leaks else 0)
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    return env


QUEUED_RE = re.compile(rb"^250 2\.0\.0 Ok: queued as ([0-9A-F]{16})$")


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


_port_rng = random.Random(os.getpid() ^ int(time.time() * 1000))
_ports_given = set()


def free_port():
    """A TCP port on 127.0.0.1 that is free now. Chosen outside the kernel's ephemeral range,
    so that no outgoing connection on this machine can take it before the daemon binds it."""
    lo, hi = _ephemeral_range()
    candidates = [(1025, lo - 1), (hi + 1, 65535)]
    candidates = [(a, b) for a, b in candidates if b - a > 1000]
    for _ in range(200):
        a, b = _port_rng.choice(candidates) if candidates else (1025, 65535)
        port = _port_rng.randint(max(a, 10000) if b > 11000 else a, b)
        if port in _ports_given or port in (2525, 9425):
            continue
        if port_is_free(port):
            _ports_given.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port, host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def parse_env(data):
    """An exported .env file: dict key -> value; 'rcpt' -> list of values."""
    env = {"rcpt": []}
    for line in data.decode("utf-8", "surrogateescape").split("\n"):
        if not line:
            continue
        key, _, value = line.partition(" ")
        if key == "rcpt":
            env["rcpt"].append(value)
        else:
            env[key] = value
    return env


def make_message(subject="test", body_lines=None, headers=None):
    """A message with CRLF line ends that ends in CRLF (so smtplib sends it unchanged)."""
    lines = ["From: <a@example.com>", "To: <b@example.net>", "Subject: " + subject]
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    lines.append("")
    lines.extend(body_lines if body_lines is not None else ["Hello.", "Bye."])
    return ("\r\n".join(lines) + "\r\n").encode()


def dot_stuff(content):
    """What a client puts on the wire for content (CRLF lines): lines starting with '.' doubled."""
    out = []
    for line in content.split(b"\r\n"):
        out.append(b"." + line if line.startswith(b".") else line)
    return b"\r\n".join(out)


def wait_for(pred, timeout, interval=0.05):
    """Poll pred() until true or timeout; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


class Reply:
    """One complete SMTP reply: code (int), lines (list of str), text of the last line."""

    def __init__(self, lines):
        self.lines = lines
        self.code = int(lines[-1][:3])

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def last(self):
        return self.lines[-1]

    def startswith(self, prefix):
        return self.lines[-1].startswith(prefix)

    def __repr__(self):
        return "Reply(%r)" % (self.lines,)


class ConnectionClosed(Exception):
    pass


class Client:
    """A raw SMTP client on a socket. Every read is bounded by a timeout."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0, greet=True):
        self.timeout = timeout * SLACK
        self.sock = socket.create_connection((host, port), timeout=self.timeout)
        self.buf = b""
        self.closed = False
        self.greeting = self.reply() if greet else None

    # -- raw I/O
    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no complete reply in time; have %r" % self.buf[-300:])
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            raise ConnectionClosed("connection closed; unparsed %r" % self.buf)
        self.buf += chunk

    def line(self, timeout=None):
        deadline = time.monotonic() + (timeout * SLACK if timeout else self.timeout)
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self, timeout=None):
        """Read one complete reply (lines until one of the form 'NNN ' or 'NNN')."""
        lines = []
        while True:
            raw = self.line(timeout)
            s = raw.decode("utf-8", "replace")
            if not re.match(r"^\d{3}([ -]|$)", s):
                raise AssertionError("malformed reply line %r (after %r)" % (s, lines))
            lines.append(s)
            if len(s) == 3 or s[3] == " ":
                return Reply(lines)

    def replies(self, n, timeout=None):
        return [self.reply(timeout) for _ in range(n)]

    def cmd(self, line, timeout=None):
        self.send(line.encode() + b"\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.reply(timeout)

    def read_until_closed(self, timeout=10.0):
        """Everything until the peer closes; raises on timeout."""
        deadline = time.monotonic() + timeout * SLACK
        while not self.closed:
            try:
                self._fill(deadline)
            except ConnectionClosed:
                break
        data, self.buf = self.buf, b""
        return data

    def is_closed(self, timeout=5.0):
        """True if the peer closes (EOF or reset) within timeout with no further data."""
        try:
            data = self.read_until_closed(timeout)
        except socket.timeout:
            return False
        return data == b""

    def sentinel(self):
        """Prove no extra reply is queued: HELP must be answered by exactly its own 214."""
        r = self.cmd("HELP")
        assert r.code == 214, "extra reply before the HELP answer: %r" % (r,)

    # -- conveniences
    def ehlo(self, name="client.example"):
        r = self.cmd("EHLO " + name)
        assert r.code == 250, r
        return r

    def helo(self, name="client.example"):
        r = self.cmd("HELO " + name)
        assert r.code == 250, r
        return r

    def send_message(self, content, mail_from="a@example.com", rcpts=("b@example.net",)):
        """MAIL, RCPT..., DATA, content (dot-stuffed here), '.'; returns the final reply."""
        r = self.cmd("MAIL FROM:<%s>" % mail_from)
        assert r.code == 250, r
        for rc in rcpts:
            r = self.cmd("RCPT TO:<%s>" % rc)
            assert r.code == 250, r
        r = self.cmd("DATA")
        assert r.code == 354, r
        self.send(dot_stuff(content) + b".\r\n")
        return self.reply()

    def quit(self):
        try:
            r = self.cmd("QUIT")
            assert r.code == 221, r
        except (ConnectionClosed, OSError):
            pass
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def polite_close(self):
        """QUIT (best effort) and close. Tests that mean to drop the connection use close()."""
        if not self.closed:
            try:
                self.send(b"QUIT\r\n")
                self.read_until_closed(3)
            except (OSError, ConnectionClosed):
                pass
        self.close()

    def __exit__(self, *exc):
        self.polite_close()


def parse_replies(data):
    """Complete replies in raw bytes; asserts nothing is left over."""
    out, cur = [], []
    lines = data.split(b"\r\n")
    assert lines[-1] == b"", "incomplete reply data %r" % data
    for raw in lines[:-1]:
        s = raw.decode("utf-8", "replace")
        assert re.match(r"^\d{3}([ -]|$)", s), "malformed reply line %r" % s
        cur.append(s)
        if len(s) == 3 or s[3] == " ":
            out.append(Reply(cur))
            cur = []
    assert not cur, "unterminated multi-line reply %r" % cur
    return out


def queued_id(reply):
    m = QUEUED_RE.match(reply.last.encode())
    assert m, "not a queued-as reply: %r" % (reply,)
    return m.group(1).decode()


class Daemon:
    def __init__(self, workdir, sections, args=(), name="d"):
        self.workdir = workdir
        self.sections = sections
        self.args = list(args)
        self.name = name
        self.proc = None
        self.killed = False
        self.rc = None
        self.restarts = 0
        self.config = os.path.join(workdir, "ringrelay.conf")
        self.log_path = None
        self.port = None
        self.metrics_port = None
        self.leaks = False          # sanitizer builds: leak check at exit

    # -- configuration
    def write_config(self):
        lines = []
        for sec, kv in self.sections.items():
            lines.append("[%s]" % sec)
            for k, v in kv.items():
                if v is None:
                    continue
                lines.append("%s = %s" % (k, v))
            lines.append("")
        with open(self.config, "w") as f:
            f.write("\n".join(lines))

    def set(self, section, key, value):
        self.sections.setdefault(section, {})[key] = value

    # -- life cycle
    def start(self, new_ports=False):
        """Start and wait for event=ready. Ports are (re)chosen on the first start or when
        new_ports; then a port taken meanwhile by someone else is retried with others."""
        for attempt in range(3):
            chose = new_ports or self.port is None or attempt > 0
            if chose:
                self.port = free_port()
                self.metrics_port = free_port()
                listen = self.sections.setdefault("listener.main", {})
                listen["listen"] = "127.0.0.1:%d" % self.port
                self.sections["server"]["metrics_listen"] = "127.0.0.1:%d" % self.metrics_port
            try:
                return self._start_once()
            except AssertionError:
                if chose and "Address already in use" in self.log and attempt < 2:
                    continue
                raise

    def _start_once(self):
        self.write_config()
        self.log_path = os.path.join(self.workdir, "ringrelay.%d.log" % self.restarts)
        self.restarts += 1
        self.killed = False
        self.rc = None
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen([RINGRELAY_BIN, "-c", self.config] + self.args,
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                         cwd=self.workdir, env=child_env(self.leaks))
        deadline = time.monotonic() + READY_TIMEOUT * SLACK
        while "event=ready" not in self.log:
            if self.proc.poll() is not None:
                raise AssertionError("ringrelay exited with %s before ready:\n%s"
                                     % (self.proc.returncode, self.log))
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("no event=ready within %.0fs:\n%s"
                                     % (READY_TIMEOUT * SLACK, self.log))
            time.sleep(0.02)
        return self

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait (bounded); returns the exit code."""
        if self.proc is None:
            return self.rc
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout * SLACK)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self.killed = True
                raise AssertionError("ringrelay did not exit within %.0fs of SIGTERM:\n%s"
                                     % (timeout * SLACK, self.log[-4000:]))
        self.rc = self.proc.returncode
        return self.rc

    def kill(self):
        """SIGKILL (crash simulation)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.killed = True

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # -- observation
    @property
    def log(self):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def all_logs(self):
        out = []
        for i in range(self.restarts):
            p = os.path.join(self.workdir, "ringrelay.%d.log" % i)
            if os.path.exists(p):
                with open(p, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
        return "".join(out)

    def client(self, **kw):
        return Client(self.port, **kw)

    def ringctl(self, *args, timeout=60):
        return subprocess.run([RINGCTL_BIN, "-c", self.config] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout * SLACK, cwd=self.workdir, env=child_env())

    def spool_list(self):
        r = self.ringctl("spool")
        assert r.returncode == 0, r.stderr
        return [l for l in r.stdout.decode().split("\n") if l]

    def export(self):
        """[(env dict, eml bytes)] for every complete message in the spool."""
        d = tempfile.mkdtemp(prefix="export.", dir=self.workdir)
        r = self.ringctl("export", d)
        assert r.returncode == 0, "ringctl export failed: %r" % (r.stderr,)
        out = []
        for name in sorted(os.listdir(d)):
            if not name.endswith(".env"):
                continue
            qid = name[:-4]
            with open(os.path.join(d, name), "rb") as f:
                env = parse_env(f.read())
            with open(os.path.join(d, qid + ".eml"), "rb") as f:
                eml = f.read()
            env.setdefault("qid", qid)
            out.append((env, eml))
        return out

    def export_by_qid(self):
        return {env["qid"]: (env, eml) for env, eml in self.export()}

    def http_get(self, path, timeout=10):
        url = "http://127.0.0.1:%d%s" % (self.metrics_port, path)
        try:
            with urllib.request.urlopen(url, timeout=timeout * SLACK) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def metrics_text(self):
        status, _, body = self.http_get("/metrics")
        assert status == 200, (status, body)
        return body

    def metrics(self):
        """{(name, frozenset(labels)): value}"""
        out = {}
        for line in self.metrics_text().split("\n"):
            if not line or line.startswith("#"):
                continue
            m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$', line)
            assert m, "bad metrics line %r" % line
            labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                          m.group(3) or ""))
            out[(m.group(1), labels)] = float(m.group(4))
        return out

    def metric(self, name, labels=None, default=None):
        """Value of one series, or default (None) when absent."""
        key = (name, frozenset((labels or {}).items()))
        return self.metrics().get(key, default)


def default_sections(workdir):
    return {
        "server": {
            "hostname": "relay.test.example",
            "workers": 2,
            "spool_dir": os.path.join(workdir, "spool"),
            "spool_min_free": 0,
            # Segments are preallocated: keep them small so hundreds of test daemons do not
            # reserve gigabytes of /tmp.
            "segment_size": "4M",
            "control_socket": os.path.join(workdir, "control.sock"),
        },
        "listener.main": {},
        "limits": {"idle_timeout": "60s"},
        # Outbound mail goes nowhere unless a test says where: a loopback port nobody
        # listens on (deliveries are deferred), never a real resolver or the Internet.
        "relay": {"smarthost": "[127.0.0.1]:9"},
    }


class DaemonFactory:
    def __init__(self, tmp_path_factory):
        self.tmp_path_factory = tmp_path_factory
        self.daemons = []

    def new(self, start=True, args=(), **sections):
        """sections: server={...}, limits={...}, policy={...}, **{'listener.main': {...}}.
        A value of None removes a default key."""
        workdir = str(self.tmp_path_factory.mktemp("rr"))
        cfg = default_sections(workdir)
        for sec, kv in sections.items():
            sec = sec.replace("listener_", "listener.")
            cfg.setdefault(sec, {}).update(kv)
        d = Daemon(workdir, cfg, args=args, name="d%d" % len(self.daemons))
        self.daemons.append(d)
        if start:
            d.start()
        return d

    __call__ = new

    def stop_all(self):
        problems = []
        for d in self.daemons:
            if d.proc is None:
                continue
            if not d.killed and d.proc.poll() is None:
                try:
                    d.stop()
                except AssertionError as e:
                    problems.append(str(e))
            if not d.killed and d.proc.returncode != 0:
                problems.append("%s exited with %s (want 0):\n%s"
                                % (d.name, d.proc.returncode, d.log[-4000:]))
            logs = d.all_logs()
            for marker in SANITIZER_MARKERS:
                if marker in logs:
                    problems.append("%s: %s in the log:\n%s" % (d.name, marker, logs[-8000:]))
                    break
            d.proc = None if d.killed or d.proc.poll() is not None else d.proc
        return problems


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def daemons(request, tmp_path_factory):
    f = DaemonFactory(tmp_path_factory)
    yield f
    problems = f.stop_all()
    rep = getattr(request.node, "rep_call", None)
    if not problems and rep is not None and rep.passed:
        # keep the spool of a failed test for a post-mortem, drop the others
        for d in f.daemons:
            spool = d.sections["server"].get("spool_dir", "")
            if spool.startswith(d.workdir) and not os.path.ismount(spool):
                shutil.rmtree(spool, ignore_errors=True)
    assert not problems, "\n\n".join(problems)


@pytest.fixture
def daemon(daemons):
    return daemons()


@pytest.fixture
def peers(tmp_path_factory):
    """Outbound-delivery peers (tests/system/peers.py): peers.sink(*flags, host=, port=) an
    smtp-sink, peers.raw_sink() a byte-recording SMTP server, peers.dns(mx=, hosts=, null_mx=)
    a dnsmasq. Every one is stopped at teardown."""
    from peers import Peers
    p = Peers(str(tmp_path_factory.mktemp("peers")))
    yield p
    p.stop_all()


def pytest_configure(config):
    config.addinivalue_line("markers", "relay: outbound delivery (queue manager, SMTP client, "
                            "retries, bounces, MX lookup); needs smtp-sink and dnsmasq")


@pytest.fixture
def sinks(tmp_path):
    """sinks(*args, **kw) starts a ringsink (test_bench_tools.Sink); stopped at the end."""
    from test_bench_tools import Sink  # the ringsink tests' own helper
    made = []

    def new(*args, **kw):
        s = Sink(str(tmp_path), *args, **kw)
        made.append(s)
        return s
    yield new
    for s in made:
        if s.result is None and s.proc.poll() is None:
            s.stop()
