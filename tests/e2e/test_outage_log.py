#!/usr/bin/env python3
"""An outage does not flood the log (issue 12, item 7, acceptance).

maildictd (log_level = info, the default) serves a SQLite directory to 8 clients looking up as
fast as they can (maildict-bench). The database file is moved away for 10 s and back. Every
lookup in between is answered F (never N), and the log gets fewer than 20 lines for the whole
episode: one line when a cause starts, a summary with counts while it lasts, one line when it
ends. Before, every failed lookup was a warning line (over 100,000 in 10 s).

The test also checks that those few lines say what happened: a line naming the missing file
when it starts, and a line with the number of failed requests when it ends.

Runs in about 20 s.
"""
import os
import re
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

USERS = 1000
OUTAGE_SECONDS = 10
MAX_LINES = 20


def bench_path():
    return os.path.join(h.BUILD_DIR, "maildict-bench")


class Load:
    """maildict-bench (8 connections, any answer accepted) in back-to-back 2 s runs until
    stop(); counts the F and N answers."""

    def __init__(self, socket_path):
        self.socket_path = socket_path
        self.stopping = threading.Event()
        self.requests = self.failed = self.notfound = 0
        self.problems = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        n = 0
        while not self.stopping.is_set():
            n += 1
            r = subprocess.run([bench_path(), "--socket", self.socket_path, "--connections", "8", "--duration", "2",
                                "--warmup", "0", "--users", str(USERS), "--expect", "any", "--seed", str(n)],
                               capture_output=True, text=True, timeout=h.COMMAND_TIMEOUT)
            fields = dict(re.findall(r"(\w+)=(\d+)", r.stdout))
            # An F counts as an error of the run too (exit 1); anything beyond them is not.
            if "requests" not in fields or int(fields["errors"]) > int(fields["failed"]):
                self.problems.append("maildict-bench (exit %d): %s %s" % (r.returncode, r.stdout, r.stderr[:300]))
                return
            self.requests += int(fields["requests"])
            self.failed += int(fields["failed"])
            self.notfound += int(fields["notfound"])

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=h.COMMAND_TIMEOUT)


class OutageLog(unittest.TestCase):
    def setUp(self):
        h.require_programs()
        if not os.access(bench_path(), os.X_OK):
            raise AssertionError("missing program %s (MAILDICT_BUILD_DIR=%s)" % (bench_path(), h.BUILD_DIR))
        self.tmp = h.TempDir()
        self.addCleanup(self.tmp.cleanup)
        self.db = h.make_demo_db(self.tmp.path, bulk=USERS)
        self.d = h.start_maildictd(self.tmp.path, self.db, log_level="info", request_timeout="2s")
        self.addCleanup(self.d.kill)

    def lookup(self, client):
        return client.lookup(b"shared/passdb/user1@bulk.example", timeout=30)

    def test_sqlite_file_removed_for_ten_seconds_under_load(self):
        client = h.DictClient(self.d.socket, timeout=30)
        client.hello()
        self.assertTrue(self.lookup(client).startswith(b"O"))
        load = Load(self.d.socket)
        try:
            h.wait_until(lambda: load.requests > 0 or load.problems, 60, "a first bench run")
            self.assertEqual(load.notfound, 0)
            before = os.path.getsize(self.d.log_path)
            away = self.db + ".away"
            os.rename(self.db, away)
            h.log("database moved away for %d s" % OUTAGE_SECONDS)
            h.wait_until(lambda: self.lookup(client).startswith(b"F"), 30, "lookups to fail")
            time.sleep(OUTAGE_SECONDS)
            os.rename(away, self.db)
            h.log("database back")
            h.wait_until(lambda: self.lookup(client).startswith(b"O"), 30, "lookups to succeed again")
            # The end is logged once the cause has been quiet for a moment and the database
            # answers: the load keeps asking.
            def all_ended():
                text = self.d.log_text()[before:]
                return text.count("no longer fail") >= text.count("requests fail temporarily") > 0
            h.wait_until(all_ended, 30, "the end of every cause in the log")
            time.sleep(1)
        finally:
            load.stop()
            client.close()
        self.assertEqual(load.problems, [])
        with open(self.d.log_path, "rb") as f:
            f.seek(before)
            lines = f.read().decode("utf-8", "replace").splitlines()
        h.log("%d requests, %d failed, %d not found; %d log lines:\n  %s"
              % (load.requests, load.failed, load.notfound, len(lines), "\n  ".join(l[:200] for l in lines[:30])))
        self.assertGreater(load.failed, 1000, "the outage did not make lookups fail under load")
        self.assertEqual(load.notfound, 0, "a missing database answered 'not found'")
        self.assertLess(len(lines), MAX_LINES, "the outage flooded the log")
        starts = [l for l in lines if "requests fail temporarily" in l]
        self.assertEqual(len(starts), len([l for l in lines if "no longer fail" in l]), lines)
        self.assertTrue(starts and any("database file missing" in l for l in starts), lines)
        ends = [l for l in lines if "no longer fail" in l]
        self.assertTrue(ends and all(re.search(r"\(\d+ failed in", l) for l in ends), lines)
        self.assertTrue(self.d.alive())
        self.d.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
