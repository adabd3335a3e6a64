#!/usr/bin/env python3
"""SMTP AUTH against maildict's password hashes through a real OpenSMTPD (issue 3, acceptance).

Runs smtpd 7.4.0p1 from bookworm-backports (unpacked by tests/e2e/fetch-smtpd-backports.sh):
bookworm's own 6.8.0p2 cannot do server-side TLS with OpenSSL 3 (specs/smtpd-tables.md §8.4)
and smtpd offers AUTH only after STARTTLS. The configuration is packaging/smtpd/smtpd.conf with
its submission listener (`tls-require pki ... auth <passwords> senders <sendas>`) on a free
loopback port and a self-signed certificate made with the openssl CLI.

Checked: AUTH is not offered before STARTTLS; john's right password (bcrypt) and jane's
(SHA512-CRYPT) are accepted, in both login spellings for john; a wrong password and an unknown
login get 535; `senders` lets john send as himself and as sales@example.org (his sender right)
but refuses jane@example.org, and the other way round for jane; with maildictd stopped AUTH
fails temporarily (4xx, smtpd stays up) and works again once maildictd is back.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


MISSING = h.smtpd_missing(h.SMTPD_74)
if not MISSING and not (h.smtpd_version(h.SMTPD_74) or "").startswith("7."):
    MISSING = "%s is not OpenSMTPD 7.x" % h.SMTPD_74


@h.needs_peer(MISSING)
class SmtpdAuth(h.MailFlow, h.DaemonsTestCase):
    DAEMONS = ("smtpd", "maildictd")

    @classmethod
    def setUpClass(cls):
        h.require_programs()
        cls.tmp = h.TempDir()
        cls.maildictd = None
        cls.smtpd = None
        try:
            cls.maildictd = h.start_maildictd(cls.tmp.path)
            cert, key = h.make_self_signed_cert(cls.tmp.path)
            cls.port = h.free_tcp_port()
            cls.submission = h.free_tcp_port()
            conf = h.shipped_smtpd_conf(cls.maildictd.conf_path,
                                        cls.tmp.join("no-lmtp-in-this-test"),
                                        {25: cls.port, 587: cls.submission}, cert=cert, key=key)
            cls.smtpd = h.start_smtpd(cls.tmp.path, conf, h.SMTPD_74,
                                      ports=[cls.port, cls.submission])
        except BaseException:
            cls._dump_logs()
            cls.tearDownClass()
            raise

    # ---- helpers ----

    def mail_from(self, s, sender):
        code, msg = s.mail(sender)
        s.rset()
        return code, msg

    # ---- tests ----

    def test_1_no_auth_before_starttls(self):
        s = self.submission_connect(tls=False)
        self.assertTrue(s.has_extn("starttls"), s.esmtp_features)
        self.assertFalse(s.has_extn("auth"), "AUTH offered in clear text: %r" % s.esmtp_features)
        code, msg = s.mail("john@example.org")
        self.assertTrue(500 <= code < 600, "MAIL FROM without TLS and AUTH -> %d %r" % (code, msg))

    def test_2_bcrypt_user(self):
        for login in ("john@example.org", "John@Example.org", "john_example.org"):
            code, msg, s = self.submission_login(login, h.DEMO_PASSWORDS["john@example.org"])
            self.assertEqual(code, 235, "%s -> %d %r" % (login, code, msg))

    def test_3_sha512_crypt_user(self):
        code, msg, s = self.submission_login("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"])
        self.assertEqual(code, 235, msg)

    def test_4_wrong_password_and_unknown_login_get_535(self):
        for user, password in (("john@example.org", "wrong-password"),
                               ("jane@example.org", "John-Secret"),
                               ("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"].upper()),
                               ("nosuch@example.org", "whatever"),
                               ("eve@example.org", h.DEMO_PASSWORDS["eve@example.org"]),
                               ("nopw@example.net", "any-password")):
            code, msg, s = self.submission_login(user, password)
            self.assertEqual(code, 535, "%s/%r -> %d %r" % (user, password, code, msg))
        self.assertTrue(self.smtpd.alive())

    def test_5_senders_john(self):
        code, msg, s = self.submission_login("john@example.org", h.DEMO_PASSWORDS["john@example.org"])
        self.assertEqual(code, 235, msg)
        for sender in ("john@example.org", "sales@example.org", "john+tag@example.org"):
            code, msg = self.mail_from(s, sender)
            self.assertEqual(code, 250, "john as <%s> -> %d %r" % (sender, code, msg))
        for sender in ("jane@example.org", "postmaster@example.org", "bob@example.net",
                       "someone@elsewhere.test"):
            code, msg = self.mail_from(s, sender)
            self.assertTrue(500 <= code < 600, "john as <%s> -> %d %r" % (sender, code, msg))

    def test_6_senders_jane(self):
        code, msg, s = self.submission_login("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"])
        self.assertEqual(code, 235, msg)
        code, msg = self.mail_from(s, "jane@example.org")
        self.assertEqual(code, 250, msg)
        for sender in ("john@example.org", "sales@example.org"):
            code, msg = self.mail_from(s, sender)
            self.assertTrue(500 <= code < 600, "jane as <%s> -> %d %r" % (sender, code, msg))

    def test_7_authenticated_user_may_relay(self):
        # `match from any auth for any action "outbound"`: accepted at RCPT (not sent: RSET)
        code, msg, s = self.submission_login("john@example.org", h.DEMO_PASSWORDS["john@example.org"])
        self.assertEqual(code, 235, msg)
        code, msg = s.mail("john@example.org")
        self.assertEqual(code, 250, msg)
        code, msg = s.rcpt("someone@elsewhere.test")
        self.assertEqual(code, 250, msg)
        s.rset()

    def test_8_maildictd_stopped_auth_fails_temporarily(self):
        with self.maildictd_stopped():
            code, msg, s = self.submission_login("john@example.org",
                                                 h.DEMO_PASSWORDS["john@example.org"])
            self.assertTrue(400 <= code < 500, "AUTH with maildictd down -> %d %r" % (code, msg))
            self.assert_alive()
        code, msg, s = self.submission_login("john@example.org", h.DEMO_PASSWORDS["john@example.org"])
        self.assertEqual(code, 235, msg)


if __name__ == "__main__":
    unittest.main(verbosity=2)
