#!/usr/bin/env python3
"""table-maildict driven by a scripted smtpd, in both table protocols, with a real maildictd.

The test starts table-maildict the way smtpd does (specs/smtpd-tables.md §2.2: argv[0] = the
table name, argv[1] = the config path, one end of a socketpair on fd 0; fd 1 is that socket too
in the text protocol and not in the imsg one) and speaks to it with the bytes of the captured
transcripts (§3.6 imsg, §4.5 text). It checks:
  * protocol shape: OPEN/handshake replies, every reply well-formed (imsg: type OK, exact
    length, 4-byte status, value + NUL only when found; text: `<op>-result|<id>|...` with the
    request's id, fetch-result for fetch, error with a message);
  * the answers maildictd gives for the demo directory (found / not found / values); an F where
    an answer is expected fails the test (it is never a reason to skip);
  * failure handling: maildictd missing -> temporary failure within the deadline and the
    program stays up; maildictd restarted -> the same table process answers again; garbage
    from "smtpd" (bad imsg length, unknown type, an unparsable line) -> a clean exit with no
    reply; EOF -> exit 0.
"""
import os
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def table_path():
    return os.environ.get("MAILDICT_TABLE") or os.path.join(h.BUILD_DIR, "table-maildict")


TMP = None
MAILDICTD = None
DEMO_DB = None

# ---- the scripted smtpd ------------------------------------------------------------------------

SERVICES = {"alias": 0x1, "domain": 0x2, "credentials": 0x4, "netaddr": 0x8, "userinfo": 0x10,
            "source": 0x20, "mailaddr": 0x40, "addrname": 0x80, "mailaddrmap": 0x100,
            "relayhost": 0x200, "string": 0x400, "regex": 0x800}
OK, OPEN, CLOSE, UPDATE, CHECK, LOOKUP, FETCH = 0, 2, 3, 4, 5, 6, 7
LOOKUP_PID = 0x2eda


def imsg(msg_type, payload=b""):
    return struct.pack("=IHHII", msg_type, 16 + len(payload), 0, 0, LOOKUP_PID) + payload


def imsg_open(name=b"t"):
    # As smtpd 6.8 sends it: version 2, then the name NUL-padded to LINE_MAX (2048).
    return imsg(OPEN, struct.pack("=I", 2) + name + b"\0" * (2048 - len(name)))


def imsg_query(msg_type, service, key=None):
    payload = struct.pack("=IQ", SERVICES[service], 0)
    if key is not None:
        payload += key + b"\0"
    return imsg(msg_type, payload)


