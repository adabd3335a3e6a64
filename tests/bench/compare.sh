#!/bin/sh
# Benchmarks maildictd against Dovecot's own dict server (dict-sql over SQLite) on this machine,
# in one run, with the same client (maildict-bench), the same users and the same reply values,
# and prints a Markdown table with ratios. See tests/bench/README.md.
#
# Usage: tests/bench/compare.sh BUILD_DIR [SECONDS_PER_SCENARIO]
#   BUILD_DIR needs maildict-bench; with maildictd and maildict-admin as well it compares both
#   servers, without them it measures Dovecot alone.
# Environment: USERS (default 100000), KEYS (passdb|userdb|mixed, default passdb),
#   WARMUP (seconds, default 1), KEEP=1 keeps the temporary directory, BENCH=path of another
#   maildict-bench binary.
# Needs root (Dovecot's dict processes run as the 'dovecot' user), dovecot-core,
# dovecot-sqlite, sqlite3 and socat.
set -eu

BUILD=${1:?usage: compare.sh BUILD_DIR [SECONDS_PER_SCENARIO]}
SECS=${2:-5}
USERS=${USERS:-100000}
KEYS=${KEYS:-passdb}
WARMUP=${WARMUP:-1}
BUILD=$(cd "$BUILD" && pwd)
BENCH=${BENCH:-$BUILD/maildict-bench}

die() { echo "compare.sh: $*" >&2; exit 1; }
note() { echo "compare.sh: $*" >&2; }

[ -x "$BENCH" ] || die "$BENCH not found (cmake --build $BUILD --target maildict-bench)"
for tool in dovecot sqlite3 socat; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
[ "$(id -u)" = 0 ] || die "run as root: Dovecot's dict processes switch to the 'dovecot' user"
WITH_MAILDICT=1
if [ ! -x "$BUILD/maildictd" ] || [ ! -x "$BUILD/maildict-admin" ]; then
  WITH_MAILDICT=0
  note "no maildictd/maildict-admin in $BUILD: measuring Dovecot only"
fi

# Short path: UNIX socket paths are limited to 108 bytes.
T=$(mktemp -d /tmp/mdbench.XXXXXX)
chmod 755 "$T"  # the dovecot user must reach its database below
MAILDICT_PID=
DOVECOT_PID=

cleanup() {
  status=$?
  trap - EXIT INT TERM
  # Only the processes started here, by their pid.
  if [ -n "$MAILDICT_PID" ]; then
    kill "$MAILDICT_PID" 2>/dev/null || true
    wait "$MAILDICT_PID" 2>/dev/null || true
  fi
  if [ -n "$DOVECOT_PID" ]; then
    kill "$DOVECOT_PID" 2>/dev/null || true
    wait "$DOVECOT_PID" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then note "kept $T"; else rm -rf "$T"; fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_socket PATH PID: until PATH accepts connections; fails when PID exits or after 10 s.
wait_socket() {
  i=0
  while [ $i -lt 100 ] && kill -0 "$2" 2>/dev/null; do
    if [ -S "$1" ] && socat -u /dev/null "UNIX-CONNECT:$1" 2>/dev/null; then return 0; fi
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}

# get SOCKET DICTNAME KEY: the value of one lookup, asked in plain in-order mode (H3 0), so the
# reply is just O<value>; prints "<N>" or "<F...>" for anything else.
get() {
  reply=$(printf 'H3\t0\t0\t\t%s\nL%s\t\n' "$2" "$3" | socat -t2 - "UNIX-CONNECT:$1" | head -n 1)
  case $reply in
    O*) printf '%s\n' "${reply#O}" ;;
    *) printf '<%s>\n' "$reply" ;;
  esac
}

# ---- 1. maildict: the bulk directory and the daemon ---------------------------------------
SAMPLE_USER=user1@bulk.example
if [ $WITH_MAILDICT = 1 ]; then
  note "creating the maildict directory with $USERS users"
  "$BUILD/maildict-admin" demo "$T/maildict.db" --bulk "$USERS" >/dev/null
  cat > "$T/maildict.conf" <<CONF
socket = $T/maildict.sock
socket_mode = 0666
socket_group =
database = sqlite:$T/maildict.db
log_level = warn
default_uid = vmail
default_gid = vmail
default_home = /var/vmail/%d/%n
default_mail = maildir:~/Maildir
${MAILDICT_CONF_EXTRA:-}
CONF
  "$BUILD/maildictd" -c "$T/maildict.conf" 2> "$T/maildictd.log" &
  MAILDICT_PID=$!
  wait_socket "$T/maildict.sock" "$MAILDICT_PID" ||
    { tail -n 20 "$T/maildictd.log" >&2; die "maildictd did not open $T/maildict.sock"; }
  # Dovecot's table gets exactly maildict's reply values, user1's turned into a template.
  PASSDB_TPL=$(get "$T/maildict.sock" maildict "shared/passdb/$SAMPLE_USER")
  USERDB_TPL=$(get "$T/maildict.sock" maildict "shared/userdb/$SAMPLE_USER")
  case "$PASSDB_TPL$USERDB_TPL" in
    *'<'*) die "maildictd did not answer the sample lookups: $PASSDB_TPL $USERDB_TPL" ;;
  esac
