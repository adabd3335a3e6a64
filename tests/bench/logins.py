#!/usr/bin/env python3
"""End-to-end login benchmark (issue 17, item 1): logins/s and p99 through Dovecot's own auth
service, for every way maildict serves Dovecot, each next to the `passdb sql` it replaces.

A login here is what a Dovecot login process and the master do for one IMAP login: on the
auth-client socket `AUTH <id> PLAIN service=imap ... rip=<ip> resp=<base64>` -> `OK`, then on
the auth-master socket `REQUEST <id> <client pid> <auth id> <cookie>` -> `USER` (the userdb
lookup). The latency runs from writing AUTH to reading USER. Every request carries its own
`rip` (127.x.y.z: a field of the protocol, no traffic goes there) so Dovecot's per-IP penalties
cannot interfere, and every password is stored as `{PLAIN}` so hashing does not hide the
lookup. Dovecot's auth cache is off (auth_cache_size = 0), as in most setups; maildictd runs
with its default cache, its designed way of working.

Routes, all on one SQLite file (maildict's schema, USERS bulk users) in one run:
  2.3 sql        Dovecot 2.3 (this host) passdb sql + userdb sql on the file      (peer)
  2.3 dict       Dovecot 2.3, the shipped 10-maildict.conf: driver=dict -> maildictd
  2.3 lua        Dovecot 2.3, the shipped 10-maildict-lua.conf -> maildictd
  2.4 sql        Dovecot 2.4.1 (the trixie tree) passdb sql + userdb sql on the file (peer)
  2.4 lua        Dovecot 2.4.1, the shipped 10-maildict-2.4.conf -> maildictd
Each route runs 1 login at a time and CONCURRENCY in flight (one auth-client and one
auth-master connection per in-flight login, as separate login processes would have). Rounds
interleave the routes (the order reversed every other round) so a change in background load
shows on both sides of a ratio; the report gives the median over rounds and the spread
(lowest-highest), and each ratio is the median of the per-round ratios to the route's peer.

Usage (root: Dovecot and chroot; the Debian 13 tree of tests/e2e/trixie-tree.sh):
  tests/bench/logins.py [--rounds 5] [--seconds 3] [--users 10000] [--concurrency 32]
  tests/bench/logins.py --smoke          # a second or so per route: proves it still works
MAILDICT_BUILD_DIR (default ./build) names the build with maildictd and maildict-admin.
Exit status non-zero when any login failed, 77 when the tree is missing outside CI (which
fails instead, tests/e2e/trixie.py). See tests/bench/README.md.
"""
import argparse
import asyncio
import base64
import os
import random
import sqlite3
import statistics
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import harness as h  # noqa: E402
import trixie as tx  # noqa: E402

PASSWORD = "bulk-secret"
DOMAIN = "bulk.example"
HOME_ROOT = "/var/vmail"
QUIET = ["auth_debug = no", "auth_verbose = no", "auth_failure_delay = 0"]

# The same answer as maildictd's for the bulk users (active user in an active domain; the
# configured defaults where a column is NULL), lower-cased keys as maildict compares them.
SQL_WHERE = ("FROM users u JOIN domains d ON d.domain = u.domain "
             "WHERE u.local_part = '{n}' AND u.domain = '{d}' AND u.active = 1 AND d.active = 1")
SQL_PASSDB = "SELECT u.local_part || '@' || u.domain AS user, u.password AS password " + SQL_WHERE
SQL_USERDB = ("SELECT COALESCE(u.home, '" + HOME_ROOT + "/' || u.domain || '/' || u.local_part) "
              "AS home, COALESCE(u.uid, 65534) AS uid, COALESCE(u.gid, 65534) AS gid, {mail} "
              + SQL_WHERE)


def sql_auth_23(conf_ext):
    return ("passdb {\n  driver = sql\n  args = %s\n}\n"
            "userdb {\n  driver = sql\n  args = %s\n}\n" % (conf_ext, conf_ext))


