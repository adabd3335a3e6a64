#!/usr/bin/env python3
"""maildictctl on PostgreSQL: the same typed changes as on SQLite (storage/directory_admin.cpp
over the PostgreSQL session), seen at once by a running maildictd with its cache on (LISTEN/
NOTIFY), through a real Dovecot 2.3 login (issue 6, part 1: both backends).

A private PostgreSQL 15 cluster (harness.start_postgres: the unprivileged `postgres` account,
UNIX socket in the test directory, no TCP) with an empty `maildict` database owned by the
unprivileged `maildict` role; maildictd creates the schema. Then with maildictctl
only: a domain, a user and an alias; a login works at once; `user passwd` takes effect at once
(old refused, new accepted, the old one cached just before); lookup explains the rule; bad input
changes no row; with PostgreSQL stopped a change is a temporary failure (exit 75), never
"not found", and nothing is half-written once it is back.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def dump(pg):
    """Every directory row, ordered: equal dumps mean nothing was written."""
    return [pg.psql("SELECT t::text FROM %s t ORDER BY 1" % table)
            for table in ("domains", "users", "aliases", "sender_logins")]


class MaildictctlPostgres(h.DaemonsTestCase):
    DAEMONS = ("dovecot", "maildictd")
    RESOURCES = ("cluster",)

    @classmethod
    def setUpClass(cls):
        h.require_programs()
        h.require_peer(h.postgres_missing())
        cls.tmp = h.TempDir()
        cls.maildictd = cls.dovecot = cls.cluster = None
        try:
            cls.cluster = h.start_postgres(cls.tmp.path)
            cls.maildictd = h.start_maildictd(cls.tmp.path, db_path="unused",
                                              database=cls.cluster.database, cache_entries="1000",
                                              cache_ttl="1h")
            cls.conf = cls.maildictd.conf_path
            cls.dovecot = h.start_dovecot(cls.tmp.path, cls.maildictd.socket,
                                          idle_msecs=h.SHIPPED_IDLE_MSECS)
        except BaseException:
            cls._dump_logs()
            cls.tearDownClass()
            raise

    def ctl(self, *args, stdin=None, expect=0):
        rc, out, err = h.maildictctl(self.conf, *args, stdin=stdin)
        if expect is not None:
            self.assertEqual(rc, expect, "maildictctl %s -> %d\n%s%s" % (" ".join(args), rc, out, err))
        return rc, out, err

    def login_ok(self, user, password):
        rc, out, err = self.dovecot.doveadm("auth", "test", "-x", "service=imap", user, password)
        ok, fields = h.parse_auth_test(out)
        self.assertNotIn("temporary", (out + err).lower(), out + err)
        return bool(ok) and rc == 0

    def test_1_create_and_passwd_at_once(self):
        self.assertFalse(self.login_ok("ann@pg.test", "ann-pw-1"))   # cached as unknown
        self.ctl("domain", "add", "pg.test")
        self.ctl("user", "add", "Ann@PG.test", "--cost", "4", "--quota", "512M", stdin="ann-pw-1\n")
        self.ctl("user", "add", "ben@pg.test", "--scheme", "sha512-crypt", stdin="ben-pw\n")
        self.ctl("alias", "add", "team@pg.test", "ann@pg.test", "ben@pg.test")
        self.assertTrue(self.login_ok("ann@pg.test", "ann-pw-1"))
        self.assertTrue(self.login_ok("ben_pg.test", "ben-pw"))
        # stored lower-case, with the typed columns PostgreSQL has
        self.assertEqual(self.cluster.psql("SELECT local_part, domain, quota_bytes, active FROM users "
                                           "WHERE local_part = 'ann'"),
                         [["ann", "pg.test", "536870912", "1"]])

        self.ctl("user", "passwd", "ann@pg.test", "--scheme", "yescrypt", stdin="ann-pw-2\n")
        self.assertFalse(self.login_ok("ann@pg.test", "ann-pw-1"))
        self.assertTrue(self.login_ok("ann@pg.test", "ann-pw-2"))

        self.ctl("user", "disable", "ben@pg.test")
        self.assertFalse(self.login_ok("ben@pg.test", "ben-pw"))
        self.ctl("user", "enable", "ben@pg.test")
        self.assertTrue(self.login_ok("ben@pg.test", "ben-pw"))

        rc, out, err = self.ctl("lookup", "team@pg.test", "ann@pg.test")
        self.assertIn("ann_pg.test, ben_pg.test", out)
        self.assertIn("alias team@pg.test (rule 1", out)
        self.assertIn("<hidden CRYPT>", out)
        self.assertNotIn("$y$", out)

    def test_2_bad_input_changes_nothing(self):
        self.ctl("alias", "add", "l1@pg.test", "l2@pg.test", "--force")
        before = dump(self.cluster)
        for args, stdin, code in [
            (["user", "add", "ann@pg.test"], "pw\n", 3),
            (["user", "add", "x@nowhere.test"], "pw\n", 2),
            (["user", "add", "bad address"], "pw\n", 1),
            (["user", "add", "x@pg.test", "a-password"], "", 1),
            (["alias", "add", "l2@pg.test", "l1@pg.test"], None, 3),
            (["domain", "remove", "pg.test"], None, 3),
        ]:
            with self.subTest(args=args):
                rc, out, err = self.ctl(*args, stdin=stdin, expect=None)
                self.assertEqual(rc, code, out + err)
                self.assertEqual(dump(self.cluster), before)

    def test_3_database_down_is_a_temporary_failure(self):
        before = dump(self.cluster)
        self.cluster.stop()
        try:
            rc, out, err = self.ctl("user", "add", "cid@pg.test", "--no-password", expect=None)
            self.assertEqual(rc, 75, out + err)
            rc, out, err = self.ctl("user", "show", "ann@pg.test", expect=None)
            self.assertEqual(rc, 75, out + err)   # never "not found"
        finally:
            self.cluster.start()
        self.assertEqual(dump(self.cluster), before)
        self.ctl("user", "add", "cid@pg.test", "--no-password")


if __name__ == "__main__":
    unittest.main(verbosity=2)
