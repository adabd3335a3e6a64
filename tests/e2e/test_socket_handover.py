#!/usr/bin/env python3
"""An instance that stops late leaves its successor's socket alone (issue 12, item 6).

The overlap of a restart: instance A is still stopping (a hung database can hold it for
seconds) when instance B starts; A no longer accepts, so B removes A's socket file and binds a
new socket at the same path. Here the same situation is made without depending on timing:
A's socket file is removed while A runs, and B binds the path. Then A gets SIGTERM and exits.
B's socket must still be there and answer; A's log says it left the file in place. Finally B's
own stop removes its socket (it is still B's). Runs in about 2 s.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class SocketHandoverTest(unittest.TestCase):
    def test_overlapping_restart_keeps_the_new_socket(self):
        h.require_programs()
        with h.TempDir() as tmp:
            a = h.start_maildictd(tmp.path, name="instance-a")
            try:
                path = a.socket
                # fully started (the socket accepts before its mode and owner are set)
                h.wait_until(lambda: "serving the dict protocol" in a.log_text(), 30, "instance A to serve")
                inode_a = os.stat(path).st_ino
                os.unlink(path)    # what B does when A no longer accepts
                conf = dict(a.conf)
                b = h.Maildictd(tmp.path, conf, name="instance-b").start()
                with b:
                    inode_b = os.stat(path).st_ino
                    self.assertNotEqual(inode_a, inode_b)
                    a.stop()
                    self.assertTrue(os.path.exists(path), "instance A removed instance B's socket")
                    self.assertEqual(os.stat(path).st_ino, inode_b)
                    with h.DictClient(path, timeout=10) as c:
                        c.hello()
                        self.assertTrue(c.lookup(b"shared/passdb/john@example.org").startswith(b"O"))
                    self.assertIn("no longer this process's socket", a.log_text())
                self.assertFalse(os.path.exists(path), "instance B did not remove its own socket")
            finally:
                a.kill()


if __name__ == "__main__":
    unittest.main(verbosity=2)
