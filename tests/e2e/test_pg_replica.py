#!/usr/bin/env python3
"""maildictd with a read replica (issue 4): lookups on the replica, changes seen through it.

A private PostgreSQL 15 primary holds the demo directory; a second cluster is made from it with
pg_basebackup -R (a hot standby streaming from the primary over its UNIX socket, in its own
directory with its own socket). maildictd runs with `database` = the primary and
`database_replica` = the standby, cache on. Checked:
  * lookups are answered, and right;
  * pg_stat_activity on the standby shows maildictd's lookup connections (application_name
    'maildictd'); the primary has none of them, only the LISTEN connection
    ('maildictd-listen': a standby cannot LISTEN) at most once, and at most one such
    connection on the standby (maildictd watches its replay position there);
  * a password and a home changed on the primary (plain SQL) are served within SEEN_WITHIN
    seconds (replay on the standby plus the notification), and stay served: an answer read
    from the standby before it replayed the change must not be cached as current;
  * with the standby stopped, lookups are answered by the primary (F while maildictd notices,
    never a wrong answer), and go back to the standby once it runs again (the connections that
    fell back retire), leaving no lookup connection on the primary.
"""
import os
import secrets
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SEEN_WITHIN = 5.0     # seconds: WAL streaming + replay + NOTIFY, on a busy 2-core CI machine


def crypt_hash(password):
    r = subprocess.run(["doveadm", "pw", "-s", "SHA512-CRYPT", "-p", password],
                       capture_output=True, text=True, timeout=h.COMMAND_TIMEOUT)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def bare(stored):
    return stored.split("}", 1)[1] if stored.startswith("{") else stored