else
  # Same shapes as maildict's replies (passdb: {SCHEME}-prefixed hash + canonical user).
  HASH=$(doveadm pw -s BLF-CRYPT -p bulk-secret)
  PASSDB_TPL="{\"password\":\"$HASH\",\"user\":\"$SAMPLE_USER\"}"
  USERDB_TPL="{\"user\":\"$SAMPLE_USER\",\"uid\":\"vmail\",\"gid\":\"vmail\",\"home\":\"/var/vmail/bulk.example/user1\",\"mail\":\"maildir:~/Maildir\"}"
fi

# ---- 2. Dovecot's dict server on the same users -----------------------------------------
# "user1" not followed by a digit is the per-user part (login, home); ' is doubled for SQL.
template() { printf '%s' "$1" | sed -e 's/user1\([^0-9]\)/user@@N@@\1/g' -e 's/user1$/user@@N@@/' -e "s/'/''/g"; }
P_SQL=$(template "$PASSDB_TPL")
U_SQL=$(template "$USERDB_TPL")
D=$T/dovecot
mkdir -p "$D/run" "$D/state" "$D/log"
note "creating Dovecot's dict-sql table with $USERS users"
sqlite3 "$D/users.db" <<SQL
CREATE TABLE users (
  username TEXT PRIMARY KEY NOT NULL,
  passdb   TEXT NOT NULL,
  userdb   TEXT NOT NULL
);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $USERS)
INSERT INTO users
  SELECT 'user' || i || '@bulk.example', replace('$P_SQL', '@@N@@', i), replace('$U_SQL', '@@N@@', i) FROM n;
SQL
cat > "$D/dict-sql.conf.ext" <<CONF
connect = $D/users.db
map {
  pattern = shared/passdb/\$user
  table = users
  value_field = passdb
  fields {
    username = \$user
  }
}
map {
  pattern = shared/userdb/\$user
  table = users
  value_field = userdb
  fields {
    username = \$user
  }
}
CONF
# The setup of specs/dovecot.md §5.3: dict-sql behind 'service dict', one client per process
# and up to 100 processes, as Dovecot ships it for blocking drivers such as sqlite.
cat > "$D/dovecot.conf" <<CONF
base_dir = $D/run
state_dir = $D/state
instance_name = mdbench-$(basename "$T")
protocols =
listen = 127.0.0.1
ssl = no
log_path = $D/log/dovecot.log
dict {
  authsql = sqlite:$D/dict-sql.conf.ext
}
service dict {
  unix_listener dict {
    mode = 0666
  }
  client_limit = 1
  process_limit = 100
}
CONF
# dict processes run as 'dovecot' and sqlite writes its journal next to the database
chown dovecot "$D" "$D/users.db"
# In the foreground of a background job, so that $! is exactly the master to stop.
dovecot -F -c "$D/dovecot.conf" 2> "$D/log/master.err" &
DOVECOT_PID=$!
wait_socket "$D/run/dict" "$DOVECOT_PID" ||
  { tail -n 20 "$D/log/master.err" "$D/log/dovecot.log" >&2 2>/dev/null; die "Dovecot did not open $D/run/dict"; }

# ---- the two servers must give the same answers ---------------------------------------------
for u in "$SAMPLE_USER" "user$((USERS / 2 + 7))@bulk.example"; do
  for kind in passdb userdb; do
    dv=$(get "$D/run/dict" authsql "shared/$kind/$u")
    case $dv in '<'*) die "Dovecot's dict server answered $dv for shared/$kind/$u" ;; esac
    if [ $WITH_MAILDICT = 1 ]; then
      mv=$(get "$T/maildict.sock" maildict "shared/$kind/$u")
      [ "$dv" = "$mv" ] || note "WARNING: different values for shared/$kind/$u: Dovecot $dv, maildict $mv"
    fi
  done
done

# ---- 3. the scenarios ------------------------------------------------------------------------
# tag|table name|maildict-bench options
SCENARIOS='1x1|1 conn × 1 in flight|--connections 1 --depth 1
8x1|8 conns × 1 in flight|--connections 8 --depth 1
32x4|32 conns × 4 in flight|--connections 32 --depth 4
cpl8|connect per lookup, 8 concurrent|--mode connect-per-lookup --connections 8'

# field NAME LINE: the value of NAME=... in a maildict-bench result line
field() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s|^$1=||p"; }

