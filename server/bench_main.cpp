// maildict-bench: a load generator for the Dovecot dict ("proxy") protocol, used to compare
// maildictd with Dovecot's own dict server on the same machine (tests/bench/compare.sh), and,
// in --mode smtpd-table, for OpenSMTPD table programs over smtpd's imsg protocol (table-maildict
// against opensmtpd-extras' table-sqlite, tests/bench/compare-smtpd.sh), and in --mode policy
// for maildictd's auth policy server (keep-alive HTTP, as Dovecot's policy client).
//
// It runs on one thread because it shares a small machine with the server it measures: every
// cycle it spends is a cycle the server does not get. Hence plain callbacks instead of
// coroutines, one clock read per socket read or write instead of per request, buffers that
// are reused for the whole run and a fixed-size histogram.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/smtpd_imsg.hpp"

namespace {

namespace asio = boost::asio;
using Socket = asio::local::stream_protocol::socket;
using Endpoint = asio::local::stream_protocol::endpoint;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

constexpr const char* kUsage = R"(usage: maildict-bench --socket PATH [options]
       maildict-bench --mode smtpd-table --table-program PATH [--table-config CONF] [options]
       maildict-bench --mode policy --policy-address HOST:PORT [--api-key KEY] [options]

Sends dict-protocol lookups (Lshared/passdb/<login>\t<login>) to a dict server, or smtpd imsg
table requests to an OpenSMTPD table program, and prints one result line: throughput, latency
percentiles, errors and the bench tool's own CPU use.

  --socket PATH          UNIX socket of the dict server (required but in smtpd-table mode)
  --dict NAME            dict name sent in the H line (default: maildict)
  --connections C        concurrent connections (default: 1)
  --depth D              requests in flight per connection, persistent mode (default: 1)
  --requests N           measure N lookups ...
  --duration SECONDS     ... or measure for this long (default: 5 s)
  --warmup X             not measured: seconds with --duration (default 1), lookups with
                         --requests (default 10% of N)
  --mode MODE            persistent: C long-lived connections, D lookups in flight on each;
                         connect-per-lookup: C clients that each connect, send H and one L,
                         read the reply and close, over and over (Dovecot auth's default);
                         smtpd-table: see below
  --keys KIND            passdb, userdb or mixed (passdb then userdb of the same login)
                         (default: passdb)
  --users N              logins are drawn from 1..N (default: 100000)
  --user-format FMT      login template, %u = the number (default: user%u@bulk.example)
  --order ORDER          random or seq (default: random)
  --seed N               random seed (default: 1)
  --handshake "MAJ MIN"  protocol version of the H line (default: "3 2" as Dovecot 2.3; "3 0"
                         asks for plain in-order replies, "4 0" is Dovecot 2.4)
  --expect WHAT          found: every reply must be O/M, N and F count as errors (the first
                         few are printed); any: only I/O and protocol problems are errors
                         (default: any)
  --label TEXT           first word of the result line (default: the mode)
  --help                 this text

smtpd-table mode: drives a table program the way smtpd <= 7.5 does (specs/smtpd-tables.md §2,
§3): it is started with a socketpair end as fd 0, /dev/null as fd 1, this tool's stderr as fd 2,
argv[0] = the table name and argv[1] = --table-config (omitted when not given); then imsg OPEN
(API version 2), then one request at a time per table process, each sent only when the previous
reply is in (smtpd waits synchronously). --connections C starts C table processes (like C
`table` lines) and keeps one request outstanding on each; --depth, --keys, --dict, --handshake
and --socket do not apply.
  --table-program PATH   the table program, e.g. /usr/libexec/opensmtpd/table-sqlite
  --table-config CONF    its argv[1], as in smtpd.conf `table NAME TYPE:CONF`
  --table-name NAME      smtpd's table NAME: argv[0] and the OPEN name (default: bench)
  --service S            what to ask, with the key derived from the login of --user-format:
                         alias: LOOKUP K_ALIAS <login> (virtual/alias tables)
                         credentials: LOOKUP K_CREDENTIALS <login> (listener auth)
                         userinfo: LOOKUP K_USERINFO <login with its last '@' turned into
                           '_'> (maildict's delivery name, what alias answers for a user)
                         domain: CHECK K_DOMAIN <the part after the last '@'>
                         mixed: per login, domain, alias, userinfo and credentials in turn
                         (default: alias)
  --reply-timeout SECS   a reply later than this is an error and ends that table process's
                         part of the run (smtpd itself would wait forever) (default: 10)
  --print-replies N      print the first N requests and their replies to stderr
                         (key, status, value), e.g. to compare two table programs

policy mode: C keep-alive HTTP/1.1 connections to maildictd's policy listener (policy_listen),
each sending what Dovecot sends per login, one request at a time: POST ?command=allow, then
POST ?command=report (success for 9 logins in 10, a failure with a random pwhash for the
10th), for random logins (--users, --user-format) from random client IPs (10.x.y.z, one per
login). lookups/s counts all requests; decisions/s the allow requests. --api-key sends
X-API-Key. A non-2xx answer or a malformed reply is an error.
  --policy-address A     HOST:PORT of the policy listener (IPv4)
  --api-key KEY          value of the X-API-Key header (default: none)

Result line (greppable key=value fields after the label):
  persistent c=8 d=1 requests=200000 secs=1.62 lookups/s=123456 p50_us=60 p99_us=180
  p999_us=400 max_us=900 errors=0 notfound=0 failed=0 bench_cpu_ms_per_10k=120.0
In smtpd-table mode the line also has table_cpu_ms_per_10k (the table processes' CPU over the
measured window, from /proc); notfound counts 0 replies, failed counts -1 replies, and a
malformed reply (one smtpd would exit on) or a dead table process counts as an error.
Latency runs from writing a request to reading its reply; with connect-per-lookup, from the
start of connect() to the reply. requests/secs/lookups/s/percentiles cover the measured window;
errors/notfound/failed cover the whole run including warm-up. Exit status: 0, or 1 when there
were errors, 2 on bad usage.
)";

enum class Mode { persistent, connect_per_lookup, smtpd_table, policy };
enum class Keys { passdb, userdb, mixed };
enum class TableService { alias, credentials, userinfo, domain, mixed };

struct Options {
  std::string socket_path;
  std::string dict = "maildict";
  unsigned connections = 1;
  unsigned depth = 1;
  std::uint64_t requests = 0;
  double duration = 0;
  double warmup = -1;  // negative: the default for the chosen run length
  Mode mode = Mode::persistent;
  Keys keys = Keys::passdb;
  std::uint64_t users = 100000;
  std::string user_format = "user%u@bulk.example";
  bool random_order = true;
  std::uint64_t seed = 1;
  unsigned major = 3;
  unsigned minor = 2;
  bool expect_found = false;
  std::string label;
  // smtpd-table mode
  std::string table_program;
  std::string table_config;
  bool has_table_config = false;
  std::string table_name = "bench";
  TableService service = TableService::alias;
  double reply_timeout = 10;
  std::uint64_t print_replies = 0;
  // policy mode
  std::string policy_address;
  std::string api_key;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "maildict-bench: %s (see --help)\n", message.c_str());
  std::exit(2);
}

template <class T>
T parse_number(std::string_view text, const char* option) {
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size())
    usage_error(std::string("bad number for ") + option + ": '" + std::string(text) + "'");
  return value;
}

double parse_seconds(const std::string& text, const char* option) {
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(value >= 0))
    usage_error(std::string("bad number of seconds for ") + option + ": '" + text + "'");
  return value;
}

