"""OpenSMTPD 7.6 (Debian 13 trixie) in a chroot next to maildictd on the host.

The test command keeps a minimal Debian 13 tree with trixie's opensmtpd at
/opt/maildict-test/trixie (MAILDICT_TRIXIE_ROOT overrides). smtpd cannot run on this host's
libraries (it needs a newer glibc), so it runs inside the tree with chroot; it spawns its table
programs there too, which is why they get the statically linked table-maildict-static (CMake
target): the dynamically linked table-maildict needs this host's Boost/libpqxx sonames, which
trixie does not have.

Sharing works through the tree: a test's directory lives in <tree>/tmp, so a UNIX socket a host
daemon creates at <tree>/tmp/X/s.sock is /tmp/X/s.sock to smtpd and its tables (UNIX socket
paths are limited to 107 bytes, counted on the host side). Inside the chroot, users are the
tree's: the table programs run as the tree's `opensmtpd` (uid 100, gid 101 on Debian 13), which
on this host may be another account or none.

ChrootSmtpd is harness.Smtpd with the daemon inside the tree: in a private mount namespace the
test's own directories are bound over the tree's /var/spool (a private queue), /run (smtpd's
control socket) and /usr/libexec/opensmtpd (the tree's helpers plus our table-maildict), so the
shared tree itself is never written.
"""

import os
import grp
import re
import shutil
import subprocess

import harness as h

DEFAULT_TRIXIE_ROOT = "/opt/maildict-test/trixie"
SMTPD = "/usr/sbin/smtpd"          # inside the tree
SMTPD_LIBEXEC = "/usr/libexec/opensmtpd"
UNIX_PATH_MAX = 107


def trixie_root():
    return os.environ.get("MAILDICT_TRIXIE_ROOT") or DEFAULT_TRIXIE_ROOT


def peers_required():
    """MAILDICT_REQUIRE_PEERS=1 (CI): a missing tree or daemon is a failure, not a skip."""
    return os.environ.get("MAILDICT_REQUIRE_PEERS") == "1"


def table_maildict_static_path():
    return (os.environ.get("MAILDICT_TABLE_MAILDICT_STATIC")
            or os.path.join(h.BUILD_DIR, "table-maildict-static"))


def in_tree(host_path, root=None):
    """The path a process inside the tree sees for host_path (which must lie in the tree)."""
    root = os.path.realpath(root or trixie_root())
    p = os.path.realpath(host_path)
    if not p.startswith(root + os.sep):
        raise AssertionError("%s is not inside the tree %s" % (host_path, root))
    return p[len(root):]


def tree_account(name, root=None):
    """(uid, gid) of an account in the tree's own /etc/passwd (not the host's)."""
    with open(os.path.join(root or trixie_root(), "etc", "passwd")) as f:
        for line in f:
            fields = line.rstrip("\n").split(":")
            if len(fields) >= 4 and fields[0] == name:
                return int(fields[2]), int(fields[3])
    raise KeyError("no %s account in the tree's /etc/passwd" % name)


