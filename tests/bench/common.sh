# Shared set-up of the comparison scripts in tests/bench (compare.sh, compare-smtpd.sh,
# compare-pg.sh). Sourced, not run: the script sets PROG (its name, for messages), BUILD, SECS
# and WARMUP first. POSIX sh: no local variables, so helpers use prefixed names.
#
#   die MSG / note MSG          error (exit 1) / remark, on stderr, prefixed with PROG
#   need_tools TOOL...          dies naming the first missing one
#   bench_tmpdir PREFIX         T = a fresh /tmp/PREFIX.XXXXXX (short: UNIX socket paths are
#                               limited to 108 bytes); on exit, and on Ctrl-C, the processes
#                               given to on_exit_stop are stopped and T is removed (KEEP=1 keeps it)
#   on_exit_stop PID [SIGNAL]   stop exactly this process (a child of the script) on exit, newest
#                               first, with SIGNAL (default TERM), and wait for it
#   wait_socket PATH PID        until PATH accepts connections; fails when PID exits or after 10 s
#   get SOCKET DICT KEY         one dict lookup in plain in-order mode: the value, or <N> / <F...>
#   get_held SOCKET DICT KEY    the same, keeping the connection open until the answer is in
#   maildict_conf FILE SOCKET DATABASE UID GID
#                               maildictd's benchmark configuration (+ MAILDICT_CONF_EXTRA)
#   start_maildictd CONF LOG SOCKET
#                               maildictd in the background; STARTED_PID = its pid
#   field NAME LINE             the value of NAME=... in a maildict-bench result line
#   cpu_ticks PID               user+system clock ticks of a process, its children, and the
#                               children it already reaped
#   cpu_per_10k TICKS REQUESTS  CPU ms per 10k lookups, spread over warm-up and measured window
#   us MICROSECONDS             "850 µs" or "2.4 ms"

die() { echo "$PROG: $*" >&2; exit 1; }
note() { echo "$PROG: $*" >&2; }

need_tools() {
  for nt_tool in "$@"; do
    command -v "$nt_tool" >/dev/null || die "$nt_tool is not installed"
  done
}

STOP_LIST=
on_exit_stop() { STOP_LIST="${2:-TERM}:$1 $STOP_LIST"; }

bench_cleanup() {
  bc_status=$?
  trap - EXIT INT TERM
  # Only the processes started here, by their pid, newest first.
  for bc_entry in $STOP_LIST; do
    kill -s "${bc_entry%%:*}" "${bc_entry#*:}" 2>/dev/null || true
    wait "${bc_entry#*:}" 2>/dev/null || true
  done
  if [ -n "${T:-}" ]; then
    if [ "${KEEP:-0}" = 1 ]; then note "kept $T"; else rm -rf "$T"; fi
  fi
  exit $bc_status
}

bench_tmpdir() {
  T=$(mktemp -d "/tmp/$1.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

wait_socket() {
  ws_i=0
  while [ $ws_i -lt 100 ] && kill -0 "$2" 2>/dev/null; do
    if [ -S "$1" ] && socat -u /dev/null "UNIX-CONNECT:$1" 2>/dev/null; then return 0; fi
    sleep 0.1
    ws_i=$((ws_i + 1))
  done
  return 1
}

# Plain in-order mode (H3 0), so the reply is just O<value>.
get() {
  g_reply=$(printf 'H3\t0\t0\t\t%s\nL%s\t\n' "$2" "$3" | socat -t2 - "UNIX-CONNECT:$1" | head -n 1)
  g_print
}
# The same for a server that answers asynchronously and drops what is pending when the client
# half-closes (Dovecot's dict server with pgsql): the request side stays open for a second.
get_held() {
  g_reply=$({ printf 'H3\t0\t0\t\t%s\nL%s\t\n' "$2" "$3"; sleep 1; } | socat -t2 - "UNIX-CONNECT:$1" | head -n 1)
  g_print
}
g_print() {
  case $g_reply in
    O*) printf '%s\n' "${g_reply#O}" ;;
    *) printf '<%s>\n' "$g_reply" ;;
  esac
}

maildict_conf() {
  cat > "$1" <<CONF
socket = $2
socket_mode = 0666
socket_group =
database = $3
log_level = warn
default_uid = $4
default_gid = $5
default_home = /var/vmail/%d/%n
default_mail = maildir:~/Maildir
${MAILDICT_CONF_EXTRA:-}
CONF
}

# Not in a subshell: the pid must stay a child of the script (on_exit_stop waits for it).
start_maildictd() {
  "$BUILD/maildictd" -c "$1" 2> "$2" &
  STARTED_PID=$!
  on_exit_stop "$STARTED_PID"
  wait_socket "$3" "$STARTED_PID" ||
    { tail -n 20 "$2" >&2; die "maildictd did not open $3"; }
}

field() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s|^$1=||p"; }

HZ=$(getconf CLK_TCK)

cpu_ticks() {
  ct_pids="$1 $(ps -o pid= --ppid "$1" 2>/dev/null | tr '\n' ' ')"
  ct_total=0
  for ct_p in $ct_pids; do
    ct_t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$ct_p/stat" 2>/dev/null) || ct_t=0
    ct_total=$((ct_total + ${ct_t:-0}))
  done
  echo $ct_total
}

cpu_per_10k() {
  awk -v t="$1" -v hz="$HZ" -v n="${2:-0}" -v s="$SECS" -v w="$WARMUP" \
    'BEGIN { tot = n * (s + w) / s; if (tot > 0) printf "%.0f", t * 1000 / hz * 10000 / tot; else print "-" }'
}

us() { awk -v v="$1" 'BEGIN { if (v == "" || v == "-") print "-"; else if (v < 1000) printf "%d µs", v; else printf "%.1f ms", v / 1000 }'; }
