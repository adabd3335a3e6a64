#!/usr/bin/env python3
"""The SQLite directory is private (issue 12, item 5, acceptance).

The directory holds password hashes and relay passwords in clear text (smtpd needs them so), so
no local user but its owner and group may read it:

  * a database created by `maildict-admin demo`, by `maildictctl` (first change on a missing
    file) and by maildictd (first start on a missing file) has no permission for others: 0640
    under the usual umask 022, 0660 under umask 002 (a group of admin tools that write it);
    its -wal and -shm files, which SQLite creates with the database's mode, are just as
    private;
  * maildictd warns at start when an existing database (or its -wal/-shm) is readable by
    others, and says nothing of the kind when it is not.

Runs in a few seconds.
"""
import os
import stat
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

WARNING = "readable by every local user"


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class Umask:
    def __init__(self, mask):
        self.mask = mask

    def __enter__(self):
        self.saved = os.umask(self.mask)

    def __exit__(self, *exc):
        os.umask(self.saved)
        return False


class FreshFilesArePrivate(unittest.TestCase):
    def setUp(self):
        h.require_programs()
        if not os.access(h.maildictctl_path(), os.X_OK):
            raise AssertionError("missing program %s (MAILDICT_BUILD_DIR=%s)" % (h.maildictctl_path(), h.BUILD_DIR))
        self.tmp = h.TempDir()
        self.addCleanup(self.tmp.cleanup)

    def assert_private(self, path, expected):
        for f in (path, path + "-wal", path + "-shm"):
            if f != path and not os.path.exists(f):
                continue
            self.assertEqual(mode_of(f), expected, "%s has mode %04o, expected %04o" % (f, mode_of(f), expected))

    def serve_one(self, d):
        with h.DictClient(d.socket) as c:
            c.hello()
            self.assertTrue(c.lookup(b"shared/passdb/john@example.org").startswith(b"O"))

    def test_maildict_admin_demo(self):
        for mask, expected in ((0o022, 0o640), (0o002, 0o660)):
            with Umask(mask):
                db = h.make_demo_db(self.tmp.path, name="demo-%03o.db" % mask)
            self.assert_private(db, expected)

    def test_maildictd_then_maildictctl(self):
        """maildictd creates the file; while it runs (its connections keep -wal and -shm) a
        change by maildictctl writes the WAL: all three files are private."""
        for mask, expected in ((0o022, 0o640), (0o002, 0o660)):
            db = os.path.join(self.tmp.path, "served-%03o.db" % mask)
            with Umask(mask):
                d = h.start_maildictd(self.tmp.path, db, name="maildictd-%03o" % mask)
                try:
                    with h.DictClient(d.socket) as c:
                        c.hello()
                        self.assertEqual(c.lookup(b"shared/passdb/nobody@example.com"), b"N")
                    rc, out, err = h.maildictctl(d.conf_path, "domain", "add", "example.com")
                    self.assertEqual(rc, 0, out + err)
                    self.assertTrue(os.path.exists(db + "-wal"), "no -wal while maildictd runs")
                    self.assertTrue(os.path.exists(db + "-shm"), "no -shm while maildictd runs")
                    self.assert_private(db, expected)
                    self.assertNotIn(WARNING, d.log_text())
                finally:
                    d.stop()

    def test_maildictctl_creates_the_database(self):
        db = os.path.join(self.tmp.path, "ctl.db")
        conf = os.path.join(self.tmp.path, "ctl.conf")
        with open(conf, "w") as f:
            f.write("database = sqlite:%s\nsocket = %s\n" % (db, os.path.join(self.tmp.path, "none.sock")))
        with Umask(0o022):
            rc, out, err = h.maildictctl(conf, "domain", "add", "example.com")
        self.assertEqual(rc, 0, out + err)
        self.assert_private(db, 0o640)

    def test_maildictd_warns_about_a_database_others_can_read(self):
        db = h.make_demo_db(self.tmp.path)
        os.chmod(db, 0o644)
        d = h.start_maildictd(self.tmp.path, db, name="open")
        self.serve_one(d)
        d.stop()
        warnings = [l for l in d.log_text().splitlines() if WARNING in l]
        self.assertEqual(len(warnings), 1, d.log_text())
        self.assertIn(db, warnings[0])
        self.assertIn("0644", warnings[0])

        os.chmod(db, 0o640)
        d = h.start_maildictd(self.tmp.path, db, name="closed")
        self.serve_one(d)
        d.stop()
        self.assertNotIn(WARNING, d.log_text())


if __name__ == "__main__":
    unittest.main(verbosity=2)
