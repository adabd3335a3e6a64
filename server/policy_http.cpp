// The only translation unit with Boost.Beast in it (it is slow to compile). Protocol work is in
// protocol/policy_codec, decisions in server/policy_engine, SQL in storage/policy_store; this
// file owns sockets, HTTP framing, limits, the API key and the persistence thread.
#include "server/policy_http.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <list>
#include <mutex>
#include <spdlog/spdlog.h>
#include <thread>
#include <type_traits>

#include "protocol/json_writer.hpp"
#include "server/metrics.hpp"
#include "server/unix_listener.hpp"
#include "storage/policy_store.hpp"

namespace maildict::server {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {

constexpr std::size_t max_pending_batches = 64;

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(WallClock::now().time_since_epoch()).count();
}

// ---- persistence ------------------------------------------------------------------------------

// Saves the engine's changes through a PolicyStore; one mutex serializes every use of the
// session, so the periodic thread and an admin request's immediate save can share it.
class Persistence {
 public:
  Persistence(PolicyEngine& engine, PolicyHttpServer::SessionFactory open, std::chrono::milliseconds interval)
      : engine_(engine), open_(std::move(open)), interval_(interval) {}

  ~Persistence() { stop(); }

  void start() {
    save_now();  // connects and reads the saved state back before the first request
    thread_ = std::thread([this] {
      // Saving thousands of keys is CPU work that can wait; answering Dovecot cannot. On a
      // small host the save would otherwise take the I/O thread's core for its whole run
      // (measured: p99 0.5 ms -> 1.5 ms at 8 clients while a save ran). Linux nices threads.
      ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
      loop();
    });
  }