Options parse_options(int argc, char** argv) {
  Options o;
  bool warmup_given = false;
  std::string warmup_text;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_inline_value = false;
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg.resize(eq);
      has_inline_value = true;
    }
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (!has_inline_value) {
      if (i + 1 >= argc) usage_error("missing value for " + arg);
      value = argv[++i];
    }
    const char* opt = arg.c_str();
    if (arg == "--socket") {
      o.socket_path = value;
    } else if (arg == "--dict") {
      o.dict = value;
    } else if (arg == "--connections") {
      o.connections = parse_number<unsigned>(value, opt);
    } else if (arg == "--depth") {
      o.depth = parse_number<unsigned>(value, opt);
    } else if (arg == "--requests") {
      o.requests = parse_number<std::uint64_t>(value, opt);
    } else if (arg == "--duration") {
      o.duration = parse_seconds(value, opt);
    } else if (arg == "--warmup") {
      warmup_given = true;
      warmup_text = value;
    } else if (arg == "--mode") {
      if (value == "persistent") o.mode = Mode::persistent;
      else if (value == "connect-per-lookup") o.mode = Mode::connect_per_lookup;
      else if (value == "smtpd-table") o.mode = Mode::smtpd_table;
      else if (value == "policy") o.mode = Mode::policy;
      else usage_error("--mode must be persistent, connect-per-lookup, smtpd-table or policy");
    } else if (arg == "--keys") {
      if (value == "passdb") o.keys = Keys::passdb;
      else if (value == "userdb") o.keys = Keys::userdb;
      else if (value == "mixed") o.keys = Keys::mixed;
      else usage_error("--keys must be passdb, userdb or mixed");
    } else if (arg == "--users") {
      o.users = parse_number<std::uint64_t>(value, opt);
    } else if (arg == "--user-format") {
      o.user_format = value;
    } else if (arg == "--order") {
      if (value == "random") o.random_order = true;
      else if (value == "seq") o.random_order = false;
      else usage_error("--order must be random or seq");
    } else if (arg == "--seed") {
      o.seed = parse_number<std::uint64_t>(value, opt);
    } else if (arg == "--handshake") {
      auto sep = value.find_first_of(" .,\t");
      if (sep == std::string::npos) usage_error("--handshake wants \"MAJOR MINOR\", e.g. \"3 2\"");
      o.major = parse_number<unsigned>(std::string_view(value).substr(0, sep), opt);
      o.minor = parse_number<unsigned>(std::string_view(value).substr(sep + 1), opt);
    } else if (arg == "--expect") {
      if (value == "found") o.expect_found = true;
      else if (value == "any") o.expect_found = false;
      else usage_error("--expect must be found or any");
    } else if (arg == "--label") {
      o.label = value;
    } else if (arg == "--table-program") {
      o.table_program = value;
    } else if (arg == "--table-config") {
      o.table_config = value;
      o.has_table_config = true;
    } else if (arg == "--table-name") {
      o.table_name = value;
    } else if (arg == "--service") {
      if (value == "alias") o.service = TableService::alias;
      else if (value == "credentials") o.service = TableService::credentials;
      else if (value == "userinfo") o.service = TableService::userinfo;
      else if (value == "domain") o.service = TableService::domain;
      else if (value == "mixed") o.service = TableService::mixed;
      else usage_error("--service must be alias, credentials, userinfo, domain or mixed");
    } else if (arg == "--reply-timeout") {
      o.reply_timeout = parse_seconds(value, opt);
    } else if (arg == "--policy-address") {
      o.policy_address = value;
    } else if (arg == "--api-key") {
      o.api_key = value;
    } else if (arg == "--print-replies") {
      o.print_replies = parse_number<std::uint64_t>(value, opt);
    } else {
      usage_error("unknown option " + arg);
    }
  }
  if (o.mode == Mode::smtpd_table) {
    if (o.table_program.empty()) usage_error("--table-program is required with --mode smtpd-table");
    // The OPEN message carries the name in a char[LINE_MAX] with its NUL.
    if (o.table_name.empty() || o.table_name.size() >= 2048 || o.table_name.find('\0') != std::string::npos)
      usage_error("--table-name must be 1 to 2047 bytes");
    if (o.reply_timeout <= 0) usage_error("--reply-timeout must be positive");
    o.depth = 1;
  } else if (o.mode == Mode::policy) {
    if (o.policy_address.empty()) usage_error("--policy-address is required with --mode policy");
    o.depth = 1;
  } else if (o.socket_path.empty()) {
    usage_error("--socket is required");
  }
  if (o.connections == 0 || o.depth == 0 || o.users == 0)
    usage_error("--connections, --depth and --users must be at least 1");
  if (o.requests && o.duration > 0) usage_error("give --requests or --duration, not both");
  if (!o.requests && o.duration <= 0) o.duration = 5;
  if (o.mode == Mode::connect_per_lookup) o.depth = 1;
  // The tool writes logins and the dict name unescaped, so they must not need escaping.
  for (const std::string* s : {&o.user_format, &o.dict})
    if (s->find_first_of(std::string_view("\t\n\r\x01", 4)) != std::string::npos)
      usage_error("--user-format and --dict must not contain TAB, CR, LF or \\x01");
  if (warmup_given) {
    o.warmup = o.requests ? static_cast<double>(parse_number<std::uint64_t>(warmup_text, "--warmup"))
                          : parse_seconds(warmup_text, "--warmup");
  } else {
    o.warmup = o.requests ? static_cast<double>(o.requests / 10) : 1.0;
  }
  if (o.label.empty())
    o.label = o.mode == Mode::persistent           ? "persistent"
              : o.mode == Mode::connect_per_lookup ? "connect-per-lookup"
              : o.mode == Mode::policy             ? "policy"
                                                   : "smtpd-table";
  return o;
}

// Log-linear buckets over nanoseconds: each power of two is split into 32 sub-buckets, so a
// percentile is within ~3% of the exact value while add() is a clz and an increment.
class Histogram {
 public:
  void add(std::uint64_t ns) {
    ++counts_[index(ns)];
    ++total_;
    sum_ += ns;
    max_ = std::max(max_, ns);
  }
  std::uint64_t total() const { return total_; }
  std::uint64_t max() const { return max_; }
  double mean() const { return total_ ? static_cast<double>(sum_) / total_ : 0; }
  // Midpoint of the bucket that holds the q-quantile.
  double quantile(double q) const {
    if (!total_) return 0;
    auto rank = static_cast<std::uint64_t>(q * static_cast<double>(total_));
    if (rank >= total_) rank = total_ - 1;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen > rank) return std::min(midpoint(i), static_cast<double>(max_));
    }
    return static_cast<double>(max_);
  }
  void reset() { *this = Histogram(); }

 private:
  static constexpr unsigned kSubBits = 5;
  static constexpr std::uint64_t kSub = 1u << kSubBits;
  static std::size_t index(std::uint64_t v) {
    if (v < kSub) return v;
    unsigned msb = 63 - static_cast<unsigned>(__builtin_clzll(v));
    unsigned shift = msb - kSubBits;
    return ((shift + 1) << kSubBits) + ((v >> shift) & (kSub - 1));
  }
  static double midpoint(std::size_t i) {
    std::size_t group = i >> kSubBits;
    std::uint64_t sub = i & (kSub - 1);
    if (group == 0) return static_cast<double>(sub);
    std::uint64_t low = (kSub + sub) << (group - 1);
    std::uint64_t width = std::uint64_t{1} << (group - 1);
    return static_cast<double>(low) + static_cast<double>(width - 1) / 2;
  }
  std::array<std::uint64_t, (64 - kSubBits + 1) << kSubBits> counts_{};
  std::uint64_t total_ = 0;
  std::uint64_t max_ = 0;
  unsigned __int128 sum_ = 0;
};

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

class Bench;

// One client connection (persistent mode) or one client slot that reconnects for every
// lookup (connect-per-lookup mode).
class Conn {
 public:
  Conn(Bench& bench, unsigned index);
  void start();
  // At the end of the measured window: closes a connection with nothing in flight.
  void stop_if_idle();
  // Drops the connection and counts what was still in flight as lost (drain timeout).
  void abandon();
  bool finished() const { return finished_; }

 private:
  struct Pending {
    Clock::time_point sent;
    std::uint32_t id;    // async id from '*<n>', 0 until announced
    std::uint32_t user;  // for error messages
    bool userdb;
    bool done;           // '+<n>' replies may complete entries out of order
  };

  void connect();
  void on_connect(const error_code& ec);
  void append_request();
  void fill();
  void flush();
  void on_write(const error_code& ec);
  void start_read();
  void on_read(const error_code& ec, std::size_t n);
  bool handle_line(std::string_view line, Clock::time_point now);
  bool complete(std::uint64_t seq, char code, std::string_view line, Clock::time_point now);
  void after_cycle();
  void fail(const char* what, const error_code& ec = {});
  void finish();
  std::uint64_t in_flight() const { return tail_ - head_; }
  Pending& at(std::uint64_t seq) { return ring_[seq & mask_]; }
  std::uint32_t next_user();

