#include "server/dict_server.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <spdlog/spdlog.h>
#include <thread>
#include <unordered_set>

#include "protocol/dict_codec.hpp"

namespace maildict::server {
namespace asio = boost::asio;
using asio::local::stream_protocol;

namespace {

constexpr std::size_t initial_read_buffer = 16 * 1024;
constexpr std::size_t max_open_transactions = 1000;
constexpr auto backstop_grace = std::chrono::milliseconds(500);

// Shared by all sessions; read-only after start except the counters.
struct ServerState {
  const conf::Config& config;
  LookupService* service = nullptr;
  std::atomic<unsigned> connections{0};
  std::atomic<std::uint64_t> next_connection_id{1};
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(stream_protocol::socket socket, ServerState& state)
      : socket_(std::move(socket)),
        idle_timer_(socket_.get_executor()),
        resume_timer_(socket_.get_executor()),
        state_(state),
        id_(state.next_connection_id++),
        backstop_timer_(socket_.get_executor()) {
    buffer_.resize(initial_read_buffer);
  }
  ~Session() { --state_.connections; }

  void start() {
    auto self = shared_from_this();
    asio::co_spawn(socket_.get_executor(), self->read_loop(), asio::detached);
    asio::co_spawn(socket_.get_executor(), self->idle_watch(), asio::detached);
  }

 private:
  // Where a reply goes: in async-id mode straight out with its id, in FIFO mode into the slot
  // that keeps arrival order. Every reply-bearing request has a slot until it is answered.
  struct Ticket {
    std::uint64_t seq = 0;
    std::optional<std::uint32_t> async_id;
  };
  struct Slot {
    std::chrono::steady_clock::time_point deadline;
    std::optional<std::uint32_t> async_id;
    bool done = false;
    std::string bytes;  // FIFO mode: the reply, waiting for the ones before it
    std::string key;    // a passdb lookup's key (the auth policy learns of its timeout)
  };

  asio::awaitable<void> read_loop() {
    auto self = shared_from_this();
    for (;;) {
      if (!process_buffered_lines()) break;
      flush();
      if (closed_) break;
      if (pending_ >= state_.config.max_pending) {
        // Back-pressure: stop reading until replies drain (woken by complete()).
        resume_timer_.expires_at(asio::steady_timer::time_point::max());
        reader_waiting_ = true;
        co_await resume_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        reader_waiting_ = false;
        continue;
      }
      std::size_t unread = end_ - start_;
      if (unread > state_.config.max_line_length) {
        spdlog::warn("conn {}: request line longer than {} bytes; closing the connection", id_,
                     state_.config.max_line_length);
        close();
        break;
      }
      if (end_ == buffer_.size()) {
        if (start_ > 0) {
          std::memmove(buffer_.data(), buffer_.data() + start_, unread);
          start_ = 0;
          end_ = unread;
        } else {
          buffer_.resize(std::min(buffer_.size() * 2, state_.config.max_line_length + 2));
        }
      }
      auto [ec, n] = co_await socket_.async_read_some(asio::buffer(buffer_.data() + end_, buffer_.size() - end_),
                                                      asio::as_tuple(asio::use_awaitable));
      if (ec) {
        if (end_ > start_ && ec == asio::error::eof)
          spdlog::debug("conn {}: client closed in the middle of a line", id_);
        // A client that half-closes (socat, scripts) still gets the replies it is owed.
        reading_done_ = true;
        finish_if_done();
        break;
      }
      last_activity_ = std::chrono::steady_clock::now();
      end_ += n;
    }
  }

  // Handles every complete line in the buffer, up to the pending limit. False: connection closed.
  bool process_buffered_lines() {
    while (!closed_ && pending_ < state_.config.max_pending) {
      const char* begin = buffer_.data() + start_;
      const char* lf = static_cast<const char*>(std::memchr(begin, '\n', end_ - start_));
      if (!lf) break;
      std::string_view line(begin, static_cast<std::size_t>(lf - begin));
      start_ += line.size() + 1;
      if (!handle_line(line)) {
        close();
        return false;
      }
    }
    if (start_ == end_) start_ = end_ = 0;
    return !closed_;
  }

