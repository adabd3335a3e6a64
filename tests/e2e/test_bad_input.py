#!/usr/bin/env python3
"""maildictd against hostile and odd dict-protocol input, over raw UNIX-socket connections.

Bad input (garbage, unknown command letters, bad handshakes, a 1 MiB line) must be refused:
either an F-style answer or a clean close of that connection (Dovecot's own server closes).
Odd but valid input must get the right answer: 1000 pipelined commands per connection paired
with their replies by the async-id rules of specs/dovecot.md §1.4 (H3 0 -> strict FIFO,
H4 0 -> `*n`/`+n` ids, H3 2 -> either), keys with SQL metacharacters -> N, tab-escapes in keys,
unknown keys -> F, transactions -> F for the commit (maildict is read-only over dict) with the
connection still usable. Throughout, another connection keeps doing lookups in a background
thread and must always get correct answers; at the end maildictd is alive, exits 0 on SIGTERM
and its debug log holds no password or hash.
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

MAILDICTD = None
TMP = None
WITNESS = None

JOHN = b"shared/passdb/john@example.org"


def check_john_passdb(reply):
    v = h.reply_json(reply)
    assert v.get("user") == "john@example.org", v
    assert v.get("password", "").startswith("{BLF-CRYPT}$2"), "john's scheme: %r" % (
        v.get("password", "")[:12],)
    return v


class Witness(threading.Thread):
    """A well-behaved client on its own connection, looking up all the time."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.stop_flag = threading.Event()
        self.count = 0
        self.errors = []

    def run(self):
        try:
            with h.DictClient(self.path, timeout=30) as c:
                c.hello(3, 2)
                while not self.stop_flag.is_set():
                    check_john_passdb(c.lookup(JOHN))
                    r = c.lookup(b"shared/passdb/nosuch@example.org")
                    assert r == b"N", r
                    u = h.reply_json(c.lookup(b"shared/userdb/bob@example.net"))
                    assert str(u.get("uid")) == "2000" and u.get("home") == h.BOB["home"], u
                    self.count += 1
                    time.sleep(0.005)
        except BaseException as e:   # noqa: BLE001 - reported by the main thread
            self.errors.append("%s: %s" % (type(e).__name__, e))

    def finish(self):
        self.stop_flag.set()
        self.join(60)
        return not self.is_alive()


def setUpModule():
    global MAILDICTD, TMP, WITNESS
    h.require_programs()
    TMP = h.TempDir()
    MAILDICTD = h.start_maildictd(TMP.path)
    WITNESS = Witness(MAILDICTD.socket)
    WITNESS.start()


def tearDownModule():
    try:
        if WITNESS is not None:
            stopped = WITNESS.finish()
            assert stopped, "the witness connection hangs"
            assert not WITNESS.errors, "witness connection: %s" % WITNESS.errors
            assert WITNESS.count > 0, "the witness never completed a round"
            h.log("witness completed %d rounds" % WITNESS.count)
        if MAILDICTD is not None:
            assert MAILDICTD.alive(), "maildictd died; log:\n" + h.tail(MAILDICTD.log_path)
            MAILDICTD.stop()
    finally:
        if MAILDICTD is not None and MAILDICTD.alive():
            MAILDICTD.kill()
        if TMP is not None:
            TMP.cleanup()