  Bench& b_;
  Socket socket_;
  asio::steady_timer retry_;
  std::vector<char> rbuf_;
  std::size_t rlen_ = 0;
  std::string wbuf_;       // being written
  std::string wbuf_next_;  // filled while a write is in flight, swapped in when it completes
  bool writing_ = false;
  bool connected_ = false;
  bool finished_ = false;
  bool cycle_pending_ = false;  // connect-per-lookup: reply read, waiting for the write handler
  unsigned failures_ = 0;  // in a row without a reply; a server that is gone ends the run
  unsigned generation_ = 0;     // handlers of a dropped socket must not touch the new one
  std::vector<Pending> ring_;
  std::uint64_t mask_ = 0;
  std::uint64_t head_ = 0, tail_ = 0, unassigned_ = 0, stamped_ = 0;
  Clock::time_point connect_start_;
  std::uint64_t rng_;
  std::uint64_t request_seq_ = 0;
  std::uint32_t current_user_ = 1;
};

class Bench {
 public:
  explicit Bench(Options o)
      : o_(std::move(o)), io_(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE), endpoint_(o_.socket_path),
        timer_(io_), drain_timer_(io_) {
    hello_ = "H" + std::to_string(o_.major) + "\t" + std::to_string(o_.minor) + "\t0\t\t" + o_.dict + "\n";
    if (auto p = o_.user_format.find("%u"); p != std::string::npos) {
      user_prefix_ = o_.user_format.substr(0, p);
      user_suffix_ = o_.user_format.substr(p + 2);
    } else {
      user_prefix_ = o_.user_format;  // one login for everyone
      no_number_ = true;
    }
    if (o_.requests) {
      warm_n_ = static_cast<std::uint64_t>(o_.warmup);
      issue_limit_ = warm_n_ + o_.requests;
    }
  }

  int run() {
    for (unsigned i = 0; i < o_.connections; ++i) conns_.push_back(std::make_unique<Conn>(*this, i));
    if (o_.requests) {
      if (warm_n_ == 0) begin_measuring(Clock::now());
    } else {
      auto warm = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.warmup));
      auto total = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.duration));
      if (warm.count() == 0) {
        begin_measuring(Clock::now());
        arm_end_timer(total);
      } else {
        timer_.expires_after(warm);
        timer_.async_wait([this, total](const error_code& ec) {
          if (ec || stopping_) return;
          begin_measuring(Clock::now());
          arm_end_timer(total);
        });
      }
    }
    for (auto& c : conns_) c->start();
    io_.run();
    return report();
  }

  // ---- used by Conn ----
  const Options& options() const { return o_; }
  asio::io_context& io() { return io_; }
  const Endpoint& endpoint() const { return endpoint_; }
  const std::string& hello() const { return hello_; }
  bool stopping() const { return stopping_; }

  bool take_request() {
    if (stopping_ || issued_ >= issue_limit_) return false;
    ++issued_;
    return true;
  }

  std::uint32_t next_seq_user() {
    std::uint32_t u = static_cast<std::uint32_t>(seq_user_ % o_.users) + 1;
    ++seq_user_;
    return u;
  }

  void append_login(std::string& out, std::uint32_t user) const {
    out += user_prefix_;
    if (!no_number_) {
      char digits[16];
      auto r = std::to_chars(digits, digits + sizeof digits, user);
      out.append(digits, r.ptr);
      out += user_suffix_;
    }
  }

  // One reply (or one lost request) is done.
  void on_done(Clock::time_point now, Clock::time_point sent, bool lost) {
    if (measuring_ && !lost) hist_.add(static_cast<std::uint64_t>((now - sent).count()));
    ++done_total_;
    if (o_.requests) {
      if (!measuring_ && !stopping_ && done_total_ == warm_n_) begin_measuring(now);
      else if (measuring_ && done_total_ == issue_limit_) end_measuring(now);
    }
  }

  void count_reply(char code, std::string_view line, bool userdb, std::uint32_t user) {
    switch (code) {
      case 'O': case 'M': ++found_; return;
      case 'N':
        ++notfound_;
        if (o_.expect_found) error_detail("not found", userdb, user, line);
        return;
      case 'F':
        ++failed_;
        error_detail("failure reply", userdb, user, line);
        return;
      default:
        error_detail("unexpected reply", userdb, user, line);
        return;
    }
  }

  void error_detail(const char* what, bool userdb, std::uint32_t user, std::string_view line) {
    ++errors_;
    if (++reported_ > kMaxReported) return;
    std::string login;
    append_login(login, user);
    std::fprintf(stderr, "maildict-bench: %s for shared/%s/%s: %.*s\n", what,
                 userdb ? "userdb" : "passdb", login.c_str(), static_cast<int>(std::min<std::size_t>(line.size(), 200)),
                 line.data());
  }

  // Counts the lost requests, or the failure itself when none was lost (a refused connect).
  void io_error(const char* what, const error_code& ec, std::uint64_t lost) {
    errors_ += lost ? lost : 1;
    if (++reported_ > kMaxReported) return;
    std::fprintf(stderr, "maildict-bench: %s: %s (%llu requests lost)\n", what,
                 ec ? ec.message().c_str() : "protocol error", static_cast<unsigned long long>(lost));
  }

  void conn_finished() {
    if (++finished_conns_ == conns_.size()) {
      timer_.cancel();
      drain_timer_.cancel();
    }
  }

 private:
  static constexpr unsigned kMaxReported = 5;

  void begin_measuring(Clock::time_point now) {
    measuring_ = true;
    hist_.reset();
    t_start_ = now;
    cpu_start_ = cpu_seconds();
  }

  void end_measuring(Clock::time_point now) {
    measuring_ = false;
    stopping_ = true;
    t_end_ = now;
    cpu_end_ = cpu_seconds();
    // A server that stops answering must not hang the run.
    drain_timer_.expires_after(std::chrono::seconds(5));
    drain_timer_.async_wait([this](const error_code& ec) {
      if (ec) return;
      for (auto& c : conns_) if (!c->finished()) c->abandon();
    });
    // Posted, because this runs inside some connection's reply handling.
    asio::post(io_, [this] {
      for (auto& c : conns_) c->stop_if_idle();
    });
  }

  void arm_end_timer(Clock::duration total) {
    timer_.expires_after(total);
    timer_.async_wait([this](const error_code& ec) {
      if (ec) return;
      end_measuring(Clock::now());
    });
  }

  int report() {
    if (!t_end_.time_since_epoch().count()) {  // ended early (every connection failed)
      t_end_ = Clock::now();
      cpu_end_ = cpu_seconds();
    }
    double secs = t_start_.time_since_epoch().count()
                      ? std::chrono::duration<double>(t_end_ - t_start_).count()
                      : 0.0;
    std::uint64_t n = hist_.total();
    double rate = secs > 0 ? static_cast<double>(n) / secs : 0;
    double cpu_per_10k = n ? (cpu_end_ - cpu_start_) * 1000.0 * 10000.0 / static_cast<double>(n) : 0;
    std::printf(
        "%s c=%u d=%u requests=%llu secs=%.2f lookups/s=%.0f p50_us=%.0f p99_us=%.0f p999_us=%.0f "
        "max_us=%.0f errors=%llu notfound=%llu failed=%llu bench_cpu_ms_per_10k=%.1f\n",
        o_.label.c_str(), o_.connections, o_.depth, static_cast<unsigned long long>(n), secs, rate,
        hist_.quantile(0.50) / 1000, hist_.quantile(0.99) / 1000, hist_.quantile(0.999) / 1000,
        static_cast<double>(hist_.max()) / 1000, static_cast<unsigned long long>(errors_),
        static_cast<unsigned long long>(notfound_), static_cast<unsigned long long>(failed_), cpu_per_10k);
    std::fflush(stdout);
    return errors_ || n == 0 ? 1 : 0;
  }

  Options o_;
  asio::io_context io_;
  Endpoint endpoint_;
  asio::steady_timer timer_;
  asio::steady_timer drain_timer_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::string hello_;
  std::string user_prefix_, user_suffix_;
  bool no_number_ = false;
  bool measuring_ = false;
  bool stopping_ = false;
  std::uint64_t issued_ = 0;
  std::uint64_t issue_limit_ = UINT64_MAX;
  std::uint64_t warm_n_ = 0;
  std::uint64_t done_total_ = 0;
  std::uint64_t seq_user_ = 0;
  std::size_t finished_conns_ = 0;
  Histogram hist_;
  std::uint64_t found_ = 0, notfound_ = 0, failed_ = 0, errors_ = 0;
  unsigned reported_ = 0;
  Clock::time_point t_start_{}, t_end_{};
  double cpu_start_ = 0, cpu_end_ = 0;
};

