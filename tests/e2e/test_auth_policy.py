#!/usr/bin/env python3
"""Dovecot 2.3's auth policy client against maildictd's policy server (issue 5).

A private Dovecot uses maildictd for passdb/userdb (dict) and for auth_policy_server_url (HTTP on
loopback, with a hash nonce and an API key header). Logins are made with `doveadm auth test`,
one unique session id per attempt, so each attempt's policy outcome is read from Dovecot itself:
its reply (`reason=` for a policy rejection) and its log ("Policy check action is tarpit N
second(s)"). maildictd runs with small thresholds and a long window (POLICY below):
  * 20 wrong passwords for one user from one IP: first refused normally, then tarpitted, then
    rejected by the policy, while another user from another IP logs in at once; once the window
    has passed (maildictd restarted with a 5 s window) the IP logs in again;
  * one stale password retried 50 times from one IP is throttled less than 50 distinct ones;
  * one password sprayed over 50 logins from one IP gets that IP rejected;
  * IPv6 clients are counted per /64;
  * a block made through /admin/block stays in force across a restart of maildictd;
  * malformed HTTP, oversized headers and bodies, non-JSON bodies and missing fields get a 4xx
    and the daemon goes on serving (Dovecot logins included); keep-alive and absolute-form
    targets work; policy_max_connections is enforced (a new connection replaces the one that
    has waited longest for a request), and 300 connections that send nothing neither keep
    Dovecot's requests out nor stay open past policy_header_timeout;
  * GET /metrics counts policy requests, decisions and dict lookups.
The same server also listens on a UNIX socket (policy_socket), answering the requests Dovecot
2.4 sends there.
Dovecot's own per-IP auth penalty is switched off (its anvil socket is made unreachable) and
auth_failure_delay = 0, so what slows a login down here is maildict's tarpit alone.
maildictd must exit 0 on SIGTERM and its log must hold no password, pwhash or request body.
"""
import http.client
import json
import os
import re
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

API_KEY = "k3y-for-tests"
# Counting happens in a long window, so that no sequence of attempts below depends on how fast
# this machine runs them (with a 20 s window, a CI run once took longer than that for 20 attempts
# with tarpits, and their first failures aged out). Only the step that waits for a window to pass restarts
# maildictd with SHORT_WINDOW.
WINDOW = 600  # seconds
SHORT_WINDOW = 5  # seconds
REJECT_MESSAGE = "Too many failed logins, try again later"
POLICY = {
    "policy_api_key": API_KEY,
    "policy_window": "%ds" % WINDOW,
    "policy_ip_login_tarpit": 3,
    "policy_ip_login_reject": 8,
    "policy_ip_tarpit": 15,
    "policy_ip_reject": 20,
    "policy_login_tarpit": 0,
    "policy_login_reject": 0,
    "policy_repeats_per_failure": 20,
    "policy_tarpit_seconds": 1,
    "policy_tarpit_max_seconds": 2,
    "policy_persist_interval": "500ms",
    "policy_max_body": "4k",
    "policy_max_header": "2k",
}

TMP = None
MAILDICTD = None
DOVECOT = None
PORT = None
USED_PASSWORDS = set()
_session = [0]


def maildictd_conf():
    return dict(POLICY, policy_listen="127.0.0.1:%d" % PORT, policy_socket=TMP.join("policy.sock"),
                policy_socket_mode="0660", policy_socket_group="root")


def setUpModule():
    global TMP, MAILDICTD, DOVECOT, PORT
    h.require_programs()
    TMP = h.TempDir()
    PORT = h.free_tcp_port()
    MAILDICTD = h.start_maildictd(TMP.path, **maildictd_conf())
    extra = h.dovecot_policy_extra(PORT, "e2e-nonce", API_KEY)
    DOVECOT = h.start_dovecot(TMP.path, MAILDICTD.socket, idle_msecs=h.SHIPPED_IDLE_MSECS,
                              extra=extra)