class Base(unittest.TestCase):
    def setUp(self):
        self.assertTrue(MAILDICTD.alive(), "maildictd died; log:\n" + h.tail(MAILDICTD.log_path))

    def tearDown(self):
        # after every case: the daemon lives, the witness is fine, a new client is served
        self.assertTrue(MAILDICTD.alive(), "maildictd died; log:\n" + h.tail(MAILDICTD.log_path))
        self.assertFalse(WITNESS.errors, "witness connection: %s" % WITNESS.errors)
        self.assertTrue(WITNESS.is_alive(), "witness stopped")
        with self.client() as c:
            check_john_passdb(c.lookup(JOHN))

    def client(self, major=3, minor=2):
        c = h.DictClient(MAILDICTD.socket, timeout=30)
        if major is not None:
            c.hello(major, minor)
        return c

    def send_tolerant(self, c, data):
        """Sends; the server may close (and reset) the connection while we are writing."""
        try:
            c.send(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def assert_refused(self, c, what):
        """After bad input: the server closes the connection, or answers F; if it answers F
        and stays open, the connection must keep working."""
        try:
            line = c.read_line(timeout=30)
        except h.Closed:
            return "closed"
        aid = None
        if line.startswith(b"*"):
            aid = int(line[1:])
            try:
                line = c.read_line(timeout=30)
            except h.Closed:
                return "closed"
            self.assertTrue(line.startswith(b"+%d\t" % aid), "%s: %r" % (what, line))
            line = line.split(b"\t", 1)[1]
        self.assertTrue(line.startswith(b"F"),
                        "%s: expected an F answer or a close, got %r" % (what, line[:200]))
        # still open: it must keep working (or close now)
        try:
            if not self.send_tolerant(c, b"L" + JOHN + b"\t\n"):
                return "closed"
            check_john_passdb(c.read_reply(timeout=30)[0][0])
        except h.Closed:
            return "closed"
        return "answered"


# ---- refusals --------------------------------------------------------------------------------

class Refusals(Base):
    def test_garbage_instead_of_handshake(self):
        for junk in (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
                     b"\x00\x01\x02\xff\xfe\n",
                     b"Lshared/passdb/john@example.org\t\n",   # a command before H
                     b"\n"):
            with self.client(major=None) as c:
                self.send_tolerant(c, junk)
                data = c.wait_closed(timeout=30)
                self.assertNotIn(b"O{", data, "answered %r before any handshake" % junk)

    def test_bad_handshakes_are_closed(self):
        for hello in (b"H5\t0\t0\t\tmaildict\n", b"H2\t0\t0\t\tmaildict\n",
                      b"H\n", b"Hx\ty\tz\n", b"H3\n"):
            with self.client(major=None) as c:
                self.send_tolerant(c, hello + b"L" + JOHN + b"\t\n")
                data = c.wait_closed(timeout=30)
                self.assertNotIn(b"O{", data, "%r was served" % hello)
                for line in data.split(b"\n"):
                    self.assertFalse(line.startswith((b"O", b"N")), "%r: %r" % (hello, data))

    def test_garbage_lines(self):
        for junk in (b"\x00\xff\xfe garbage \x7f\n", b"\n", b"\t\t\t\n",
                     b"   Lshared/passdb/john@example.org\t\n", b"\xc3\x28\xa0\xa1\n"):
            with self.client() as c:
                self.send_tolerant(c, junk)
                self.assert_refused(c, repr(junk))

    def test_unknown_command_letters(self):
        for junk in (b"Zfoo\tbar\n", b"X\n", b"lshared/passdb/john@example.org\t\n",
                     b"Q1\n", b"!\n"):
            with self.client() as c:
                self.send_tolerant(c, junk)
                self.assert_refused(c, repr(junk))

    def test_malformed_arguments(self):
        for junk in (b"Ifoo\tbar\tshared/userdb/\t\n",     # flags not a number
                     b"I0\t-5\tshared/userdb/\t\n",        # max_rows not a number
                     b"Cnot-a-number\n",
                     b"C4294967296999\n",
                     b"C99\n"):                            # no such transaction
            with self.client() as c:
                self.send_tolerant(c, junk)
                self.assert_refused(c, repr(junk))

    def test_one_mebibyte_line_closes_the_connection(self):
        with self.client() as c:
            self.send_tolerant(c, b"L" + b"shared/passdb/" + b"a" * (1 << 20) + b"\t\n")
            c.wait_closed(timeout=60)
        # the same without ever sending a LF: the server must not wait for one
        with self.client() as c:
            self.send_tolerant(c, b"Lshared/passdb/" + b"b" * (1 << 20))
            c.wait_closed(timeout=60)

    def test_long_line_below_the_limit_is_served(self):
        # 64 KiB is the documented limit (as Dovecot's server); 60000 bytes must be accepted
        with self.client() as c:
            r = c.lookup(b"shared/passdb/" + b"c" * 60000 + b"@example.org")
            self.assertIn(r[:1], (b"N", b"F"), r[:100])
            check_john_passdb(c.lookup(JOHN))

    def test_half_line_then_disconnect(self):
        with self.client() as c:
            c.send(b"Lshared/passdb/john@exa")
        with self.client(major=None) as c:
            c.send(b"H3\t2\t0\t")
        # half line, then half-close: the server must see EOF and close too
        with self.client() as c:
            c.send(b"Lshared/passdb/jo")
            c.sock.shutdown(socket.SHUT_WR)
            data = c.wait_closed(timeout=60)
            self.assertNotIn(b"O{", data)

    def test_sighup_keeps_the_daemon_serving(self):
        # SIGHUP (systemctl reload, log rotation) must not kill maildictd; it empties the cache.
        with self.client() as c:
            check_john_passdb(c.lookup(JOHN))
            os.kill(MAILDICTD.pid, signal.SIGHUP)
            deadline = time.time() + 30
            while "received SIGHUP" not in open(MAILDICTD.log_path, errors="replace").read():
                self.assertLess(time.time(), deadline, "no SIGHUP line in the log")
                time.sleep(0.05)
            self.assertTrue(MAILDICTD.alive())
            check_john_passdb(c.lookup(JOHN))

    def test_many_abandoned_connections(self):
        socks = []
        try:
            for i in range(100):
                c = self.client(major=None)
                socks.append(c)
                if i % 3 == 0:
                    c.send(b"H3\t2\t0\t\tmaildict\nLshared/passdb/jo")
                elif i % 3 == 1:
                    c.send(b"H3\t2\t0\t\tmaildict\n")
        finally:
            for c in socks:
                c.close()


class Configuration(unittest.TestCase):
    """maildictd --check-config: the test configuration passes, a typo does not."""

    def test_check_config(self):
        rc, out, err = h.check_config(MAILDICTD.conf_path)
        self.assertEqual(rc, 0, out + err)
        bad = os.path.join(TMP.path, "typo.conf")
        with open(MAILDICTD.conf_path) as f:
            text = f.read()
        with open(bad, "w") as f:
            f.write(text.replace("socket_mode =", "sokcet_mode =")
                    .replace(MAILDICTD.socket, os.path.join(TMP.path, "typo.sock")))
        rc, out, err = h.check_config(bad)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("sokcet_mode", out + err)
        # and the daemon refuses to start with it
        r = subprocess.run([h.maildictd_path(), "-c", bad], capture_output=True, text=True,
                             timeout=h.COMMAND_TIMEOUT)
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)