// ---- Conn -----------------------------------------------------------------------------------

Conn::Conn(Bench& bench, unsigned index)
    : b_(bench), socket_(bench.io()), retry_(bench.io()), rbuf_(16384) {
  std::size_t cap = 1;
  while (cap < b_.options().depth) cap <<= 1;
  ring_.resize(cap);
  mask_ = cap - 1;
  // splitmix64 of (seed, index): different, reproducible streams per connection
  std::uint64_t z = b_.options().seed * 0x9E3779B97F4A7C15ull + index + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  rng_ = (z ^ (z >> 31)) | 1;
  std::size_t reserve = 64 + b_.hello().size() + static_cast<std::size_t>(cap) * (48 + 2 * b_.options().user_format.size());
  wbuf_.reserve(reserve);
  wbuf_next_.reserve(reserve);
}

std::uint32_t Conn::next_user() {
  if (!b_.options().random_order) return b_.next_seq_user();
  rng_ ^= rng_ << 13;  // xorshift64: the cheapest generator that spreads over 100k logins
  rng_ ^= rng_ >> 7;
  rng_ ^= rng_ << 17;
  return static_cast<std::uint32_t>(rng_ % b_.options().users) + 1;
}

void Conn::start() {
  if (finished_ || connected_ || cycle_pending_) return;
  wbuf_next_ = b_.hello();  // keeps the reserved capacity; the H line never gets a reply
  if (b_.options().mode == Mode::connect_per_lookup) {
    // Queued before connecting, so a failed connect counts it as lost instead of leaking it.
    if (!b_.take_request()) return finish();
    append_request();
  } else if (b_.stopping()) {
    return finish();
  }
  connect();
}

void Conn::connect() {
  connect_start_ = Clock::now();
  unsigned gen = ++generation_;
  connected_ = true;  // "busy": a connect is under way
  socket_.async_connect(b_.endpoint(), [this, gen](const error_code& ec) {
    if (gen == generation_) on_connect(ec);
  });
}

void Conn::on_connect(const error_code& ec) {
  if (ec) return fail("connect", ec);
  if (b_.options().mode == Mode::persistent) {
    fill();
    if (in_flight() == 0 && b_.stopping()) return stop_if_idle();
  }
  flush();
  start_read();
}

void Conn::append_request() {
  const Options& o = b_.options();
  bool userdb = o.keys == Keys::userdb || (o.keys == Keys::mixed && (request_seq_ & 1));
  if (!userdb || o.keys != Keys::mixed) current_user_ = next_user();
  ++request_seq_;
  std::string& w = wbuf_next_;
  w += userdb ? "Lshared/userdb/" : "Lshared/passdb/";
  b_.append_login(w, current_user_);
  w += '\t';
  b_.append_login(w, current_user_);
  w += '\n';
  at(tail_) = Pending{Clock::time_point{}, 0, current_user_, userdb, false};
  ++tail_;
}

void Conn::fill() {
  std::uint64_t depth = b_.options().depth;
  while (in_flight() < depth && b_.take_request()) append_request();
}

void Conn::flush() {
  if (writing_ || wbuf_next_.empty()) return;
  Clock::time_point now = b_.options().mode == Mode::connect_per_lookup ? connect_start_ : Clock::now();
  for (; stamped_ < tail_; ++stamped_) at(stamped_).sent = now;
  wbuf_.swap(wbuf_next_);
  wbuf_next_.clear();
  writing_ = true;
  unsigned gen = generation_;
  asio::async_write(socket_, asio::buffer(wbuf_), [this, gen](const error_code& ec, std::size_t) {
    if (gen == generation_) on_write(ec);
  });
}

void Conn::on_write(const error_code& ec) {
  writing_ = false;
  if (ec) return fail("write", ec);
  if (cycle_pending_) return after_cycle();
  flush();
}

void Conn::start_read() {
  if (rlen_ == rbuf_.size()) rbuf_.resize(rbuf_.size() * 2);  // a reply longer than the buffer
  unsigned gen = generation_;
  socket_.async_read_some(asio::buffer(rbuf_.data() + rlen_, rbuf_.size() - rlen_),
                          [this, gen](const error_code& ec, std::size_t n) {
                            if (gen == generation_) on_read(ec, n);
                          });
}

void Conn::on_read(const error_code& ec, std::size_t n) {
  if (ec) return fail(ec == asio::error::eof ? "server closed the connection" : "read", ec);
  rlen_ += n;
  Clock::time_point now = Clock::now();  // one clock read for all replies of this chunk
  char* data = rbuf_.data();
  std::size_t pos = 0;
  while (pos < rlen_) {
    auto* lf = static_cast<char*>(std::memchr(data + pos, '\n', rlen_ - pos));
    if (!lf) break;
    std::size_t end = static_cast<std::size_t>(lf - data);
    if (!handle_line(std::string_view(data + pos, end - pos), now)) return;
    pos = end + 1;
  }
  if (pos) {
    std::memmove(data, data + pos, rlen_ - pos);
    rlen_ -= pos;
  }
  if (b_.options().mode == Mode::connect_per_lookup) {
    if (in_flight() == 0) {
      cycle_pending_ = true;
      if (!writing_) after_cycle();
      return;
    }
  } else {
    fill();
    flush();
    if (in_flight() == 0 && b_.stopping()) return stop_if_idle();
  }
  start_read();
}

// Dovecot's client rules (specs/dovecot.md §1.4): '*<n>' names the oldest command without an
// id, '+<n>\t<reply>' answers the command with that id, anything else answers the oldest one.
bool Conn::handle_line(std::string_view line, Clock::time_point now) {
  if (line.empty()) {
    b_.io_error("empty reply line", {}, 0);
    fail("protocol");
    return false;
  }
  char c = line[0];
  if (c == '*' || c == '+') {
    std::uint32_t id = 0;
    const char* first = line.data() + 1;
    const char* last = line.data() + line.size();
    auto [p, ec] = std::from_chars(first, last, id);
    if (ec != std::errc() || p == first || id == 0) {
      b_.error_detail("bad async id line", false, 0, line);
      fail("protocol");
      return false;
    }
    if (c == '*') {
      unassigned_ = std::max(unassigned_, head_);
      while (unassigned_ < tail_ && at(unassigned_).done) ++unassigned_;
      if (unassigned_ == tail_ || p != last) {
        b_.error_detail("unexpected async id", false, 0, line);
        fail("protocol");
        return false;
      }
      at(unassigned_++).id = id;
      return true;
    }
    if (p == last || *p != '\t' || p + 1 == last) {
      b_.error_detail("bad async reply", false, 0, line);
      fail("protocol");
      return false;
    }
    for (std::uint64_t s = head_; s < tail_; ++s) {
      Pending& e = at(s);
      if (!e.done && e.id == id) return complete(s, p[1], std::string_view(p + 1, last - p - 1), now);
    }
    b_.error_detail("reply for unknown async id", false, 0, line);
    fail("protocol");
    return false;
  }
  if (head_ == tail_) {
    b_.error_detail("reply without a pending request", false, 0, line);
    fail("protocol");
    return false;
  }
  return complete(head_, c, line, now);
}

bool Conn::complete(std::uint64_t seq, char code, std::string_view line, Clock::time_point now) {
  Pending& e = at(seq);
  e.done = true;
  failures_ = 0;
  b_.count_reply(code, line, e.userdb, e.user);
  Clock::time_point sent = e.sent;
  while (head_ < tail_ && at(head_).done) ++head_;
  b_.on_done(now, sent, false);
  return true;
}

