"""Shared helpers for maildict's end-to-end tests (Python 3 standard library only).

Every test_*.py next to this file is one CTest test, run as `python3 tests/e2e/test_x.py` with
MAILDICT_BUILD_DIR (where maildictd and maildict-admin are built) and MAILDICT_SOURCE_DIR set.
Exit code 0 means pass.

What is here:
  * TempDir                  a private temporary directory (removed afterwards, unless
                             MAILDICT_E2E_KEEP=1 is set)
  * make_demo_db()           `maildict-admin demo` into a temp dir
  * start_maildictd()        maildictd in the foreground on a socket in the temp dir; stop()
                             sends SIGTERM, requires exit code 0 and checks that the (debug-level)
                             log holds no demo password and no hash fragment
  * start_postgres()         a private PostgreSQL 15 cluster (initdb + postmaster as the
                             postgres account, UNIX socket only) with psql(), stop(mode),
                             start(), restart(mode), make_replica() (pg_basebackup -R)
  * make_demo_database()     the demo directory in the backend under test: MAILDICT_TEST_BACKEND
                             = sqlite (default) or postgresql; start_maildictd() uses it, so the
                             backend-neutral suites run unchanged on both (CMake registers them
                             twice); DemoDatabase.run_sql() changes it from another connection
  * start_dovecot()          a private Dovecot 2.3 instance (own base_dir, state_dir, log,
                             instance name; IMAP on a free loopback port when asked) whose
                             passdb/userdb are the shipped packaging/dovecot snippets pointed at
                             the test's maildictd socket
  * doveadm()                `doveadm -c CONF ...` -> (rc, stdout, stderr); parse_auth_test()
                             and parse_doveadm_user() read its output
  * start_smtpd()            a real OpenSMTPD (bookworm's 6.8 or the bookworm-backports 7.4
                             unpacked by fetch-smtpd-backports.sh) in the foreground, in a
                             private mount namespace, with the built table-maildict as its
                             table-maildict; shipped_smtpd_conf() turns packaging/smtpd/smtpd.conf
                             into a test configuration; smtpd_missing() says why it cannot run
  * DictClient               a raw dict-protocol client (bytes in, reply lines out, timeouts)
                             and ReplyMatcher, which pairs replies with commands by the rules
                             of specs/dovecot.md §1.4 (`*n` / `+n` async ids, or plain FIFO)

needs_peer() / require_peer(): a test whose Dovecot, smtpd or PostgreSQL is missing fails under
the test command (MAILDICT_REQUIRE_PEERS=1) and is skipped, saying so, when run by hand.

MAILDICT_MAILDICTD / MAILDICT_ADMIN / MAILDICT_MAILDICTCTL override the programs under test (e.g.
a sanitizer build); maildictctl() runs the operator's tool against a test's maildict.conf.

Every process started here is also registered for cleanup at interpreter exit and gets
PR_SET_PDEATHSIG, so nothing outlives a failed or killed test.
"""

import atexit
import contextlib
import ctypes
import http.client
import json
import imaplib
import smtplib
import os
import pwd
import grp
import re
import secrets
import shutil
import signal
import socket
import ssl
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