# ---- valid but demanding input ----------------------------------------------------------------

def expected_reply_checker(key):
    """(kind, checker) for a key used in the pipelines."""
    def john(fields):
        check_john_passdb(fields[0])

    def jane(fields):
        v = h.reply_json(fields[0])
        assert v.get("user") == "jane@example.org", v
        assert v.get("password", "").startswith("{SHA512-CRYPT}$6$"), "jane's scheme"

    def john_alias(fields):
        v = h.reply_json(fields[0])
        assert v.get("user") == "john@example.org", v

    def bob(fields):
        v = h.reply_json(fields[0])
        assert str(v.get("uid")) == "2000" and str(v.get("gid")) == "2000", v
        assert v.get("home") == h.BOB["home"] and v.get("mail") == h.BOB["mail"], v

    def not_found(fields):
        assert fields[0] == b"N", fields

    def failed(fields):
        assert fields[0].startswith(b"F"), fields

    return {
        b"shared/passdb/john@example.org": john,
        b"shared/passdb/jane@example.org": jane,
        b"shared/passdb/john_example.org": john_alias,
        b"shared/userdb/bob@example.net": bob,
        b"shared/passdb/nosuch@example.org": not_found,
        b"shared/userdb/eve@example.org": not_found,
        b"shared/nosuch/key": failed,
    }[key]


