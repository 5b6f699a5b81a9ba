"""
Outbound-delivery peers for the system tests: real programs started on loopback high ports.

  SmtpSink   Postfix smtp-sink (/usr/sbin/smtp-sink): accepts, or fails as told (-r 4xx,
             -f 5xx, -q drop, -Q 421), and dumps every transaction to its own file (-d).
             Each start dumps into a fresh run directory, so a restart never overwrites an
             earlier dump (smtp-sink's file names come from a time-seeded generator).
  RawSink    a tiny SMTP server in Python that records the DATA section exactly as it came
             over the wire (smtp-sink's dumps turn CRLF into LF and undo the dot-stuffing,
             so they cannot show the line ends or the stuffing); with chunking=True it
             offers CHUNKING and records BDAT chunks as they came (smtp-sink offers no
             CHUNKING, so the relay always uses DATA with it).
  TlsSink    the same with STARTTLS (Python's ssl module): records the TLS version, cipher
             and SNI of each connection, and can break the handshake on purpose (garbage,
             close, stall after the 220).
  DnsServer  dnsmasq on 127.0.0.1:PORT, authoritative for the zone rr.test (anything else in
             it is NXDOMAIN): MX records, A records and null MX ("MX 0 .").
  Peers      a factory that starts them and stops them all at teardown (fixture `peers`).

Log and metric helpers for delivery tests: events(), wait_events(), wait_metric().

Command lines (all verified by hand):
  smtp-sink -u root -h NAME -d DIR/run-N/%Y%m%d%H/%M. [-r CMD] [-f CMD -B "550 5.1.1 ..."]
            [-q CMD] [-Q CMD] 127.0.0.X:PORT 256
      (-u is required when it runs as root; root is fine and keeps the dump directory
      writable.) Dump file: smtp-sink's own header lines (X-Client-Addr, X-Client-Proto,
      X-Helo-Args, X-Mail-Args, X-Rcpt-Args..., a three-line Received:), then the message
      with LF line ends and dot-stuffing undone, then one empty line. A file is created
      (empty) at MAIL even when the transaction is rejected later.
  dnsmasq --keep-in-foreground --conf-file=/dev/null --port=P --listen-address=127.0.0.1
          --bind-interfaces --no-resolv --no-hosts --local=/rr.test/ --local-ttl=30
          --mx-host=DOMAIN,TARGET,PREF --host-record=NAME,ADDR --mx-host=null.rr.test,.,0
      "--mx-host=D,.,0" gives exactly the RFC 7505 null MX (preference 0, exchange the root).
"""
import email
import email.policy
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

from conftest import (SLACK, dot_stuff, free_port, make_message, port_is_free,
                      queued_id, wait_for)

SMTP_SINK = "/usr/sbin/smtp-sink"
DNSMASQ = "/usr/sbin/dnsmasq"
ZONE = "rr.test"
QID_RE = re.compile(r"^[0-9A-F]{16}$")


# ---------------------------------------------------------------------------------------------
# log events and metrics

_KV_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_.-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_event(line):
    """key=value pairs of one log line (quoted values unquoted), or None without event=."""
    if "event=" not in line:
        return None
    kv = {}
    for k, v in _KV_RE.findall(line):
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = re.sub(r'\\(.)', r'\1', v[1:-1])
        kv.setdefault(k, v)
    return kv if "event" in kv else None


def events(d, name=None, **match):
    """Every log event of daemon d (all its runs), optionally of one name and with the given
    key values (to= may be given with or without <>)."""
    out = []
    for line in d.all_logs().split("\n"):
        ev = parse_event(line)
        if ev is None or (name is not None and ev["event"] != name):
            continue
        ok = True
        for k, v in match.items():
            have = ev.get(k)
            if k == "to" and not v.startswith("<"):
                v = "<%s>" % v
            if have != v:
                ok = False
                break
        if ok:
            out.append(ev)
    return out


def wait_events(d, name, count=1, timeout=20.0, **match):
    """Wait (bounded, SLACK-scaled) until d logged at least count events of this name; returns
    them. Fails with the log tail when they did not come."""
    got = wait_for(lambda: len(events(d, name, **match)) >= count and events(d, name, **match),
                   timeout * SLACK, interval=0.1)
    if not got:
        have = events(d, name, **match)
        raise AssertionError("want %d event=%s %r, have %d; log tail:\n%s"
                             % (count, name, match, len(have), d.all_logs()[-6000:]))
    return got