void Conn::after_cycle() {
  cycle_pending_ = false;
  socket_.close();  // like Dovecot auth: close as soon as the reply is in
  ++generation_;
  connected_ = false;
  rlen_ = 0;
  start();
}

void Conn::fail(const char* what, const error_code& ec) {
  std::uint64_t lost = 0;
  for (std::uint64_t s = head_; s < tail_; ++s) lost += !at(s).done;
  head_ = tail_ = unassigned_ = stamped_ = 0;
  error_code ignored;
  socket_.close(ignored);
  ++generation_;
  connected_ = writing_ = cycle_pending_ = false;
  rlen_ = 0;
  wbuf_next_.clear();
  b_.io_error(what, ec, lost);
  Clock::time_point now = Clock::now();
  for (std::uint64_t i = 0; i < lost; ++i) b_.on_done(now, now, true);
  if (b_.stopping()) return finish();
  if (++failures_ >= 30) {
    std::fprintf(stderr, "maildict-bench: giving up on %s after %u failures without a reply\n",
                 b_.options().socket_path.c_str(), failures_);
    return finish();
  }
  // Pause before reconnecting so that a dead server costs errors, not a busy loop.
  retry_.expires_after(std::chrono::milliseconds(100));
  retry_.async_wait([this](const error_code& e) {
    if (!e) start();
  });
}

void Conn::stop_if_idle() {
  if (finished_) return;
  if (b_.options().mode == Mode::connect_per_lookup) {
    if (!connected_ && !cycle_pending_) finish();  // waiting to retry
    return;                                         // a lookup under way finishes on its own
  }
  if (in_flight() != 0) return;
  error_code ignored;
  socket_.close(ignored);
  ++generation_;
  connected_ = writing_ = false;
  finish();
}

void Conn::abandon() {
  if (finished_) return;
  if (in_flight() == 0 && !connected_) return finish();
  fail("no reply before the drain timeout");
}

void Conn::finish() {
  if (finished_) return;
  finished_ = true;
  retry_.cancel();
  b_.conn_finished();
}


// ---- smtpd-table mode -----------------------------------------------------------------------
// Drives OpenSMTPD table programs over smtpd's imsg protocol (specs/smtpd-tables.md §2, §3): the
// program is spawned as smtpd's lookup process spawns it, and every table process has exactly
// one request outstanding, as smtpd blocks on each answer. Plain poll(2): the asio machinery of
// the dict modes buys nothing for one small message at a time.

namespace imsg = maildict::smtpd::imsg;
using maildict::smtpd::Service;

template <class T>
void put(std::string& out, T v) {
  char bytes[sizeof v];
  std::memcpy(bytes, &v, sizeof v);
  out.append(bytes, sizeof v);
}

template <class T>
T get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// imsg header: type, total length, flags 0, peerid 0, our pid (smtpd puts its lookup pid).
void put_header(std::string& out, imsg::MessageType type, std::size_t total) {
  put<std::uint32_t>(out, static_cast<std::uint32_t>(type));
  put<std::uint16_t>(out, static_cast<std::uint16_t>(total));
  put<std::uint16_t>(out, 0);
  put<std::uint32_t>(out, 0);
  put<std::uint32_t>(out, static_cast<std::uint32_t>(::getpid()));
}

// OPEN: struct table_open_params { uint32 version; char name[LINE_MAX]; }, 2068 bytes in all.
std::string open_message(const std::string& name) {
  constexpr std::size_t kLineMax = 2048;
  std::string out;
  put_header(out, imsg::MessageType::open, imsg::header_size + 4 + kLineMax);
  put<std::uint32_t>(out, imsg::api_version);
  out += name;
  out.append(kLineMax - name.size(), '\0');
  return out;
}

// CHECK/LOOKUP: int service, size_t params count (0, as smtpd sends), key, NUL.
void put_query(std::string& out, imsg::MessageType type, Service service, std::string_view key) {
  put_header(out, type, imsg::header_size + sizeof(std::uint32_t) + sizeof(std::size_t) + key.size() + 1);
  put<std::uint32_t>(out, static_cast<std::uint32_t>(service));
  put<std::size_t>(out, 0);
  out += key;
  out += '\0';
}

const char* service_label(Service s) {
  switch (s) {
    case Service::alias: return "alias";
    case Service::domain: return "domain";
    case Service::credentials: return "credentials";
    case Service::userinfo: return "userinfo";
    default: return "other";
  }
}

// CPU ticks (user + system) of a process, from /proc; 0 when it cannot be read.
std::uint64_t process_ticks(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  FILE* f = std::fopen(path, "r");
  if (!f) return 0;
  char buf[1024];
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // The command name may hold spaces: fields are counted after its closing parenthesis.
  const char* p = std::strrchr(buf, ')');
  if (!p) return 0;
  unsigned long long utime = 0, stime = 0;
  // after ")": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15)
  if (std::sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2) return 0;
  return utime + stime;
}

class TableBench {
 public:
  explicit TableBench(Options o) : o_(std::move(o)) {
    if (auto p = o_.user_format.find("%u"); p != std::string::npos) {
      user_prefix_ = o_.user_format.substr(0, p);
      user_suffix_ = o_.user_format.substr(p + 2);
    } else {
      user_prefix_ = o_.user_format;
      no_number_ = true;
    }
    if (o_.requests) {
      warm_n_ = static_cast<std::uint64_t>(o_.warmup);
      issue_limit_ = warm_n_ + o_.requests;
    }
    std::uint64_t z = o_.seed * 0x9E3779B97F4A7C15ull + 1;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    rng_ = (z ^ (z >> 31)) | 1;
    self_check();
  }

  ~TableBench() { stop_all(); }

  int run() {
    for (unsigned i = 0; i < o_.connections; ++i) {
      slots_.emplace_back();
      if (!spawn(slots_.back())) return report();
    }
    for (Slot& s : slots_)
      if (!open_table(s)) return report();

    const auto start = Clock::now();
    const auto to_duration = [](double secs) {
      return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(secs));
    };
    Clock::time_point warm_end{}, run_end{};
    if (!o_.requests) {
      warm_end = start + to_duration(o_.warmup);
      run_end = warm_end + to_duration(o_.duration);
      if (o_.warmup <= 0) begin_measuring(start);
    } else if (warm_n_ == 0) {
      begin_measuring(start);
    }
    const auto reply_timeout = to_duration(o_.reply_timeout);

