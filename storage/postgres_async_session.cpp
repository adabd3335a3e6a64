#include "storage/postgres_async_session.hpp"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "storage/postgres_conninfo.hpp"
#include "storage/postgres_errors.hpp"
#include "storage/text_hash.hpp"

namespace maildict::storage {

namespace {

struct ResultFree {
  void operator()(PGresult* r) const { PQclear(r); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultFree>;

// A cancel request for a statement whose client gave up. PQcancel blocks until the server has
// read it, which never happens with a hung server: it runs on a thread of its own, and at most
// a couple at once, so a hung server costs two parked threads, not one per request.
std::atomic<int> g_cancels_in_flight{0};
constexpr int kMaxCancelsInFlight = 2;

void cancel_in_background(PGconn* conn) {
  if (g_cancels_in_flight.fetch_add(1) >= kMaxCancelsInFlight) {
    g_cancels_in_flight.fetch_sub(1);
    return;
  }
  PGcancel* cancel = PQgetCancel(conn);
  if (cancel == nullptr) {
    g_cancels_in_flight.fetch_sub(1);
    return;
  }
  try {
    std::thread([cancel] {
      char err[256];
      PQcancel(cancel, err, sizeof err);
      PQfreeCancel(cancel);
      g_cancels_in_flight.fetch_sub(1);
    }).detach();
  } catch (...) {
    PQfreeCancel(cancel);
    g_cancels_in_flight.fetch_sub(1);
  }
}

class PostgresReadSession final : public SqlSession {
 public:
  explicit PostgresReadSession(const PostgresSessionOptions& options) : options_(options) { connect(); }
  ~PostgresReadSession() override { drop(); }

  SqlDialect dialect() const override { return SqlDialect::postgresql; }
  void set_deadline(Deadline deadline) override { deadline_ = deadline; }

  bool run(std::string_view sql, std::span<const SqlValue> params, SqlRows* rows, SqlError& err) override {
    return run_retrying(sql, params, rows, nullptr, err);
  }
  bool run_named(std::string_view sql, std::span<const SqlValue> params, SqlRows& rows, std::vector<std::string>& names,
                 SqlError& err) override {
    return run_retrying(sql, params, &rows, &names, err);
  }

  bool prepare(std::string_view sql, SqlError& err) override {
    if (!usable(err)) return false;
    return statement_name(sql, err) != nullptr;
  }

  bool begin(SessionRole role, SqlError& err) override {
    if (role == SessionRole::write) {
      err = {SqlError::Kind::permanent, "a read session cannot begin a write transaction"};
      return false;
    }
    if (!usable(err)) return false;
    if (!command("BEGIN READ ONLY", err)) return false;
    in_tx_ = true;
    return true;
  }

  bool commit(SqlError& err) override {
    if (!in_tx_) {
      err = {SqlError::Kind::permanent, "no transaction to commit"};
      return false;
    }
    in_tx_ = false;
    if (!conn_) {
      err = {SqlError::Kind::transient, "database connection is broken"};
      return false;
    }
    return command("COMMIT", err);
  }

  void rollback() noexcept override {
    if (!in_tx_) return;
    in_tx_ = false;
    SqlError ignored;
    if (conn_ && !command("ROLLBACK", ignored)) healthy_ = false;
  }

  bool healthy() const override {
    return healthy_ && conn_ && (retire_at_ == Clock::time_point{} || Clock::now() < retire_at_);
  }

 private:
  // Connects without blocking past the connect deadline (nor past connect_timeout, 2 s unless
  // the conninfo says otherwise: libpq leaves enforcing it to a non-blocking caller).
  void connect() {
    drop();
    const auto conninfo = with_connect_timeout(options_.conninfo, options_.application_name);
    const Deadline give_up = std::min(options_.connect_deadline, Clock::now() + connect_timeout_of(conninfo));
    conn_ = PQconnectStart(conninfo.c_str());
    if (conn_ == nullptr) throw std::runtime_error("postgresql: out of memory");
    PostgresPollingStatusType state = PGRES_POLLING_WRITING;
    while (PQstatus(conn_) != CONNECTION_BAD && state != PGRES_POLLING_OK && state != PGRES_POLLING_FAILED) {
      deadline_ = give_up;
      if (!wait_socket(state == PGRES_POLLING_READING ? POLLIN : POLLOUT)) {
        drop();
        deadline_ = Deadline::max();
        throw std::runtime_error("postgresql: no answer from the server while connecting");
      }
      state = PQconnectPoll(conn_);
    }
    deadline_ = Deadline::max();
    if (PQstatus(conn_) != CONNECTION_OK) {
      std::string why = first_line(PQerrorMessage(conn_));
      drop();
      throw std::runtime_error("postgresql: " + why);
    }
    if (PQsetnonblocking(conn_, 1) != 0) {
      drop();
      throw std::runtime_error("postgresql: cannot make the connection non-blocking");
    }
    healthy_ = true;
    // The server-side bound too: a statement the client gave up on does not run on.
    const auto saved = deadline_;
    deadline_ = std::min(options_.connect_deadline, Clock::now() + std::chrono::seconds(2));
    SqlError err;
    std::string timeout = std::to_string(options_.statement_timeout.count());
    SqlValue params[] = {options_.application_name, timeout};
    bool ok = execute(kSessionSettingsSql, nullptr, params, nullptr, nullptr, err);
    deadline_ = saved;
    if (!ok) {
      drop();
      throw std::runtime_error("postgresql: " + err.message);
    }
    if (options_.retire_after.count() > 0) retire_at_ = Clock::now() + options_.retire_after;
  }

  void drop() {
    names_.clear();
    in_tx_ = false;
    healthy_ = false;
    if (conn_) PQfinish(conn_);
    conn_ = nullptr;
  }

  bool usable(SqlError& err) {
    if (!healthy_ || !conn_ || PQstatus(conn_) != CONNECTION_OK) {
      healthy_ = false;
      err = {SqlError::Kind::transient, "database connection is broken"};
      return false;
    }
    if (Clock::now() >= deadline_) {
      err = {SqlError::Kind::transient, "deadline passed before the query"};
      return false;
    }
    return true;
  }

  bool run_retrying(std::string_view sql, std::span<const SqlValue> params, SqlRows* rows,
                    std::vector<std::string>* names, SqlError& err) {
    if (!usable(err)) return false;
    if (!parameters_fit_libpq(params, err)) return false;
    // After a server restart every pooled connection is dead but does not know it yet; a
    // lookup outside a transaction is safe to repeat once on a fresh connection.
    const bool may_retry = !in_tx_;
    if (run_once(sql, params, rows, names, err)) return true;
    if (!may_retry || healthy_ || Clock::now() >= deadline_) return false;
    const Deadline request = deadline_;
    try {
      options_.connect_deadline = request;
      connect();
    } catch (const std::exception& e) {
      deadline_ = request;
      err = {SqlError::Kind::transient, first_line(e.what())};
      return false;
    }
    deadline_ = request;
    if (rows) rows->clear();
    return run_once(sql, params, rows, names, err);
  }

  bool run_once(std::string_view sql, std::span<const SqlValue> params, SqlRows* rows, std::vector<std::string>* names,
                SqlError& err) {
    const std::string* name = statement_name(sql, err);
    if (!name) return false;
    return execute({}, name, params, rows, names, err);
  }

  const std::string* statement_name(std::string_view sql, SqlError& err) {
    if (auto it = names_.find(sql); it != names_.end()) return &it->second;
    std::string name = "maildict_" + std::to_string(names_.size() + 1);
    std::string text(sql);
    if (!PQsendPrepare(conn_, name.c_str(), text.c_str(), 0, nullptr)) {
      send_failed(err);
      return nullptr;
    }
    ResultPtr r = wait_result(err);
    if (!r) return nullptr;
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      statement_failed(r.get(), err);
      return nullptr;
    }
    return &names_.emplace(std::move(text), std::move(name)).first->second;
  }

  // Runs `sql` (no parameters) or the prepared statement `name` with `params`.
  bool execute(std::string_view sql, const std::string* name, std::span<const SqlValue> params, SqlRows* rows,
               std::vector<std::string>* names, SqlError& err) {
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
    const int n = static_cast<int>(values.size());
    int sent;
    if (name) {
      sent = PQsendQueryPrepared(conn_, name->c_str(), n, values.data(), nullptr, nullptr, 0);
    } else {
      std::string text(sql);
      sent = PQsendQueryParams(conn_, text.c_str(), n, nullptr, values.data(), nullptr, nullptr, 0);
    }
    if (!sent) return send_failed(err);
    ResultPtr r = wait_result(err);
    if (!r) return false;
    auto status = PQresultStatus(r.get());
    if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
      statement_failed(r.get(), err);
      return false;
    }
    const int columns = PQnfields(r.get());
    if (names) {
      names->clear();
      for (int c = 0; c < columns; ++c) names->emplace_back(PQfname(r.get(), c));
    }
    if (!rows) return true;
    const int count = PQntuples(r.get());
    rows->reserve(rows->size() + static_cast<std::size_t>(count));
    for (int i = 0; i < count; ++i) {
      SqlRow row;
      row.reserve(static_cast<std::size_t>(columns));
      for (int c = 0; c < columns; ++c) {
        if (PQgetisnull(r.get(), i, c))
          row.emplace_back(std::nullopt);
        else
          row.emplace_back(std::string(PQgetvalue(r.get(), i, c), static_cast<std::size_t>(PQgetlength(r.get(), i, c))));
      }
      rows->push_back(std::move(row));
    }
    return true;
  }

