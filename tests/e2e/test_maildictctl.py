#!/usr/bin/env python3
"""maildictctl against a running maildictd (cache on), a real Dovecot 2.3 and a real
OpenSMTPD 6.8 delivering over LMTP (issue 6, part 1, acceptance).

maildictd starts on an empty database (it creates the schema) and is never restarted or
signalled. With maildictctl only:
  * a domain, a user (password on stdin, bcrypt) and an alias with two destinations are
    created; the very next Dovecot login (doveadm auth test) succeeds, and smtpd accepts and
    delivers mail to the user and through the alias, read back over IMAP;
  * `user passwd` takes effect at once: the old password is refused right after, the new one
    accepted (the old one was cached just before);
  * disable / enable / remove of a user take effect at once for Dovecot and smtpd;
  * a catch-all and an alias domain created later work at once;
  * `lookup` shows what Dovecot and smtpd get, names the rule that matched, and hides the hash
    unless --show-secrets;
  * bad input (invalid address, duplicate user, alias loop, missing domain, password on argv,
    disabled domain, a domain that still has users, ...) exits non-zero with a clear message
    and leaves the database byte-for-byte the same (a full SQL dump before and after).
Without smtpd (smtpd_missing()), the delivery parts fail under the test command and are skipped
when the test is run by hand (harness.require_peer); the rest still runs.
"""
import imaplib
import os
import pty
import secrets
import subprocess
import select
import smtplib
import sqlite3
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SMTP_TIMEOUT = 60
DELIVERY_TIMEOUT = 60
SENDER = "tester@client.test"
SMTPD_MISSING = h.smtpd_missing(h.SMTPD_68)

# Users created by the tests, and their current passwords.
PASSWORDS = {}


