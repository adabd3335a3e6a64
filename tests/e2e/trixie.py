"""Debian 13 (trixie) peers for the end-to-end tests: Dovecot 2.4.1 and OpenSMTPD 7.6 run with
a plain `chroot` in the minimal trixie tree that tests/e2e/trixie-tree.sh makes
(packaging/install-deps.sh test calls it), next to maildictd running on this Debian 12 host.
This module is the one way the tests find the tree, map paths into it and share files with it;
tests/e2e/smtpd76.py adds only what smtpd needs on top (ChrootSmtpd).

How the two sides meet: nothing is mounted for Dovecot. A test's directory lives in the tree's
/tmp (TrixieTree.temp_dir): a UNIX socket a host process creates at <tree>/tmp/X/s.sock is
/tmp/X/s.sock inside the tree, reachable from both sides (the tree's /tmp, not /run: smtpd's
mount namespace replaces the tree's /run with a private one). TCP goes over the shared loopback;
the daemons run in the host's PID namespace, so a test signals them by pid. The tree's
/etc/passwd is its own: its `dovecot` or `opensmtpd` uid is not the host's, so files and sockets
shared with it use the tree's numeric ids (TrixieTree.uid / gid).

What is here:
  * tree_missing() / require_tree()   where the tree is, or why it cannot be used. A missing
        tree fails a test (never skips it) in CI or with MAILDICT_REQUIRE_PEERS=1; elsewhere it
        skips it, saying how to make the tree.
  * TrixieTree        path mapping (inside() / host()), check_socket_path(), run() / spawn() a
        program inside the tree, temp_dir() / private_dir() in the tree's /tmp (removed at
        exit), the tree's uid()/gid()
  * Dovecot24         a private Dovecot 2.4.1 in the tree (own base_dir, state, log, instance
        name; auth_failure_delay = 0; IMAP/LMTP when asked) configured with the shipped
        packaging/dovecot/10-maildict-2.4.conf and maildict-auth.lua, only paths changed
"""

import os
import secrets
import shutil
import signal
import subprocess
import unittest

import harness as h

DEFAULT_ROOT = "/opt/maildict-test/trixie"
TREE_SCRIPT = os.path.join(h.SOURCE_DIR, "tests", "e2e", "trixie-tree.sh")
# Longest UNIX socket path the kernel takes (sun_path is 108 bytes with the NUL), counted on the
# host's side of the tree, which is the longer one.
SOCKET_PATH_MAX = 107


def tree_root():
    return os.environ.get("MAILDICT_TRIXIE_ROOT") or DEFAULT_ROOT


def peers_required():
    """In CI (or when asked) a missing peer is a failure: a skipped test proves nothing."""
    return os.environ.get("MAILDICT_REQUIRE_PEERS") == "1" or bool(os.environ.get("CI"))


def tree_missing(root=None):
    """Why the trixie tree cannot be used (a string), or None."""
    root = root or tree_root()
    if os.geteuid() != 0:
        return "running programs in the trixie tree needs root (chroot)"
    if not os.path.isfile(os.path.join(root, ".trixie-ok")):
        return ("no finished Debian 13 tree at %s (MAILDICT_TRIXIE_ROOT): run "
                "tests/e2e/trixie-tree.sh (or packaging/install-deps.sh test)" % root)
    for prog in ("usr/sbin/dovecot", "usr/bin/doveadm"):
        if not os.access(os.path.join(root, prog), os.X_OK):
            return "%s has no /%s: run tests/e2e/trixie-tree.sh" % (root, prog)
    return None


def skip_or_fail(why):
    """A peer is missing: SkipTest, or AssertionError when peers are required."""
    if peers_required():
        raise AssertionError("Debian 13 peers required (CI / MAILDICT_REQUIRE_PEERS=1): " + why)
    raise unittest.SkipTest(why)


def require_tree():
    """-> TrixieTree; raises SkipTest, or AssertionError when peers are required."""
    why = tree_missing()
    if why:
        skip_or_fail(why)
    return TrixieTree(tree_root())


