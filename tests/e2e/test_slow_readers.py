#!/usr/bin/env python3
"""Clients that send and never read cannot make maildictd's memory grow (issue 12, item 2).

maildictd serves a directory of 20,000 users (`maildict-admin demo --bulk 20000`) with
write_timeout = 3s and the default max_write_buffer (256k). Two hostile clients never read:
  * one pipelines userdb lookups as fast as the socket lets it (up to 600,000 of them, about
    110 MB of replies if they were all kept);
  * one pipelines 100 iterations of shared/userdb/ (`doveadm user '*'`, about 4 MB of rows each).
Meanwhile a well-behaved client looks a user up every 50 ms. Required:
  * maildictd's resident memory never grows by more than RSS_BOUND_MB over what it uses after
    one full iteration has been served (the documented bound: max_write_buffer and the rows of
    one iteration per connection, plus slack for the allocator);
  * both hostile connections are closed once they have read nothing for write_timeout (the
    check runs every half write_timeout), each with one log line naming write_timeout;
  * every lookup of the well-behaved client is answered, each within 5 s, and a full iteration
    still works afterwards.
Runs in about 15 s.
"""
import os
import select
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

BULK_USERS = 20000
WRITE_TIMEOUT = 3.0
RSS_BOUND_MB = 64
ITERATE = b"I0\t0\tshared/userdb/\t\n"


def read_iteration(c):
    """Reads one iteration's rows (FIFO or async-id style) up to its end line; returns how many."""
    rows = 0
    while True:
        line = c.read_line()
        if line.startswith(b"*"):
            continue
        if line.startswith(b"+"):
            line = line.split(b"\t", 1)[1]
        if line == b"":
            return rows
        if not line.startswith(b"O"):
            raise AssertionError("iteration failed: %r" % line[:200])
        rows += 1


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


class RssSampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, AssertionError):
                return
            time.sleep(0.02)


class HostileWriter(threading.Thread):
    """Sends `chunk` again and again (at most `limit` times) and never reads. Records when the
    server closed the connection (a send fails) or when sending blocked for good."""

    def __init__(self, path, chunk, limit):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.chunk = chunk
        self.limit = limit
        self.sent = 0
        self.closed_at = None
        self.halt = threading.Event()

    def run(self):
        self.sock.sendall(b"H3\t2\t0\t\tmaildict\n")
        self.sock.settimeout(0.5)
        while not self.halt.is_set() and self.sent < self.limit:
            try:
                self.sock.sendall(self.chunk)
                self.sent += 1
            except socket.timeout:
                continue          # the server stopped reading: keep trying, as an attacker would
            except OSError:       # EPIPE / ECONNRESET: the server closed the connection
                self.closed_at = time.monotonic()
                return
        # out of requests to send: wait (still never reading) until the server hangs up
        poller = select.poll()
        poller.register(self.sock, select.POLLRDHUP)
        while not self.halt.is_set():
            if poller.poll(100):
                self.closed_at = time.monotonic()
                return

    def stop(self):
        self.halt.set()
        self.join(30)
        self.sock.close()


class SlowReadersTest(unittest.TestCase):
    def test_clients_that_never_read(self):
        h.require_programs()
        with h.TempDir() as tmp:
            db = h.make_demo_db(tmp.path, bulk=BULK_USERS)
            with h.start_maildictd(tmp.path, db_path=db, write_timeout="%dms" % (WRITE_TIMEOUT * 1000),
                                   cache_entries="100000", log_level="info") as md:
                # warm up: one full iteration read by a good client, then the baseline
                with h.DictClient(md.socket, timeout=60) as c:
                    c.hello(minor=0)   # FIFO replies
                    c.send(ITERATE)
                    self.assertGreaterEqual(read_iteration(c), BULK_USERS)
                    for i in range(50):
                        self.assertTrue(c.lookup(b"shared/userdb/user%d@bulk.example" % (i + 1)).startswith(b"O"))
                baseline = rss_kib(md.pid)
                sampler = RssSampler(md.pid)
                sampler.start()

                lookups = b"".join(b"Lshared/userdb/user%d@bulk.example\t\n" % (i % 50) for i in range(1, 1001))
                flooder = HostileWriter(md.socket, lookups, 600)
                iterator = HostileWriter(md.socket, ITERATE * 100, 1)
                started = time.monotonic()
                flooder.start()
                iterator.start()

                # a well-behaved client is served throughout
                answered = 0
                worst = 0.0
                with h.DictClient(md.socket, timeout=5) as good:
                    good.hello()
                    deadline = started + WRITE_TIMEOUT * 1.5 + 20
                    while (flooder.closed_at is None or iterator.closed_at is None) \
                            and time.monotonic() < deadline:
                        t0 = time.monotonic()
                        reply = good.lookup(b"shared/userdb/user%d@bulk.example" % (answered % 900 + 100))
                        worst = max(worst, time.monotonic() - t0)
                        self.assertTrue(reply.startswith(b"O"), reply)
                        answered += 1
                        time.sleep(0.05)
                sampler.halt.set()
                sampler.join()
                flooder.stop()
                iterator.stop()
                h.log("lookups sent by the flooder: %d; good client: %d answers, slowest %.3f s; "
                      "RSS baseline %d KiB, peak %d KiB"
                      % (flooder.sent * 1000, answered, worst, baseline, sampler.peak))
                grown_mb = (sampler.peak - baseline) / 1024.0
                self.assertLess(grown_mb, RSS_BOUND_MB,
                                "maildictd grew by %.1f MB with two clients that never read" % grown_mb)
                for name, w in (("lookup flooder", flooder), ("iterator", iterator)):
                    self.assertIsNotNone(w.closed_at, "the %s was never closed" % name)
                    took = w.closed_at - started
                    self.assertGreaterEqual(took, WRITE_TIMEOUT * 0.9, "%s closed too early (%.1f s)" % (name, took))
                self.assertGreater(answered, 10)
                lines = [l for l in md.log_text().splitlines() if "write_timeout" in l]
                self.assertEqual(len(lines), 2, lines)

                # and a full iteration still works afterwards
                with h.DictClient(md.socket, timeout=60) as c:
                    c.hello()          # async-id replies
                    c.send(ITERATE)
                    self.assertGreaterEqual(read_iteration(c), BULK_USERS)


if __name__ == "__main__":
    unittest.main(verbosity=2)