  bool handle_line(std::string_view line) {
    auto parsed = dict::parse_line(line);
    if (auto* err = std::get_if<dict::ParseError>(&parsed)) {
      spdlog::warn("conn {}: malformed request ({}); closing the connection", id_, err->message);
      return false;
    }
    auto& request = std::get<dict::Request>(parsed);
    if (!style_) {
      auto* hello = std::get_if<dict::Hello>(&request);
      if (!hello) {
        spdlog::warn("conn {}: the first line must be the H handshake; closing the connection", id_);
        return false;
      }
      style_ = dict::reply_style_for(*hello);
      if (!style_) {
        spdlog::warn("conn {}: unsupported dict protocol major version {} (3 and 4 are served); closing",
                     id_, hello->major);
        return false;
      }
      spdlog::debug("conn {}: handshake major {} minor {} dict '{}'", id_, hello->major, hello->minor,
                    printable_excerpt(hello->dict_name));
      return true;
    }
    return std::visit([this](auto& r) { return handle(r); }, request);
  }

  bool handle(const dict::Hello&) {
    spdlog::warn("conn {}: a second handshake line; closing the connection", id_);
    return false;
  }

  bool handle(const dict::Lookup& r) {
    Ticket ticket = open_ticket(r.key);
    if (spdlog::should_log(spdlog::level::debug))
      spdlog::debug("conn {}: lookup {}", id_, printable_excerpt(r.key));
    auto self = shared_from_this();
    auto now = state_.service->lookup(r.key, [self, ticket](LookupAnswer answer) {
      asio::post(self->socket_.get_executor(), [self, ticket, answer = std::move(answer)] {
        self->complete(ticket, self->encode(ticket, answer));
      });
    });
    if (now) complete(ticket, encode(ticket, *now));
    return true;
  }

  bool handle(const dict::Iterate& r) {
    Ticket ticket = open_ticket();
    if (spdlog::should_log(spdlog::level::debug))
      spdlog::debug("conn {}: iterate {} flags {}", id_, printable_excerpt(r.path), r.flags);
    auto self = shared_from_this();
    // The answer may arrive on a pool thread or at once on this one; either way it is
    // handed to this connection's thread, so the session is only ever touched there.
    state_.service->iterate(r, [self, ticket](IterateAnswer answer) {
      asio::post(self->socket_.get_executor(), [self, ticket, answer = std::move(answer)] {
        self->complete(ticket, self->encode(ticket, answer));
      });
    });
    return true;
  }

  bool handle(const dict::Begin& r) {
    if (transactions_.size() >= max_open_transactions) {
      spdlog::warn("conn {}: more than {} open transactions; closing", id_, max_open_transactions);
      return false;
    }
    if (!transactions_.insert(r.id).second) {
      spdlog::warn("conn {}: transaction {} begun twice; closing", id_, r.id);
      return false;
    }
    return true;
  }

  // Writes are not served, but a well-formed transaction is followed to its end so that the
  // client gets the spec's answer (F at commit) and the connection stays usable.
  bool known_transaction(std::uint32_t id, char command) {
    if (transactions_.count(id)) return true;
    spdlog::warn("conn {}: {} for unknown transaction {}; closing", id_, command, id);
    return false;
  }
  bool handle(const dict::Set& r) { return known_transaction(r.id, 'S'); }
  bool handle(const dict::Unset& r) { return known_transaction(r.id, 'U'); }
  bool handle(const dict::AtomicInc& r) { return known_transaction(r.id, 'A'); }
  bool handle(const dict::Timestamp& r) { return known_transaction(r.id, 'T'); }
  bool handle(const dict::HideLogValues& r) { return known_transaction(r.id, 'V'); }
  bool handle(const dict::Rollback& r) {
    if (!known_transaction(r.id, 'R')) return false;
    transactions_.erase(r.id);
    return true;
  }
  bool handle(const dict::Commit& r) {
    if (!known_transaction(r.id, r.legacy_async ? 'D' : 'C')) return false;
    transactions_.erase(r.id);
    Ticket ticket = open_ticket();
    std::string bytes;
    dict::append_commit_reply(bytes, ticket.async_id, r, dict::CommitResult::failed,
                              "maildict: the directory is read-only over the dict protocol "
                              "(change it with maildict-admin or SQL)");
    complete(ticket, std::move(bytes));
    return true;
  }

