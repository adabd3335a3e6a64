#!/usr/bin/env python3
"""Configuration errors found at start, not at the first lookup (issue 12), with the real
maildictd, maildictctl and a SQLite directory (no Dovecot, no smtpd; about 5 s):

  * an operator's query with a syntax error (a table-sqlite file, a dovecot-sql file, a
    `sql_<question>` setting): `maildictd --check-config` exits 1 naming the file, line and
    setting; maildictd refuses to start with the same message;
  * a database that is not there yet (a SQLite path with a stray trailing quote, PostgreSQL not
    up): --check-config warns, naming where the path came from, and exits 0; maildictd starts,
    its start-up line names that origin, and lookups answer F;
  * `maildictctl lookup` blames a missing daemon only when no daemon answered.
"""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def run_maildictd(conf_path, timeout=60):
    """maildictd in the foreground, expected to exit by itself -> (rc, output)."""
    r = subprocess.run([h.maildictd_path(), "-c", conf_path], capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


class ConfigCheck(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        h.require_programs()
        cls.tmp = h.TempDir(prefix="maildict-confcheck-")
        cls.db = h.make_demo_db(cls.tmp.path)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def write(self, name, text):
        path = self.tmp.join(name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def conf(self, name, **settings):
        settings.setdefault("database", None)
        conf = h.maildict_config(self.tmp.path, self.db, socket=self.tmp.join(name + ".sock"), **settings)
        return self.write(name + ".conf", "".join("%s = %s\n" % kv for kv in conf.items()))

    def assert_refused(self, conf_path, where, what):
        rc, out, err = h.check_config(conf_path)
        self.assertEqual(rc, 1, out + err)
        self.assertIn(where, err)
        self.assertIn(what, err)
        rc, log = run_maildictd(conf_path)
        self.assertEqual(rc, 1, log)
        self.assertIn(where, log)
        self.assertIn(what, log)
        self.assertIn("not starting", log)
        self.assertFalse(os.path.exists(conf_path.replace(".conf", ".sock")), "the socket is left behind")

    def test_smtpd_table_query_with_a_syntax_error(self):
        table = self.write("table-bad.conf", "# table-sqlite\ndbpath %s\n"
                           "query_domain SELECT domain FROM domains WHERE domain = ?\n"
                           "query_alias SELEC destination FROM aliases WHERE local_part = ?\n" % self.db)
        self.assert_refused(self.conf("bad-table", smtpd_table_config=table),
                            table + ":4 (query_alias)", "syntax error")

    def test_dovecot_sql_query_with_an_unknown_column(self):
        ext = self.write("dovecot-bad.ext", "driver = sqlite\nconnect = %s\n"
                         "password_query = SELECT pasword AS password FROM users \\\n"
                         "  WHERE local_part = '%%n' AND domain = '%%d'\n" % self.db)
        self.assert_refused(self.conf("bad-dovecot", dovecot_sql_config=ext),
                            ext + ":3 (password_query)", "no such column: pasword")

    def test_sql_setting_with_a_syntax_error(self):
        conf = self.conf("bad-sql", database="sqlite:" + self.db,
                         sql_passdb="SELECT password FROM users WHERE local_part = $1 AND AND domain = $2")
        with open(conf) as f:
            line = [i + 1 for i, l in enumerate(f) if l.startswith("sql_passdb")][0]
        self.assert_refused(conf, "%s:%d (sql_passdb)" % (conf, line), "syntax error")

    def test_good_queries_pass(self):
        table = self.write("table-good.conf", "dbpath %s\nquery_domain SELECT domain FROM domains WHERE domain = ?\n"
                           % self.db)
        rc, out, err = h.check_config(self.conf("good", smtpd_table_config=table))
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(err, "")
        self.assertIn("from %s:1 (dbpath)" % table, out)

    def test_database_not_there_yet_is_a_warning_and_maildictd_starts(self):
        # A stray trailing quote: the path names a file that does not exist.
        table = self.write("table-stray.conf", "dbpath %s\"\nquery_domain SELECT domain FROM domains WHERE domain = ?\n"
                           % self.db)
        conf = self.conf("stray", smtpd_table_config=table)
        rc, out, err = h.check_config(conf)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("warning", err)
        self.assertIn('%s"' % self.db, err)
        self.assertIn("from %s:1 (dbpath)" % table, err)
        d = h.Maildictd(self.tmp.path, h.maildict_config(self.tmp.path, "sqlite:/unused",
                                                         socket=self.tmp.join("stray.sock"),
                                                         smtpd_table_config=table, database=None),
                        name="stray")
        d.start()
        try:
            with h.DictClient(d.socket, timeout=20) as c:
                c.hello(3, 0)
                self.assertTrue(c.lookup(b"shared/smtpd/domain/example.org").startswith(b"F"))
            # maildictd answered F: maildictctl says so and does not blame a missing daemon.
            rc, out, err = h.maildictctl(d.conf_path, "lookup", "example.org")
            self.assertEqual(rc, 75, out + err)
            self.assertIn("TEMPORARY FAILURE (maildictd: ", out)
            self.assertIn("answered with a temporary failure by maildictd", err)
            self.assertNotIn("is maildictd running", err)
        finally:
            d.stop()
        log = d.log_text()
        self.assertIn("starting: directory sqlite:%s\" (from %s:1 (dbpath))" % (self.db, table), log)
        self.assertIn("does not exist", log)
        # No daemon at all: now maildictctl asks whether it runs.
        rc, out, err = h.maildictctl(d.conf_path, "lookup", "example.org")
        self.assertEqual(rc, 75, out + err)
        self.assertIn("got no answer from maildictd (is maildictd running on", err)

    def test_postgresql_not_up_is_a_warning(self):
        conf = self.conf("pg-down", database="postgresql:host=%s dbname=maildict connect_timeout=5"
                         % self.tmp.join("no-postgres-here"),
                         sql_passdb="SELECT password FROM users WHERE local_part = $1 AND domain = $2")
        rc, out, err = h.check_config(conf)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("warning: the database is not available", err)
        self.assertIn("(database)", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