    std::vector<pollfd> fds;
    std::vector<Slot*> polled;
    for (;;) {
      Clock::time_point now = Clock::now();
      if (!o_.requests) {
        if (!measuring_ && !stopping_ && now >= warm_end) begin_measuring(now);
        if (measuring_ && now >= run_end) end_measuring(now);
      }
      fds.clear();
      polled.clear();
      int wait_ms = -1;
      for (Slot& s : slots_) {
        if (s.dead) continue;
        if (!s.busy && !send_next(s, now)) continue;
        if (now - s.sent >= reply_timeout) {
          kill_slot(s, "no reply before --reply-timeout");
          continue;
        }
        fds.push_back(pollfd{s.fd, POLLIN, 0});
        polled.push_back(&s);
        wait_ms = min_wait(wait_ms, s.sent + reply_timeout - now);
      }
      if (fds.empty()) break;
      if (!o_.requests && !stopping_) wait_ms = min_wait(wait_ms, (measuring_ ? run_end : warm_end) - now);
      int n = ::poll(fds.data(), fds.size(), wait_ms);
      if (n < 0) {
        if (errno == EINTR) continue;
        std::fprintf(stderr, "maildict-bench: poll: %s\n", std::strerror(errno));
        break;
      }
      if (n == 0) continue;
      now = Clock::now();  // one clock read for all replies of this wake-up
      for (std::size_t i = 0; i < fds.size(); ++i)
        if (fds[i].revents) on_readable(*polled[i], now);
    }
    if (measuring_) end_measuring(Clock::now());
    return report();
  }

 private:
  static constexpr unsigned kMaxReported = 5;

  struct Slot {
    pid_t pid = -1;
    int fd = -1;
    bool dead = false;
    bool busy = false;
    std::string rbuf;
    std::size_t rlen = 0;
    Clock::time_point sent{};
    Service service = Service::alias;
    bool check = false;
    std::uint32_t user = 0;
    std::uint64_t seq = 0;  // requests sent, for --service mixed
    std::string key;
    std::uint64_t ticks_start = 0;
  };

  static int min_wait(int current, Clock::duration left) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(left).count() + 1;
    if (ms < 0) ms = 0;
    if (ms > 1000) ms = 1000;
    return current < 0 ? static_cast<int>(ms) : std::min(current, static_cast<int>(ms));
  }

  // The bench's request encoder must build what smtpd builds: checked once against the
  // project's own decoder (the one table-maildict uses).
  void self_check() const {
    std::string m;
    put_query(m, imsg::MessageType::lookup, Service::alias, "bob@example.org");
    auto d = imsg::decode_message(m);
    const auto* r = std::get_if<imsg::Request>(&d);
    const auto* q = r ? std::get_if<imsg::Query>(r) : nullptr;
    auto open = imsg::decode_message(open_message(o_.table_name));
    const auto* ro = std::get_if<imsg::Request>(&open);
    const auto* op = ro ? std::get_if<imsg::Open>(ro) : nullptr;
    if (!q || q->op != maildict::smtpd::Operation::lookup || q->service != Service::alias ||
        q->key != "bob@example.org" || m.size() != 0x2c || !op || op->table_name != o_.table_name) {
      std::fprintf(stderr, "maildict-bench: internal error: the imsg request encoder disagrees with the codec\n");
      std::exit(1);
    }
  }

  bool spawn(Slot& s) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
      std::fprintf(stderr, "maildict-bench: socketpair: %s\n", std::strerror(errno));
      ++errors_;
      return false;
    }
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) {
      std::fprintf(stderr, "maildict-bench: fork: %s\n", std::strerror(errno));
      ::close(sv[0]);
      ::close(sv[1]);
      ++errors_;
      return false;
    }
    if (pid == 0) {
      // As smtpd <= 7.5 does it: the socket on fd 0, fd 1 not the socket (/dev/null, as under
      // a daemonized smtpd), fd 2 inherited, everything else closed, execl without a shell.
      ::dup2(sv[1], 0);
      int devnull = ::open("/dev/null", O_WRONLY);
      if (devnull >= 0) ::dup2(devnull, 1);
      ::closefrom(3);
      if (o_.has_table_config)
        ::execl(o_.table_program.c_str(), o_.table_name.c_str(), o_.table_config.c_str(), static_cast<char*>(nullptr));
      else
        ::execl(o_.table_program.c_str(), o_.table_name.c_str(), static_cast<char*>(nullptr));
      std::fprintf(stderr, "maildict-bench: cannot run %s: %s\n", o_.table_program.c_str(), std::strerror(errno));
      ::_exit(127);
    }
    ::close(sv[1]);
    s.pid = pid;
    s.fd = sv[0];
    s.rbuf.resize(imsg::max_message_size * 2);
    return true;
  }

  // OPEN and its reply: OK with an empty payload, as smtpd insists.
  bool open_table(Slot& s) {
    if (!write_all(s, open_message(o_.table_name))) return false;
    auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.reply_timeout));
    for (;;) {
      if (s.rlen >= imsg::header_size) {
        auto len = get<std::uint16_t>(s.rbuf.data() + 4);
        if (s.rlen >= len) {
          auto type = get<std::uint32_t>(s.rbuf.data());
          if (type != static_cast<std::uint32_t>(imsg::MessageType::ok) || len != imsg::header_size || s.rlen != len) {
            kill_slot(s, "bad reply to OPEN (smtpd would exit)");
            return false;
          }
          s.rlen = 0;
          return true;
        }
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) {
        kill_slot(s, "no reply to OPEN before --reply-timeout");
        return false;
      }
      pollfd p{s.fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) < 0 && errno != EINTR) {
        kill_slot(s, "poll");
        return false;
      }
      if (p.revents && !read_some(s)) return false;
    }
  }

  bool write_all(Slot& s, std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::write(s.fd, bytes.data(), bytes.size());
      if (n > 0) {
        bytes.remove_prefix(static_cast<std::size_t>(n));
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        kill_slot(s, n < 0 ? std::strerror(errno) : "write wrote nothing");
        return false;
      }
    }
    return true;
  }

  // Appends what is readable; false (the slot is dead) on EOF or an error.
  bool read_some(Slot& s) {
    if (s.rlen == s.rbuf.size()) {
      kill_slot(s, "reply larger than an imsg can be (smtpd would exit)");
      return false;
    }
    for (;;) {
      ssize_t n = ::read(s.fd, s.rbuf.data() + s.rlen, s.rbuf.size() - s.rlen);
      if (n > 0) {
        s.rlen += static_cast<std::size_t>(n);
        return true;
      }
      if (n < 0 && errno == EINTR) continue;
      kill_slot(s, n == 0 ? "the table program closed its socket (smtpd would exit)" : std::strerror(errno));
      return false;
    }
  }

  std::uint32_t next_user() {
    if (!o_.random_order) {
      auto u = static_cast<std::uint32_t>(seq_user_ % o_.users) + 1;
      ++seq_user_;
      return u;
    }
    rng_ ^= rng_ << 13;
    rng_ ^= rng_ >> 7;
    rng_ ^= rng_ << 17;
    return static_cast<std::uint32_t>(rng_ % o_.users) + 1;
  }

  void make_key(Slot& s) {
    std::string login = user_prefix_;
    if (!no_number_) {
      login += std::to_string(s.user);
      login += user_suffix_;
    }
    for (char& c : login)  // smtpd lower-cases every key before sending it (§5.1)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    auto at = login.rfind('@');
    switch (s.service) {
      case Service::userinfo:
        if (at != std::string::npos) login[at] = '_';
        s.key = std::move(login);
        break;
      case Service::domain:
        s.key = at == std::string::npos ? std::move(login) : login.substr(at + 1);
        break;
      default:
        s.key = std::move(login);
    }
  }

  bool send_next(Slot& s, Clock::time_point now) {
    if (stopping_ || issued_ >= issue_limit_) return false;
    ++issued_;
    static constexpr Service kMixed[] = {Service::domain, Service::alias, Service::userinfo, Service::credentials};
    switch (o_.service) {
      case TableService::alias: s.service = Service::alias; break;
      case TableService::credentials: s.service = Service::credentials; break;
      case TableService::userinfo: s.service = Service::userinfo; break;
      case TableService::domain: s.service = Service::domain; break;
      case TableService::mixed: s.service = kMixed[s.seq % 4]; break;
    }
    if (o_.service != TableService::mixed || s.seq % 4 == 0) s.user = next_user();
    ++s.seq;
    s.check = s.service == Service::domain;
    make_key(s);
    wbuf_.clear();
    put_query(wbuf_, s.check ? imsg::MessageType::check : imsg::MessageType::lookup, s.service, s.key);
    s.sent = now;
    s.busy = true;
    if (!write_all(s, wbuf_)) return false;
    s.sent = Clock::now();
    return true;
  }

  void on_readable(Slot& s, Clock::time_point now) {
    if (!read_some(s)) return;
    if (s.rlen < imsg::header_size) return;
    const char* p = s.rbuf.data();
    const auto type = get<std::uint32_t>(p);
    const auto len = get<std::uint16_t>(p + 4);
    if (len < imsg::header_size || len > imsg::max_message_size) {
      return kill_slot(s, "reply with a bad imsg length (smtpd would exit)");
    }
    if (s.rlen < len) return;
    if (s.rlen > len) return kill_slot(s, "bytes after the reply (an unsolicited message; smtpd would exit)");
    s.rlen = 0;
    s.busy = false;
    if (type != static_cast<std::uint32_t>(imsg::MessageType::ok))
      return kill_slot(s, "reply type is not OK (smtpd would exit)");
    std::string_view payload(p + imsg::header_size, len - imsg::header_size);
    // smtpd's table_proc rules (§3.4): an int status; a value with its NUL if and only if
    // a lookup found something; a check reply is exactly the int.
    if (payload.size() < 4) return kill_slot(s, "reply without a status (smtpd would exit)");
    const auto r = get<std::int32_t>(payload.data());
    std::string_view value = payload.substr(4);
    const char* problem = nullptr;
    if (r != 1 && r != 0 && r != -1) problem = "status is not 1, 0 or -1";
    else if (s.check && !value.empty()) problem = "check reply with bytes after the status (smtpd would exit)";
    else if (!s.check && r != 1 && !value.empty()) problem = "value after a status other than found (smtpd would exit)";
    else if (!s.check && r == 1 && value.empty()) problem = "found without a value (smtpd would exit)";
    else if (!s.check && r == 1 && value.back() != '\0') problem = "value not NUL-terminated (smtpd would exit)";
    if (!value.empty() && value.back() == '\0') value.remove_suffix(1);
    if (replies_printed_ < o_.print_replies) {
      ++replies_printed_;
      std::fprintf(stderr, "maildict-bench: %s %s %s -> %d%s%.*s\n", s.check ? "check" : "lookup",
                   service_label(s.service), s.key.c_str(), r, value.empty() ? "" : " ",
                   static_cast<int>(value.size()), value.data());
    }
    if (problem) return kill_slot(s, problem);
    if (measuring_) hist_.add(static_cast<std::uint64_t>((now - s.sent).count()));
    ++done_total_;
    if (r == 1) {
      ++found_;
    } else if (r == 0) {
      ++notfound_;
      if (o_.expect_found) detail(s, "not found");
    } else {
      ++failed_;
      detail(s, "temporary failure (-1)");
    }
    if (o_.requests) {
      if (!measuring_ && !stopping_ && done_total_ == warm_n_) begin_measuring(now);
      else if (measuring_ && done_total_ == issue_limit_) end_measuring(now);
    }
  }

  void detail(const Slot& s, const char* what) {
    ++errors_;
    if (++reported_ > kMaxReported) return;
    std::fprintf(stderr, "maildict-bench: %s for %s %s %s\n", what, s.check ? "check" : "lookup",
                 service_label(s.service), s.key.c_str());
  }

  void kill_slot(Slot& s, const char* why) {
    if (s.dead) return;
    ++errors_;  // the request in flight, or the failure itself
    if (++reported_ <= kMaxReported)
      std::fprintf(stderr, "maildict-bench: table process %d: %s%s%s\n", static_cast<int>(s.pid), why,
                   s.busy ? ", lost request: " : "", s.busy ? s.key.c_str() : "");
    s.busy = false;
    s.dead = true;
    stop(s);
  }

  // EOF on its fd 0 is how smtpd ends a table program (§2.3); a program that does not leave
  // within 2 s gets SIGTERM, then SIGKILL. Only the bench's own children, by pid.
  void stop(Slot& s) {
    if (s.fd >= 0) {
      ::close(s.fd);
      s.fd = -1;
    }
    if (s.pid <= 0) return;
    int status = 0;
    for (int i = 0; i < 200; ++i) {
      if (::waitpid(s.pid, &status, WNOHANG) == s.pid) {
        s.pid = -1;
        return;
      }
      ::usleep(10000);
      if (i == 100) ::kill(s.pid, SIGTERM);
    }
    ::kill(s.pid, SIGKILL);
    ::waitpid(s.pid, &status, 0);
    s.pid = -1;
  }

  void stop_all() {
    for (Slot& s : slots_) stop(s);
  }

  void begin_measuring(Clock::time_point now) {
    measuring_ = true;
    hist_.reset();
    t_start_ = now;
    cpu_start_ = cpu_seconds();
    for (Slot& s : slots_) s.ticks_start = s.pid > 0 ? process_ticks(s.pid) : 0;
  }

  void end_measuring(Clock::time_point now) {
    measuring_ = false;
    stopping_ = true;
    t_end_ = now;
    cpu_end_ = cpu_seconds();
    table_ticks_ = 0;
    for (Slot& s : slots_)
      if (s.pid > 0 && !s.dead) table_ticks_ += process_ticks(s.pid) - s.ticks_start;
  }

  int report() {
    if (!t_end_.time_since_epoch().count()) {
      t_end_ = Clock::now();
      cpu_end_ = cpu_seconds();
    }
    stop_all();
    double secs = t_start_.time_since_epoch().count() ? std::chrono::duration<double>(t_end_ - t_start_).count() : 0.0;
    std::uint64_t n = hist_.total();
    double rate = secs > 0 ? static_cast<double>(n) / secs : 0;
    double cpu_per_10k = n ? (cpu_end_ - cpu_start_) * 1000.0 * 10000.0 / static_cast<double>(n) : 0;
    double table_per_10k =
        n ? static_cast<double>(table_ticks_) * 1000.0 / static_cast<double>(::sysconf(_SC_CLK_TCK)) * 10000.0 /
                static_cast<double>(n)
          : 0;
    std::printf(
        "%s c=%u d=1 requests=%llu secs=%.2f lookups/s=%.0f p50_us=%.0f p99_us=%.0f p999_us=%.0f "
        "max_us=%.0f errors=%llu notfound=%llu failed=%llu bench_cpu_ms_per_10k=%.1f table_cpu_ms_per_10k=%.1f\n",
        o_.label.c_str(), o_.connections, static_cast<unsigned long long>(n), secs, rate,
        hist_.quantile(0.50) / 1000, hist_.quantile(0.99) / 1000, hist_.quantile(0.999) / 1000,
        static_cast<double>(hist_.max()) / 1000, static_cast<unsigned long long>(errors_),
        static_cast<unsigned long long>(notfound_), static_cast<unsigned long long>(failed_), cpu_per_10k,
        table_per_10k);
    std::fflush(stdout);
    return errors_ || n == 0 ? 1 : 0;
  }

  Options o_;
  std::vector<Slot> slots_;
  std::string user_prefix_, user_suffix_;
  bool no_number_ = false;
  std::string wbuf_;
  std::uint64_t rng_;
  std::uint64_t seq_user_ = 0;
  bool measuring_ = false;
  bool stopping_ = false;
  std::uint64_t issued_ = 0;
  std::uint64_t issue_limit_ = UINT64_MAX;
  std::uint64_t warm_n_ = 0;
  std::uint64_t done_total_ = 0;
  Histogram hist_;
  std::uint64_t found_ = 0, notfound_ = 0, failed_ = 0, errors_ = 0;
  unsigned reported_ = 0;
  std::uint64_t replies_printed_ = 0;
  Clock::time_point t_start_{}, t_end_{};
  double cpu_start_ = 0, cpu_end_ = 0;
  std::uint64_t table_ticks_ = 0;
};

}  // namespace