class Table:
    """One table-maildict process, as smtpd spawns it."""

    def __init__(self, conf_path, text=False, name="t"):
        self.ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ours.settimeout(15)
        self.text = text
        # smtpd's stderr is /dev/null once daemonized; MAILDICT_TABLE_STDERR collects it instead
        # (e.g. sanitizer reports of a MAILDICT_TABLE=build-asan/table-maildict run).
        err_path = os.environ.get("MAILDICT_TABLE_STDERR")
        err = open(err_path, "ab") if err_path else subprocess.DEVNULL
        try:
            self.proc = h.spawn([name, conf_path], "table-maildict", executable=table_path(),
                                stdin=theirs, stdout=theirs if text else subprocess.DEVNULL,
                                stderr=err)
        finally:
            theirs.close()
            if err_path:
                err.close()
        self.buf = b""

    def send(self, data):
        self.ours.sendall(data)

    def _fill(self):
        chunk = self.ours.recv(65536)
        if not chunk:
            raise EOFError("table-maildict closed its end")
        self.buf += chunk

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_line(self):
        while b"\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    # -- imsg --
    def read_reply(self):
        """One imsg reply, checked as smtpd checks it; returns (status, payload after it)."""
        header = self.read_exact(16)
        msg_type, length, flags, peerid, pid = struct.unpack("=IHHII", header)
        assert msg_type == OK, "reply type %d" % msg_type
        assert flags == 0 and 16 <= length <= 16384, (flags, length)
        payload = self.read_exact(length - 16)
        if not payload:
            return None, b""
        status = struct.unpack("=i", payload[:4])[0]
        assert status in (1, 0, -1), status
        return status, payload[4:]

    def open(self):
        self.send(imsg_open())
        status, rest = self.read_reply()
        assert status is None and rest == b"", "OPEN reply must be empty"

    def check(self, service, key):
        self.send(imsg_query(CHECK, service, key))
        status, rest = self.read_reply()
        assert rest == b"", "a CHECK reply is exactly four bytes"
        return status

    def lookup(self, service, key=None, msg_type=LOOKUP):
        self.send(imsg_query(msg_type, service, key))
        status, rest = self.read_reply()
        if status == 1:
            assert len(rest) >= 2 and rest.endswith(b"\0") and rest.count(b"\0") == 1, rest
            return status, rest[:-1].decode()
        assert rest == b"", "a value after status %d" % status
        return status, None

    # -- text --
    def handshake(self, name="t"):
        self.send(("config|smtpd-version|7.6.0-portable\nconfig|protocol|0.1\n"
                   "config|tablename|%s\nconfig|future-key|x\nconfig|ready\n" % name).encode())
        registered = []
        while True:
            line = self.read_line()
            assert line.startswith("register|"), line
            if line == "register|ready":
                return registered
            registered.append(line.split("|", 1)[1])

    def request(self, op, service, rid, key=None):
        """Sends one request line; returns the reply after `<op>-result|<id>|`."""
        fields = ["table", "0.1", "%.6f" % time.time(), "t", op]
        if op != "update":
            fields.append(service)
        fields.append(rid)
        if key is not None:
            fields.append(key)
        self.send(("|".join(fields) + "\n").encode())
        line = self.read_line()
        prefix = "%s-result|%s|" % (op, rid)
        assert line.startswith(prefix), "%r does not start with %r" % (line, prefix)
        rest = line[len(prefix):]
        if op == "update":
            assert rest == "ok" or (rest.startswith("error|") and len(rest) > 6), rest
        elif op == "check":
            assert rest in ("found", "not-found") or (rest.startswith("error|") and len(rest) > 6), rest
        else:
            assert (rest == "not-found" or (rest.startswith("found|") and len(rest) > 6)
                    or (rest.startswith("error|") and len(rest) > 6)), rest
        return rest

    def wait(self, timeout=10):
        return self.proc.wait(timeout=timeout)

    def close(self):
        try:
            self.ours.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                rc = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                rc = h.kill_and_wait(self.proc)
                raise AssertionError("table-maildict did not exit on EOF")
        else:
            rc = self.proc.returncode
        h._forget(self.proc)
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.close()
        else:
            self.ours.close()
            h._forget(self.proc)
        return False


def write_conf(path, socket_path, timeout="500ms"):
    with open(path, "w") as f:
        f.write("socket = %s\nrequest_timeout = %s\n" % (socket_path, timeout))
    return path


def smtpd_domain_answer():
    """What maildictd answers for shared/smtpd/domain/example.org (an existing domain)."""
    with h.DictClient(MAILDICTD.socket, timeout=10) as c:
        c.hello(3, 0)
        return c.lookup(b"shared/smtpd/domain/example.org")


def setUpModule():
    global TMP, MAILDICTD, DEMO_DB
    missing = [p for p in (h.maildictd_path(), h.admin_path(), table_path()) if not os.access(p, os.X_OK)]
    if missing:
        raise SystemExit("e2e: missing programs: %s" % ", ".join(missing))
    TMP = h.TempDir(prefix="maildict-table-")
    DEMO_DB = h.make_demo_db(TMP.path)
    MAILDICTD = h.Maildictd(TMP.path, h.maildict_config(TMP.path, DEMO_DB)).start()


def tearDownModule():
    if MAILDICTD is not None:
        MAILDICTD.stop()
    if TMP is not None:
        TMP.cleanup()


# ---- protocol shape, whatever maildictd answers ----------------------------------------------------

