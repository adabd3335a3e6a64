#include "storage/sqlite_session.hpp"

#include <cerrno>
#include <chrono>
#include <climits>
#include <functional>
#include <string_view>
#include <unordered_map>

#include "storage/sqlite_support.hpp"
#include "storage/text_hash.hpp"

namespace maildict::storage {

namespace {

using namespace sqlite;

constexpr int kProgressSteps = 1000;
// Without a request deadline (the admin tool), how long a statement waits for a lock.
constexpr int kDefaultBusyMs = 5000;

// Ends the statement's read as soon as its rows are read: a statement left stepping would pin
// an old snapshot (stale answers) and stop WAL checkpoints.
class ResetOnExit {
 public:
  explicit ResetOnExit(sqlite3_stmt* s) : s_(s) {}
  ~ResetOnExit() {
    sqlite3_clear_bindings(s_);
    sqlite3_reset(s_);
  }
  ResetOnExit(const ResetOnExit&) = delete;
  ResetOnExit& operator=(const ResetOnExit&) = delete;

 private:
  sqlite3_stmt* s_;
};

// "$1" -> "?1" outside quotes: SQLite would take "$1" as a *named* parameter numbered by first
// appearance, so "b = $2 AND a = $1" would bind the wrong way round.
std::string numbered_placeholders(std::string_view sql) {
  std::string out;
  out.reserve(sql.size());
  char quote = 0;
  for (std::size_t i = 0; i < sql.size(); ++i) {
    char c = sql[i];
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == '$' && i + 1 < sql.size() && sql[i + 1] >= '1' && sql[i + 1] <= '9') {
      c = '?';
    }
    out.push_back(c);
  }
  return out;
}

class SqliteSession final : public SqlSession {
 public:
  SqliteSession(std::string path, SessionRole role) : path_(std::move(path)), role_(role) { open(); }

  SqlDialect dialect() const override { return SqlDialect::sqlite; }

  void set_deadline(Deadline deadline) override {
    deadline_ = deadline;
    int ms = kDefaultBusyMs;
    if (deadline != Deadline::max()) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      ms = left < 1 ? 1 : (left > INT_MAX ? INT_MAX : static_cast<int>(left));
    }
    if (db_) sqlite3_busy_timeout(db_.get(), ms);
  }

  bool run(std::string_view sql, std::span<const SqlValue> params, SqlRows* rows, SqlError& err) override {
    return run_impl(sql, params, rows, nullptr, err);
  }

  bool run_named(std::string_view sql, std::span<const SqlValue> params, SqlRows& rows, std::vector<std::string>& names,
                 SqlError& err) override {
    return run_impl(sql, params, &rows, &names, err);
  }