def rip_generator():
    n = 0
    while True:
        n += 1
        yield "127.0.%d.%d" % (n // 250 + 1, n % 250 + 1)


RIPS = rip_generator()


class Maildictctl(h.DaemonsTestCase):
    DAEMONS = ("smtpd", "dovecot", "maildictd")

    @classmethod
    def setUpClass(cls):
        h.require_programs()
        if not os.access(h.maildictctl_path(), os.X_OK):
            raise SystemExit("e2e: missing program %s" % h.maildictctl_path())
        cls.tmp = h.TempDir()
        cls.maildictd = cls.dovecot = cls.smtpd = None
        try:
            cls.vmail = cls.tmp.join("vmail")
            os.makedirs(cls.vmail)
            os.chown(cls.vmail, h.NOBODY_UID, h.NOGROUP_GID)
            os.chmod(cls.vmail, 0o755)
            cls.db = cls.tmp.join("directory.db")   # does not exist: maildictd creates it
            # the answer cache on, with a TTL far longer than the test: only invalidation on
            # commit can make changes visible
            cls.maildictd = h.start_maildictd(cls.tmp.path, db_path=cls.db, socket_mode="0660",
                                              socket_group="root" if SMTPD_MISSING else "opensmtpd",
                                              cache_entries="1000",
                                              cache_ttl="1h")
            cls.conf = cls.maildictd.conf_path
            cls.dovecot = h.start_dovecot(cls.tmp.path, cls.maildictd.socket,
                                          idle_msecs=h.SHIPPED_IDLE_MSECS,
                                          imap=True, lmtp=not SMTPD_MISSING)
            if not SMTPD_MISSING:
                cls.port = h.free_tcp_port()
                conf = h.shipped_smtpd_conf(cls.maildictd.conf_path, cls.dovecot.lmtp_socket,
                                            {25: cls.port})
                cls.smtpd = h.start_smtpd(cls.tmp.path, conf, h.SMTPD_68, ports=[cls.port])
            cls.maildictd_pid = cls.maildictd.pid
        except BaseException:
            cls._dump_logs()
            cls.tearDownClass()
            raise

    def setUp(self):
        self.assertTrue(self.maildictd.alive(), "maildictd died:\n" + h.tail(self.maildictd.log_path))
        # never restarted: the same process serves every test
        self.assertEqual(self.maildictd.pid, self.maildictd_pid)

    # ---- helpers ----

    def ctl(self, *args, stdin=None, expect=0):
        rc, out, err = h.maildictctl(self.conf, *args, stdin=stdin)
        if expect is not None:
            self.assertEqual(rc, expect, "maildictctl %s -> %d\nstdout: %s\nstderr: %s"
                             % (" ".join(args), rc, out, err))
        return rc, out, err

    def add_user(self, address, password, *extra):
        self.ctl("user", "add", address, "--cost", "4", *extra, stdin=password + "\n")
        PASSWORDS[address.lower()] = password

    def dump(self):
        """Every row of the database, as SQL text."""
        with sqlite3.connect(self.db) as c:
            return "\n".join(c.iterdump())

    def auth(self, user, password):
        rc, out, err = self.dovecot.doveadm("auth", "test", "-x", "service=imap",
                                            "-x", "rip=" + next(RIPS), user, password)
        ok, fields = h.parse_auth_test(out)
        text = out + err
        self.assertNotIn("temporary", text.lower(), text)   # never a temp_fail here
        return bool(ok) and rc == 0, fields, text

    def assert_login(self, user, password, canonical=None):
        ok, fields, text = self.auth(user, password)
        self.assertTrue(ok, "login %s refused:\n%s" % (user, text))
        self.assertEqual(fields.get("user"), canonical or user, text)

    def assert_no_login(self, user, password):
        ok, fields, text = self.auth(user, password)
        self.assertFalse(ok, "login %s accepted:\n%s" % (user, text))

    def smtp(self):
        s = smtplib.SMTP("127.0.0.1", self.port, timeout=SMTP_TIMEOUT)
        self.addCleanup(self._quit, s)
        code, msg = s.ehlo("client.test")
        self.assertEqual(code, 250, msg)
        return s

    @staticmethod
    def _quit(s):
        try:
            s.quit()
        except Exception:
            pass

    def rcpt_code(self, rcpt):
        s = self.smtp()
        code, msg = s.mail(SENDER)
        self.assertEqual(code, 250, msg)
        code, msg = s.rcpt(rcpt)
        s.rset()
        return code, msg

    def send(self, rcpt):
        token = secrets.token_hex(8)
        s = self.smtp()
        code, msg = s.mail(SENDER)
        self.assertEqual(code, 250, msg)
        code, msg = s.rcpt(rcpt)
        self.assertEqual(code, 250, "RCPT TO:<%s> -> %d %r" % (rcpt, code, msg))
        body = ("From: %s\r\nTo: %s\r\nSubject: ctl %s\r\nMessage-ID: <%s@e2e.maildict.test>\r\n"
                "\r\nhello\r\n" % (SENDER, rcpt, token, token)).encode()
        code, msg = s.data(body)
        self.assertEqual(code, 250, msg)
        return token

    def imap_count(self, user, token):
        c = imaplib.IMAP4("127.0.0.1", self.dovecot.imap_port, timeout=SMTP_TIMEOUT)
        try:
            typ, data = c.login(user, PASSWORDS[user])
            self.assertEqual(typ, "OK", data)
            typ, data = c.select("INBOX")
            self.assertEqual(typ, "OK", data)
            typ, data = c.search(None, "HEADER", "Message-ID", "<%s@e2e.maildict.test>" % token)
            self.assertEqual(typ, "OK", data)
            return len(data[0].split())
        finally:
            try:
                c.logout()
            except Exception:
                pass

    def assert_delivered(self, user, token):
        local, domain = user.split("@")
        maildir = os.path.join(self.vmail, domain, local, "Maildir")
        needle = ("<%s@e2e.maildict.test>" % token).encode()

        def found():
            for sub in ("new", "cur"):
                d = os.path.join(maildir, sub)
                for n in (os.listdir(d) if os.path.isdir(d) else []):
                    with open(os.path.join(d, n), "rb") as f:
                        if needle in f.read():
                            return True
            return False

        try:
            h.wait_until(found, DELIVERY_TIMEOUT, "message %s for %s" % (token, user), interval=0.2)
        except AssertionError:
            self.fail("message %s did not reach %s (queue: %r)\nsmtpd log:\n%s"
                      % (token, maildir, self.smtpd.queued_files(), h.tail(self.smtpd.log_path, 40)))
        self.assertEqual(self.imap_count(user, token), 1)

    def require_smtpd(self):
        h.require_peer(SMTPD_MISSING)

    # ---- tests (run in name order; later ones build on the rows of earlier ones) ----

    def test_1_domain_user_alias_work_at_once(self):
        # Asked before it exists: maildictd caches the "unknown user" answer.
        self.assert_no_login("alice@shop.test", "alice-pw-1")
        if not SMTPD_MISSING:
            code, _ = self.rcpt_code("alice@shop.test")
            self.assertEqual(code, 550)

        self.ctl("domain", "add", "Shop.TEST")
        self.add_user("Alice@shop.test", "alice-pw-1")
        self.add_user("bob@shop.test", "bob-pw-1")
        self.ctl("alias", "add", "sales@shop.test", "alice@shop.test", "bob@shop.test")

        # the very next login works: no retry, no wait, no restart
        self.assert_login("alice@shop.test", "alice-pw-1")
        self.assert_login("ALICE_shop.test", "alice-pw-1", canonical="alice@shop.test")
        self.assert_no_login("alice@shop.test", "wrong")

        if not SMTPD_MISSING:
            t = self.send("alice@shop.test")
            self.assert_delivered("alice@shop.test", t)
            t = self.send("sales@shop.test")
            self.assert_delivered("alice@shop.test", t)
            self.assert_delivered("bob@shop.test", t)

    def test_2_passwd_takes_effect_at_once(self):
        self.assert_login("bob@shop.test", "bob-pw-1")   # now cached
        self.ctl("user", "passwd", "bob@shop.test", "--scheme", "sha512-crypt",
                 stdin="bob-pw-2\n")
        PASSWORDS["bob@shop.test"] = "bob-pw-2"
        self.assert_no_login("bob@shop.test", "bob-pw-1")
        self.assert_login("bob@shop.test", "bob-pw-2")
        # and once more, yescrypt, via the delivery-name spelling of the login
        self.ctl("user", "passwd", "bob@shop.test", "--scheme", "yescrypt", stdin="bob-pw-3\n")
        PASSWORDS["bob@shop.test"] = "bob-pw-3"
        self.assert_no_login("bob_shop.test", "bob-pw-2")
        self.assert_login("bob_shop.test", "bob-pw-3", canonical="bob@shop.test")

    def run_on_terminal(self, args, answers):
        """maildictctl with a pseudo-terminal as its terminal; each answer is typed after the
        next prompt appears. Returns (exit code, everything the terminal showed)."""
        pid, fd = pty.fork()
        if pid == 0:   # the child: maildictctl on the pty
            try:
                os.execv(h.maildictctl_path(), [h.maildictctl_path(), "-c", self.conf] + args)
            finally:
                os._exit(127)
        shown = b""
        deadline = time.monotonic() + h.COMMAND_TIMEOUT

        def read_some():
            nonlocal shown
            r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                raise AssertionError("maildictctl shows nothing more; so far: %r" % shown)
            try:
                data = os.read(fd, 4096)
            except OSError:   # EIO: the child closed the terminal
                data = b""
            shown += data
            return data

        try:
            for answer in answers:
                prompts = shown.count(b": ")
                while shown.count(b": ") == prompts:
                    if not read_some():
                        break
                os.write(fd, answer.encode() + b"\n")
            while read_some():
                pass
        finally:
            _, status = os.waitpid(pid, 0)
            os.close(fd)
        return os.waitstatus_to_exitcode(status), shown.decode("utf-8", "replace")

    def test_2b_password_prompt_on_a_terminal(self):
        # typed twice, never echoed
        rc, shown = self.run_on_terminal(["user", "add", "dave@shop.test", "--cost", "4"],
                                         ["dave-pw-tty", "dave-pw-tty"])
        self.assertEqual(rc, 0, shown)
        self.assertIn("New password for dave@shop.test: ", shown)
        self.assertIn("Retype the password: ", shown)
        self.assertNotIn("dave-pw-tty", shown)
        PASSWORDS["dave@shop.test"] = "dave-pw-tty"
        self.assert_login("dave@shop.test", "dave-pw-tty")
        # two different answers: refused, nothing changed
        before = self.dump()
        rc, shown = self.run_on_terminal(["user", "passwd", "dave@shop.test"], ["one-pw", "other-pw"])
        self.assertEqual(rc, 1, shown)
        self.assertIn("do not match", shown)
        self.assertEqual(self.dump(), before)
        self.assert_login("dave@shop.test", "dave-pw-tty")

    def test_3_disable_enable_remove_take_effect_at_once(self):
        self.add_user("carol@shop.test", "carol-pw", "--quota", "1G")
        self.assert_login("carol@shop.test", "carol-pw")
        rc, out, err = self.dovecot.doveadm("user", "carol@shop.test")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(h.parse_doveadm_user(out).get("quota_rule"), "*:storage=1073741824B")

        self.ctl("user", "disable", "carol@shop.test")
        self.assert_no_login("carol@shop.test", "carol-pw")
        if not SMTPD_MISSING:
            self.assertEqual(self.rcpt_code("carol@shop.test")[0], 550)
        self.ctl("user", "enable", "carol@shop.test")
        self.assert_login("carol@shop.test", "carol-pw")

        self.ctl("domain", "disable", "shop.test")
        self.assert_no_login("carol@shop.test", "carol-pw")
        self.ctl("domain", "enable", "shop.test")
        self.assert_login("carol@shop.test", "carol-pw")

        self.ctl("user", "remove", "carol@shop.test")
        self.assert_no_login("carol@shop.test", "carol-pw")
        if not SMTPD_MISSING:
            self.assertEqual(self.rcpt_code("carol@shop.test")[0], 550)

    def test_4_catch_all_and_alias_domain(self):
        self.require_smtpd()
        self.ctl("alias", "add", "@shop.test", "bob@shop.test")
        t = self.send("whoever-%s@shop.test" % secrets.token_hex(3))
        self.assert_delivered("bob@shop.test", t)
        self.ctl("domain", "add", "shop.example", "--alias-for", "shop.test")
        t = self.send("alice@shop.example")
        self.assert_delivered("alice@shop.test", t)
        # A disabled user's mail is refused, not handed to the catch-all (nor to the one of
        # the alias domain), and lookup says so and exits 2.
        self.add_user("dora@shop.test", "dora-pw")
        self.ctl("user", "disable", "dora@shop.test")
        self.ctl("alias", "add", "@shop.example", "bob@shop.test")
        for rcpt in ("dora@shop.test", "dora+x@shop.test", "dora@shop.example"):
            self.assertEqual(self.rcpt_code(rcpt)[0], 550, rcpt)
        rc, out, err = self.ctl("lookup", "dora@shop.test", expect=2)
        self.assertIn("user dora@shop.test is disabled", out)
        self.assertIn("never goes to a catch-all", out)
        rc, out, err = self.ctl("help")
        self.assertIn("it never goes to the domain's catch-all", out)
        self.ctl("alias", "remove", "@shop.example")
        self.ctl("user", "remove", "dora@shop.test")
        self.ctl("alias", "remove", "@shop.test")
        self.assertEqual(self.rcpt_code("whoever@shop.test")[0], 550)

    def test_5_lookup_explains_and_hides_secrets(self):
        # nobody@shop.test gets no answer at all (its domain is served): exit 2, not found
        rc, out, err = self.ctl("lookup", "alice@shop.test", "sales@shop.test", "shop.test",
                                "nobody@shop.test", expect=2)
        self.assertIn('"user":"alice@shop.test"', out)
        self.assertIn("<hidden BLF-CRYPT>", out)
        self.assertNotIn("$2b$", out)
        self.assertIn("rule 2: a user with that address", out)
        self.assertIn("alias sales@shop.test (rule 1", out)
        self.assertIn("alice_shop.test", out)           # smtpd's alias answer for the user
        self.assertIn("no alias, user or catch-all receives nobody@shop.test", out)
        userinfo = [l for l in out.splitlines() if l.strip().startswith("userinfo")]
        self.assertTrue(userinfo, out)
        self.assertIn("%d:%d:%s" % (h.NOBODY_UID, h.NOGROUP_GID,
                                    os.path.join(self.vmail, "shop.test", "alice")), userinfo[0])
        self.assertNotIn("TEMPORARY FAILURE", out)
        self.ctl("lookup", "alice@shop.test", "sales@shop.test", "shop.test", expect=0)
        for key in ("nobody@shop.test", "nobody_shop.test", "nothing.test"):
            self.ctl("lookup", key, expect=2)
        rc, out, err = self.ctl("lookup", "alice@shop.test", "--show-secrets")
        self.assertIn("{BLF-CRYPT}$2b$04$", out)
        self.assertIn("alice@shop.test:$2b$04$", out)   # smtpd's credentials

    def test_6_lookup_with_maildictd_unreachable_is_a_temporary_failure(self):
        other = self.tmp.join("other.conf")
        with open(self.conf) as f:
            text = f.read().replace(self.maildictd.socket, self.tmp.join("nothing-here.sock"))
        with open(other, "w") as f:
            f.write(text)
        rc, out, err = h.maildictctl(other, "lookup", "alice@shop.test")
        self.assertEqual(rc, 75, out + err)
        self.assertIn("TEMPORARY FAILURE", out)
        self.assertIn("is maildictd running on %s?" % self.tmp.join("nothing-here.sock"), err)
        # the rule still comes from the database
        self.assertIn("rule 2", out)

    def test_6b_lookup_refused_by_the_socket_names_the_cause(self):
        # maildictd runs, but its 0660 socket's group is not this user's: no "is maildictd
        # running?", but the permission and what to check.
        r = subprocess.run([h.maildictctl_path(), "-c", self.conf, "lookup", "alice@shop.test"],
                           user="nobody", group="nogroup", extra_groups=[],
                           capture_output=True, text=True, timeout=h.COMMAND_TIMEOUT)
        self.assertEqual(r.returncode, 75, r.stdout + r.stderr)
        self.assertIn("permission denied: %s, check socket_group/socket_mode"
                      % self.maildictd.socket, r.stderr)
        self.assertNotIn("running", r.stderr)

    def test_7_bad_input_changes_nothing(self):
        self.ctl("domain", "add", "off.test", "--disabled")
        # loopa -> loopb, which nobody receives yet (hence --force)
        self.ctl("alias", "add", "loopa@shop.test", "loopb@shop.test", "--force")
        before = self.dump()
        cases = [
            # (args, stdin, exit code, words in the message)
            (["user", "add", "not an address"], "pw\n", 1, "not an address"),
            (["user", "add", "x@bad_domain.test"], "pw\n", 1, "'_'"),
            (["user", "add", "alice@shop.test"], "pw\n", 3, "exists already"),
            (["user", "add", "ALICE@SHOP.TEST"], "pw\n", 3, "exists already"),
            (["user", "add", "new@missing.test"], "pw\n", 2, "does not exist"),
            (["user", "add", "new@off.test"], "pw\n", 3, "disabled"),
            (["user", "add", "new@shop.test", "SuperSecret-1"], "", 1, "password on the command line"),
            (["user", "passwd", "alice@shop.test", "--password=SuperSecret-1"], "", 1,
             "password on the command line"),
            (["user", "add", "new@shop.test"], "", 1, "no password on standard input"),
            (["user", "add", "new@shop.test"], "\n", 1, "empty"),
            (["user", "add", "new@shop.test"], "x" * 73 + "\n", 1, "72 bytes"),
            (["user", "passwd", "nobody@shop.test"], "pw\n", 2, "does not exist"),
            (["alias", "add", "a@shop.test", "b@shop.test"], None, 2, "--force"),
            (["alias", "add", "loop1@shop.test", "sales@shop.test", "loop1@shop.test"], None, 3,
             "itself"),
            (["alias", "add", "loopb@shop.test", "alice@shop.test", "loopa@shop.test"], None, 3,
             "alias loop: loopb@shop.test -> loopa@shop.test -> loopb@shop.test"),
            (["alias", "add", "@shop.test", "nobody-here@shop.test"], None, 3, "loop"),
            (["alias", "add", "sales@shop.test", "alice@shop.test"], None, 3, "already"),
            (["alias", "add", "x@missing.test", "alice@shop.test"], None, 2, "does not exist"),
            (["alias", "remove", "nothing@shop.test"], None, 2, "does not exist"),
            (["domain", "add", "shop.test"], None, 3, "exists already"),
            (["domain", "add", "--", "-bad-.test"], None, 1, "'-'"),
            (["domain", "remove", "shop.test"], None, 3, "--force"),
            (["domain", "remove", "nothing.test"], None, 2, "does not exist"),
            (["sender", "add", "nobody@shop.test", "sales@shop.test"], None, 2, "does not exist"),
            (["user", "remove", "alice@shop.test"], None, 3, "sales@shop.test"),
            (["user", "frobnicate"], None, 1, "unknown subcommand"),
        ]
        for args, stdin, code, words in cases:
            with self.subTest(args=args):
                rc, out, err = self.ctl(*args, stdin=stdin, expect=None)
                self.assertEqual(rc, code, "maildictctl %s -> %d: %s%s" % (args, rc, out, err))
                self.assertTrue(err.startswith("maildictctl: "), err)
                self.assertIn(words, err)
                self.assertNotIn("SuperSecret-1", out + err)
                self.assertEqual(self.dump(), before, "maildictctl %s changed the database" % args)
        # and the directory still answers as before
        self.assert_login("alice@shop.test", "alice-pw-1")

    def test_8_senders_reach_smtpd(self):
        self.ctl("sender", "add", "alice@shop.test", "sales@shop.test")
        rc, out, err = self.ctl("lookup", "alice@shop.test")
        line = [l for l in out.splitlines() if l.strip().startswith("mailaddrmap")]
        self.assertEqual(len(line), 1, out)
        self.assertIn("sales@shop.test", line[0])
        self.ctl("sender", "remove", "alice@shop.test", "sales@shop.test")
        rc, out, err = self.ctl("lookup", "alice@shop.test")
        line = [l for l in out.splitlines() if l.strip().startswith("mailaddrmap")]
        self.assertNotIn("sales@shop.test", line[0])

    def test_8b_existing_schema_is_not_changed(self):
        # A configuration serving the operator's own tables (issue 6 part 2): maildictctl knows
        # neither those tables nor their queries, so it refuses to change anything.
        legacy = self.tmp.join("legacy.db")
        with open(os.path.join(h.SOURCE_DIR, "tests", "data", "existing", "three", "schema.sql")) as f:
            schema = f.read().replace("@HASH@", "$2b$04$" + "x" * 53)
        with sqlite3.connect(legacy) as c:
            c.executescript(schema)
        with open(os.path.join(h.SOURCE_DIR, "tests", "data", "existing", "three", "smtpd-table.conf")) as f:
            table_conf = f.read().replace("@DB@", legacy)
        table_path = self.tmp.join("legacy-table.conf")
        with open(table_path, "w") as f:
            f.write(table_conf)
        conf = self.tmp.join("legacy-maildict.conf")
        with open(conf, "w") as f:
            f.write("socket = %s\nsmtpd_table_config = %s\n" % (self.maildictd.socket, table_path))
        with sqlite3.connect(legacy) as c:
            before = "\n".join(c.iterdump())
        rc, out, err = h.maildictctl(conf, "user", "add", "new@example.org", "--no-password")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("existing schema", err)
        with sqlite3.connect(legacy) as c:
            self.assertEqual("\n".join(c.iterdump()), before)

    def test_8c_a_database_that_is_not_ours_is_exit_4_and_unchanged(self):
        # Retrying will not fix a schema newer than this maildict or someone else's tables: exit
        # 4 (not 75, which would make a script try again forever), and not a byte written.
        cases = {
            "newer.db": "CREATE TABLE domains (domain TEXT); CREATE TABLE users (x TEXT); "
                        "PRAGMA user_version = 99;",
            "foreign.db": "CREATE TABLE mailbox (username TEXT, password TEXT);",
        }
        for name, sql in cases.items():
            with self.subTest(name):
                path = self.tmp.join(name)
                with sqlite3.connect(path) as c:
                    c.executescript(sql)
                conf = self.tmp.join(name + ".conf")
                with open(conf, "w") as f:
                    f.write("socket = %s\ndatabase = sqlite:%s\n" % (self.maildictd.socket, path))
                with sqlite3.connect(path) as c:
                    before = "\n".join(c.iterdump())
                rc, out, err = h.maildictctl(conf, "domain", "add", "new.example")
                self.assertEqual(rc, 4, out + err)
                self.assertIn("unusable database", err)
                with sqlite3.connect(path) as c:
                    self.assertEqual("\n".join(c.iterdump()), before)

    def test_9_maildictd_log_has_no_secret(self):
        text = self.maildictd.log_text()
        for address, password in PASSWORDS.items():
            self.assertNotIn(password, text)
        for frag in ("$2b$", "$6$", "$y$", "{BLF-CRYPT}"):
            self.assertNotIn(frag, text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
