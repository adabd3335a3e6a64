#include "server/dict_server.hpp"

#include <grp.h>
#include <signal.h>
#include <pwd.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <filesystem>
#include <functional>
#include <spdlog/spdlog.h>
#include <thread>
#include <unordered_set>

#include "protocol/dict_codec.hpp"
#include "server/socket_file.hpp"
#include "server/unix_listener.hpp"

namespace maildict::server {
namespace asio = boost::asio;
using asio::local::stream_protocol;

namespace {

constexpr std::size_t initial_read_buffer = 16 * 1024;
constexpr std::size_t max_open_transactions = 1000;
constexpr auto backstop_grace = std::chrono::milliseconds(500);

class Session;

// Shared by all sessions; read-only after start except the counters and the session list.
struct ServerState {
  explicit ServerState(const conf::Config& c) : config(c) {}
  const conf::Config& config;
  LookupService* service = nullptr;
  std::atomic<unsigned> connections{0};
  std::atomic<std::uint64_t> next_connection_id{1};
  std::atomic<bool> stopping{false};
  // Every open session, so that a stop can tell each one to finish (sessions live on several
  // I/O threads; the mutex is taken once per connection and once at the stop).
  std::mutex sessions_mutex;
  std::list<std::weak_ptr<Session>> sessions;
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
  ~Session() {
    if (registered_) {
      std::lock_guard lock(state_.sessions_mutex);
      state_.sessions.erase(*registered_);
    }
    --state_.connections;
  }

  asio::any_io_executor executor() { return socket_.get_executor(); }