  Ticket open_ticket(std::string_view key = {}) {
    Ticket t;
    t.seq = next_seq_++;
    ++pending_;
    if (style_->async_ids) {
      t.async_id = next_async_id_++;
      if (next_async_id_ == 0) next_async_id_ = 1;  // ids are positive
      dict::append_async_id(out_, *t.async_id);
    }
    // The pool answers by the request deadline itself; this later one only catches a worker
    // stuck outside the database's control, so that every request still gets its one answer.
    auto deadline = std::chrono::steady_clock::now() + state_.config.request_timeout + backstop_grace;
    slots_.push_back(Slot{deadline, t.async_id, false, {}, {}});
    if (key.starts_with("shared/passdb/")) slots_.back().key = key;
    if (!backstop_armed_) arm_backstop(deadline);
    return t;
  }

  void arm_backstop(std::chrono::steady_clock::time_point when) {
    backstop_armed_ = true;
    backstop_timer_.expires_at(when);
    backstop_timer_.async_wait([self = shared_from_this()](const boost::system::error_code&) {
      self->backstop_armed_ = false;
      self->on_backstop();
    });
  }

  void on_backstop() {
    if (closed_) return;
    auto now = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < slots_.size() && slots_[i].deadline <= now; ++i) {
      if (slots_[i].done) continue;
      spdlog::error("conn {}: no answer from the directory within the request timeout; failing the request", id_);
      Ticket t{slots_base_seq_ + i, slots_[i].async_id};
      if (!slots_[i].key.empty()) state_.service->note_timed_out(slots_[i].key);
      std::string bytes;
      dict::append_lookup_failed(bytes, t.async_id, "maildict: request timed out");
      complete(t, std::move(bytes));
      if (closed_) return;
    }
    for (const auto& slot : slots_) {
      if (!slot.done) {
        arm_backstop(slot.deadline);
        break;
      }
    }
  }

  std::string encode(const Ticket& t, const LookupAnswer& a) const {
    std::string bytes;
    switch (a.kind) {
      case LookupAnswer::Kind::found: dict::append_lookup_found(bytes, t.async_id, a.text); break;
      case LookupAnswer::Kind::not_found: dict::append_lookup_not_found(bytes, t.async_id); break;
      case LookupAnswer::Kind::failed:
        // One line per request would flood the log in an outage; the fault log
        // (server/fault_log.hpp) reports them by cause.
        spdlog::debug("conn {}: lookup failed: {}", id_, a.text);
        dict::append_lookup_failed(bytes, t.async_id, a.text);
        break;
    }
    return bytes;
  }

  std::string encode(const Ticket& t, const IterateAnswer& a) const {
    std::string bytes;
    if (a.failed) {
      spdlog::debug("conn {}: iteration failed: {}", id_, a.error);
      dict::append_iterate_failed(bytes, t.async_id, a.error);
      return bytes;
    }
    for (const auto& [key, value] : a.rows) dict::append_iterate_row(bytes, t.async_id, key, value);
    dict::append_iterate_end(bytes, t.async_id);
    return bytes;
  }

  void complete(const Ticket& t, std::string bytes) {
    if (closed_ || t.seq < slots_base_seq_) return;
    Slot& slot = slots_[t.seq - slots_base_seq_];
    if (slot.done) return;  // already failed by the backstop; the late answer is dropped
    slot.done = true;
    --pending_;
    if (t.async_id) out_ += bytes;
    else slot.bytes = std::move(bytes);
    // In FIFO mode replies leave strictly in arrival order; in async mode they already left.
    while (!slots_.empty() && slots_.front().done) {
      out_ += slots_.front().bytes;
      slots_.pop_front();
      ++slots_base_seq_;
    }
    if (reader_waiting_) resume_timer_.cancel();
    flush();
  }