 private:
  bool run_impl(std::string_view sql, std::span<const SqlValue> params, SqlRows* rows, std::vector<std::string>* names,
                SqlError& err) {
    if (!usable(err)) return false;
    SleepDeadline sleep_limit(deadline_);
    sqlite3_stmt* s = statement(sql, err);
    if (!s) return false;
    ResetOnExit reset(s);
    if (sqlite3_bind_parameter_count(s) != static_cast<int>(params.size())) {
      err = {SqlError::Kind::permanent, "statement expects " + std::to_string(sqlite3_bind_parameter_count(s)) +
                                            " parameters, was given " + std::to_string(params.size())};
      return false;
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      int index = static_cast<int>(i) + 1;
      int rc;
      if (!params[i]) {
        rc = sqlite3_bind_null(s, index);
      } else {
        // SQLITE_STATIC: the caller's strings outlive the steps, and ResetOnExit runs first.
        const std::string& v = *params[i];
        if (v.size() > static_cast<std::size_t>(INT_MAX)) rc = SQLITE_TOOBIG;
        else rc = sqlite3_bind_text(s, index, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
      }
      if (rc != SQLITE_OK) {
        err = {rc == SQLITE_TOOBIG ? SqlError::Kind::invalid_input : SqlError::Kind::permanent,
               std::string("cannot bind parameter: ") + sqlite3_errstr(rc)};
        return false;
      }
    }
    const int columns = sqlite3_column_count(s);
    if (names) {
      names->clear();
      for (int c = 0; c < columns; ++c) {
        const char* n = sqlite3_column_name(s, c);
        names->emplace_back(n ? n : "");
      }
    }
    std::size_t seen = 0;
    for (;;) {
      int rc = sqlite3_step(s);
      if (rc == SQLITE_DONE) return true;
      if (rc != SQLITE_ROW) {
        err = failure(rc);
        return false;
      }
      // The progress handler only sees time spent inside SQLite; copying a big result out
      // happens here.
      if ((++seen & 1023) == 0 && Clock::now() >= deadline_) {
        err = {SqlError::Kind::transient, "deadline passed while reading the rows"};
        return false;
      }
      if (!rows) continue;
      SqlRow row;
      row.reserve(static_cast<std::size_t>(columns));
      for (int c = 0; c < columns; ++c) {
        if (sqlite3_column_type(s, c) == SQLITE_NULL) {
          row.emplace_back(std::nullopt);
        } else {
          auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, c));
          row.emplace_back(std::string(p ? p : "", static_cast<std::size_t>(sqlite3_column_bytes(s, c))));
        }
      }
      rows->push_back(std::move(row));
    }
  }


 public:
  bool prepare(std::string_view sql, SqlError& err) override {
    if (!db_) {
      err = {SqlError::Kind::transient, "database connection is broken"};
      return false;
    }
    return statement(sql, err) != nullptr;
  }

  bool begin(SessionRole role, SqlError& err) override {
    if (!usable(err)) return false;
    if (role == SessionRole::write && role_ != SessionRole::write) {
      err = {SqlError::Kind::permanent, "a read session cannot begin a write transaction"};
      return false;
    }
    // IMMEDIATE takes the write lock at once, so a change never fails half-way on a lock.
    return exec_control(role == SessionRole::write ? "BEGIN IMMEDIATE" : "BEGIN", err);
  }

  bool commit(SqlError& err) override {
    if (!db_) {
      err = {SqlError::Kind::transient, "database connection is broken"};
      return false;
    }
    bool ok = exec_control("COMMIT", err);
    if (!ok) rollback();
    return ok;
  }

  void rollback() noexcept override {
    if (!db_) return;
    if (!sqlite3_get_autocommit(db_.get())) sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    // Still inside a transaction: this handle would serve an old snapshot; replace it.
    if (!sqlite3_get_autocommit(db_.get())) healthy_ = false;
  }

  bool healthy() const override { return healthy_; }

 private:
  void open() {
    auto id = file_id(path_);
    if (!id) fail_open(path_, missing_file_reason(errno));
    // Read-write without CREATE even for lookups: WAL readers may need to create the -shm
    // file, and a missing database must stay an error instead of becoming an empty directory
    // that rejects everyone. SQLite falls back to read-only when the file is write-protected.
    DbPtr db = open_db(path_, SQLITE_OPEN_READWRITE);
    sqlite3_busy_timeout(db.get(), kOpenBusyMs);
    if (role_ == SessionRole::read) {
      // Lookup connections only answer questions; make any accidental write fail loudly.
      exec(db.get(), "PRAGMA query_only = 1", path_, "cannot configure the connection");
      // SQLite's default 2 MiB page cache holds a fraction of a 100k-user directory; 16 MiB
      // (an upper bound, filled on use) saves a pread per lookup. Not mmap: an I/O error on a
      // mapped file is a SIGBUS that would take the daemon down instead of failing one lookup.
      exec(db.get(), "PRAGMA cache_size = -16384", path_, "cannot configure the connection");
    } else {
      exec(db.get(), "PRAGMA foreign_keys = ON", path_, "cannot configure the connection");
    }
    auto version = query_int(db.get(), "PRAGMA user_version", path_);
    if (version > kSqliteSchemaVersion)
      fail_schema(path_, "schema version " + std::to_string(version) + " is newer than this maildict understands (" +
                           std::to_string(kSqliteSchemaVersion) + ")");
    sqlite3_progress_handler(db.get(), kProgressSteps, &SqliteSession::on_progress, this);
    db_ = std::move(db);
    file_ = *id;
    next_identity_check_ = Clock::now() + kIdentityCheckInterval;
    healthy_ = true;
    set_deadline(deadline_);
  }

  void close() {
    // Statements belong to the handle; they are prepared again on the reopened one.
    statements_.clear();
    db_.reset();
  }

  static int on_progress(void* self) {
    return Clock::now() >= static_cast<SqliteSession*>(self)->deadline_ ? 1 : 0;
  }

  // Whether a statement may run now: the handle works, still reads the file that is at
  // `path_`, and the deadline has not passed.
  bool usable(SqlError& err) {
    if (!healthy_ || !db_) {
      err = {SqlError::Kind::transient, "database connection is broken"};
      return false;
    }
    auto now = Clock::now();
    // A file deleted or replaced under the same name (restore, rename over) would otherwise be
    // served from the old, unlinked inode for as long as this handle lives. Not inside a
    // transaction: that would silently split it over two files.
    if (now >= next_identity_check_ && sqlite3_get_autocommit(db_.get())) {
      auto id = file_id(path_);
      if (!id) {
        healthy_ = false;
        err = {SqlError::Kind::transient, missing_file_reason(errno)};
        return false;
      }
      if (!(*id == file_)) {
        close();
        try {
          open();
        } catch (const std::exception& e) {
          healthy_ = false;
          err = {SqlError::Kind::transient, std::string("cannot reopen database: ") + e.what()};
          return false;
        }
        now = Clock::now();  // reopening may have waited on a lock
      }
      next_identity_check_ = now + kIdentityCheckInterval;
    }
    if (now >= deadline_) {
      err = {SqlError::Kind::transient, "deadline passed before the query"};
      return false;
    }
    return true;
  }

  // The prepared statement for this text, prepared on first use. nullptr with `err` set when
  // the database cannot: a missing table fails that statement alone, and the connection stays
  // healthy for everything else.
  sqlite3_stmt* statement(std::string_view sql, SqlError& err) {
    if (auto it = statements_.find(sql); it != statements_.end()) return it->second.get();
    std::string text = numbered_placeholders(sql);
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v3(db_.get(), text.c_str(), static_cast<int>(text.size()) + 1,
                                SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
    if (rc != SQLITE_OK || raw == nullptr) {
      sqlite3_finalize(raw);
      if (is_lock_error(rc))
        err = {SqlError::Kind::transient, "database is locked"};
      else  // the message names a table or column of the SQL text, never a parameter value
        err = {SqlError::Kind::permanent, std::string("cannot prepare statement: ") + sqlite3_errmsg(db_.get())};
      return nullptr;
    }
    return statements_.emplace(std::string(sql), StmtPtr(raw)).first->second.get();
  }

  bool exec_control(const char* sql, SqlError& err) {
    SleepDeadline sleep_limit(deadline_);
    int rc = sqlite3_exec(db_.get(), sql, nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) return true;
    err = failure(rc);
    return false;
  }

  // Turns a failed step into a message that is safe to log: the generic text for the code,
  // never sqlite3_errmsg of a step (it could quote data) except for constraints, whose message
  // names only columns.
  SqlError failure(int rc) {
    int primary = rc & 0xff;
    if (is_lock_error(rc)) return {SqlError::Kind::transient, "database is locked"};
    if (primary == SQLITE_INTERRUPT) return {SqlError::Kind::transient, "deadline passed during the query"};
    if (primary == SQLITE_CONSTRAINT) return {SqlError::Kind::constraint, sqlite3_errmsg(db_.get())};
    if (primary == SQLITE_TOOBIG) return {SqlError::Kind::invalid_input, "value too big"};
    if (needs_reopen(rc)) healthy_ = false;
    return {SqlError::Kind::transient,
            std::string("database error: ") + sqlite3_errstr(rc) + " (" + std::to_string(rc) + ")"};
  }

  std::string path_;
  SessionRole role_;
  DbPtr db_;
  std::unordered_map<std::string, StmtPtr, TextHash, std::equal_to<>> statements_;
  FileId file_;
  Clock::time_point next_identity_check_{};
  Deadline deadline_ = Deadline::max();
  bool healthy_ = false;
};

}  // namespace

std::unique_ptr<SqlSession> open_sqlite_session(const std::string& path, SessionRole role) {
  return std::make_unique<SqliteSession>(path, role);
}

}  // namespace maildict::storage
