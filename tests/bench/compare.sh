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
PROG=compare.sh
. "$(dirname "$0")/common.sh"

[ -x "$BENCH" ] || die "$BENCH not found (cmake --build $BUILD --target maildict-bench)"
need_tools dovecot sqlite3 socat
[ "$(id -u)" = 0 ] || die "run as root: Dovecot's dict processes switch to the 'dovecot' user"
WITH_MAILDICT=1
if [ ! -x "$BUILD/maildictd" ] || [ ! -x "$BUILD/maildict-admin" ]; then
  WITH_MAILDICT=0
  note "no maildictd/maildict-admin in $BUILD: measuring Dovecot only"
fi

bench_tmpdir mdbench
chmod 755 "$T"  # the dovecot user must reach its database below
MAILDICT_PID=
DOVECOT_PID=

# ---- 1. maildict: the bulk directory and the daemon ---------------------------------------
SAMPLE_USER=user1@bulk.example
if [ $WITH_MAILDICT = 1 ]; then
  note "creating the maildict directory with $USERS users"
  "$BUILD/maildict-admin" demo "$T/maildict.db" --bulk "$USERS" >/dev/null
  maildict_conf "$T/maildict.conf" "$T/maildict.sock" "sqlite:$T/maildict.db" vmail vmail
  start_maildictd "$T/maildict.conf" "$T/maildictd.log" "$T/maildict.sock"
  MAILDICT_PID=$STARTED_PID
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
on_exit_stop "$DOVECOT_PID"
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

# Server CPU (cpu_ticks): Dovecot's work happens in its dict processes, maildictd's in its
# threads.

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
  cpu=$(cpu_per_10k $((after - before)) "$n")
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
