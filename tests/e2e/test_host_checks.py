#!/usr/bin/env python3
"""`maildictctl check` and `maildictd --check-config` against this host (issue 15, item 5).

With a real maildictd (socket 0660, group opensmtpd, as shipped):
  * a correct configuration: every check passes, exit 0, and the smtpd line says the tables
    (user opensmtpd, its primary group only) can connect;
  * each misconfiguration is one FAIL line naming the fix, with a non-zero exit: a missing
    run-as user, default_uid and default_gid, a socket group the tables are not in, a database
    directory maildictd's user cannot write, maildictd stopped (exit 75);
  * `maildictd --check-config` refuses a user, socket_group or default_uid that does not exist
    (it used to say "valid").
Runs as root (CI does); about 2 s.
"""
import os
import pwd
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

MISSING_USER = "maildict-e2e-nosuchuser"


def has_account(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class HostChecks(h.DaemonsTestCase):
    DAEMONS = ("maildictd",)

    @classmethod
    def setUpClass(cls):
        h.require_programs()
        assert has_account("opensmtpd"), "no opensmtpd account: OpenSMTPD is not installed"
        cls.tmp = h.TempDir()
        cls.maildictd = None
        try:
            cls.db = h.make_demo_db(cls.tmp.path)
            cls.maildictd = h.start_maildictd(cls.tmp.path, db_path=cls.db, socket_mode="0660",
                                              socket_group="opensmtpd")
        except BaseException:
            cls._dump_logs()
            cls.tearDownClass()
            raise

    def conf_with(self, name, **changes):
        conf = dict(self.maildictd.conf)
        conf.update(changes)
        path = self.tmp.join(name + ".conf")
        with open(path, "w") as f:
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))
        os.chmod(path, 0o644)
        return path

    def check(self, conf_path):
        rc, out, err = h.maildictctl(conf_path, "check")
        return rc, out, err

    @staticmethod
    def fails(out):
        return [l for l in out.splitlines() if l.startswith("FAIL")]

    def test_1_a_correct_host_passes(self):
        rc, out, err = self.check(self.maildictd.conf_path)
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(self.fails(out), [], out)
        self.assertRegex(out, r"ok +smtpd's tables \(user opensmtpd, group \S+ only\) can connect")
        self.assertRegex(out, r"ok +database %s: writable" % self.db)

    def test_2_missing_accounts(self):
        path = self.conf_with("accounts", user=MISSING_USER, default_uid=MISSING_USER,
                              default_gid=MISSING_USER)
        rc, out, err = self.check(path)
        self.assertEqual(rc, 78, out + err)
        text = "\n".join(self.fails(out))
        self.assertIn("user: no system user '%s'; create it: adduser --system" % MISSING_USER, text)
        self.assertIn("default_uid: no system user '%s'" % MISSING_USER, text)
        self.assertIn("default_gid: no system group '%s'" % MISSING_USER, text)
        # and maildictd itself no longer calls it valid
        rc, out, err = h.check_config(path)
        self.assertNotEqual(rc, 0, out + err)
        self.assertNotIn("valid", out)
        for setting in ("user", "default_uid", "default_gid"):
            self.assertIn("%s: no system " % setting, err)
        rc, out, err = h.check_config(self.conf_with("group", socket_group=MISSING_USER))
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn("socket_group: no group '%s'" % MISSING_USER, err)
        rc, out, err = h.check_config(self.maildictd.conf_path)
        self.assertEqual(rc, 0, out + err)

    def test_3_database_the_run_as_user_cannot_write(self):
        # the demo database lives in the test directory, owned by root: nobody cannot write
        path = self.conf_with("nobody", user="nobody")
        rc, out, err = self.check(path)
        self.assertEqual(rc, 78, out + err)
        line = [l for l in self.fails(out) if "database" in l]
        self.assertEqual(len(line), 1, out)
        self.assertIn("maildictd's user nobody cannot write", line[0])
        self.assertIn("fix: chown nobody:", line[0])

    def test_4_socket_group_the_tables_are_not_in(self):
        md = type(self).maildictd
        md.stop()
        type(self).maildictd = None
        conf = dict(md.conf)
        conf["socket_group"] = "nogroup"
        type(self).maildictd = h.Maildictd(self.tmp.path, conf, name="maildictd-nogroup").start()
        try:
            rc, out, err = self.check(self.maildictd.conf_path)
            self.assertEqual(rc, 78, out + err)
            fails = self.fails(out)
            self.assertEqual(len(fails), 1, out)
            self.assertIn("smtpd's tables (user opensmtpd", fails[0])
            self.assertIn("permission denied; fix: socket_group = ", fails[0])
            self.assertRegex(out, r"ok +Dovecot 2\.3's auth worker \(user root")
        finally:
            self.maildictd.stop()
            type(self).maildictd = None
            type(self).maildictd = h.Maildictd(self.tmp.path, md.conf, name="maildictd").start()

    def test_5_maildictd_stopped(self):
        md = type(self).maildictd
        md.stop()
        type(self).maildictd = None
        try:
            rc, out, err = self.check(md.conf_path)
            self.assertEqual(rc, 75, out + err)
            fails = self.fails(out)
            self.assertEqual(len(fails), 2, out)      # smtpd's tables and Dovecot's worker
            for line in fails:
                self.assertIn("is maildictd running?", line)
        finally:
            type(self).maildictd = h.Maildictd(self.tmp.path, md.conf, name="maildictd").start()


if __name__ == "__main__":
    unittest.main(verbosity=2)