  void start() {
    auto self = shared_from_this();
    {
      std::lock_guard lock(state_.sessions_mutex);
      registered_ = state_.sessions.insert(state_.sessions.end(), self);
    }
    if (state_.stopping.load()) {  // accepted just as the stop began
      close();
      return;
    }
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
  // An iteration's answer, put on the wire a few rows at a time as the client reads, so that
  // the encoded rows of a large directory never pile up in memory (DESIGN.md §2 rule 7).
  struct RowStream {
    IterateAnswer answer;
    std::optional<std::uint32_t> async_id;
    std::size_t next = 0;
    // Appends rows while `out` is below `budget`; true once every row and the end line are out.
    bool emit(std::string& out, std::size_t budget) {
      while (next < answer.rows.size() && out.size() < budget) {
        auto& row = answer.rows[next++];
        dict::append_iterate_row(out, async_id, row.first, row.second);
        std::string().swap(row.first);  // what is on the wire is no longer held twice
        std::string().swap(row.second);
      }
      if (next < answer.rows.size()) return false;
      dict::append_iterate_end(out, async_id);
      return true;
    }
  };
  struct Slot {
    std::chrono::steady_clock::time_point deadline;
    std::optional<std::uint32_t> async_id;
    bool done = false;
    std::string bytes;  // FIFO mode: the reply, waiting for the ones before it
    std::string key;    // a passdb lookup's key (the auth policy learns of its timeout)
    bool iteration = false;
    std::shared_ptr<RowStream> rows;  // FIFO mode: an iteration's rows, waiting their turn
  };

 public:
  // The daemon is stopping (SIGTERM): no new request is read, the ones in flight are answered
  // (by the directory or, at their deadline, with a temporary failure) and written, then the
  // connection closes. A connection with nothing in flight closes at once. Called on this
  // session's thread.
  void begin_stop() {
    if (closed_ || stopping_) return;
    stopping_ = true;
    if (pending_ == 0 && !writing_ && out_.empty() && !rows_) {
      close();
      return;
    }
    reading_done_ = true;
    if (reader_waiting_) {
      resume_timer_.cancel();
    } else {
      boost::system::error_code ignored;
      socket_.shutdown(stream_protocol::socket::shutdown_receive, ignored);  // ends a pending read
    }
    finish_if_done();
  }

 private:
  asio::awaitable<void> read_loop() {
    auto self = shared_from_this();
    for (;;) {
      if (stopping_) {
        finish_if_done();
        break;
      }
      if (!process_buffered_lines()) break;
      flush();
      if (closed_) break;
      if (line_waiting_ || pending_ >= state_.config.max_pending || output_full()) {
        // Back-pressure: stop reading until answers arrive or the client reads what it is
        // owed (woken by complete() and by write progress). A client that sends and never
        // reads is then held by the kernel's socket buffers, not by this process's memory.
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

  // Handles every complete line in the buffer, up to the pending and output limits and one
  // iteration at a time (each may hold a whole directory until it is written).
  // False: connection closed.
  bool process_buffered_lines() {
    line_waiting_ = false;
    while (!closed_) {
      const char* begin = buffer_.data() + start_;
      const char* lf = static_cast<const char*>(std::memchr(begin, '\n', end_ - start_));
      if (!lf) break;
      if (pending_ >= state_.config.max_pending || output_full() || (iteration_open_ && *begin == 'I')) {
        line_waiting_ = true;
        break;
      }
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
    slots_.back().iteration = true;
    iteration_open_ = true;
    if (spdlog::should_log(spdlog::level::debug))
      spdlog::debug("conn {}: iterate {} flags {}", id_, printable_excerpt(r.path), r.flags);
    auto self = shared_from_this();
    // The answer may arrive on a pool thread or at once on this one; either way it is
    // handed to this connection's thread, so the session is only ever touched there.
    state_.service->iterate(r, [self, ticket](IterateAnswer answer) {
      asio::post(self->socket_.get_executor(), [self, ticket, answer = std::move(answer)]() mutable {
        if (answer.failed) {
          self->complete(ticket, self->encode(ticket, answer));
          return;
        }
        auto rows = std::make_shared<RowStream>(RowStream{std::move(answer), ticket.async_id, 0});
        self->complete(ticket, {}, std::move(rows));
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
    slots_.push_back(Slot{deadline, t.async_id, false, {}, {}, false, nullptr});
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

  // A failed iteration; the rows of one that succeeded go out through a RowStream.
  std::string encode(const Ticket& t, const IterateAnswer& a) const {
    std::string bytes;
    spdlog::debug("conn {}: iteration failed: {}", id_, a.error);
    dict::append_iterate_failed(bytes, t.async_id, a.error);
    return bytes;
  }

  void complete(const Ticket& t, std::string bytes, std::shared_ptr<RowStream> rows = nullptr) {
    if (closed_ || t.seq < slots_base_seq_) return;
    Slot& slot = slots_[t.seq - slots_base_seq_];
    if (slot.done) return;  // already failed by the backstop; the late answer is dropped
    slot.done = true;
    --pending_;
    if (slot.iteration && !rows) iteration_open_ = false;  // failed: nothing left to stream
    if (t.async_id) {
      if (rows) rows_ = std::move(rows);
      else out_ += bytes;
    } else {
      slot.bytes = std::move(bytes);
      slot.rows = std::move(rows);
    }
    release_in_order();
    wake_reader();
    flush();
  }

  // FIFO mode: replies leave strictly in arrival order, and nothing passes an iteration whose
  // rows are still going out. In async mode replies already left; done slots are dropped.
  void release_in_order() {
    while (!slots_.empty() && slots_.front().done && (style_->async_ids || !rows_)) {
      out_ += slots_.front().bytes;
      if (slots_.front().rows) rows_ = std::move(slots_.front().rows);
      slots_.pop_front();
      ++slots_base_seq_;
    }
  }

  // Encodes iteration rows while there is room below max_write_buffer.
  void pump_rows() {
    while (rows_ && !output_full()) {
      // out_ may fill up to what the write in progress leaves of max_write_buffer
      const std::size_t in_write = write_buffer_.size() - write_offset_;
      if (!rows_->emit(out_, state_.config.max_write_buffer - in_write)) break;
      rows_.reset();
      iteration_open_ = false;
      release_in_order();
      wake_reader();
    }
  }

  // Bytes accepted for this client and not yet taken by the kernel.
  std::size_t queued_bytes() const { return out_.size() + (write_buffer_.size() - write_offset_); }
  bool output_full() const { return queued_bytes() >= state_.config.max_write_buffer; }

  void wake_reader() {
    if (reader_waiting_) resume_timer_.cancel();
  }

  void flush() {
    if (closed_) return;
    pump_rows();
    if (writing_ || out_.empty()) {
      finish_if_done();
      return;
    }
    writing_ = true;
    last_write_progress_ = std::chrono::steady_clock::now();
    std::swap(out_, write_buffer_);
    write_offset_ = 0;
    write_some();
  }

  // One write at a time; each completion is progress (the write timeout counts from the last).
  void write_some() {
    socket_.async_write_some(
        asio::buffer(write_buffer_.data() + write_offset_, write_buffer_.size() - write_offset_),
        [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
          if (ec) {
            self->writing_ = false;
            self->close();
            return;
          }
          self->last_write_progress_ = std::chrono::steady_clock::now();
          self->write_offset_ += n;
          if (self->write_offset_ < self->write_buffer_.size()) {
            self->pump_rows();
            if (!self->output_full()) self->wake_reader();
            self->write_some();
            return;
          }
          self->writing_ = false;
          self->write_buffer_.clear();
          self->write_offset_ = 0;
          // A large iteration leaves a large buffer behind; give it back.
          if (self->write_buffer_.capacity() > 2 * self->state_.config.max_write_buffer + 65536)
            std::string().swap(self->write_buffer_);
          self->wake_reader();
          self->flush();
        });
  }

  void finish_if_done() {
    if (reading_done_ && !closed_ && !writing_ && pending_ == 0 && out_.empty() && !rows_) close();
  }

  // Closes a connection that has been idle for idle_timeout, or whose client has read none of
  // its replies for write_timeout (checked at least every half write_timeout, so it is closed
  // within 1.5 times that). Such a client would otherwise hold its unsent replies forever.
  asio::awaitable<void> idle_watch() {
    auto self = shared_from_this();
    const auto idle = state_.config.idle_timeout;
    const auto write_timeout = state_.config.write_timeout;
    while (!closed_) {
      auto now = std::chrono::steady_clock::now();
      auto next = writing_ ? last_write_progress_ + write_timeout
                           : std::min(last_activity_ + idle, now + write_timeout / 2);
      idle_timer_.expires_at(next);
      co_await idle_timer_.async_wait(asio::as_tuple(asio::use_awaitable));  // woken early by close()
      if (closed_) break;
      now = std::chrono::steady_clock::now();
      if (writing_ && now >= last_write_progress_ + write_timeout) {
        spdlog::warn("conn {}: the client has read none of its replies for {} ms ({} bytes waiting); closing the "
                     "connection (write_timeout)",
                     id_, write_timeout.count(), queued_bytes());
        close();
        break;
      }
      if (pending_ == 0 && !writing_ && !rows_ && now >= last_activity_ + idle) {
        spdlog::debug("conn {}: idle for {} ms; closing", id_, idle.count());
        close();
      }
      if (pending_ != 0 || writing_) last_activity_ = now;
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
  std::size_t write_offset_ = 0;  // bytes of write_buffer_ the kernel has taken
  bool writing_ = false, closed_ = false, reading_done_ = false, reader_waiting_ = false;
  bool line_waiting_ = false;    // a complete line is held back by a limit
  bool iteration_open_ = false;  // an iteration is in flight or still being written
  std::shared_ptr<RowStream> rows_;  // the iteration whose rows are going out now
  std::chrono::steady_clock::time_point last_activity_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_write_progress_ = last_activity_;

  std::optional<dict::ReplyStyle> style_;
  std::uint32_t next_async_id_ = 1;
  std::uint64_t next_seq_ = 0, slots_base_seq_ = 0;
  unsigned pending_ = 0;
  std::deque<Slot> slots_;
  asio::steady_timer backstop_timer_;
  bool backstop_armed_ = false;
  std::unordered_set<std::uint32_t> transactions_;
  bool stopping_ = false;
  std::optional<std::list<std::weak_ptr<Session>>::iterator> registered_;
};


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
  ~Impl() {
    if (spare_fd >= 0) ::close(spare_fd);
  }

  asio::awaitable<void> accept_loop() {
    std::size_t next = 0;
    for (;;) {
      auto& ctx = *contexts[next++ % contexts.size()];
      auto [ec, socket] = co_await acceptor->async_accept(ctx, asio::as_tuple(asio::use_awaitable));
      if (ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
      if (ec) {
        // Out of descriptors and the like: say so once, refuse the client that is waiting (it
        // would otherwise hang in the backlog), pause briefly, go on; never spin.
        if (accept_failures++ == 0)
          spdlog::error("accept on {} failed: {}; refusing new connections until it works again", config.socket_path,
                        ec.message());
        if (ec.value() == EMFILE || ec.value() == ENFILE) shed_waiting_connections();
        asio::steady_timer pause(acceptor->get_executor(), std::chrono::milliseconds(100));
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      if (accept_failures) {
        spdlog::info("accepting connections on {} again ({} failed accepts)", config.socket_path, accept_failures);
        accept_failures = 0;
      }
      if (state.connections.load() >= config.max_connections) {
        note_refused();
        continue;  // the socket closes as it goes out of scope
      }
      if (refused) {
        spdlog::info("max_connections: {} connection(s) refused while {} were open; accepting again", refused,
                     config.max_connections);
        refused = 0;
      }
      ++state.connections;
      auto session = std::make_shared<Session>(std::move(socket), state);
      asio::post(ctx, [session] { session->start(); });
    }
  }

  // Tells every session to finish what it has in flight, then stops the event loops once all
  // have closed, or at the latest when the requests in flight are past their deadline (their
  // backstop answered them) and a second more for writing the answers.
  void begin_stop() {
    state.stopping = true;
    std::vector<std::shared_ptr<Session>> open;
    {
      std::lock_guard lock(state.sessions_mutex);
      for (auto& w : state.sessions)
        if (auto s = w.lock()) open.push_back(std::move(s));
    }
    for (auto& s : open) asio::post(s->executor(), [s] { s->begin_stop(); });
    open.clear();
    stop_deadline = std::chrono::steady_clock::now() + config.request_timeout + backstop_grace + std::chrono::seconds(1);
    asio::co_spawn(*contexts[0], drain(), asio::detached);
  }

  asio::awaitable<void> drain() {
    asio::steady_timer tick(*contexts[0]);
    while (state.connections.load() > 0 && std::chrono::steady_clock::now() < stop_deadline) {
      tick.expires_after(std::chrono::milliseconds(20));
      co_await tick.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (auto left = state.connections.load())
      spdlog::warn("{} connection(s) still had answers to write when the stop deadline passed; closing them", left);
    for (auto& ctx : contexts) ctx->stop();
  }

  std::chrono::steady_clock::time_point stop_deadline;

  // One line when refusals start, then a count at most once a minute while they last (a busy
  // host refusing a burst of clients must not flood the log).
  void note_refused() {
    auto now = std::chrono::steady_clock::now();
    if (refused++ == 0) {
      spdlog::warn("refusing connections: {} open (max_connections)", state.connections.load());
      last_refusal_note = now;
    } else if (now - last_refusal_note >= std::chrono::minutes(1)) {
      spdlog::warn("max_connections: {} connection(s) refused so far; {} open", refused, state.connections.load());
      last_refusal_note = now;
    }
  }

  // With no descriptor left, accept() cannot even take a client in order to close it. A
  // descriptor kept for this moment is given up to accept and close the waiting clients, so
  // they see their connection closed at once.
  void shed_waiting_connections() {
    if (spare_fd < 0) return;
    ::close(spare_fd);
    spare_fd = -1;
    for (int i = 0; i < 64; ++i) {
      int fd = ::accept4(acceptor->native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) break;
      ::close(fd);
    }
    spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }

  int spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::uint64_t accept_failures = 0;
  std::uint64_t refused = 0;
  std::chrono::steady_clock::time_point last_refusal_note;

  const conf::Config& config;
  ServerState state;
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::optional<stream_protocol::acceptor> acceptor;
  SocketFile socket_file;
};

DictServer::DictServer(const conf::Config& config) : impl_(std::make_unique<Impl>(config)) {}
DictServer::~DictServer() {
  auto& file = impl_->socket_file;
  if (file.is_bound() && !file.remove_if_ours())
    spdlog::info("left {} in place: it is no longer this process's socket (a new instance has bound it)",
                 impl_->config.socket_path);
}

void DictServer::bind() {
  const auto& c = impl_->config;
  UnixListenerSpec spec{c.socket_path, c.socket_mode, c.socket_owner, c.socket_group, "socket", c.source};
  int fd = bind_unix_listener(spec, impl_->socket_file);
  boost::system::error_code ec;
  impl_->acceptor->assign(stream_protocol(), fd, ec);
  if (ec) {
    ::close(fd);
    throw std::runtime_error("cannot listen on " + c.socket_path + ": " + ec.message());
  }
}

void DictServer::run(LookupService& service) {
  auto& impl = *impl_;
  impl.state.service = &service;

  asio::signal_set signals(*impl.contexts[0], SIGTERM, SIGINT);
  signals.async_wait([&impl](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    spdlog::info("received {}; answering the requests in flight, then shutting down",
                 signo == SIGTERM ? "SIGTERM" : "SIGINT");
    boost::system::error_code ignored;
    impl.acceptor->close(ignored);
    impl.begin_stop();
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
  // maildictd's main blocks these signals before binding (a stop during start-up must not kill
  // it with the default action); now that they are handled, this thread and the I/O threads it
  // starts take them, and one that arrived early is delivered now.
  sigset_t handled;
  sigemptyset(&handled);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&handled, sig);
  pthread_sigmask(SIG_UNBLOCK, &handled, nullptr);
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
