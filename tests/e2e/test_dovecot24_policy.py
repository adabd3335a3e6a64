#!/usr/bin/env python3
"""Dovecot 2.4.1's auth policy client (the trixie tree) against maildictd's policy server on its
UNIX socket (policy_socket, no TCP listener), with the shipped
packaging/dovecot/30-maildict-policy-2.4.conf unchanged but for the socket path, nonce and key,
and logins through the shipped 10-maildict-2.4.conf and maildict-auth.lua. The socket has mode
0660 and the tree's dovecot group (what policy_socket_group = dovecot gives on a real host; the
tree's gids differ from the host's, so the test sets the group by number): Dovecot's auth
process, which runs as dovecot and makes the policy requests, gets in. The two scenarios of
test_auth_policy.py that matter most, on the new Dovecot:
  * wrong passwords for one user from one IP: first refused normally, then tarpitted (Dovecot
    holds the login), then rejected by the policy, even with the right password; the same user
    from another IP logs in at once;
  * one stale password retried 12 times from one IP is throttled less than 12 distinct ones,
    and the owner with the right password still gets in.
The socket's peer is checked with `ss`: the auth process, running as dovecot.
Each attempt carries its own session id, so its policy outcome is read from Dovecot's reply
(reason=) and its log ("Policy check action is tarpit N second(s)").
"""
import os
import re
import subprocess
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
        db = h.make_demo_db(cls.tmp.path)
        policy_socket = tree.check_socket_path(os.path.join(priv, "p.sock"))
        conf = h.maildict_config(cls.tmp.path, db,
                                 socket=tree.check_socket_path(os.path.join(priv, "d.sock")),
                                 policy_socket=policy_socket, policy_socket_mode="0660",
                                 policy_socket_group="", **POLICY)
        cls.maildictd = h.Maildictd(cls.tmp.path, conf).start()
        try:
            # policy_socket_group = dovecot, in the tree's numbers
            os.chown(policy_socket, -1, tree.gid("dovecot"))
            cls.tree = tree
            extra = tx.shipped_24_policy_extra(tree.inside(policy_socket), "e2e-nonce", API_KEY)
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
        self.assert_policy_peer_is_the_auth_process_as_dovecot("john@example.org", right,
                                                               "198.51.100.3")

    def assert_policy_peer_is_the_auth_process_as_dovecot(self, user, password, rip):
        """The policy socket's peer is Dovecot's auth process (not auth-worker, not root): it
        runs as the tree's dovecot user and group, so mode 0660 and group dovecot let exactly
        it in. Dovecot keeps the connection open after a request, so `ss` names its peer right
        after a login; should it have closed the connection already, log in again."""
        sock = self.maildictd.conf["policy_socket"]
        st = os.stat(sock)
        self.assertEqual((st.st_mode & 0o777, st.st_gid), (0o660, self.tree.gid("dovecot")))
        peers = _unix_peer_pids(sock)
        for _ in range(3):
            if peers:
                break
            self.assertTrue(self.attempt(user, password, rip).ok)
            peers = _unix_peer_pids(sock)
        self.assertTrue(peers, "no open connection to %s seen" % sock)
        for pid in peers:
            self.assertTrue(_cmdline(pid).endswith("/auth"), _cmdline(pid))
            self.assertIn(pid, _descendants(self.dovecot.proc.pid))
            self.assertEqual(_ids(pid), (self.tree.uid("dovecot"), self.tree.gid("dovecot")))

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


def _descendants(root):
    """The pids of all processes below root (from /proc's parent links)."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _unix_peer_pids(path):
    """The pids of the processes connected to the listening UNIX socket at path (from
    `ss -xpn`: the accepted side shows the path and the peer's inode)."""
    out = subprocess.run(["ss", "-xpn"], capture_output=True, text=True, check=True).stdout
    rows = [l.split() for l in out.splitlines()[1:]]
    # Netid State Recv-Q Send-Q Local-Address Port Peer-Address Port [Process]
    peer_inodes = {r[7] for r in rows if len(r) >= 8 and r[1] == "ESTAB" and r[4] == path}
    pids = set()
    for r in rows:
        if len(r) >= 9 and r[5] in peer_inodes:
            pids.update(int(x) for x in re.findall(r"pid=(\d+)", r[8]))
    return sorted(pids)


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _ids(pid):
    """-> (real uid, real gid) of a process."""
    with open("/proc/%d/status" % pid) as f:
        fields = dict(l.split(":", 1) for l in f if ":" in l)
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


if __name__ == "__main__":
    unittest.main(verbosity=2)