# Server CPU (user+system clock ticks) of a process and its children, with the children it
# already reaped: Dovecot's work happens in its dict processes, maildictd's in its threads.
cpu_ticks() {
  pids="$1 $(ps -o pid= --ppid "$1" 2>/dev/null | tr '\n' ' ')"
  total=0
  for p in $pids; do
    t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null) || t=0
    total=$((total + ${t:-0}))
  done
  echo $total
}
HZ=$(getconf CLK_TCK)

# run LABEL SOCKET DICT PID OPTIONS... -> result line with server_cpu_ms_per_10k appended
run() {
  label=$1 sock=$2 dict=$3 pid=$4
  shift 4
  before=$(cpu_ticks "$pid")
  line=$("$BENCH" --socket "$sock" --dict "$dict" --duration "$SECS" --warmup "$WARMUP" \
    --keys "$KEYS" --users "$USERS" --expect found --label "$label" "$@" 2>>"$T/bench-errors.log") || true
  after=$(cpu_ticks "$pid")
  [ -n "$line" ] || line="$label requests=0 lookups/s=0 errors=failed"
  n=$(field requests "$line")
  # The server's CPU also covers the warm-up, so it is spread over warm-up and measured lookups.
  cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="${n:-0}" -v s="$SECS" -v w="$WARMUP" \
    'BEGIN { tot = n * (s + w) / s; if (tot > 0) printf "%.0f", t * 1000 / hz * 10000 / tot; else print "-" }')
  echo "$line server_cpu_ms_per_10k=$cpu"
}

ROWS=$T/rows
: > "$ROWS"
echo
echo "maildict-bench results ($USERS users, keys=$KEYS, ${SECS}s per run after ${WARMUP}s warm-up, $(nproc) CPUs):"
# Both servers run each scenario back to back, so that a change in background load affects
# both sides of a ratio alike.
printf '%s\n' "$SCENARIOS" | while IFS='|' read -r tag name opts; do
  # shellcheck disable=SC2086  # opts are words on purpose
  d=$(run "dovecot-$tag" "$D/run/dict" authsql "$DOVECOT_PID" $opts)
  echo "  $d"
  if [ $WITH_MAILDICT = 1 ]; then
    # shellcheck disable=SC2086
    m=$(run "maildict-$tag" "$T/maildict.sock" maildict "$MAILDICT_PID" $opts)
    echo "  $m"
  else
    m="maildict-$tag lookups/s=- p99_us=- errors=0 server_cpu_ms_per_10k=- bench_cpu_ms_per_10k=-"
  fi
  printf '%s|%s|%s\n' "$name" "$d" "$m" >> "$ROWS"
done

# ---- the table -------------------------------------------------------------------------------
# us TEXT: microseconds as "850 µs" or "2.4 ms"
us() { awk -v v="$1" 'BEGIN { if (v == "" || v == "-") print "-"; else if (v < 1000) printf "%d µs", v; else printf "%.1f ms", v / 1000 }'; }
echo
echo "| scenario | Dovecot dict lookups/s | maildict lookups/s | ratio | Dovecot p99 | maildict p99 |"
echo "|---|---:|---:|---:|---:|---:|"
errors_total=0
while IFS='|' read -r name d m; do
  dr=$(field lookups/s "$d")
  mr=$(field lookups/s "$m")
  ratio=$(awk -v a="$dr" -v b="$mr" 'BEGIN { if (a > 0 && b != "-" && b != "") printf "%.1f×", b / a; else print "-" }')
  de=$(field errors "$d")
  me=$(field errors "$m")
  dmark='' mmark=''
  [ "$de" = 0 ] || { dmark=" (errors: $de)"; errors_total=1; }
  [ "$me" = 0 ] || { mmark=" (errors: $me)"; errors_total=1; }
  echo "| $name | $dr$dmark | $mr$mmark | $ratio | $(us "$(field p99_us "$d")") | $(us "$(field p99_us "$m")") |"
done < "$ROWS"
echo
echo "| scenario | Dovecot CPU ms / 10k lookups | maildict CPU ms / 10k lookups | bench tool CPU ms / 10k (Dovecot run / maildict run) |"
echo "|---|---:|---:|---:|"
while IFS='|' read -r name d m; do
  echo "| $name | $(field server_cpu_ms_per_10k "$d") | $(field server_cpu_ms_per_10k "$m") | $(field bench_cpu_ms_per_10k "$d") / $(field bench_cpu_ms_per_10k "$m") |"
done < "$ROWS"
if [ -s "$T/bench-errors.log" ]; then
  echo
  echo "Errors reported by maildict-bench (first lines):"
  head -n 10 "$T/bench-errors.log" | sed 's/^/    /'
fi
[ $errors_total = 0 ]