  void stop() {
    {
      std::lock_guard lock(wake_mutex_);
      if (stopping_) return;
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // Saves what changed; true when everything (including earlier failed batches) is stored.
  bool save_now() {
    std::lock_guard lock(mutex_);
    if (!connect()) return false;
    auto changes = engine_.take_changes();
    if (!changes.empty()) {
      if (pending_.size() >= max_pending_batches) {
        pending_.erase(pending_.begin());
        spdlog::warn("policy: the database has refused policy state for a while; the oldest unsaved changes are dropped");
      }
      pending_.push_back(std::move(changes));
    }
    storage::SqlError err;
    while (!pending_.empty()) {
      session_->set_deadline(storage::Clock::now() + std::chrono::seconds(5));
      if (!store_->save(pending_.front(), err)) {
        trouble("cannot save the policy state: " + err.message);
        if (!session_->healthy()) disconnect();
        return false;
      }
      pending_.erase(pending_.begin());
    }
    if (++saves_ % 100 == 0) {
      // Rows of keys that the engine dropped without telling (evicted while the store was
      // unreachable, or left by a crash) are removed once their window has passed.
      session_->set_deadline(storage::Clock::now() + std::chrono::seconds(5));
      if (!store_->prune(wall_ms() - engine_.settings().window.count(), err))
        spdlog::debug("policy: pruning old state failed: {}", err.message);
    }
    if (troubled_) {
      spdlog::info("policy: the policy state is saved to the directory database again");
      troubled_ = false;
    }
    return true;
  }

 private:
  void loop() {
    std::unique_lock lock(wake_mutex_);
    while (!stopping_) {
      wake_.wait_for(lock, interval_, [this] { return stopping_; });
      lock.unlock();
      save_now();  // also the final save after stop
      lock.lock();
    }
  }

  void trouble(const std::string& what) {
    if (!troubled_ || what != last_trouble_)
      spdlog::warn("policy: {}; the policy state is kept in memory and saved when the database is back", what);
    troubled_ = true;
    last_trouble_ = what;
  }

  void disconnect() {
    store_.reset();
    session_.reset();
  }

  bool connect() {
    if (store_) return true;
    try {
      session_ = open_();
    } catch (const std::exception& e) {
      trouble(std::string("cannot open the directory database for the policy state: ") + e.what());
      return false;
    }
    if (!session_) return false;
    store_.emplace(*session_);
    storage::SqlError err;
    session_->set_deadline(storage::Clock::now() + std::chrono::seconds(5));
    if (!store_->prepare(err)) {
      trouble("cannot create the policy tables: " + err.message);
      disconnect();
      return false;
    }
    if (!loaded_) {
      std::vector<storage::PolicyBlockRow> blocks;
      std::vector<storage::PolicyCounterRow> counters;
      auto now = wall_ms();
      if (!store_->load_blocks(now, blocks, err) ||
          !store_->load_counters(now - engine_.settings().window.count(), engine_.settings().max_entries, counters,
                                 err)) {
        trouble("cannot read the saved policy state: " + err.message);
        disconnect();
        return false;
      }
      for (const auto& b : blocks) engine_.restore(b);
      for (const auto& c : counters) engine_.restore(c);
      loaded_ = true;
      spdlog::info("policy: read back {} block(s) and {} counter(s) from the directory database", blocks.size(),
                   counters.size());
    }
    return true;
  }

  PolicyEngine& engine_;
  PolicyHttpServer::SessionFactory open_;
  std::chrono::milliseconds interval_;
  std::mutex mutex_;
  std::unique_ptr<storage::SqlSession> session_;
  std::optional<storage::PolicyStore> store_;
  std::vector<storage::PolicyChanges> pending_;
  bool loaded_ = false;
  bool troubled_ = false;
  std::string last_trouble_;
  std::uint64_t saves_ = 0;

  std::mutex wake_mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

// ---- HTTP -------------------------------------------------------------------------------------

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

struct Shared {
  const conf::Config& config;
  PolicyEngine& engine;
  Persistence& persistence;
  asio::thread_pool& blocking;  // admin saves wait here, never on the I/O thread
  std::atomic<unsigned> connections{0};
  PassdbOutcomes* outcomes = nullptr;  // logins maildict could not look up just now
  std::list<class Connection*> sessions;  // every open connection (touched on the I/O thread only)
};

// How long after a failed passdb lookup Dovecot's report of that login is not counted. The
// report follows the lookup after auth_failure_delay (2 s by default) and any tarpit (at most
// policy_tarpit_max_seconds); a minute covers both with room to spare.
constexpr auto kOutageReportWindow = std::chrono::seconds(60);

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Takes as long wherever the first difference is (the key is a secret; its length is not).
bool same_secret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

Response make(const Request& req, http::status status, std::string body,
              std::string_view type = "application/json") {
  Response res{status, req.version()};
  res.set(http::field::server, "maildictd");
  if (!body.empty() || status != http::status::no_content) res.set(http::field::content_type, type);
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

Response error(const Request& req, int status, std::string_view message) {
  metrics().policy_bad_requests.inc();
  spdlog::debug("policy: {} {} -> {} ({})", std::string_view(req.method_string()),
                std::string_view(req.target()).substr(0, 128), status, message);
  return make(req, static_cast<http::status>(status), policy::encode_error(message));
}

std::string block_json(const PolicyBlock& b) {
  std::string out = "{\"kind\":";
  json::append_string(out, b.kind());
  out += ",\"target\":";
  json::append_string(out, b.target());
  out += ",\"reason\":";
  json::append_string(out, b.reason);
  out += ",\"created\":" + std::to_string(b.created_ms / 1000);
  out += ",\"expires\":" + (b.expires_ms ? std::to_string(b.expires_ms / 1000) : std::string("null"));
  out += "}";
  return out;
}

// What the accept loop needs to know of a connection to make room (see make_room()).
class Connection {
 public:
  virtual ~Connection() = default;
  // Waiting for a request (or in the middle of its head): may be closed to make room.
  virtual bool waiting() const = 0;
  // Has had a request answered: such a connection (Dovecot's, kept alive) is closed for room
  // only after every connection that has not.
  virtual bool served() const = 0;
  virtual std::chrono::steady_clock::time_point waiting_since() const = 0;
  virtual void evict() = 0;
};

// One HTTP connection, on TCP (policy_listen) or a UNIX socket (policy_socket).
template <class Protocol>
class Session : public Connection, public std::enable_shared_from_this<Session<Protocol>> {
 public:
  Session(typename Protocol::socket socket, Shared& shared)
      : stream_(std::move(socket)),
        shared_(shared),
        buffer_(shared.config.policy_max_header + shared.config.policy_max_body + 4096) {
    registered_ = shared_.sessions.insert(shared_.sessions.end(), this);
  }
  ~Session() {
    shared_.sessions.erase(registered_);
    --shared_.connections;
  }

  bool waiting() const override { return waiting_; }
  bool served() const override { return served_; }
  std::chrono::steady_clock::time_point waiting_since() const override { return waiting_since_; }
  void evict() override {
    waiting_ = false;
    stream_.cancel();  // the pending read ends with operation_aborted and the loop closes
  }

  asio::awaitable<void> run() {
    auto self = this->shared_from_this();
    const auto& c = shared_.config;
    const bool key_required = !c.policy_api_key.empty();
    bool keyed = !key_required;  // the connection has shown the API key
    for (;;) {
      // Waiting for a request. A new connection must deliver a complete request head within
      // policy_header_timeout of being accepted, a kept-alive one within that time of its first
      // byte (it may idle up to idle_timeout before): a client that connects and sends nothing,
      // or trickles a header, holds a slot for seconds, not minutes.
      waiting_ = true;
      waiting_since_ = std::chrono::steady_clock::now();
      auto head_deadline = waiting_since_ + c.policy_header_timeout;
      if (buffer_.size() == 0 && served_) {
        stream_.expires_after(c.idle_timeout);
        auto [ec, n] = co_await stream_.async_read_some(buffer_.prepare(4096), asio::as_tuple(asio::use_awaitable));
        if (ec) break;
        buffer_.commit(n);
        head_deadline = std::chrono::steady_clock::now() + c.policy_header_timeout;
      }
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(c.policy_max_header));
      parser.body_limit(c.policy_max_body);
      stream_.expires_at(head_deadline);
      auto [hec, hn] = co_await http::async_read_header(stream_, buffer_, parser, asio::as_tuple(asio::use_awaitable));
      waiting_ = false;
      if (hec) {
        if (hec == beast::error::timeout && !served_)
          spdlog::debug("policy: conn {}: no complete request within {} ms (policy_header_timeout); closing", remote_,
                        c.policy_header_timeout.count());
        co_await framing_error(hec);
        break;
      }
      // The API key is checked on the head alone: a policy or admin request without it is
      // answered 401 and closed before its body is read; a connection that has not shown the key
      // is never kept alive.
      if (!keyed) {
        if (key_ok(parser.get())) {
          keyed = true;
        } else if (needs_key(parser.get())) {
          co_await refuse(parser.get(), 401, "missing or wrong API key (policy_api_header)");
          break;
        }
      }
      stream_.expires_after(c.request_timeout);
      auto [ec, n] = co_await http::async_read(stream_, buffer_, parser, asio::as_tuple(asio::use_awaitable));
      if (ec) {
        co_await framing_error(ec);
        break;
      }
      Request req = parser.release();
      auto start = std::chrono::steady_clock::now();
      Response res = co_await handle(req);
      metrics().policy_latency.observe(std::chrono::steady_clock::now() - start);
      if (!keyed) res.keep_alive(false);  // /metrics without the key: one request per connection
      bool keep = res.keep_alive();
      stream_.expires_after(c.request_timeout);
      auto [wec, wn] = co_await http::async_write(stream_, res, asio::as_tuple(asio::use_awaitable));
      served_ = true;
      if (wec || !keep) break;
    }
    beast::error_code ignored;
    stream_.socket().shutdown(asio::socket_base::shutdown_send, ignored);
    stream_.close();
  }

  void set_remote(std::string r) { remote_ = std::move(r); }

 private:
  // A request that could not be read. Answers the framing errors a client should hear about
  // (4xx, then closes); a timeout, a reset or a close just ends the connection.
  asio::awaitable<void> framing_error(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted)
      co_return;
    int status = 400;
    std::string why = "malformed HTTP request: " + ec.message();
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      status = 431;
      why = "request header too large (policy_max_header)";
    } else if (ec == http::error::body_limit) {
      status = 413;
      why = "request body too large (policy_max_body)";
    }
    metrics().policy_bad_requests.inc();
    spdlog::info("policy: conn {}: {}; answering {} and closing", remote_, why, status);
    co_await answer_and_close(status, why);
  }

  // Answers a request whose body has not been read, then closes: the stream cannot be trusted
  // to be at a request boundary.
  asio::awaitable<void> answer_and_close(int status, std::string_view why) {
    Response res{static_cast<http::status>(status), 11};
    res.set(http::field::server, "maildictd");
    res.set(http::field::content_type, "application/json");
    res.body() = policy::encode_error(why);
    res.keep_alive(false);
    res.prepare_payload();
    stream_.expires_after(shared_.config.request_timeout);
    co_await http::async_write(stream_, res, asio::as_tuple(asio::use_awaitable));
    co_await linger();
  }

  asio::awaitable<void> refuse(const Request& head, int status, std::string_view why) {
    metrics().policy_bad_requests.inc();
    spdlog::debug("policy: conn {}: {} {} -> {} ({}); closing", remote_, std::string_view(head.method_string()),
                  std::string_view(head.target()).substr(0, 128), status, why);
    co_await answer_and_close(status, why);
  }

  // Policy and admin requests need the key; /metrics, unknown paths and bad targets do not
  // (they get their own answer).
  static bool needs_key(const Request& head) {
    auto parsed = policy::parse_target(std::string_view(head.target().data(), head.target().size()));
    auto* t = std::get_if<policy::Target>(&parsed);
    return t && (t->path.starts_with("/admin/") || t->param("command"));
  }

  // After an error answer to a request that was not read in full: stop sending, then read and
  // drop what the client still sends (bounded in bytes and time) before closing. Closing with
  // unread input would make the kernel reset the connection and could destroy the answer
  // before the client has read it.
  asio::awaitable<void> linger() {
    beast::error_code ec;
    stream_.socket().shutdown(asio::socket_base::shutdown_send, ec);
    stream_.expires_after(std::chrono::seconds(1));
    std::array<char, 16384> sink;
    std::size_t total = 0;
    while (total < (1u << 20)) {
      auto [rec, n] = co_await stream_.async_read_some(asio::buffer(sink), asio::as_tuple(asio::use_awaitable));
      if (rec) break;
      total += n;
    }
  }

  bool key_ok(const Request& req) const {
    const auto& key = shared_.config.policy_api_key;
    if (key.empty()) return true;
    auto it = req.find(shared_.config.policy_api_header);
    if (it == req.end()) return false;
    auto v = it->value();
    return same_secret(trim(std::string_view(v.data(), v.size())), key);
  }

  asio::awaitable<Response> handle(const Request& req) {
    std::string_view raw_target(req.target().data(), req.target().size());
    auto parsed = policy::parse_target(raw_target);
    if (auto* e = std::get_if<policy::CodecError>(&parsed)) co_return error(req, e->http_status, e->message);
    const auto& target = std::get<policy::Target>(parsed);

    if (target.path == "/metrics") {
      if (req.method() != http::verb::get) co_return error(req, 405, "use GET for /metrics");
      metrics().policy_metrics.inc();
      co_return make(req, http::status::ok, metrics().render(), "text/plain; version=0.0.4; charset=utf-8");
    }
    if (target.path.starts_with("/admin/")) {
      if (!key_ok(req)) co_return error(req, 401, "missing or wrong API key (policy_api_header)");
      metrics().policy_admin.inc();
      co_return co_await admin(req, target.path);
    }
    if (!target.param("command"))
      co_return error(req, 404,
                      "unknown path: policy requests carry ?command=allow or ?command=report; "
                      "see also /metrics and /admin/blocks");
    auto command = policy::command_of(target);
    if (auto* e = std::get_if<policy::CodecError>(&command)) co_return error(req, e->http_status, e->message);
    if (req.method() != http::verb::post) co_return error(req, 405, "policy requests must use POST");
    if (!key_ok(req)) co_return error(req, 401, "missing or wrong API key (policy_api_header)");
    if (!json_content(req)) co_return error(req, 415, "the request body must be application/json");
    auto body = policy::parse_policy_body(std::get<policy::Command>(command), req.body());
    if (auto* e = std::get_if<policy::CodecError>(&body)) co_return error(req, e->http_status, e->message);
    const auto& r = std::get<policy::PolicyRequest>(body);

    if (r.command == policy::Command::report) {
      metrics().policy_report.inc();
      if (!r.success && shared_.outcomes && shared_.outcomes->failed_recently(r.login, kOutageReportWindow)) {
        // The login failed because maildict could not look it up: no password was checked.
        // Debug level: an outage would log one line per login; the metric counts them.
        metrics().policy_failures_not_counted.inc();
        spdlog::debug("policy: not counting the failed login of '{}' from {}: its passdb lookup had failed temporarily",
                     printable(r.login), printable(r.remote));
        co_return make(req, http::status::no_content, {});
      }
      shared_.engine.report(r);
      co_return make(req, http::status::no_content, {});
    }
    metrics().policy_allow.inc();
    auto d = shared_.engine.decide(r);
    switch (d.kind) {
      case policy::Decision::Kind::allow: metrics().decision_allow.inc(); break;
      case policy::Decision::Kind::tarpit:
        metrics().decision_tarpit.inc();
        spdlog::debug("policy: tarpit {} s for login '{}' from {}", d.seconds, printable(r.login), printable(r.remote));
        break;
      case policy::Decision::Kind::reject:
        metrics().decision_reject.inc();
        spdlog::info("policy: reject login '{}' from {}", printable(r.login), printable(r.remote));
        break;
    }
    co_return make(req, http::status::ok, policy::encode_decision(d));
  }

  static std::string printable(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size() && i < 128; ++i) {
      unsigned char c = static_cast<unsigned char>(s[i]);
      out.push_back(c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?');
    }
    return out;
  }

  static bool json_content(const Request& req) {
    auto it = req.find(http::field::content_type);
    if (it == req.end()) return true;  // Dovecot always sends it; curl users may not
    std::string_view v(it->value().data(), it->value().size());
    v = trim(v.substr(0, v.find(';')));
    return beast::iequals(v, "application/json");
  }

  asio::awaitable<Response> admin(const Request& req, const std::string& path) {
    if (path == "/admin/blocks") {
      if (req.method() != http::verb::get) co_return error(req, 405, "use GET for /admin/blocks");
      std::string out = "{\"blocks\":[";
      bool first = true;
      for (const auto& b : shared_.engine.blocks()) {
        if (!first) out += ',';
        first = false;
        out += block_json(b);
      }
      // Logins refused or slowed by the failure counters are no operator blocks, but an
      // operator asking "who is blocked?" must see them too.
      out += "],\"throttled\":[";
      first = true;
      for (const auto& t : shared_.engine.throttled(1000)) {
        if (!first) out += ',';
        first = false;
        out += "{\"kind\":";
        json::append_string(out, t.kind);
        out += ",\"target\":";
        json::append_string(out, t.target);
        out += ",\"failures\":" + std::to_string(t.failures) + ",\"answer\":";
        out += t.reject ? "\"reject\"" : "\"tarpit\",\"tarpit_seconds\":" + std::to_string(t.tarpit_seconds);
        out += "}";
      }
      out += "]}";
      co_return make(req, http::status::ok, std::move(out));
    }
    if (path != "/admin/block" && path != "/admin/unblock")
      co_return error(req, 404, "unknown admin path (/admin/blocks, /admin/block, /admin/unblock)");
    if (req.method() != http::verb::post) co_return error(req, 405, "use POST for " + path);
    if (!json_content(req)) co_return error(req, 415, "the request body must be application/json");
    auto parsed = policy::parse_block_body(req.body());
    if (auto* e = std::get_if<policy::CodecError>(&parsed)) co_return error(req, e->http_status, e->message);
    const auto& b = std::get<policy::BlockRequest>(parsed);
    std::string out;
    if (path == "/admin/block") {
      PolicyBlock made;
      if (!shared_.engine.block(b, &made))
        co_return error(req, 507, "too many blocks (policy_max_blocks); unblock some first");
      spdlog::info("policy: blocked {} {}{}", made.kind(), printable(made.target()),
                   made.expires_ms ? " for " + std::to_string(b.seconds) + " s" : std::string(" until unblocked"));
      out = "{\"blocked\":" + block_json(made);
    } else {
      bool reset = false;
      bool was = shared_.engine.unblock(b, &reset);
      std::string what = b.network ? policy::to_string(*b.network) : *b.login;
      spdlog::info("policy: unblocked {} ({}, {})", printable(what), was ? "block removed" : "it was not blocked",
                   reset ? "failure counters reset" : "no failure counters");
      // "unblocked": an operator block was removed; "counters_reset": failures were forgotten.
      out = std::string("{\"unblocked\":") + (was ? "true" : "false") +
            ",\"counters_reset\":" + (reset ? "true" : "false");
    }
    // The change is in force already; saving it before answering means an operator who got
    // "persisted":true knows it survives a restart.
    auto& persistence = shared_.persistence;
    bool saved = co_await asio::co_spawn(
        shared_.blocking, [&persistence]() -> asio::awaitable<bool> { co_return persistence.save_now(); },
        asio::use_awaitable);
    out += std::string(",\"persisted\":") + (saved ? "true" : "false") + "}";
    co_return make(req, http::status::ok, std::move(out));
  }

  beast::basic_stream<Protocol> stream_;
  Shared& shared_;
  beast::flat_buffer buffer_;
  std::string remote_;
  std::list<Connection*>::iterator registered_;
  bool waiting_ = false, served_ = false;
  std::chrono::steady_clock::time_point waiting_since_;
};

}  // namespace

struct PolicyHttpServer::Impl {
  Impl(const conf::Config& c, PolicyEngine& e, SessionFactory open)
      : config(c),
        engine(e),
        persistence(e, std::move(open), c.policy_persist_interval),
        shared{c, e, persistence, blocking, {0}, nullptr, {}} {}

