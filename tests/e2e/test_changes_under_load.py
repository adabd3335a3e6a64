#!/usr/bin/env python3
"""The SQLite directory changes under full lookup load (issue 12, item 1, acceptance).

maildictd serves a 1,000-user SQLite directory to 8 clients looking up as fast as they can
(maildict-bench, random passdb lookups, nearly all of them cache hits) while the test changes
the directory from other processes:

  * CTL_CHANGES runs of `maildictctl user set USER --quota N`: the very next lookup of that
    user's userdb answers the new quota (DESIGN.md §5: a change made through maildict is
    visible to the next lookup). The user's old answer is cached just before each change, so
    the change has to invalidate a cached answer.
  * SQL_CHANGES UPDATEs by one long-running `sqlite3` process (an operator's tool writing
    behind maildict's back): the next lookup answers the new value too (README: changes by
    any process are seen by the next lookup).
  * All the while, a fresh read-only `sqlite3 -readonly` process reads the database every
    few milliseconds and never sees an error ("database is locked", I/O error).

Throughout: maildictd stays alive (it died with SIGBUS after a handful of changes when its
change detection mapped the -shm file itself: closing that descriptor dropped SQLite's POSIX
locks, so the next process to open the database truncated the -shm under the mapping), every
bench lookup is answered O (bench --expect found: an N or F is an error), and maildictd exits 0
on SIGTERM afterwards.

CTL_CHANGES is below the issue's 1,000 maildictctl runs to keep the test under a minute on a
small busy machine (each run is a process start, ~150 ms under this load: 1,000 took 160 s);
on the code before the fix maildictd died with SIGBUS within the first 4 maildictctl changes
in each of 5 trials, so 200 leaves a wide margin.
"""
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

USERS = 1000
CTL_CHANGES = 200
SQL_CHANGES = 1000
BENCH_CHUNK_SECONDS = 5


def bench_path():
    return os.path.join(h.BUILD_DIR, "maildict-bench")


def userdb_key(n):
    return ("shared/userdb/user%d@bulk.example" % n).encode()


class BenchLoad:
    """maildict-bench in back-to-back runs of a few seconds, 8 connections, until stop()."""

    def __init__(self, socket_path):
        self.socket_path = socket_path
        self.stopping = threading.Event()
        self.problems = []
        self.lookups = 0
        self.runs = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopping.is_set():
            argv = [bench_path(), "--socket", self.socket_path, "--connections", "8", "--depth", "1",
                    "--duration", str(BENCH_CHUNK_SECONDS), "--warmup", "0", "--users", str(USERS),
                    "--expect", "found", "--seed", str(self.runs + 1)]
            r = subprocess.run(argv, capture_output=True, text=True, timeout=h.COMMAND_TIMEOUT)
            self.runs += 1
            m = re.search(r"requests=(\d+)", r.stdout)
            if m:
                self.lookups += int(m.group(1))
            if r.returncode != 0 or not re.search(r"errors=0 notfound=0 failed=0", r.stdout):
                self.problems.append("maildict-bench run %d (exit %d): %s %s"
                                     % (self.runs, r.returncode, r.stdout.strip(), r.stderr.strip()[:500]))
                return

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=h.COMMAND_TIMEOUT)


class OutsideReader:
    """A new `sqlite3 -readonly` process every few milliseconds, each reading the users table;
    any failure is recorded. The busy timeout covers the writers' own short locks, so an error
    here means the database's locking was broken for other processes."""

    def __init__(self, db_path):
        self.db_path = db_path
        self.stopping = threading.Event()
        self.problems = []
        self.reads = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopping.is_set():
            r = subprocess.run(["sqlite3", "-readonly", "-cmd", ".timeout 5000", self.db_path,
                                "SELECT count(*) FROM users"],
                               capture_output=True, text=True, timeout=h.COMMAND_TIMEOUT)
            self.reads += 1
            if r.returncode != 0 or not r.stdout.strip().isdigit():
                self.problems.append("sqlite3 -readonly (exit %d): %s %s"
                                     % (r.returncode, r.stdout.strip(), r.stderr.strip()))
            elif r.stderr.strip():
                self.problems.append("sqlite3 -readonly said: %s" % r.stderr.strip())
            time.sleep(0.005)

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=h.COMMAND_TIMEOUT)


