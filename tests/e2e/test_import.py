#!/usr/bin/env python3
"""`maildictctl import` end to end: a PostfixAdmin database imported into an empty directory
answers real Dovecot 2.3 logins through maildictd.

The source is an SQLite file in PostfixAdmin's schema (domain, alias_domain, mailbox, alias),
with a PHP-style $2y$ bcrypt hash, a {SHA512-CRYPT} hash, a disabled mailbox, the self-alias
PostfixAdmin keeps per mailbox and a list alias. The import runs as
`maildictctl -c maildict.conf import postfixadmin --from SOURCE`, then:
  * a dry run writes nothing; the import adds the rows; a second run changes nothing;
  * `doveadm auth test` logs alice ($2y$) and bob ({SHA512-CRYPT}, spelled bob_example.org) in,
    refuses a wrong password and the disabled carol, none of them as a temporary failure;
  * bob's password changed in PostfixAdmin and imported again (while maildictd runs, cache on)
    takes effect at once: the new password logs in, the old one is refused.
maildictd's log must not contain a password or a hash.
"""
import os
import sqlite3
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

TMP = None
MAILDICTD = None
DOVECOT = None
SOURCE = None
DIRECTORY = None
_rip = [0]


CONF = None  # maildict.conf naming the directory, as maildictd and maildictctl read it


def hash_password(password, scheme):
    r = subprocess.run([h.admin_path(), "hash", "--scheme", scheme], input=password + "\n",
                       capture_output=True, text=True, timeout=h.COMMAND_TIMEOUT)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def run_import(*args):
    return h.maildictctl(CONF, "import", "postfixadmin", "--from", SOURCE, *args)


def make_postfixadmin(path):
    alice = hash_password("alice-secret", "bcrypt").replace("$2b$", "$2y$", 1)  # as PHP writes it
    bob = "{SHA512-CRYPT}" + hash_password("bob-secret", "sha512-crypt")
    carol = hash_password("carol-secret", "bcrypt")
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE domain (domain TEXT PRIMARY KEY, description TEXT, transport TEXT, active INTEGER);
        CREATE TABLE alias_domain (alias_domain TEXT PRIMARY KEY, target_domain TEXT, active INTEGER);
        CREATE TABLE mailbox (username TEXT PRIMARY KEY, password TEXT, name TEXT, maildir TEXT,
                              quota INTEGER, local_part TEXT, domain TEXT, active INTEGER);
        CREATE TABLE alias (address TEXT PRIMARY KEY, goto TEXT, domain TEXT, active INTEGER);
        INSERT INTO domain VALUES ('ALL', '', '', 1), ('example.org', '', 'virtual', 1),
                                  ('example.com', '', 'virtual', 1);
        INSERT INTO alias_domain VALUES ('example.com', 'example.org', 1);
    """)
    mailbox = "INSERT INTO mailbox VALUES (?, ?, '', '', ?, '', 'example.org', ?)"
    db.execute(mailbox, ("alice@example.org", alice, 1073741824, 1))
    db.execute(mailbox, ("Bob@Example.org", bob, 0, 1))
    db.execute(mailbox, ("carol@example.org", carol, 0, 0))
    alias = "INSERT INTO alias VALUES (?, ?, 'example.org', 1)"
    for user in ("alice", "bob", "carol"):
        db.execute(alias, ("%s@example.org" % user, "%s@example.org" % user))
    db.execute(alias, ("team@example.org", "alice@example.org,bob@example.org"))
    db.commit()
    db.close()


def setUpModule():
    global TMP, MAILDICTD, DOVECOT, SOURCE, DIRECTORY, CONF
    h.require_programs()
    if not os.access(h.maildictctl_path(), os.X_OK):
        raise SystemExit("e2e: missing program %s" % h.maildictctl_path())
    TMP = h.TempDir()
    SOURCE = TMP.join("postfixadmin.db")
    DIRECTORY = TMP.join("directory.db")
    make_postfixadmin(SOURCE)
    # The configuration maildictd will run with (written now: the first import runs before
    # maildictd starts, on a directory that does not exist yet).
    CONF = TMP.join("maildictd.conf")
    with open(CONF, "w") as f:
        for k, v in h.maildict_config(TMP.path, DIRECTORY).items():
            f.write("%s = %s\n" % (k, v))


def tearDownModule():
    try:
        if DOVECOT is not None:
            DOVECOT.stop()
        if MAILDICTD is not None:
            MAILDICTD.stop()  # exit code 0 and no secrets in the log, or this fails
    finally:
        if TMP is not None:
            TMP.cleanup()


def count(table):
    db = sqlite3.connect(DIRECTORY)
    try:
        return db.execute("SELECT count(*) FROM %s" % table).fetchone()[0]
    finally:
        db.close()


class ImportThenLogin(unittest.TestCase):
    def auth(self, user, password):
        _rip[0] += 1
        rc, out, err = DOVECOT.doveadm("auth", "test", "-x", "service=imap",
                                       "-x", "rip=127.0.9.%d" % _rip[0], user, password)
        ok, fields = h.parse_auth_test(out)
        return rc, ok, fields, out + err

    def assert_login(self, user, password, canonical):
        rc, ok, fields, text = self.auth(user, password)
        self.assertEqual(rc, 0, text)
        self.assertTrue(ok, text)
        self.assertEqual(fields.get("user"), canonical, text)

    def assert_refused(self, user, password):
        rc, ok, fields, text = self.auth(user, password)
        self.assertNotEqual(rc, 0, text)
        self.assertIs(ok, False, text)
        self.assertNotEqual(rc, h.EX_TEMPFAIL, text)
        self.assertNotIn("temp_fail", text)

    def test_import_and_login(self):
        global MAILDICTD, DOVECOT
        rc, out, err = run_import("--dry-run")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("add       user         alice@example.org", out)
        self.assertIn("7 would be added", out)
        self.assertEqual(count("users"), 0)

        rc, out, err = run_import()
        self.assertEqual(rc, 0, out + err)
        self.assertIn("7 added, 0 updated", out)
        self.assertEqual(count("users"), 3)
        self.assertNotIn("$2", out)
        self.assertNotIn("$6$", out)

        MAILDICTD = h.start_maildictd(TMP.path, db_path=DIRECTORY)
        DOVECOT = h.start_dovecot(TMP.path, MAILDICTD.socket, idle_msecs=h.SHIPPED_IDLE_MSECS)

        self.assert_login("alice@example.org", "alice-secret", "alice@example.org")
        self.assert_login("bob_example.org", "bob-secret", "bob@example.org")
        self.assert_refused("alice@example.org", "wrong-secret")
        self.assert_refused("carol@example.org", "carol-secret")  # disabled in PostfixAdmin

        rc, out, err = run_import()
        self.assertEqual(rc, 0, out + err)
        self.assertIn("0 added, 0 updated, 7 unchanged", out)

        # PostfixAdmin changes bob's password; importing again brings it over, and maildictd
        # (cache on) answers the new one at once.
        db = sqlite3.connect(SOURCE)
        db.execute("UPDATE mailbox SET password = ? WHERE username = 'Bob@Example.org'",
                   ("{SHA512-CRYPT}" + hash_password("bob-new-secret", "sha512-crypt"),))
        db.commit()
        db.close()
        rc, out, err = run_import()
        self.assertEqual(rc, 0, out + err)
        self.assertIn("update    user         bob@example.org  (password)", out)
        self.assert_login("bob@example.org", "bob-new-secret", "bob@example.org")
        self.assert_refused("bob@example.org", "bob-secret")


if __name__ == "__main__":
    unittest.main(verbosity=2)
