#!/usr/bin/env python3
"""An unavailable database is a temporary failure, never "unknown user" (DESIGN.md §2 rule 1).

(a) The database is locked by another process for longer than maildictd's request_timeout
    (500ms, cache off): `doveadm auth test` fails with code=temp_fail (for a known and an unknown
    user alike), `doveadm user` is an internal failure (exit 75), never "doesn't exist", raw
    lookups answer F. After the lock is released everything works again.

    How the lock is taken (checked by experiment with SQLite 3.40, Debian bookworm):
    maildictd keeps its database in WAL mode, where readers are not blocked by writers. The
    obvious lock, `PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;` plus a written row, does
    block WAL readers, but only if it is taken while no other connection has the database open:
    an idle WAL connection (maildictd's pool) keeps it from ever being acquired ("database is
    locked"). So while maildictd runs, the locker process takes exclusive POSIX (fcntl) locks on
    the WAL-index lock bytes of the `-shm` file instead: offsets 120..127 (WAL_WRITE_LOCK,
    WAL_CKPT_LOCK, WAL_RECOVER_LOCK, WAL_READ_LOCK(0..4); see https://sqlite.org/walformat.html,
    "2.3 Locks"). A reader then cannot get any read mark: SQLite retries for about 10 s without
    calling the busy handler, and fails with SQLITE_PROTOCOL ("locking protocol"). Releasing
    the locks lets the next attempt succeed. Should the database not be in WAL mode (or no
    -shm exist), the locker falls back to the exclusive SQLite transaction described above.
    Either way the test first proves that the lock blocks an independent sqlite3 reader.

(b) The database file is unreadable: maildictd runs with `user = nobody`, the file is chmod
    000 before it starts: lookups are temporary failures (and maildictd still starts); after
    chmod 600 they succeed.

(c) With the auth policy on, logins that fail during the outage are not counted as brute
    force: Dovecot 2.3 reports a login whose passdb lookup failed temporarily exactly like a
    wrong password (`"success":false`), so with every retry counted, four users behind one
    address retrying their right passwords would get that address rejected once the database is
    back. maildictd knows those lookups failed and does not count them; wrong passwords after
    the outage still are.
"""
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

LOCKER = r'''
import fcntl, os, sqlite3, sys
db = sys.argv[1]
with open(db, "rb") as f:
    header = f.read(100)
wal = header[18] == 2 and header[19] == 2
shm = db + "-shm"
held = []
if wal and os.path.exists(shm):
    fd = os.open(shm, os.O_RDWR)
    # blocking: waits for any reader that is inside a transaction right now
    fcntl.lockf(fd, fcntl.LOCK_EX, 8, 120, os.SEEK_SET)
    held.append(fd)
    method = "fcntl locks on %s bytes 120..127" % shm
else:
    c = sqlite3.connect(db, isolation_level=None, timeout=30)
    c.execute("PRAGMA locking_mode=EXCLUSIVE")
    c.execute("BEGIN EXCLUSIVE")
    c.execute("CREATE TABLE e2e_lock(x)")
    c.execute("INSERT INTO e2e_lock VALUES (1)")
    held.append(c)
    method = "sqlite locking_mode=EXCLUSIVE transaction (journal %s)" % ("wal" if wal else "rollback")
print("LOCKED", method, flush=True)
sys.stdin.readline()
for x in held:
    if isinstance(x, int):
        os.close(x)
    else:
        x.execute("ROLLBACK")
        x.close()
print("RELEASED", flush=True)
'''

READER = r'''
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=1.0)
print(c.execute("SELECT count(*) FROM sqlite_master").fetchall(), flush=True)
'''

_rip = [0]


def rip():
    _rip[0] += 1
    return "127.0.1.%d" % _rip[0]


