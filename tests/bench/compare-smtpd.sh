#!/bin/sh
# Benchmarks table-maildict (+ maildictd) against opensmtpd-extras' table-sqlite on the same
# SQLite directory, both driven by maildict-bench over smtpd's imsg table protocol (the way
# smtpd <= 7.5 spawns and queries them), and prints a Markdown table with ratios.
# See tests/bench/README.md.
#
# Usage: tests/bench/compare-smtpd.sh BUILD_DIR [SECONDS_PER_RUN]
#   BUILD_DIR needs maildictd, maildict-admin, table-maildict and maildict-bench.
# Environment: USERS (default 100000), WARMUP (seconds, default 1), SERVICES (default
#   "alias credentials userinfo domain"), CONNECTIONS (table processes per run, default 1),
#   ROUNDS (default 3: every service is measured ROUNDS times on each program, the tables
#   show medians),
#   TABLE_SQLITE (path of table-sqlite; default /usr/libexec/opensmtpd/table-sqlite, and when
#   that is missing the opensmtpd-extras package is fetched with `apt-get download` and
#   unpacked into the temporary directory, nothing is installed), MAILDICT_CONF_EXTRA (lines
#   appended to maildictd's configuration), KEEP=1 keeps the temporary directory,
#   BENCH=path of another maildict-bench binary.
# Needs sqlite3 and socat; no root.
set -eu

BUILD=${1:?usage: compare-smtpd.sh BUILD_DIR [SECONDS_PER_RUN]}
SECS=${2:-5}
USERS=${USERS:-100000}
WARMUP=${WARMUP:-1}
SERVICES=${SERVICES:-alias credentials userinfo domain}
CONNECTIONS=${CONNECTIONS:-1}
ROUNDS=${ROUNDS:-3}
BUILD=$(cd "$BUILD" && pwd)
BENCH=${BENCH:-$BUILD/maildict-bench}

die() { echo "compare-smtpd.sh: $*" >&2; exit 1; }
note() { echo "compare-smtpd.sh: $*" >&2; }

for p in "$BENCH" "$BUILD/maildictd" "$BUILD/maildict-admin" "$BUILD/table-maildict"; do
  [ -x "$p" ] || die "$p not found (cmake --build $BUILD --target maildictd maildict-admin table-maildict maildict-bench)"
done
for tool in sqlite3 socat; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

# Short path: UNIX socket paths are limited to 108 bytes.
T=$(mktemp -d /tmp/mdsmtpd.XXXXXX)
MAILDICT_PID=

