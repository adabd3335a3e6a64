#!/usr/bin/env python3
"""200 concurrent clients, and PostgreSQL never sees more maildictd connections than the pool.

maildictd runs with db_connections = POOL on a private PostgreSQL 15 cluster holding the demo
directory and BULK bulk users. CLIENTS client connections (one thread each, harness.LookupLoad)
all connect first (the test checks that maildictd holds CLIENTS accepted connections at once),
then start together and ask passdb and userdb of bulk users, each client its own users, so
that maildictd's cache cannot answer and every lookup needs the database. Meanwhile a psql
session samples pg_stat_activity as fast as it can. Checked:
  * the number of server processes with application_name 'maildictd' (the lookup pool) never
    exceeds POOL in any sample, and is above 0 in some sample (the sampler does see them);
  * the LISTEN connection ('maildictd-listen') is at most one, and the maildict role (whose
    only client is maildictd) never has more than POOL + 1 connections, whatever their
    application_name says (nothing bypasses the pool);
  * every lookup of the load was answered with the right user (no N, no F);
  * afterwards the counts are still within bounds and maildictd is alive.
"""
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

CLIENTS = 200
POOL = 3
LOOKUPS_PER_CLIENT = 30      # passdb + userdb of 15 users per client
BULK = CLIENTS * LOOKUPS_PER_CLIENT // 2

# lookup connections (by name), the listener, every connection of the maildict role (maildictd
# is its only client during the test), and the names of the role's other connections
SAMPLE_SQL = ("SELECT count(*) FILTER (WHERE application_name = 'maildictd'), "
              "count(*) FILTER (WHERE application_name = 'maildictd-listen'), "
              "count(*) FILTER (WHERE usename = 'maildict'), "
              "coalesce(string_agg(DISTINCT quote_literal(application_name), ',') FILTER "
              "(WHERE usename = 'maildict' AND application_name NOT IN ('maildictd', "
              "'maildictd-listen')), '') "
              "FROM pg_stat_activity")


class Sampler(threading.Thread):
    def __init__(self, pg):
        super().__init__(daemon=True, name="pg_stat_activity sampler")
        self.session = pg.session()
        self.samples = []
        self.errors = []
        self._stop_flag = threading.Event()

    def run(self):
        try:
            while not self._stop_flag.is_set():
                pool, listen, role, names = self.session.query(SAMPLE_SQL)[0]
                self.samples.append((time.monotonic(), int(pool), int(listen), int(role), names))
        except BaseException as e:   # noqa: BLE001
            self.errors.append("%s: %s" % (type(e).__name__, e))

    def stop(self):
        self._stop_flag.set()
        self.join(60)
        self.session.close()
        return self.samples


class PgPool(unittest.TestCase):
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
                                              cache_entries=100000, db_connections=POOL,
                                              io_threads=2, request_timeout="30s")
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

    def test_200_clients_never_more_connections_than_the_pool(self):
        barrier = threading.Barrier(CLIENTS + 1)

        def keys_for(client):
            # client c asks users c+1, c+1+CLIENTS, ...: nobody else asks them
            def next_key(n):
                if n >= LOOKUPS_PER_CLIENT:
                    time.sleep(0.05)    # done: idle along until the others are
                    return b"shared/passdb/user1@bulk.example", "extra"   # after its share
                user = client + 1 + (n // 2) * CLIENTS
                kind = "passdb" if n % 2 == 0 else "userdb"
                return b"shared/%s/user%d@bulk.example" % (kind.encode(), user), "own"
            return next_key

        threads = [h.LookupLoad(self.maildictd.socket, keys_for(c), name="client%d" % c,
                                timeout=60, start_barrier=barrier) for c in range(CLIENTS)]
        sampler = Sampler(self.pg)
        for t in threads:
            t.start()
        try:
            for t in threads:
                self.assertTrue(t.connected.wait(60), t.name)
                self.assertEqual(t.errors, [], t.name)
            # all CLIENTS are connected at once before any lookup starts. A client's connect()
            # returns once the kernel has queued it; /proc/net/unix lists it only after
            # maildictd's accept, which on a busy machine comes a little later.
            h.wait_until(lambda: h.unix_connections(self.maildictd.socket) >= CLIENTS, 60,
                         "maildictd to accept all %d clients" % CLIENTS)
            sampler.start()
            h.wait_until(lambda: len(sampler.samples) >= 3 or sampler.errors, 30, "samples")
            t0 = time.monotonic()
            barrier.wait(timeout=60)
            h.wait_until(lambda: all(len(t.answers) >= LOOKUPS_PER_CLIENT or t.errors
                                     for t in threads), 300,
                         "every client to finish its %d lookups" % LOOKUPS_PER_CLIENT)
            elapsed = time.monotonic() - t0
        finally:
            barrier.abort()     # frees clients still waiting to start if the test failed early
            for t in threads:
                t.stop()
            samples = sampler.stop()
        self.assertEqual(sampler.errors, [])
        for t in threads:
            self.assertEqual(t.errors, [], t.name)

        # every lookup of its own share answered right
        wrong = []
        for t in threads:
            own = [a for a in t.answers if a.kind == "own"]
            self.assertEqual(len(own), LOOKUPS_PER_CLIENT, t.name)
            for a in own:
                user = a.key.rsplit(b"/", 1)[1].decode()
                if not a.reply.startswith(b"O") or h.reply_json(a.reply).get("user") != user:
                    wrong.append("%r -> %r" % (a.key, a.reply[:80]))
        self.assertEqual(wrong[:10], [], "%d wrong answers" % len(wrong))

        during = [s for s in samples if s[0] >= t0]
        self.assertGreater(len(during), 0, "no pg_stat_activity sample during the load")
        max_pool = max(s[1] for s in samples)
        max_listen = max(s[2] for s in samples)
        max_role = max(s[3] for s in samples)
        other_names = sorted({n for s in samples if s[4] for n in s[4].split(",")})
        unnamed = sum(1 for s in samples if s[4])
        h.log("%d clients x %d lookups in %.2fs; %d pg_stat_activity samples (%d during the "
              "load): max %d 'maildictd' connections (pool %d), max %d listener, max %d of the "
              "maildict role in all; %d samples saw role connections named %s (a connection "
              "between its start-up and its SET of application_name)"
              % (CLIENTS, LOOKUPS_PER_CLIENT, elapsed, len(samples), len(during), max_pool,
                 POOL, max_listen, max_role, unnamed, other_names or "-"))
        self.assertLessEqual(max_pool, POOL, "more lookup connections than db_connections")
        self.assertGreater(max(s[1] for s in during), 0,
                           "no 'maildictd' connection seen during the load: is "
                           "application_name set?")
        self.assertLessEqual(max_listen, 1, "more than one LISTEN connection")
        # whatever they are called: the pool plus the listener, never more
        self.assertLessEqual(max_role, POOL + 1,
                             "the maildict role had more connections than db_connections + the "
                             "listener (names seen outside the pool: %s)" % other_names)
        # and now, at rest
        self.assertLessEqual(self.pg.connections("maildictd"), POOL)
        self.assertTrue(self.maildictd.alive())


if __name__ == "__main__":
    unittest.main(verbosity=2)