def host_group_name(gid):
    """The host's name for a numeric gid, or None (maildictd's socket_group takes names)."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def chroot_run(argv, root=None, **kw):
    return subprocess.run(["chroot", root or trixie_root()] + list(argv), capture_output=True,
                          text=True, timeout=h.COMMAND_TIMEOUT, **kw)


def smtpd_version(root=None):
    r = chroot_run([SMTPD, "-h"], root)
    m = re.search(r"OpenSMTPD (\d+\.\d+\.\d+\S*)", r.stdout + r.stderr)
    return m.group(1) if m else None


def missing(root=None):
    """Why smtpd 7.6 cannot run from the tree here (a string), or None."""
    root = root or trixie_root()
    if os.geteuid() != 0:
        return "smtpd in the Debian 13 tree must be started as root (chroot, mounts)"
    if not os.access(os.path.join(root, SMTPD.lstrip("/")), os.X_OK):
        return ("no Debian 13 tree with OpenSMTPD at %s (MAILDICT_TRIXIE_ROOT): the test command "
                "builds it" % root)
    for tool in ("chroot", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return "%s (coreutils/util-linux) is missing" % tool
    version = smtpd_version(root)
    if not (version or "").startswith("7.6"):
        return "%s%s in the tree is OpenSMTPD %s, not 7.6" % (root, SMTPD, version)
    try:
        tree_account("opensmtpd", root)
    except (KeyError, OSError) as e:
        return str(e)
    if not os.access(table_maildict_static_path(), os.X_OK):
        return "%s is not built (CMake target table-maildict-static)" % table_maildict_static_path()
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                       capture_output=True, text=True, timeout=h.COMMAND_TIMEOUT)
    if r.returncode != 0:
        return "cannot create a mount namespace (unshare -m): %s" % r.stderr.strip()
    return None


class TreeTempDir(h.TempDir):
    """A test directory inside the tree (<tree>/tmp/maildict-smtpd76-XXXXXXXX), so everything in
    it is shared with the chroot. Paths stay short: UNIX sockets count from the host side."""

    def __init__(self, prefix="maildict-smtpd76-", root=None):
        super().__init__(prefix=prefix, dir=os.path.join(root or trixie_root(), "tmp"))

    def check_socket_path(self, path):
        if len(path.encode()) > UNIX_PATH_MAX:
            raise AssertionError("socket path %s is %d bytes, more than %d: shorten the tree's "
                                 "location" % (path, len(path.encode()), UNIX_PATH_MAX))
        return path


class ChrootSmtpd(h.Smtpd):
    """harness.Smtpd with the tree's smtpd run by `chroot <tree>` in a private mount namespace.
    tmp must be inside the tree (TreeTempDir); conf_text uses in-tree paths (in_tree())."""

    def __init__(self, tmp, conf_text, name="smtpd76", trace=("lookup",), ports=(), root=None):
        self.root = os.path.realpath(root or trixie_root())
        self.smtpd = os.path.join(self.root, SMTPD.lstrip("/"))   # in_tree() maps it back
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.conf_path = os.path.join(self.dir, "smtpd.conf")
        self.log_path = os.path.join(self.dir, "smtpd.log")
        self.spool = os.path.join(self.dir, "var-spool")      # bound over <tree>/var/spool
        self.run = os.path.join(self.dir, "run")              # bound over <tree>/run
        self.libexec = os.path.join(self.dir, "libexec")      # over <tree>/usr/libexec/opensmtpd
        self.ports = list(ports)
        self.trace = list(trace)
        self.proc = None
        self.lock = None
        for d in (self.spool, self.run, self.libexec):
            os.makedirs(d)
            os.chmod(d, 0o755)
        tree_libexec = os.path.join(self.root, SMTPD_LIBEXEC.lstrip("/"))
        for entry in os.listdir(tree_libexec):
            src = os.path.join(tree_libexec, entry)
            if entry.startswith("table-") or not os.path.isfile(src):
                continue     # only smtpd's own helpers (mail.lmtp, ...)
            dst = os.path.join(self.libexec, entry)
            shutil.copy2(src, dst)
            os.chmod(dst, os.stat(src).st_mode & 0o755)   # no setuid/setgid copies
        table = os.path.join(self.libexec, "table-maildict")
        shutil.copy2(table_maildict_static_path(), table)
        os.chmod(table, 0o755)
        with open(self.conf_path, "w") as f:
            f.write(conf_text)
        os.chmod(self.conf_path, 0o644)

    def _namespaced(self, argv):
        # Host paths inside the tree (the binary, -f CONF) become the chroot's view of them.
        argv = [in_tree(a, self.root) if a.startswith(self.root + os.sep) else a for a in argv]
        script = ('set -e; root="$1"; mount --bind "$2" "$root/var/spool"; '
                  'mount --bind "$3" "$root/run"; mount --bind "$4" "$root%s"; shift 4; '
                  'exec chroot "$root" "$@"' % SMTPD_LIBEXEC)
        return (["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
                 "smtpd76-ns", self.root, self.spool, self.run, self.libexec] + argv)

    def version(self):
        return smtpd_version(self.root)

    def smtpctl(self, *args):
        r = subprocess.run(["nsenter", "--target", str(self.proc.pid), "--mount", "--",
                            "chroot", self.root, "/usr/sbin/smtpctl"] + list(args),
                           capture_output=True, text=True, timeout=h.COMMAND_TIMEOUT)
        return r.returncode, r.stdout + r.stderr

    def table_processes(self):
        """[(argv0, uid, exe basename)] of the table programs this smtpd spawned (its
        descendants whose program is table-maildict)."""
        children = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/status" % pid) as f:
                    status = dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            children.setdefault(int(status["PPid"]), []).append(
                (int(pid), status["Name"], int(status["Uid"].split()[0]), argv))
        found = []
        todo = [self.proc.pid]
        while todo:
            for pid, comm, uid, argv in children.get(todo.pop(), []):
                todo.append(pid)
                if comm == "table-maildict":
                    found.append((argv[0].decode(), uid, comm))
        return found
