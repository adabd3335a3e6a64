#!/usr/bin/env python3
"""maildictctl on PostgreSQL: the same typed changes as on SQLite (storage/directory_admin.cpp
over the PostgreSQL session), seen at once by a running maildictd with its cache on (LISTEN/
NOTIFY), through a real Dovecot 2.3 login (issue 6, part 1: both backends).

A private PostgreSQL 15 cluster (initdb as the unprivileged `postgres` account, UNIX socket in
the test directory, no TCP) starts empty; maildictd creates the schema. Then with maildictctl
only: a domain, a user and an alias; a login works at once; `user passwd` takes effect at once
(old refused, new accepted, the old one cached just before); lookup explains the rule; bad input
changes no row; with PostgreSQL stopped a change is a temporary failure (exit 75), never
"not found", and nothing is half-written once it is back.
"""
import os
import pwd
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

PG_BIN = "/usr/lib/postgresql/15/bin"


def postgres_missing():
    if not os.path.exists(os.path.join(PG_BIN, "initdb")):
        return "PostgreSQL 15 is not installed (%s/initdb)" % PG_BIN
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no 'postgres' account to run the test cluster as"
    if os.geteuid() != 0:
        return "needs root to run the cluster as the postgres account"
    return None


MISSING = postgres_missing()


class Cluster:
    """A throw-away PostgreSQL cluster owned by the postgres account."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory)
        shutil.chown(directory, "postgres")
        os.chmod(directory, 0o755)
        self.data = os.path.join(directory, "data")
        self.log_path = os.path.join(directory, "postgres.log")

    def _as_postgres(self, *argv):
        r = subprocess.run(["runuser", "-u", "postgres", "--"] + list(argv), capture_output=True,
                           text=True, timeout=h.COMMAND_TIMEOUT)
        if r.returncode != 0:
            raise AssertionError("%s -> %d: %s%s\n%s" % (argv[0], r.returncode, r.stdout, r.stderr,
                                                         h.tail(self.log_path)))
        return r.stdout

    def init(self):
        self._as_postgres(os.path.join(PG_BIN, "initdb"), "-D", self.data, "-A", "trust",
                          "-U", "postgres", "--no-sync")
        return self

    def start(self):
        self._as_postgres(os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.log_path,
                          "-w", "-o", "-k %s -c listen_addresses= -c fsync=off" % self.dir, "start")

    def stop(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._as_postgres(os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-w", "-m", "fast",
                              "stop")

    @property
    def uri(self):
        return "postgresql:host=%s dbname=postgres user=postgres" % self.dir

    def sql(self, query):
        r = subprocess.run(["psql", "-h", self.dir, "-U", "postgres", "-d", "postgres", "-XAtq",
                            "-v", "ON_ERROR_STOP=1", "-c", query],
                           capture_output=True, text=True, timeout=h.COMMAND_TIMEOUT)
        if r.returncode != 0:
            raise AssertionError("psql: %s" % r.stderr)
        return r.stdout

    def dump(self):
        """Every directory row, ordered: equal dumps mean nothing was written."""
        return "".join(self.sql("SELECT t::text FROM %s t ORDER BY 1" % table)
                       for table in ("domains", "users", "aliases", "sender_logins"))


@unittest.skipIf(MISSING, MISSING)
class MaildictctlPostgres(h.DaemonsTestCase):
    DAEMONS = ("dovecot", "maildictd")

    @classmethod
    def setUpClass(cls):
        h.require_programs()
        cls.tmp = h.TempDir()
        os.chmod(cls.tmp.path, 0o755)   # the postgres account must reach its directory
        cls.maildictd = cls.dovecot = cls.cluster = None
        try:
            cls.cluster = Cluster(cls.tmp.join("pg")).init()
            cls.cluster.start()
            cls.maildictd = h.start_maildictd(cls.tmp.path, db_path="unused",
                                              database=cls.cluster.uri, cache_entries="1000",
                                              cache_ttl="1h")
            cls.conf = cls.maildictd.conf_path
            cls.dovecot = h.start_dovecot(cls.tmp.path, cls.maildictd.socket, idle_msecs=60000)
        except BaseException:
            cls._dump_logs()
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            if cls.cluster is not None:
                try:
                    cls.cluster.stop()
                except AssertionError as e:
                    h.log("stopping PostgreSQL: %s" % e)

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
        self.assertEqual(self.cluster.sql("SELECT local_part, domain, quota_bytes, active FROM users "
                                          "WHERE local_part = 'ann'").strip(),
                         "ann|pg.test|536870912|1")

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
        before = self.cluster.dump()
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
                self.assertEqual(self.cluster.dump(), before)

    def test_3_database_down_is_a_temporary_failure(self):
        before = self.cluster.dump()
        self.cluster.stop()
        try:
            rc, out, err = self.ctl("user", "add", "cid@pg.test", "--no-password", expect=None)
            self.assertEqual(rc, 75, out + err)
            rc, out, err = self.ctl("user", "show", "ann@pg.test", expect=None)
            self.assertEqual(rc, 75, out + err)   # never "not found"
        finally:
            self.cluster.start()
        self.assertEqual(self.cluster.dump(), before)
        self.ctl("user", "add", "cid@pg.test", "--no-password")


if __name__ == "__main__":
    unittest.main(verbosity=2)
