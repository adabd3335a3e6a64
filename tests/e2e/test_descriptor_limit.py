#!/usr/bin/env python3
"""2,000 clients against a maildictd limited to 1,024 descriptors (issue 12, item 3).

maildictd runs under `prlimit --nofile=1024:1024` (soft and hard, so it cannot raise it) with
the default max_connections (4096). It must lower max_connections to what fits and say so in
its log. 2,000 clients then connect at once, each sending a handshake and a passdb lookup
right away; every one must be either answered or see its connection closed (refused) within
30 s, none left hanging, and most of the descriptors must serve clients (at least 800 answered).
After they all close, a new client is served. The log holds a bounded number of lines (no line
per refused client or per failed accept). Runs in about 5 s.
"""
import os
import resource
import select
import socket
import stat
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

CLIENTS = 2000
LIMIT = 1024
MAX_LOG_LINES = 30
REQUEST = b"H3\t0\t0\t\tmaildict\nLshared/passdb/john@example.org\t\n"


class DescriptorLimitTest(unittest.TestCase):
    def test_2000_clients_with_1024_descriptors(self):
        h.require_programs()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < CLIENTS + 200:
            raise AssertionError("this test needs %d descriptors itself (hard limit %d)" % (CLIENTS + 200, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        with h.TempDir() as tmp:
            # maildictd (and its --check-config) started through prlimit, which execs it
            wrapper = tmp.join("maildictd-limited")
            with open(wrapper, "w") as f:
                f.write("#!/bin/sh\nexec prlimit --nofile=%d:%d -- %s \"$@\"\n" % (LIMIT, LIMIT, h.maildictd_path()))
            os.chmod(wrapper, stat.S_IRWXU)
            saved = os.environ.get("MAILDICT_MAILDICTD")
            os.environ["MAILDICT_MAILDICTD"] = wrapper
            try:
                md = h.start_maildictd(tmp.path, log_level="info")
            finally:
                if saved is None:
                    del os.environ["MAILDICT_MAILDICTD"]
                else:
                    os.environ["MAILDICT_MAILDICTD"] = saved
            with md:
                with open("/proc/%d/limits" % md.pid) as f:
                    limits = f.read()
                self.assertRegex(limits, r"Max open files\s+%d\s+%d" % (LIMIT, LIMIT))
                self.assertIn("max_connections lowered from 4096", md.log_text())

                clients = []
                start = time.monotonic()
                for _ in range(CLIENTS):
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.settimeout(30)
                    s.connect(md.socket)
                    s.setblocking(False)
                    try:
                        s.send(REQUEST)
                    except OSError:
                        pass          # refused before we could send: seen below as closed
                    clients.append(s)
                # every client: an answer or a closed connection, none hanging
                outcome = {}
                got = {s.fileno(): b"" for s in clients}
                by_fd = {s.fileno(): s for s in clients}
                poller = select.poll()
                for s in clients:
                    poller.register(s, select.POLLIN | select.POLLRDHUP)
                deadline = time.monotonic() + 30
                while len(outcome) < CLIENTS and time.monotonic() < deadline:
                    for fd, ev in poller.poll(500):
                        s = by_fd[fd]
                        try:
                            data = s.recv(4096)
                        except BlockingIOError:
                            continue
                        except OSError:
                            data = b""
                        if data:
                            got[fd] += data
                            if b"\n" in got[fd]:
                                self.assertTrue(got[fd].startswith(b"O"), got[fd][:200])
                                outcome[fd] = "served"
                                poller.unregister(fd)
                        else:
                            outcome[fd] = "refused"
                            poller.unregister(fd)
                took = time.monotonic() - start
                served = sum(1 for v in outcome.values() if v == "served")
                refused = sum(1 for v in outcome.values() if v == "refused")
                h.log("%d clients: %d served, %d refused, %d hanging, in %.1f s"
                      % (CLIENTS, served, refused, CLIENTS - len(outcome), took))
                self.assertEqual(len(outcome), CLIENTS,
                                 "%d clients got neither an answer nor a closed connection within 30 s"
                                 % (CLIENTS - len(outcome)))
                self.assertGreaterEqual(served, 800)
                self.assertGreater(refused, 0)
                for s in clients:
                    s.close()

                def fresh_client_served():
                    try:
                        with h.DictClient(md.socket, timeout=5) as c:
                            c.hello()
                            return c.lookup(b"shared/passdb/john@example.org").startswith(b"O")
                    except (AssertionError, h.Closed, OSError):
                        return False
                h.wait_until(fresh_client_served, 30, "a new client to be served after the others closed")
                lines = md.log_text().splitlines()
                self.assertLessEqual(len(lines), MAX_LOG_LINES, "\n".join(lines[:60]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
