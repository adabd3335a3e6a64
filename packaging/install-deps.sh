#!/bin/sh
# Installs what maildict needs from Debian bookworm's packages, and only what is missing.
#   packaging/install-deps.sh build   compiler, CMake and the libraries (enough to run the demo)
#   packaging/install-deps.sh test    also the real peers the tests start (Dovecot) and clang
#                                     for the fuzz targets
# Needs root (or sudo). Services installed here are not started: the tests start their own.
set -eu
what=${1:-build}

pkgs="build-essential cmake pkg-config libboost1.81-dev libboost-json1.81-dev libsqlite3-dev
      libspdlog-dev doctest-dev libcrypt-dev sqlite3 socat"
if [ "$what" = test ]; then
  pkgs="$pkgs python3 clang libclang-rt-14-dev dovecot-core dovecot-imapd dovecot-lmtpd dovecot-sqlite"
fi

missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
# Keep packaged daemons (dovecot) from starting during the install: the tests run their own
# private instances and a system-wide one would only be in the way. Only if no policy exists.
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