// ---- policy mode ---------------------------------------------------------------------------
// One thread, poll(2), non-blocking TCP sockets, one request outstanding per connection (the
// Dovecot 2.3 policy client does not pipeline).
namespace {

class PolicyBench {
 public:
  explicit PolicyBench(Options o) : o_(std::move(o)) {
    auto colon = o_.policy_address.rfind(':');
    if (colon == std::string::npos) usage_error("--policy-address must be HOST:PORT");
    addr_.sin_family = AF_INET;
    addr_.sin_port = htons(parse_number<std::uint16_t>(std::string_view(o_.policy_address).substr(colon + 1),
                                                       "--policy-address"));
    if (::inet_pton(AF_INET, o_.policy_address.substr(0, colon).c_str(), &addr_.sin_addr) != 1)
      usage_error("--policy-address must be an IPv4 HOST:PORT");
    if (auto p = o_.user_format.find("%u"); p != std::string::npos) {
      user_prefix_ = o_.user_format.substr(0, p);
      user_suffix_ = o_.user_format.substr(p + 2);
    } else {
      user_prefix_ = o_.user_format;
    }
    rng_ = o_.seed * 0x9E3779B97F4A7C15ull + 1;
  }

  ~PolicyBench() {
    for (auto& c : conns_)
      if (c.fd >= 0) ::close(c.fd);
  }

