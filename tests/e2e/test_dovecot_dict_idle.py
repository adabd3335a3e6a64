#!/usr/bin/env python3
"""The shipped idle_msecs keeps Dovecot 2.3's auth-worker alive after a lone lookup.

Dovecot 2.3's dict client (lib-dict, dict-client.c in 2.3.19.1) arms a fixed 30 s request timer
when it sends a lookup. On a connection it has just opened, the idle timer already exists when
the reply arrives, and the client then only resets the idle timer: the request timer stays armed
with no lookup pending. Whichever fires first decides: the idle timer (idle_msecs) closes the
connection and removes the request timer; the request timer fires
client_dict_input_timeout(), which asserts that a lookup is pending and panics the auth-worker.
A login handed to that worker at that moment fails with temp_fail (seen once or twice in
~40,000 logins by tests/bench/logins.py when the URI said idle_msecs=60000).

One login through each of two private Dovecot 2.3 instances, each with its own maildictd, then
neither sees any traffic for more than 30 s:
  * "shipped": packaging/dovecot/dovecot-dict-auth.conf.ext as shipped (only the socket path
    substituted). Its auth-worker must not panic or be killed, its idle connection to maildictd
    must have been closed by Dovecot, and a second login must succeed.
  * "control": the same file with idle_msecs=60000 (what maildict shipped before). Its
    auth-worker must panic with the assertion above: this proves the wait is long enough and the
    log check can see the crash, so the "shipped" assertions could fail.
The waiting is on Dovecot's own 30 s constant; the test takes about 35 s.
"""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

PANIC = "client_dict_input_timeout): assertion failed: (cmd != NULL)"
CONTROL_IDLE_MSECS = 60000
# Past Dovecot's request timer, with room for a loaded machine's late timers.
QUIET_SECONDS = h.DOVECOT23_DICT_REQUEST_TIMEOUT_MSECS / 1000 + 5
CRASH_WAIT_SECONDS = 120


def login(dovecot, rip):
    login_name = "john@example.org"
    rc, out, err = dovecot.doveadm("auth", "test", "-x", "service=imap", "-x", "rip=" + rip,
                                   login_name, h.DEMO_PASSWORDS[login_name])
    return rc, out + err


def crashed(dovecot):
    text = dovecot.log_text()
    return PANIC in text or "killed with signal" in text


class LoneLookupThenQuiet(unittest.TestCase):
    def test_shipped_idle_msecs_outlives_the_request_timer(self):
        self.assertLess(h.SHIPPED_IDLE_MSECS, h.DOVECOT23_DICT_REQUEST_TIMEOUT_MSECS)
        with h.TempDir() as tmp, \
                h.start_maildictd(tmp.path, name="maildictd-shipped",
                                  socket=tmp.join("shipped.sock")) as m_shipped, \
                h.start_maildictd(tmp.path, name="maildictd-control",
                                  socket=tmp.join("control.sock")) as m_control, \
                h.start_dovecot(tmp.path, m_shipped.socket, idle_msecs=h.SHIPPED_IDLE_MSECS,
                                name="dovecot-shipped") as shipped, \
                h.start_dovecot(tmp.path, m_control.socket, idle_msecs=CONTROL_IDLE_MSECS,
                                name="dovecot-control") as control:
            # One lookup each on a fresh connection (a new auth-worker's first), then silence.
            for dovecot in (shipped, control):
                rc, text = login(dovecot, "127.0.3.1")
                self.assertEqual(rc, 0, "first login through %s failed:\n%s" % (dovecot.dir, text))
            quiet_since = time.monotonic()

            h.wait_until(lambda: crashed(control), CRASH_WAIT_SECONDS,
                         "the control auth-worker (idle_msecs=%d) to panic" % CONTROL_IDLE_MSECS,
                         interval=0.5)
            self.assertIn(PANIC, control.log_text())
            remaining = quiet_since + QUIET_SECONDS - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)

            self.assertFalse(crashed(shipped),
                             "shipped idle_msecs=%d: auth-worker crashed:\n%s"
                             % (h.SHIPPED_IDLE_MSECS, h.tail(shipped.log_path, 20)))
            # Dovecot's idle timer closed the connection; maildictd's own idle_timeout (300 s
            # by default) is far away, so only Dovecot could have closed it.
            self.assertEqual(h.unix_connections(m_shipped.socket), 0,
                             "Dovecot kept its idle dict connection past idle_msecs")
            rc, text = login(shipped, "127.0.3.2")
            self.assertEqual(rc, 0, "login after the quiet spell failed:\n%s" % text)
            self.assertNotIn("temp_fail", text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
