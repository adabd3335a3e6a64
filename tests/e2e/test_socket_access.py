#!/usr/bin/env python3
"""Who may connect to maildictd's socket, with the shipped settings (issue 15, item 2).

maildictd runs with socket_mode and socket_group exactly as conf/maildict.conf ships them;
the real Dovecot 2.3 (auth worker) and the real smtpd 6.8 (table-maildict as opensmtpd, which
smtpd starts with no supplementary groups) both get their answers, and another local user
(nobody) is refused. Then maildictd is restarted with a group smtpd's tables are not in (the
value conf/maildict.conf used to ship, `dovecot`): RCPT gets a 4xx, and smtpd's own log says
why ("permission denied: <socket>", socket_group/socket_mode), not only syslog.
"""
import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

MISSING = h.smtpd_missing(h.SMTPD_68)
SHIPPED_CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "conf",
                            "maildict.conf")


def shipped_socket_access():
    """socket_mode and socket_group as conf/maildict.conf sets them."""
    found = {}
    with open(SHIPPED_CONF) as f:
        for line in f:
            m = re.match(r"(socket_mode|socket_group)\s*=\s*(\S*)\s*$", line)
            if m:
                found[m.group(1)] = m.group(2)
    assert set(found) == {"socket_mode", "socket_group"}, found
    return found


CONNECT_AS = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    sys.exit(13)
sys.exit(0)
"""


@h.needs_peer(MISSING)
class SocketAccess(h.MailFlow, h.DaemonsTestCase):
    DAEMONS = ("smtpd", "dovecot", "maildictd")

    @classmethod
    def setUpClass(cls):
        h.require_programs()
        cls.tmp = h.TempDir()
        cls.maildictd = None
        cls.dovecot = None
        cls.smtpd = None
        try:
            cls.db = h.make_demo_db(cls.tmp.path)
            cls.maildictd = h.start_maildictd(cls.tmp.path, db_path=cls.db,
                                              **shipped_socket_access())
            cls.dovecot = h.start_dovecot(cls.tmp.path, cls.maildictd.socket, idle_msecs=h.SHIPPED_IDLE_MSECS,
                                          lmtp=True)
            cls.port = h.free_tcp_port()
            conf = h.shipped_smtpd_conf(cls.maildictd.conf_path, cls.dovecot.lmtp_socket,
                                        {25: cls.port})
            cls.smtpd = h.start_smtpd(cls.tmp.path, conf, h.SMTPD_68, ports=[cls.port])
        except BaseException:
            cls._dump_logs()
            cls.tearDownClass()
            raise

    def test_1_shipped_settings_let_both_daemons_in(self):
        st = os.stat(self.maildictd.socket)
        self.assertEqual(st.st_mode & 0o777, int(shipped_socket_access()["socket_mode"], 8))
        rc, out, err = self.dovecot.doveadm("auth", "test", "john@example.org",
                                            h.DEMO_PASSWORDS["john@example.org"])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("auth succeeded", out)
        code, msg = self.rcpt_reply("john@example.org")
        self.assertEqual(code, 250, "RCPT from smtpd's table as opensmtpd -> %d %r" % (code, msg))

    def test_2_other_local_users_are_refused(self):
        # the system python: the test's own interpreter may live where nobody cannot read
        r = subprocess.run(["/usr/bin/python3", "-c", CONNECT_AS, self.maildictd.socket],
                           user="nobody", group="nogroup", extra_groups=[],
                           capture_output=True, text=True, timeout=h.COMMAND_TIMEOUT)
        self.assertEqual(r.returncode, 13, "nobody connected to the socket: %r" % (r.stderr,))

    def test_3_a_refused_table_says_why_in_smtpds_log(self):
        md = type(self).maildictd
        md.stop()
        type(self).maildictd = None
        conf = dict(md.conf)
        conf["socket_group"] = "dovecot"      # not opensmtpd's primary group
        type(self).maildictd = h.Maildictd(self.tmp.path, conf, name="maildictd-dovecot").start()
        code, msg = self.rcpt_reply("john@example.org")
        self.assertTrue(400 <= code < 500, "RCPT with a socket smtpd may not reach -> %d %r"
                        % (code, msg))
        self.assertTrue(self.smtpd.alive())
        want = "permission denied: %s" % md.socket
        h.wait_until(lambda: want in self.smtpd.log_text(), h.STARTUP_TIMEOUT,
                     "%r in smtpd's log" % want)
        line = [l for l in self.smtpd.log_text().splitlines() if want in l][0]
        self.assertIn("socket_group", line)
        self.assertIn("table-maildict", line)


if __name__ == "__main__":
    unittest.main(verbosity=2)
