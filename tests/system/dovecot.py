"""
A real Dovecot for the system tests: its auth service only, on a unix socket in a temporary
directory, with a passwd-file the test writes.

  Dovecot(users, settings=None)
                      users: {name: password} or {name: (password, scheme, extra)} where
                      scheme is "SHA512-CRYPT" (default, hashed with `openssl passwd -6`) or
                      "PLAIN", and extra is the passwd-file's extra fields ("nologin
                      reason=gone", "proxy host=192.0.2.9"), for users Dovecot refuses.
                      settings: more top-level dovecot.conf lines {key: value}
                      ({"auth_failure_delay": "10 secs"}).
    .start()          write dovecot.conf and the users file, run `dovecot -F -c CONF`, wait
                      (bounded) until the auth-client socket accepts; raises with Dovecot's
                      log when it does not come up.
    .stop()           SIGTERM to Dovecot's process group (master and children), wait
                      (bounded) until none is left; stragglers are killed and reported.
                      Leaves nothing running.
    .socket           the auth-client socket path ([auth] dovecot_socket).
    .set_users(users) rewrite the users file (Dovecot reads a passwd-file again when it
                      changes; no reload needed).
    .log              Dovecot's log.
  fixture helper: dovecot_factory(), a context manager that yields make(users, start=True,
                  settings=None) and stops every Dovecot it made.

The configuration (verified with Dovecot 2.3.19 on Debian 12, package dovecot-core):
  - base_dir, state_dir, log_path, the socket and the users file all live in one directory
    made here, mode 0755 (the auth process runs as the `dovecot` user and must read the users
    file; pytest's own temporary directories are 0700). Its path is short: Dovecot puts unix
    sockets under base_dir, and a socket path must fit 107 bytes.
  - `protocols =` (none): Dovecot starts "without any protocols", and no service has an inet
    listener with a port (doveadm's is port 0): nothing listens on the network.
  - `ssl = no`; `auth_mechanisms = plain`; `auth_verbose = yes` (each failure is logged as
    "passwd-file(USER,RIP,<session>): Password mismatch", so tests see what Dovecot was
    asked and from which address); passdb passwd-file (scheme CRYPT by default, a
    {SCHEME} prefix per line overrides); userdb static (never consulted by auth-client
    requests, but Dovecot requires one).
  - `service auth { unix_listener auth-client { mode = 0666 } }` at DIR/auth-client.
  - As root, Dovecot's own users serve (default_internal_user = dovecot, default_login_user
    = dovenull, both made by the Debian package). Not as root, the current user is all of them
    (Dovecot then runs every process as that user).
  - Dovecot's defaults otherwise, on purpose: a failed login is answered after
    auth_failure_delay (2 s), and a client address (rip=) with recent failures waits longer
    before its next check (the auth penalty, up to 15 s), as in production.
"""
import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from conftest import SLACK

DOVECOT = "/usr/sbin/dovecot"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def sha512_crypt(password):
    """{SHA512-CRYPT} hash of password, made by openssl (the password goes through stdin)."""
    r = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password.encode() + b"\n",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, check=True)
    h = r.stdout.decode().strip()
    assert h.startswith("$6$"), "openssl passwd -6 gave %r" % h
    return h