def delivered_rcpts(d, qid):
    """Recipients of message qid logged as delivered (<> stripped)."""
    return sorted(ev["to"].strip("<>") for ev in events(d, "delivered", id=qid))


def wait_delivered(d, qids_rcpts, timeout=30.0):
    """qids_rcpts: {qid: [rcpt,...]}; wait until every recipient of every message was logged
    as delivered."""
    def done():
        have = {}
        for ev in events(d, "delivered"):
            have.setdefault(ev.get("id"), set()).add(ev.get("to", "").strip("<>"))
        return all(set(r) <= have.get(q, set()) for q, r in qids_rcpts.items())
    if not wait_for(done, timeout * SLACK, interval=0.1):
        raise AssertionError("not every message was delivered in time: want %r; log tail:\n%s"
                             % (qids_rcpts, d.all_logs()[-6000:]))


def deliveries(d, result):
    return d.metric("ringrelay_deliveries_total", {"result": result}, default=0.0)


def wait_metric(d, name, pred, timeout=20.0, labels=None):
    """Wait until pred(value of the series) is true; returns the value."""
    last = [None]

    def ok():
        last[0] = d.metric(name, labels)
        return last[0] is not None and pred(last[0])
    if not wait_for(ok, timeout * SLACK, interval=0.1):
        raise AssertionError("%s%s: last value %r does not satisfy the condition"
                             % (name, labels or "", last[0]))
    return last[0]


def wait_queue_empty(d, timeout=20.0):
    wait_metric(d, "ringrelay_queue_messages", lambda v: v == 0, timeout)


# ---------------------------------------------------------------------------------------------
# ringctl queue listing

class QueueEntry:
    def __init__(self, line):
        self.line = line
        self.qid = line[:16]
        m = re.search(r"state=(\w+)", line)
        self.state = m.group(1) if m else None
        m = re.search(r"from=<([^>]*)>", line)
        self.sender = m.group(1) if m else None
        m = re.search(r'last="((?:[^"\\]|\\.)*)"', line)
        self.last = m.group(1) if m else None
        m = re.search(r"next=(\S+)", line)
        self.next = m.group(1) if m else None

    def __repr__(self):
        return "QueueEntry(%r)" % self.line


def ringctl_queue(d):
    """(entries {qid: QueueEntry}, summary lines) of `ringctl queue`; asserts exit 0."""
    r = d.ringctl("queue")
    assert r.returncode == 0, "ringctl queue: exit %d, %r" % (r.returncode, r.stderr)
    entries, summary = {}, []
    for line in r.stdout.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        if QID_RE.match(line[:16]) and (len(line) == 16 or line[16] in " \t"):
            e = QueueEntry(line)
            entries[e.qid] = e
        else:
            summary.append(line)
    assert summary, "ringctl queue printed no summary line: %r" % r.stdout
    return entries, summary


# ---------------------------------------------------------------------------------------------
# smtp-sink

class Dump:
    """One transaction dumped by smtp-sink."""

    def __init__(self, path, raw):
        self.path = path
        self.raw = raw
        self.mail_from = None
        self.mail_args = None
        self.rcpts = []
        self.helo = None
        self.content = None      # the message, LF line ends (None: not complete)
        lines = raw.split(b"\n")
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith(b"X-Mail-Args: "):
                self.mail_args = line[13:].decode("utf-8", "replace")
                m = re.match(r"<([^>]*)>", self.mail_args)
                self.mail_from = m.group(1) if m else self.mail_args
            elif line.startswith(b"X-Rcpt-Args: "):
                a = line[13:].decode("utf-8", "replace")
                m = re.match(r"<([^>]*)>", a)
                self.rcpts.append(m.group(1) if m else a)
            elif line.startswith(b"X-Helo-Args: "):
                self.helo = line[13:].decode("utf-8", "replace")
            elif line.startswith(b"Received: ") and b"smtp-sink" in b"".join(lines[i:i + 3]):
                # the three-line Received: ends smtp-sink's own headers
                rest = b"\n".join(lines[i + 3:])
                if raw.endswith(b"\n\n") and len(rest) >= 1:
                    self.content = rest[:-1]        # drop the empty line smtp-sink appends
                break
            elif not line.startswith(b"X-"):
                break
            i += 1

    @property
    def complete(self):
        return self.content is not None

    def message(self):
        """The content parsed by the email package."""
        return email.message_from_bytes(self.content, policy=email.policy.compat32)

    def __repr__(self):
        return "Dump(%s from=%r rcpts=%r %s bytes)" % (
            os.path.basename(self.path), self.mail_from, self.rcpts,
            len(self.content) if self.content is not None else "incomplete")