  bool command(const char* sql, SqlError& err) { return execute(sql, nullptr, {}, nullptr, nullptr, err); }

  bool send_failed(SqlError& err) {
    err = {SqlError::Kind::transient, "lost connection to PostgreSQL: " + first_line(PQerrorMessage(conn_))};
    drop();
    return false;
  }

  void statement_failed(PGresult* r, SqlError& err) {
    const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    err = classify_sql_error(state, first_line(PQresultErrorMessage(r)));
    // A server that shuts down or restarts tells each connection so (SQLSTATE 57P01..57P03) or
    // the connection fails (class 08). libpq may hand over that error before it has read the
    // end of the stream, so the connection still looks fine: drop it here, which lets a lookup
    // be repeated once on a fresh connection instead of answering F after the server is back.
    const std::string_view code = state ? state : "";
    if (PQstatus(conn_) != CONNECTION_OK || code.starts_with("57P") || code.starts_with("08")) drop();
  }

  // Waits for the whole answer to what was sent, until the deadline. nullptr with `err` set
  // when the deadline passed (the statement is cancelled and the connection dropped: it is in
  // an unknown state) or the connection broke. Otherwise the last result (an error result if
  // any of them was one).
  ResultPtr wait_result(SqlError& err) {
    for (;;) {
      int flushed = PQflush(conn_);
      if (flushed == 0) break;
      if (flushed < 0) {
        broken(err);
        return nullptr;
      }
      if (!wait_socket(POLLOUT | POLLIN)) {
        gave_up(err);
        return nullptr;
      }
      if (!PQconsumeInput(conn_)) {
        broken(err);
        return nullptr;
      }
    }
    ResultPtr last;
    for (;;) {
      while (PQisBusy(conn_)) {
        if (!wait_socket(POLLIN)) {
          gave_up(err);
          return nullptr;
        }
        if (!PQconsumeInput(conn_)) {
          broken(err);
          return nullptr;
        }
      }
      PGresult* r = PQgetResult(conn_);
      if (r == nullptr) break;
      // Keep an error over anything after it.
      if (!last || PQresultStatus(last.get()) != PGRES_FATAL_ERROR) last.reset(r);
      else PQclear(r);
    }
    if (!last) {
      err = {SqlError::Kind::transient, "lost connection to PostgreSQL: no result"};
      drop();
    }
    return last;
  }