def tearDownModule():
    try:
        if DOVECOT is not None:
            DOVECOT.stop()
        if MAILDICTD is not None:
            MAILDICTD.stop()   # exit 0 and no demo password in the log, or this fails
            check_log_hygiene()
    finally:
        if TMP is not None:
            TMP.cleanup()


def check_log_hygiene():
    text = MAILDICTD.log_text()
    for needle in ['"pwhash"', '"session_id"', "e2e-nonce", API_KEY, "NOT-JSON-MARKER"]:
        assert needle not in text, "maildictd's log reveals %r" % needle
    for pw in USED_PASSWORDS:
        assert pw not in text, "maildictd's log reveals a password tried in the test"


def restart_maildictd(**overrides):
    """Stops maildictd and starts it again on the same database and port (the policy state is
    saved at the stop and read back at the start), with the module's configuration plus
    overrides (none: the module's configuration)."""
    global MAILDICTD
    MAILDICTD.stop()
    conf = dict(MAILDICTD.conf)
    conf.update(maildictd_conf())
    conf.update({k: str(v) for k, v in overrides.items()})
    MAILDICTD = h.Maildictd(TMP.path, conf).start()


# ---- one login attempt, and what the policy did to it ----------------------------------------

class Attempt:
    def __init__(self, ok, outcome, seconds, elapsed, text):
        self.ok = ok              # the login succeeded
        self.outcome = outcome    # "allow" (no policy action), "tarpit" or "reject"
        self.seconds = seconds    # tarpit seconds Dovecot applied
        self.elapsed = elapsed
        self.text = text

    def __repr__(self):
        return "<%s%s%s>" % ("ok " if self.ok else "", self.outcome,
                             " %ds" % self.seconds if self.seconds else "")


def attempt(user, password, rip):
    USED_PASSWORDS.add(password)
    _session[0] += 1
    sid = "pol%05d" % _session[0]
    start = time.monotonic()
    rc, out, err = DOVECOT.doveadm("auth", "test", "-x", "service=imap", "-x", "rip=" + rip,
                                   "-x", "session=" + sid, user, password)
    elapsed = time.monotonic() - start
    ok, fields = h.parse_auth_test(out)
    text = out + err
    if ok is None:
        raise AssertionError("doveadm auth test gave no verdict:\n" + text)
    if not ok and "code" in fields:
        raise AssertionError("a policy test login must never be a temporary failure:\n" + text)
    if fields.get("reason") == REJECT_MESSAGE:
        return Attempt(ok, "reject", 0, elapsed, text)
    # A tarpit shows only in Dovecot's log; the line is written before the passdb lookup, and
    # the lookup's own line ("Password mismatch", "unknown user", ...) follows it.
    tag = "<%s>" % sid
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:
        lines = [l for l in DOVECOT.log_text().splitlines() if tag in l]
        if any("Policy report action finished" in l for l in lines):
            break
        time.sleep(0.05)
    seconds = 0
    for l in lines:
        if "Policy check action is tarpit" in l:
            seconds = int(l.split("tarpit", 1)[1].split()[0])
    return Attempt(ok, "tarpit" if seconds else "allow", seconds, elapsed, text)


def wrong(i, tag):
    return "wrong-%s-%03d" % (tag, i)


# ---- raw HTTP ----------------------------------------------------------------------------------

def http_request(method, path, body=None, headers=None, key=True):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    hdrs = {"Content-Type": "application/json"}
    if key:
        hdrs["X-API-Key"] = API_KEY
    hdrs.update(headers or {})
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn.request(method, path, body=data, headers=hdrs)
    r = conn.getresponse()
    payload = r.read()
    conn.close()
    return r.status, payload