class TrixieTree:
    def __init__(self, root):
        # resolved: chroot and the paths handed to it must agree on one spelling of the tree
        self.root = os.path.realpath(root)
        self._passwd = None
        self._group = None

    # ---- paths ----

    def host(self, inside):
        """/tmp/x inside the tree -> its path on the host."""
        assert inside.startswith("/"), inside
        return self.root + inside

    def inside(self, host_path):
        """A host path under the tree -> the same file's path inside the tree."""
        p = os.path.realpath(host_path)
        assert p == self.root or p.startswith(self.root + "/"), \
            "%s is not inside the tree %s" % (p, self.root)
        return p[len(self.root):] or "/"

    def check_socket_path(self, host_path):
        n = len(os.fsencode(host_path))
        assert n <= SOCKET_PATH_MAX, \
            "UNIX socket path too long (%d > %d bytes): %s" % (n, SOCKET_PATH_MAX, host_path)
        return host_path

    def temp_dir(self, tag="t"):
        """A fresh harness.TempDir <tree>/tmp/md<tag>-<random> (0755, short on purpose: socket
        paths in it count from the host's side), removed when the test process exits."""
        return h.TempDir(prefix="md%s-" % tag, dir=os.path.join(self.root, "tmp"))

    def private_dir(self, tag="t"):
        return self.temp_dir(tag).path

    # ---- the tree's own accounts ----

    def _read_db(self, name):
        rows = {}
        with open(os.path.join(self.root, "etc", name)) as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 4:
                    rows[parts[0]] = parts
        return rows

    def uid(self, user):
        if self._passwd is None:
            self._passwd = self._read_db("passwd")
        return int(self._passwd[user][2])

    def gid(self, group):
        if self._group is None:
            self._group = self._read_db("group")
        return int(self._group[group][2])

    # ---- programs ----

    def argv(self, argv, env=None):
        """chroot into the tree with a clean environment (the host's would only mislead)."""
        e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        e.update(env or {})
        return (["chroot", self.root, "/usr/bin/env", "-i"]
                + ["%s=%s" % kv for kv in sorted(e.items())] + list(argv))

    def run(self, argv, env=None, timeout=h.COMMAND_TIMEOUT, input=None):
        """Runs a program inside the tree -> (rc, stdout, stderr) as text."""
        r = subprocess.run(self.argv(argv, env), capture_output=True, text=True,
                           timeout=timeout, input=input)
        return r.returncode, r.stdout, r.stderr

    def spawn(self, argv, description, env=None, **kw):
        """Starts a program inside the tree (harness.spawn: cleaned up at exit, dies with the
        test). chroot and env exec, so the pid is the program's own."""
        return h.spawn(self.argv(argv, env), description, **kw)


# ---- Dovecot 2.4.1 ----------------------------------------------------------------------------

SHIPPED_24_CONF = os.path.join(h.PACKAGING_DOVECOT, "10-maildict-2.4.conf")
SHIPPED_LUA = os.path.join(h.PACKAGING_DOVECOT, "maildict-auth.lua")
SHIPPED_LUA_PATH = "/usr/share/maildict/maildict-auth.lua"
SHIPPED_SOCKET = "/run/maildict/dict.sock"


def shipped_24_snippet(lua_file, dict_socket):
    """packaging/dovecot/10-maildict-2.4.conf with the test's paths (inside the tree)."""
    with open(SHIPPED_24_CONF) as f:
        lines = f.read().splitlines()
    for old, new in ((SHIPPED_LUA_PATH, lua_file), (SHIPPED_SOCKET, dict_socket)):
        settings = [i for i, l in enumerate(lines)
                    if old in l and not l.lstrip().startswith("#")]
        assert len(settings) == 2, \
            "packaging/dovecot/10-maildict-2.4.conf must name %s for passdb and userdb" % old
        for i in settings:
            lines[i] = lines[i].replace(old, new)
    return "\n".join(lines) + "\n"


