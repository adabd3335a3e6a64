#!/bin/sh
# The run command (README): installs what the build needs, builds if needed, creates the demo
# directory in ./demo and serves it on ./demo/dict.sock in the foreground (Ctrl-C stops it).
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
packaging/install-deps.sh build

if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
# Every installed program (not only the two the demo runs): `cmake --install build` works next.
cmake --build build -j "$(nproc)" --target maildict-programs >/dev/null

mkdir -p demo
build/maildict-admin demo demo/directory.db
cat > demo/maildict.conf <<CONF
# Demo configuration written by packaging/demo.sh; see conf/maildict.conf for every setting.
socket = $top/demo/dict.sock
socket_mode = 0666
socket_group =
database = sqlite:$top/demo/directory.db
default_uid = $(id -u)
default_gid = $(id -g)
default_home = $top/demo/mail/%d/%n
default_mail = maildir:~/Maildir
log_level = info
CONF

cat <<MSG

maildict demo: users john@example.org (john-secret), jane@example.org (jane-secret),
john_doe@example.org (doe-secret), bob@example.net (bob-secret); eve@example.org is disabled.

Ask it by hand:
  printf 'H3\t2\t0\t\tmaildict\nLshared/passdb/john_example.org\tjohn_example.org\nI0\t0\tshared/userdb/\t\n' | socat -t1 - UNIX-CONNECT:$top/demo/dict.sock
and as OpenSMTPD asks it (through table-maildict):
  printf 'H3\t0\t0\t\tx\nLshared/smtpd/alias/postmaster@example.org\t\n' | socat -t1 - UNIX-CONNECT:$top/demo/dict.sock

Point Dovecot 2.3 at it: install packaging/dovecot/10-maildict.conf in /etc/dovecot/conf.d/
(and comment out "!include auth-system.conf.ext" in conf.d/10-auth.conf), and
packaging/dovecot/dovecot-maildict-auth.conf.ext as /etc/dovecot/dovecot-maildict-auth.conf.ext
with this uri line:
  uri = proxy:idle_msecs=20000:$top/demo/dict.sock:maildict
Then: doveadm auth test john@example.org john-secret

Serving now (Ctrl-C to stop):
MSG
exec build/maildictd -c demo/maildict.conf