def sql_conf_ext_23(db):
    keys = {"n": "%Ln", "d": "%Ld"}
    return ("driver = sqlite\nconnect = %s\npassword_query = %s\nuser_query = %s\n"
            % (db, SQL_PASSDB.format(**keys),
               SQL_USERDB.format(mail="COALESCE(u.mail, 'maildir:~/Maildir') AS mail", **keys)))


def sql_auth_24(db):
    keys = {"n": "%{user | username | lower}", "d": "%{user | domain | lower}"}
    mail = "'maildir' AS mail_driver, '~/Maildir' AS mail_path"
    return ("sql_driver = sqlite\nsqlite_path = %s\nsqlite_readonly = yes\n"
            "passdb sql {\n  query = %s\n}\nuserdb sql {\n  query = %s\n}\n"
            % (db, SQL_PASSDB.format(**keys), SQL_USERDB.format(mail=mail, **keys)))


def dovecot23(tmp, dict_socket, name, auth_snippet=None, **kw):
    """The host's Dovecot 2.3 (harness.Dovecot, quiet); auth_snippet replaces the shipped
    10-maildict.conf include."""
    d = h.Dovecot(tmp, dict_socket, name=name, extra="\n".join(QUIET), **kw)
    if auth_snippet is not None:
        path = os.path.join(d.dir, "10-auth.conf")
        with open(path, "w") as f:
            f.write(auth_snippet)
        with open(d.conf_path) as f:
            conf = f.read()
        include = "!include %s\n" % d.snippet_path
        assert conf.count(include) == 1, d.conf_path
        with open(d.conf_path, "w") as f:
            f.write(conf.replace(include, "!include %s\n" % path))
    return d.start()


class Route:
    def __init__(self, name, peer, dovecot):
        self.name, self.peer, self.dovecot = name, peer, dovecot
        # the socket login processes use (auth-client connections cannot be REQUESTed)
        self.auth_client = os.path.join(dovecot.base_dir, "login", "login")
        self.auth_master = os.path.join(dovecot.base_dir, "auth-master")


def start_routes(tmp, tree, db, dict_socket):
    lua = os.path.join(tmp.path, "maildict-auth.lua")
    with open(tx.SHIPPED_LUA) as src, open(lua, "w") as dst:
        dst.write(src.read())
    sql_ext = os.path.join(tmp.path, "dovecot-sql.conf.ext")
    with open(sql_ext, "w") as f:
        f.write(sql_conf_ext_23(db))
    routes = []
    # shipped idle_msecs: dict connections are kept, as an installed system has them
    routes.append(Route("2.3 sql", None,
                        dovecot23(tmp.path, dict_socket, "d23sql", sql_auth_23(sql_ext))))
    routes.append(Route("2.3 dict", "2.3 sql",
                        dovecot23(tmp.path, dict_socket, "d23dict",
                                  idle_msecs=h.SHIPPED_IDLE_MSECS)))
    routes.append(Route("2.3 lua", "2.3 sql",
                        dovecot23(tmp.path, dict_socket, "d23lua",
                                  tx.shipped_23_lua_snippet(lua, dict_socket))))
    routes.append(Route("2.4 sql", None,
                        tx.start_dovecot24(tree, dict_socket, tag="s", debug=False,
                                           auth_conf=sql_auth_24(tree.inside(db)))))
    routes.append(Route("2.4 lua", "2.4 sql",
                        tx.start_dovecot24(tree, dict_socket, tag="l", debug=False)))
    return routes


# ---- the auth protocols ------------------------------------------------------------------------

class LoginFailed(Exception):
    pass


_next_cpid = [7000000]
_next_rip = [0]


def next_rip():
    _next_rip[0] += 1
    n = _next_rip[0] % (1 << 24)
    return "127.%d.%d.%d" % (n >> 16, (n >> 8) & 255, n & 255)


