#!/bin/sh
# Benchmarks maildictd on PostgreSQL, with its cache on and off, against Dovecot's own dict
# server with its pgsql driver (dict-sql) on the same database, in one run, with the same
# client (maildict-bench), the same users and the same reply values, and prints Markdown tables
# with ratios. See tests/bench/README.md.
#
# Usage: tests/bench/compare-pg.sh BUILD_DIR [SECONDS_PER_SCENARIO]
#   BUILD_DIR needs maildictd, maildict-admin (both with the PostgreSQL backend) and
#   maildict-bench.
# Environment: USERS (default 100000), KEYS (passdb|userdb|mixed, default passdb),
#   WARMUP (seconds, default 1), KEEP=1 keeps the temporary directory, BENCH=path of another
#   maildict-bench binary, MAILDICT_CONF_EXTRA (lines appended to both maildictd
#   configurations; not cache_entries), PG_BIN (default /usr/lib/postgresql/15/bin).
# Needs root (PostgreSQL runs as the 'postgres' account, Dovecot's dict processes as 'dovecot'),
# postgresql-15, dovecot-core, dovecot-pgsql and socat.
set -eu

BUILD=${1:?usage: compare-pg.sh BUILD_DIR [SECONDS_PER_SCENARIO]}
SECS=${2:-5}
USERS=${USERS:-100000}
KEYS=${KEYS:-passdb}
WARMUP=${WARMUP:-1}
BUILD=$(cd "$BUILD" && pwd)
BENCH=${BENCH:-$BUILD/maildict-bench}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PROG=compare-pg.sh
. "$(dirname "$0")/common.sh"

for p in "$BENCH" "$BUILD/maildictd" "$BUILD/maildict-admin"; do
  [ -x "$p" ] || die "$p not found (cmake --build $BUILD --target maildictd maildict-admin maildict-bench)"
done
need_tools dovecot socat setpriv
for p in initdb postgres psql; do
  [ -x "$PG_BIN/$p" ] || die "$PG_BIN/$p not found: install postgresql-15 (packaging/install-deps.sh test)"
done
[ -e /usr/lib/dovecot/modules/dict/libdriver_pgsql.so ] ||
  die "Dovecot's pgsql dict driver is missing: install dovecot-pgsql"
id postgres >/dev/null 2>&1 || die "no 'postgres' account (postgresql-common creates it)"
[ "$(id -u)" = 0 ] || die "run as root: PostgreSQL runs as 'postgres', Dovecot's dict processes as 'dovecot'"
case ${MAILDICT_CONF_EXTRA:-} in
  *cache_entries*) die "MAILDICT_CONF_EXTRA must not set cache_entries: this script runs maildictd with the cache on and off" ;;
esac

bench_tmpdir mdpg
chmod 755 "$T"   # the postgres and dovecot accounts must reach their sockets below

# ---- 1. PostgreSQL: a private cluster on a UNIX socket, durability off ------------------------
P=$T/pg
mkdir -p "$P/sock"
chown postgres:postgres "$P" "$P/sock"
note "starting PostgreSQL in $P"
env -C "$P" setpriv --reuid postgres --regid postgres --init-groups -- "$PG_BIN/initdb" -D "$P/data" -U postgres --auth=trust --encoding=UTF8 --locale=C --no-sync > "$P/initdb.log" 2>&1 ||
  { cat "$P/initdb.log" >&2; die "initdb failed"; }
printf 'local all all trust\n' > "$P/data/pg_hba.conf"
# max_connections: Dovecot's dict service below may run up to 100 processes, one connection each
# A simple command, not a function or subshell: $! is then the postmaster itself (env and
# setpriv exec), which handles SIGINT even though sh starts background jobs with it ignored.
env -C "$P" setpriv --reuid postgres --regid postgres --init-groups -- "$PG_BIN/postgres" -D "$P/data" -c listen_addresses= -c "unix_socket_directories=$P/sock" \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
  -c shared_buffers=128MB 2> "$P/postgres.log" &
PG_PID=$!
on_exit_stop "$PG_PID" INT   # SIGINT: PostgreSQL's fast shutdown
psql_as() { # USER DB ARGS...: psql on the test cluster
  pa_user=$1 pa_db=$2
  shift 2
  "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "host=$P/sock dbname=$pa_db user=$pa_user" "$@"
}
i=0
until psql_as postgres postgres -c 'SELECT 1' >/dev/null 2>&1; do
  kill -0 "$PG_PID" 2>/dev/null && [ $i -lt 300 ] || { tail -n 20 "$P/postgres.log" >&2; die "PostgreSQL did not start"; }
  sleep 0.1
  i=$((i + 1))
done
psql_as postgres postgres -c 'CREATE ROLE maildict LOGIN' -c 'CREATE DATABASE maildict OWNER maildict'
CONNINFO="host=$P/sock dbname=maildict user=maildict"
PG_VERSION=$(psql_as postgres postgres -c 'SHOW server_version')