SHIPPED_23_LUA_CONF = os.path.join(h.PACKAGING_DOVECOT, "10-maildict-lua.conf")


def shipped_23_lua_snippet(lua_file, dict_socket):
    """packaging/dovecot/10-maildict-lua.conf (the Lua route on the host's Dovecot 2.3) with the
    given script and socket paths."""
    with open(SHIPPED_23_LUA_CONF) as f:
        snippet = f.read()
    for old, n in ((SHIPPED_LUA_PATH, 3), (SHIPPED_SOCKET, 2)):
        assert snippet.count(old) == n, "%s: expected %s %d times" % (SHIPPED_23_LUA_CONF, old, n)
    return snippet.replace(SHIPPED_LUA_PATH, lua_file).replace(SHIPPED_SOCKET, dict_socket)


SHIPPED_24_POLICY_CONF = os.path.join(h.PACKAGING_DOVECOT, "30-maildict-policy-2.4.conf")
SHIPPED_POLICY_SOCKET = "/run/maildict/policy.sock"


def shipped_24_policy_extra(policy_socket, nonce, api_key):
    """packaging/dovecot/30-maildict-policy-2.4.conf (the auth policy over maildictd's UNIX
    socket) with the test's socket path (inside the tree), nonce and key, plus the settings of
    harness.dovecot_policy_extra that leave maildict's tarpit the only thing slowing a login."""
    with open(SHIPPED_24_POLICY_CONF) as f:
        snippet = f.read()
    for old, new in ((SHIPPED_POLICY_SOCKET, policy_socket), ("CHANGE-ME-TOO", api_key),
                     ("CHANGE-ME", nonce)):
        assert old in snippet, "%s lost %r" % (SHIPPED_24_POLICY_CONF, old)
        snippet = snippet.replace(old, new)
    return "\n".join([snippet] + h.NO_AUTH_DELAYS)