PIPELINE_KEYS = [b"shared/passdb/john@example.org", b"shared/passdb/jane@example.org",
                 b"shared/passdb/john_example.org", b"shared/userdb/bob@example.net",
                 b"shared/passdb/nosuch@example.org", b"shared/userdb/eve@example.org",
                 b"shared/nosuch/key"]


class Pipelining(Base):
    N = 1000

    def pipeline(self, major, minor):
        """Sends N reply-bearing commands in one go (lookups, some iterations, one
        transaction) and pairs the replies with the commands like Dovecot's client does."""
        matcher = h.ReplyMatcher()
        out = []
        expectations = {}
        for i in range(self.N):
            if i % 97 == 50:
                out.append(b"I0\t0\tshared/userdb/\t*\n")
                matcher.expect(i, "I")
                expectations[i] = "iterate"
            elif i == self.N // 2:
                tid = 7 if major == 3 else 8
                b = (b"B%d\t\n" % tid) if major == 3 else (b"B%d\t\t0\n" % tid)
                out.append(b + b"S%d\tshared/passdb/john@example.org\tx\nC%d\n" % (tid, tid))
                matcher.expect(i, "C")
                expectations[i] = ("commit", tid)
            else:
                key = PIPELINE_KEYS[i % len(PIPELINE_KEYS)]
                out.append(b"L" + key + b"\t\n")
                matcher.expect(i, "L")
                expectations[i] = key
        payload = b"".join(out)
        with self.client(major, minor) as c:
            send_error = []

            def sender():
                try:
                    c.send(payload)
                except OSError as e:
                    send_error.append(e)

            t = threading.Thread(target=sender, daemon=True)
            t.start()
            while not matcher.done():
                matcher.feed(c.read_line(timeout=60))
            t.join(60)
            self.assertFalse(send_error, send_error)
            # nothing more may arrive: no unsolicited lines
            c.send(b"L" + JOHN + b"\t\n")
            matcher.expect("last", "L")
            while not matcher.done():
                matcher.feed(c.read_line(timeout=60))
        for i, exp in expectations.items():
            got = matcher.results[i]
            if exp == "iterate":
                self.assertEqual(got["end"][0], b"", "iteration %d failed: %r" % (i, got["end"]))
                keys = sorted(r[0][1:].decode() for r in got["rows"])
                self.assertEqual(keys, sorted("shared/userdb/" + u for u in h.ACTIVE_USERS))
            elif isinstance(exp, tuple):
                self.assertEqual(got[0], b"F%d" % exp[1], "commit reply %r" % got)
            else:
                try:
                    expected_reply_checker(exp)(got)
                except AssertionError as e:
                    self.fail("command %d (%r): %s" % (i, exp, e))
        check_john_passdb(matcher.results["last"][0])
        return matcher

    def test_pipelined_h3_minor0_is_fifo(self):
        m = self.pipeline(3, 0)
        self.assertFalse(m.saw_async, "a 3.0 client must get plain FIFO replies, no */+ ids")

    def test_pipelined_h4_uses_async_ids(self):
        m = self.pipeline(4, 0)
        self.assertTrue(m.saw_async)
        self.assertFalse(m.saw_plain, "with async ids every reply line carries +n")

    def test_pipelined_h3_minor2(self):
        m = self.pipeline(3, 2)
        self.assertFalse(m.saw_async and m.saw_plain, "mixed reply styles on one connection")

    def test_two_pipelines_at_once(self):
        errors = []

        def run():
            try:
                self.pipeline(3, 2)
            except BaseException as e:   # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.pipeline(4, 0)
        t.join(120)
        self.assertFalse(t.is_alive())
        self.assertFalse(errors, errors)


