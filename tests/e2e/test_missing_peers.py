#!/usr/bin/env python3
"""A missing peer fails the test command and is a skip only by hand (issue 12).

Runs a small test module (written to a temporary file) that uses harness.needs_peer() on a class
and harness.require_peer() in a method and in setUpClass, with a peer reported missing, twice:
  * with MAILDICT_REQUIRE_PEERS=1 (as tests/run-all.sh sets it): the module must exit non-zero
    with every test failed or errored and none skipped;
  * without it: exit 0, every test skipped, and each skip says the test command would fail.
A present peer (None) must run the test in both modes. Needs no daemon; takes well under 10 s.
"""
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))

MODULE = r'''
import os, sys, unittest
sys.path.insert(0, %(here)r)
import harness as h

GONE = "smtpd-for-test is missing"

@h.needs_peer(GONE)
class WholeClass(unittest.TestCase):
    def test_a(self):
        print("RAN whole-class test")

class InMethod(unittest.TestCase):
    def test_b(self):
        h.require_peer(GONE)
        print("RAN in-method test")

class InSetUpClass(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        h.require_peer(GONE)

    def test_c(self):
        print("RAN set-up-class test")

@h.needs_peer(None)
class Present(unittest.TestCase):
    def test_d(self):
        h.require_peer(None)
        print("RAN present-peer test")

if __name__ == "__main__":
    unittest.main(verbosity=2)
'''


def run(require):
    env = dict(os.environ)
    env.pop("MAILDICT_REQUIRE_PEERS", None)
    if require:
        env["MAILDICT_REQUIRE_PEERS"] = "1"
    with tempfile.TemporaryDirectory(prefix="maildict-peers-") as d:
        path = os.path.join(d, "peers_module.py")
        with open(path, "w") as f:
            f.write(MODULE % {"here": HERE})
        r = subprocess.run([sys.executable, path], capture_output=True, text=True, env=env, timeout=60)
    return r.returncode, r.stdout + r.stderr


class MissingPeers(unittest.TestCase):
    def test_required_peers_fail(self):
        rc, out = run(require=True)
        self.assertNotEqual(rc, 0, out)
        self.assertNotIn("skipped", out, out)
        self.assertIn("MAILDICT_REQUIRE_PEERS=1, so this is a failure", out)
        self.assertRegex(out, r"FAILED \((failures|errors)=", out)
        for name in ("whole-class", "in-method", "set-up-class"):
            self.assertNotIn("RAN %s test" % name, out)
        self.assertIn("RAN present-peer test", out)

    def test_by_hand_missing_peers_skip_and_say_so(self):
        rc, out = run(require=False)
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"OK \(skipped=3\)", out)
        self.assertIn("sets MAILDICT_REQUIRE_PEERS=1 and fails here", out)
        for name in ("whole-class", "in-method", "set-up-class"):
            self.assertNotIn("RAN %s test" % name, out)
        self.assertIn("RAN present-peer test", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
