#!/usr/bin/env python3
"""Real IMAP logins through Dovecot 2.3 with maildictd as passdb/userdb.

One user, two spellings, one mailbox: sessions logged in as john@example.org and as
john_example.org (at the same time) see each other's APPENDed messages, because maildict's
passdb answer carries the canonical user and its userdb the canonical home. The mail lands
under maildictd's default_home template for john@example.org, owned by the default uid
(nobody), and no directory is created for the john_example.org spelling. A wrong password and
an unknown user are refused as authentication failures, not as temporary ones.
"""
import imaplib
import os
import secrets
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

IMAP_TIMEOUT = 60


class ImapLogin(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        h.require_programs()
        cls.tmp = h.TempDir()
        cls.maildictd = None
        cls.dovecot = None
        try:
            vmail = cls.tmp.join("vmail")
            os.makedirs(vmail)
            # IMAP sessions run as maildictd's default uid/gid (nobody/nogroup): they create
            # the user's home below this directory themselves.
            os.chown(vmail, h.NOBODY_UID, h.NOGROUP_GID)
            os.chmod(vmail, 0o755)
            cls.maildictd = h.start_maildictd(cls.tmp.path)
            cls.dovecot = h.start_dovecot(cls.tmp.path, cls.maildictd.socket,
                                          idle_msecs=h.SHIPPED_IDLE_MSECS, imap=True)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.dovecot is not None:
                cls.dovecot.stop()
            if cls.maildictd is not None:
                cls.maildictd.stop()
        finally:
            cls.tmp.cleanup()

    def connect(self):
        c = imaplib.IMAP4("127.0.0.1", self.dovecot.imap_port, timeout=IMAP_TIMEOUT)
        self.addCleanup(self._logout, c)
        return c

    @staticmethod
    def _logout(c):
        try:
            c.logout()
        except Exception:
            pass

    def login(self, user, password):
        c = self.connect()
        typ, data = c.login(user, password)
        self.assertEqual(typ, "OK", data)
        return c

    @staticmethod
    def message(token, sender):
        return ("From: %s\r\nTo: john@example.org\r\nSubject: e2e %s\r\n"
                "Message-ID: <%s@e2e.maildict.test>\r\n\r\nhello from %s\r\n"
                % (sender, token, token, sender)).encode()

    def find(self, c, token):
        """SELECT INBOX (fresh view) and return the sequence numbers of messages with token."""
        typ, data = c.select("INBOX")
        self.assertEqual(typ, "OK", data)
        typ, data = c.search(None, "HEADER", "Message-ID", "<%s@e2e.maildict.test>" % token)
        self.assertEqual(typ, "OK", data)
        return data[0].split()

    def test_1_both_spellings_share_one_mailbox(self):
        a = self.login("john@example.org", h.DEMO_PASSWORDS["john@example.org"])
        b = self.login("john_example.org", h.DEMO_PASSWORDS["john@example.org"])

        # A (john@example.org) appends; B (john_example.org) sees it
        t1 = secrets.token_hex(8)
        typ, data = a.append("INBOX", None, imaplib.Time2Internaldate(time.time()),
                             self.message(t1, "session-a"))
        self.assertEqual(typ, "OK", data)
        found = self.find(b, t1)
        self.assertEqual(len(found), 1, "john_example.org does not see john@example.org's "
                                        "message: %r" % found)
        typ, data = b.fetch(found[0], "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertEqual(typ, "OK", data)
        self.assertIn(("e2e " + t1).encode(), data[0][1])

        # and the other way round
        t2 = secrets.token_hex(8)
        typ, data = b.append("INBOX", None, imaplib.Time2Internaldate(time.time()),
                             self.message(t2, "session-b"))
        self.assertEqual(typ, "OK", data)
        self.assertEqual(len(self.find(a, t2)), 1)
        self.assertEqual(len(self.find(a, t1)), 1)

        # an unrelated user does not see it
        j = self.login("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"])
        self.assertEqual(self.find(j, t1), [])

    def test_2_mail_is_stored_under_the_canonical_home(self):
        vmail = self.tmp.join("vmail")
        home = os.path.join(vmail, "example.org", "john")
        self.assertTrue(os.path.isdir(os.path.join(home, "Maildir")),
                        "no Maildir under %s: %r" % (home, list(os.walk(vmail))[:5]))
        st = os.stat(os.path.join(home, "Maildir"))
        self.assertEqual((st.st_uid, st.st_gid), (h.NOBODY_UID, h.NOGROUP_GID))
        for dirpath, dirnames, filenames in os.walk(vmail):
            for name in dirnames + filenames:
                self.assertNotIn("john_example.org", name,
                                 "a second mailbox was created: %s" % os.path.join(dirpath, name))

    def test_3_refused_logins_are_not_temporary(self):
        # (last: failed logins make Dovecot delay later attempts from 127.0.0.1)
        for user, password in (("john@example.org", "wrong-password"),
                               ("john_example.org", "wrong-password"),
                               ("nosuch@example.org", "whatever"),
                               ("eve@example.org", h.DEMO_PASSWORDS["eve@example.org"])):
            c = self.connect()
            with self.assertRaises(imaplib.IMAP4.error) as cm:
                c.login(user, password)
            text = str(cm.exception)
            self.assertIn("AUTHENTICATIONFAILED", text, "%s: %s" % (user, text))
            self.assertNotIn("UNAVAILABLE", text, "%s: %s" % (user, text))


if __name__ == "__main__":
    unittest.main(verbosity=2)
