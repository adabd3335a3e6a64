"""OpenSMTPD 7.6 (Debian 13 trixie) in the trixie tree (tests/e2e/trixie.py) next to maildictd
on the host.

smtpd cannot run on this host's libraries (it needs a newer glibc), so it runs inside the tree
with chroot; it spawns its table programs there too, which is why they get the statically linked
table-maildict-static (CMake target): the dynamically linked table-maildict needs this host's
Boost/libpqxx sonames, which trixie does not have. The tables run as the tree's `opensmtpd`
(uid 100, gid 101 on Debian 13), which on this host may be another account or none.

ChrootSmtpd is harness.Smtpd with the daemon inside the tree: in a private mount namespace the
test's own directories are bound over the tree's /var/spool (a private queue), /run (smtpd's
control socket) and /usr/libexec/opensmtpd (the tree's helpers plus our table-maildict), so the
shared tree itself is never written. The test's files live in TrixieTree.temp_dir() (the
tree's /tmp), which the namespace leaves alone.
"""

import os
import grp
import re
import shutil
import subprocess

import harness as h
import trixie as tx

SMTPD = "/usr/sbin/smtpd"          # inside the tree
SMTPD_LIBEXEC = "/usr/libexec/opensmtpd"


def table_maildict_static_path():
    return (os.environ.get("MAILDICT_TABLE_MAILDICT_STATIC")
            or os.path.join(h.BUILD_DIR, "table-maildict-static"))


def host_group_name(gid):
    """The host's name for a numeric gid, or None (maildictd's socket_group takes names)."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def smtpd_version(tree):
    rc, out, err = tree.run([SMTPD, "-h"])
    m = re.search(r"OpenSMTPD (\d+\.\d+\.\d+\S*)", out + err)
    return m.group(1) if m else None


def smtpd_missing(tree):
    """Why smtpd 7.6 cannot run from this tree here (a string), or None."""
    if not os.access(tree.host(SMTPD), os.X_OK):
        return "the Debian 13 tree %s has no OpenSMTPD: run tests/e2e/trixie-tree.sh" % tree.root
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return "%s (util-linux) is missing" % tool
    version = smtpd_version(tree)
    if not (version or "").startswith("7.6"):
        return "%s%s in the tree is OpenSMTPD %s, not 7.6" % (tree.root, SMTPD, version)
    try:
        tree.uid("opensmtpd")
    except (KeyError, OSError) as e:
        return "no opensmtpd account in the tree: %s" % e
    if not os.access(table_maildict_static_path(), os.X_OK):
        return "%s is not built (CMake target table-maildict-static)" % table_maildict_static_path()
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                       capture_output=True, text=True, timeout=h.COMMAND_TIMEOUT)
    if r.returncode != 0:
        return "cannot create a mount namespace (unshare -m): %s" % r.stderr.strip()
    return None


def require_smtpd76():
    """-> TrixieTree with a usable smtpd 7.6; skips, or fails when peers are required."""
    tree = tx.require_tree()
    why = smtpd_missing(tree)
    if why:
        tx.skip_or_fail(why)
    return tree


class ChrootSmtpd(h.Smtpd):
    """harness.Smtpd with the tree's smtpd run by `chroot <tree>` in a private mount namespace.
    tmp must be inside the tree (TrixieTree.temp_dir); conf_text uses in-tree paths."""

    def __init__(self, tree, tmp, conf_text, name="smtpd76", **kw):
        self.tree = tree
        # the binary as a host path: harness.Smtpd passes it on, _namespaced maps it back
        super().__init__(tmp, conf_text, smtpd=tree.host(SMTPD), name=name,
                         helpers_dir=tree.host(SMTPD_LIBEXEC),
                         table_program=table_maildict_static_path(), **kw)
        os.chmod(self.conf_path, 0o644)

    def _namespaced(self, argv):
        # Host paths inside the tree (the binary, -f CONF) become the chroot's view of them.
        root = self.tree.root
        argv = [self.tree.inside(a) if a.startswith(root + os.sep) else a for a in argv]
        script = ('set -e; root="$1"; mount --bind "$2" "$root/var/spool"; '
                  'mount --bind "$3" "$root/run"; mount --bind "$4" "$root%s"; shift 4; '
                  'exec chroot "$root" "$@"' % SMTPD_LIBEXEC)
        return (["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
                 "smtpd76-ns", root, self.spool, self.run, self.libexec] + argv)

    def version(self):
        return smtpd_version(self.tree)

    def smtpctl(self, *args):
        r = subprocess.run(["nsenter", "--target", str(self.proc.pid), "--mount", "--",
                            "chroot", self.tree.root, "/usr/sbin/smtpctl"] + list(args),
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