# ---- 2. maildict: the bulk directory, one maildictd with the cache and one without ------------
note "creating the maildict directory with $USERS users in PostgreSQL"
"$BUILD/maildict-admin" demo "postgresql:$CONNINFO" --bulk "$USERS" >/dev/null
maildict_conf "$T/maildict.conf" "$T/maildict.sock" "postgresql:$CONNINFO" vmail vmail
start_maildictd "$T/maildict.conf" "$T/maildictd.log" "$T/maildict.sock"
MAILDICT_PID=$STARTED_PID
maildict_conf "$T/maildict-nocache.conf" "$T/nocache.sock" "postgresql:$CONNINFO" vmail vmail
echo "cache_entries = 0" >> "$T/maildict-nocache.conf"
start_maildictd "$T/maildict-nocache.conf" "$T/maildictd-nocache.log" "$T/nocache.sock"
NOCACHE_PID=$STARTED_PID

SAMPLE_USER=user1@bulk.example
PASSDB_TPL=$(get "$T/maildict.sock" maildict "shared/passdb/$SAMPLE_USER")
USERDB_TPL=$(get "$T/maildict.sock" maildict "shared/userdb/$SAMPLE_USER")
case "$PASSDB_TPL$USERDB_TPL" in
  *'<'*) die "maildictd did not answer the sample lookups: $PASSDB_TPL $USERDB_TPL" ;;
esac

# ---- 3. Dovecot's dict server with dict-sql on pgsql, same database ---------------------------
# Its own table of ready-made values (as in compare.sh), maildict's answers for user1 turned
# into templates; "user1" not followed by a digit is the per-user part. psql variables quote
# the templates.
template() { printf '%s' "$1" | sed -e 's/user1\([^0-9]\)/user@@N@@\1/g' -e 's/user1$/user@@N@@/'; }
note "creating Dovecot's dict-sql table with $USERS users"
psql_as maildict maildict -v ptpl="$(template "$PASSDB_TPL")" -v utpl="$(template "$USERDB_TPL")" <<SQL
CREATE TABLE dovecot_dict (
  username TEXT PRIMARY KEY NOT NULL,
  passdb   TEXT NOT NULL,
  userdb   TEXT NOT NULL
);
INSERT INTO dovecot_dict
  SELECT 'user' || i || '@bulk.example', replace(:'ptpl', '@@N@@', i::text), replace(:'utpl', '@@N@@', i::text)
  FROM generate_series(1, $USERS) AS i;
SQL
psql_as postgres maildict -c 'ANALYZE'   # both servers' tables
D=$T/dovecot
mkdir -p "$D/run" "$D/state" "$D/log"
cat > "$D/dict-sql.conf.ext" <<CONF
connect = $CONNINFO
map {
  pattern = shared/passdb/\$user
  table = dovecot_dict
  value_field = passdb
  fields {
    username = \$user
  }
}
map {
  pattern = shared/userdb/\$user
  table = dovecot_dict
  value_field = userdb
  fields {
    username = \$user
  }
}
CONF
# The service setup of compare.sh (one client per dict process, up to 100 processes), so that
# the two comparisons differ only in the driver; each dict process holds its own connection.
cat > "$D/dovecot.conf" <<CONF
base_dir = $D/run
state_dir = $D/state
instance_name = mdpg-$(basename "$T")
protocols =
listen = 127.0.0.1
ssl = no
log_path = $D/log/dovecot.log
dict {
  authsql = pgsql:$D/dict-sql.conf.ext
}
service dict {
  unix_listener dict {
    mode = 0666
  }
  client_limit = 1
  process_limit = 100
}
CONF
dovecot -F -c "$D/dovecot.conf" 2> "$D/log/master.err" &
DOVECOT_PID=$!
on_exit_stop "$DOVECOT_PID"
wait_socket "$D/run/dict" "$DOVECOT_PID" ||
  { tail -n 20 "$D/log/master.err" "$D/log/dovecot.log" >&2 2>/dev/null; die "Dovecot did not open $D/run/dict"; }

# ---- the three servers must give the same answers --------------------------------------------
for u in "$SAMPLE_USER" "user$((USERS / 2 + 7))@bulk.example"; do
  for kind in passdb userdb; do
    dv=$(get_held "$D/run/dict" authsql "shared/$kind/$u")
    case $dv in '<'*) die "Dovecot's dict server answered $dv for shared/$kind/$u (log: $D/log/dovecot.log)" ;; esac
    for s in maildict nocache; do
      mv=$(get "$T/$s.sock" maildict "shared/$kind/$u")
      [ "$dv" = "$mv" ] || die "different values for shared/$kind/$u: Dovecot $dv, maildictd ($s) $mv"
    done
  done
done