# ---- locations ------------------------------------------------------------------------------

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("MAILDICT_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BUILD_DIR = os.environ.get("MAILDICT_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
PACKAGING_DOVECOT = os.path.join(SOURCE_DIR, "packaging", "dovecot")


def maildictd_path():
    return os.environ.get("MAILDICT_MAILDICTD") or os.path.join(BUILD_DIR, "maildictd")


def admin_path():
    return os.environ.get("MAILDICT_ADMIN") or os.path.join(BUILD_DIR, "maildict-admin")


def maildictctl_path():
    return os.environ.get("MAILDICT_MAILDICTCTL") or os.path.join(BUILD_DIR, "maildictctl")


def maildictctl(conf_path, *args, stdin=None, timeout=None):
    """Runs `maildictctl -c CONF ARGS...` -> (rc, stdout, stderr). stdin: text for its standard
    input (the password goes there), or None for an empty one."""
    r = subprocess.run([maildictctl_path(), "-c", conf_path] + list(args), input=stdin or "",
                       capture_output=True, text=True, timeout=timeout or COMMAND_TIMEOUT)
    return r.returncode, r.stdout, r.stderr


# Generous: the CI machine may be small and busy (CTest runs several tests at once).
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
COMMAND_TIMEOUT = 120.0

# ---- the demo directory (`maildict-admin demo`) ----------------------------------------------

DEMO_PASSWORDS = {
    "john@example.org": "john-secret",
    "jane@example.org": "jane-secret",
    "john_doe@example.org": "doe-secret",
    "bob@example.net": "bob-secret",
    "eve@example.org": "eve-secret",
    "ghost@disabled.example": "ghost-secret",
}
ACTIVE_USERS = {
    "john@example.org",
    "jane@example.org",
    "john_doe@example.org",
    "bob@example.net",
    "nopw@example.net",
}
JOHN_QUOTA_RULE = "*:storage=1073741824B"
BOB = {"uid": "2000", "gid": "2000", "home": "/var/vmail/custom/bob", "mail": "maildir:~/Mail"}

# Nothing of this may ever appear in maildictd's log (DESIGN.md §2 rule 6).
SECRET_FRAGMENTS = sorted(set(DEMO_PASSWORDS.values())) + [
    "$2b$", "$2y$", "$2a$", "$6$", "{BLF-CRYPT}", "{SHA512-CRYPT}",
]

# An unprivileged account that exists on every Debian system: IMAP sessions run as it.
NOBODY_UID = pwd.getpwnam("nobody").pw_uid
NOGROUP_GID = grp.getgrnam("nogroup").gr_gid


def log(*args):
    print("[e2e %s]" % time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


# ---- peers a test needs (Dovecot, smtpd, PostgreSQL) ---------------------------------------

# Set by tests/run-all.sh (the test command, and so CI): a test whose peer is missing FAILS, so a
# CI machine without smtpd cannot pass by skipping. Unset (a developer running one test by
# hand), such a test is skipped and says why and that the test command would fail.
REQUIRE_PEERS = os.environ.get("MAILDICT_REQUIRE_PEERS") == "1"


def _missing_peer_message(missing):
    if REQUIRE_PEERS:
        return "missing peer (MAILDICT_REQUIRE_PEERS=1, so this is a failure): %s" % missing
    return ("skipped, missing peer: %s (the test command, tests/run-all.sh, sets "
            "MAILDICT_REQUIRE_PEERS=1 and fails here)" % missing)


def needs_peer(missing):
    """Decorator for a test class or method that cannot run without a peer: `missing` is why it
    cannot (e.g. smtpd_missing()), or None when it can. With MAILDICT_REQUIRE_PEERS=1 the
    test fails; otherwise it is skipped with the reason."""
    if not missing:
        return lambda obj: obj
    message = _missing_peer_message(missing)
    if not REQUIRE_PEERS:
        log(message)
        return unittest.skip(message)

    def fail(obj):
        if isinstance(obj, type):
            def setUpClass(cls):
                raise AssertionError(message)
            obj.setUpClass = classmethod(setUpClass)
            return obj

        def failing(*args, **kwargs):
            raise AssertionError(message)
        failing.__name__ = obj.__name__
        return failing
    return fail


def require_peer(missing):
    """In a test method or setUpClass: fails (MAILDICT_REQUIRE_PEERS=1) or skips when `missing`
    (a reason, or None) says a peer is not there."""
    if not missing:
        return
    message = _missing_peer_message(missing)
    if REQUIRE_PEERS:
        raise AssertionError(message)
    log(message)
    raise unittest.SkipTest(message)


# ---- process bookkeeping --------------------------------------------------------------------

_live_processes = {}   # pid -> (Popen, description)


try:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _libc = None


def _set_pdeathsig():
    # Runs in the child between fork and exec: die with the test process (best effort).
    if _libc is not None:
        _libc.prctl(1, signal.SIGTERM, 0, 0, 0)   # PR_SET_PDEATHSIG


def spawn(argv, description, **kw):
    """Popen with cleanup registration and parent-death signal."""
    proc = subprocess.Popen(argv, preexec_fn=_set_pdeathsig, **kw)
    _live_processes[proc.pid] = (proc, description)
    return proc


def _forget(proc):
    _live_processes.pop(proc.pid, None)


def kill_and_wait(proc, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
    """Signals one process we started (by pid) and waits; SIGKILL if it does not exit."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log("pid %d did not exit within %ss, sending SIGKILL" % (proc.pid, timeout))
            proc.kill()
            proc.wait(timeout=timeout)
    _forget(proc)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass
    return proc.returncode


_live_tempdirs = []


@atexit.register
def _cleanup_at_exit():
    for pid, (proc, what) in reversed(list(_live_processes.items())):   # newest first
        if proc.poll() is None and not what.startswith("postgres "):
            log("cleanup: stopping %s (pid %d)" % (what, pid))
            kill_and_wait(proc, timeout=10)
    for pg in list(_live_postgres):       # after their clients; a fast shutdown, not SIGKILL
        if pg.alive():
            log("cleanup: stopping PostgreSQL %s (pid %d)" % (pg.name, pg.proc.pid))
            pg.stop("fast")
    for t in list(_live_tempdirs):
        t.cleanup()


def _on_sigterm(signum, frame):
    # CTest's timeout or a user's kill. KeyboardInterrupt (unlike SystemExit) is not caught by
    # unittest, so the run stops here; the atexit handler then stops our processes.
    signal.signal(signum, signal.SIG_DFL)
    raise KeyboardInterrupt("signal %d" % signum)


signal.signal(signal.SIGTERM, _on_sigterm)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_tcp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def unix_socket_accepts(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def unix_connections(path):
    """How many connected sockets carry the bound name `path`: on Linux each connection a
    UNIX listener accepted shows up in /proc/net/unix under the listener's path (state 03)."""
    n = 0
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and fields[5] == "03":
                n += 1
    return n


# What AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer print (to the program's
# stderr, which is its log here) when a build with MAILDICT_SANITIZE=ON finds a fault. The test
# command runs some suites against such a build (tests/run-all.sh, asan_tests); a report there
# fails the test even when the program went on answering.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def sanitizer_report(text):
    """The lines around the first sanitizer report in `text`, or None."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if any(m in line for m in SANITIZER_MARKERS):
            return "\n".join(lines[max(0, i - 2):i + 30])
    return None


def sanitizer_reports_in(directory):
    """[(path, excerpt)] for every *.log file under `directory` that holds a sanitizer report."""
    found = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if not name.endswith(".log"):
                continue
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    report = sanitizer_report(f.read().decode("utf-8", "replace"))
            except OSError:
                continue
            if report:
                found.append((path, report))
    return found


def tail(path, n=60):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)


# ---- temporary directory --------------------------------------------------------------------

class TempDir:
    """`with TempDir() as t:` -> t.path, a fresh directory that others can traverse (0755)."""

    def __init__(self, prefix="maildict-e2e-", dir="/tmp"):
        self.path = tempfile.mkdtemp(prefix=prefix, dir=dir)
        os.chmod(self.path, 0o755)
        _live_tempdirs.append(self)

    def join(self, *parts):
        return os.path.join(self.path, *parts)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def cleanup(self):
        if self in _live_tempdirs:
            _live_tempdirs.remove(self)
        else:
            return   # already done
        # PostgreSQL clusters living in this directory stop with it (maildictd first: the
        # tests stop their daemons before they clean up)
        for pg in list(_live_postgres):
            if pg.dir.startswith(self.path + os.sep):
                pg.stop("fast")
                _live_postgres.remove(pg)
        for key in [k for k in _demo_by_dir if k == self.path]:
            del _demo_by_dir[key]
        # Every program's log is here: a sanitizer report in any of them (also of a process the
        # test killed, whose log stop() never read) fails the test, and the directory is kept.
        reports = sanitizer_reports_in(self.path)
        if reports:
            raise AssertionError("sanitizer report(s) in the logs of %s (kept):\n%s" % (
                self.path, "\n\n".join("%s:\n%s" % r for r in reports)))
        if os.environ.get("MAILDICT_E2E_KEEP"):
            log("keeping", self.path)
            return
        shutil.rmtree(self.path, ignore_errors=True)


# ---- maildict-admin / maildictd -------------------------------------------------------------

def require_programs():
    missing = [p for p in (maildictd_path(), admin_path()) if not os.access(p, os.X_OK)]
    for tool in ("dovecot", "doveadm"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if BACKEND == "postgresql" and postgres_missing():
        missing.append(postgres_missing())
    if missing:
        raise SystemExit("e2e: missing programs: %s (MAILDICT_BUILD_DIR=%s)"
                         % (", ".join(missing), BUILD_DIR))


def make_demo_db(directory, name="directory.db", bulk=None):
    path = os.path.join(directory, name)
    argv = [admin_path(), "demo", path]
    if bulk:
        argv += ["--bulk", str(bulk)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if r.returncode != 0:
        raise AssertionError("maildict-admin demo failed (%d): %s%s"
                             % (r.returncode, r.stdout, r.stderr))
    assert os.path.exists(path), "maildict-admin demo did not create %s" % path
    return path


def maildict_config(tmp, db_path, **overrides):
    """The configuration the tests run maildictd with; overrides replace or add settings (None
    leaves a setting out, so maildictd's default or another setting decides)."""
    conf = {
        "socket": os.path.join(tmp, "dict.sock"),
        "socket_mode": "0666",
        "socket_owner": "",
        "socket_group": "root",
        "user": "",
        # a path is a SQLite file; "sqlite:..." or "postgresql:<conninfo>" is used as it is
        "database": db_path if re.match(r"(sqlite|postgresql):", db_path) else "sqlite:" + db_path,
        "db_connections": "2",
        "io_threads": "2",
        "request_timeout": "5s",
        "cache_entries": "1000",
        "default_uid": str(NOBODY_UID),
        "default_gid": str(NOGROUP_GID),
        "default_home": os.path.join(tmp, "vmail", "%d", "%n"),
        "default_mail": "maildir:~/Maildir",
        "log_level": "debug",
    }
    for k, v in overrides.items():
        if v is None:
            conf.pop(k, None)
        else:
            conf[k] = str(v)
    return conf


class Maildictd:
    def __init__(self, tmp, conf, name="maildictd"):
        self.tmp = tmp
        self.conf = conf
        self.socket = conf["socket"]
        self.conf_path = os.path.join(tmp, name + ".conf")
        self.log_path = os.path.join(tmp, name + ".log")
        self.proc = None
        self.returncode = None
        self.demo = None      # the DemoDatabase start_maildictd() made for it, if any
        with open(self.conf_path, "w") as f:
            f.write("# written by tests/e2e/harness.py\n")
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        rc, out, err = check_config(self.conf_path)
        if rc != 0:
            raise AssertionError("maildictd --check-config rejects %s (%d): %s%s"
                                 % (self.conf_path, rc, out, err))
        logf = open(self.log_path, "ab")
        try:
            self.proc = spawn([maildictd_path(), "-c", self.conf_path], "maildictd",
                              stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        finally:
            logf.close()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("maildictd exited with %s during startup; log:\n%s"
                                     % (self.proc.returncode, tail(self.log_path)))
            return os.path.exists(self.socket) and unix_socket_accepts(self.socket)

        try:
            wait_until(ready, STARTUP_TIMEOUT, "maildictd's socket %s" % self.socket)
        except BaseException:
            self.kill()
            raise
        log("maildictd pid %d serving %s" % (self.proc.pid, self.socket))
        return self

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            kill_and_wait(self.proc, signal.SIGKILL)

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def check_log_has_no_secrets(self):
        text = self.log_text()
        found = []
        for frag in SECRET_FRAGMENTS:
            if frag in text:
                line = next(l for l in text.splitlines() if frag in l)
                found.append("%r in line: %s" % (frag, line[:300]))
        if found:
            raise AssertionError("maildictd's log (%s) reveals secrets:\n  %s"
                                 % (self.log_path, "\n  ".join(found)))

    def stop(self, check_log=True):
        """SIGTERM, wait, require exit code 0 and a log without secrets."""
        if self.proc is None:
            return
        if self.returncode is None:
            was_running = self.proc.poll() is None
            self.returncode = kill_and_wait(self.proc, signal.SIGTERM)
            log("maildictd pid %d exited with %s" % (self.proc.pid, self.returncode))
            report = sanitizer_report(self.log_text())
            if report:
                raise AssertionError("maildictd (pid %d, exit %s) reported a fault:\n%s"
                                     % (self.proc.pid, self.returncode, report))
            if not was_running:
                raise AssertionError("maildictd (pid %d) had already died with %s; log:\n%s"
                                     % (self.proc.pid, self.returncode, tail(self.log_path)))
            if self.returncode != 0:
                raise AssertionError("maildictd exited with %s after SIGTERM; log:\n%s"
                                     % (self.returncode, tail(self.log_path)))
            if check_log:
                self.check_log_has_no_secrets()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.stop()
        else:
            # already failing: stop quietly, report the log for diagnosis
            try:
                self.stop()
            except AssertionError as e:
                log("while failing, also: %s" % e)
            log("maildictd log tail:\n" + tail(self.log_path, 40))
        return False


def start_maildictd(tmp, db_path=None, name="maildictd", **overrides):
    """Writes <tmp>/<name>.conf (see maildict_config) and runs maildictd until its socket accepts.
    db_path None: the demo directory of tmp in the backend under test (demo_database(), made on
    first use; MAILDICT_TEST_BACKEND=postgresql starts a PostgreSQL cluster for it). Otherwise
    a SQLite file or a `database =` value."""
    demo = None
    if db_path is None:
        demo = demo_database(tmp)
        db_path = demo.database
    conf = maildict_config(tmp, db_path, **overrides)
    d = Maildictd(tmp, conf, name=name)
    d.demo = demo
    return d.start()


def check_config(conf_path):
    r = subprocess.run([maildictd_path(), "--check-config", "-c", conf_path],
                       capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    return r.returncode, r.stdout, r.stderr


# ---- PostgreSQL -------------------------------------------------------------------------------
#
# start_postgres() runs a real PostgreSQL 15 (Debian's postgresql-15 package) in a directory of
# the test: initdb as the unprivileged `postgres` account the package creates (the server
# refuses to run as root, and the tests run as root in CI), then the postmaster itself in the
# foreground as that account (setpriv, which execs without forking: the pid we hold is the
# postmaster's, and stop() signals exactly that process, as `pg_ctl stop` would). UNIX socket
# only, in a private socket directory; trust authentication, which is safe on a throwaway
# cluster whose only socket lives in a directory of the test; fsync and friends off for speed.
# The cluster gets a role `maildict` (LOGIN) and a database `maildict` owned by it, the way an
# operator would prepare it for maildictd, which creates its schema itself.

PG_BIN = os.environ.get("MAILDICT_PG_BIN") or "/usr/lib/postgresql/15/bin"
PG_OS_USER = os.environ.get("MAILDICT_PG_OS_USER") or "postgres"
PG_SUPERUSER = "postgres"
PG_DATABASE = "maildict"
PG_ROLE = "maildict"

# Which directory backend the backend-neutral suites run against (CMake registers them once per
# backend: e2e_test_x with sqlite, e2e_pg_x with postgresql).
BACKEND = os.environ.get("MAILDICT_TEST_BACKEND") or "sqlite"
if BACKEND not in ("sqlite", "postgresql"):
    raise SystemExit("MAILDICT_TEST_BACKEND must be sqlite or postgresql, not %r" % BACKEND)

# Settings for a disposable test cluster: durability off (fsync, full-page writes, synchronous
# commit), nothing on TCP, logs to stderr (the test's postgres.log). The rest are defaults.
PG_SETTINGS = {
    "listen_addresses": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "32MB",
    "logging_collector": "off",
    "log_line_prefix": "%m [%p] %q%a ",
    "log_connections": "on",
    "log_disconnections": "on",
    "wal_level": "replica",
    "max_wal_senders": "4",
    "hot_standby": "on",
    "hot_standby_feedback": "on",
}

_live_postgres = []    # every Postgres started here, stopped by TempDir.cleanup / at exit


def postgres_missing():
    """Why start_postgres() cannot run here (a string naming what is missing), or None."""
    for prog in ("initdb", "postgres", "psql", "pg_basebackup"):
        if not os.access(os.path.join(PG_BIN, prog), os.X_OK):
            return ("%s/%s is missing: install Debian's postgresql package "
                    "(packaging/install-deps.sh test)" % (PG_BIN, prog))
    try:
        pwd.getpwnam(PG_OS_USER)
    except KeyError:
        return "the %s account is missing (created by the postgresql-common package)" % PG_OS_USER
    if os.geteuid() != 0:
        return "the tests start PostgreSQL as %s, which needs root" % PG_OS_USER
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is missing"
    return None


def _as_pg_user(argv):
    return ["setpriv", "--reuid", PG_OS_USER, "--regid", PG_OS_USER, "--init-groups", "--"] + argv


class PsqlError(AssertionError):
    pass


class Postgres:
    """One PostgreSQL cluster in <tmp>/<name>: data/, sock/ (its UNIX socket), postgres.log."""

    def __init__(self, tmp, name="pg"):
        self.name = name
        self.dir = os.path.join(tmp, name)
        self.data = os.path.join(self.dir, "data")
        self.sock_dir = os.path.join(self.dir, "sock")
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.proc = None
        pw = pwd.getpwnam(PG_OS_USER)
        for d in (self.dir, self.sock_dir):
            os.makedirs(d)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chmod(d, 0o755)
        _live_postgres.append(self)

    # ---- connection strings ----

    def conninfo(self, user=PG_ROLE, dbname=PG_DATABASE):
        """A libpq conninfo for the UNIX socket (no password: trust authentication)."""
        return "host=%s dbname=%s user=%s" % (self.sock_dir, dbname, user)

    @property
    def database(self):
        """maildictd's `database =` value for this cluster."""
        return "postgresql:" + self.conninfo()

    # ---- life cycle ----

    def _run_as_pg(self, argv, what):
        r = subprocess.run(_as_pg_user(argv), capture_output=True, text=True, cwd=self.dir,
                           timeout=COMMAND_TIMEOUT)
        if r.returncode != 0:
            raise AssertionError("%s failed (%d): %s%s" % (what, r.returncode, r.stdout, r.stderr))
        return r

    def initdb(self):
        self._run_as_pg([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", PG_SUPERUSER,
                         "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
                        "initdb")
        self._write_hba()

    def _write_hba(self):
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("# written by tests/e2e/harness.py: the socket directory is private\n"
                    "local all all trust\n"
                    "local replication all trust\n")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        """Starts the postmaster and waits until it accepts connections (a replica: until it
        accepts read-only connections)."""
        assert not self.alive(), "PostgreSQL %s already running" % self.name
        argv = [os.path.join(PG_BIN, "postgres"), "-D", self.data]
        settings = dict(PG_SETTINGS, unix_socket_directories=self.sock_dir)
        for k, v in settings.items():
            argv += ["-c", "%s=%s" % (k, v)]
        logf = open(self.log_path, "ab")
        try:
            # no parent-death signal: setpriv's change of uid would clear it anyway; the atexit
            # handler and TempDir.cleanup stop the postmaster instead
            self.proc = subprocess.Popen(_as_pg_user(argv), stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf, cwd=self.dir)
        finally:
            logf.close()
        _live_processes[self.proc.pid] = (self.proc, "postgres %s" % self.name)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("PostgreSQL %s exited with %s during startup; log:\n%s"
                                     % (self.name, self.proc.returncode, tail(self.log_path)))
            r = subprocess.run(self._psql_argv(PG_SUPERUSER, "postgres") + ["-c", "SELECT 1"],
                               capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
            return r.returncode == 0

        try:
            wait_until(ready, STARTUP_TIMEOUT, "PostgreSQL %s on %s" % (self.name, self.sock_dir),
                       interval=0.1)
        except BaseException:
            self.stop("immediate")
            raise
        log("PostgreSQL %s pid %d serving %s" % (self.name, self.proc.pid, self.sock_dir))
        return self

    # pg_ctl's shutdown modes are signals to the postmaster
    _STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}

    def stop(self, mode="fast"):
        """Stops the postmaster this object started (by pid) and waits for it to exit:
        `fast` disconnects every client and shuts down cleanly, `immediate` kills the server
        processes at once (crash recovery on the next start)."""
        if self.proc is None:
            return None
        rc = kill_and_wait(self.proc, self._STOP_SIGNALS[mode])
        log("PostgreSQL %s pid %d stopped (%s), exit %s" % (self.name, self.proc.pid, mode, rc))
        self.proc = None
        return rc

    def restart(self, mode="fast"):
        self.stop(mode)
        return self.start()

    def processes(self):
        """The postmaster's pid and those of all its children (backends, background workers)."""
        assert self.alive(), "PostgreSQL %s is not running" % self.name
        pids = [self.proc.pid]
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self.proc.pid:
                pids.append(int(entry))
        return pids

    # ---- SQL ----

    def _psql_argv(self, user, dbname):
        return [os.path.join(PG_BIN, "psql"), "-X", "-q", "-A", "-t", "-F", "\x1f",
                "-v", "ON_ERROR_STOP=1", "-d", self.conninfo(user=user, dbname=dbname)]

    def psql(self, sql, user=PG_SUPERUSER, dbname=PG_DATABASE, params=None, timeout=COMMAND_TIMEOUT):
        """Runs SQL (one or more statements) with psql; returns the result rows as lists of
        strings (NULL is ''). `params` {name: value} become psql variables, to be written
        :'name' in the SQL (psql quotes them as literals: no SQL is built from values here)."""
        argv = self._psql_argv(user, dbname)
        for k, v in (params or {}).items():
            argv += ["-v", "%s=%s" % (k, v)]
        # SQL on stdin, not -c: psql interpolates variables only in script input
        r = subprocess.run(argv + ["-f", "-"], input=sql, capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise PsqlError("psql on %s failed (%d): %s\nSQL: %s"
                            % (self.name, r.returncode, r.stderr.strip(), sql))
        return [line.split("\x1f") for line in r.stdout.splitlines() if line != ""]

    def scalar(self, sql, **kw):
        rows = self.psql(sql, **kw)
        assert len(rows) == 1 and len(rows[0]) == 1, "expected one value from %r, got %r" % (sql, rows)
        return rows[0][0]

    def create_maildict_database(self):
        """The role and database maildictd is configured with; it creates the schema itself."""
        self.psql("CREATE ROLE %s LOGIN" % PG_ROLE, dbname="postgres")
        self.psql("CREATE DATABASE %s OWNER %s" % (PG_DATABASE, PG_ROLE), dbname="postgres")

    def connections(self, application_name):
        """How many server processes serve a client with this application_name right now."""
        return int(self.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = :'app'",
                               params={"app": application_name}))

    def session(self, user=PG_SUPERUSER, dbname=PG_DATABASE):
        """A persistent psql session (PsqlSession) for many quick queries."""
        return PsqlSession(self, user, dbname)

    # ---- replication ----

    def make_replica(self, tmp, name="pg-replica"):
        """A streaming replica of this (running) cluster: pg_basebackup -R into a new
        directory with its own socket; returns the Postgres object, not started."""
        rep = Postgres(tmp, name)
        self._run_as_pg([os.path.join(PG_BIN, "pg_basebackup"), "-D", rep.data,
                         "-d", self.conninfo(user=PG_SUPERUSER, dbname="postgres"),
                         "-R", "-X", "stream", "-c", "fast", "--no-sync"], "pg_basebackup")
        rep._write_hba()
        return rep

    def replay_caught_up(self, primary):
        """True when this replica has replayed everything the primary has written so far."""
        # A synchronously committed transaction with an xid puts a commit record at the end of
        # the WAL and flushes it: the flush position is then a record's end, which the standby
        # reaches by replay. (The insert position may lie past the next page header, which no
        # replay reaches until something else is written.)
        lsn = primary.psql("SET synchronous_commit = on; SELECT txid_current(); "
                           "SELECT pg_current_wal_flush_lsn()")[-1][0]
        return self.scalar("SELECT pg_last_wal_replay_lsn() >= :'lsn'::pg_lsn",
                           params={"lsn": lsn}) == "t"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


class PsqlSession:
    """psql as a coprocess: query() sends one statement and reads its rows up to a marker. For
    sampling pg_stat_activity many times a second without starting a process per sample."""

    _END = "__maildict_e2e_end__"

    def __init__(self, pg, user, dbname):
        self.proc = spawn(pg._psql_argv(user, dbname), "psql session", stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)

    def query(self, sql):
        self.proc.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo " + self._END + "\n")
        self.proc.stdin.flush()
        rows = []
        while True:
            line = self.proc.stdout.readline()
            if line == "":
                raise PsqlError("psql session ended: %r" % rows)
            line = line.rstrip("\n")
            if line == self._END:
                return rows
            if line.startswith(("ERROR:", "FATAL:", "psql:")):
                raise PsqlError(line)
            if line:
                rows.append(line.split("\x1f"))

    def close(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            kill_and_wait(self.proc, timeout=10)
            self.proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def start_postgres(tmp, name="pg", maildict_db=True):
    """A fresh PostgreSQL 15 cluster in <tmp>/<name>, running; with maildict_db the role and
    database `maildict` exist (empty: maildictd or `maildict-admin demo` fills it)."""
    missing = postgres_missing()
    if missing:
        raise AssertionError("cannot start PostgreSQL: " + missing)
    pg = Postgres(tmp, name)
    pg.initdb()
    pg.start()
    if maildict_db:
        pg.create_maildict_database()
    return pg


# ---- the demo directory in the backend under test ---------------------------------------------

class DemoDatabase:
    """The demo directory in one backend: `database` is maildictd's `database =` value.
    run_sql() changes it from another connection, as an operator's tool would."""

    def __init__(self, backend, database, sqlite_path=None, postgres=None):
        self.backend = backend
        self.database = database
        self.sqlite_path = sqlite_path
        self.postgres = postgres

    def run_sql(self, sql, **params):
        """One statement with named parameters written :name (sqlite3's style; turned into
        psql's quoted variables :'name' for PostgreSQL). Committed when it returns. Returns the
        result rows (PostgreSQL: as strings)."""
        if self.backend == "sqlite":
            import sqlite3
            with sqlite3.connect(self.sqlite_path, timeout=30) as c:   # commits on success
                rows = c.execute(sql, params).fetchall()
            c.close()
            return rows
        pg_sql = re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", r":'\1'", sql)
        return self.postgres.psql(pg_sql, user=PG_ROLE, params=params)

    def set_password(self, login, stored):
        """users.password of an existing login (local@domain); asserts one row changed."""
        local, _, domain = login.rpartition("@")
        self.run_sql("UPDATE users SET password = :pw WHERE local_part = :lp AND domain = :dom",
                     pw=stored, lp=local, dom=domain)
        rows = self.run_sql("SELECT password FROM users WHERE local_part = :lp AND domain = :dom",
                            lp=local, dom=domain)
        assert len(rows) == 1 and rows[0][0] == stored, "the UPDATE of %s did not stick: %r" \
            % (login, [r[0][:12] + "..." for r in rows])


_demo_by_dir = {}


def make_demo_database(tmp, bulk=None, backend=None):
    """`maildict-admin demo` into the backend under test (MAILDICT_TEST_BACKEND): a SQLite file
    <tmp>/directory.db, or a PostgreSQL cluster started in <tmp>/pg (stopped with the TempDir).
    -> DemoDatabase"""
    backend = backend or BACKEND
    if backend == "sqlite":
        path = make_demo_db(tmp, bulk=bulk)
        return DemoDatabase("sqlite", "sqlite:" + path, sqlite_path=path)
    pg = start_postgres(tmp)
    argv = [admin_path(), "demo", pg.database]
    if bulk:
        argv += ["--bulk", str(bulk)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if r.returncode != 0:
        raise AssertionError("%s failed (%d): %s%s" % (" ".join(argv), r.returncode, r.stdout,
                                                       r.stderr))
    return DemoDatabase("postgresql", pg.database, postgres=pg)


def demo_database(tmp):
    """The demo directory of this temp dir in the backend under test, made on first use."""
    if tmp not in _demo_by_dir:
        if BACKEND == "sqlite" and os.path.exists(os.path.join(tmp, "directory.db")):
            path = os.path.join(tmp, "directory.db")
            _demo_by_dir[tmp] = DemoDatabase("sqlite", "sqlite:" + path, sqlite_path=path)
        else:
            _demo_by_dir[tmp] = make_demo_database(tmp)
    return _demo_by_dir[tmp]


# ---- Dovecot --------------------------------------------------------------------------------

# Dovecot 2.3's dict client gives lookups a fixed 30 s request timer and, on a fresh connection,
# leaves it armed after the first reply; only the idle_msecs timer disarms it (by closing the
# connection). An idle_msecs of 30 s or more lets the stale timer fire with no lookup pending and
# the auth-worker panics (test_dovecot_dict_idle.py), so the shipped value stays well below it.
DOVECOT23_DICT_REQUEST_TIMEOUT_MSECS = 30000
SHIPPED_IDLE_MSECS = 20000
SHIPPED_URI = "uri = proxy:idle_msecs=%d:/run/maildict/dict.sock:maildict" % SHIPPED_IDLE_MSECS
SHIPPED_DICT_AUTH_PATH = "/etc/dovecot/dovecot-maildict-auth.conf.ext"


def dict_auth_config(dict_socket, idle_msecs=None, dict_name="maildict"):
    """The shipped dovecot-maildict-auth.conf.ext with the test's socket and idle_msecs."""
    with open(os.path.join(PACKAGING_DOVECOT, "dovecot-maildict-auth.conf.ext")) as f:
        text = f.read()
    lines = text.splitlines()
    uri_lines = [i for i, l in enumerate(lines) if l.strip().startswith("uri")]
    assert len(uri_lines) == 1 and lines[uri_lines[0]].strip() == SHIPPED_URI, \
        "packaging/dovecot/dovecot-maildict-auth.conf.ext must have exactly one %r line" % SHIPPED_URI
    idle = "" if idle_msecs is None else "idle_msecs=%d:" % idle_msecs
    lines[uri_lines[0]] = "uri = proxy:%s%s:%s" % (idle, dict_socket, dict_name)
    return "\n".join(lines) + "\n"


def maildict_snippet(dict_auth_path):
    """The shipped 10-maildict.conf pointed at the test's dict-auth file."""
    with open(os.path.join(PACKAGING_DOVECOT, "10-maildict.conf")) as f:
        text = f.read()
    assert text.count(SHIPPED_DICT_AUTH_PATH) == 2, \
        "packaging/dovecot/10-maildict.conf must name %s for passdb and userdb" \
        % SHIPPED_DICT_AUTH_PATH
    return text.replace(SHIPPED_DICT_AUTH_PATH, dict_auth_path)


class Dovecot:
    def __init__(self, tmp, dict_socket, idle_msecs=None, imap=False, extra="", name=None,
                 lmtp=False):
        name = name or ("dovecot-idle%s" % idle_msecs if idle_msecs is not None else "dovecot")
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.base_dir = os.path.join(self.dir, "run")
        self.state_dir = os.path.join(self.dir, "state")
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.conf_path = os.path.join(self.dir, "dovecot.conf")
        self.dict_auth_path = os.path.join(self.dir, "dovecot-maildict-auth.conf.ext")
        self.snippet_path = os.path.join(self.dir, "10-maildict.conf")
        self.imap_port = free_tcp_port() if imap else None
        # lmtp=True: Dovecot's LMTP service on the unix socket <base_dir>/lmtp (mode 0666, as
        # shipped in packaging/dovecot/20-maildict-lmtp.conf), for smtpd's mail.lmtp
        self.lmtp_socket = os.path.join(self.base_dir, "lmtp") if lmtp else None
        self.proc = None
        self.master_pid = None
        self.instance_name = "maildict-e2e-%s" % secrets.token_hex(4)
        with open(self.dict_auth_path, "w") as f:
            f.write(dict_auth_config(dict_socket, idle_msecs))
        with open(self.snippet_path, "w") as f:
            f.write(maildict_snippet(self.dict_auth_path))
        conf = [
            "# written by tests/e2e/harness.py",
            "base_dir = %s" % self.base_dir,
            "state_dir = %s" % self.state_dir,
            "instance_name = %s" % self.instance_name,
            "protocols = %s" % " ".join(p for p, on in (("imap", imap), ("lmtp", lmtp)) if on),
            "listen = 127.0.0.1",
            "log_path = %s" % self.log_path,
            "ssl = no",
            "disable_plaintext_auth = no",
            "auth_mechanisms = plain login",
            "auth_verbose = yes",
            "auth_debug = yes",
            "auth_cache_size = 0",
            # mail processes run as the uid/gid maildictd returns (the tests use nobody/nogroup)
            "first_valid_uid = %d" % min(NOBODY_UID, 1000),
            "first_valid_gid = 1",
            "mail_location = maildir:~/Maildir",
            "!include %s" % self.snippet_path,
        ]
        if imap:
            conf += [
                "service imap-login {",
                "  inet_listener imap {",
                "    address = 127.0.0.1",
                "    port = %d" % self.imap_port,
                "  }",
                "  inet_listener imaps {",
                "    port = 0",
                "  }",
                "}",
            ]
        if lmtp:
            conf += [
                "postmaster_address = postmaster@example.org",
                "!include %s" % os.path.join(PACKAGING_DOVECOT, "20-maildict-lmtp.conf"),
            ]
        conf.append(extra)
        with open(self.conf_path, "w") as f:
            f.write("\n".join(conf) + "\n")

    def start(self):
        r = subprocess.run(["doveconf", "-c", self.conf_path, "-n"], capture_output=True,
                           text=True, timeout=COMMAND_TIMEOUT)
        if r.returncode != 0:
            raise AssertionError("doveconf rejects %s: %s" % (self.conf_path, r.stderr))
        logf = open(os.path.join(self.dir, "master.stderr"), "ab")
        try:
            # -F: the master stays our child, so we can wait for it precisely.
            self.proc = spawn(["dovecot", "-F", "-c", self.conf_path], "dovecot master",
                              stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        finally:
            logf.close()
        pid_file = os.path.join(self.base_dir, "master.pid")
        sockets = [os.path.join(self.base_dir, s) for s in ("auth-client", "auth-userdb")]
        if self.lmtp_socket is not None:
            sockets.append(self.lmtp_socket)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("dovecot exited with %s during startup:\n%s\n%s"
                                     % (self.proc.returncode,
                                        tail(os.path.join(self.dir, "master.stderr")),
                                        tail(self.log_path)))
            if not os.path.exists(pid_file):
                return False
            if not all(unix_socket_accepts(s) for s in sockets):
                return False
            if self.imap_port is not None:
                return self._imap_greets()
            return True

        try:
            wait_until(ready, STARTUP_TIMEOUT, "dovecot in %s" % self.dir, interval=0.1)
            with open(pid_file) as f:
                self.master_pid = int(f.read().strip())
            assert self.master_pid == self.proc.pid, \
                "master.pid says %d, started %d" % (self.master_pid, self.proc.pid)
        except BaseException:
            self.stop()
            raise
        log("dovecot master pid %d (%s%s)" % (self.master_pid, self.conf_path,
                                               ", imap port %d" % self.imap_port
                                               if self.imap_port else ""))
        return self

    def _imap_greets(self):
        try:
            with socket.create_connection(("127.0.0.1", self.imap_port), timeout=5) as s:
                return s.recv(100).startswith(b"* OK")
        except OSError:
            return False

    def stop(self):
        """Stops exactly the master this object started (pid from master.pid) and waits."""
        if self.proc is None:
            return
        pid_file = os.path.join(self.base_dir, "master.pid")
        pid = None
        try:
            with open(pid_file) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            pass
        if pid is not None and pid == self.proc.pid and self.proc.poll() is None:
            os.kill(pid, signal.SIGTERM)
        kill_and_wait(self.proc, signal.SIGTERM)
        self.proc = None

    def doveadm(self, *args, timeout=COMMAND_TIMEOUT):
        return doveadm(self.conf_path, *args, timeout=timeout)

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_lines_for(self, rip, expect, timeout=30):
        """Dovecot's log lines about one auth attempt, identified by its remote IP (doveadm
        auth test -x rip=...). Dovecot's log process writes asynchronously, so this waits (up to
        `timeout`) for a line containing `expect`; it returns the lines either way."""
        def lines():
            return [l for l in self.log_text().splitlines() if "," + rip + ")" in l]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = lines()
            if any(expect in l for l in got):
                return got
            time.sleep(0.1)
        return lines()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            log("dovecot log tail (%s):\n%s" % (self.log_path, tail(self.log_path, 40)))
        self.stop()
        return False


# Dovecot settings for tests whose logins fail on purpose: no auth_failure_delay, and no
# per-IP penalty delays (2, 4, 8, 15 s): without access to anvil's penalty socket the auth
# process turns them off.
NO_AUTH_DELAYS = [
    "auth_failure_delay = 0",
    "service anvil {",
    "  unix_listener anvil-auth-penalty {",
    "    mode = 0",
    "  }",
    "}",
]


def dovecot_policy_extra(port, nonce, api_key):
    """Dovecot settings that make it use maildictd's auth policy server on 127.0.0.1:port: the
    shipped snippet (packaging/dovecot/30-maildict-policy.conf) with the test's port, nonce and
    key, auth_failure_delay = 0, and Dovecot's own per-IP penalty (2, 4, 8, 15 s) switched off
    (without access to anvil's penalty socket the auth process turns it off), so that what
    slows a login down is maildict's tarpit alone. Dovecot sends the API header value with its
    leading space; maildict trims it."""
    with open(os.path.join(PACKAGING_DOVECOT, "30-maildict-policy.conf")) as f:
        snippet = f.read()
    for old, new in (("127.0.0.1:8642", "127.0.0.1:%d" % port), ("CHANGE-ME-TOO", api_key),
                     ("CHANGE-ME", nonce)):
        assert old in snippet, "packaging/dovecot/30-maildict-policy.conf lost %r" % old
        snippet = snippet.replace(old, new)
    return "\n".join([snippet] + NO_AUTH_DELAYS)


def policy_metrics(port):
    """GET /metrics from maildictd's policy listener -> {'name{labels}': float}."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        payload = r.read()
    finally:
        conn.close()
    assert r.status == 200, "GET /metrics: %d %r" % (r.status, payload[:200])
    values = {}
    for line in payload.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            values[k] = float(v)
    return values


def start_dovecot(tmp, dict_socket, idle_msecs=None, imap=False, extra="", name=None,
                  lmtp=False):
    return Dovecot(tmp, dict_socket, idle_msecs=idle_msecs, imap=imap, extra=extra,
                   name=name, lmtp=lmtp).start()


def doveadm(conf_path, *args, timeout=COMMAND_TIMEOUT):
    r = subprocess.run(["doveadm", "-c", conf_path] + list(args), capture_output=True,
                       text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


# doveadm's exit codes (sysexits.h, as doveadm uses them)
EX_NOUSER = 67
EX_TEMPFAIL = 75


def parse_auth_test(out):
    """`doveadm auth test` output -> (succeeded?, {extra field: value}).
    Output looks like:
        passdb: john@example.org auth succeeded
        extra fields:
          user=john@example.org
          original_user=john_example.org
    """
    ok = None
    for line in out.splitlines():
        m = re.match(r"passdb: (\S+) auth (succeeded|failed)", line.strip())
        if m:
            ok = m.group(2) == "succeeded"
    fields = {}
    in_extra = False
    for line in out.splitlines():
        if line.strip().startswith("extra fields"):
            in_extra = True
            rest = line.split(":", 1)[1].strip()
            for item in rest.split():
                k, _, v = item.partition("=")
                fields[k] = v
            continue
        if in_extra and line.startswith((" ", "\t")) and "=" in line:
            k, _, v = line.strip().partition("=")
            fields[k] = v
    return ok, fields


def parse_doveadm_user(out):
    """`doveadm user NAME` output (field TAB value lines) -> dict."""
    fields = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        k, _, v = line.partition("\t")
        if not _:
            parts = line.split(None, 1)
            k, v = parts[0], parts[1] if len(parts) > 1 else ""
        fields[k.strip()] = v.strip()
    return fields


# ---- raw dict-protocol client ----------------------------------------------------------------

def escape(s: bytes) -> bytes:
    return (s.replace(b"\x01", b"\x011").replace(b"\t", b"\x01t")
             .replace(b"\r", b"\x01r").replace(b"\n", b"\x01n"))


def unescape(s: bytes) -> bytes:
    out = bytearray()
    i = 0
    table = {ord("0"): 0, ord("1"): 1, ord("t"): 9, ord("r"): 13, ord("n"): 10}
    while i < len(s):
        c = s[i]
        if c == 1:
            if i + 1 < len(s):
                out.append(table.get(s[i + 1], s[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return bytes(out)


class Closed(Exception):
    """The server closed the connection."""


class DictClient:
    """A raw dict-protocol client. send() writes bytes; read_line() returns one reply line
    without its LF (raises Closed at EOF, AssertionError on timeout)."""

    def __init__(self, path, timeout=30.0):
        self.path = path
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def send(self, data: bytes):
        self.sock.sendall(data)

    def hello(self, major=3, minor=2, name=b"maildict"):
        self.send(b"H%d\t%d\t0\t\t%s\n" % (major, minor, name))

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            raise AssertionError("no reply from %s within %ss (buffered: %r)"
                                 % (self.path, timeout, self.buf[:200]))
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        self.buf += data

    def read_line(self, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                raise Closed("connection closed (pending bytes %r)" % self.buf[:200])
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no complete line within %ss (buffered: %r)"
                                     % (timeout, self.buf[:200]))
            self._fill(left)
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def wait_closed(self, timeout=None):
        """Reads until EOF, returning whatever arrived before it; AssertionError if the
        connection is still open after `timeout`."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("connection still open after %ss (received %r)"
                                     % (timeout, self.buf[:200]))
            self._fill(left)
        data, self.buf = self.buf, b""
        return data

    # ---- convenience: one command, one reply, any style ----

    def lookup(self, key: bytes, user: bytes = b"", timeout=None):
        """Sends L and returns the reply field (e.g. b'O{...}', b'N', b'Fmsg'), unescaped,
        accepting both FIFO and async-id style. Only for use with nothing else pending."""
        self.send(b"L" + escape(key) + b"\t" + escape(user) + b"\n")
        return self.read_reply(timeout)[0][0]

    def read_reply(self, timeout=None):
        """Reads one complete non-iteration reply; returns (fields, async_id or None).
        fields[0] is the reply code + first field, unescaped."""
        line = self.read_line(timeout)
        if line.startswith(b"*"):
            aid = int(line[1:])
            line = self.read_line(timeout)
            assert line.startswith(b"+%d\t" % aid), \
                "expected +%d reply after *%d, got %r" % (aid, aid, line)
            fields = line.split(b"\t")[1:]
            return [unescape(f) for f in fields], aid
        assert not line.startswith(b"+"), "+ reply without * announcement: %r" % line
        return [unescape(f) for f in line.split(b"\t")], None


class ReplyMatcher:
    """Pairs reply lines with pending reply-bearing commands exactly as Dovecot's 2.3 client
    does (specs/dovecot.md §1.4): `*n` gives id n to the oldest pending command without an
    id; `+n\t...` goes to the command with id n; a plain line goes to the oldest pending
    command. An iteration (kind "I") takes rows (`O<key>\t<value>...`) until a line whose
    first field is empty (end) or an `F` line. Any violation raises AssertionError (Dovecot
    would disconnect).

    results[tag] = the unescaped reply fields for L/C; for I a dict {"rows": [fields...],
    "end": fields} where end[0] is b"" on success or b"F..." on failure."""

    def __init__(self):
        self.pending = []        # [tag, kind, async_id or None, rows] in command order
        self.by_id = {}
        self.used_ids = set()
        self.results = {}
        self.saw_async = False
        self.saw_plain = False

    def expect(self, tag, kind="L"):
        assert kind in ("L", "I", "C")
        self.pending.append([tag, kind, None, []])

    def _deliver(self, entry, fields):
        tag, kind, aid, rows = entry
        if kind == "I":
            first = fields[0]
            if first.startswith(b"O"):
                assert len(fields) >= 2, "iteration row without TAB after the key: %r" % fields
                rows.append(fields)
                return
            assert first == b"" or first.startswith(b"F"), \
                "bad iteration reply line %r" % (fields,)
            self.results[tag] = {"rows": rows, "end": fields}
        else:
            assert fields[0][:1] in (b"O", b"N", b"F", b"M", b"W"), \
                "unknown reply code in %r" % (fields,)
            self.results[tag] = fields
        self.pending.remove(entry)
        if aid is not None:
            del self.by_id[aid]

    def feed(self, line: bytes):
        if line.startswith(b"*"):
            n = int(line[1:])
            assert n > 0, "async id must be > 0: %r" % line
            assert n not in self.used_ids, "async id %d reused" % n
            for entry in self.pending:
                if entry[2] is None:
                    entry[2] = n
                    self.by_id[n] = entry
                    self.used_ids.add(n)
                    break
            else:
                raise AssertionError("*%d announced with no pending command" % n)
            self.saw_async = True
            return
        if line.startswith(b"+"):
            n_text, _, rest = line[1:].partition(b"\t")
            n = int(n_text)
            assert n in self.by_id, "+%d reply for an unknown id" % n
            self._deliver(self.by_id[n], [unescape(f) for f in rest.split(b"\t")])
            self.saw_async = True
            return
        assert self.pending, "reply without pending command: %r" % line[:200]
        entry = self.pending[0]
        assert entry[2] is None, "plain reply %r while the oldest command has id %s" \
            % (line[:200], entry[2])
        self._deliver(entry, [unescape(f) for f in line.split(b"\t")])
        self.saw_plain = True

    def done(self):
        return not self.pending


class LookupLoad(threading.Thread):
    """One client connection doing lookups back to back until stop(): next_key(n) gives the
    n-th (key, kind) to ask; every answer is recorded as a Answer(t_sent, t_received, kind, key,
    reply) with monotonic times, reply = the unescaped first field (b'O...', b'N', b'F...').
    A broken connection is recorded as an error and ends the thread (maildictd must not drop
    its clients while the database is away)."""

    class Answer(tuple):
        __slots__ = ()
        t_sent = property(lambda self: self[0])
        t_received = property(lambda self: self[1])
        kind = property(lambda self: self[2])
        key = property(lambda self: self[3])
        reply = property(lambda self: self[4])

    def __init__(self, path, next_key, name="load", timeout=30.0, start_barrier=None):
        super().__init__(daemon=True, name=name)
        self.path = path
        self.next_key = next_key
        self.timeout = timeout
        self.start_barrier = start_barrier
        self.answers = []
        self.errors = []
        self.connected = threading.Event()
        self._stop_flag = threading.Event()

    def run(self):
        try:
            with DictClient(self.path, timeout=self.timeout) as c:
                c.hello()
                self.connected.set()
                if self.start_barrier is not None:
                    self.start_barrier.wait(timeout=120)
                n = 0
                while not self._stop_flag.is_set():
                    key, kind = self.next_key(n)
                    n += 1
                    t0 = time.monotonic()
                    reply = c.lookup(key, b"", timeout=self.timeout)
                    self.answers.append(self.Answer((t0, time.monotonic(), kind, key, reply)))
        except BaseException as e:   # noqa: BLE001 - reported by the test's thread
            self.errors.append("%s: %s" % (type(e).__name__, e))
        finally:
            self.connected.set()

    def stop(self, timeout=60):
        self._stop_flag.set()
        self.join(timeout)
        assert not self.is_alive(), "load thread %s did not finish" % self.name
        return self.answers

    def since(self, t):
        """Answers to lookups sent at or after monotonic time t."""
        return [a for a in list(self.answers) if a.t_sent >= t]


def reply_json(reply):
    """An O reply's value (bytes, or a list of reply fields) parsed as JSON."""
    if isinstance(reply, list):
        reply = reply[0] if reply else b""
    assert reply.startswith(b"O"), "expected an O reply, got %r" % (reply,)
    return json.loads(reply[1:].decode())


# ---- OpenSMTPD --------------------------------------------------------------------------------
#
# start_smtpd() runs a real smtpd in the foreground (`smtpd -d`) in a private mount namespace
# (unshare -m), so that nothing it writes touches the host and it cannot clash with a system
# smtpd or another test's: smtpd's queue (/var/spool/smtpd) and control socket
# (/var/run/smtpd.sock) are compile-time paths, so a directory of the test is bound over
# /var/spool and /run inside the namespace, and another over /usr/libexec/opensmtpd holding a
# copy of the built table-maildict (as table-maildict) next to copies of smtpd's own helpers
# (mail.lmtp, ...): smtpd only finds table programs at /usr/libexec/opensmtpd/table-<type>, and
# the host's directory is never modified. Tables run as the smtpd user (opensmtpd), so
# everything they open must be readable by it (the test dirs are 0755, the dict socket 0666).
#
# SMTPD_68 is bookworm's opensmtpd package; SMTPD_74 the bookworm-backports binary unpacked by
# tests/e2e/fetch-smtpd-backports.sh (6.8 cannot do TLS with OpenSSL 3, so AUTH needs 7.4).

SMTPD_68 = os.environ.get("MAILDICT_SMTPD") or "/usr/sbin/smtpd"
SMTPD_74_DIR = os.environ.get("MAILDICT_SMTPD74_DIR") or "/opt/maildict-test/smtpd-7.4"
SMTPD_74 = os.path.join(SMTPD_74_DIR, "usr", "sbin", "smtpd")
SMTPD_LIBEXEC = "/usr/libexec/opensmtpd"
PACKAGING_SMTPD = os.path.join(SOURCE_DIR, "packaging", "smtpd")
SHIPPED_MAILDICT_CONF = "/etc/maildict/maildict.conf"


def table_maildict_path():
    return os.environ.get("MAILDICT_TABLE_MAILDICT") or os.path.join(BUILD_DIR, "table-maildict")


def smtpd_version(smtpd):
    r = subprocess.run([smtpd, "-h"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    m = re.search(r"OpenSMTPD (\d+\.\d+\.\d+\S*)", r.stdout + r.stderr)
    return m.group(1) if m else None


def smtpd_missing(smtpd=SMTPD_68):
    """Why start_smtpd() cannot run here (a string naming what is missing), or None."""
    if os.geteuid() != 0:
        return "smtpd must be started as root (it drops privileges itself)"
    if not os.access(smtpd, os.X_OK):
        if smtpd == SMTPD_74:
            return ("%s is missing: run tests/e2e/fetch-smtpd-backports.sh (bookworm-backports "
                    "opensmtpd 7.4)" % smtpd)
        return "%s is missing: install Debian's opensmtpd (packaging/install-deps.sh test)" % smtpd
    if not os.path.isdir(SMTPD_LIBEXEC):
        return "%s is missing (opensmtpd package)" % SMTPD_LIBEXEC
    try:
        pwd.getpwnam("opensmtpd")
    except KeyError:
        return "the opensmtpd user is missing (opensmtpd package)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is missing"
    if not os.access(table_maildict_path(), os.X_OK):
        return "%s is not built (CMake target table-maildict)" % table_maildict_path()
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                       capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if r.returncode != 0:
        return "cannot create a mount namespace (unshare -m): %s" % r.stderr.strip()
    return None


def make_self_signed_cert(directory, name="localhost"):
    """(cert, key) made with the openssl CLI; the key is 0600 as smtpd demands."""
    cert = os.path.join(directory, name + ".crt")
    key = os.path.join(directory, name + ".key")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + name,
                        "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1" % name],
                       capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if r.returncode != 0:
        raise AssertionError("openssl req failed: %s" % r.stderr)
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)
    return cert, key


def shipped_smtpd_conf(maildict_conf, lmtp_socket, ports, cert=None, key=None,
                       local_relay=False, also_listen_on=None):
    """packaging/smtpd/smtpd.conf made runnable in a test, changing only what must change:
      * the tables point at the test's maildict.conf, delivery at the test's LMTP socket;
      * `listen on 0.0.0.0 port N` becomes `listen on 127.0.0.1 port ports[N]`; a listener
        whose port is not in `ports` is left out (e.g. submission under 6.8, which has no TLS);
      * the pki lines use cert/key (without them, listeners lose `tls pki NAME`);
      * the relay rule for local senders is commented out unless local_relay: the tests connect
        from 127.0.0.1, which smtpd counts as local, so it would relay every unknown domain;
      * with also_listen_on (an address), each listener listens there too, on the same port
        (for a client from another network namespace, which smtpd does not count as local)."""
    with open(os.path.join(PACKAGING_SMTPD, "smtpd.conf")) as f:
        text = f.read()
    assert text.count("maildict:%s" % SHIPPED_MAILDICT_CONF) >= 4, \
        "packaging/smtpd/smtpd.conf must declare its tables as maildict:%s" % SHIPPED_MAILDICT_CONF
    assert text.count('lmtp "/run/dovecot/lmtp"') == 1, \
        'packaging/smtpd/smtpd.conf must deliver with lmtp "/run/dovecot/lmtp"'
    out = []
    listeners = 0
    for line in text.splitlines():
        stripped = line.strip()
        m = re.match(r'pki (\S+) (cert|key) "[^"]*"$', stripped)
        if m:
            if cert is not None:
                out.append('pki %s %s "%s"' % (m.group(1), m.group(2),
                                                cert if m.group(2) == "cert" else key))
            continue
        m = re.match(r"listen on 0\.0\.0\.0 port (\d+)( .*)?$", stripped)
        if m:
            shipped = int(m.group(1))
            if shipped not in ports:
                out.append("# (left out by the test) " + stripped)
                continue
            rest = m.group(2) or ""
            if cert is None:
                if "tls-require" in rest:
                    out.append("# (left out by the test: no TLS) " + stripped)
                    continue
                rest = re.sub(r" tls pki \S+", "", rest)
            out.append("listen on 127.0.0.1 port %d%s" % (ports[shipped], rest))
            if also_listen_on is not None:
                out.append("listen on %s port %d%s" % (also_listen_on, ports[shipped], rest))
            listeners += 1
            continue
        if stripped.startswith("listen "):
            raise AssertionError("packaging/smtpd/smtpd.conf: unexpected listen line %r" % line)
        if stripped.startswith("match from local ") and not local_relay:
            out.append("# (dropped by the test) " + stripped)
            continue
        line = line.replace("maildict:%s" % SHIPPED_MAILDICT_CONF, "maildict:%s" % maildict_conf)
        line = line.replace('lmtp "/run/dovecot/lmtp"', 'lmtp "%s"' % lmtp_socket)
        out.append(line)
    assert listeners == len(ports), "packaging/smtpd/smtpd.conf lacks a listener on one of %s" \
        % sorted(ports)
    return "\n".join(out) + "\n"


def _flock_smtpd():
    """Serialises smtpd instances of concurrent tests on this host (one system-wide lock
    file): cheap insurance on top of the namespaces, and it keeps 2-core CI machines from
    running two smtpd + Dovecot stacks at once."""
    import fcntl
    path = "/run/lock/maildict-e2e-smtpd.lock" if os.path.isdir("/run/lock") \
        else "/tmp/maildict-e2e-smtpd.lock"
    f = open(path, "a")
    deadline = time.monotonic() + 540
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() > deadline:
                f.close()
                raise AssertionError("another test holds %s for 9 minutes" % path)
            time.sleep(0.2)


class Smtpd:
    """One smtpd (-d: foreground, logs to smtpd.log) in a private mount namespace; see above."""

    def __init__(self, tmp, conf_text, smtpd=SMTPD_68, name="smtpd", trace=("lookup",),
                 ports=(), helpers_dir=SMTPD_LIBEXEC, table_program=None):
        self.smtpd = smtpd
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.conf_path = os.path.join(self.dir, "smtpd.conf")
        self.log_path = os.path.join(self.dir, "smtpd.log")
        self.spool = os.path.join(self.dir, "var-spool")      # bound over /var/spool
        self.run = os.path.join(self.dir, "run")              # bound over /run
        self.libexec = os.path.join(self.dir, "libexec")      # bound over /usr/libexec/opensmtpd
        self.ports = list(ports)
        self.trace = list(trace)
        self.proc = None
        self.lock = None
        for d in (self.spool, self.run, self.libexec):
            os.makedirs(d)
            os.chmod(d, 0o755)
        # helpers_dir: where this smtpd's own helpers are (another release's tree: its own)
        for entry in os.listdir(helpers_dir):
            src = os.path.join(helpers_dir, entry)
            if entry.startswith("table-") or not os.path.isfile(src):
                continue     # only smtpd's own helpers; a table-maildict there is not ours
            dst = os.path.join(self.libexec, entry)
            shutil.copy2(src, dst)
            # no setuid/setgid copies (mail.local is setgid mail; a copy would be setgid root)
            os.chmod(dst, os.stat(src).st_mode & 0o755)
        shutil.copy2(table_program or table_maildict_path(),
                     os.path.join(self.libexec, "table-maildict"))
        os.chmod(os.path.join(self.libexec, "table-maildict"), 0o755)
        with open(self.conf_path, "w") as f:
            f.write(conf_text)

    @property
    def queue_dir(self):
        return os.path.join(self.spool, "smtpd")

    def check_config(self):
        # -n checks syntax and that each table-<type> exists, but runs no table program; the
        # namespace makes it see our libexec copy.
        r = subprocess.run(self._namespaced([self.smtpd, "-n", "-f", self.conf_path]),
                           capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        return r.returncode, r.stdout + r.stderr

    def _namespaced(self, argv):
        script = ("set -e; mount --bind \"$1\" /var/spool; mount --bind \"$2\" /run; "
                  "mount --bind \"$3\" %s; shift 3; exec \"$@\"" % SMTPD_LIBEXEC)
        return (["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
                 "smtpd-ns", self.spool, self.run, self.libexec] + list(argv))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        rc, out = self.check_config()
        if rc != 0:
            raise AssertionError("smtpd -n rejects %s (%d):\n%s\n--- config:\n%s"
                                 % (self.conf_path, rc, out, open(self.conf_path).read()))
        self.lock = _flock_smtpd()
        argv = [self.smtpd, "-d", "-v", "-f", self.conf_path]
        for t in self.trace:
            argv += ["-T", t]
        logf = open(self.log_path, "ab")
        try:
            # unshare and sh exec: the pid we get is smtpd's parent process itself
            self.proc = spawn(self._namespaced(argv), "smtpd", stdin=subprocess.DEVNULL,
                              stdout=logf, stderr=logf)
        finally:
            logf.close()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("smtpd exited with %s during startup; log:\n%s"
                                     % (self.proc.returncode, tail(self.log_path)))
            return all(self._greets(p) for p in self.ports)

        try:
            wait_until(ready, STARTUP_TIMEOUT, "smtpd (%s)" % self.conf_path, interval=0.2)
        except BaseException:
            self.stop(check=False)
            raise
        log("smtpd %s pid %d (ports %s, %s)" % (self.version(), self.proc.pid,
                                                self.ports, self.conf_path))
        return self

    def version(self):
        return smtpd_version(self.smtpd)

    @staticmethod
    def _greets(port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.settimeout(5)
                ok = s.recv(200).startswith(b"220")
                try:
                    s.sendall(b"QUIT\r\n")
                    s.recv(200)
                except OSError:
                    pass
                return ok
        except OSError:
            return False

    def smtpctl(self, *args):
        """smtpctl (next to the smtpd binary) inside smtpd's namespace, where /run holds its
        control socket -> (rc, output)."""
        ctl = os.path.join(os.path.dirname(self.smtpd), "smtpctl")
        r = subprocess.run(["nsenter", "--target", str(self.proc.pid), "--mount", "--", ctl]
                           + list(args), capture_output=True, text=True,
                           timeout=COMMAND_TIMEOUT)
        return r.returncode, r.stdout + r.stderr

    def queued_files(self):
        """Files left in the queue (envelopes and messages): empty when nothing is pending."""
        found = []
        for sub in ("queue", "incoming", "corrupt", "temporary", "offline"):
            for dirpath, dirnames, filenames in os.walk(os.path.join(self.queue_dir, sub)):
                found += [os.path.join(dirpath, n) for n in filenames]
        return found

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, check=True):
        """SIGTERM to the smtpd we started; with check, it must have been running."""
        if self.proc is None:
            return
        was_running = self.proc.poll() is None
        rc = kill_and_wait(self.proc, signal.SIGTERM)
        log("smtpd pid %d exited with %s" % (self.proc.pid, rc))
        self.proc = None
        if self.lock is not None:
            self.lock.close()
            self.lock = None
        if check and not was_running:
            raise AssertionError("smtpd had already exited with %s; log:\n%s"
                                 % (rc, tail(self.log_path)))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            log("smtpd log tail (%s):\n%s" % (self.log_path, tail(self.log_path, 60)))
        self.stop(check=exc_type is None)
        return False


def start_smtpd(tmp, conf_text, smtpd=SMTPD_68, ports=(), **kw):
    return Smtpd(tmp, conf_text, smtpd=smtpd, ports=ports, **kw).start()


class DaemonsTestCase(unittest.TestCase):
    """Base for test classes that start daemons in setUpClass and keep them as class attributes
    named in DAEMONS (stop order: the first is stopped first). Stops them all in tearDownClass,
    and prints the tail of every daemon's log when a test or the set-up fails."""

    DAEMONS = ()
    # Class attributes that are not daemons (a PostgreSQL cluster, a ForeignClient): released
    # after the daemons, before the test directory goes, each by its stop() or close().
    RESOURCES = ()

    @classmethod
    def _dump_logs(cls):
        for name in cls.DAEMONS:
            obj = getattr(cls, name, None)
            if obj is not None:
                log("%s log tail:\n%s" % (name, tail(obj.log_path, 40)))

    @classmethod
    def tearDownClass(cls):
        try:
            for name in cls.DAEMONS:
                obj = getattr(cls, name, None)
                if obj is not None:
                    # smtpd's exit status is not the test's business; the others must exit 0
                    obj.stop(check=False) if isinstance(obj, Smtpd) else obj.stop()
        finally:
            try:
                cls._release(list(cls.RESOURCES))
            finally:
                cls.tmp.cleanup()

    @classmethod
    def _release(cls, names):
        """Releases the named resources in order; one that fails does not keep the rest."""
        if not names:
            return
        try:
            obj = getattr(cls, names[0], None)
            if obj is not None:
                obj.stop() if hasattr(obj, "stop") else obj.close()
        finally:
            cls._release(names[1:])

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result is not None else 0
        super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > before:
            self._dump_logs()


# ---- SMTP in, Maildir and IMAP out: helpers of the delivery tests ----------------------------

class ForeignClient:
    """A client that is not on this host as smtpd sees it: a network namespace (a `sleep` in
    `unshare --net`) joined to the host by a veth pair in 198.18.0.0/15 (the benchmarking
    range). `host_address` is the host's end, for smtpd to listen on; the namespace's end is a
    source address smtpd's `from local` does not match. Everything vanishes with the sleep."""

    def __init__(self):
        n = secrets.randbelow(250) + 1
        tag = secrets.token_hex(3)
        self.host_address = "198.18.%d.1" % n
        self.client_address = "198.18.%d.2" % n
        self.host_link = "mdh" + tag
        self.proc = spawn(["unshare", "--net", "sleep", "3600"], "netns holder")
        try:
            self._run(["ip", "link", "add", self.host_link, "type", "veth", "peer", "name",
                       "mdc" + tag, "netns", str(self.proc.pid)])
            self._run(["ip", "addr", "add", self.host_address + "/30", "dev", self.host_link])
            self._run(["ip", "link", "set", self.host_link, "up"])
            for cmd in (["ip", "addr", "add", self.client_address + "/30", "dev", "mdc" + tag],
                        ["ip", "link", "set", "mdc" + tag, "up"],
                        ["ip", "link", "set", "lo", "up"]):
                self._run(self._inside(cmd))
        except BaseException:
            self.close()
            raise

    def _inside(self, argv):
        return ["nsenter", "--target", str(self.proc.pid), "--net", "--"] + list(argv)

    @staticmethod
    def _run(argv):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        if r.returncode != 0:
            raise AssertionError("%s failed (%d): %s" % (" ".join(argv), r.returncode, r.stderr))
        return r.stdout

    def rcpt_reply(self, port, rcpt, sender=None):
        """MAIL FROM and one RCPT TO to host_address:port from inside the namespace ->
        (code, message). Waits for the veth to carry traffic (it may come up late)."""
        script = ("import json, smtplib, sys\n"
                  "s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=%d)\n"
                  "s.ehlo('foreign.test')\n"
                  "code, msg = s.mail(sys.argv[3])\n"
                  "assert code == 250, (code, msg)\n"
                  "code, msg = s.rcpt(sys.argv[4])\n"
                  "s.rset(); s.quit()\n"
                  "print(json.dumps([code, msg.decode('utf-8', 'replace')]))\n" % SMTP_TIMEOUT)
        argv = self._inside([sys.executable, "-c", script, self.host_address, str(port),
                             sender or SENDER, rcpt])
        result = {}

        def answered():
            r = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
            if r.returncode == 0:
                result["reply"] = json.loads(r.stdout)
                return True
            result["error"] = r.stderr
            return False

        try:
            wait_until(answered, STARTUP_TIMEOUT, "an SMTP reply to the foreign client",
                       interval=0.5)
        except AssertionError:
            raise AssertionError("foreign client: %s" % result.get("error"))
        code, msg = result["reply"]
        return code, msg

    def close(self):
        if self.proc is not None:
            kill_and_wait(self.proc, signal.SIGKILL)    # the namespace and its veth go with it
            self.proc = None


SMTP_TIMEOUT = 60
DELIVERY_TIMEOUT = 60
SENDER = "tester@client.test"


class MailFlow:
    """Mixin for TestCases with self.port (smtpd's SMTP port), self.dovecot (with IMAP) and
    self.smtpd: send mail, wait for it in a Maildir, find it over IMAP."""

    def smtp(self):
        s = smtplib.SMTP("127.0.0.1", self.port, timeout=SMTP_TIMEOUT)
        self.addCleanup(self._quit, s)
        code, msg = s.ehlo("client.test")
        self.assertEqual(code, 250, msg)
        return s

    @staticmethod
    def _quit(s):
        try:
            s.quit()
        except Exception:
            pass

    @staticmethod
    def message(token, to):
        return ("From: %s\r\nTo: %s\r\nSubject: e2e %s\r\nMessage-ID: <%s@e2e.maildict.test>\r\n"
                "\r\nhello %s\r\n" % (SENDER, to, token, token, token)).encode()

    def send(self, rcpts):
        """One transaction; every RCPT must be accepted. Returns the token."""
        token = secrets.token_hex(8)
        s = self.smtp()
        code, msg = s.mail(SENDER)
        self.assertEqual(code, 250, msg)
        for r in rcpts:
            code, msg = s.rcpt(r)
            self.assertEqual(code, 250, "RCPT TO:<%s> -> %d %r" % (r, code, msg))
        code, msg = s.data(self.message(token, ", ".join(rcpts)))
        self.assertEqual(code, 250, msg)
        return token

    def rcpt_reply(self, rcpt):
        s = self.smtp()
        code, msg = s.mail(SENDER)
        self.assertEqual(code, 250, msg)
        code, msg = s.rcpt(rcpt)
        s.rset()
        return code, msg

    @staticmethod
    def maildir_files(maildir):
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(maildir, sub)
            if os.path.isdir(d):
                out += [os.path.join(d, n) for n in os.listdir(d)]
        return out

    def wait_delivered(self, maildir, token, count=1):
        needle = ("<%s@e2e.maildict.test>" % token).encode()

        def found():
            hits = []
            for p in self.maildir_files(maildir):
                try:
                    with open(p, "rb") as f:
                        if needle in f.read():
                            hits.append(p)
                except OSError:
                    pass
            return hits if len(hits) >= count else None

        try:
            return wait_until(found, DELIVERY_TIMEOUT, "message %s in %s" % (token, maildir),
                              interval=0.2)
        except AssertionError:
            self.fail("message %s did not reach %s within %ss (queue: %r)\nsmtpd log:\n%s"
                      % (token, maildir, DELIVERY_TIMEOUT, self.smtpd.queued_files(),
                         tail(self.smtpd.log_path, 40)))

    def imap_count(self, user, password, token):
        """Logs in over IMAP and counts the messages with this token in INBOX."""
        c = imaplib.IMAP4("127.0.0.1", self.dovecot.imap_port, timeout=SMTP_TIMEOUT)
        try:
            typ, data = c.login(user, password)
            self.assertEqual(typ, "OK", data)
            typ, data = c.select("INBOX")
            self.assertEqual(typ, "OK", data)
            typ, data = c.search(None, "HEADER", "Message-ID", "<%s@e2e.maildict.test>" % token)
            self.assertEqual(typ, "OK", data)
            nums = data[0].split()
            if nums:
                typ, data = c.fetch(nums[0], "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                self.assertEqual(typ, "OK", data)
                self.assertIn(("e2e " + token).encode(), data[0][1])
            return len(nums)
        finally:
            try:
                c.logout()
            except Exception:
                pass

    # ---- the delivery tests' shared checks (self.vmail holds the homes, <domain>/<local>) ----

    @staticmethod
    def make_vmail(tmp):
        """<tmp>/vmail, the homes' parent, owned by the delivery user (nobody:nogroup)."""
        vmail = tmp.join("vmail")
        os.makedirs(vmail)
        os.chown(vmail, NOBODY_UID, NOGROUP_GID)
        os.chmod(vmail, 0o755)
        return vmail

    @classmethod
    def set_up_demo_homes(cls, inside=lambda path: path):
        """The demo directory in cls.tmp with its homes under cls.vmail (make_vmail), bob's
        custom one at cls.bob_home (move_bob_home); inside(path) is a path as Dovecot sees it.
        Returns the database's path."""
        cls.vmail = cls.make_vmail(cls.tmp)
        db = make_demo_db(cls.tmp.path)
        cls.bob_home = os.path.join(cls.vmail, "custom", "bob")
        cls.move_bob_home(db, inside(cls.bob_home))
        return db

    @staticmethod
    def move_bob_home(db, bob_home):
        """bob (the catch-all of example.net) has a custom uid and home in the demo data (2000,
        /var/vmail/custom/bob): keep the custom home and mail location, but at bob_home (as
        Dovecot sees it) and owned by the test's uid."""
        with sqlite3.connect(db) as c:
            n = c.execute("UPDATE users SET uid = NULL, gid = NULL, home = ? "
                          "WHERE local_part = 'bob' AND domain = 'example.net'",
                          (bob_home,)).rowcount
        assert n == 1, "the demo data has no bob@example.net"

    def home(self, address):
        local, domain = address.split("@")
        return os.path.join(self.vmail, domain, local)

    def assert_saved_by_dovecot(self, token):
        """Hook: what a test class also checks in Dovecot's own record of a delivery."""

    def assert_delivered_to(self, user, token, maildir=None):
        """Exactly one copy in the user's Maildir, owned by the delivery user, seen over IMAP."""
        maildir = maildir or os.path.join(self.home(user), "Maildir")
        files = self.wait_delivered(maildir, token)
        self.assertEqual(len(files), 1, "delivered %d times to %s: %r" % (len(files), user, files))
        st = os.stat(files[0])
        self.assertEqual((st.st_uid, st.st_gid), (NOBODY_UID, NOGROUP_GID))
        self.assert_saved_by_dovecot(token)
        self.assertEqual(self.imap_count(user, DEMO_PASSWORDS[user], token), 1,
                         "IMAP login %s does not see message %s" % (user, token))

    def assert_alive(self):
        self.assertTrue(self.smtpd.alive(), "smtpd exited:\n%s" % tail(self.smtpd.log_path, 40))

    def submission_connect(self, tls=True):
        """A connection to smtpd's submission port (self.submission) after EHLO, and unless
        tls=False STARTTLS and EHLO again. AUTH is never offered before STARTTLS."""
        s = smtplib.SMTP("127.0.0.1", self.submission, timeout=SMTP_TIMEOUT)
        self.addCleanup(self._quit, s)
        code, msg = s.ehlo("client.test")
        self.assertEqual(code, 250, msg)
        self.assertFalse(s.has_extn("auth"), "AUTH offered in clear text: %r" % s.esmtp_features)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE      # the test's self-signed certificate
            code, msg = s.starttls(context=ctx)
            self.assertEqual(code, 220, msg)
            code, msg = s.ehlo("client.test")
            self.assertEqual(code, 250, msg)
        return s

    def submission_login(self, user, password):
        """STARTTLS then one AUTH PLAIN exchange (smtplib's login() would retry with LOGIN after
        a failure) -> (code, message, connection); a 421 reply closes the connection."""
        s = self.submission_connect()
        self.assertTrue(s.has_extn("auth"), "no AUTH after STARTTLS: %r" % s.esmtp_features)
        s.user, s.password = user, password
        try:
            code, msg = s.auth("PLAIN", s.auth_plain)
        except smtplib.SMTPAuthenticationError as e:
            code, msg = e.smtp_code, e.smtp_error
        except smtplib.SMTPServerDisconnected as e:
            code, msg = 421, str(e)
        return code, msg, s

    @contextlib.contextmanager
    def maildictd_stopped(self):
        """maildictd stopped for the block, then started again on the same configuration (and
        socket path)."""
        md = type(self).maildictd
        md.stop()
        type(self).maildictd = None
        try:
            yield
        finally:
            again = Maildictd(self.tmp.path, md.conf, name="maildictd")
            type(self).maildictd = again.start()

    def assert_queued_message_waits_for_maildictd(self, rcpt, while_down=None):
        """RCPT passed, then maildictd goes away before delivery: smtpd's userinfo lookup at
        delivery fails temporarily, the message stays queued (while_down(token) checks more),
        and is delivered once maildictd is back."""
        rc, out = self.smtpd.smtpctl("pause", "mda")
        self.assertEqual(rc, 0, out)
        resumed = False
        try:
            t = self.send([rcpt])
            wait_until(lambda: self.smtpd.queued_files(), DELIVERY_TIMEOUT,
                       "the message in smtpd's queue")
            with self.maildictd_stopped():
                rc, out = self.smtpd.smtpctl("resume", "mda")
                self.assertEqual(rc, 0, out)
                resumed = True
                wait_until(lambda: "result=TempFail" in self.smtpd.log_text(),
                           DELIVERY_TIMEOUT, "smtpd's temporary delivery failure")
                self.assert_alive()
                self.assertTrue(self.smtpd.queued_files(), "the message left the queue")
                if while_down is not None:
                    while_down(t)
            rc, out = self.smtpd.smtpctl("schedule", "all")
            self.assertEqual(rc, 0, out)
            self.assert_delivered_to(rcpt, t)
        finally:
            if not resumed:
                self.smtpd.smtpctl("resume", "mda")
