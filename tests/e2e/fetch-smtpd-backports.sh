#!/bin/sh
# Unpacks OpenSMTPD 7.4 from Debian bookworm-backports into a private directory, for the
# end-to-end SMTP AUTH test (tests/e2e/test_smtpd_auth.py). Bookworm's own smtpd 6.8.0p2
# cannot do server-side TLS with OpenSSL 3 (specs/smtpd-tables.md §8.4), and AUTH is only
# offered after STARTTLS.
#
#   tests/e2e/fetch-smtpd-backports.sh [DESTDIR]      (default /opt/maildict-test/smtpd-7.4)
#
# Nothing is installed system-wide: the package is only downloaded and unpacked with dpkg -x,
# so it does not replace bookworm's opensmtpd (whose libraries and libexec helpers it reuses:
# run `packaging/install-deps.sh test` first). The bookworm-backports suite is added for the
# mirror the system already uses; backports are never chosen automatically by apt (priority
# 100), so adding the suite changes no installed package. Idempotent: does nothing when
# DESTDIR/usr/sbin/smtpd already exists and runs.
# Needs root (or sudo) for apt.
set -eu
dest=${1:-/opt/maildict-test/smtpd-7.4}
smtpd="$dest/usr/sbin/smtpd"

if [ -x "$smtpd" ] && "$smtpd" -h 2>&1 | grep -q 'OpenSMTPD 7\.'; then
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

# ---- the backports suite, for the same mirror as the existing Debian sources ----------------
list=/etc/apt/sources.list.d/maildict-bookworm-backports.sources
mirror=""
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null; then
  # deb822 files first: the "URIs:" of the stanza whose "Suites:" has plain bookworm
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    mirror=$(awk '
      /^[[:space:]]*$/ { if (uri != "" && suite) { print uri; done = 1; exit } uri = ""; suite = 0; next }
      /^URIs:/   { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") suite = 1 }
      END { if (!done && uri != "" && suite) print uri }' "$f" | head -n1)
    [ -n "$mirror" ] && break
  done
  # then one-line style: "deb [opts] URI bookworm main"
  if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '$1 == "deb" { n = 2; if ($2 ~ /^\[/) { while (n <= NF && $n !~ /\]$/) n++; n++ }
                         if ($(n + 1) == "bookworm") { print $n; exit } }')
  fi
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
  echo "adding bookworm-backports from $mirror ($list)"
  {
    echo "# added by maildict's tests/e2e/fetch-smtpd-backports.sh (opensmtpd 7.4 for the AUTH test)"
    echo "Types: deb"
    echo "URIs: $mirror"
    echo "Suites: bookworm-backports"
    echo "Components: main"
    [ -f "$keyring" ] && echo "Signed-By: $keyring"
  } | $SUDO tee "$list" >/dev/null
  # refresh only this suite's lists (fast, and leaves the other lists as they are)
  $SUDO apt-get update -q -o Dir::Etc::sourcelist="$list" -o Dir::Etc::sourceparts=- \
    -o APT::Get::List-Cleanup=0
elif ! apt-cache policy opensmtpd 2>/dev/null | grep -q 'bookworm-backports'; then
  $SUDO apt-get update -q
fi

# ---- download and unpack --------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
id _apt >/dev/null 2>&1 && $SUDO chown _apt "$work" || true
# apt-get download runs as the _apt user when it can; let it write here
(cd "$work" && $SUDO apt-get download -q opensmtpd/bookworm-backports)
deb=$(ls "$work"/opensmtpd_*.deb)
$SUDO mkdir -p "$dest"
$SUDO dpkg -x "$deb" "$dest"
echo "unpacked $(basename "$deb") into $dest"

# ---- it must run with the libraries bookworm's own opensmtpd already pulled in ----------------
if ldd "$smtpd" | grep -q 'not found'; then
  echo "smtpd 7.4 misses libraries:" >&2
  ldd "$smtpd" | grep 'not found' >&2
  exit 1
fi
"$smtpd" -h 2>&1 | head -n1