class SqliteShell:
    """One long-running `sqlite3` process fed statements on stdin; each batch ends with a marker
    line so that the caller knows the UPDATE has committed."""

    def __init__(self, db_path):
        self.proc = h.spawn(["sqlite3", db_path], "sqlite3", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.run(".timeout 5000")
        self.marker = 0

    def run(self, sql):
        self.marker = getattr(self, "marker", 0) + 1
        self.proc.stdin.write("%s\nSELECT 'done-%d';\n" % (sql, self.marker))
        self.proc.stdin.flush()
        lines = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("sqlite3 exited; output: %r" % lines)
            line = line.rstrip("\n")
            if line == "done-%d" % self.marker:
                break
            lines.append(line)
        if lines:
            raise AssertionError("sqlite3 said %r for %r" % (lines, sql))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=h.STOP_TIMEOUT)


def quota_of(reply):
    m = re.search(rb'"quota_rule":"\*:storage=(\d+)B"', reply)
    return int(m.group(1)) if m else None


class ChangesUnderLoad(unittest.TestCase):
    def setUp(self):
        h.require_programs()
        for p in (bench_path(), h.maildictctl_path()):
            if not os.access(p, os.X_OK):
                raise AssertionError("missing program %s (MAILDICT_BUILD_DIR=%s)" % (p, h.BUILD_DIR))
        if shutil.which("sqlite3") is None:
            raise AssertionError("the sqlite3 command-line tool is missing (Debian package sqlite3)")
        self.tmp = h.TempDir()
        self.addCleanup(self.tmp.cleanup)
        self.db = h.make_demo_db(self.tmp.path, bulk=USERS)
        self.d = h.start_maildictd(self.tmp.path, self.db, cache_entries=10000, log_level="info")
        self.addCleanup(self.d.kill)

    def lookup_quota(self, client, n):
        reply = client.lookup(userdb_key(n), timeout=10)
        self.assertTrue(reply.startswith(b"O"), "userdb lookup of user%d answered %r" % (n, reply))
        return quota_of(reply)

    def assert_alive(self, what):
        if not self.d.alive():
            self.fail("maildictd died (exit %s) %s; log:\n%s"
                      % (self.d.proc.returncode, what, h.tail(self.d.log_path)))

    def test_changes_while_eight_clients_look_up(self):
        started = time.monotonic()
        load = BenchLoad(self.d.socket)
        reader = OutsideReader(self.db)
        try:
            client = h.DictClient(self.d.socket, timeout=10)
            client.hello()
            # Let the load fill the cache first.
            h.wait_until(lambda: load.runs > 0 or load.problems or not self.d.alive(), 60, "a first bench run")
            self.assert_alive("under load alone")

            for i in range(CTL_CHANGES):
                n = i % USERS + 1
                quota = 500000 + i
                self.lookup_quota(client, n)  # cached now
                rc, out, err = h.maildictctl(self.d.conf_path, "user", "set", "user%d@bulk.example" % n,
                                             "--quota", str(quota))
                self.assertEqual(rc, 0, "maildictctl user set failed: %s%s" % (out, err))
                self.assert_alive("after %d maildictctl changes" % (i + 1))
                self.assertEqual(self.lookup_quota(client, n), quota,
                                 "change %d by maildictctl not served by the next lookup" % (i + 1))
                self.assertEqual(load.problems, [])
            h.log("%d maildictctl changes, each served by the next lookup" % CTL_CHANGES)

            shell = SqliteShell(self.db)
            try:
                for i in range(SQL_CHANGES):
                    n = (i * 7) % USERS + 1
                    quota = 900000 + i
                    self.lookup_quota(client, n)
                    shell.run("UPDATE users SET quota_bytes = %d WHERE local_part = 'user%d' AND domain = 'bulk.example';"
                              % (quota, n))
                    self.assert_alive("after %d sqlite3 UPDATEs" % (i + 1))
                    self.assertEqual(self.lookup_quota(client, n), quota,
                                     "UPDATE %d by sqlite3 not served by the next lookup" % (i + 1))
                    if i % 100 == 0:
                        self.assertEqual(load.problems, [])
            finally:
                shell.close()
            h.log("%d sqlite3 UPDATEs, each served by the next lookup" % SQL_CHANGES)
            client.close()
        finally:
            load.stop()
            reader.stop()
        self.assert_alive("at the end")
        h.log("bench: %d lookups in %d runs; outside reader: %d reads; %.1f s"
              % (load.lookups, load.runs, reader.reads, time.monotonic() - started))
        self.assertEqual(load.problems, [])
        self.assertGreater(load.lookups, 0)
        self.assertEqual(reader.problems, [], "an outside read-only sqlite3 failed")
        self.assertGreater(reader.reads, 10)
        self.d.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
