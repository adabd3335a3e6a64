#!/usr/bin/env python3
"""Real OpenSMTPD 6.8 (Debian bookworm) with table-maildict, delivering over LMTP to a real
Dovecot 2.3 whose userdb is maildictd (issue 3, acceptance).

smtpd runs packaging/smtpd/smtpd.conf (listeners on a free loopback port, tables pointed at
the test's maildict.conf, delivery at the test's Dovecot LMTP socket) in a private mount
namespace (harness.Smtpd). Mail to a user, to an alias with two destinations, to a catch-all,
to user+tag@domain and to an alias-domain address lands in the right Maildir and is read over
IMAP as user@domain; an unknown recipient of a served domain gets 550 at RCPT from a local
client (127.0.0.1) and from a foreign one (another network namespace); other domains are
refused for the foreign client and relayed for the local one, as smtpd.conf documents. Then maildictd is stopped under the running smtpd: RCPT gets a 4xx and smtpd stays
up; maildictd is started again and the next message is delivered. Nothing bounces and the
queue ends empty.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from delivery_routes import SharedDeliveryRoutes  # noqa: E402

DELIVERY_TIMEOUT = h.DELIVERY_TIMEOUT

MISSING = h.smtpd_missing(h.SMTPD_68)


@h.needs_peer(MISSING)
class SmtpdDelivery(SharedDeliveryRoutes, h.MailFlow, h.DaemonsTestCase):
    DAEMONS = ("smtpd", "dovecot", "maildictd")
    RESOURCES = ("foreign",)
    # test_3 to test_5 (catch-all, sub-address, alias domain) are SharedDeliveryRoutes'.

    @classmethod
    def setUpClass(cls):
        h.require_programs()
        cls.tmp = h.TempDir()
        cls.maildictd = None
        cls.dovecot = None
        cls.smtpd = None
        cls.foreign = None
        try:
            db = cls.set_up_demo_homes()
            # The socket permissions the README recommends next to smtpd: smtpd runs its tables
            # as opensmtpd with no supplementary groups, so the socket's group must be
            # opensmtpd's own; Dovecot 2.3's auth worker (root) reaches it anyway.
            cls.maildictd = h.start_maildictd(cls.tmp.path, db_path=db, socket_mode="0660",
                                              socket_group="opensmtpd")
            cls.dovecot = h.start_dovecot(cls.tmp.path, cls.maildictd.socket,
                                          idle_msecs=h.SHIPPED_IDLE_MSECS, imap=True, lmtp=True)
            cls.port = h.free_tcp_port()
            # The shipped rules verbatim, relay for local senders included: 127.0.0.1 is a
            # local client, the foreign client (another network namespace) is not.
            cls.foreign = h.ForeignClient()
            conf = h.shipped_smtpd_conf(cls.maildictd.conf_path, cls.dovecot.lmtp_socket,
                                        {25: cls.port}, local_relay=True,
                                        also_listen_on=cls.foreign.host_address)
            cls.smtpd = h.start_smtpd(cls.tmp.path, conf, h.SMTPD_68, ports=[cls.port],
                                      trace=("lookup", "rules"))
        except BaseException:
            cls._dump_logs()
            cls.tearDownClass()
            raise

    # ---- helpers (the SMTP, Maildir and delivery ones are h.MailFlow's) ----

    def assert_nowhere_else(self, token, expected_maildirs):
        needle = ("<%s@e2e.maildict.test>" % token).encode()
        for dirpath, dirnames, filenames in os.walk(self.vmail):
            for n in filenames:
                p = os.path.join(dirpath, n)
                if os.path.basename(dirpath) not in ("new", "cur"):
                    continue
                if os.path.dirname(dirpath) in expected_maildirs:
                    continue
                with open(p, "rb") as f:
                    self.assertNotIn(needle, f.read(), "message %s also landed in %s"
                                     % (token, p))

    # ---- tests ----

    def test_1_user(self):
        t = self.send(["john@example.org"])
        self.assert_delivered_to("john@example.org", t)
        # one mailbox per user: nothing was created for the delivery name john_example.org
        for dirpath, dirnames, filenames in os.walk(self.vmail):
            for n in dirnames + filenames:
                self.assertNotIn("_example.org", n, os.path.join(dirpath, n))

    def test_2_alias_with_two_destinations(self):
        t = self.send(["postmaster@example.org"])
        self.assert_delivered_to("john@example.org", t)
        self.assert_delivered_to("jane@example.org", t)
        self.assert_nowhere_else(t, {os.path.join(self.home(u), "Maildir")
                                     for u in ("john@example.org", "jane@example.org")})

    def test_6_unknown_recipient_of_a_served_domain_is_550_from_every_client(self):
        # From 127.0.0.1 the shipped `match from local for any action "outbound"` would take
        # an address the deliver rule refused and relay it to the domain's MX (this host).
        for rcpt in ("nosuch@example.org", "nosuch@example.com", "nosuch+tag@example.org"):
            code, msg = self.rcpt_reply(rcpt)
            self.assertEqual(code, 550, "local client: RCPT TO:<%s> -> %d %r" % (rcpt, code, msg))
            code, msg = self.foreign.rcpt_reply(self.port, rcpt)
            self.assertEqual(code, 550, "foreign client: RCPT TO:<%s> -> %d %r"
                             % (rcpt, code, msg))

    def test_7_other_domains_relayed_only_for_local_clients(self):
        for rcpt in ("john@not-served.test", "ghost@disabled.example", "john@org"):
            code, msg = self.foreign.rcpt_reply(self.port, rcpt)
            self.assertEqual(code, 550, "foreign client: RCPT TO:<%s> -> %d %r"
                             % (rcpt, code, msg))
        # the documented intent (smtpd.conf): this host's own programs may send out
        # (accepted at RCPT, never sent: the transaction is reset)
        code, msg = self.rcpt_reply("john@not-served.test")
        self.assertEqual(code, 250, "local client: RCPT TO:<john@not-served.test> -> %d %r"
                         % (code, msg))

    def test_8_maildictd_stopped_and_started_under_smtpd(self):
        with self.maildictd_stopped():
            for rcpt in ("john@example.org", "postmaster@example.org", "x@example.net"):
                code, msg = self.rcpt_reply(rcpt)
                self.assertTrue(400 <= code < 500,
                                "RCPT TO:<%s> with maildictd down -> %d %r" % (rcpt, code, msg))
            self.assert_alive()
        t = self.send(["john@example.org"])
        self.assert_delivered_to("john@example.org", t)
        self.assert_alive()

    def test_8b_queued_message_survives_maildictd_down_at_delivery(self):
        def not_delivered(t):
            self.assertFalse(self.imap_maildir_has(t), "delivered without maildictd?")
        self.assert_queued_message_waits_for_maildictd("john@example.org", while_down=not_delivered)

    def imap_maildir_has(self, token):
        needle = ("<%s@e2e.maildict.test>" % token).encode()
        for p in self.maildir_files(os.path.join(self.home("john@example.org"), "Maildir")):
            with open(p, "rb") as f:
                if needle in f.read():
                    return True
        return False

    def test_9_nothing_bounced_or_left_in_the_queue(self):
        h.wait_until(lambda: not self.smtpd.queued_files(), DELIVERY_TIMEOUT,
                     "an empty smtpd queue (%r)" % self.smtpd.queued_files(), interval=0.2)
        text = self.smtpd.log_text()
        # (test_8b provokes exactly one TempFail on purpose)
        tempfails = [l for l in text.splitlines() if "result=TempFail" in l]
        self.assertLessEqual(len(tempfails), 1, tempfails)
        for bad in ("result=PermFail", "result=Loop", "bounce"):
            lines = [l for l in text.splitlines()
                     if bad in l and "bounce warning after" not in l]   # a startup setting
            self.assertEqual(lines, [], "smtpd log has %r" % bad)
        self.assertIn("result=Ok", text)
        self.assert_alive()


if __name__ == "__main__":
    unittest.main(verbosity=2)