class ImsgProtocol(unittest.TestCase):
    def test_transcript_requests_get_wellformed_replies(self):
        with Table(MAILDICTD.conf_path) as t:
            t.open()
            # §3.6, in smtpd 6.8's order for one delivery
            t.lookup("addrname", b"127.0.0.1")
            t.check("netaddr", b"127.0.0.1")
            t.check("domain", b"example.org")
            for key in (b"bob+tag@example.org", b"bob@example.org", b"vmail@", b"vmail"):
                t.lookup("alias", key)
            t.lookup("userinfo", b"vmail")
            t.lookup("source", None, msg_type=FETCH)
            t.lookup("credentials", b"mylabel")
            t.lookup("mailaddrmap", b"bob@example.org")
            t.check("mailaddr", b"bob@example.org")
            # check-only services maildictd has no data for: a status, never an exit
            self.assertIn(t.check("regex", b"anything"), (0, -1))
            self.assertIn(t.check("string", b"tag"), (0, -1))
            t.send(imsg(UPDATE))
            self.assertEqual(t.read_reply(), (1, b""))
            self.assertEqual(t.close(), 0)

    def test_one_message_in_pieces_and_two_in_one_write(self):
        with Table(MAILDICTD.conf_path) as t:
            data = imsg_open()
            for i in range(0, len(data), 100):
                t.send(data[i:i + 100])
                time.sleep(0.001)
            self.assertEqual(t.read_reply(), (None, b""))
            t.send(imsg_query(CHECK, "domain", b"example.org") + imsg_query(CHECK, "domain", b"nope.example"))
            t.read_reply()
            t.read_reply()
            self.assertEqual(t.close(), 0)

    def test_unknown_service_and_oversized_key_are_temporary_failures(self):
        with Table(MAILDICTD.conf_path) as t:
            t.open()
            t.send(imsg(LOOKUP, struct.pack("=IQ", 0x3, 0) + b"x\0"))
            self.assertEqual(t.read_reply(), (-1, b""))
            self.assertEqual(t.lookup("alias", b"a" * 1024), (-1, None))
            self.assertEqual(t.close(), 0)

    def test_close_message_ends_the_program(self):
        with Table(MAILDICTD.conf_path) as t:
            t.open()
            t.send(imsg(CLOSE))
            self.assertEqual(t.wait(), 0)


class ImsgGarbage(unittest.TestCase):
    def expect_clean_exit(self, data, opened=True):
        with Table(MAILDICTD.conf_path) as t:
            if opened:
                t.open()
            t.send(data)
            rc = t.wait()
            self.assertNotEqual(rc, 0, "malformed input must not look like a normal end")
            self.assertGreater(rc, 0, "killed by a signal (%d)" % rc)
            with self.assertRaises(EOFError):
                t.read_exact(1)   # nothing was answered

    def test_bad_length(self):
        self.expect_clean_exit(struct.pack("=IHHII", LOOKUP, 8, 0, 0, 0) + b"x" * 8)
        self.expect_clean_exit(struct.pack("=IHHII", LOOKUP, 20000, 0, 0, 0))

    def test_unknown_type(self):
        self.expect_clean_exit(imsg(9, b"abc"))
        self.expect_clean_exit(imsg(1))

    def test_bad_open_version(self):
        self.expect_clean_exit(imsg(OPEN, struct.pack("=I", 1) + b"t\0"), opened=False)

    def test_nul_inside_key(self):
        self.expect_clean_exit(imsg(LOOKUP, struct.pack("=IQ", 1, 0) + b"a\0b\0"))

    def test_unknown_first_byte(self):
        self.expect_clean_exit(b"GET / HTTP/1.0\r\n\r\n", opened=False)

    def test_eof_is_a_normal_end(self):
        with Table(MAILDICTD.conf_path) as t:
            self.assertEqual(t.close(), 0)
        with Table(MAILDICTD.conf_path) as t:
            t.open()
            t.send(imsg_open()[:100])   # smtpd dies mid-message
            self.assertEqual(t.close(), 0)