  // poll() until the socket is ready or the deadline passes (false).
  bool wait_socket(short events) {
    for (;;) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline_ - Clock::now()).count();
      if (left <= 0) return false;
      pollfd p{PQsocket(conn_), events, 0};
      int rc = ::poll(&p, 1, left > INT_MAX ? INT_MAX : static_cast<int>(left));
      if (rc > 0) return true;
      if (rc < 0 && errno != EINTR) return true;  // let libpq find out what is wrong
    }
  }

  void broken(SqlError& err) {
    err = {SqlError::Kind::transient, "lost connection to PostgreSQL: " + first_line(PQerrorMessage(conn_))};
    drop();
  }

  void gave_up(SqlError& err) {
    err = {SqlError::Kind::transient, "deadline passed during the query (no answer from PostgreSQL)"};
    // The server may be slow (statement_timeout ends the statement there too) or hung (it
    // would never read a cancel request): ask it to cancel without waiting for it, and never
    // use this connection again, its protocol state is unknown.
    cancel_in_background(conn_);
    drop();
  }

  PostgresSessionOptions options_;
  PGconn* conn_ = nullptr;
  std::unordered_map<std::string, std::string, TextHash, std::equal_to<>> names_;
  Deadline deadline_ = Deadline::max();
  Clock::time_point retire_at_{};
  bool healthy_ = false;
  bool in_tx_ = false;
};

}  // namespace

std::unique_ptr<SqlSession> open_postgres_read_session(const PostgresSessionOptions& options) {
  return std::make_unique<PostgresReadSession>(options);
}

}  // namespace maildict::storage