def _group(pgid):
    """Pids of the live (not zombie) processes of process group pgid (from /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            out.append(int(name))
    return out


class Dovecot:
    def __init__(self, users, settings=None):
        self.settings = dict(settings or {})
        self.dir = tempfile.mkdtemp(prefix="rr-dv-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "dovecot.conf")
        self.users_path = os.path.join(self.dir, "users")
        self.socket = os.path.join(self.dir, "auth-client")
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.users = dict(users)
        self.proc = None
        self.out = None

    # -- files
    def _users_text(self):
        lines = []
        for name, spec in self.users.items():
            if isinstance(spec, str):
                password, scheme, extra = spec, "SHA512-CRYPT", ""
            else:
                password, scheme, extra = (list(spec) + [""])[:3]
            field = sha512_crypt(password) if scheme == "SHA512-CRYPT" else password
            # user:password:uid:gid:gecos:home:shell:extra_fields
            lines.append("%s:{%s}%s::::::%s" % (name, scheme, field, extra))
        return "\n".join(lines) + "\n"

    def set_users(self, users):
        self.users = dict(users)
        tmp = self.users_path + ".new"
        with open(tmp, "w") as f:
            f.write(self._users_text())
        os.chmod(tmp, 0o644)
        os.rename(tmp, self.users_path)

    def _conf_text(self):
        if os.geteuid() == 0:
            internal, group, login = "dovecot", "dovecot", "dovenull"
        else:
            internal = login = pwd.getpwuid(os.geteuid()).pw_name
            group = grp.getgrgid(os.getegid()).gr_name
        return "\n".join([
            "base_dir = %s/run" % self.dir,
            "state_dir = %s/state" % self.dir,
            "log_path = %s" % self.log_path,
            "info_log_path = %s" % self.log_path,
            "protocols =",
            "ssl = no",
            "default_internal_user = %s" % internal,
            "default_internal_group = %s" % group,
            "default_login_user = %s" % login,
            "auth_mechanisms = plain",
            "auth_verbose = yes",
        ] + ["%s = %s" % kv for kv in self.settings.items()] + [
            "passdb {",
            "  driver = passwd-file",
            "  args = scheme=CRYPT %s" % self.users_path,
            "}",
            "userdb {",
            "  driver = static",
            "  args = uid=%d gid=%d home=/nonexistent" % (os.geteuid(), os.getegid()),
            "}",
            "service auth {",
            "  unix_listener auth-client {",
            "    path = %s" % self.socket,
            "    mode = 0666",
            "  }",
            "}",
            "",
        ])

    # -- life cycle
    def start(self):
        assert self.proc is None
        assert os.access(DOVECOT, os.X_OK), \
            "%s is missing (package dovecot-core, deploy/install-deps.sh)" % DOVECOT
        self.set_users(self.users)
        with open(self.conf, "w") as f:
            f.write(self._conf_text())
        self.out = open(os.path.join(self.dir, "dovecot.out"), "wb")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT * SLACK
        while not self._accepts():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("dovecot did not come up:\n%s" % self.log)
            time.sleep(0.02)
        return self

    def _accepts(self):
        if not os.path.exists(self.socket):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            try:
                s.connect(self.socket)
            except OSError:
                return False
        return True

    def stop(self):
        """Stop the master and every process it started; returns a list of problems (empty
        when all of them went on SIGTERM).

        Dovecot runs in its own session and process group (start_new_session), and the whole
        group gets SIGTERM: signalled alone, the master exits but leaves anvil, log, auth and
        stats running (without systemd's cgroup nobody reaps them; Dovecot 2.3.19 seen)."""
        problems = []
        if self.proc is None:
            return problems
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT * SLACK)
        except subprocess.TimeoutExpired:
            problems.append("dovecot master did not exit on SIGTERM")
        deadline = time.monotonic() + STOP_TIMEOUT * SLACK
        while _group(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = _group(pgid)
        if left:
            problems.append("dovecot processes %s did not exit on SIGTERM" % left)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        if self.out:
            self.out.close()
            self.out = None
        return problems

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def log(self):
        text = ""
        for name in ("dovecot.out", "dovecot.log"):
            p = os.path.join(self.dir, name)
            if os.path.exists(p):
                with open(p, "rb") as f:
                    text += f.read().decode("utf-8", "replace")
        return text


@contextlib.contextmanager
def dovecot_factory():
    """Yields make(users) -> a started Dovecot; at the end stops them all, asserts they left
    nothing running, and removes their directories (kept when something went wrong)."""
    made = []

    def make(users, start=True, settings=None):
        d = Dovecot(users, settings)
        made.append(d)
        return d.start() if start else d

    try:
        yield make
    finally:
        problems = []
        for d in made:
            problems += d.stop()
        for d in made:
            if not problems:
                d.remove()
        assert not problems, "\n".join(problems)