  void flush() {
    if (writing_ || out_.empty() || closed_) {
      finish_if_done();
      return;
    }
    writing_ = true;
    std::swap(out_, write_buffer_);
    asio::async_write(socket_, asio::buffer(write_buffer_), [self = shared_from_this()](auto ec, std::size_t) {
      self->writing_ = false;
      self->write_buffer_.clear();
      if (ec) {
        self->close();
        return;
      }
      self->flush();
    });
  }

  void finish_if_done() {
    if (reading_done_ && !closed_ && !writing_ && pending_ == 0 && out_.empty()) close();
  }

  asio::awaitable<void> idle_watch() {
    auto self = shared_from_this();
    const auto idle = state_.config.idle_timeout;
    while (!closed_) {
      idle_timer_.expires_at(last_activity_ + idle);
      co_await idle_timer_.async_wait(asio::as_tuple(asio::use_awaitable));  // woken early by close()
      if (closed_) break;
      if (pending_ == 0 && !writing_ && std::chrono::steady_clock::now() >= last_activity_ + idle) {
        spdlog::debug("conn {}: idle for {} ms; closing", id_, idle.count());
        close();
      }
      if (pending_ != 0) last_activity_ = std::chrono::steady_clock::now();
    }
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignored;
    socket_.close(ignored);
    idle_timer_.cancel();
    resume_timer_.cancel();
    backstop_timer_.cancel();
  }

  stream_protocol::socket socket_;
  asio::steady_timer idle_timer_;
  asio::steady_timer resume_timer_;
  ServerState& state_;
  std::uint64_t id_;

  std::vector<char> buffer_;
  std::size_t start_ = 0, end_ = 0;
  std::string out_, write_buffer_;
  bool writing_ = false, closed_ = false, reading_done_ = false, reader_waiting_ = false;
  std::chrono::steady_clock::time_point last_activity_ = std::chrono::steady_clock::now();

  std::optional<dict::ReplyStyle> style_;
  std::uint32_t next_async_id_ = 1;
  std::uint64_t next_seq_ = 0, slots_base_seq_ = 0;
  unsigned pending_ = 0;
  std::deque<Slot> slots_;
  asio::steady_timer backstop_timer_;
  bool backstop_armed_ = false;
  std::unordered_set<std::uint32_t> transactions_;
};

std::string errno_text() { return std::strerror(errno); }

}  // namespace

struct DictServer::Impl {
  explicit Impl(const conf::Config& c) : config(c), state{c} {
    // Half the cores by default: answering a line is cheap, and the other half is wanted by the
    // pool's database threads and by the mail daemons that share the host. Measured on two
    // cores, one I/O thread answered 1.5x as many lookups as two (tests/bench).
    unsigned n = c.io_threads ? c.io_threads : std::max(1u, std::thread::hardware_concurrency() / 2);
    for (unsigned i = 0; i < n; ++i) contexts.push_back(std::make_unique<asio::io_context>(1));
    acceptor.emplace(*contexts[0]);
  }