class TextProtocol(unittest.TestCase):
    def test_handshake_registers_services_but_not_auth(self):
        with Table(MAILDICTD.conf_path, text=True) as t:
            registered = t.handshake()
            for s in ("alias", "domain", "credentials", "netaddr", "userinfo", "source",
                      "mailaddr", "addrname", "mailaddrmap"):
                self.assertIn(s, registered)
            self.assertNotIn("auth", registered)
            self.assertNotIn("none", registered)
            self.assertEqual(t.close(), 0)

    def test_transcript_requests_echo_ids(self):
        with Table(MAILDICTD.conf_path, text=True) as t:
            t.handshake()
            # §4.5, ids as smtpd 7.6.0p1 sent them
            t.request("lookup", "addrname", "31c1c54b", "127.0.0.1")
            t.request("check", "netaddr", "148969b4", "127.0.0.1")
            t.request("check", "domain", "e73f4c9b", "example.org")
            t.request("lookup", "alias", "9d85b4fa", "bob+tag@example.org")
            t.request("lookup", "alias", "fa52e95b", "bob@example.org")
            t.request("lookup", "alias", "0685ba09", "vmail@")
            t.request("lookup", "alias", "52a6865d", "vmail")
            t.request("lookup", "userinfo", "ec757203", "vmail")
            t.request("lookup", "credentials", "c4be0287", "bob@example.org")
            t.request("lookup", "mailaddrmap", "7142bad6", "bob@example.org")
            t.request("check", "mailaddr", "b23274f9", "bob@example.org")
            t.request("fetch", "source", "7199958a")
            self.assertEqual(t.request("update", None, "c75d3b0b"), "ok")
            # keys with '|', services we do not serve, a version we do not speak
            t.request("lookup", "alias", "00000001", "a|b@example.org")
            self.assertTrue(t.request("check", "auth", "00000002", "bob@example.org:secret").startswith("error|"))
            self.assertTrue(t.request("check", "none", "00000003", "x").startswith("error|"))
            t.send(b"table|0.2|1.0|t|lookup|alias|00000004|x\n")
            self.assertTrue(t.read_line().startswith("lookup-result|00000004|error|"))
            self.assertTrue(t.request("lookup", "alias", "00000005", "k" * 1024).startswith("error|"))
            self.assertEqual(t.close(), 0)

    def test_unparsable_line_ends_the_program(self):
        for bad in (b"table|0.1|1.0|t|remove|alias|00000001|x\n",   # unknown operation
                    b"hello\n",
                    b"table|0.1|1.0|t|lookup|alias||x\n",           # no id to echo
                    b"x" * 5000 + b"\n"):                          # endless line
            with Table(MAILDICTD.conf_path, text=True) as t:
                t.handshake()
                t.send(bad)
                rc = t.wait()
                self.assertGreater(rc, 0, bad[:40])
                with self.assertRaises(EOFError):
                    t.read_line()

    def test_request_before_handshake_ends_the_program(self):
        with Table(MAILDICTD.conf_path, text=True) as t:
            t.send(b"config|protocol|0.1\ntable|0.1|1.0|t|lookup|alias|00000001|x\n")
            self.assertGreater(t.wait(), 0)


# ---- failures of maildictd -------------------------------------------------------------------------

class MaildictdDown(unittest.TestCase):
    def test_no_server_is_a_quick_temporary_failure(self):
        conf = write_conf(os.path.join(TMP.path, "nowhere.conf"), os.path.join(TMP.path, "nowhere.sock"))
        with Table(conf) as t:
            t.open()
            start = time.monotonic()
            self.assertEqual(t.check("domain", b"example.org"), -1)
            self.assertEqual(t.lookup("alias", b"john@example.org"), (-1, None))
            self.assertEqual(t.lookup("source", None, msg_type=FETCH), (-1, None))
            self.assertLess(time.monotonic() - start, 5)
            self.assertEqual(t.close(), 0)
        with Table(conf, text=True) as t:
            t.handshake()
            self.assertTrue(t.request("lookup", "alias", "d4682098", "tempfail@example.org").startswith("error|"))
            self.assertTrue(t.request("check", "domain", "00000001", "example.org").startswith("error|"))
            self.assertTrue(t.request("fetch", "source", "00000002").startswith("error|"))
            self.assertEqual(t.close(), 0)

    def test_unreadable_config_is_a_temporary_failure_not_an_exit(self):
        with Table(os.path.join(TMP.path, "no-such.conf"), text=True) as t:
            t.handshake()
            self.assertTrue(t.request("lookup", "alias", "00000001", "x").startswith("error|"))
            self.assertTrue(t.request("update", None, "00000002").startswith("error|"))
            self.assertEqual(t.close(), 0)

    def test_silent_server_hits_the_deadline(self):
        path = os.path.join(TMP.path, "silent.sock")
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.bind(path)
        silent.listen(8)
        try:
            conf = write_conf(os.path.join(TMP.path, "silent.conf"), path, "300ms")
            with Table(conf) as t:
                t.open()
                start = time.monotonic()
                self.assertEqual(t.lookup("alias", b"john@example.org"), (-1, None))
                took = time.monotonic() - start
                self.assertGreaterEqual(took, 0.25)
                self.assertLess(took, 3)
                self.assertEqual(t.close(), 0)
        finally:
            silent.close()

    def test_restart_of_maildictd_under_a_running_table(self):
        sub = os.path.join(TMP.path, "restart")
        os.mkdir(sub)
        conf = h.maildict_config(sub, DEMO_DB)
        first = h.Maildictd(sub, conf).start()
        with Table(first.conf_path, text=True) as t:
            t.handshake()
            before = t.request("check", "domain", "00000001", "example.org")
            first.stop()
            self.assertTrue(t.request("check", "domain", "00000002", "example.org").startswith("error|"))
            second = h.Maildictd(sub, conf, name="maildictd2").start()
            try:
                self.assertEqual(t.request("check", "domain", "00000003", "example.org"), before)
            finally:
                second.stop()
            self.assertEqual(t.close(), 0)


