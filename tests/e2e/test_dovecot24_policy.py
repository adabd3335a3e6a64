#!/usr/bin/env python3
"""Dovecot 2.4.1's auth policy client (the trixie tree) against maildictd's policy server over
loopback TCP, with the shipped packaging/dovecot/30-maildict-policy.conf unchanged but for the
port, nonce and key (its settings kept their names in 2.4), and logins through the shipped
10-maildict-2.4.conf and maildict-auth.lua. The two scenarios of test_auth_policy.py that
matter most, on the new Dovecot:
  * wrong passwords for one user from one IP: first refused normally, then tarpitted (Dovecot
    holds the login), then rejected by the policy, even with the right password; the same user
    from another IP logs in at once;
  * one stale password retried 12 times from one IP is throttled less than 12 distinct ones,
    and the owner with the right password still gets in.
Each attempt carries its own session id, so its policy outcome is read from Dovecot's reply
(reason=) and its log ("Policy check action is tarpit N second(s)").
"""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import trixie as tx  # noqa: E402

API_KEY = "k3y-for-tests"
REJECT_MESSAGE = "Too many failed logins, try again later"
POLICY = {
    "policy_api_key": API_KEY,
    "policy_window": "600s",   # long: no sequence below may depend on this machine's speed
    "policy_ip_login_tarpit": 3,
    "policy_ip_login_reject": 8,
    "policy_ip_tarpit": 15,
    "policy_ip_reject": 20,
    "policy_login_tarpit": 0,
    "policy_login_reject": 0,
    "policy_repeats_per_failure": 20,
    "policy_tarpit_seconds": 1,
    "policy_tarpit_max_seconds": 1,   # short: this test is about the order, not the length
}
_session = [0]


class Attempt:
    def __init__(self, ok, outcome, seconds, elapsed, text):
        self.ok, self.outcome, self.seconds, self.elapsed, self.text = \
            ok, outcome, seconds, elapsed, text

    def __repr__(self):
        return "<%s%s%s>" % ("ok " if self.ok else "", self.outcome,
                             " %ds" % self.seconds if self.seconds else "")


class Dovecot24AuthPolicy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        h.require_programs()
        tree = tx.require_tree()
        cls.tmp = h.TempDir()
        priv = tree.private_dir("p")
        port = h.free_tcp_port()
        db = h.make_demo_db(cls.tmp.path)
        conf = h.maildict_config(cls.tmp.path, db,
                                 socket=tree.check_socket_path(os.path.join(priv, "d.sock")),
                                 policy_listen="127.0.0.1:%d" % port, **POLICY)
        cls.maildictd = h.Maildictd(cls.tmp.path, conf).start()
        extra = h.dovecot_policy_extra(port, "e2e-nonce", API_KEY)
        try:
            cls.dovecot = tx.start_dovecot24(tree, cls.maildictd.socket, extra=extra)
        except BaseException:
            cls.maildictd.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.dovecot.stop()
        finally:
            cls.maildictd.stop()   # exit 0 and no secret in its log
            text = cls.maildictd.log_text()
            for needle in ['"pwhash"', "e2e-nonce", API_KEY]:
                assert needle not in text, "maildictd's log reveals %r" % needle
            cls.tmp.cleanup()

    def attempt(self, user, password, rip):
        _session[0] += 1
        sid = "p24s%04d" % _session[0]
        start = time.monotonic()
        rc, out, err = self.dovecot.doveadm("auth", "test", "-x", "service=imap",
                                            "-x", "rip=" + rip, "-x", "session=" + sid,
                                            user, password)
        elapsed = time.monotonic() - start
        ok, fields = h.parse_auth_test(out)
        text = out + err
        self.assertIsNotNone(ok, text)
        self.assertNotIn("code", fields, "never a temporary failure here:\n" + text)
        if fields.get("reason") == REJECT_MESSAGE:
            return Attempt(ok, "reject", 0, elapsed, text)
        # the tarpit shows only in Dovecot's log, before the report that ends the attempt
        tag = "<%s>" % sid
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lines = [l for l in self.dovecot.log_text().splitlines() if tag in l]
            if any("Policy report action finished" in l for l in lines):
                break
            time.sleep(0.05)
        self.assertTrue(any("Policy report action finished" in l for l in lines),
                        "no policy report in Dovecot's log for %s:\n%s" % (sid, "\n".join(lines)))
        seconds = 0
        for l in lines:
            if "Policy check action is tarpit" in l:
                seconds = int(l.split("tarpit", 1)[1].split()[0])
        return Attempt(ok, "tarpit" if seconds else "allow", seconds, elapsed, text)

    def test_brute_force_is_tarpitted_then_rejected(self):
        ip = "192.0.2.1"
        seen = [self.attempt("john@example.org", "wrong-bf-%02d" % i, ip) for i in range(10)]
        self.assertTrue(all(not a.ok for a in seen), seen)
        self.assertEqual([a.outcome for a in seen],
                         ["allow"] * 3 + ["tarpit"] * 5 + ["reject"] * 2, seen)
        self.assertEqual([a.seconds for a in seen[3:8]], [1] * 5, seen)
        for a in seen[3:8]:
            self.assertGreaterEqual(a.elapsed, a.seconds * 0.95, a)   # Dovecot held the login
        right = h.DEMO_PASSWORDS["john@example.org"]
        blocked = self.attempt("john@example.org", right, ip)
        self.assertEqual((blocked.ok, blocked.outcome), (False, "reject"), blocked)
        elsewhere = self.attempt("john@example.org", right, "198.51.100.3")
        self.assertEqual((elsewhere.ok, elsewhere.outcome), (True, "allow"), elsewhere)

    def test_a_stale_password_is_throttled_less_than_distinct_ones(self):
        stale = [self.attempt("bob@example.net", "stale-old-password", "192.0.2.20")
                 for _ in range(12)]
        distinct = [self.attempt("john_doe@example.org", "wrong-dist-%02d" % i, "192.0.2.21")
                    for i in range(12)]
        throttled = lambda seq: sum(1 for a in seq if a.outcome != "allow")  # noqa: E731
        self.assertEqual(throttled(stale), 0, stale)
        self.assertEqual(distinct[-1].outcome, "reject", distinct)
        self.assertLess(throttled(stale), throttled(distinct), (stale, distinct))
        ok = self.attempt("bob@example.net", h.DEMO_PASSWORDS["bob@example.net"], "192.0.2.20")
        self.assertTrue(ok.ok, ok.text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
