#!/bin/sh
# Creates, once per machine, the minimal Debian 13 (trixie) tree in which the end-to-end tests run
# Dovecot 2.4.1 and OpenSMTPD 7.6.0p1 with a plain chroot, next to maildictd on this Debian 12
# host (tests/e2e/trixie.py). Called by `packaging/install-deps.sh test`.
#
#   tests/e2e/trixie-tree.sh                       -> /opt/maildict-test/trixie
#   MAILDICT_TRIXIE_ROOT=/some/dir tests/e2e/trixie-tree.sh
#
# Needs root (debootstrap creates device nodes and chroots; apt-get runs inside the tree) and
# Debian's mirror (MAILDICT_TRIXIE_MIRROR), nothing else: the host's debian-archive-keyring
# already holds trixie's keys, and a missing debootstrap is fetched from the host's own apt
# sources and unpacked, not installed. Nothing is mounted: both daemons run in the tree without
# /proc, /sys or /dev/pts (debootstrap's static /dev nodes are enough).
#
# Cached: a finished tree holds .trixie-ok, listing the packages it was made with. A second run
# with the same list does nothing (a few ms); a new package in the list is installed into the
# existing tree. A tree debootstrap did not finish is removed and made again. About a minute
# and 60 MB from the mirror when made from scratch; 280 MB on disk.
# Keep the path short: UNIX socket paths inside the tree are limited to 107 bytes counted from
# the host's side.
set -eu

ROOT=${MAILDICT_TRIXIE_ROOT:-/opt/maildict-test/trixie}
MIRROR=${MAILDICT_TRIXIE_MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# ca-certificates: smtpd 7.6 exits at start without /etc/ssl/certs/ca-certificates.crt.
# lua-socket + dovecot-auth-lua: packaging/dovecot/maildict-auth.lua. opensmtpd-table-sqlite:
# smtpd's own SQLite table, to compare with table-maildict.
PKGS="dovecot-core dovecot-imapd dovecot-lmtpd dovecot-auth-lua dovecot-sqlite
      opensmtpd opensmtpd-table-sqlite lua-socket ca-certificates"
want=$(echo $PKGS)
STAMP=$ROOT/.trixie-ok

[ "$(id -u)" = 0 ] || { echo "trixie-tree.sh: must run as root" >&2; exit 1; }

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

in_tree() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"
}

# One maker at a time (two CI jobs, or a test run and an operator): the second waits.
mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0   # made by the one we waited for
fi

t0=$(date +%s)
if [ ! -x "$ROOT/usr/bin/apt-get" ] || [ -d "$ROOT/debootstrap" ]; then
  # No tree, or one debootstrap left unfinished ($ROOT/debootstrap is its work directory).
  if grep -q " $ROOT/" /proc/mounts; then
    echo "trixie-tree.sh: something is mounted under $ROOT; unmount it first" >&2; exit 1
  fi
  if [ -d "$ROOT" ] && [ -n "$(ls -A "$ROOT")" ]; then
    if [ -d "$ROOT/debootstrap" ]; then
      echo "trixie-tree.sh: removing the unfinished debootstrap in $ROOT"
      rm -rf --one-file-system "$ROOT"
    else
      echo "trixie-tree.sh: $ROOT is not empty and not a Debian tree; refusing to touch it" >&2
      exit 1
    fi
  fi
  mkdir -p "$ROOT"
  work=$(mktemp -d /var/tmp/maildict-debootstrap.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  DB=$(command -v debootstrap || true)
  if [ -z "$DB" ]; then
    # bookworm's debootstrap already knows trixie; unpack it instead of installing it
    (cd "$work" && apt-get download -q -o APT::Sandbox::User=root debootstrap >/dev/null)
    dpkg -x "$work"/debootstrap_*.deb "$work/x"
    export DEBOOTSTRAP_DIR="$work/x/usr/share/debootstrap"
    DB=$work/x/usr/sbin/debootstrap
  fi
  echo "trixie-tree.sh: debootstrap trixie into $ROOT"
  "$DB" --variant=minbase --keyring="$KEYRING" trixie "$ROOT" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
fi
t1=$(date +%s)

# No init system in the tree: package scripts must not try to start daemons.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
echo "deb $MIRROR trixie main" >"$ROOT/etc/apt/sources.list"
in_tree apt-get update -qq
# Dpkg::Use-Pty=0: there is no /dev/pts in the tree
# shellcheck disable=SC2086
in_tree apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends $PKGS >/dev/null
in_tree apt-get clean
# a tree that cannot start Dovecot is not a finished tree
in_tree dovecot --version >/dev/null
echo "$want" >"$STAMP"
t2=$(date +%s)
echo "trixie-tree.sh: $ROOT ready (debootstrap $((t1 - t0)) s, packages $((t2 - t1)) s," \
  "Dovecot $(in_tree dovecot --version | cut -d' ' -f1))"