class PgReplica(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        h.require_programs()
        h.require_peer(h.postgres_missing())
        cls.tmp = h.TempDir()
        cls.maildictd = None
        try:
            cls.demo = h.make_demo_database(cls.tmp.path, backend="postgresql")
            cls.primary = cls.demo.postgres
            cls.replica = cls.primary.make_replica(cls.tmp.path)
            cls.replica.start()
            assert cls.replica.scalar("SELECT pg_is_in_recovery()") == "t"
            h.wait_until(lambda: cls.replica.replay_caught_up(cls.primary), 30,
                         "the standby to replay the demo directory")
            cls.maildictd = h.start_maildictd(cls.tmp.path, cls.demo.database,
                                              database_replica=cls.replica.database,
                                              cache_entries=1000, cache_ttl="60s",
                                              db_connections=2)
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

    def lookup(self, key):
        with h.DictClient(self.maildictd.socket) as c:
            c.hello()
            return c.lookup(key)

    def test_1_lookups_go_to_the_replica(self):
        v = h.reply_json(self.lookup(b"shared/passdb/john@example.org"))
        self.assertEqual(v.get("user"), "john@example.org")
        self.assertEqual(self.lookup(b"shared/passdb/nosuch@example.org"), b"N")
        u = h.reply_json(self.lookup(b"shared/userdb/bob@example.net"))
        self.assertEqual(u.get("home"), h.BOB["home"])
        on_replica = self.replica.connections("maildictd")
        self.assertGreater(on_replica, 0, "no maildictd lookup connection on the standby")
        self.assertLessEqual(on_replica, 2, "more lookup connections than db_connections")
        self.assertEqual(self.primary.connections("maildictd"), 0,
                         "lookup connections on the primary")
        # the change listener: LISTEN on the primary (a standby cannot LISTEN) and at most one
        # connection on the standby that watches its replay position
        self.assertLessEqual(self.primary.connections("maildictd-listen"), 1)
        self.assertLessEqual(self.replica.connections("maildictd-listen"), 1)

    def wait_served(self, key, predicate, what):
        t0 = time.monotonic()
        last = None
        while time.monotonic() - t0 <= SEEN_WITHIN:
            last = self.lookup(key)
            if predicate(last):
                return time.monotonic() - t0
            time.sleep(0.05)
        self.fail("%s not served %.1f s after the change on the primary (last answer %r)"
                  % (what, SEEN_WITHIN, last[:40]))

    def test_2_change_on_the_primary_is_served(self):
        key = b"shared/passdb/john@example.org"
        self.assertTrue(self.lookup(key).startswith(b"O"))   # cached now
        stored = crypt_hash("replica-" + secrets.token_hex(6))
        self.demo.run_sql("UPDATE users SET password = :pw WHERE local_part = 'john' AND "
                          "domain = 'example.org'", pw=stored)
        took = self.wait_served(key, lambda r: r.startswith(b"O") and
                                bare(h.reply_json(r).get("password", "")) == bare(stored),
                                "john's new password")
        h.log("new password served %.3f s after the UPDATE on the primary" % took)
        for _ in range(20):   # and it stays (no stale answer cached from a lagging standby)
            self.assertEqual(bare(h.reply_json(self.lookup(key)).get("password", "")),
                             bare(stored))
            time.sleep(0.02)

    def test_3_many_changes_in_a_row_are_all_served(self):
        # each change is read back at once: an answer cached from the standby while it still
        # lagged behind the notification would show up as a stale home here
        key = b"shared/userdb/bob@example.net"
        try:
            for i in range(5):
                home = "/var/vmail/replica/bob-%d-%s" % (i, secrets.token_hex(3))
                self.lookup(key)
                self.demo.run_sql("UPDATE users SET home = :home WHERE local_part = 'bob' AND "
                                  "domain = 'example.net'", home=home)
                self.wait_served(key, lambda r: r.startswith(b"O") and
                                 h.reply_json(r).get("home") == home, "bob's home #%d" % i)
                time.sleep(0.3)
                self.assertEqual(h.reply_json(self.lookup(key)).get("home"), home)
        finally:
            self.demo.run_sql("UPDATE users SET home = :home WHERE local_part = 'bob' AND "
                              "domain = 'example.net'", home=h.BOB["home"])

    def test_4_replica_down_lookups_fall_back_to_the_primary(self):
        keys = {b"shared/passdb/jane@example.org": "O", b"shared/passdb/nosuch@example.org": "N"}
        self.replica.stop("fast")
        try:
            def served_by_primary():
                for key, want in keys.items():
                    reply = self.lookup(key)
                    # a temporary failure is allowed while maildictd notices; a wrong answer not
                    self.assertIn(reply[:1].decode(), (want, "F"), "%r -> %r" % (key, reply[:80]))
                    if reply[:1].decode() != want:
                        return False
                return True
            h.wait_until(served_by_primary, 30, "lookups to be served by the primary while the "
                         "standby is down", interval=0.2)
            self.assertGreater(self.primary.connections("maildictd"), 0)
        finally:
            self.replica.start()
        h.wait_until(lambda: self.lookup(b"shared/passdb/jane@example.org").startswith(b"O"), 30,
                     "lookups to work with the standby back")

    def test_5_lookups_return_to_the_standby_after_its_outage(self):
        # a lookup connection that fell back to the primary retires after a while (10 s), so
        # the load goes back to the standby by itself
        self.replica.stop("fast")
        try:
            h.wait_until(lambda: self.lookup(b"shared/passdb/jane@example.org").startswith(b"O")
                         and self.primary.connections("maildictd") > 0, 30,
                         "lookups on the primary while the standby is down", interval=0.2)
        finally:
            self.replica.start()
        # A connection retires when it is used, so keep every pool connection busy: an idle one
        # stays where it is (on the primary) until its next lookup.
        keys = [b"shared/passdb/jane@example.org", b"shared/userdb/bob@example.net"]
        loads = [h.LookupLoad(self.maildictd.socket,
                              lambda n: (time.sleep(0.002), (keys[n % 2], "known"))[1],
                              name="load%d" % i) for i in range(4)]
        for t in loads:
            t.start()
        try:
            h.wait_until(lambda: self.replica.connections("maildictd") > 0 and
                         self.primary.connections("maildictd") == 0, 60,
                         "lookup connections to move back to the standby", interval=0.5)
        finally:
            for t in loads:
                t.stop()
        for t in loads:
            self.assertEqual(t.errors, [], t.name)
            # the standby is up and the primary never went away: every lookup is answered
            bad = [a.reply[:60] for a in t.answers if not a.reply.startswith(b"O")]
            self.assertEqual(bad, [], t.name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
