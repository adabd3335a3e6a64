#!/usr/bin/env python3
"""The Lua route: packaging/dovecot/maildict-auth.lua against maildictd and the demo directory,
loaded by the real Dovecot 2.4.1 (Debian 13, in the trixie tree, with the shipped
10-maildict-2.4.conf) and by the real Dovecot 2.3.19 (this host, with the shipped
10-maildict-lua.conf): only paths are changed. The same assertions for both:
  * doveadm auth test succeeds for john (bcrypt) and jane (SHA512-CRYPT), fails (not a
    temporary failure) for a wrong password; john_example.org logs in as john@example.org;
  * john@example.org and john_example.org log in over IMAP and open the same mailbox (a message
    APPENDed under one spelling is found under the other);
  * doveadm user shows uid/gid/home/quota_rule (and mail_driver/mail_path on 2.4, which ignores
    2.3's `mail` field), `doveadm user '*'` lists exactly the active users;
  * a disabled user (eve, and ghost of a disabled domain) and an unknown user are unknown;
  * maildictd stopped, maildictd not answering (SIGSTOP, past the script's timeout), and the
    database unreadable: code=temp_fail / exit 75, never an unknown user; after each, logins work
    again (the script's kept-open connection reconnects to a restarted maildictd).
maildictd's socket is mode 0600 (root's): the lookups come from Dovecot's auth workers (root),
which is what the shipped configuration files say.
On 2.4 also Dovecot's own dict client (doveadm dict get/iter, major 4 handshake with an empty
user) reads maildictd, and a key maildict does not serve fails with maildict's message.
"""
import imaplib
import os
import shutil
import signal
import sqlite3
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import trixie as tx  # noqa: E402

NOBODY = 65534   # nobody/nogroup: the same numbers on Debian 12 and in the Debian 13 tree
JOHN = "john@example.org"
JANE = "jane@example.org"


def setUpModule():
    h.require_programs()