def lf(content):
    """content (CRLF lines) as smtp-sink dumps it."""
    return content.replace(b"\r\n", b"\n")


def header_lines_only(prefix):
    """True if prefix (LF lines) is nothing but whole header fields (what a relay may
    prepend, e.g. Received:)."""
    if not prefix:
        return True
    if not prefix.endswith(b"\n"):
        return False
    for line in prefix[:-1].split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            continue                      # folded continuation
        if not re.match(rb"^[!-9;-~]+:", line):
            return False
    return not prefix.startswith((b" ", b"\t"))


def same_message(got, sent_lf):
    """got equals sent_lf, perhaps with header fields prepended at the top."""
    if got == sent_lf:
        return True
    return got.endswith(sent_lf) and header_lines_only(got[:len(got) - len(sent_lf)])


class SmtpSink:
    def __init__(self, workdir, host="127.0.0.1", port=None, name="sink"):
        self.workdir = workdir
        self.host = host
        self.port = port or free_port()
        self.name = name
        self.proc = None
        self.runs = 0
        self.flags = []
        self.logf = None
        self.log_path = None
        self._cache = {}            # path -> Dump (complete ones only)
        self.dump_root = os.path.join(workdir, "dump")
        os.makedirs(self.dump_root, exist_ok=True)

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def start(self, *flags):
        """Start smtp-sink with these extra flags (e.g. "-r", "rcpt"); waits until it
        accepts connections."""
        assert self.proc is None, "already running"
        assert os.access(SMTP_SINK, os.X_OK), \
            "%s is missing (package postfix, deploy/install-deps.sh)" % SMTP_SINK
        self.flags = list(flags)
        run_dir = os.path.join(self.dump_root, "run-%d" % self.runs)
        os.makedirs(run_dir, exist_ok=True)
        self.log_path = os.path.join(self.workdir, "%s.%d.log" % (self.name, self.runs))
        self.runs += 1
        argv = [SMTP_SINK]
        if os.geteuid() == 0:
            argv += ["-u", "root"]
        argv += ["-h", self.name + ".sink.test", "-d", run_dir + "/%Y%m%d%H/%M."]
        argv += self.flags + ["%s:%d" % (self.host, self.port), "256"]
        self.argv = argv
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=self.logf)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("smtp-sink exited with %s: %s\n%s"
                                     % (self.proc.returncode, argv, self.log))
            try:
                socket.create_connection((self.host, self.port), 1).close()
                return True
            except OSError:
                return False
        if not wait_for(up, 10 * SLACK):
            self.stop()
            raise AssertionError("smtp-sink does not listen on %s: %s" % (self.addr, argv))
        return self

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            self.proc = None
        if self.logf:
            self.logf.close()
            self.logf = None
        # the port must be free again before someone restarts a peer on it
        wait_for(lambda: self._unbound(), 5 * SLACK)

    def _unbound(self):
        try:
            socket.create_connection((self.host, self.port), 0.5).close()
            return False
        except OSError:
            return True

    def restart(self, *flags):
        self.stop()
        return self.start(*flags)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def log(self):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def dumps(self):
        """Every complete transaction dumped so far, in no particular order."""
        out = []
        for root, _, files in os.walk(self.dump_root):
            for f in files:
                p = os.path.join(root, f)
                d = self._cache.get(p)
                if d is None:
                    try:
                        with open(p, "rb") as fh:
                            raw = fh.read()
                    except OSError:
                        continue
                    d = Dump(p, raw)
                    if not d.complete:
                        continue
                    self._cache[p] = d
                out.append(d)
        return out

    def count_files(self):
        n = 0
        for _, _, files in os.walk(self.dump_root):
            n += len(files)
        return n

    def find(self, needle):
        """Complete dumps whose content contains needle (bytes)."""
        return [d for d in self.dumps() if needle in d.content]

    def wait_find(self, needle, count=1, timeout=20.0):
        got = wait_for(lambda: len(self.find(needle)) >= count and self.find(needle),
                       timeout * SLACK, interval=0.1)
        if not got:
            raise AssertionError("%s: %r not received %d time(s) in time; have %r"
                                 % (self.name, needle, count, self.dumps()[:20]))
        return got


