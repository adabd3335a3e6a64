#!/usr/bin/env python3
"""SIGTERM answers the requests in flight before closing connections (issue 12, item 8).

maildictd serves the demo directory from a private PostgreSQL cluster with the cache off.
Another session holds `LOCK TABLE users IN ACCESS EXCLUSIVE MODE`, so a lookup sent now waits
in the database: it is in flight. maildictd then gets SIGTERM. Required:
  * a connection with nothing in flight is closed at once;
  * new connections are no longer accepted;
  * once the lock is released, the waiting lookup gets its real answer (O, the user's
    passdb entry), and only then is its connection closed;
  * a second lookup whose lock is never released gets a temporary failure (F) at the request
    timeout, never a silent close;
  * maildictd exits 0.
Runs in about 10 s.
"""
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

REQUEST_TIMEOUT = 3.0


def waiting_on_lock(pg, n):
    rows = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                   "AND usename = 'maildict'")
    return int(rows[0][0]) >= n


class StopInFlightTest(unittest.TestCase):
    def run_case(self, release):
        with h.TempDir() as tmp:
            demo = h.make_demo_database(tmp.path, backend="postgresql")
            pg = demo.postgres
            md = h.start_maildictd(tmp.path, db_path=demo.database, cache_entries="0",
                                   request_timeout="%dms" % (REQUEST_TIMEOUT * 1000))
            try:
                busy = h.DictClient(md.socket, timeout=30)
                busy.hello(minor=0)
                self.assertTrue(busy.lookup(b"shared/passdb/john@example.org").startswith(b"O"))
                idle = h.DictClient(md.socket, timeout=30)
                idle.hello(minor=0)
                self.assertTrue(idle.lookup(b"shared/passdb/bob@example.net").startswith(b"O"))

                locker = pg.session()
                locker.query("BEGIN")
                locker.query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
                busy.send(b"Lshared/passdb/jane@example.org\t\n")
                h.wait_until(lambda: waiting_on_lock(pg, 1), 30, "the lookup to wait for the lock")

                md.proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                idle.wait_closed(timeout=10)   # nothing in flight: closed at once
                h.wait_until(lambda: not h.unix_socket_accepts(md.socket) or not os.path.exists(md.socket),
                             10, "maildictd to stop accepting")
                if release:
                    time.sleep(0.5)   # the lookup is still in flight after the signal
                    self.assertTrue(md.alive(), "maildictd exited with a request in flight")
                    locker.query("COMMIT")
                    line = busy.read_line(timeout=30)
                    self.assertTrue(line.startswith(b"O"), line)
                    self.assertIn(b"jane@example.org", line)
                else:
                    line = busy.read_line(timeout=30)
                    took = time.monotonic() - signalled
                    self.assertTrue(line.startswith(b"F"), line)
                    self.assertLess(took, REQUEST_TIMEOUT * 2 + 1, "the temporary failure came late")
                    locker.query("ROLLBACK")
                busy.wait_closed(timeout=10)
                rc = h.kill_and_wait(md.proc, signal.SIGTERM, timeout=30)   # already stopping
                md.returncode = rc
                self.assertEqual(rc, 0, h.tail(md.log_path))
                locker.close()
                busy.close()
                idle.close()
            finally:
                md.kill()

    def test_the_answer_from_the_database_is_delivered(self):
        self.run_case(release=True)

    def test_a_request_that_cannot_be_answered_fails_temporarily(self):
        self.run_case(release=False)


if __name__ == "__main__":
    unittest.main(verbosity=2)
