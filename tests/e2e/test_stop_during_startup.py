#!/usr/bin/env python3
"""A stop signal during start-up stops maildictd cleanly (exit 0, socket file removed).

maildictd binds its socket before it opens the database and prepares the operator's queries;
a supervisor (or a test) that sees the socket may send SIGTERM at once. Before the fix the
signal arrived before the server handled it and killed the process with the default action
(exit -15, the socket file left behind). Each round here sends SIGTERM the moment the socket
file appears, several rounds over one demo directory. Runs in a few seconds.
"""
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ROUNDS = 5


class StopDuringStartupTest(unittest.TestCase):
    def test_sigterm_as_soon_as_the_socket_exists(self):
        h.require_programs()
        with h.TempDir() as tmp:
            # a configured instance whose start-up has finished once (demo directory created)
            first = h.start_maildictd(tmp.path, name="first")
            first.stop()
            for i in range(ROUNDS):
                if os.path.exists(first.socket):
                    os.unlink(first.socket)
                log_path = os.path.join(tmp.path, "round-%d.log" % i)
                with open(log_path, "wb") as logf:
                    proc = subprocess.Popen([h.maildictd_path(), "-c", first.conf_path],
                                            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
                try:
                    deadline = time.monotonic() + h.STARTUP_TIMEOUT
                    while not os.path.exists(first.socket):
                        self.assertIsNone(proc.poll(), "maildictd exited during start-up")
                        self.assertLess(time.monotonic(), deadline, "no socket")
                        time.sleep(0.0005)
                    proc.send_signal(signal.SIGTERM)
                    rc = proc.wait(timeout=30)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                with open(log_path, errors="replace") as f:
                    log = f.read()
                self.assertEqual(rc, 0, "round %d: SIGTERM during start-up gave exit %s; log:\n%s"
                                 % (i, rc, log))
                self.assertFalse(os.path.exists(first.socket),
                                 "round %d: the socket file was left behind" % i)


if __name__ == "__main__":
    unittest.main(verbosity=2)
