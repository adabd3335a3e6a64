#!/usr/bin/env python3
"""Dovecot 2.3's passdb/userdb `dict` driver against maildictd and the demo directory.

A private Dovecot instance uses the shipped packaging/dovecot snippets (socket path and
idle_msecs substituted), once with the default connection-per-lookup (no idle_msecs) and once
with the shipped idle_msecs (one kept-alive connection). For each, with `doveadm`:
  * auth test succeeds for john (bcrypt), jane (SHA512-CRYPT), john_doe ($2y$ bcrypt), bob;
  * a wrong password fails as a password mismatch (no temp_fail);
  * john_example.org, JOHN@Example.ORG and john_doe_example.org log in and report the
    canonical user (user=..., original_user=...);
  * eve (disabled), ghost (disabled domain) and an unknown user are "unknown user", nopw cannot
    log in, and none of these failures is a temp_fail;
  * `doveadm user '*'` lists exactly the 5 active users, `doveadm user 'j*'` the three j-users;
  * `doveadm user` shows john's uid/gid/home/mail/quota_rule (defaults from maildict.conf),
    bob's explicit values, and "doesn't exist" (exit 67) for eve, ghost and the unknown user.
maildictd must exit 0 on SIGTERM and its debug log must not contain a password or hash.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

TMP = None
MAILDICTD = None
_rip_counter = [0]


def setUpModule():
    global TMP, MAILDICTD
    h.require_programs()
    TMP = h.TempDir()
    MAILDICTD = h.start_maildictd(TMP.path)


def tearDownModule():
    try:
        if MAILDICTD is not None:
            MAILDICTD.stop()   # exit code 0 and no secrets in the log, or this fails
    finally:
        if TMP is not None:
            TMP.cleanup()


def next_rip():
    # A different remote IP per attempt: Dovecot's auth penalty grows the failure delay per
    # IP (2 s, 4 s, 8 s ...), and the IP makes each attempt's log line unique.
    _rip_counter[0] += 1
    n = _rip_counter[0]
    return "127.0.%d.%d" % (n // 250 + 1, n % 250 + 1)


class DovecotAuthBase:
    idle_msecs = None

    @classmethod
    def setUpClass(cls):
        cls.dovecot = h.start_dovecot(TMP.path, MAILDICTD.socket, idle_msecs=cls.idle_msecs)

    @classmethod
    def tearDownClass(cls):
        cls.dovecot.stop()

    def setUp(self):
        self.assertTrue(MAILDICTD.alive(), "maildictd died; log:\n" + h.tail(MAILDICTD.log_path))

    # ---- helpers ----

    def auth_test(self, user, password):
        rip = next_rip()
        rc, out, err = self.dovecot.doveadm("auth", "test", "-x", "service=imap",
                                            "-x", "rip=" + rip, user, password)
        ok, fields = h.parse_auth_test(out)
        return rc, ok, fields, out + err, rip

    def assert_login(self, login, password, canonical):
        rc, ok, fields, text, _ = self.auth_test(login, password)
        self.assertEqual(rc, 0, "auth test %s failed:\n%s" % (login, text))
        self.assertTrue(ok, text)
        self.assertEqual(fields.get("user"), canonical, text)
        self.assertNotIn("code", fields, text)
        return fields

    def assert_refused(self, login, password, reason):
        """Login fails, is not a temporary failure, and Dovecot logs `reason` for it."""
        rc, ok, fields, text, rip = self.auth_test(login, password)
        self.assertNotEqual(rc, 0, "auth test %s should fail:\n%s" % (login, text))
        self.assertIs(ok, False, text)
        self.assertNotIn("code", fields, "%s: must not be a temporary failure:\n%s"
                         % (login, text))
        self.assertNotIn("temp_fail", text)
        lines = self.dovecot.log_lines_for(rip, reason)
        self.assertTrue(any(reason in l for l in lines),
                        "Dovecot should log %r for %s (rip %s); its lines:\n%s"
                        % (reason, login, rip, "\n".join(lines)))
        self.assertFalse(any("Failed to lookup" in l or "Error" in l for l in lines),
                         "\n".join(lines))

    def user_fields(self, name):
        rc, out, err = self.dovecot.doveadm("user", name)
        self.assertEqual(rc, 0, "doveadm user %s: rc %d\n%s%s" % (name, rc, out, err))
        return h.parse_doveadm_user(out)

    def assert_no_such_user(self, name):
        rc, out, err = self.dovecot.doveadm("user", name)
        self.assertEqual(rc, h.EX_NOUSER, "doveadm user %s: rc %d\n%s%s" % (name, rc, out, err))
        self.assertIn("user %s doesn't exist" % name, out + err)

    # ---- passdb ----

    def test_bcrypt_login(self):
        self.assert_login("john@example.org", h.DEMO_PASSWORDS["john@example.org"],
                          "john@example.org")

    def test_sha512_crypt_login(self):
        self.assert_login("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"],
                          "jane@example.org")

    def test_2y_bcrypt_login(self):
        self.assert_login("john_doe@example.org", h.DEMO_PASSWORDS["john_doe@example.org"],
                          "john_doe@example.org")

    def test_bob_login(self):
        self.assert_login("bob@example.net", h.DEMO_PASSWORDS["bob@example.net"],
                          "bob@example.net")

    def test_dict_connections(self):
        self.assert_login("john@example.org", h.DEMO_PASSWORDS["john@example.org"],
                          "john@example.org")
        if self.idle_msecs:
            # idle_msecs keeps the auth worker's connection to maildictd open between lookups
            self.assertGreaterEqual(h.unix_connections(MAILDICTD.socket), 1)
        else:
            # connection per lookup: Dovecot closes after each, and maildictd closes its side
            h.wait_until(lambda: h.unix_connections(MAILDICTD.socket) == 0, 30,
                         "every dict connection to be closed")

    def test_wrong_password(self):
        self.assert_refused("john@example.org", "not-" + h.DEMO_PASSWORDS["john@example.org"],
                            "Password mismatch")
        # another user's password is wrong too
        self.assert_refused("jane@example.org", h.DEMO_PASSWORDS["john@example.org"],
                            "Password mismatch")

    def test_user_domain_spelling_is_canonicalized(self):
        fields = self.assert_login("john_example.org", h.DEMO_PASSWORDS["john@example.org"],
                                   "john@example.org")
        self.assertEqual(fields.get("original_user"), "john_example.org")
        # split at the last underscore: john_doe at example.org
        fields = self.assert_login("john_doe_example.org",
                                   h.DEMO_PASSWORDS["john_doe@example.org"],
                                   "john_doe@example.org")
        self.assertEqual(fields.get("original_user"), "john_doe_example.org")
        # wrong password in the other spelling still fails
        self.assert_refused("john_example.org", "wrong", "Password mismatch")

    def test_mixed_case_login(self):
        # Dovecot lowercases (auth_username_format = %Lu) before asking maildict
        self.assert_login("JOHN@Example.ORG", h.DEMO_PASSWORDS["john@example.org"],
                          "john@example.org")

    def test_disabled_and_unknown_users_are_unknown(self):
        self.assert_refused("eve@example.org", h.DEMO_PASSWORDS["eve@example.org"],
                            "unknown user")
        self.assert_refused("ghost@disabled.example",
                            h.DEMO_PASSWORDS["ghost@disabled.example"], "unknown user")
        self.assert_refused("nosuch@example.org", "whatever", "unknown user")
        self.assert_refused("nosuch_example.org", "whatever", "unknown user")

    def test_user_without_password_cannot_log_in(self):
        rc, ok, fields, text, rip = self.auth_test("nopw@example.net", "anything")
        self.assertNotEqual(rc, 0, text)
        self.assertIs(ok, False, text)
        self.assertNotIn("code", fields, text)
        lines = self.dovecot.log_lines_for(rip, "No password returned")
        self.assertFalse(any("unknown user" in l for l in lines),
                         "nopw exists (it receives mail):\n" + "\n".join(lines))
        self.assertFalse(any("Failed to lookup" in l for l in lines), "\n".join(lines))
        self.assertTrue(any("No password returned" in l for l in lines), "\n".join(lines))

    def test_auth_login_passdb_then_userdb(self):
        # what an IMAP login does: passdb (password), then userdb under the canonical name
        rc, out, err = self.dovecot.doveadm("auth", "login", "-x", "rip=" + next_rip(),
                                            "john_example.org",
                                            h.DEMO_PASSWORDS["john@example.org"])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("auth succeeded", out)
        userdb = out.split("userdb extra fields:", 1)
        self.assertEqual(len(userdb), 2, out + err)
        lines = [l.strip() for l in userdb[1].splitlines() if l.strip()]
        self.assertEqual(lines[0], "john@example.org", out)
        self.assertIn("home=" + os.path.join(TMP.path, "vmail", "example.org", "john"), lines)
        self.assertIn("quota_rule=" + h.JOHN_QUOTA_RULE, lines)

    # ---- userdb ----

    def test_iterate_lists_exactly_the_active_users(self):
        rc, out, err = self.dovecot.doveadm("user", "*")
        self.assertEqual(rc, 0, out + err)
        names = [l.strip() for l in out.splitlines() if l.strip()]
        self.assertEqual(sorted(names), sorted(h.ACTIVE_USERS), out + err)
        # the mask is applied by doveadm; maildict must not filter on it
        rc, out, err = self.dovecot.doveadm("user", "j*")
        self.assertEqual(rc, 0, out + err)
        names = sorted(l.strip() for l in out.splitlines() if l.strip())
        self.assertEqual(names, ["jane@example.org", "john@example.org",
                                 "john_doe@example.org"], out + err)

    def test_john_userdb_has_defaults_and_quota(self):
        f = self.user_fields("john@example.org")
        self.assertEqual(f.get("uid"), str(h.NOBODY_UID), f)
        self.assertEqual(f.get("gid"), str(h.NOGROUP_GID), f)
        self.assertEqual(f.get("home"), os.path.join(TMP.path, "vmail", "example.org", "john"), f)
        self.assertEqual(f.get("mail"), "maildir:~/Maildir", f)
        self.assertEqual(f.get("quota_rule"), h.JOHN_QUOTA_RULE, f)

    def test_userdb_in_user_domain_spelling(self):
        a = self.user_fields("john@example.org")
        b = self.user_fields("john_example.org")
        # the userdb object's "user" field makes the canonical name Dovecot's user
        self.assertEqual(b.get("user"), "john@example.org", b)
        for k in ("uid", "gid", "home", "mail", "quota_rule"):
            self.assertEqual(b.get(k), a.get(k), "%s differs: %r vs %r" % (k, a, b))

    def test_bob_userdb_explicit_values(self):
        f = self.user_fields("bob@example.net")
        for k, v in h.BOB.items():
            self.assertEqual(f.get(k), v, "bob's %s: %r" % (k, f))

    def test_jane_and_nopw_userdb(self):
        f = self.user_fields("jane@example.org")
        self.assertEqual(f.get("home"), os.path.join(TMP.path, "vmail", "example.org", "jane"), f)
        self.assertEqual(f.get("uid"), str(h.NOBODY_UID), f)
        f = self.user_fields("nopw@example.net")
        self.assertEqual(f.get("home"), os.path.join(TMP.path, "vmail", "example.net", "nopw"), f)

    def test_disabled_and_unknown_users_do_not_exist(self):
        self.assert_no_such_user("eve@example.org")
        self.assert_no_such_user("ghost@disabled.example")
        self.assert_no_such_user("nosuch@example.org")


class WithoutIdleMsecs(DovecotAuthBase, unittest.TestCase):
    idle_msecs = None


class WithIdleMsecs(DovecotAuthBase, unittest.TestCase):
    idle_msecs = h.SHIPPED_IDLE_MSECS


if __name__ == "__main__":
    unittest.main(verbosity=2)