class Dovecot24:
    """A private Dovecot 2.4.1 in the trixie tree. dict_socket: maildictd's socket, a host path
    inside the tree. All files live in one private directory <tree>/tmp/md<tag>-<random>/.
    auth_conf: passdb/userdb settings (text) instead of the shipped Lua snippet (the login
    benchmark's `passdb sql` peer); debug=False leaves auth_debug/auth_verbose off."""

    def __init__(self, tree, dict_socket, imap=False, lmtp=False, extra="", tag="dv",
                 auth_conf=None, debug=True):
        self.tree = tree
        self.dir = tree.private_dir(tag)
        self.base_dir = os.path.join(self.dir, "b")   # short: socket paths count from the host
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.conf_path = os.path.join(self.dir, "dovecot.conf")
        self.imap_port = h.free_tcp_port() if imap else None
        self.lmtp_socket = os.path.join(self.base_dir, "lmtp") if lmtp else None
        self.proc = None
        self.instance_name = "maildict-e2e-%s" % secrets.token_hex(4)
        tree.check_socket_path(os.path.join(self.base_dir, "auth-userdb"))
        lua = os.path.join(self.dir, "maildict-auth.lua")
        shutil.copy(SHIPPED_LUA, lua)
        os.chmod(lua, 0o644)
        snippet = os.path.join(self.dir, "10-maildict.conf")
        with open(snippet, "w") as f:
            f.write(auth_conf if auth_conf is not None
                    else shipped_24_snippet(tree.inside(lua), tree.inside(dict_socket)))
        # mail goes to the tree's nobody (the host's uids mean nothing in the tree)
        conf = [
            "# written by tests/e2e/trixie.py",
            "dovecot_config_version = 2.4.1",
            "dovecot_storage_version = 2.4.1",
            "base_dir = %s" % tree.inside(self.base_dir),
            "state_dir = %s" % tree.inside(os.path.join(self.dir, "state")),
            "instance_name = %s" % self.instance_name,
            "protocols = %s" % " ".join(p for p, on in (("imap", imap), ("lmtp", lmtp)) if on),
            "listen = 127.0.0.1",
            "log_path = %s" % tree.inside(self.log_path),
            "ssl = no",
            "auth_allow_cleartext = yes",
            "auth_mechanisms = plain login",
            "auth_verbose = %s" % ("yes" if debug else "no"),
            "auth_debug = %s" % ("yes" if debug else "no"),
            "auth_cache_size = 0",
            # Dovecot's default 2 s delays would make each failing attempt slow
            "auth_failure_delay = 0",
            "auth_internal_failure_delay = 0",
            "first_valid_uid = 1",
            "first_valid_gid = 1",
            # Debian 13's stock conf.d/10-mail.conf: an operator keeps it, and the mail location
            # maildict-auth.lua hands over must win over it (its INBOX in /var/mail included)
            "mail_driver = mbox",
            "mail_path = %{home}/mail",
            "mail_inbox_path = /var/mail/%{user}",
            "!include %s" % tree.inside(snippet),
        ]
        if imap:
            conf += [
                "service imap-login {",
                "  inet_listener imap {",
                "    listen = 127.0.0.1",
                "    port = %d" % self.imap_port,
                "  }",
                "  inet_listener imaps {",
                "    port = 0",
                "  }",
                "}",
            ]
        if lmtp:
            # the shipped LMTP snippet (the listener smtpd's mail.lmtp writes to, mode 0666)
            lmtp_snippet = os.path.join(self.dir, "20-maildict-lmtp.conf")
            shutil.copy(os.path.join(h.PACKAGING_DOVECOT, "20-maildict-lmtp.conf"), lmtp_snippet)
            conf += [
                "postmaster_address = postmaster@example.org",
                "!include %s" % tree.inside(lmtp_snippet),
            ]
        conf.append(extra)
        with open(self.conf_path, "w") as f:
            f.write("\n".join(conf) + "\n")

    def doveconf(self, *args):
        return self.tree.run(["doveconf", "-c", self.tree.inside(self.conf_path)] + list(args))

    def start(self):
        rc, out, err = self.doveconf("-n")
        if rc != 0:
            raise AssertionError("Dovecot 2.4 doveconf rejects %s: %s" % (self.conf_path, err))
        logf = open(os.path.join(self.dir, "master.stderr"), "ab")
        try:
            self.proc = self.tree.spawn(["dovecot", "-F", "-c", self.tree.inside(self.conf_path)],
                                        "dovecot 2.4 master", stdin=subprocess.DEVNULL,
                                        stdout=logf, stderr=logf)
        finally:
            logf.close()
        sockets = [os.path.join(self.base_dir, s) for s in ("auth-client", "auth-userdb")]
        if self.lmtp_socket:
            sockets.append(self.lmtp_socket)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("dovecot 2.4 exited with %s during startup:\n%s\n%s"
                                     % (self.proc.returncode,
                                        h.tail(os.path.join(self.dir, "master.stderr")),
                                        h.tail(self.log_path)))
            if not all(h.unix_socket_accepts(s) for s in sockets):
                return False
            return self.imap_port is None or self._imap_greets()

        try:
            h.wait_until(ready, h.STARTUP_TIMEOUT, "dovecot 2.4 in %s" % self.dir, interval=0.1)
        except BaseException:
            self.stop()
            raise
        h.log("dovecot 2.4 master pid %d (%s%s)" % (self.proc.pid, self.conf_path,
                                                     ", imap port %d" % self.imap_port
                                                     if self.imap_port else ""))
        return self

    # the same checks as the host's Dovecot: they need only imap_port / log_path
    _imap_greets = h.Dovecot._imap_greets
    log_text = h.Dovecot.log_text

    def stop(self):
        if self.proc is not None:
            h.kill_and_wait(self.proc, signal.SIGTERM)
            self.proc = None

    def doveadm(self, *args, timeout=h.COMMAND_TIMEOUT):
        return self.tree.run(["doveadm", "-c", self.tree.inside(self.conf_path)] + list(args),
                             timeout=timeout)


def start_dovecot24(tree, dict_socket, **kw):
    return Dovecot24(tree, dict_socket, **kw).start()
