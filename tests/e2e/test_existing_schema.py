#!/usr/bin/env python3
"""An operator's existing database served unchanged (issue 6, acceptance): the two schemas of
tests/data/existing/ (one `users` table with a `%` catch-all row and user_domain delivery names;
`users`/`alias`/`domains` with `active` flags), each with its table-sqlite file and its
dovecot-sql.conf.ext given to maildictd as they are. A real Dovecot 2.3 logs the users in
(doveadm auth test and IMAP) through maildictd, and a real OpenSMTPD 6.8 with table-maildict
delivers to them over LMTP: to a user, to the catch-all, to a list alias. Unknown and inactive
recipients get 550. The database file ends with no table of maildict's.
"""
import os
import sqlite3
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

PASSWORD = "legacy-secret"
DATA = os.path.join(h.SOURCE_DIR, "tests", "data", "existing")
MISSING = h.smtpd_missing(h.SMTPD_68)


def bcrypt(password):
    r = subprocess.run([h.admin_path(), "hash", "--scheme", "bcrypt"], input=password + "\n",
                       capture_output=True, text=True, timeout=h.COMMAND_TIMEOUT)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


class ExistingSchema(h.MailFlow, h.DaemonsTestCase):
    """Subclasses set KIND (a folder of tests/data/existing)."""
    DAEMONS = ("smtpd", "dovecot", "maildictd")
    KIND = None

    @classmethod
    def setUpClass(cls):
        h.require_programs()
        cls.tmp = h.TempDir()
        cls.maildictd = cls.dovecot = cls.smtpd = None
        try:
            cls.vmail = cls.tmp.join("vmail")
            os.makedirs(cls.vmail)
            os.chown(cls.vmail, h.NOBODY_UID, h.NOGROUP_GID)
            cls.db = cls.tmp.join("legacy.db")
            src = os.path.join(DATA, cls.KIND)
            with open(os.path.join(src, "schema.sql")) as f:
                schema = f.read().replace("@HASH@", bcrypt(PASSWORD))
            with sqlite3.connect(cls.db) as c:
                c.executescript(schema)
            cls.tables_before = cls.tables()
            values = {"@DB@": cls.db, "@VMAIL@": cls.vmail, "@UID@": str(h.NOBODY_UID),
                      "@GID@": str(h.NOGROUP_GID)}
            files = {}
            for name in ("smtpd-table.conf", "dovecot-sql.conf.ext"):
                with open(os.path.join(src, name)) as f:
                    text = f.read()
                for k, v in values.items():
                    text = text.replace(k, v)
                files[name] = cls.tmp.join(name)
                with open(files[name], "w") as f:
                    f.write(text)
            # The database is named by the files; maildict.conf only points at them.
            cls.maildictd = h.start_maildictd(
                cls.tmp.path, db_path=cls.db, socket_mode="0660", socket_group="opensmtpd",
                database=None, smtpd_table_config=files["smtpd-table.conf"],
                dovecot_sql_config=files["dovecot-sql.conf.ext"])
            cls.dovecot = h.start_dovecot(cls.tmp.path, cls.maildictd.socket, idle_msecs=60000,
                                          imap=True, lmtp=True)
            cls.port = h.free_tcp_port()
            conf = h.shipped_smtpd_conf(cls.maildictd.conf_path, cls.dovecot.lmtp_socket,
                                        {25: cls.port})
            cls.smtpd = h.start_smtpd(cls.tmp.path, conf, h.SMTPD_68, ports=[cls.port],
                                      trace=("lookup",))
        except BaseException:
            cls._dump_logs()
            cls.tearDownClass()
            raise

    @classmethod
    def tables(cls):
        with sqlite3.connect(cls.db) as c:
            return sorted(r[0] for r in c.execute("SELECT name FROM sqlite_master"))

    def auth(self, login, password):
        rc, out, err = self.dovecot.doveadm("auth", "test", "-x", "rip=192.0.2.%d" % (abs(hash(login)) % 250 + 1),
                                            login, password)
        ok, fields = h.parse_auth_test(out + err)
        return rc, ok, fields

    def assert_login(self, login, user):
        rc, ok, fields = self.auth(login, PASSWORD)
        self.assertEqual((rc, ok), (0, True), "login %s: %r" % (login, fields))
        self.assertEqual(fields.get("user"), user)

    def assert_delivered(self, token, mailbox, user):
        maildir = os.path.join(self.vmail, mailbox, "Maildir")
        files = self.wait_delivered(maildir, token)
        self.assertEqual(len(files), 1, files)
        self.assertEqual(self.imap_count(user, PASSWORD, token), 1,
                         "IMAP login %s does not see message %s" % (user, token))

    def test_9_schema_unchanged(self):
        self.assertEqual(self.tables(), self.tables_before)


@unittest.skipIf(MISSING, MISSING)
class SingleTable(ExistingSchema):
    KIND = "single"

    def test_1_dovecot_login_either_spelling(self):
        self.assert_login("alice@single.example", "alice@single.example")
        self.assert_login("bert_single.example", "bert@single.example")
        rc, ok, _ = self.auth("alice@single.example", "wrong")
        self.assertNotEqual(rc, 0)
        self.assertFalse(ok)

    def test_2_delivery_to_a_user(self):
        t = self.send(["bert@single.example"])
        self.assert_delivered(t, "bert_single.example", "bert@single.example")

    def test_3_catch_all_row(self):
        t = self.send(["anyone-else@single.example"])
        self.assert_delivered(t, "alice_single.example", "alice@single.example")

    def test_4_other_domain_is_refused(self):
        code, msg = self.rcpt_reply("bert@other.example")
        self.assertEqual(code, 550, msg)


@unittest.skipIf(MISSING, MISSING)
class ThreeTables(ExistingSchema):
    KIND = "three"

    def test_1_dovecot_login_and_inactive_users(self):
        self.assert_login("carol@three.example", "carol@three.example")
        for login in ("old@three.example", "ghost@gone.example"):
            rc, ok, _ = self.auth(login, PASSWORD)
            self.assertFalse(ok, login)
            self.assertNotEqual(rc, 0, login)

    def test_2_list_alias_reaches_both(self):
        t = self.send(["team@three.example"])
        self.assert_delivered(t, "three.example/carol/", "carol@three.example")
        self.assert_delivered(t, "three.example/dave/", "dave@three.example")

    def test_3_inactive_alias_and_user_are_550(self):
        for rcpt in ("retired@three.example", "old@three.example", "ghost@gone.example"):
            code, msg = self.rcpt_reply(rcpt)
            self.assertEqual(code, 550, "RCPT TO:<%s> -> %d %r" % (rcpt, code, msg))


del ExistingSchema  # only the concrete classes run

if __name__ == "__main__":
    unittest.main(verbosity=2)