  template <class Acceptor>
  asio::awaitable<void> accept_loop(Acceptor& acceptor, std::string where) {
    using Protocol = typename Acceptor::protocol_type;
    bool failing = false;
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      if (ec) {
        if (!failing) spdlog::error("policy: accept on {} failed: {}", where, ec.message());
        failing = true;
        asio::steady_timer pause(ioc, std::chrono::milliseconds(100));
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      failing = false;
      if (shared.connections.load() >= config.policy_max_connections && !make_room()) {
        metrics().policy_connections_refused.inc();
        note_full("refusing a connection: every connection is busy with a request");
        continue;
      }
      ++shared.connections;
      std::string remote = "unix";
      if constexpr (std::is_same_v<Protocol, tcp>) {
        boost::system::error_code rec;
        auto ep = socket.remote_endpoint(rec);
        socket.set_option(tcp::no_delay(true), rec);
        remote = rec ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port());
      }
      auto session = std::make_shared<Session<Protocol>>(std::move(socket), shared);
      session->set_remote(std::move(remote));
      asio::co_spawn(ioc, session->run(), asio::detached);
    }
  }

  // Every slot is taken: closes the connection that has waited longest for a request,
  // preferring one that was never answered (a client that connects and sends nothing) over a
  // kept-alive one (Dovecot's). False when every connection is busy with a request.
  bool make_room() {
    Connection* victim = nullptr;
    for (Connection* s : shared.sessions) {
      if (!s->waiting()) continue;
      if (!victim || std::make_pair(s->served(), s->waiting_since()) <
                         std::make_pair(victim->served(), victim->waiting_since()))
        victim = s;
    }
    if (!victim) return false;
    metrics().policy_connections_refused.inc();
    note_full("closing the connection that waited longest for a request to make room");
    victim->evict();
    return true;
  }