class LoginClient:
    """One auth-client connection (its own CPID, as one login process) and one auth-master
    connection; logins one after the other."""

    async def connect(self, route):
        _next_cpid[0] += 1
        self.cpid = _next_cpid[0]   # unique per connection: Dovecot refuses a CPID in use
        self.ar, self.aw = await asyncio.open_unix_connection(route.auth_client)
        self.aw.write(b"VERSION\t1\t2\nCPID\t%d\n" % self.cpid)
        self.cookie = None
        while True:
            line = await self.ar.readline()
            if not line:
                raise LoginFailed("%s closed the auth-client handshake" % route.name)
            if line.startswith(b"COOKIE\t"):
                self.cookie = line.rstrip(b"\n").split(b"\t")[1]
            if line == b"DONE\n":
                break
        self.mr, self.mw = await asyncio.open_unix_connection(route.auth_master)
        self.mw.write(b"VERSION\t1\t0\n")
        while not (await self.mr.readline()).startswith(b"SPID\t"):
            pass
        self.id = 0

    async def login(self, user, password=PASSWORD):
        """-> the USER reply's fields; LoginFailed with Dovecot's reply otherwise."""
        self.id += 1
        resp = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
        self.aw.write(b"AUTH\t%d\tPLAIN\tservice=imap\tlip=127.0.0.1\trip=%s\tsecured\tresp=%s\n"
                      % (self.id, next_rip().encode(), resp))
        reply = await self.ar.readline()
        if not reply.startswith(b"OK\t%d\t" % self.id):
            raise LoginFailed("AUTH %s: %r" % (user, reply))
        self.mw.write(b"REQUEST\t%d\t%d\t%d\t%s\n" % (self.id, self.cpid, self.id, self.cookie))
        reply = await self.mr.readline()
        if not reply.startswith(b"USER\t%d\t" % self.id):
            raise LoginFailed("REQUEST %s: %r" % (user, reply))
        return dict(f.split("=", 1) for f in reply.decode().rstrip("\n").split("\t")[3:]
                    if "=" in f)

    def close(self):
        for w in (self.aw, self.mw):
            w.close()


async def check_route(route):
    """One right login with the expected userdb answer, one wrong password refused."""
    c = LoginClient()
    await c.connect(route)
    try:
        fields = await c.login("user1@" + DOMAIN)
        want = "%s/%s/user1" % (HOME_ROOT, DOMAIN)
        if fields.get("home") != want:
            raise LoginFailed("%s: home %r, expected %r" % (route.name, fields.get("home"), want))
        try:
            await c.login("user2@" + DOMAIN, "not-" + PASSWORD)
        except LoginFailed:
            pass
        else:
            raise LoginFailed("%s accepted a wrong password" % route.name)
    finally:
        c.close()


async def measure(route, concurrency, seconds, users):
    """-> (logins/s, p99 seconds, errors) for `concurrency` logins in flight."""
    clients = [LoginClient() for _ in range(concurrency)]
    await asyncio.gather(*(c.connect(route) for c in clients))
    latencies = []
    errors = []
    deadline = [None]

    async def worker(c):
        rnd = random.Random()
        while time.perf_counter() < deadline[0]:
            user = "user%d@%s" % (rnd.randint(1, users), DOMAIN)
            t0 = time.perf_counter()
            try:
                await c.login(user)
            except (LoginFailed, OSError) as e:
                errors.append(str(e))
                return
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    deadline[0] = start + seconds
    await asyncio.gather(*(worker(c) for c in clients))
    elapsed = time.perf_counter() - start
    for c in clients:
        c.close()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    return len(latencies) / elapsed, p99, errors


# ---- the run and its report --------------------------------------------------------------------

def spread(values, fmt):
    if not values:
        return "n/a"
    return "%s (%s–%s)" % (fmt % statistics.median(values), fmt % min(values), fmt % max(values))