class Locker:
    """Another process that holds the database locked until release()."""

    def __init__(self, db_path):
        self.db_path = db_path
        self.proc = h.spawn([sys.executable, "-c", LOCKER, db_path], "database locker",
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("LOCKED"):
            h.kill_and_wait(self.proc)
            raise AssertionError("locker failed: %r" % line)
        self.method = line.split(None, 1)[1].strip()
        h.log("database locked with", self.method)

    def assert_blocks_readers(self):
        """Precondition: an independent sqlite3 reader cannot read while we hold the lock."""
        r = h.spawn([sys.executable, "-c", READER, self.db_path], "probe reader",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = r.communicate(timeout=5)
            h.kill_and_wait(r)
            assert r.returncode != 0, \
                "the lock (%s) does not block a sqlite3 reader: it read %s" % (self.method, out)
            assert "locked" in err or "locking protocol" in err or "busy" in err, err
        except subprocess.TimeoutExpired:
            h.kill_and_wait(r, timeout=10)   # still blocked after 5 s: the lock works

    def release(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("release\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            self.proc.wait(timeout=30)     # it exits by itself after RELEASED
            h.kill_and_wait(self.proc)     # bookkeeping, closes the pipes
            assert line.startswith("RELEASED"), line


class DovecotChecks:
    """Assertions shared by both cases; needs self.dovecot and self.maildictd."""

    def auth(self, user, password):
        r = rip()
        rc, out, err = self.dovecot.doveadm("auth", "test", "-x", "rip=" + r, user, password)
        ok, fields = h.parse_auth_test(out)
        return rc, ok, fields, out + err, r

    def assert_auth_ok(self):
        rc, ok, fields, text, _ = self.auth("john@example.org",
                                            h.DEMO_PASSWORDS["john@example.org"])
        self.assertEqual(rc, 0, text)
        self.assertTrue(ok, text)
        self.assertEqual(fields.get("user"), "john@example.org", text)

    def assert_auth_tempfail(self, user, password):
        rc, ok, fields, text, r = self.auth(user, password)
        self.assertNotEqual(rc, 0, text)
        self.assertIs(ok, False, text)
        self.assertEqual(fields.get("code"), "temp_fail",
                         "%s: expected code=temp_fail:\n%s" % (user, text))
        lines = self.dovecot.log_lines_for(r, "Failed to lookup key")
        self.assertFalse(any("unknown user" in l for l in lines), "\n".join(lines))
        self.assertTrue(any("Failed to lookup key" in l for l in lines),
                        "Dovecot should log a dict failure:\n" + "\n".join(lines))

    def assert_userdb_ok(self):
        rc, out, err = self.dovecot.doveadm("user", "john@example.org")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(h.parse_doveadm_user(out).get("quota_rule"), h.JOHN_QUOTA_RULE, out)

    def assert_userdb_internal_failure(self, name):
        rc, out, err = self.dovecot.doveadm("user", name)
        self.assertEqual(rc, h.EX_TEMPFAIL, "doveadm user %s: rc %d\n%s%s" % (name, rc, out, err))
        self.assertIn("Auth USER lookup failed", out + err)
        self.assertNotIn("doesn't exist", out + err)

    def assert_raw_lookups_fail(self):
        with h.DictClient(self.maildictd.socket) as c:
            c.hello()
            for key in (b"shared/passdb/john@example.org", b"shared/userdb/john@example.org",
                        b"shared/passdb/nosuch@example.org"):
                t0 = time.monotonic()
                reply = c.lookup(key, b"")
                # informational only (no timing assertion): DESIGN.md §2 rule 2 wants the
                # answer within request_timeout
                h.log("%s -> %r after %.2fs (request_timeout %s)"
                      % (key.decode(), reply[:60], time.monotonic() - t0,
                         self.maildictd.conf["request_timeout"]))
                self.assertTrue(reply.startswith(b"F"), "%r -> %r" % (key, reply))
                for secret in h.SECRET_FRAGMENTS:
                    self.assertNotIn(secret.encode(), reply)

    def assert_raw_lookup_ok(self):
        with h.DictClient(self.maildictd.socket) as c:
            c.hello()
            v = h.reply_json(c.lookup(b"shared/passdb/john@example.org", b""))
            self.assertEqual(v.get("user"), "john@example.org")

    def assert_all_fails_temporarily(self):
        self.assert_auth_tempfail("john@example.org", h.DEMO_PASSWORDS["john@example.org"])
        # an unknown user cannot be told apart while the database is away: temp_fail too
        self.assert_auth_tempfail("nosuch@example.org", "whatever")
        self.assert_userdb_internal_failure("john@example.org")
        self.assert_userdb_internal_failure("nosuch@example.org")
        rc, out, err = self.dovecot.doveadm("user", "*")
        self.assertNotEqual(rc, 0, "iteration should fail:\n" + out + err)
        self.assert_raw_lookups_fail()
        self.assertTrue(self.maildictd.alive())

    def wait_for_recovery(self):
        """Polls raw lookups until the database answers again (maildictd may wait a moment
        before it reopens a failed database connection)."""
        def answered():
            with h.DictClient(self.maildictd.socket) as c:
                c.hello()
                return c.lookup(b"shared/passdb/john@example.org", b"").startswith(b"O")
        h.wait_until(answered, 60, "maildictd to serve lookups again", interval=0.2)

    def assert_all_works(self):
        self.assert_auth_ok()
        self.assert_userdb_ok()
        rc, out, err = self.dovecot.doveadm("user", "nosuch@example.org")
        self.assertEqual(rc, h.EX_NOUSER, out + err)
        self.assert_raw_lookup_ok()


class DatabaseLocked(DovecotChecks, unittest.TestCase):
    def setUp(self):
        h.require_programs()
        self.tmp = h.TempDir()
        self.addCleanup(self.tmp.cleanup)
        self.db = h.make_demo_db(self.tmp.path)
        self.maildictd = h.start_maildictd(self.tmp.path, self.db, request_timeout="500ms",
                                           cache_entries=0, db_connections=2)
        self.addCleanup(self.maildictd.stop)
        self.dovecot = h.start_dovecot(self.tmp.path, self.maildictd.socket)
        self.addCleanup(self.dovecot.stop)

    def test_locked_database_is_a_temporary_failure(self):
        self.assert_all_works()   # baseline; maildictd now has the database open
        locker = Locker(self.db)
        self.addCleanup(locker.release)
        locker.assert_blocks_readers()
        self.assert_all_fails_temporarily()
        locker.release()
        self.wait_for_recovery()
        self.assert_all_works()


class OutageIsNotBruteForce(DovecotChecks, unittest.TestCase):
    OFFICE = "198.51.100.7"     # everybody's logins come from this one address
    API_KEY = "outage-key"

    def setUp(self):
        h.require_programs()
        self.tmp = h.TempDir()
        self.addCleanup(self.tmp.cleanup)
        self.db = h.make_demo_db(self.tmp.path)
        self.port = h.free_tcp_port()
        # strict thresholds: every failure counts (no distinct-password leniency), 3 failures of
        # one login or 4 of one address get a rejection
        self.maildictd = h.start_maildictd(
            self.tmp.path, self.db, request_timeout="500ms", cache_entries=0, db_connections=2,
            policy_listen="127.0.0.1:%d" % self.port, policy_api_key=self.API_KEY,
            policy_window="10m", policy_repeats_per_failure=1,
            policy_ip_login_tarpit=0, policy_ip_login_reject=3,
            policy_ip_tarpit=0, policy_ip_reject=4,
            policy_login_tarpit=0, policy_login_reject=0)
        self.addCleanup(self.maildictd.stop)
        self.dovecot = h.start_dovecot(
            self.tmp.path, self.maildictd.socket,
            extra=h.dovecot_policy_extra(self.port, "outage-nonce", self.API_KEY))
        self.addCleanup(self.dovecot.stop)

    def login(self, user, password):
        rc, out, err = self.dovecot.doveadm("auth", "test", "-x", "service=imap",
                                            "-x", "rip=" + self.OFFICE, user, password)
        ok, fields = h.parse_auth_test(out)
        return ok, fields, out + err

    def test_logins_failing_during_an_outage_are_not_counted(self):
        users = sorted(u for u in h.ACTIVE_USERS if u in h.DEMO_PASSWORDS)
        self.assertGreaterEqual(len(users), 4)
        ok, fields, text = self.login(users[0], h.DEMO_PASSWORDS[users[0]])
        self.assertTrue(ok, text)
        before = h.policy_metrics(self.port)

        locker = Locker(self.db)
        self.addCleanup(locker.release)
        for user in users:
            for _ in range(3):
                ok, fields, text = self.login(user, h.DEMO_PASSWORDS[user])
                self.assertIs(ok, False, text)
                self.assertEqual(fields.get("code"), "temp_fail", text)
        locker.release()
        self.wait_for_recovery()

        # Dovecot did report those failures, and maildictd set them aside (the report comes
        # after the auth reply, so wait for it)
        tried = 3 * len(users)

        def progress():
            m = h.policy_metrics(self.port)
            return (m['maildict_policy_requests_total{kind="report"}'] -
                    before['maildict_policy_requests_total{kind="report"}'],
                    m["maildict_policy_failures_not_counted_total"])
        try:
            h.wait_until(lambda: progress()[1] >= tried, 30,
                         "maildictd to set aside %d reports of failed lookups" % tried)
        except AssertionError:
            reports, set_aside = progress()
            raise AssertionError("%d logins failed during the outage; Dovecot reported %d, "
                                 "maildictd set aside %d\nmaildictd log:\n%s"
                                 % (tried, reports, set_aside, h.tail(self.maildictd.log_path, 30)))
        self.assertEqual(progress()[0], tried)

        # everybody logs in at once from the office once the database is back
        for user in users:
            ok, fields, text = self.login(user, h.DEMO_PASSWORDS[user])
            self.assertTrue(ok, "%s after the outage:\n%s" % (user, text))
        self.assertEqual(h.policy_metrics(self.port)['maildict_policy_decisions_total{decision="reject"}'], 0)

        # and wrong passwords are still counted: the third one of a login is rejected
        victim = users[1]
        for i in range(3):
            ok, fields, text = self.login(victim, "wrong-after-outage-%d" % i)
            self.assertIs(ok, False, text)
            self.assertNotIn("code", fields, text)
        ok, fields, text = self.login(victim, h.DEMO_PASSWORDS[victim])
        self.assertIs(ok, False, "the policy should now reject %s from %s:\n%s"
                      % (victim, self.OFFICE, text))
        self.assertIn("Too many failed logins", fields.get("reason", ""), text)


class DatabaseUnreadable(DovecotChecks, unittest.TestCase):
    def setUp(self):
        h.require_programs()
        self.tmp = h.TempDir()
        self.addCleanup(self.tmp.cleanup)
        self.db = h.make_demo_db(self.tmp.path)
        # maildictd runs as nobody: it needs the directory (socket, WAL files) and the database
        for name in os.listdir(self.tmp.path):
            os.chown(self.tmp.join(name), h.NOBODY_UID, h.NOGROUP_GID)
        os.chown(self.tmp.path, h.NOBODY_UID, h.NOGROUP_GID)
        os.chmod(self.db, 0o000)
        self.maildictd = h.start_maildictd(self.tmp.path, self.db, user="nobody",
                                           request_timeout="500ms", cache_entries=0)
        self.addCleanup(self.maildictd.stop)
        self.dovecot = h.start_dovecot(self.tmp.path, self.maildictd.socket)
        self.addCleanup(self.dovecot.stop)

    def test_unreadable_database_is_a_temporary_failure(self):
        with open("/proc/%d/status" % self.maildictd.pid) as f:
            uids = next(l for l in f if l.startswith("Uid:")).split()[1:]
        self.assertEqual(set(uids), {str(h.NOBODY_UID)}, "maildictd should run as nobody")
        self.assert_all_fails_temporarily()
        os.chmod(self.db, 0o600)
        self.wait_for_recovery()
        self.assert_all_works()


if __name__ == "__main__":
    unittest.main(verbosity=2)
