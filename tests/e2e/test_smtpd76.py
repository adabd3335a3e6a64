#!/usr/bin/env python3
"""Real OpenSMTPD 7.6.0p1 (Debian 13) with table-maildict over the text table protocol
(issue 13, item 4).

smtpd runs from the Debian 13 tree with chroot (tests/e2e/smtpd76.py), on
packaging/smtpd/smtpd.conf changed only in paths and ports; it spawns the statically linked
table-maildict inside the tree, as the tree's opensmtpd (uid 100). Mail goes over LMTP into
Dovecot 2.4.1 in the same tree (trixie.Dovecot24: the shipped 10-maildict-2.4.conf, Lua route,
and 20-maildict-lmtp.conf), and is read back over IMAP from that Dovecot: Debian 13 end to end.
maildictd runs on the host; its socket and Dovecot's LMTP socket live in the test directory in
the tree's /tmp, so smtpd's tables, its mail.lmtp and Dovecot's auth workers reach them; homes
are handed out as paths inside the tree. maildictd's socket is 0660 with the group whose gid is
the tree's opensmtpd group: exactly the tables get in (and Dovecot 2.4's auth workers, which run
as root), as the README asks on a real host.

Checked, as with 6.8/7.4 (test_smtpd_delivery.py, test_smtpd_auth.py): the tables are our
program, one per table line, spoken to in the text protocol; delivery to a user, a list alias
(two mailboxes), the catch-all, a +tag and an alias domain; 550 for unknown recipients (of a
served domain from a local client too, with the shipped relay rule for local senders); with
maildictd stopped RCPT and AUTH fail temporarily and smtpd stays up, then mail flows again;
a message queued before maildictd stopped waits and is delivered once it is back;
`smtpctl update table` is answered; STARTTLS + AUTH 235/535 through `credentials`; `senders`
enforced. Nothing bounces.
Without the tree the test skips, or fails in CI or when MAILDICT_REQUIRE_PEERS=1.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from delivery_routes import SharedDeliveryRoutes  # noqa: E402
import smtpd76  # noqa: E402
import trixie as tx  # noqa: E402

TABLES = ("domains", "recipients", "userinfo", "passwords", "sendas")


class Smtpd76(SharedDeliveryRoutes, h.MailFlow, h.DaemonsTestCase):
    DAEMONS = ("smtpd", "dovecot", "maildictd")
    RESOURCES = ("foreign",)
    # test_3 to test_5 (catch-all, sub-address, alias domain) are SharedDeliveryRoutes'.

    @classmethod
    def setUpClass(cls):
        cls.tree = tree = smtpd76.require_smtpd76()
        h.require_programs()
        cls.tmp = tree.temp_dir("s")
        cls.maildictd = None
        cls.dovecot = None
        cls.smtpd = None
        cls.foreign = None
        try:
            db = cls.set_up_demo_homes(inside=tree.inside)
            cls.table_uid, table_gid = tree.uid("opensmtpd"), tree.gid("opensmtpd")
            # maildictd takes a group name, resolved on the host: the host's name for the
            # tree's gid. A host without such a group gets a world-connectable socket (in a
            # private directory) rather than a spurious failure.
            group = smtpd76.host_group_name(table_gid)
            access = {"socket_mode": "0660", "socket_group": group}
            if group is None:
                h.log("no host group has gid %d (the tree's opensmtpd): socket mode 0666"
                      % table_gid)
                access = {"socket_mode": "0666", "socket_group": "root"}
            socket = tree.check_socket_path(cls.tmp.join("dict.sock"))
            # homes as Dovecot 2.4 (and smtpd) see them, inside the tree
            home = os.path.join(tree.inside(cls.vmail), "%d", "%n")
            cls.maildictd = h.start_maildictd(cls.tmp.path, db_path=db, socket=socket,
                                              default_home=home, **access)
            cls.dovecot = tx.start_dovecot24(tree, cls.maildictd.socket, imap=True, lmtp=True)
            tree.check_socket_path(cls.dovecot.lmtp_socket)
            # The tables' maildict.conf: maildictd's, with the socket as the chroot sees it.
            table_conf = cls.tmp.join("table-maildict.conf")
            with open(cls.maildictd.conf_path) as f:
                text = f.read()
            line = "socket = %s\n" % socket
            assert text.count(line) == 1, "no %r in %s" % (line, cls.maildictd.conf_path)
            with open(table_conf, "w") as f:
                f.write(text.replace(line, "socket = %s\n" % tree.inside(socket)))
            os.chmod(table_conf, 0o644)
            cert, key = h.make_self_signed_cert(cls.tmp.path)
            cls.port = h.free_tcp_port()
            cls.submission = h.free_tcp_port()
            # The shipped rules verbatim, relay for local senders included: 127.0.0.1 is a
            # local client, the foreign client (another network namespace) is not.
            cls.foreign = h.ForeignClient()
            conf = h.shipped_smtpd_conf(tree.inside(table_conf),
                                        tree.inside(cls.dovecot.lmtp_socket),
                                        {25: cls.port, 587: cls.submission},
                                        cert=tree.inside(cert), key=tree.inside(key),
                                        local_relay=True,
                                        also_listen_on=cls.foreign.host_address)
            cls.smtpd = smtpd76.ChrootSmtpd(tree, cls.tmp.path, conf,
                                            ports=[cls.port, cls.submission],
                                            trace=("lookup", "rules")).start()
        except BaseException:
            cls._dump_logs()
            cls.tearDownClass()
            raise

    # ---- helpers (the SMTP, Maildir and delivery ones are h.MailFlow's) ----

    def assert_saved_by_dovecot(self, token):
        # Dovecot 2.4's LMTP saved it (no other Dovecot runs; its log says so)
        needle = "msgid=<%s@e2e.maildict.test>: saved mail to" % token
        h.wait_until(lambda: needle in self.dovecot.log_text(), h.DELIVERY_TIMEOUT,
                     "%r in Dovecot 2.4's log" % needle)

    # ---- tests ----

    def test_0_tables_are_table_maildict_in_the_tree(self):
        self.assertTrue(self.smtpd.version().startswith("7.6"), self.smtpd.version())
        # smtpd spawns the tables at startup; one process per `table` line, argv[0] = its name,
        # running as the tree's opensmtpd: the static table-maildict ran on trixie's kernel ABI
        # alone and finished the text handshake (smtpd exits if a table does not).
        procs = self.smtpd.table_processes()
        self.assertEqual(sorted(p[0] for p in procs), sorted(TABLES), procs)
        self.assertEqual({p[1] for p in procs}, {self.table_uid}, procs)
        self.assert_alive()

    def test_1_user(self):
        t = self.send(["john@example.org"])
        self.assert_delivered_to("john@example.org", t)

    def test_2_list_alias(self):
        t = self.send(["postmaster@example.org"])
        self.assert_delivered_to("john@example.org", t)
        self.assert_delivered_to("jane@example.org", t)

    def test_6_unknown_recipients_get_550(self):
        # a served domain's unknown address: from every client, local ones included
        for rcpt in ("nosuch@example.org", "nosuch@example.com"):
            code, msg = self.rcpt_reply(rcpt)
            self.assertEqual(code, 550, "local client: RCPT TO:<%s> -> %d %r" % (rcpt, code, msg))
        # any unknown address from a foreign client (another network namespace)
        for rcpt in ("nosuch@example.org", "nosuch@example.com", "john@not-served.test",
                     "ghost@disabled.example"):
            code, msg = self.foreign.rcpt_reply(self.port, rcpt)
            self.assertEqual(code, 550, "foreign client: RCPT TO:<%s> -> %d %r"
                             % (rcpt, code, msg))
        self.assert_alive()

    def test_7_auth_through_credentials(self):
        for login, user in (("john@example.org", "john@example.org"),      # bcrypt
                            ("John@Example.org", "john@example.org"),
                            ("jane@example.org", "jane@example.org")):     # SHA512-CRYPT
            code, msg, s = self.submission_login(login, h.DEMO_PASSWORDS[user])
            self.assertEqual(code, 235, "%s -> %d %r" % (login, code, msg))
        for user, password in (("john@example.org", "wrong-password"),
                               ("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"].upper()),
                               ("nosuch@example.org", "whatever"),
                               ("eve@example.org", h.DEMO_PASSWORDS["eve@example.org"])):
            code, msg, s = self.submission_login(user, password)
            self.assertEqual(code, 535, "%s/%r -> %d %r" % (user, password, code, msg))
        self.assert_alive()

    def test_8_senders(self):
        code, msg, s = self.submission_login("john@example.org", h.DEMO_PASSWORDS["john@example.org"])
        self.assertEqual(code, 235, msg)
        for sender in ("john@example.org", "sales@example.org", "john+tag@example.org"):
            code, msg = s.mail(sender)
            s.rset()
            self.assertEqual(code, 250, "john as <%s> -> %d %r" % (sender, code, msg))
        for sender in ("jane@example.org", "postmaster@example.org", "someone@elsewhere.test"):
            code, msg = s.mail(sender)
            s.rset()
            self.assertTrue(500 <= code < 600, "john as <%s> -> %d %r" % (sender, code, msg))

    def test_9_maildictd_stopped_then_back(self):
        with self.maildictd_stopped():
            for rcpt in ("john@example.org", "postmaster@example.org", "x@example.net"):
                code, msg = self.rcpt_reply(rcpt)
                self.assertEqual(code, 451, "RCPT TO:<%s> with maildictd down -> %d %r"
                                 % (rcpt, code, msg))
            code, msg, s = self.submission_login("john@example.org",
                                                 h.DEMO_PASSWORDS["john@example.org"])
            self.assertTrue(400 <= code < 500, "AUTH with maildictd down -> %d %r" % (code, msg))
            self.assert_alive()
        t = self.send(["john@example.org"])
        self.assert_delivered_to("john@example.org", t)
        code, msg, s = self.submission_login("john@example.org", h.DEMO_PASSWORDS["john@example.org"])
        self.assertEqual(code, 235, msg)
        self.assert_alive()

    def test_9b_queued_message_waits_for_maildictd_at_delivery(self):
        self.assert_queued_message_waits_for_maildictd("jane@example.org")

    def test_9c_update_table(self):
        # `smtpctl update table` reaches table-maildict as `update` (it re-reads its
        # configuration) and smtpd gets `update-result|<id>|ok`; a table smtpd lacks fails.
        rc, out = self.smtpd.smtpctl("update", "table", "recipients")
        self.assertEqual(rc, 0, out)
        self.assertIn("command succeeded", out)
        rc, out = self.smtpd.smtpctl("update", "table", "nosuch")
        self.assertNotEqual(rc, 0, out)
        t = self.send(["john@example.org"])
        self.assert_delivered_to("john@example.org", t)

    def test_z_nothing_bounced_or_left_in_the_queue(self):
        h.wait_until(lambda: not self.smtpd.queued_files(), h.DELIVERY_TIMEOUT,
                     "an empty smtpd queue (%r)" % self.smtpd.queued_files(), interval=0.2)
        text = self.smtpd.log_text()
        # (test_9b provokes exactly one TempFail on purpose)
        tempfails = [l for l in text.splitlines() if "result=TempFail" in l]
        self.assertLessEqual(len(tempfails), 1, tempfails)
        for bad in ("result=PermFail", "result=Loop"):
            lines = [l for l in text.splitlines() if bad in l]
            self.assertEqual(lines, [], "smtpd log has %r" % bad)
        # smtpd's word on its tables: only the `error|...` answers of the outages in test_9*
        # (a bad reply or a closed pipe would read "bad response" / "pipe closed" and stop smtpd)
        table_lines = [l for l in text.splitlines() if "table-proc:" in l]
        self.assertTrue(table_lines, "test_9's outage left no trace in smtpd's log")
        for l in table_lines:
            # (the reason names the socket as the table sees it, inside the tree)
            self.assertRegex(l, r"table-proc: \w+ (check|lookup) failed: connect /\S+/dict\.sock: "
                             r"No such file or directory$", table_lines)
        self.assertIn("result=Ok", text)
        self.assertEqual(len(self.smtpd.table_processes()), len(TABLES))
        self.assert_alive()


if __name__ == "__main__":
    unittest.main(verbosity=2)