cleanup() {
  status=$?
  trap - EXIT INT TERM
  # Only the daemon started here, by its pid; maildict-bench stops the table programs it spawned.
  if [ -n "$MAILDICT_PID" ]; then
    kill "$MAILDICT_PID" 2>/dev/null || true
    wait "$MAILDICT_PID" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then note "kept $T"; else rm -rf "$T"; fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- table-sqlite ---------------------------------------------------------------------------
TABLE_SQLITE=${TABLE_SQLITE:-/usr/libexec/opensmtpd/table-sqlite}
if [ ! -x "$TABLE_SQLITE" ]; then
  note "$TABLE_SQLITE not found: fetching opensmtpd-extras with apt-get download (not installed)"
  mkdir "$T/extras"
  (cd "$T/extras" && apt-get download -q opensmtpd-extras >/dev/null 2>&1) ||
    die "cannot download opensmtpd-extras; install it or set TABLE_SQLITE"
  dpkg-deb -x "$T"/extras/opensmtpd-extras_*.deb "$T/extras/root"
  TABLE_SQLITE=$T/extras/root/usr/libexec/opensmtpd/table-sqlite
  [ -x "$TABLE_SQLITE" ] || die "no table-sqlite in the opensmtpd-extras package"
fi
if [ -d "$T/extras" ]; then
  SQLITE_VERSION=$(dpkg-deb -f "$T"/extras/opensmtpd-extras_*.deb Version 2>/dev/null || true)
else
  SQLITE_VERSION=$(dpkg-query -W -f '${Status} ${Version}' opensmtpd-extras 2>/dev/null | sed -n 's/^install ok installed //p' || true)
fi

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

# ---- 1. the directory and maildictd ------------------------------------------------------------
note "creating the maildict directory with $USERS users"
"$BUILD/maildict-admin" demo "$T/maildict.db" --bulk "$USERS" >/dev/null
# Numeric ids: table-sqlite reads uid/gid as integers, and a 'vmail' account need not exist here.
cat > "$T/maildict.conf" <<CONF
socket = $T/maildict.sock
socket_mode = 0666
socket_group =
database = sqlite:$T/maildict.db
log_level = warn
default_uid = 5000
default_gid = 5000
default_home = /var/vmail/%d/%n
default_mail = maildir:~/Maildir
${MAILDICT_CONF_EXTRA:-}
CONF
"$BUILD/maildictd" -c "$T/maildict.conf" 2> "$T/maildictd.log" &
MAILDICT_PID=$!
wait_socket "$T/maildict.sock" "$MAILDICT_PID" ||
  { tail -n 20 "$T/maildictd.log" >&2; die "maildictd did not open $T/maildict.sock"; }

# ---- 2. table-sqlite on the same file, with queries that give maildict's answers -------------
# One line per query (table-sqlite cannot continue a line). ?1 everywhere: table-sqlite binds the
# key as parameter 1 and refuses statements with more than one parameter. L and D below are the
# key split at its first '@'. Every query is an index search (checked with EXPLAIN QUERY PLAN):
#   alias        active alias rows of L@D (a '@D' key gives the catch-all rows), else the
#                delivery name L_D of an active user (maildict's answer for a user)
#   credentials  login:hash of an active user, {SCHEME} prefix stripped for crypt schemes, $2y$
#                shown as $2b$, as maildict does
#   userinfo     uid:gid:home of the delivery name L_D (split at the '_' before a known domain),
#                with maildict's defaults for NULL columns; CROSS JOIN keeps domains the outer
#                loop, so users is searched by primary key instead of scanned
#   domain       an active domain
cat > "$T/table-sqlite.conf" <<CONF
# table-sqlite(5) configuration generated by compare-smtpd.sh: same database as maildictd
dbpath $T/maildict.db
CONF
cat >> "$T/table-sqlite.conf" <<'CONF'
query_alias SELECT a.destination FROM aliases a JOIN domains d ON d.domain = a.domain WHERE instr(?1, '@') > 0 AND a.local_part = substr(?1, 1, instr(?1, '@') - 1) AND a.domain = substr(?1, instr(?1, '@') + 1) AND a.active = 1 AND d.active = 1 UNION ALL SELECT u.local_part || '_' || u.domain FROM users u JOIN domains d ON d.domain = u.domain WHERE instr(?1, '@') > 1 AND u.local_part = substr(?1, 1, instr(?1, '@') - 1) AND u.domain = substr(?1, instr(?1, '@') + 1) AND u.active = 1 AND d.active = 1 AND NOT EXISTS (SELECT 1 FROM aliases x WHERE x.local_part = u.local_part AND x.domain = u.domain AND x.active = 1)
query_credentials SELECT login, CASE WHEN substr(h, 1, 4) = '$2y$' THEN '$2b$' || substr(h, 5) ELSE h END FROM (SELECT u.local_part || '@' || u.domain AS login, CASE WHEN substr(u.password, 1, 1) = '{' THEN substr(u.password, instr(u.password, '}') + 1) ELSE u.password END AS h FROM users u JOIN domains d ON d.domain = u.domain WHERE instr(?1, '@') > 1 AND u.local_part = substr(?1, 1, instr(?1, '@') - 1) AND u.domain = substr(?1, instr(?1, '@') + 1) AND u.active = 1 AND d.active = 1 AND u.password IS NOT NULL AND (substr(u.password, 1, 1) <> '{' OR upper(substr(u.password, 1, instr(u.password, '}'))) IN ('{CRYPT}', '{BLF-CRYPT}', '{SHA256-CRYPT}', '{SHA512-CRYPT}', '{MD5-CRYPT}', '{DES-CRYPT}'))) WHERE h <> ''
query_userinfo SELECT COALESCE(u.uid, 5000), COALESCE(u.gid, 5000), COALESCE(u.home, '/var/vmail/' || u.domain || '/' || u.local_part) FROM domains d CROSS JOIN users u ON u.domain = d.domain AND u.local_part = substr(?1, 1, length(?1) - length(d.domain) - 1) WHERE length(?1) > length(d.domain) + 1 AND substr(?1, -length(d.domain) - 1) = '_' || d.domain AND d.active = 1 AND u.active = 1
query_domain SELECT domain FROM domains WHERE domain = ?1 AND active = 1
CONF
for q in query_alias query_credentials query_userinfo; do
  plan=$(sqlite3 "$T/maildict.db" "EXPLAIN QUERY PLAN $(sed -n "s/^$q //p" "$T/table-sqlite.conf")")
  # the domains table (d) is small; a scan of users or aliases would cost the whole table
  if printf '%s\n' "$plan" | grep -Eq 'SCAN (u|a|x|users|aliases)( |$)'; then die "$q scans a table: $plan"; fi
done

# ---- 3. both programs must give the same answers ------------------------------------------------
# table_run PROGRAM CONFIG NAME OPTIONS...: maildict-bench in smtpd-table mode
# (sh has no local variables: tr_* are this function's own)
table_run() {
  tr_prog=$1 tr_conf=$2 tr_name=$3
  shift 3
  "$BENCH" --mode smtpd-table --table-program "$tr_prog" --table-config "$tr_conf" --table-name "$tr_name" \
    --users "$USERS" "$@"
}
for svc in $SERVICES; do
  for prog in sqlite maildict; do
    if [ $prog = sqlite ]; then p=$TABLE_SQLITE c=$T/table-sqlite.conf; else p=$BUILD/table-maildict c=$T/maildict.conf; fi
    # 20 random logins (the same ones for both: same seed) plus user1
    { table_run "$p" "$c" "$svc" --service "$svc" --requests 20 --warmup 0 --print-replies 20 --expect found
      table_run "$p" "$c" "$svc" --service "$svc" --requests 1 --warmup 0 --order seq --print-replies 1 --expect found
    } > "$T/check-$svc-$prog.out" 2> "$T/check-$svc-$prog.err" ||
      { cat "$T/check-$svc-$prog.err" >&2; die "table-$prog did not answer every $svc lookup with found"; }
    grep '^maildict-bench: \(lookup\|check\) ' "$T/check-$svc-$prog.err" > "$T/check-$svc-$prog.replies" || true
  done
  [ "$(wc -l < "$T/check-$svc-sqlite.replies")" -eq 21 ] || die "missing replies in the $svc check"
  cmp -s "$T/check-$svc-sqlite.replies" "$T/check-$svc-maildict.replies" ||
    { diff "$T/check-$svc-sqlite.replies" "$T/check-$svc-maildict.replies" >&2 || true
      die "table-sqlite and table-maildict answer $svc differently"; }
  note "$svc: same answers from both, e.g. $(tail -n 1 "$T/check-$svc-maildict.replies" | sed 's/^maildict-bench: //' | cut -c1-90)"
done

# ---- 4. the runs ----------------------------------------------------------------------------------
# field NAME LINE: the value of NAME=... in a maildict-bench result line
field() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s|^$1=||p"; }
HZ=$(getconf CLK_TCK)
# "steal total" jiffies of all CPUs: a VM whose host is busy loses time to steal, which shows up
# in every number here; each run's share of stolen time is printed with its result line.
cpu_stat() { awk '/^cpu / { print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }' /proc/stat; }
steal_pct() { # BEFORE AFTER, each "steal total"
  printf '%s %s\n' "$1" "$2" | awk '{ d = $4 - $2; if (d > 0) printf "%.0f", 100 * ($3 - $1) / d; else print 0 }'
}
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# run_sqlite SVC / run_maildict SVC: one measured run; prints the result line. The maildict
# line gets maildictd's CPU appended, spread over warm-up and measured lookups like the rest.
run_sqlite() {
  st0=$(cpu_stat)
  rs=$(table_run "$TABLE_SQLITE" "$T/table-sqlite.conf" "$1" --service "$1" --duration "$SECS" \
    --warmup "$WARMUP" --connections "$CONNECTIONS" --expect found --label "table-sqlite-$1" \
    2>>"$T/bench-errors.log") || true
  [ -n "$rs" ] || rs="table-sqlite-$1 requests=0 lookups/s=0 errors=failed"
  echo "$rs steal_pct=$(steal_pct "$st0" "$(cpu_stat)")"
}
run_maildict() {
  before=$(ticks "$MAILDICT_PID")
  st0=$(cpu_stat)
  rm_=$(table_run "$BUILD/table-maildict" "$T/maildict.conf" "$1" --service "$1" --duration "$SECS" \
    --warmup "$WARMUP" --connections "$CONNECTIONS" --expect found --label "table-maildict-$1" \
    2>>"$T/bench-errors.log") || true
  after=$(ticks "$MAILDICT_PID")
  st1=$(cpu_stat)
  [ -n "$rm_" ] || rm_="table-maildict-$1 requests=0 lookups/s=0 errors=failed"
  n=$(field requests "$rm_")
  dcpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="${n:-0}" -v s="$SECS" -v w="$WARMUP" \
    'BEGIN { tot = n * (s + w) / s; if (tot > 0) printf "%.0f", t * 1000 / hz * 10000 / tot; else print "-" }')
  echo "$rm_ maildictd_cpu_ms_per_10k=$dcpu steal_pct=$(steal_pct "$st0" "$st1")"
}

ROWS=$T/rows
: > "$ROWS"
echo
echo "maildict-bench --mode smtpd-table results ($USERS users, $ROUNDS round(s), ${SECS}s per run after ${WARMUP}s warm-up, $CONNECTIONS table process(es), $(nproc) CPUs):"
# Both programs run each service back to back, so that a change in background load affects
# both sides of a ratio alike, and in alternating order from round to round.
round=1
while [ $round -le "$ROUNDS" ]; do
  for svc in $SERVICES; do
    if [ $((round % 2)) = 1 ]; then
      s=$(run_sqlite "$svc"); echo "  r$round $s"
      m=$(run_maildict "$svc"); echo "  r$round $m"
    else
      m=$(run_maildict "$svc"); echo "  r$round $m"
      s=$(run_sqlite "$svc"); echo "  r$round $s"
    fi
    printf '%s|%s|%s\n' "$svc" "$s" "$m" >> "$ROWS"
  done
  round=$((round + 1))
done

# ---- the tables -----------------------------------------------------------------------------------
us() { awk -v v="$1" 'BEGIN { if (v == "" || v == "-") print "-"; else if (v < 1000) printf "%d µs", v; else printf "%.1f ms", v / 1000 }'; }
what() {
  case $1 in
    alias) echo "alias (LOOKUP K_ALIAS user@dom)" ;;
    credentials) echo "credentials (LOOKUP K_CREDENTIALS user@dom)" ;;
    userinfo) echo "userinfo (LOOKUP K_USERINFO user_dom)" ;;
    domain) echo "domain (CHECK K_DOMAIN dom)" ;;
    mixed) echo "mixed (domain, alias, userinfo, credentials)" ;;
    *) echo "$1" ;;
  esac
}
# med SVC SIDE FIELD: the median over the rounds of FIELD in SIDE's lines (2 = sqlite, 3 = maildict)
med() {
  grep "^$1|" "$ROWS" | cut -d'|' -f"$2" | while IFS= read -r line; do field "$3" "$line"; done |
    sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# ratios SVC: maildict / sqlite lookups/s of every round, one per line
ratios() {
  grep "^$1|" "$ROWS" | while IFS='|' read -r _ s m; do
    awk -v a="$(field lookups/s "$s")" -v b="$(field lookups/s "$m")" 'BEGIN { if (a > 0) printf "%.2f\n", b / a }'
  done
}
int() { printf '%s' "$1" | cut -d. -f1; }
errors_total=0
for e in $(cut -d'|' -f2,3 "$ROWS" | tr '|' '\n' | while IFS= read -r line; do field errors "$line"; done); do
  [ "$e" = 0 ] || errors_total=1
done
echo
echo "| service | table-sqlite lookups/s | table-maildict lookups/s | ratio | table-sqlite p99 | table-maildict p99 |"
echo "|---|---:|---:|---:|---:|---:|"
for svc in $SERVICES; do
  sr=$(med "$svc" 2 lookups/s)
  mr=$(med "$svc" 3 lookups/s)
  ratio=$(awk -v a="$sr" -v b="$mr" 'BEGIN { if (a > 0) printf "%.2f×", b / a; else print "-" }')
  if [ "$ROUNDS" -gt 1 ]; then
    ratio="$ratio ($(ratios "$svc" | sort -g | sed -n '1p;$p' | paste -sd- | sed 's/-/–/'))"
  fi
  echo "| $(what "$svc") | $(int "$sr") | $(int "$mr") | $ratio | $(us "$(med "$svc" 2 p99_us)") | $(us "$(med "$svc" 3 p99_us)") |"
done
echo
echo "| service | table-sqlite CPU ms / 10k | table-maildict + maildictd CPU ms / 10k | bench tool CPU ms / 10k (sqlite run / maildict run) |"
echo "|---|---:|---:|---:|"
for svc in $SERVICES; do
  tm=$(med "$svc" 3 table_cpu_ms_per_10k)
  dm=$(med "$svc" 3 maildictd_cpu_ms_per_10k)
  sum=$(awk -v a="$tm" -v b="$dm" 'BEGIN { if (b == "-" || b == "") print a; else printf "%.0f", a + b }')
  echo "| $svc | $(int "$(med "$svc" 2 table_cpu_ms_per_10k)") | $sum ($(int "$tm") + $(int "$dm")) | $(int "$(med "$svc" 2 bench_cpu_ms_per_10k)") / $(int "$(med "$svc" 3 bench_cpu_ms_per_10k)") |"
done
echo
[ "$ROUNDS" -gt 1 ] && echo "Medians over $ROUNDS rounds; the ratio's range is the lowest and highest ratio of a single round."
echo "CPU time stolen by the hypervisor during the runs: median $(for c in 2 3; do cut -d'|' -f$c "$ROWS"; done |
  while IFS= read -r line; do field steal_pct "$line"; done | sort -g |
  awk '{ a[NR] = $1 } END { if (NR) printf "%s%%, highest %s%%", a[int((NR + 1) / 2)], a[NR]; else print "-" }') (vmstat's st; above a few % the absolute numbers mean little)."
echo
echo "table-sqlite: $TABLE_SQLITE (opensmtpd-extras ${SQLITE_VERSION:-?}); queries in $T/table-sqlite.conf$( [ "${KEEP:-0}" = 1 ] || echo ' (removed on exit; KEEP=1 keeps it)')"
if [ $errors_total != 0 ] && [ -s "$T/bench-errors.log" ]; then
  echo
  echo "Errors reported by maildict-bench (first lines):"
  grep '^maildict-bench: ' "$T/bench-errors.log" | head -n 10 | sed 's/^/    /'
fi
[ $errors_total = 0 ]