class LuaRouteBase:
    """Subclasses set up cls.maildictd, cls.dovecot, cls.home_root (as Dovecot sees it),
    cls.doveadm(*args) and cls.conf (maildictd's settings)."""

    @classmethod
    def tearDownClass(cls):
        try:
            if getattr(cls, "dovecot", None) is not None:
                cls.dovecot.stop()
        finally:
            if getattr(cls, "maildictd", None) is not None:
                cls.maildictd.stop()

    @classmethod
    def start_maildictd(cls, **overrides):
        # a fresh Maildictd on the same settings, log and socket (restarts in the outage tests)
        conf = dict(cls.conf)
        conf.update(overrides)
        cls.maildictd = h.Maildictd(cls.tmp.path, conf).start()

    def setUp(self):
        self.assertTrue(self.maildictd.alive(), h.tail(self.maildictd.log_path))

    # ---- helpers ----

    def auth_test(self, user, password):
        rc, out, err = self.doveadm("auth", "test", "-x", "service=imap", user, password)
        ok, fields = h.parse_auth_test(out)
        return rc, ok, fields, out + err

    def assert_login(self, login, password, canonical):
        rc, ok, fields, text = self.auth_test(login, password)
        self.assertEqual(rc, 0, text)
        self.assertIs(ok, True, text)
        self.assertEqual(fields.get("user"), canonical, text)
        self.assertNotIn("code", fields, text)

    def assert_refused(self, login, password):
        rc, ok, fields, text = self.auth_test(login, password)
        self.assertEqual(rc, 77, text)   # EX_NOPERM: a plain failure
        self.assertIs(ok, False, text)
        self.assertNotIn("code", fields, text)

    def assert_temp_fail(self, login, password):
        rc, ok, fields, text = self.auth_test(login, password)
        self.assertNotEqual(rc, 0, text)
        self.assertIsNot(ok, True, text)
        # 2.3 reports "auth failed" + code=temp_fail (rc 77), 2.4 "internal auth failure"
        # (rc 75) + code=temp_fail; both carry the code and neither says the user is unknown
        self.assertEqual(fields.get("code"), "temp_fail", text)
        self.assertNotIn("unknown", text.lower())

    def user_fields(self, name):
        rc, out, err = self.doveadm("user", name)
        self.assertEqual(rc, 0, "doveadm user %s: rc %d\n%s%s" % (name, rc, out, err))
        return h.parse_doveadm_user(out)

    def assert_no_such_user(self, name):
        rc, out, err = self.doveadm("user", name)
        self.assertEqual(rc, h.EX_NOUSER, out + err)
        self.assertIn("user %s doesn't exist" % name, out + err)

    def assert_userdb_temp_fail(self, name):
        rc, out, err = self.doveadm("user", name)
        self.assertEqual(rc, h.EX_TEMPFAIL, out + err)
        self.assertNotIn("doesn't exist", out + err)

    def list_users(self):
        rc, out, err = self.doveadm("user", "*")
        return rc, sorted(l.strip() for l in out.splitlines() if l.strip()), out + err

    def assert_all_works(self):
        self.assert_login(JOHN, h.DEMO_PASSWORDS[JOHN], JOHN)
        self.assertEqual(self.user_fields(JOHN).get("home"),
                         self.home_root + "/example.org/john")
        rc, users, text = self.list_users()
        self.assertEqual((rc, users), (0, sorted(h.ACTIVE_USERS)), text)

    def assert_all_temp_fail(self):
        self.assert_temp_fail(JOHN, h.DEMO_PASSWORDS[JOHN])
        self.assert_temp_fail("nosuch@example.org", "x")
        self.assert_userdb_temp_fail(JOHN)
        self.assert_userdb_temp_fail("nosuch@example.org")
        rc, users, text = self.list_users()
        self.assertEqual(rc, h.EX_TEMPFAIL, text)   # not an empty list

    # ---- passdb ----

    def test_bcrypt_and_sha512_crypt_logins(self):
        self.assert_login(JOHN, h.DEMO_PASSWORDS[JOHN], JOHN)   # $2b$ bcrypt
        self.assert_login(JANE, h.DEMO_PASSWORDS[JANE], JANE)   # $6$ SHA512-CRYPT

    def test_connection_is_kept_open(self):
        # one connection per auth worker, reused: not one per lookup
        for _ in range(3):
            self.assert_login(JOHN, h.DEMO_PASSWORDS[JOHN], JOHN)
        self.assertGreaterEqual(h.unix_connections(self.maildictd.socket), 1)

    def test_wrong_password(self):
        self.assert_refused(JOHN, "not-" + h.DEMO_PASSWORDS[JOHN])
        self.assert_refused(JANE, h.DEMO_PASSWORDS[JOHN])

    def test_user_domain_spelling(self):
        self.assert_login("john_example.org", h.DEMO_PASSWORDS[JOHN], JOHN)
        self.assert_login("john_doe_example.org", h.DEMO_PASSWORDS["john_doe@example.org"],
                          "john_doe@example.org")
        self.assert_login("JOHN@Example.ORG", h.DEMO_PASSWORDS[JOHN], JOHN)   # lowercased

    def test_disabled_and_unknown_users_are_unknown(self):
        self.assert_refused("eve@example.org", h.DEMO_PASSWORDS["eve@example.org"])
        self.assert_refused("ghost@disabled.example", h.DEMO_PASSWORDS["ghost@disabled.example"])
        self.assert_refused("nosuch@example.org", "whatever")
        self.assert_no_such_user("eve@example.org")
        self.assert_no_such_user("ghost@disabled.example")
        self.assert_no_such_user("nosuch@example.org")

    def test_user_without_password_cannot_log_in(self):
        self.assert_refused("nopw@example.net", "anything")
        self.assertEqual(self.user_fields("nopw@example.net").get("home"),
                         self.home_root + "/example.net/nopw")

    # ---- userdb ----

    def test_userdb_fields(self):
        f = self.user_fields(JOHN)
        home = self.home_root + "/example.org/john"
        self.assertEqual(f.get("uid"), str(NOBODY), f)
        self.assertEqual(f.get("gid"), str(NOBODY), f)
        self.assertEqual(f.get("home"), home, f)
        self.assertEqual(f.get("quota_rule"), h.JOHN_QUOTA_RULE, f)
        self.check_mail_fields(f, home, "Maildir")
        b = self.user_fields("bob@example.net")
        self.assertEqual((b.get("uid"), b.get("gid"), b.get("home")),
                         (h.BOB["uid"], h.BOB["gid"], h.BOB["home"]), b)
        self.check_mail_fields(b, h.BOB["home"], "Mail")
        # the other spelling reaches the same row
        self.assertEqual(self.user_fields("john_example.org").get("home"), home)

    def test_values_that_need_escaping_arrive_intact(self):
        # JSON escapes (quote, backslash), UTF-8 and a TAB-free but spaced path survive
        # maildict's JSON writer, the dict protocol's escaping and the script's decoder
        home = '/var/vmail/odd "q" \\ caf\u00e9 x'
        db = sqlite3.connect(self.conf["database"].split(":", 1)[1], timeout=30)
        try:
            with db:
                db.execute("INSERT INTO users (local_part, domain, home, uid, gid, active) "
                           "VALUES ('odd', 'example.org', ?, 4321, 4321, 1)", (home,))
            f = self.user_fields("odd@example.org")
            self.assertEqual(f.get("home"), home, f)
            self.assertEqual((f.get("uid"), f.get("gid")), ("4321", "4321"), f)
        finally:
            with db:
                db.execute("DELETE FROM users WHERE local_part = 'odd' AND domain = 'example.org'")
            db.close()

    def test_iteration_lists_exactly_the_active_users(self):
        rc, users, text = self.list_users()
        self.assertEqual(rc, 0, text)
        self.assertEqual(users, sorted(h.ACTIVE_USERS), text)

    # ---- Dovecot 2.4's own dict client bytes (captured from 2.4.1) ----

    def test_major4_handshake_in_separate_writes(self):
        with h.DictClient(self.maildictd.socket) as c:
            c.send(b"H4\t0\t0\t\tauthdict\n")   # the handshake alone, as 2.4 sometimes sends it
            time.sleep(0.2)
            c.send(b"Lshared/passdb/jane@example.org")
            time.sleep(0.1)
            c.send(b"\t\n")
            fields, aid = c.read_reply()
            self.assertIsNotNone(aid)   # major 4 gets async ids
            self.assertTrue(fields[0].startswith(b"O{"), fields)
            self.assertIn(b'"user":"jane@example.org"', fields[0])
            # a key maildict does not serve fails loudly, it is not "not found"
            c.send(b"Lshared/quota/example.org/john\tjohn@example.org\n")
            fields, _ = c.read_reply()
            self.assertTrue(fields[0].startswith(b"F"), fields)
            self.assertIn(b"unmapped key", fields[0])
            # user iteration with 2.4's empty user field
            c.send(b"I0\t0\tshared/userdb/\t\n")
            first = c.read_line()
            self.assertTrue(first.startswith(b"*"), first)
            prefix = b"+" + first[1:] + b"\t"
            users = set()
            while True:
                line = c.read_line()
                self.assertTrue(line.startswith(prefix), line)
                rest = line[len(prefix):]
                if not rest:
                    break
                users.add(h.unescape(rest[1:].split(b"\t")[0]).decode())
            self.assertEqual(users, {"shared/userdb/" + u for u in h.ACTIVE_USERS})

    # ---- IMAP ----

    def imap(self, login):
        m = imaplib.IMAP4("127.0.0.1", self.dovecot.imap_port, timeout=60)
        typ, data = m.login(login, h.DEMO_PASSWORDS[JOHN])
        self.assertEqual(typ, "OK", data)
        return m

    def test_both_spellings_open_the_same_mailbox(self):
        token = "lua-%d-%d" % (os.getpid(), time.monotonic_ns())
        m = self.imap(JOHN)
        msg = ("From: a@example.net\r\nTo: %s\r\nSubject: %s\r\n\r\nhello\r\n" % (JOHN, token))
        typ, data = m.append("INBOX", None, None, msg.encode())
        self.assertEqual(typ, "OK", data)
        m.logout()
        m = self.imap("john_example.org")
        typ, data = m.select("INBOX")
        self.assertEqual(typ, "OK", data)
        typ, data = m.search(None, "SUBJECT", '"%s"' % token)
        self.assertEqual(typ, "OK", data)
        self.assertEqual(len(data[0].split()), 1, data)
        m.logout()
        with self.assertRaises(imaplib.IMAP4.error):
            m = imaplib.IMAP4("127.0.0.1", self.dovecot.imap_port, timeout=60)
            try:
                m.login("john_example.org", "wrong")
            finally:
                m.shutdown()

    # ---- outages: temporary failures, never "unknown user" ----

    def test_zz_outages_are_temporary_failures(self):
        self.assert_all_works()   # also opens the auth workers' kept connections

        # 1. maildictd stopped: the kept connection is gone, a new one is refused
        self.maildictd.stop()
        try:
            self.assert_all_temp_fail()
        finally:
            self.start_maildictd()
        self.assert_all_works()

        # 2. maildictd hangs: the script gives up after its timeout (2 s)
        os.kill(self.maildictd.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            self.assert_temp_fail(JOHN, h.DEMO_PASSWORDS[JOHN])
            self.assertGreaterEqual(time.monotonic() - t0, 1.5)
            self.assert_userdb_temp_fail(JOHN)
        finally:
            os.kill(self.maildictd.pid, signal.SIGCONT)
        self.assert_all_works()

        # 3. the database cannot be read: maildictd answers F
        db = self.maildictd.conf["database"].split(":", 1)[1]
        self.maildictd.stop()
        os.chmod(db, 0)
        try:
            self.start_maildictd(user="nobody")
            self.assert_all_temp_fail()
        finally:
            self.maildictd.stop()
            os.chmod(db, 0o600)
            self.start_maildictd()
        self.assert_all_works()


class Dovecot24Lua(LuaRouteBase, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        tree = tx.require_tree()
        cls.tmp = h.TempDir()
        priv = tree.private_dir("md")
        vmail = os.path.join(priv, "vmail")
        os.makedirs(vmail)
        os.chown(vmail, NOBODY, NOBODY)
        cls.home_root = tree.inside(vmail)
        db = h.make_demo_db(cls.tmp.path)
        cls.conf = h.maildict_config(cls.tmp.path, db,
                                     socket=tree.check_socket_path(os.path.join(priv, "d.sock")),
                                     socket_mode="0600", default_uid=NOBODY, default_gid=NOBODY,
                                     default_home=cls.home_root + "/%d/%n")
        cls.maildictd = h.Maildictd(cls.tmp.path, cls.conf).start()
        extra = "\n".join([
            # Dovecot's own dict client, for the handshake test below
            "dict proxy {",
            "  name = maildict",
            "  socket_path = %s" % tree.inside(cls.maildictd.socket),
            "}",
        ])
        cls.dovecot = tx.start_dovecot24(tree, cls.maildictd.socket, imap=True, extra=extra)
        cls.doveadm = staticmethod(cls.dovecot.doveadm)

    def check_mail_fields(self, f, home, maildir):
        # 2.4 ignores `mail`: the script gives it mail_driver and mail_path, ~ expanded
        self.assertNotIn("mail", f)
        self.assertEqual(f.get("mail_driver"), "maildir", f)
        self.assertEqual(f.get("mail_path"), home + "/" + maildir, f)
        # INBOX is the Maildir itself, as in 2.3, whatever dovecot.conf's mail_inbox_path says
        self.assertEqual(f.get("mail_inbox_path"), home + "/" + maildir, f)

    def test_dovecot24_dict_client(self):
        rc, out, err = self.doveadm("dict", "get", "", "shared/passdb/" + JOHN)
        self.assertEqual(rc, 0, out + err)
        self.assertIn('"user":"%s"' % JOHN, out)
        self.assertIn("{BLF-CRYPT}", out)
        rc, out, err = self.doveadm("dict", "get", "", "shared/passdb/nosuch@example.org")
        self.assertNotIn("BLF-CRYPT", out)
        rc, out, err = self.doveadm("dict", "iter", "", "shared/userdb/")
        self.assertEqual(rc, 0, out + err)
        for user in h.ACTIVE_USERS:
            self.assertIn("shared/userdb/" + user, out)
        # a key maildict does not serve: F with maildict's own message, not "not found"
        rc, out, err = self.doveadm("dict", "get", "", "shared/quota/example.org/john")
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn("unmapped key", out + err)


class Dovecot23Lua(LuaRouteBase, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        vmail = cls.tmp.join("vmail")
        os.makedirs(vmail)
        os.chown(vmail, NOBODY, NOBODY)
        cls.home_root = vmail
        db = h.make_demo_db(cls.tmp.path)
        cls.conf = h.maildict_config(cls.tmp.path, db, socket_mode="0600", default_uid=NOBODY,
                                     default_gid=NOBODY, default_home=vmail + "/%d/%n")
        cls.maildictd = h.Maildictd(cls.tmp.path, cls.conf).start()
        lua = cls.tmp.join("maildict-auth.lua")
        shutil.copy(os.path.join(h.PACKAGING_DOVECOT, "maildict-auth.lua"), lua)
        snippet_path = cls.tmp.join("10-maildict-lua.conf")
        with open(snippet_path, "w") as f:
            f.write(tx.shipped_23_lua_snippet(lua, cls.maildictd.socket))
        d = h.Dovecot(cls.tmp.path, cls.maildictd.socket, imap=True, name="dovecot23",
                      # (for the IMAP login that fails on purpose)
                      extra="\n".join(h.NO_AUTH_DELAYS))
        # the shipped Lua snippet instead of the dict one
        with open(d.conf_path) as f:
            conf = f.read()
        assert conf.count("!include %s\n" % d.snippet_path) == 1
        with open(d.conf_path, "w") as f:
            f.write(conf.replace("!include %s\n" % d.snippet_path,
                                 "!include %s\n" % snippet_path))
        cls.dovecot = d.start()
        cls.doveadm = staticmethod(cls.dovecot.doveadm)

    def check_mail_fields(self, f, home, maildir):
        # 2.3 takes maildict's mail_location as it is
        self.assertEqual(f.get("mail"), "maildir:~/" + maildir, f)
        self.assertNotIn("mail_driver", f)


if __name__ == "__main__":
    unittest.main(verbosity=2)
