#!/usr/bin/env python3
"""PostgreSQL going away and coming back under a steady load of lookups (issue 4).

A private PostgreSQL 15 cluster holds the demo directory plus BULK bulk users; maildictd runs
on it with its cache on. Four client threads (harness.LookupLoad, one connection each) ask,
back to back with a short pause, a mix of
  * cached:  passdb/userdb of the demo's named users (asked before, so in maildictd's cache),
  * fresh:   passdb of a bulk user nobody asked before (never in the cache),
  * unknown: passdb of a user that does not exist, a new name every time (never in the cache).
Then, with the load running, PostgreSQL is stopped (fast shutdown: clients are disconnected;
immediate: the server processes are killed, crash recovery on the next start) and started
again in the same data directory. Checked:
  * never, at any time, an N for a user that exists, nor an O for one that does not, nor a
    wrong value; no client connection is dropped;
  * while the server is down (lookups sent after the postmaster exited and answered before it
    was started again), every fresh and unknown lookup is F (temporary);
  * cached answers must stop once the database is known to be away (the LISTEN connection that
    keeps the cache honest is gone, so the cache cannot know about changes): per thread, the
    cached lookups of the outage are some O's followed only by F's, and each thread sees the
    F's (the test waits up to 30 s for that, so this is no timing assertion);
  * afterwards every thread gets right answers again (within 60 s), from the same maildictd
    process, and from then on only right answers.
A hung server (every PostgreSQL process stopped with SIGSTOP): cached answers stop within about
a second (the listener's ping goes unanswered), F never N, and right answers come back once it
runs again; a maildictd stopped while the server hangs ends by itself (exit 1, after its 10 s
grace) instead of waiting for the server. And maildictd started while PostgreSQL is down: it
starts, answers F (never N), and serves normally once PostgreSQL is up; with an empty database
it creates the schema then, and a user added afterwards by another program is served within 1 s
(its negative answer was cached).
"""
import itertools
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

BULK = 5000
THREADS = 4
PAUSE = 0.003          # seconds between two lookups of one thread: steady, not a flood
OUTAGE_EVIDENCE = 300  # per thread: answers after its first cached F before PostgreSQL returns
                       # (a count, not a time: about a second of outage at PAUSE)
CACHED_USERS = ["john@example.org", "jane@example.org", "john_doe@example.org",
                "bob@example.net"]