def report(routes, levels, results, ratios):
    print("\n| route | " + " | ".join("%s: logins/s | ratio | p99" % lvl for lvl in levels) + " |")
    print("|---|" + "---:|---:|---:|" * len(levels))
    for r in routes:
        cells = []
        for lvl in levels:
            rates = [x[0] for x in results[r.name, lvl]]
            p99s = [x[1] * 1000 for x in results[r.name, lvl]]
            ratio = spread(ratios[r.name, lvl], "%.2f×") if r.peer else "peer"
            cells += [spread(rates, "%.0f"), ratio, "%.1f ms" % statistics.median(p99s)
                      if p99s else "n/a"]
        print("| %s | %s |" % (r.name, " | ".join(cells)))
    print("\nlogins/s and ratio: median over rounds (lowest–highest); ratio = the route's "
          "logins/s / its peer's (`passdb sql` of the same Dovecot) in the same round; p99: "
          "median over rounds")


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0, help="per route, level and round")
    ap.add_argument("--warmup", type=float, default=1.0, help="per route, before the rounds")
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--smoke", action="store_true", help="1 round of 0.3 s, 200 users")
    a = ap.parse_args()
    if a.smoke:
        a.rounds, a.seconds, a.warmup, a.users = 1, 0.3, 0.2, 200
    tree = tx.require_tree()
    h.require_programs()
    tmp = tree.temp_dir("b")
    db = h.make_demo_db(tmp.path, bulk=a.users)
    with sqlite3.connect(db) as c:
        n = c.execute("UPDATE users SET password = ? WHERE domain = ?",
                      ("{PLAIN}" + PASSWORD, DOMAIN)).rowcount
    assert n == a.users, "%d bulk users, expected %d" % (n, a.users)
    dict_socket = tree.check_socket_path(tmp.join("d.sock"))
    conf = h.maildict_config(tmp.path, db, socket=dict_socket, log_level="warn",
                             default_home=HOME_ROOT + "/%d/%n", cache_entries=None,
                             db_connections=None, io_threads=None, request_timeout=None)
    daemons = [h.Maildictd(tmp.path, conf).start()]
    failed = []
    try:
        routes = start_routes(tmp, tree, db, dict_socket)
        daemons += [r.dovecot for r in routes]
        levels = (1, a.concurrency)
        loop = asyncio.new_event_loop()
        for r in routes:
            loop.run_until_complete(check_route(r))
            loop.run_until_complete(measure(r, a.concurrency, a.warmup, a.users))
        print("load average before: %s; %d users, %d rounds of %.1f s per route and level"
              % (load_average(), a.users, a.rounds, a.seconds), flush=True)
        results = {(r.name, lvl): [] for r in routes for lvl in levels}
        ratios = {(r.name, lvl): [] for r in routes for lvl in levels}
        for rnd in range(a.rounds):
            order = routes if rnd % 2 == 0 else routes[::-1]
            for lvl in levels:
                this_round = {}
                for r in order:
                    rate, p99, errors = loop.run_until_complete(
                        measure(r, lvl, a.seconds, a.users))
                    failed += ["%s: %s" % (r.name, e) for e in errors]
                    this_round[r.name] = rate
                    results[r.name, lvl].append((rate, p99))
                    print("round %d  %-8s  %2d in flight  %7.0f logins/s  p99 %.1f ms%s"
                          % (rnd + 1, r.name, lvl, rate, p99 * 1000,
                             "  ERRORS %d" % len(errors) if errors else ""), flush=True)
                for r in routes:
                    if r.peer and this_round[r.peer] > 0:
                        ratios[r.name, lvl].append(this_round[r.name] / this_round[r.peer])
        print("load average after: %s" % load_average())
        report(routes, levels, results, ratios)
        loop.close()
        if failed:   # what the daemons said about it, before their directories go
            for d in daemons:
                lines = [l for l in h.tail(d.log_path, 400).splitlines()
                         if "rror" in l or "arn" in l or "fail" in l]
                print("--- %s:\n%s" % (d.log_path, "\n".join(lines[-15:])), file=sys.stderr)
    finally:
        for d in reversed(daemons):
            d.stop()
        tmp.cleanup()
    for f in failed[:10]:
        print("FAILED LOGIN " + f, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except unittest.SkipTest as e:   # no Debian 13 tree here (outside CI): say so, exit 77
        print("skipped: %s" % e, file=sys.stderr)
        sys.exit(77)