def raw_exchange(data, timeout=10):
    """Sends raw bytes on a new connection; returns everything the server sent before closing."""
    with socket.create_connection(("127.0.0.1", PORT), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            got += chunk
        return got


def status_of(response):
    line = response.split(b"\r\n", 1)[0]
    parts = line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") else None


ALLOW_BODY = {"device_id": "", "login": "nobody@example.org", "protocol": "imap",
              "pwhash": "0abc", "remote": "192.0.2.250", "session_id": "x", "tls": False}


def policy_post(body_bytes, command="allow", extra=b"", content_type=b"application/json"):
    return (b"POST /policy?command=" + command.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"X-API-Key: " + API_KEY.encode() + b"\r\nContent-Type: " + content_type + b"\r\n"
            b"Content-Length: " + str(len(body_bytes)).encode() + b"\r\nConnection: close\r\n" +
            extra + b"\r\n" + body_bytes)


class AuthPolicyTest(unittest.TestCase):
    def setUp(self):
        self.assertTrue(MAILDICTD.alive(), "maildictd died; log:\n" + h.tail(MAILDICTD.log_path))

    def assert_serving(self):
        """maildictd still answers policy requests and Dovecot logins still work."""
        self.assertTrue(MAILDICTD.alive(), "maildictd died; log:\n" + h.tail(MAILDICTD.log_path))
        status, payload = http_request("POST", "/policy?command=allow", ALLOW_BODY)
        self.assertEqual(status, 200, payload)
        self.assertEqual(json.loads(payload), {"status": 0, "msg": ""})
        a = attempt("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"], "198.51.100.250")
        self.assertTrue(a.ok, a.text)

    # ---- escalation ----

    def test_brute_force_is_tarpitted_then_rejected_and_forgotten_after_the_window(self):
        ip = "192.0.2.1"
        seen = [attempt("john@example.org", wrong(i, "bf"), ip) for i in range(20)]
        last_failure = time.monotonic()
        kinds = [a.outcome for a in seen]
        self.assertTrue(all(not a.ok for a in seen), seen)
        # thresholds 3 (tarpit) and 8 (reject) distinct failures for the IP+login pair
        self.assertEqual(kinds[:3], ["allow"] * 3, seen)
        self.assertEqual(kinds[3:8], ["tarpit"] * 5, seen)
        self.assertEqual(kinds[8:], ["reject"] * 12, seen)
        self.assertEqual([a.seconds for a in seen[3:8]], [1, 2, 2, 2, 2], seen)
        for a in seen[3:8]:
            # Dovecot held the login for the tarpit (a lower bound, set by Dovecot's timer)
            self.assertGreaterEqual(a.elapsed, a.seconds * 0.95, a)

        # another user from another IP logs in at once; so does the same user elsewhere
        other = attempt("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"], "198.51.100.2")
        self.assertTrue(other.ok, other.text)
        self.assertEqual(other.outcome, "allow", other)
        elsewhere = attempt("john@example.org", h.DEMO_PASSWORDS["john@example.org"], "198.51.100.3")
        self.assertTrue(elsewhere.ok, elsewhere.text)
        # john from the attacking IP is rejected even with the right password
        blocked = attempt("john@example.org", h.DEMO_PASSWORDS["john@example.org"], ip)
        self.assertFalse(blocked.ok, blocked.text)
        self.assertEqual(blocked.outcome, "reject", blocked)

        # once the window has passed without failures, the IP may log in again: maildictd is
        # restarted with a short window (its counters are saved and read back), and the test
        # waits until that window has passed since the last failure
        restart_maildictd(policy_window="%ds" % SHORT_WINDOW)
        try:
            time.sleep(max(0.0, last_failure + SHORT_WINDOW + 2 - time.monotonic()))
            again = attempt("john@example.org", h.DEMO_PASSWORDS["john@example.org"], ip)
            self.assertTrue(again.ok, again.text)
            self.assertEqual(again.outcome, "allow", again)
        finally:
            restart_maildictd()

    def test_a_stale_password_is_throttled_less_than_distinct_ones(self):
        stale = [attempt("bob@example.net", "stale-old-password", "192.0.2.20") for _ in range(50)]
        distinct = [attempt("john_doe@example.org", wrong(i, "dist"), "192.0.2.21")
                    for i in range(50)]
        throttled = lambda seq: sum(1 for a in seq if a.outcome != "allow")  # noqa: E731
        self.assertEqual(sum(1 for a in stale if a.outcome == "reject"), 0, stale)
        self.assertEqual(distinct[-1].outcome, "reject", distinct)
        self.assertLess(throttled(stale), throttled(distinct), (stale, distinct))
        # the phone's owner, with the right password from the same IP, still gets in
        ok = attempt("bob@example.net", h.DEMO_PASSWORDS["bob@example.net"], "192.0.2.20")
        self.assertTrue(ok.ok, ok.text)

    def test_ipv6_clients_are_counted_per_64(self):
        # every attempt from another address of one /64: still one client
        seen = [attempt("jane@example.org", wrong(i, "v6"), "2001:db8:7:7::%x" % (i + 1))
                for i in range(9)]
        self.assertEqual([a.outcome for a in seen],
                         ["allow"] * 3 + ["tarpit"] * 5 + ["reject"], seen)
        a = attempt("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"], "2001:db8:7:7:ffff::1")
        self.assertEqual(a.outcome, "reject", a)
        b = attempt("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"], "2001:db8:7:8::1")
        self.assertTrue(b.ok, b.text)

    def test_one_password_sprayed_over_50_logins_is_rejected(self):
        ip = "192.0.2.30"
        seen = [attempt("spray%02d@example.org" % i, "Summer2026!", ip) for i in range(50)]
        kinds = [a.outcome for a in seen]
        # thresholds 15 (tarpit) and 20 (reject) distinct (login, password) pairs per IP
        self.assertEqual(kinds[:15], ["allow"] * 15, seen)
        self.assertEqual(kinds[15:20], ["tarpit"] * 5, seen)
        self.assertEqual(kinds[20:], ["reject"] * 30, seen)
        # a real user from that IP is rejected too; from another IP the same user is fine
        a = attempt("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"], ip)
        self.assertEqual(a.outcome, "reject", a)
        b = attempt("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"], "192.0.2.31")
        self.assertTrue(b.ok, b.text)

    # ---- blocks ----

    def test_a_block_stays_in_force_across_a_restart(self):
        ip = "192.0.2.40"
        status, payload = http_request("POST", "/admin/block",
                                       {"ip": ip, "reason": "e2e test"}, key=False)
        self.assertEqual(status, 401, payload)
        status, payload = http_request("POST", "/admin/block", {"ip": ip, "reason": "e2e test"})
        self.assertEqual(status, 200, payload)
        reply = json.loads(payload)
        self.assertEqual(reply["blocked"]["target"], ip + "/32", reply)
        self.assertTrue(reply["persisted"], "the block was not saved to the database: %r" % reply)
        status, payload = http_request("POST", "/admin/block", {"login": "bob@example.net"})
        self.assertEqual(status, 200, payload)

        def check_blocked():
            a = attempt("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"], ip)
            self.assertEqual(a.outcome, "reject", a)
            self.assertFalse(a.ok, a.text)
            b = attempt("bob@example.net", h.DEMO_PASSWORDS["bob@example.net"], "192.0.2.41")
            self.assertEqual(b.outcome, "reject", b)

        check_blocked()
        restart_maildictd()
        check_blocked()
        status, payload = http_request("GET", "/admin/blocks")
        self.assertEqual(status, 200, payload)
        targets = sorted(b["target"] for b in json.loads(payload)["blocks"])
        self.assertEqual(targets, ["192.0.2.40/32", "bob@example.net"], payload)

        for body in ({"ip": ip}, {"login": "bob@example.net"}):
            status, payload = http_request("POST", "/admin/unblock", body)
            self.assertEqual(status, 200, payload)
            self.assertTrue(json.loads(payload)["unblocked"], payload)
        a = attempt("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"], ip)
        self.assertTrue(a.ok, a.text)
        b = attempt("bob@example.net", h.DEMO_PASSWORDS["bob@example.net"], "192.0.2.41")
        self.assertTrue(b.ok, b.text)
        # and the unblock survives a restart too
        restart_maildictd()
        a = attempt("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"], ip)
        self.assertTrue(a.ok, a.text)

    # ---- bad input ----

    def test_throttled_logins_are_listed_and_unblock_says_what_it_did(self):
        # Failures alone (no operator block) tarpit the pair at 3: /admin/blocks lists it under
        # "throttled", and /admin/unblock reports that it reset counters though nothing was
        # blocked.
        ip = "192.0.2.50"
        seen = [attempt("jane@example.org", wrong(i, "thr"), ip) for i in range(3)]
        self.assertEqual([a.outcome for a in seen], ["allow"] * 3, seen)
        status, payload = http_request("GET", "/admin/blocks")
        self.assertEqual(status, 200, payload)
        reply = json.loads(payload)
        self.assertNotIn(ip + "/32", [b["target"] for b in reply["blocks"]], payload)
        mine = [t for t in reply["throttled"] if t["target"].startswith(ip + "/32|")]
        self.assertEqual(len(mine), 1, payload)
        self.assertEqual(mine[0]["kind"], "ip_login", payload)
        self.assertEqual(mine[0]["failures"], 3, payload)
        self.assertEqual(mine[0]["answer"], "tarpit", payload)
        login = mine[0]["target"].split("|", 1)[1]
        status, payload = http_request("POST", "/admin/unblock", {"login": login})
        self.assertEqual(status, 200, payload)
        reply = json.loads(payload)
        self.assertFalse(reply["unblocked"], payload)        # there was no operator block
        self.assertTrue(reply["counters_reset"], payload)    # but the failures are forgotten
        status, payload = http_request("GET", "/admin/blocks")
        self.assertNotIn(ip + "/32|", payload.decode())
        a = attempt("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"], ip)
        self.assertTrue(a.ok, a.text)
        self.assertEqual(a.outcome, "allow", a)

    def test_bad_requests_get_a_4xx_and_the_daemon_keeps_serving(self):
        body = json.dumps(ALLOW_BODY).encode()
        cases = [
            ("garbage request line", b"HELLO THERE\r\n\r\n", 400),
            ("bad header line", b"POST /policy?command=allow HTTP/1.1\r\nNo colon here\r\n\r\n", 400),
            ("bad content-length", b"POST /policy?command=allow HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            ("oversized header",
             b"POST /policy?command=allow HTTP/1.1\r\nX-Filler: " + b"a" * 5000 + b"\r\n\r\n", 431),
            ("oversized body", policy_post(b'{"login":"' + b"x" * 8000 + b'"}'), 413),
            ("oversized body announced only",
             b"POST /policy?command=allow HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n{", 413),
            ("not JSON", policy_post(b"login=NOT-JSON-MARKER&remote=1.2.3.4"), 400),
            ("truncated JSON", policy_post(body[:-5]), 400),
            ("JSON but not an object", policy_post(b'["NOT-JSON-MARKER"]'), 400),
            ("missing login", policy_post(b'{"remote":"192.0.2.9","pwhash":"0abc"}'), 422),
            ("missing remote", policy_post(b'{"login":"a@example.org"}'), 422),
            ("report without success", policy_post(body, command="report"), 422),
            ("wrong type", policy_post(b'{"login":7,"remote":"192.0.2.9"}'), 422),
            ("unknown command", policy_post(body, command="reset"), 400),
            ("form content type", policy_post(body, content_type=b"application/x-www-form-urlencoded"), 415),
            ("no API key", b"POST /policy?command=allow HTTP/1.1\r\nContent-Length: %d\r\n"
                           b"Connection: close\r\n\r\n" % len(body) + body, 401),
            ("wrong API key", policy_post(body).replace(API_KEY.encode(), b"nope-nope-nope"), 401),
            ("GET allow", b"GET /policy?command=allow HTTP/1.1\r\nX-API-Key: " + API_KEY.encode() +
                          b"\r\nConnection: close\r\n\r\n", 405),
            ("unknown path", b"GET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n", 404),
            ("bad target", b"POST ftp://x/y?command=allow HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        ]
        for name, data, expected in cases:
            with self.subTest(name):
                got = raw_exchange(data)
                self.assertEqual(status_of(got), expected, "%s: %r" % (name, got[:300]))
                self.assertIn(b'{"error":', got, name)
        # A client that stops in the middle of a request is dropped after request_timeout
        # and harms nobody meanwhile.
        with socket.create_connection(("127.0.0.1", PORT), timeout=10) as half:
            half.sendall(b"POST /policy?command=allow HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")
            self.assert_serving()
        self.assert_serving()

    def test_connection_limit(self):
        """policy_max_connections: with every slot taken, a new connection replaces the one that
        has waited longest for a request; the others still work."""
        port = h.free_tcp_port()
        db = MAILDICTD.conf["database"]   # a database value: SQLite or PostgreSQL
        with h.start_maildictd(TMP.path, db_path=db, name="maildictd-limits",
                               socket=os.path.join(TMP.path, "limits.sock"),
                               policy_listen="127.0.0.1:%d" % port, policy_max_connections=3) as md:
            held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
            try:
                body = json.dumps(ALLOW_BODY).encode()
                request = (b"POST /policy?command=allow HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
                           + body)
                # the three held connections are served (and kept alive)
                for s in held:
                    s.sendall(request)
                    self.assertEqual(status_of(s.recv(65536)), 200)
                with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
                    extra.sendall(request)
                    self.assertEqual(status_of(extra.recv(65536)), 200, "a 4th connection must be served")
                # ... in place of the connection idle the longest
                try:
                    self.assertEqual(held[0].recv(65536), b"", "the oldest idle connection must be closed")
                except ConnectionResetError:
                    pass
                for s in held[1:]:
                    s.sendall(request)
                    self.assertEqual(status_of(s.recv(65536)), 200)
            finally:
                for s in held:
                    s.close()
            self.assertIn("policy_max_connections", md.log_text())

    def test_300_silent_connections_do_not_starve_dovecot(self):
        """Connections that send nothing cannot hold the policy listener: Dovecot's requests are
        still answered (the login from a blocked IP is rejected, which only maildictd's answer
        can do; with auth_policy_reject_on_fail = no a failed policy request lets it in), and
        the silent connections are closed after policy_header_timeout."""
        ip = "192.0.2.60"
        restart_maildictd()   # Dovecot's kept-alive connections end: it has to connect anew
        status, payload = http_request("POST", "/admin/block", {"ip": ip, "reason": "e2e silent"})
        self.assertEqual(status, 200, payload)
        silent = [socket.create_connection(("127.0.0.1", PORT), timeout=10) for _ in range(300)]
        opened = time.monotonic()
        try:
            a = attempt("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"], ip)
            self.assertFalse(a.ok, a.text)
            self.assertEqual(a.outcome, "reject", a)
            b = attempt("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"], "198.51.100.61")
            self.assertTrue(b.ok, b.text)

            def all_closed():
                for s in silent:
                    s.settimeout(0.01)
                    try:
                        if s.recv(1) != b"":
                            return False
                    except socket.timeout:
                        return False
                    except OSError:
                        pass
                return True
            h.wait_until(all_closed, 60, "the silent connections to be closed", interval=0.5)
            h.log("300 silent connections closed %.1f s after they were opened" % (time.monotonic() - opened))
        finally:
            for s in silent:
                s.close()
            status, payload = http_request("POST", "/admin/unblock", {"ip": ip})
            self.assertEqual(status, 200, payload)

    def test_keep_alive_absolute_form_and_trimmed_key(self):
        body = json.dumps(ALLOW_BODY).encode()
        one = (b"POST http://policy.local/check?tenant=a&command=allow HTTP/1.1\r\nHost: policy.local\r\n"
               b"X-API-Key:   " + API_KEY.encode() + b"  \r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
        bad = (b"POST /policy?command=allow HTTP/1.1\r\nX-API-Key: " + API_KEY.encode() +
               b"\r\nContent-Length: 2\r\n\r\n{}")
        report = dict(ALLOW_BODY, success=False, policy_reject=False)
        rbody = json.dumps(report).encode()
        three = (b"POST /policy?command=report HTTP/1.1\r\nX-API-Key: " + API_KEY.encode() +
                 b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(rbody) + rbody)
        with socket.create_connection(("127.0.0.1", PORT), timeout=10) as s:
            replies = b""
            for chunk in (one, bad, three):   # one connection, one request after the other
                s.sendall(chunk)
                time.sleep(0.05)
            while True:
                c = s.recv(65536)
                if not c:
                    break
                replies += c
        statuses = [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", replies)]
        self.assertEqual(statuses, [200, 422, 204], replies)
        self.assertIn(b'{"status":0,"msg":""}', replies)

    def test_unix_socket_as_dovecot_2_4_uses_it(self):
        """policy_socket: the requests Dovecot 2.4.1 sends through auth_policy {
        http_client_proxy_socket_path } (absolute-form target, no Connection header, the API key
        after two spaces), several on one kept-alive connection, as captured from it."""
        path = TMP.join("policy.sock")
        st = os.stat(path)
        self.assertEqual(st.st_mode & 0o777, 0o660)

        def request(command, body):
            data = json.dumps(body, separators=(",", ":")).encode()
            return (b"POST http://policy.invalid/policy?command=" + command.encode() + b" HTTP/1.1\r\n"
                    b"Host: policy.invalid\r\nDate: Fri, 04 Dec 2026 14:46:34 GMT\r\n"
                    b"User-Agent: dovecot/auth-policy-client\r\nContent-Length: %d\r\n"
                    b"Content-Type: application/json\r\nX-API-Key:  " % len(data) + API_KEY.encode() +
                    b"\r\n\r\n" + data)

        allow = {"device_id": "", "fail_type": "", "login": "john@example.org", "protocol": "doveadm",
                 "pwhash": "0834", "remote": "192.0.2.70", "session_id": "", "tls": False}
        report = dict(allow, success=True, policy_reject=False)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            replies = []
            for command, body in (("allow", allow), ("allow", allow), ("report", report)):
                s.sendall(request(command, body))
                got = b""
                while b"\r\n\r\n" not in got:
                    got += s.recv(65536)
                replies.append(got)
            self.assertEqual([status_of(r) for r in replies], [200, 200, 204], replies)
            self.assertIn(b'{"status":0,"msg":""}', replies[0])
            # still open (HTTP/1.1 keeps alive without a Connection header): one more request
            time.sleep(0.2)
            s.sendall(request("allow", allow))
            self.assertEqual(status_of(s.recv(65536)), 200)
        # without the key: 401, and the connection is closed
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(request("allow", allow).replace(API_KEY.encode(), b"wrong-key-here"))
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            self.assertEqual(status_of(got), 401, got)

    def test_metrics(self):
        status, payload = http_request("GET", "/metrics", key=False)
        self.assertEqual(status, 200)
        text = payload.decode()
        for name in ("maildict_policy_requests_total{kind=\"allow\"}",
                     "maildict_policy_decisions_total{decision=\"reject\"}",
                     "maildict_lookups_total{outcome=\"found\"}",
                     "maildict_cache_requests_total{result=\"hit\"}",
                     "maildict_pool_in_flight",
                     "maildict_policy_request_duration_seconds_bucket{le=\"+Inf\"}",
                     "maildict_lookup_duration_seconds_count"):
            self.assertIn(name, text)
        values = h.policy_metrics(PORT)
        self.assertGreaterEqual(values['maildict_policy_requests_total{kind="allow"}'], 1)
        a = attempt("jane@example.org", h.DEMO_PASSWORDS["jane@example.org"], "198.51.100.99")
        self.assertTrue(a.ok, a.text)
        after = h.policy_metrics(PORT)
        # a successful login: two allows (before and after auth), a report, one passdb lookup
        self.assertGreaterEqual(after['maildict_policy_requests_total{kind="allow"}'] -
                                values['maildict_policy_requests_total{kind="allow"}'], 2)
        self.assertGreaterEqual(after['maildict_policy_requests_total{kind="report"}'] -
                                values['maildict_policy_requests_total{kind="report"}'], 1)
        self.assertGreaterEqual(after['maildict_lookups_total{outcome="found"}'] -
                                values['maildict_lookups_total{outcome="found"}'], 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
