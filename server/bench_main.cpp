// maildict-bench: a load generator for the Dovecot dict ("proxy") protocol, used to compare
// maildictd with Dovecot's own dict server on the same machine (tests/bench/compare.sh).
//
// It runs on one thread because it shares a small machine with the server it measures: every
// cycle it spends is a cycle the server does not get. Hence plain callbacks instead of
// coroutines, one clock read per socket read or write instead of per request, buffers that
// are reused for the whole run and a fixed-size histogram.
#include <sys/resource.h>

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

namespace {

namespace asio = boost::asio;
using Socket = asio::local::stream_protocol::socket;
using Endpoint = asio::local::stream_protocol::endpoint;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

constexpr const char* kUsage = R"(usage: maildict-bench --socket PATH [options]

Sends dict-protocol lookups (Lshared/passdb/<login>\t<login>) to a dict server and prints one
result line: throughput, latency percentiles, errors and the bench tool's own CPU use.

  --socket PATH          UNIX socket of the dict server (required)
  --dict NAME            dict name sent in the H line (default: maildict)
  --connections C        concurrent connections (default: 1)
  --depth D              requests in flight per connection, persistent mode (default: 1)
  --requests N           measure N lookups ...
  --duration SECONDS     ... or measure for this long (default: 5 s)
  --warmup X             not measured: seconds with --duration (default 1), lookups with
                         --requests (default 10% of N)
  --mode MODE            persistent: C long-lived connections, D lookups in flight on each;
                         connect-per-lookup: C clients that each connect, send H and one L,
                         read the reply and close, over and over (Dovecot auth's default)
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

Result line (greppable key=value fields after the label):
  persistent c=8 d=1 requests=200000 secs=1.62 lookups/s=123456 p50_us=60 p99_us=180
  p999_us=400 max_us=900 errors=0 notfound=0 failed=0 bench_cpu_ms_per_10k=120.0
Latency runs from writing a request to reading its reply; with connect-per-lookup, from the
start of connect() to the reply. requests/secs/lookups/s/percentiles cover the measured window;
errors/notfound/failed cover the whole run including warm-up. Exit status: 0, or 1 when there
were errors, 2 on bad usage.
)";

enum class Mode { persistent, connect_per_lookup };
enum class Keys { passdb, userdb, mixed };

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
      else usage_error("--mode must be persistent or connect-per-lookup");
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
    } else {
      usage_error("unknown option " + arg);
    }
  }
  if (o.socket_path.empty()) usage_error("--socket is required");
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
    o.label = o.mode == Mode::persistent ? "persistent" : "connect-per-lookup";
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

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  Options options = parse_options(argc, argv);
  try {
    Bench bench(std::move(options));
    return bench.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "maildict-bench: %s\n", e.what());
    return 1;
  }
}