  // One line when the listener fills up, then a count at most once a minute while it stays full.
  void note_full(const char* what) {
    auto now = std::chrono::steady_clock::now();
    if (full_events++ == 0 || now - last_full_note >= std::chrono::minutes(1)) {
      spdlog::warn("policy: {} open (policy_max_connections): {} ({} time(s) so far)", shared.connections.load(), what,
                   full_events);
      last_full_note = now;
    }
  }

  std::uint64_t full_events = 0;
  std::chrono::steady_clock::time_point last_full_note;
  const conf::Config& config;
  PolicyEngine& engine;
  asio::thread_pool blocking{1};
  Persistence persistence;
  Shared shared;
  asio::io_context ioc{1};
  std::optional<tcp::acceptor> acceptor;                            // policy_listen
  std::optional<asio::local::stream_protocol::acceptor> unix_acceptor;  // policy_socket
  SocketFile socket_file;
  std::thread thread;
  bool started = false;
};

PolicyHttpServer::PolicyHttpServer(const conf::Config& config, PolicyEngine& engine, SessionFactory open_session)
    : impl_(std::make_unique<Impl>(config, engine, std::move(open_session))) {}

PolicyHttpServer::~PolicyHttpServer() { stop(); }

void PolicyHttpServer::consult_passdb_outcomes(PassdbOutcomes& outcomes) { impl_->shared.outcomes = &outcomes; }