  int run() {
    conns_.resize(o_.connections);
    for (auto& c : conns_) {
      c.fd = ::socket(AF_INET, SOCK_STREAM, 0);
      int one = 1;
      ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (c.fd < 0 || ::connect(c.fd, reinterpret_cast<sockaddr*>(&addr_), sizeof addr_) != 0) {
        std::fprintf(stderr, "maildict-bench: cannot connect to %s: %s\n", o_.policy_address.c_str(),
                     std::strerror(errno));
        return 1;
      }
      ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) | O_NONBLOCK);
    }
    const auto to_duration = [](double secs) {
      return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(secs));
    };
    const auto start = Clock::now();
    Clock::time_point warm_end = start, run_end = Clock::time_point::max();
    std::uint64_t warm_n = 0, limit = UINT64_MAX;
    if (o_.requests) {
      warm_n = static_cast<std::uint64_t>(o_.warmup);
      limit = warm_n + o_.requests;
    } else {
      warm_end = start + to_duration(o_.warmup);
      run_end = warm_end + to_duration(o_.duration);
    }
    for (auto& c : conns_) send_next(c);
    std::vector<pollfd> fds(conns_.size());
    bool measuring = false;
    for (;;) {
      auto now = Clock::now();
      if (!measuring && ((o_.requests && done_ >= warm_n) || (!o_.requests && now >= warm_end))) {
        measuring = true;
        hist_.reset();
        measured_ = allows_measured_ = 0;
        t_start_ = now;
        cpu_start_ = cpu_seconds();
      }
      if ((o_.requests && done_ >= limit) || now >= run_end || errors_ > 100) break;
      for (std::size_t i = 0; i < conns_.size(); ++i) {
        fds[i].fd = conns_[i].fd;
        fds[i].events = conns_[i].out.size() > conns_[i].sent ? POLLOUT : POLLIN;
        fds[i].revents = 0;
      }
      if (::poll(fds.data(), fds.size(), 100) < 0 && errno != EINTR) break;
      now = Clock::now();
      for (std::size_t i = 0; i < conns_.size(); ++i) {
        if (!fds[i].revents) continue;
        Conn& c = conns_[i];
        if (c.out.size() > c.sent) {
          auto n = ::write(c.fd, c.out.data() + c.sent, c.out.size() - c.sent);
          if (n < 0 && errno != EAGAIN) return fail("write", c);
          if (n > 0) c.sent += static_cast<std::size_t>(n);
          continue;
        }
        char buf[4096];
        auto n = ::read(c.fd, buf, sizeof buf);
        if (n == 0) return fail("server closed the connection", c);
        if (n < 0) {
          if (errno == EAGAIN) continue;
          return fail("read", c);
        }
        c.in.append(buf, static_cast<std::size_t>(n));
        if (!complete(c)) continue;
        ++done_;
        if (measuring) {
          hist_.add(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now - c.sent_at).count()));
          ++measured_;
          if (c.was_allow) ++allows_measured_;
        }
        send_next(c);
      }
    }
    t_end_ = Clock::now();
    double cpu = cpu_seconds() - cpu_start_;
    double secs = std::chrono::duration<double>(t_end_ - t_start_).count();
    std::printf(
        "%s c=%u requests=%llu secs=%.2f lookups/s=%.0f decisions/s=%.0f p50_us=%.0f p99_us=%.0f p999_us=%.0f "
        "max_us=%.0f errors=%llu allow=%llu tarpit=%llu reject=%llu bench_cpu_ms_per_10k=%.1f\n",
        o_.label.c_str(), o_.connections, static_cast<unsigned long long>(measured_), secs,
        secs > 0 ? static_cast<double>(measured_) / secs : 0.0,
        secs > 0 ? static_cast<double>(allows_measured_) / secs : 0.0, hist_.quantile(0.5) / 1000,
        hist_.quantile(0.99) / 1000, hist_.quantile(0.999) / 1000, static_cast<double>(hist_.max()) / 1000,
        static_cast<unsigned long long>(errors_), static_cast<unsigned long long>(allow_),
        static_cast<unsigned long long>(tarpit_), static_cast<unsigned long long>(reject_),
        measured_ ? cpu * 1000 * 10000 / static_cast<double>(measured_) : 0.0);
    return errors_ ? 1 : 0;
  }

 private:
  struct Conn {
    int fd = -1;
    std::string out, in;
    std::size_t sent = 0;
    Clock::time_point sent_at;
    bool was_allow = false;
    bool next_is_allow = true;
    std::uint64_t user = 0;
    bool success = true;
    unsigned pwhash = 0;
  };

  std::uint64_t next_rand() {
    rng_ ^= rng_ << 13;
    rng_ ^= rng_ >> 7;
    rng_ ^= rng_ << 17;
    return rng_;
  }

  void send_next(Conn& c) {
    bool allow = c.next_is_allow;
    if (allow) {
      c.user = next_rand() % o_.users + 1;
      c.success = next_rand() % 10 != 0;
      c.pwhash = static_cast<unsigned>(c.success ? c.user & 0xfff : next_rand() & 0xfff);
    }
    char ip[32], pw[8];
    std::snprintf(ip, sizeof ip, "10.%u.%u.%u", unsigned(c.user >> 16 & 255), unsigned(c.user >> 8 & 255),
                  unsigned(c.user & 255));
    std::snprintf(pw, sizeof pw, "%04x", c.pwhash);
    std::string body = "{\"device_id\":\"\",\"login\":\"" + user_prefix_ + std::to_string(c.user) + user_suffix_ +
                       "\",\"protocol\":\"imap\",\"pwhash\":\"" + pw + "\",\"remote\":\"" + ip +
                       "\",\"session_id\":\"bench\"";
    if (!allow) body += std::string(",\"success\":") + (c.success ? "true" : "false") + ",\"policy_reject\":false";
    body += ",\"tls\":false}";
    c.out = std::string("POST /policy?command=") + (allow ? "allow" : "report") +
            " HTTP/1.1\r\nHost: policy\r\nUser-Agent: maildict-bench\r\nContent-Length: " +
            std::to_string(body.size()) + "\r\nConnection: Keep-Alive\r\nContent-Type: application/json\r\n";
    if (!o_.api_key.empty()) c.out += "X-API-Key: " + o_.api_key + "\r\n";
    c.out += "\r\n" + body;
    c.sent = 0;
    c.in.clear();
    c.was_allow = allow;
    c.next_is_allow = !allow;
    c.sent_at = Clock::now();
    auto n = ::write(c.fd, c.out.data(), c.out.size());
    if (n > 0) c.sent = static_cast<std::size_t>(n);
  }

  // True once a whole response is in; counts its status and decision.
  bool complete(Conn& c) {
    auto end = c.in.find("\r\n\r\n");
    if (end == std::string::npos) return false;
    std::size_t length = 0;
    auto cl = c.in.find("Content-Length: ");
    if (cl != std::string::npos && cl < end) length = std::strtoul(c.in.c_str() + cl + 16, nullptr, 10);
    if (c.in.size() < end + 4 + length) return false;
    int status = std::atoi(c.in.c_str() + 9);
    if (status < 200 || status > 209) {
      if (errors_++ < 3) std::fprintf(stderr, "maildict-bench: HTTP %d: %.200s\n", status, c.in.c_str());
    } else if (c.was_allow) {
      std::string_view body(c.in.data() + end + 4, length);
      if (body.starts_with("{\"status\":0,")) ++allow_;
      else if (body.starts_with("{\"status\":-")) ++reject_;
      else if (body.starts_with("{\"status\":")) ++tarpit_;
      else ++errors_;
    }
    return true;
  }

  int fail(const char* what, Conn&) {
    std::fprintf(stderr, "maildict-bench: %s: %s\n", what, std::strerror(errno));
    return 1;
  }

  Options o_;
  sockaddr_in addr_{};
  std::string user_prefix_, user_suffix_;
  std::uint64_t rng_;
  std::vector<Conn> conns_;
  Histogram hist_;
  std::uint64_t done_ = 0, measured_ = 0, allows_measured_ = 0;
  std::uint64_t errors_ = 0, allow_ = 0, tarpit_ = 0, reject_ = 0;
  Clock::time_point t_start_{}, t_end_{};
  double cpu_start_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  Options options = parse_options(argc, argv);
  try {
    if (options.mode == Mode::policy) {
      PolicyBench bench(std::move(options));
      return bench.run();
    }
    if (options.mode == Mode::smtpd_table) {
      TableBench bench(std::move(options));
      return bench.run();
    }
    Bench bench(std::move(options));
    return bench.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "maildict-bench: %s\n", e.what());
    return 1;
  }
}