# ---------------------------------------------------------------------------------------------
# a raw recording SMTP server (Python), for the exact wire bytes

class SockReader:
    """Lines and exact byte counts from a socket, keeping what arrived beyond them."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _more(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def readline(self):
        while b"\n" not in self.buf:
            self._more()
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def readexact(self, n):
        while len(self.buf) < n:
            self._more()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


class RawTransaction:
    def __init__(self):
        self.mail = None
        self.rcpts = []
        self.data = b""            # DATA section as sent, dot-stuffed, without the final ".\r\n";
                                   # with BDAT the chunks' bytes as sent, one after the other
        self.commands = []         # raw command lines, CRLF included
        self.bdat = False          # the content came by BDAT
        self.chunks = []           # BDAT chunk sizes, in order


BDAT_RE = re.compile(rb"(?i)^BDAT ([0-9]{1,19})( +LAST)? *$")


def serve_bdat(line, tx, readexact, sendall, done):
    """BDAT n [LAST] (RFC 3030) on a sink that offers CHUNKING: read the n bytes after the line
    as a chunk of tx and answer; done(tx) at LAST. False when the line is no valid BDAT (501
    sent: the stream cannot be followed)."""
    m = BDAT_RE.match(line.rstrip(b"\r\n"))
    if not m:
        sendall(b"501 5.5.4 Syntax: BDAT size [LAST]\r\n")
        return False
    chunk = readexact(int(m.group(1)))
    tx.bdat = True
    tx.chunks.append(len(chunk))
    tx.data += chunk
    if m.group(2):
        done(tx)
        sendall(b"250 2.0.0 Ok: chunked\r\n")
    else:
        sendall(b"250 2.0.0 %d octets received\r\n" % len(chunk))
    return True


class RawSink:
    """Answers 250 to everything (EHLO: PIPELINING unless not pipelining, 8BITMIME, SMTPUTF8,
    and CHUNKING when chunking) and records each transaction's DATA section (or BDAT chunks)
    byte for byte."""

    def __init__(self, host="127.0.0.1", port=None, chunking=False, pipelining=True):
        self.host = host
        self.port = port or free_port()
        self.chunking = chunking
        self.pipelining = pipelining
        self.transactions = []
        self.bad_lines = []        # command lines without CRLF
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, self.port))
        self.sock.listen(64)
        self.stopping = False
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, c):
        c.settimeout(60 * SLACK)
        tx = RawTransaction()
        reader = SockReader(c)
        readline, readexact = reader.readline, reader.readexact

        def done(t):
            with self.lock:
                self.transactions.append(t)
        try:
            c.sendall(b"220 raw.sink.test ESMTP\r\n")
            while True:
                line = readline()
                tx.commands.append(line)
                if not line.endswith(b"\r\n"):
                    with self.lock:
                        self.bad_lines.append(line)
                verb = line.strip().split(b" ", 1)[0].upper()
                if verb == b"EHLO":
                    c.sendall(b"250-raw.sink.test\r\n"
                              + (b"250-PIPELINING\r\n" if self.pipelining else b"")
                              + b"250-8BITMIME\r\n250-SMTPUTF8\r\n"
                              + (b"250-CHUNKING\r\n" if self.chunking else b"")
                              + b"250 ENHANCEDSTATUSCODES\r\n")
                elif verb == b"HELO":
                    c.sendall(b"250 raw.sink.test\r\n")
                elif verb == b"MAIL":
                    tx = RawTransaction()
                    tx.commands.append(line)
                    tx.mail = line.strip().decode("utf-8", "replace")
                    c.sendall(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    tx.rcpts.append(line.strip().decode("utf-8", "replace"))
                    c.sendall(b"250 2.1.5 Ok\r\n")
                elif verb == b"DATA":
                    c.sendall(b"354 go ahead\r\n")
                    data = b""
                    while True:
                        l2 = readline()
                        if l2 == b".\r\n":
                            break
                        data += l2
                    tx.data = data
                    with self.lock:
                        self.transactions.append(tx)
                    c.sendall(b"250 2.0.0 Ok: raw\r\n")
                elif verb == b"BDAT" and self.chunking:
                    if not serve_bdat(line, tx, readexact, c.sendall, done):
                        return
                elif verb == b"QUIT":
                    c.sendall(b"221 2.0.0 Bye\r\n")
                    return
                elif verb in (b"RSET", b"NOOP"):
                    c.sendall(b"250 2.0.0 Ok\r\n")
                else:
                    c.sendall(b"502 5.5.1 not here\r\n")
        except (EOFError, OSError):
            pass
        finally:
            c.close()

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# an SMTP server with STARTTLS (Python's ssl module), for outbound TLS

class TlsConn:
    """What a TlsSink saw on one connection."""

    def __init__(self, n):
        self.n = n
        self.ehlos = 0             # EHLO commands (RFC 3207: one before and one after TLS)
        self.starttls = False      # the client said STARTTLS
        self.injected = b""        # plaintext that came behind STARTTLS before the 220
        self.client_hello = False  # bytes came after the 220 (the ClientHello, or so)
        self.tls = None            # TLS version once the handshake succeeded ("TLSv1.3")
        self.cipher = None
        self.sni = None            # server name the client sent, None if none
        self.handshake_error = None
        self.badrecord = False     # garbage instead of the reply to MAIL (handshake mode)
        self.peer_closed = False   # the client closed while we stalled or waited
        self.done = False          # the connection is over (either side closed)
        self.commands = []         # command lines (CRLF included), TLS or not

    def __repr__(self):
        return "TlsConn(%d ehlos=%d starttls=%s tls=%s sni=%s err=%s done=%s)" % (
            self.n, self.ehlos, self.starttls, self.tls, self.sni, self.handshake_error,
            self.done)


class TlsSink:
    """Answers 250 to everything (EHLO: PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES, CHUNKING
    when chunking and, when starttls, STARTTLS until TLS is on) and records each transaction's
    DATA section (or BDAT chunks) byte for byte (RawTransaction, plus .tls: the TLS version it
    came over, None in plaintext).

    handshake: what follows the 220 to STARTTLS on the first bad_conns connections (None:
    every connection); later ones do a real handshake.
        "ok"       a real TLS handshake with cert/key (ctx_options: minimum/maximum_version)
        "garbage"  a few bytes that are no TLS record, then close
        "close"    close at once
        "stall"    take the ClientHello, answer nothing, close when the client does or when
                   release() is called
        "badrecord" a real handshake, then at MAIL bytes that are no TLS record, and close
        "inject"   a reply injected behind the 220, in the same segment (the client must not
                   take it for a reply), then a real handshake
        "refuse"   454 instead of 220; the session goes on in plaintext
    """

    def __init__(self, cert, key, host="127.0.0.1", port=None, starttls=True, handshake="ok",
                 bad_conns=None, min_version=None, max_version=None, chunking=False):
        self.host = host
        self.port = port or free_port()
        self.starttls = starttls
        self.chunking = chunking
        self.handshake = handshake
        self.bad_conns = bad_conns
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        if min_version:
            self.ctx.minimum_version = min_version
        if max_version:
            self.ctx.maximum_version = max_version
        self.ctx.sni_callback = self._sni
        self.transactions = []
        self.conns = []
        self.bad_lines = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.stopping = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, self.port))
        self.sock.listen(64)
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _sni(self, sslobj, name, ctx):
        conn = getattr(sslobj, "rr_conn", None)
        if conn is not None:
            conn.sni = name
        return None

    def release(self):
        """End every stall: the stalled connections are closed by the sink."""
        self.released.set()

    def conns_snapshot(self):
        with self.lock:
            return list(self.conns)

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                conn = TlsConn(len(self.conns))
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(c, conn), daemon=True).start()

    def _stall(self, c, conn):
        """Read what the client sends (its ClientHello) and answer nothing."""
        c.settimeout(0.1)
        while not self.released.is_set() and not self.stopping:
            try:
                data = c.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            if not data:
                conn.peer_closed = True
                return
            conn.client_hello = True

    def _serve(self, c, conn):
        c.settimeout(60 * SLACK)
        sock = c
        tx = RawTransaction()
        reader = SockReader(c)  # its sock becomes the TLS one after STARTTLS
        readline, readexact = reader.readline, reader.readexact

        def done(t):
            with self.lock:
                self.transactions.append(t)
        try:
            sock.sendall(b"220 tls.sink.test ESMTP\r\n")
            while True:
                line = readline()
                conn.commands.append(line)
                if not line.endswith(b"\r\n"):
                    with self.lock:
                        self.bad_lines.append(line)
                verb = line.strip().split(b" ", 1)[0].upper()
                if verb == b"EHLO":
                    conn.ehlos += 1
                    offer = self.starttls and conn.tls is None
                    sock.sendall(b"250-tls.sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                 + (b"250-STARTTLS\r\n" if offer else b"")
                                 + (b"250-CHUNKING\r\n" if self.chunking else b"")
                                 + b"250 ENHANCEDSTATUSCODES\r\n")
                elif verb == b"HELO":
                    sock.sendall(b"250 tls.sink.test\r\n")
                elif verb == b"STARTTLS":
                    if not self.starttls or conn.tls is not None:
                        sock.sendall(b"502 5.5.1 not now\r\n")
                        continue
                    conn.starttls = True
                    conn.injected, reader.buf = reader.buf, b""
                    bad = self.bad_conns is None or conn.n < self.bad_conns
                    mode = self.handshake if bad else "ok"
                    if mode == "refuse":
                        sock.sendall(b"454 4.7.0 TLS not available due to local problem\r\n")
                        continue
                    sock.sendall(b"220 2.0.0 Ready to start TLS\r\n"
                                 + (b"250 2.0.0 injected\r\n" if mode == "inject" else b""))
                    if mode == "close":
                        return
                    if mode == "garbage":
                        sock.sendall(b"this is no TLS record at all\r\n" * 4)
                        return
                    if mode == "stall":
                        self._stall(c, conn)
                        return
                    conn.badrecord = mode == "badrecord"
                    try:
                        sock = self.ctx.wrap_socket(c, server_side=True,
                                                    do_handshake_on_connect=False)
                        reader.sock = sock
                        sock.rr_conn = conn  # for the SNI callback
                        sock.do_handshake()
                    except (ssl.SSLError, OSError) as e:
                        conn.handshake_error = str(e)
                        return
                    conn.tls = sock.version()
                    conn.cipher = sock.cipher()[0]
                elif verb == b"MAIL" and conn.badrecord:
                    os.write(sock.fileno(), b"this is no TLS record at all\r\n" * 4)
                    return
                elif verb == b"MAIL":
                    tx = RawTransaction()
                    tx.commands.append(line)
                    tx.mail = line.strip().decode("utf-8", "replace")
                    tx.tls = conn.tls
                    sock.sendall(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    tx.rcpts.append(line.strip().decode("utf-8", "replace"))
                    sock.sendall(b"250 2.1.5 Ok\r\n")
                elif verb == b"DATA":
                    sock.sendall(b"354 go ahead\r\n")
                    data = []
                    while True:
                        l2 = readline()
                        if l2 == b".\r\n":
                            break
                        data.append(l2)
                    tx.data = b"".join(data)
                    with self.lock:
                        self.transactions.append(tx)
                    sock.sendall(b"250 2.0.0 Ok: tls sink\r\n")
                elif verb == b"BDAT" and self.chunking:
                    if not serve_bdat(line, tx, readexact, sock.sendall, done):
                        return
                elif verb == b"QUIT":
                    sock.sendall(b"221 2.0.0 Bye\r\n")
                    return
                elif verb in (b"RSET", b"NOOP"):
                    sock.sendall(b"250 2.0.0 Ok\r\n")
                else:
                    sock.sendall(b"502 5.5.1 not here\r\n")
        except (EOFError, OSError):
            conn.peer_closed = True
        finally:
            conn.done = True
            try:
                sock.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        self.released.set()
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# dnsmasq

def dns_query(name, qtype, port, server="127.0.0.1", timeout=1.0):
    """(rcode, answer count) of one UDP query; raises on timeout."""
    tid = int(time.monotonic() * 1000) & 0xFFFF
    q = struct.pack(">HHHHHH", tid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    q += struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q, (server, port))
        data = s.recv(4096)
    flags, _, an = struct.unpack(">HHH", data[2:8])
    return flags & 0xF, an


def udp_port_is_free(port, host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


class DnsServer:
    """dnsmasq, authoritative for rr.test: mx=[(domain, exchange, pref)], hosts=[(name, ipv4)],
    null_mx=[domain]. Names not configured in rr.test are NXDOMAIN."""

    def __init__(self, workdir, mx=(), hosts=(), null_mx=()):
        self.workdir = workdir
        self.mx, self.hosts, self.null_mx = list(mx), list(hosts), list(null_mx)
        self.proc = None
        self.port = None
        self.log_path = os.path.join(workdir, "dnsmasq.log")

    def argv(self):
        a = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--port=%d" % self.port,
             "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
             "--local=/%s/" % ZONE, "--local-ttl=30", "--log-queries",
             "--log-facility=" + self.log_path, "--pid-file="]
        if os.geteuid() == 0:
            a.append("--user=root")
        a.append("--host-record=probe.%s,127.0.0.1" % ZONE)
        for dom, exch, pref in self.mx:
            a.append("--mx-host=%s,%s,%d" % (dom, exch, pref))
        for dom in self.null_mx:
            a.append("--mx-host=%s,.,0" % dom)
        for name, addr in self.hosts:
            a.append("--host-record=%s,%s" % (name, addr))
        return a

    def choose_port(self):
        """Fix the port now (to configure the relay before the server runs)."""
        while self.port is None:
            p = free_port()
            if udp_port_is_free(p):
                self.port = p
        return self.port

    def start(self):
        assert self.proc is None
        assert os.access(DNSMASQ, os.X_OK), \
            "%s is missing (package dnsmasq-base, deploy/install-deps.sh)" % DNSMASQ
        fixed = self.port is not None
        for _ in range(20):
            if self.port is None:
                p = free_port()
                if not udp_port_is_free(p):
                    continue
                self.port = p
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

            def up():
                if self.proc.poll() is not None:
                    return True
                try:
                    return dns_query("probe." + ZONE, 1, self.port)[1] == 1
                except OSError:
                    return False
            wait_for(up, 10 * SLACK, interval=0.05)
            if self.proc.poll() is None:
                return self
            err = self.proc.stderr.read().decode("utf-8", "replace")
            self.proc = None
            if "in use" not in err or fixed:
                raise AssertionError("dnsmasq failed: %s\n%s" % (self.argv(), err))
            self.port = None
        raise AssertionError("dnsmasq: no free port found")

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            self.proc.stderr.close()
            self.proc = None

    @property
    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


# ---------------------------------------------------------------------------------------------
# the factory behind the `peers` fixture

def common_port(hosts, tries=50):
    """A TCP port free on every one of hosts (127.0.0.x), for MX deliveries: the relay uses
    one port (relay.port) for every MX host."""
    for _ in range(tries):
        p = free_port()
        if all(port_is_free(p, h) for h in hosts):
            return p
    raise AssertionError("no port free on all of %s" % (hosts,))


class Peers:
    def __init__(self, workdir):
        self.workdir = workdir
        self.items = []

    def sink(self, *flags, host="127.0.0.1", port=None, name=None, start=True):
        """An smtp-sink on host:port (port: a free one), started with flags unless start is
        false."""
        name = name or "sink%d" % len(self.items)
        d = os.path.join(self.workdir, name)
        os.makedirs(d, exist_ok=True)
        s = SmtpSink(d, host=host, port=port, name=name)
        self.items.append(s)
        if start:
            s.start(*flags)
        return s

    def raw_sink(self, host="127.0.0.1", port=None, chunking=False, pipelining=True):
        s = RawSink(host=host, port=port, chunking=chunking, pipelining=pipelining)
        self.items.append(s)
        return s

    def tls_sink(self, cert, key, **kw):
        """A TlsSink (STARTTLS with cert/key) on kw host/port; see TlsSink for the rest."""
        s = TlsSink(cert, key, **kw)
        self.items.append(s)
        return s

    def dns(self, mx=(), hosts=(), null_mx=(), start=True):
        d = os.path.join(self.workdir, "dns%d" % len(self.items))
        os.makedirs(d, exist_ok=True)
        s = DnsServer(d, mx=mx, hosts=hosts, null_mx=null_mx)
        self.items.append(s)
        if start:
            s.start()
        return s

    def stop_all(self):
        for s in reversed(self.items):
            try:
                s.stop()
            except Exception:       # teardown goes on: one peer must not keep others running
                pass


def relay_sections(smarthost_port=None, **relay):
    """The [relay] section of a delivery test: fast retries, bounded timeouts."""
    sec = {"retry_min": "1s", "retry_max": "2s", "connect_timeout": "5s",
           "command_timeout": "%ds" % int(30 * SLACK)}
    # conftest's default_sections point the smarthost at a dead port; None removes the key,
    # and without a smarthost the relay looks up MX records
    sec["smarthost"] = None if smarthost_port is None else "[127.0.0.1]:%d" % smarthost_port
    sec.update(relay)
    return sec



# ---------------------------------------------------------------------------------------------
# sending and checking

def send_one(d, content, mail_from="s@example.com", rcpts=("r@example.net",), eight_bit=False):
    """One message through daemon d's listener (own connection); returns its queue id."""
    with d.client() as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<%s>%s" % (mail_from, " BODY=8BITMIME" if eight_bit else ""))
        assert r.code == 250, r
        for rc in rcpts:
            r = c.cmd("RCPT TO:<%s>" % rc)
            assert r.code == 250, r
        r = c.cmd("DATA")
        assert r.code == 354, r
        c.send(dot_stuff(content) + b".\r\n")
        qid = queued_id(c.reply(timeout=60))
        c.quit()
    return qid


