#!/usr/bin/env python3
"""The Debian 12 -> 13 upgrade (README, "Upgrading from Debian 12 to 13"): one maildictd with one
maildict.conf and one directory serves Dovecot 2.3.19 (this host, the shipped 10-maildict.conf:
passdb/userdb dict) and then, with nothing of maildict changed, Dovecot 2.4.1 (the trixie tree,
the shipped 10-maildict-2.4.conf and maildict-auth.lua, Debian 13's stock mail settings).

Under 2.3: a delivery over LMTP to john_example.org (the name smtpd hands over), and over IMAP a
new folder with a message in it. Then 2.3 stops and 2.4 starts on the same Maildirs: IMAP as
john_example.org finds the delivered message and the folder's message, a new LMTP delivery
lands in the same INBOX, and jane still logs in.

The homes must be the same path for both Dovecots: they live in a private directory of the
tree, <tree>/tmp/mdu-<random>, which is /tmp/mdu-<random> inside the tree; a symlink of that
name in the host's /tmp points there (removed at the end).
"""
import imaplib
import os
import smtplib
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import trixie as tx  # noqa: E402

NOBODY = 65534   # nobody/nogroup on both releases
JOHN = "john@example.org"


def lmtp_deliver(socket_path, rcpt, subject):
    msg = ("From: sender@example.net\r\nTo: %s\r\nSubject: %s\r\n\r\nbody\r\n" % (rcpt, subject))
    with smtplib.LMTP(socket_path) as lmtp:
        refused = lmtp.sendmail("sender@example.net", [rcpt], msg.encode())
    assert not refused, refused


def imap_login(port, login, password):
    m = imaplib.IMAP4("127.0.0.1", port, timeout=60)
    typ, data = m.login(login, password)
    assert typ == "OK", data
    return m


def subjects(m, mailbox):
    typ, data = m.select('"%s"' % mailbox)
    assert typ == "OK", (mailbox, data)
    if int(data[0]) == 0:
        return []
    typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    if typ != "OK" or data in ([None], []):
        return []
    return sorted(part[1].decode().strip().split(":", 1)[1].strip()
                  for part in data if isinstance(part, tuple))


class UpgradeFromDebian12To13(unittest.TestCase):
    def setUp(self):
        h.require_programs()
        self.tree = tx.require_tree()
        self.tmp = h.TempDir()
        self.addCleanup(self.tmp.cleanup)
        priv = self.tree.private_dir("u")
        # the homes' path, valid on both sides
        self.link = self.tree.inside(priv)
        os.symlink(priv, self.link)
        self.addCleanup(os.unlink, self.link)
        vmail = os.path.join(priv, "vmail")
        os.makedirs(vmail)
        os.chown(vmail, NOBODY, NOBODY)
        db = h.make_demo_db(self.tmp.path)
        conf = h.maildict_config(self.tmp.path, db,
                                 socket=self.tree.check_socket_path(os.path.join(priv, "d.sock")),
                                 default_uid=NOBODY, default_gid=NOBODY,
                                 default_home=os.path.join(self.link, "vmail", "%d", "%n"))
        self.maildictd = h.Maildictd(self.tmp.path, conf).start()
        self.addCleanup(self.maildictd.stop)
        self.token = "upgrade-%d-%d" % (os.getpid(), time.monotonic_ns())

    def test_logins_and_deliveries_continue(self):
        password = h.DEMO_PASSWORDS[JOHN]
        # ---- Debian 12: Dovecot 2.3 with passdb/userdb dict ----
        d23 = h.start_dovecot(self.tmp.path, self.maildictd.socket,
                              idle_msecs=h.SHIPPED_IDLE_MSECS,
                              imap=True, lmtp=True, name="dovecot23")
        try:
            lmtp_deliver(d23.lmtp_socket, "john_example.org", self.token + "-a")
            m = imap_login(d23.imap_port, JOHN, password)
            typ, data = m.create("Archive")
            self.assertEqual(typ, "OK", data)
            msg = "From: a@example.net\r\nSubject: %s-b\r\n\r\nkept\r\n" % self.token
            typ, data = m.append("Archive", None, None, msg.encode())
            self.assertEqual(typ, "OK", data)
            self.assertEqual(subjects(m, "INBOX"), [self.token + "-a"])
            m.logout()
        finally:
            d23.stop()
        maildir = os.path.join(self.link, "vmail", "example.org", "john", "Maildir")
        self.assertTrue(os.path.isdir(os.path.join(maildir, "cur")), maildir)

        # ---- Debian 13: Dovecot 2.4 through maildict-auth.lua, maildictd untouched ----
        self.assertTrue(self.maildictd.alive())
        d24 = tx.start_dovecot24(self.tree, self.maildictd.socket, imap=True, lmtp=True)
        try:
            m = imap_login(d24.imap_port, "john_example.org", password)
            self.assertEqual(subjects(m, "INBOX"), [self.token + "-a"])
            self.assertEqual(subjects(m, "Archive"), [self.token + "-b"])
            m.logout()
            lmtp_deliver(d24.lmtp_socket, "john_example.org", self.token + "-c")
            m = imap_login(d24.imap_port, JOHN, password)
            self.assertEqual(subjects(m, "INBOX"), [self.token + "-a", self.token + "-c"])
            m.logout()
            imap_login(d24.imap_port, "jane@example.org",
                       h.DEMO_PASSWORDS["jane@example.org"]).logout()
        except BaseException:
            h.log("dovecot 2.4 log tail:\n" + h.tail(d24.log_path, 40))
            raise
        finally:
            d24.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
