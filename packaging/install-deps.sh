#!/bin/sh
# Installs what maildict needs from Debian bookworm's packages, and only what is missing.
#   packaging/install-deps.sh build   compiler, CMake and the libraries (enough to run the demo)
#   packaging/install-deps.sh test    also the real peers the tests start (Dovecot, PostgreSQL, OpenSMTPD
#                                     6.8, and 7.4 from bookworm-backports unpacked under
#                                     /opt/maildict-test, see tests/e2e/fetch-smtpd-backports.sh)
#                                     and clang for the fuzz targets; the Debian 13 tree with
#                                     Dovecot 2.4 and smtpd 7.6 (tests/e2e/trixie-tree.sh)
# Needs root (or sudo). Services installed here are not started: the tests start their own.
set -eu
what=${1:-build}

pkgs="build-essential cmake pkg-config libboost1.81-dev libboost-json1.81-dev libsqlite3-dev
      libpqxx-dev libspdlog-dev doctest-dev libcrypt-dev sqlite3 socat"
if [ "$what" = test ]; then
  # opensmtpd is bookworm's 6.8.0p2 (it provides mail-transport-agent, so apt replaces an
  # installed exim4/postfix: fine on a CI machine). openssl makes the test's certificate.
  # postgresql: the tests start their own server with initdb/pg_ctl in a temporary directory;
  # dovecot-pgsql lets the benchmark compare with Dovecot's dict server on the same database.
  # iproute2's ss names the peer process of a UNIX socket connection (test_dovecot24_policy).
  pkgs="$pkgs python3 clang libclang-rt-14-dev dovecot-core dovecot-imapd dovecot-lmtpd dovecot-sqlite
        dovecot-pgsql dovecot-auth-lua lua-socket opensmtpd openssl postgresql iproute2"
fi
here=$(cd "$(dirname "$0")" && pwd)
backports() {
  # smtpd 7.4 for the STARTTLS+AUTH test (6.8's TLS is broken with OpenSSL 3); idempotent
  [ "$what" = test ] && "$here/../tests/e2e/fetch-smtpd-backports.sh"
  [ "$what" = test ] && "$here/../tests/e2e/trixie-tree.sh"   # Debian 13 peers (Dovecot 2.4, smtpd 7.6)
  return 0
}

missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
  backports
  exit 0
fi

echo "installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
# Keep packaged daemons (dovecot, opensmtpd) from starting during the install: the tests run
# their own private instances and a system-wide one would only be in the way (the tests' smtpd
# runs in its own mount namespace on free ports, so even a running system smtpd does not
# disturb them). Only if no policy exists.
policy=/usr/sbin/policy-rc.d
added_policy=no
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  added_policy=yes
fi
cleanup() { [ "$added_policy" = yes ] && $SUDO rm -f "$policy"; return 0; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends $missing; then
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends $missing
fi
backports