# ---- what maildictd answers for the demo directory ------------------------------------------------

class DemoAnswers(unittest.TestCase):
    """The contract of DESIGN.md §4 for smtpd keys, on `maildict-admin demo` data."""

    def setUp(self):
        # A temporary failure where the demo directory has an answer is a failure of the test.
        answer = smtpd_domain_answer()
        self.assertTrue(answer.startswith(b"O"), "shared/smtpd/domain/example.org answered %r" % answer[:80])

    def test_imsg(self):
        with Table(MAILDICTD.conf_path) as t:
            t.open()
            self.assertEqual(t.check("domain", b"example.org"), 1)
            self.assertEqual(t.check("domain", b"nope.example"), 0)
            status, value = t.lookup("credentials", b"john@example.org")
            self.assertEqual(status, 1)
            self.assertTrue(value.startswith("john@example.org:$2b$"), value[:22])
            self.assertEqual(t.lookup("alias", b"postmaster@example.org"),
                             (1, "john_example.org, jane_example.org"))
            status, value = t.lookup("userinfo", b"john_example.org")
            self.assertEqual(status, 1)
            uid, gid, home = value.split(":", 2)
            self.assertEqual((int(uid), int(gid)), (h.NOBODY_UID, h.NOGROUP_GID))
            self.assertTrue(home.startswith("/"), home)
            self.assertEqual(t.lookup("alias", b"nobody-at-all@nope.example"), (0, None))
            self.assertEqual(t.close(), 0)

    def test_text(self):
        with Table(MAILDICTD.conf_path, text=True) as t:
            t.handshake()
            self.assertEqual(t.request("check", "domain", "e73f4c9b", "example.org"), "found")
            self.assertEqual(t.request("check", "domain", "e73f4c9c", "nope.example"), "not-found")
            cred = t.request("lookup", "credentials", "c4be0287", "john@example.org")
            self.assertTrue(cred.startswith("found|john@example.org:$2b$"), cred[:28])
            self.assertEqual(t.request("lookup", "alias", "fa52e95b", "postmaster@example.org"),
                             "found|john_example.org, jane_example.org")
            info = t.request("lookup", "userinfo", "ec757203", "john_example.org")
            self.assertRegex(info, r"^found\|\d+:\d+:/")
            self.assertEqual(t.close(), 0)

    def test_fetch_cycles_through_the_source_list(self):
        with h.DictClient(MAILDICTD.socket, timeout=10) as c:
            c.hello(3, 0)
            listed = c.lookup(b"shared/smtpd/source/")
        self.assertTrue(listed.startswith(b"O"), "shared/smtpd/source/ answered %r" % listed[:80])
        items = [s.strip() for s in listed[1:].decode().split(",") if s.strip()]
        with Table(MAILDICTD.conf_path) as t:
            t.open()
            got = [t.lookup("source", None, msg_type=FETCH)[1] for _ in range(len(items) + 1)]
            self.assertEqual(got, items + items[:1])
            self.assertEqual(t.close(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