  asio::awaitable<void> accept_loop() {
    std::size_t next = 0;
    for (;;) {
      auto& ctx = *contexts[next++ % contexts.size()];
      auto [ec, socket] = co_await acceptor->async_accept(ctx, asio::as_tuple(asio::use_awaitable));
      if (ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
      if (ec) {
        // Out of descriptors and the like: log, breathe, go on; never spin.
        spdlog::error("accept on {} failed: {}", config.socket_path, ec.message());
        asio::steady_timer pause(acceptor->get_executor(), std::chrono::milliseconds(100));
        co_await pause.async_wait(asio::use_awaitable);
        continue;
      }
      if (state.connections.load() >= config.max_connections) {
        spdlog::warn("refusing a connection: {} connections open (max_connections)", state.connections.load());
        continue;  // the socket closes as it goes out of scope
      }
      ++state.connections;
      auto session = std::make_shared<Session>(std::move(socket), state);
      asio::post(ctx, [session] { session->start(); });
    }
  }

  const conf::Config& config;
  ServerState state;
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::optional<stream_protocol::acceptor> acceptor;
  bool bound = false;
};

DictServer::DictServer(const conf::Config& config) : impl_(std::make_unique<Impl>(config)) {}
DictServer::~DictServer() {
  if (impl_->bound) ::unlink(impl_->config.socket_path.c_str());
}

void DictServer::bind() {
  const auto& c = impl_->config;
  namespace fs = std::filesystem;
  fs::path path(c.socket_path);
  std::error_code fec;
  fs::create_directories(path.parent_path(), fec);
  if (fec) throw std::runtime_error("cannot create the socket directory " + path.parent_path().string() + ": " + fec.message());

  // A socket file may be left from a crash; one that still accepts belongs to a live instance.
  if (fs::is_socket(path, fec)) {
    asio::io_context probe_ctx;
    stream_protocol::socket probe(probe_ctx);
    boost::system::error_code ec;
    probe.connect(stream_protocol::endpoint(c.socket_path), ec);
    if (!ec) throw std::runtime_error(c.socket_path + " is in use by a running maildictd (or another server)");
    ::unlink(c.socket_path.c_str());
  } else if (fs::exists(path, fec)) {
    throw std::runtime_error(c.socket_path + " exists and is not a socket; refusing to replace it");
  }

  boost::system::error_code ec;
  auto& acceptor = *impl_->acceptor;
  acceptor.open(stream_protocol(), ec);
  if (!ec) acceptor.bind(stream_protocol::endpoint(c.socket_path), ec);
  if (ec) throw std::runtime_error("cannot bind " + c.socket_path + ": " + ec.message());
  impl_->bound = true;
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen on " + c.socket_path + ": " + ec.message());

  if (::chmod(c.socket_path.c_str(), c.socket_mode) != 0)
    throw std::runtime_error("cannot set the mode of " + c.socket_path + ": " + errno_text());
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  if (!c.socket_owner.empty()) {
    struct passwd* pw = ::getpwnam(c.socket_owner.c_str());
    if (!pw) throw std::runtime_error(c.source + ": socket_owner: no such user '" + c.socket_owner + "'");
    uid = pw->pw_uid;
  }
  if (!c.socket_group.empty()) {
    struct group* gr = ::getgrnam(c.socket_group.c_str());
    if (!gr) throw std::runtime_error(c.source + ": socket_group: no such group '" + c.socket_group + "'");
    gid = gr->gr_gid;
  }
  if ((uid != static_cast<uid_t>(-1) || gid != static_cast<gid_t>(-1)) && ::chown(c.socket_path.c_str(), uid, gid) != 0)
    throw std::runtime_error("cannot set the owner of " + c.socket_path + ": " + errno_text());
}

void DictServer::run(LookupService& service) {
  auto& impl = *impl_;
  impl.state.service = &service;

  asio::signal_set signals(*impl.contexts[0], SIGTERM, SIGINT);
  signals.async_wait([&impl](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    spdlog::info("received {}; shutting down", signo == SIGTERM ? "SIGTERM" : "SIGINT");
    boost::system::error_code ignored;
    impl.acceptor->close(ignored);
    for (auto& ctx : impl.contexts) ctx->stop();
  });
  // SIGHUP (systemctl reload, log rotation) must not kill the daemon. The configuration is
  // read once at start; a reload empties the answer cache, which is all there is to refresh.
  asio::signal_set hangup(*impl.contexts[0], SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_hangup =
      [&](const boost::system::error_code& ec, int) {
        if (ec) return;
        service.clear_cache();
        spdlog::info("received SIGHUP; answer cache emptied (restart to apply configuration changes)");
        hangup.async_wait(on_hangup);
      };
  hangup.async_wait(on_hangup);
  asio::co_spawn(*impl.contexts[0], impl.accept_loop(), asio::detached);

  spdlog::info("serving the dict protocol on {} with {} I/O thread(s)", impl.config.socket_path, impl.contexts.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < impl.contexts.size(); ++i) {
    auto& ctx = *impl.contexts[i];
    threads.emplace_back([&ctx] {
      auto guard = asio::make_work_guard(ctx);
      ctx.run();
    });
  }
  impl.contexts[0]->run();
  for (auto& t : threads) t.join();
}

}  // namespace maildict::server