class Keys(Base):
    def test_handshake_reply_styles(self):
        with self.client(3, 0) as c:
            c.send(b"L" + JOHN + b"\t\n")
            line = c.read_line()
            self.assertTrue(line.startswith(b"O{"), "3.0 wants a plain reply: %r" % line[:40])
            check_john_passdb(h.unescape(line.split(b"\t")[0]))
        with self.client(4, 0) as c:
            c.send(b"L" + JOHN + b"\t\n")
            self.assertEqual(c.read_line(), b"*1")
            line = c.read_line()
            self.assertTrue(line.startswith(b"+1\tO{"), line[:40])
            check_john_passdb(h.unescape(line.split(b"\t")[1]))

    def test_sql_metacharacters(self):
        keys = [b"shared/passdb/' OR '1'='1@example.org",
                b"shared/passdb/john@example.org' OR '1'='1",
                b"shared/passdb/john@example.org'--",
                b"shared/passdb/john'--@example.org",
                b'shared/passdb/x@example.org"; DROP TABLE users; --',
                b"shared/passdb/x@example.org'; DROP TABLE users; --",
                b"shared/passdb/%@example.org",
                b"shared/passdb/j%@example.org",
                b"shared/passdb/_ohn@example.org",
                b"shared/passdb/john@%",
                b"shared/passdb/john@example._rg",
                b"shared/passdb/%_%",
                b"shared/passdb/*",
                b"shared/userdb/' OR 1=1 --@example.org",
                b"shared/userdb/%@%",
                b"shared/passdb/john@example.org\\",
                b"shared/passdb/john\\@example.org"]
        with self.client() as c:
            for key in keys:
                self.assertEqual(c.lookup(key), b"N", key)
            check_john_passdb(c.lookup(JOHN))   # and the table is still there

    def test_escapes_in_keys(self):
        with self.client() as c:
            # \x010 is NUL: a C-string cut must not turn this into john@example.org
            for key in (JOHN + b"\x010", JOHN + b"\x010x", b"shared/passdb/john\x010@example.org",
                        b"shared/passdb/\x010john@example.org"):
                c.send(b"L" + key + b"\t\n")
                r = c.read_reply()[0][0]
                self.assertIn(r[:1], (b"N", b"F"), "%r -> %r" % (key, r[:60]))
            # \x01t, \x01n, \x01r, \x011: TAB, LF, CR, 0x01 inside the name
            for key in (b"shared/passdb/john\x01t@example.org", JOHN + b"\x01n",
                        JOHN + b"\x01r", JOHN + b"\x011", b"shared/passdb/jo\x011hn@example.org"):
                c.send(b"L" + key + b"\t\n")
                r = c.read_reply()[0][0]
                self.assertIn(r[:1], (b"N", b"F"), "%r -> %r" % (key, r[:60]))
            # \x01 before any other byte X is X; a trailing lone \x01 is dropped (as Dovecot)
            for key in (b"shared/passdb/jo\x01hn@example.org", JOHN + b"\x01",
                        b"shared/passdb/john\x01@example.org"):
                c.send(b"L" + key + b"\t\n")
                check_john_passdb(c.read_reply()[0][0])
            # an escaped user field is just information
            c.send(b"L" + JOHN + b"\tjo\x01thn\x01n\x010\n")
            check_john_passdb(c.read_reply()[0][0])

    def test_non_utf8_keys(self):
        with self.client() as c:
            for key in (b"shared/passdb/\xff\xfe@example.org", b"shared/passdb/j\xc3ohn@example.org",
                        b"shared/passdb/john@example.org\xc0\x80"):
                r = c.lookup(key)
                self.assertIn(r[:1], (b"N", b"F"), "%r -> %r" % (key, r[:60]))
            check_john_passdb(c.lookup(JOHN))

    def test_unknown_keys_fail(self):
        with self.client() as c:
            for key, user in ((b"shared/nosuch/x", b""),
                              (b"shared/quota/example.org/john", b"john@example.org"),
                              (b"shared/userdb/john@example.org/quota", b"john@example.org"),
                              (b"priv/quota/storage", b"john@example.org"),
                              (b"shared/passdb", b""),
                              (b"nosuch", b"")):
                r = c.lookup(key, user)
                self.assertTrue(r.startswith(b"F"), "%r -> %r" % (key, r[:80]))
                for secret in h.SECRET_FRAGMENTS:
                    self.assertNotIn(secret.encode(), r)
            # an iteration of an unknown path fails too
            c.send(b"I0\t0\tshared/nothing/\t\n")
            m = h.ReplyMatcher()
            m.expect("i", "I")
            while not m.done():
                m.feed(c.read_line())
            self.assertTrue(m.results["i"]["end"][0].startswith(b"F"), m.results["i"])
            self.assertEqual(m.results["i"]["rows"], [])
            check_john_passdb(c.lookup(JOHN))

    def test_iteration_lists_direct_children_only(self):
        with self.client() as c:
            for flags in (b"0", b"8"):   # 8 = NO_VALUE: rows still carry a TAB
                c.send(b"I" + flags + b"\t0\tshared/userdb/\t*\n")
                m = h.ReplyMatcher()
                m.expect("i", "I")
                while not m.done():
                    m.feed(c.read_line())
                res = m.results["i"]
                self.assertEqual(res["end"][0], b"", res)
                keys = sorted(r[0][1:].decode() for r in res["rows"])
                self.assertEqual(keys, sorted("shared/userdb/" + u for u in h.ACTIVE_USERS))
                for r in res["rows"]:
                    self.assertEqual(r[0][1:].count(b"/"), 2, r)

    def test_transactions_fail_and_change_nothing(self):
        with self.client() as c:
            before = check_john_passdb(c.lookup(JOHN))
            # the value holds a demo password and a hash prefix: the log check at the end
            # fails if maildictd logs written values
            c.send(b"B1\tjohn@example.org\nS1\tshared/passdb/john@example.org\t"
                   b"{\"password\":\"{SHA512-CRYPT}$6$john-secret\"}\n"
                   b"U1\tshared/passdb/jane@example.org\n"
                   b"A1\tshared/counter\t5\nC1\n")
            fields, _ = c.read_reply()
            self.assertEqual(fields[0], b"F1", "commit must fail: %r" % fields)
            for secret in h.SECRET_FRAGMENTS:
                self.assertNotIn(secret.encode(), b"\t".join(fields))
            # a rollback gets no reply at all: the next reply is the lookup's
            c.send(b"B2\t\nS2\tshared/x\ty\nR2\n")
            after = check_john_passdb(c.lookup(JOHN))
            self.assertEqual(before, after, "the transaction changed john")
            jane = h.reply_json(c.lookup(b"shared/passdb/jane@example.org"))
            self.assertEqual(jane.get("user"), "jane@example.org")
            # the connection is still good for more transactions
            c.send(b"B3\t\nS3\tshared/y\tz\nC3\n")
            self.assertEqual(c.read_reply()[0][0], b"F3")
        with self.client(4, 0) as c:
            # Dovecot 2.4 style: B with expire_secs, V, everything in one chunk
            c.send(b"B5\t\t0\nS5\tshared/x\ty\nV5\tyes\nC5\n")
            fields, aid = c.read_reply()
            self.assertIsNotNone(aid)
            self.assertEqual(fields[0], b"F5", fields)
            check_john_passdb(c.lookup(JOHN))


if __name__ == "__main__":
    unittest.main(verbosity=2)