def tagged_message(tag, body_lines=None, subject=None, headers=None):
    """A message carrying "X-Test-Id: tag" (to find it at the sink) and "Message-ID"."""
    h = {"Message-ID": "<%s@relay.test>" % tag, "X-Test-Id": tag}
    h.update(headers or {})
    return make_message(subject or "relay test " + tag,
                        body_lines if body_lines is not None else ["Body of %s." % tag, "Bye."],
                        headers=h)


def big_content(tag, size=1024 * 1024):
    """About size bytes with lines that need dot-stuffing, lone dots and empty lines
    throughout."""
    lines, n, i = [], 0, 0
    while n < size:
        line = "%07d %s" % (i, "abcdefghijklmnopqrstuvwxyz0123456789"[: i % 37] * 2)
        if i % 17 == 0:
            line = "." + line                   # dot-stuffed on the wire
        if i % 101 == 0:
            line = "."                          # a lone dot inside the body
        if i % 53 == 0:
            line = ""
        lines.append(line)
        n += len(line) + 2
        i += 1
    return tagged_message(tag, lines)


def marker(tag):
    return b"X-Test-Id: " + tag.encode() + b"\n"


def check_dsn(dump, sender, failed, original_marker=None, status_class=None):
    """dump is a bounce (RFC 3464) for sender about the recipients failed: from <>, to the
    sender, multipart/report; report-type=delivery-status, a message/delivery-status part with
    one Final-Recipient + Action: failed per failed recipient, a text/rfc822-headers part with
    the original header section (holding original_marker). Returns the delivery-status text."""
    assert dump.mail_from == "", "a bounce must come from <>: %r" % dump
    assert dump.rcpts == [sender], dump
    msg = dump.message()
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert (msg.get_param("report-type") or "").lower() == "delivery-status", msg["Content-Type"]
    types = [p.get_content_type() for p in msg.walk()]
    assert "message/delivery-status" in types, types
    assert "text/rfc822-headers" in types, types
    # the delivery-status fields, as text
    text = dump.content.decode("utf-8", "replace")
    ds = text.split("message/delivery-status", 1)[1]
    for rc in failed:
        assert re.search(r"(?im)^Final-Recipient:\s*rfc822;\s*<?%s>?\s*$" % re.escape(rc), ds), \
            "no Final-Recipient for %s in\n%s" % (rc, ds[:3000])
    assert len(re.findall(r"(?im)^Action:\s*failed\s*$", ds)) >= len(failed), ds[:3000]
    statuses = re.findall(r"(?im)^Status:\s*([245])\.\d{1,3}\.\d{1,3}\s*$", ds)
    assert len(statuses) >= len(failed), ds[:3000]
    if status_class:
        assert all(s == status_class for s in statuses[:len(failed)]), statuses
    if original_marker is not None:
        hdr = [p for p in msg.walk() if p.get_content_type() == "text/rfc822-headers"][0]
        payload = hdr.get_payload(decode=True) or b""
        if not payload:
            payload = hdr.as_bytes()
        assert original_marker.strip() in payload.replace(b"\r\n", b"\n"), \
            "original headers not in the text/rfc822-headers part: %r" % payload[:2000]
    return ds