# ---- 4. the scenarios ---------------------------------------------------------------------------
SCENARIOS='1x1|1 conn × 1 in flight|--connections 1 --depth 1
8x1|8 conns × 1 in flight|--connections 8 --depth 1
32x4|32 conns × 4 in flight|--connections 32 --depth 4
cpl8|connect per lookup, 8 concurrent|--mode connect-per-lookup --connections 8'

# run LABEL SOCKET DICT PID OPTIONS... -> the result line with the server's and PostgreSQL's CPU
# per 10k lookups appended (PostgreSQL: the postmaster, its backends and the ones it reaped;
# only one server is measured at a time, so its delta belongs to that server).
run() {
  label=$1 sock=$2 dict=$3 pid=$4
  shift 4
  before=$(cpu_ticks "$pid")
  pg_before=$(cpu_ticks "$PG_PID")
  line=$("$BENCH" --socket "$sock" --dict "$dict" --duration "$SECS" --warmup "$WARMUP" \
    --keys "$KEYS" --users "$USERS" --expect found --label "$label" "$@" 2>>"$T/bench-errors.log") || true
  after=$(cpu_ticks "$pid")
  pg_after=$(cpu_ticks "$PG_PID")
  [ -n "$line" ] || line="$label requests=0 lookups/s=0 errors=failed"
  n=$(field requests "$line")
  echo "$line server_cpu_ms_per_10k=$(cpu_per_10k $((after - before)) "$n") pg_cpu_ms_per_10k=$(cpu_per_10k $((pg_after - pg_before)) "$n")"
}

ROWS=$T/rows
: > "$ROWS"
echo
echo "maildict-bench results on PostgreSQL $PG_VERSION ($USERS users, keys=$KEYS, ${SECS}s per run after ${WARMUP}s warm-up, $(nproc) CPUs):"
# The three servers run each scenario back to back, so that a change in background load
# affects every ratio alike. The cached maildictd keeps its cache from scenario to scenario.
printf '%s\n' "$SCENARIOS" | while IFS='|' read -r tag name opts; do
  # shellcheck disable=SC2086  # opts are words on purpose
  d=$(run "dovecot-pgsql-$tag" "$D/run/dict" authsql "$DOVECOT_PID" $opts)
  echo "  $d"
  # shellcheck disable=SC2086
  m=$(run "maildict-cache-$tag" "$T/maildict.sock" maildict "$MAILDICT_PID" $opts)
  echo "  $m"
  # shellcheck disable=SC2086
  o=$(run "maildict-nocache-$tag" "$T/nocache.sock" maildict "$NOCACHE_PID" $opts)
  echo "  $o"
  printf '%s|%s|%s|%s\n' "$name" "$d" "$m" "$o" >> "$ROWS"
done

# ---- the tables -----------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b != "") printf "%.1f×", b / a; else print "-" }'; }
mark() { e=$(field errors "$1"); [ "$e" = 0 ] || printf ' (errors: %s)' "$e"; }
echo
echo "| scenario | Dovecot dict-sql pgsql lookups/s | maildict cache on | ratio | maildict cache off | ratio | p99 Dovecot / cache on / cache off |"
echo "|---|---:|---:|---:|---:|---:|---:|"
errors_total=0
while IFS='|' read -r name d m n; do
  dr=$(field lookups/s "$d")
  mr=$(field lookups/s "$m")
  nr=$(field lookups/s "$n")
  for x in "$d" "$m" "$n"; do [ "$(field errors "$x")" = 0 ] || errors_total=1; done
  echo "| $name | $dr$(mark "$d") | $mr$(mark "$m") | $(ratio "$dr" "$mr") | $nr$(mark "$n") | $(ratio "$dr" "$nr") | $(us "$(field p99_us "$d")") / $(us "$(field p99_us "$m")") / $(us "$(field p99_us "$n")") |"
done < "$ROWS"
echo
echo "| scenario | CPU ms / 10k lookups: Dovecot + PostgreSQL | maildict cache on + PostgreSQL | maildict cache off + PostgreSQL | bench tool (Dovecot / on / off) |"
echo "|---|---:|---:|---:|---:|"
while IFS='|' read -r name d m n; do
  cell() { printf '%s + %s' "$(field server_cpu_ms_per_10k "$1")" "$(field pg_cpu_ms_per_10k "$1")"; }
  echo "| $name | $(cell "$d") | $(cell "$m") | $(cell "$n") | $(field bench_cpu_ms_per_10k "$d") / $(field bench_cpu_ms_per_10k "$m") / $(field bench_cpu_ms_per_10k "$n") |"
done < "$ROWS"
echo
echo "Ratio = maildict / Dovecot lookups/s. maildictd: db_connections = its PostgreSQL default (two per core, at least 4) per instance; Dovecot: one PostgreSQL connection per dict process (up to 100)."
if [ -s "$T/bench-errors.log" ]; then
  echo
  echo "Errors reported by maildict-bench (first lines):"
  head -n 10 "$T/bench-errors.log" | sed 's/^/    /'
fi
[ $errors_total = 0 ]
