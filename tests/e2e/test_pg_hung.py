#!/usr/bin/env python3
"""A hung PostgreSQL under load: every request is answered F, in time (issue 12, item 8).

maildictd (request_timeout = 1s, 2 pool connections, cache off so that every lookup needs the
database) serves the demo directory from a private PostgreSQL cluster. Every PostgreSQL
process is then stopped with SIGSTOP (a server that hangs, or a network path that went dead,
looks exactly like this to a client) while 16 clients (8 times the pool) keep asking, each on
its own connection, one lookup after the other. Checked:

  * every answer is F (never N, never an O for a user nobody can look up now);
  * none arrives later than twice the request timeout after it was sent;
  * every client gets answers all along, not only as many as there are pool threads;
  * the answers come from maildictd's database layer keeping the deadline by itself (the
    query gives up, or the request is answered while it waits for a connection), not from the
    dict server's last-resort backstop ("maildict: request timed out"), which only exists for a
    worker stuck outside the database's control. Before, pool threads sat in libpqxx calls
    that cannot time out, and every request waited for the backstop;
  * after SIGCONT the lookups are answered O again, and maildictd stops cleanly.

Runs in about 15 s.
"""
import os
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

BULK = 3000
CLIENTS = 16
TIMEOUT = 1.0           # request_timeout, seconds
HUNG_SECONDS = 5.0      # how long the clients ask while the server hangs
BACKSTOP_TEXT = b"request timed out"


class Client(threading.Thread):
    def __init__(self, socket_path, first_user, stop):
        super().__init__(daemon=True)
        self.socket_path = socket_path
        self.user = first_user
        self.stop = stop
        self.answers = []  # (sent, latency, reply)
        self.error = None

    def run(self):
        try:
            with h.DictClient(self.socket_path, timeout=30) as c:
                c.hello()
                while not self.stop.is_set():
                    self.user += 1
                    sent = time.monotonic()
                    reply = c.lookup(b"shared/passdb/user%d@bulk.example" % self.user, timeout=30)
                    self.answers.append((sent, time.monotonic() - sent, reply))
        except Exception as e:  # reported by the test
            self.error = repr(e)


class HungPostgres(unittest.TestCase):
    def setUp(self):
        h.require_programs()
        missing = h.postgres_missing()
        if missing:
            raise AssertionError("test_pg_hung needs PostgreSQL: " + missing)
        self.tmp = h.TempDir()
        self.addCleanup(self.tmp.cleanup)
        self.demo = h.make_demo_database(self.tmp.path, bulk=BULK, backend="postgresql")
        self.pg = self.demo.postgres
        self.d = h.start_maildictd(self.tmp.path, self.demo.database, request_timeout="%dms" % (TIMEOUT * 1000),
                                   db_connections=2, cache_entries=0, log_level="info")
        self.addCleanup(self.d.kill)
        self.stopped = []
        self.addCleanup(self.resume)

    def resume(self):
        for pid in self.stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.stopped = []

    def test_every_request_is_answered_in_time(self):
        with h.DictClient(self.d.socket) as c:
            c.hello()
            self.assertTrue(c.lookup(b"shared/passdb/user1@bulk.example").startswith(b"O"))

        self.stopped = self.pg.processes()
        h.log("stopping %d PostgreSQL processes with SIGSTOP" % len(self.stopped))
        for pid in self.stopped:
            os.kill(pid, signal.SIGSTOP)
        stop = threading.Event()
        clients = [Client(self.d.socket, 100 + i * 150, stop) for i in range(CLIENTS)]
        for t in clients:
            t.start()
        time.sleep(HUNG_SECONDS)
        stop.set()
        for t in clients:
            t.join(timeout=60)
        self.resume()
        h.log("PostgreSQL resumed")

        for i, t in enumerate(clients):
            self.assertFalse(t.is_alive(), "client %d still waits for an answer" % i)
            self.assertIsNone(t.error, "client %d: %s" % (i, t.error))
            # Answers all along: at least one per two request timeouts of the outage.
            self.assertGreaterEqual(len(t.answers), int(HUNG_SECONDS / (2 * TIMEOUT)),
                                    "client %d got only %d answers in %.0f s" % (i, len(t.answers), HUNG_SECONDS))
            for sent, latency, reply in t.answers:
                self.assertTrue(reply.startswith(b"F"), "client %d: %r while PostgreSQL hung" % (i, reply))
                self.assertLess(latency, 2 * TIMEOUT,
                                "client %d: answered %.2f s after sending (request_timeout %.1f s): %r"
                                % (i, latency, TIMEOUT, reply))
                self.assertNotIn(BACKSTOP_TEXT, reply,
                                 "client %d: only the dict server's backstop answered: %r" % (i, reply))
        latencies = sorted(l for t in clients for _, l, _ in t.answers)
        h.log("%d answers, all F; latency median %.2f s, max %.2f s"
              % (len(latencies), latencies[len(latencies) // 2], latencies[-1]))

        def answered_again():
            with h.DictClient(self.d.socket) as c:
                c.hello()
                return c.lookup(b"shared/passdb/user2@bulk.example").startswith(b"O")
        h.wait_until(answered_again, 60, "lookups answered again after SIGCONT", interval=0.5)
        self.d.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