void PolicyHttpServer::bind() {
  auto& impl = *impl_;
  const auto& c = impl.config;
  if (!c.policy_listen.empty()) {
    auto where = conf::policy_listen_address(c);
    boost::system::error_code ec;
    auto address = asio::ip::make_address(where.host, ec);
    if (ec) throw std::runtime_error("policy_listen: bad address " + where.host);
    tcp::endpoint ep(address, where.port);
    auto& a = impl.acceptor.emplace(impl.ioc);
    a.open(ep.protocol(), ec);
    if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) a.bind(ep, ec);
    if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw std::runtime_error("cannot listen on " + c.policy_listen + " (policy_listen): " + ec.message());
  }
  if (!c.policy_socket.empty()) {
    UnixListenerSpec spec{c.policy_socket, c.policy_socket_mode, c.policy_socket_owner, c.policy_socket_group,
                          "policy_socket", c.source};
    int fd = bind_unix_listener(spec, impl.socket_file);
    boost::system::error_code ec;
    impl.unix_acceptor.emplace(impl.ioc).assign(asio::local::stream_protocol(), fd, ec);
    if (ec) {
      ::close(fd);
      throw std::runtime_error("cannot listen on " + c.policy_socket + " (policy_socket): " + ec.message());
    }
  }
}

void PolicyHttpServer::start() {
  auto& impl = *impl_;
  impl.persistence.start();
  metrics().add_gauge("maildict_policy_connections", "Open connections on the policy listener.",
                      [&impl] { return static_cast<double>(impl.shared.connections.load()); });
  metrics().add_gauge("maildict_policy_tracked_keys", "Networks, logins and pairs with failures in the window.",
                      [&impl] { return static_cast<double>(impl.engine.stats().entries); });
  metrics().add_gauge("maildict_policy_blocks", "Operator blocks in force.",
                      [&impl] { return static_cast<double>(impl.engine.stats().blocks); });
  metrics().add_gauge("maildict_policy_evictions", "Tracked keys evicted since start (policy_max_entries reached).",
                      [&impl] { return static_cast<double>(impl.engine.stats().evictions); });
  if (impl.acceptor) {
    asio::co_spawn(impl.ioc, impl.accept_loop(*impl.acceptor, impl.config.policy_listen), asio::detached);
    spdlog::info("policy: serving Dovecot's auth policy on http://{}/ (metrics on /metrics)", impl.config.policy_listen);
  }
  if (impl.unix_acceptor) {
    asio::co_spawn(impl.ioc, impl.accept_loop(*impl.unix_acceptor, impl.config.policy_socket), asio::detached);
    spdlog::info("policy: serving Dovecot's auth policy on the UNIX socket {} (Dovecot 2.4: "
                 "auth_policy {{ http_client_proxy_socket_path }})", impl.config.policy_socket);
  }
  impl.thread = std::thread([&impl] { impl.ioc.run(); });
  impl.started = true;
}

void PolicyHttpServer::stop() {
  auto& impl = *impl_;
  if (!impl.started) return;
  impl.started = false;
  asio::post(impl.ioc, [&impl] {
    boost::system::error_code ignored;
    if (impl.acceptor) impl.acceptor->close(ignored);
    if (impl.unix_acceptor) impl.unix_acceptor->close(ignored);
    impl.ioc.stop();
  });
  if (impl.thread.joinable()) impl.thread.join();
  impl.blocking.join();
  impl.persistence.stop();  // its last round saves what changed
  impl.socket_file.remove_if_ours();
}

}  // namespace maildict::server