class PgRestart(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        h.require_programs()
        h.require_peer(h.postgres_missing())
        cls.tmp = h.TempDir()
        cls.maildictd = None
        try:
            cls.demo = h.make_demo_database(cls.tmp.path, bulk=BULK, backend="postgresql")
            cls.pg = cls.demo.postgres
            cls.maildictd = h.start_maildictd(cls.tmp.path, cls.demo.database,
                                              cache_entries=10000, cache_ttl="60s",
                                              db_connections=2, request_timeout="2s")
            cls.fresh_ids = itertools.count(1)
            cls.unknown_ids = itertools.count(1)
            cls.reference = {}
            with h.DictClient(cls.maildictd.socket) as c:
                c.hello()
                for user in CACHED_USERS:
                    for kind in ("passdb", "userdb"):
                        key = ("shared/%s/%s" % (kind, user)).encode()
                        reply = c.lookup(key)
                        assert reply.startswith(b"O"), "%r -> %r" % (key, reply)
                        cls.reference[key] = reply
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.maildictd is not None:
                cls.maildictd.stop()
        finally:
            cls.tmp.cleanup()

    def setUp(self):
        if not self.pg.alive():
            self.pg.start()
        self.assertTrue(self.maildictd.alive(), h.tail(self.maildictd.log_path))

    # ---- the load ----

    def next_key(self, n):
        """The n-th lookup of a thread: cached, fresh, cached, unknown, ..."""
        time.sleep(PAUSE)
        keys = sorted(self.reference)
        if n % 2 == 0:
            return keys[(n // 2) % len(keys)], "cached"
        if n % 4 == 1:
            i = next(self.fresh_ids)
            if i <= BULK:
                return b"shared/passdb/user%d@bulk.example" % i, "fresh"
        return b"shared/passdb/nosuch-%d@example.org" % next(self.unknown_ids), "unknown"

    def check_answer(self, a):
        """The answer is right, or F (temporary): anything else is a failure message."""
        if a.reply.startswith(b"F"):
            return None
        if a.kind == "cached":
            ok = a.reply == self.reference[a.key]
        elif a.kind == "fresh":
            user = a.key.rsplit(b"/", 1)[1].decode()
            ok = a.reply.startswith(b"O") and h.reply_json(a.reply).get("user") == user
        else:
            ok = a.reply == b"N"
        return None if ok else "%s %r -> %r" % (a.kind, a.key, a.reply[:80])

    @staticmethod
    def right(a):
        return not a.reply.startswith(b"F")

    def start_load(self):
        threads = [h.LookupLoad(self.maildictd.socket, self.next_key, name="load%d" % i)
                   for i in range(THREADS)]
        for t in threads:
            t.start()
            self.addCleanup(lambda t=t: t.stop() if t.is_alive() else None)
        for t in threads:
            self.assertTrue(t.connected.wait(30))
        return threads

    def all_threads(self, threads, predicate):
        for t in threads:
            self.assertEqual(t.errors, [], "load thread %s broke" % t.name)
        return all(predicate(t) for t in threads)

    def outage_evidence(self, t, t_down):
        """Thread t has seen a cached lookup fail since t_down, and OUTAGE_EVIDENCE answers
        after that."""
        after = t.since(t_down)
        first_f = next((i for i, a in enumerate(after)
                        if a.kind == "cached" and a.reply.startswith(b"F")), None)
        return first_f is not None and len(after) - first_f > OUTAGE_EVIDENCE

    def recovered(self, t, t_up):
        """Thread t has had a right answer of every kind for lookups sent since t_up."""
        got = {a.kind for a in t.since(t_up) if self.right(a) and self.check_answer(a) is None}
        return {"cached", "fresh", "unknown"} <= got

    def restart_under_load(self, mode):
        pid = self.maildictd.pid
        threads = self.start_load()
        h.wait_until(lambda: self.all_threads(threads, lambda t: len(t.answers) >= 50), 60,
                     "the load to run")
        self.assertTrue(all(self.right(a) for t in threads for a in t.answers),
                        "F answers before the outage")

        t_stop = time.monotonic()
        self.pg.stop(mode)
        t_down = time.monotonic()                   # the postmaster has exited
        h.wait_until(lambda: self.all_threads(threads, lambda t: self.outage_evidence(t, t_down)),
                     30, "every thread to see cached lookups fail while PostgreSQL is down "
                     "(mode %s)" % mode)
        t_start = time.monotonic()
        self.pg.start()
        t_up = time.monotonic()
        h.wait_until(lambda: self.all_threads(threads, lambda t: self.recovered(t, t_up)), 60,
                     "every thread to get right answers after PostgreSQL is back (mode %s)" % mode)
        t_recovered = time.monotonic()
        # a little more load after recovery, then stop
        marks = [len(t.answers) for t in threads]
        h.wait_until(lambda: all(len(t.answers) >= m + 40 for t, m in zip(threads, marks)), 60,
                     "more lookups after recovery")
        for t in threads:
            t.stop()
            self.assertEqual(t.errors, [], "load thread %s broke" % t.name)

        # ---- verdict ----
        wrong = [msg for t in threads for a in t.answers for msg in [self.check_answer(a)] if msg]
        self.assertEqual(wrong, [], "wrong answers (an N for an existing user is the worst)")
        counts = {}
        for t in threads:
            outage = [a for a in t.answers if a.t_sent >= t_down and a.t_received <= t_start]
            for a in outage:
                c = counts.setdefault(a.kind, {"O": 0, "N": 0, "F": 0})
                c[a.reply[:1].decode()] += 1
                if a.kind in ("fresh", "unknown"):
                    self.assertTrue(a.reply.startswith(b"F"), "%s: %s %r answered %r while "
                                    "PostgreSQL was down" % (t.name, a.kind, a.key, a.reply[:80]))
            cached = [a.reply[:1] for a in outage if a.kind == "cached"]
            if b"F" in cached:
                tail_ = cached[cached.index(b"F"):]
                self.assertNotIn(b"O", tail_, "%s: a cached answer was served again after "
                                 "cached lookups had failed during the outage: %s"
                                 % (t.name, b"".join(cached).decode()))
            after = [a for a in t.answers if a.t_sent >= t_recovered]
            self.assertTrue(after, t.name)
            self.assertEqual([a for a in after if not self.right(a)], [],
                             "%s: F after recovery" % t.name)
        h.log("mode %s: stop took %.2fs, outage %.2fs, recovery %.2fs after start; answers "
              "during the outage: %s" % (mode, t_down - t_stop, t_start - t_down,
                                         t_recovered - t_up, counts))
        self.assertTrue(self.maildictd.alive(), "maildictd died")
        self.assertEqual(self.maildictd.pid, pid)

    def test_1_fast_restart_under_load(self):
        self.restart_under_load("fast")

    def test_2_immediate_restart_under_load(self):
        self.restart_under_load("immediate")

    def test_3_maildictd_started_while_postgresql_is_down(self):
        self.pg.stop("fast")
        d = h.start_maildictd(self.tmp.path, self.demo.database, name="maildictd-early",
                              socket=self.tmp.join("early.sock"), cache_entries=1000,
                              db_connections=2, request_timeout="2s")
        try:
            with h.DictClient(d.socket) as c:
                c.hello()
                for _ in range(3):
                    for key in (b"shared/passdb/john@example.org",
                                b"shared/userdb/john@example.org",
                                b"shared/passdb/nosuch@example.org"):
                        reply = c.lookup(key)
                        self.assertTrue(reply.startswith(b"F"), "%r -> %r with PostgreSQL down"
                                        % (key, reply[:80]))
                    time.sleep(0.2)
            self.pg.start()

            def serves():
                with h.DictClient(d.socket) as c:
                    c.hello()
                    reply = c.lookup(b"shared/passdb/john@example.org")
                    self.assertFalse(reply.startswith(b"N"), reply)
                    return reply.startswith(b"O")
            h.wait_until(serves, 60, "maildictd started before PostgreSQL to serve lookups",
                         interval=0.2)
            with h.DictClient(d.socket) as c:
                c.hello()
                self.assertEqual(c.lookup(b"shared/passdb/john@example.org"),
                                 self.reference[b"shared/passdb/john@example.org"])
                self.assertEqual(c.lookup(b"shared/userdb/bob@example.net"),
                                 self.reference[b"shared/userdb/bob@example.net"])
                self.assertEqual(c.lookup(b"shared/passdb/nosuch@example.org"), b"N")
            self.assertTrue(d.alive())
        finally:
            d.stop()

    def test_4_empty_database_down_at_startup_gets_its_schema(self):
        # A new, empty database that is down when maildictd starts: maildictd creates the schema
        # (and its NOTIFY triggers) on its first successful connection, answers N for unknown
        # users then, and sees rows added afterwards by another program at once.
        pg = h.start_postgres(self.tmp.path, name="pg-empty")
        pg.stop("fast")
        d = h.start_maildictd(self.tmp.path, pg.database, name="maildictd-empty",
                              socket=self.tmp.join("empty.sock"), cache_entries=1000,
                              db_connections=2, request_timeout="2s")
        try:
            with h.DictClient(d.socket) as c:
                c.hello()
                reply = c.lookup(b"shared/passdb/john@example.org")
                self.assertTrue(reply.startswith(b"F"), reply[:80])
            pg.start()

            def answers_not_found():
                with h.DictClient(d.socket) as c:
                    c.hello()
                    reply = c.lookup(b"shared/passdb/john@example.org")
                    self.assertFalse(reply.startswith(b"O"), reply[:80])
                    return reply == b"N"
            h.wait_until(answers_not_found, 60, "maildictd to create the schema and answer N",
                         interval=0.2)
            tables = {r[0] for r in pg.psql("SELECT tablename FROM pg_tables WHERE "
                                            "schemaname = 'public'")}
            self.assertTrue({"domains", "users", "aliases"} <= tables, tables)
            with h.DictClient(d.socket) as c:
                c.hello()
                self.assertEqual(c.lookup(b"shared/passdb/john@example.org"), b"N")  # cached N
                r = h.subprocess.run([h.admin_path(), "demo", pg.database], capture_output=True,
                                     text=True, timeout=h.COMMAND_TIMEOUT)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                h.wait_until(lambda: c.lookup(b"shared/passdb/john@example.org").startswith(b"O"),
                             1.0, "john (added by maildict-admin demo) within 1 s")
        finally:
            d.stop()
            pg.stop()

    def test_5_hung_server_stops_cached_answers(self):
        # A server that hangs (here every PostgreSQL process is stopped with SIGSTOP; a network
        # cut without a reset looks the same) closes no connection, so nothing tells maildictd
        # it is gone, and no notification of a change made meanwhile could arrive. Cached
        # answers must stop once the listener's ping goes unanswered (a second), instead of
        # being served for the whole cache_ttl (60 s here): F, never N, then right answers
        # again once the server runs again.
        key = b"shared/passdb/john@example.org"
        with h.DictClient(self.maildictd.socket) as c:
            c.hello()
            # cached, and the listener is up: answers come without the database
            h.wait_until(lambda: c.lookup(key) == self.reference[key], 30, "john's answer")
            procs = self.pg.processes()
            h.log("stopping %d PostgreSQL processes with SIGSTOP" % len(procs))
            for pid in procs:
                os.kill(pid, signal.SIGSTOP)
            try:
                replies = []

                def cache_stopped():
                    reply = c.lookup(key, timeout=30)
                    replies.append(reply[:60])
                    self.assertFalse(reply.startswith(b"N"), reply[:80])
                    if reply.startswith(b"O"):
                        self.assertEqual(reply, self.reference[key])
                    return reply.startswith(b"F")
                h.wait_until(cache_stopped, 20, "cached answers to stop while PostgreSQL hangs",
                             interval=0.1)
                # and they stay stopped
                for _ in range(3):
                    self.assertTrue(c.lookup(key, timeout=30).startswith(b"F"))
                h.log("%d answers (cached) before the first F" % (len(replies) - 1))
            finally:
                for pid in procs:
                    os.kill(pid, signal.SIGCONT)
            h.wait_until(lambda: c.lookup(key, timeout=30) == self.reference[key], 60,
                         "right answers once PostgreSQL runs again", interval=0.2)

    def test_6_stop_while_server_hangs(self):
        # SIGTERM while PostgreSQL hangs: the change listener may be stuck in its ping (libpq
        # has no client-side timeout on a UNIX socket), so a stop that waited for it would wait
        # until the server runs again. Lookups keep their own deadline (libpq's asynchronous
        # interface), so whether anything is still stuck when the signal comes depends on where
        # the listener is in its ping cycle. Either way maildictd must end by itself: cleanly
        # (exit 0) when nothing was stuck, or after its 10 s grace with exit 1 and the reason in
        # its log. The harness sends SIGKILL only after 30 s (exit -9), which fails the test: a
        # stop without the watchdog never ends while the server hangs.
        d = h.start_maildictd(self.tmp.path, self.demo.database, name="maildictd-hang",
                              socket=self.tmp.join("hang.sock"), cache_entries=1000,
                              db_connections=2, request_timeout="2s")
        procs = []
        try:
            with h.DictClient(d.socket) as c:
                c.hello()
                self.assertTrue(c.lookup(b"shared/passdb/john@example.org").startswith(b"O"))
                procs = self.pg.processes()
                for pid in procs:
                    os.kill(pid, signal.SIGSTOP)
                # a lookup nobody asked before goes to a pool thread: F, not N
                reply = c.lookup(b"shared/passdb/user%d@bulk.example" % next(self.fresh_ids),
                                 timeout=30)
                self.assertTrue(reply.startswith(b"F"), reply[:80])
            rc = h.kill_and_wait(d.proc, signal.SIGTERM, timeout=h.STOP_TIMEOUT)
            d.returncode = rc
            log = d.log_text()
            self.assertIn(rc, (0, 1), "maildictd did not end by itself (rc %s); log:\n%s"
                          % (rc, h.tail(d.log_path)))
            if rc == 1:
                self.assertIn("exiting without waiting", log)
            d.check_log_has_no_secrets()
        finally:
            for pid in procs:
                os.kill(pid, signal.SIGCONT)
            if d.alive():
                d.kill()


if __name__ == "__main__":
    unittest.main(verbosity=2)
