#include "storage/postgres_session.hpp"

#include <functional>
#include <optional>
#include <pqxx/pqxx>
#include <stdexcept>
#include <string_view>
#include <unordered_map>

#include "storage/postgres_conninfo.hpp"
#include "storage/postgres_errors.hpp"
#include "storage/text_hash.hpp"

// libpqxx 6 passes parameters through string_traits; teach it that an empty optional is NULL.
namespace pqxx {
template <>
struct string_traits<std::optional<std::string>> {
  static constexpr const char* name() noexcept { return "optional<string>"; }
  static constexpr bool has_null() noexcept { return true; }
  static bool is_null(const std::optional<std::string>& v) { return !v.has_value(); }
  static std::optional<std::string> null() { return std::nullopt; }
  static void from_string(const char* str, std::optional<std::string>& v) { v = std::string(str); }
  static std::string to_string(const std::optional<std::string>& v) { return v ? *v : std::string(); }
};
}  // namespace pqxx

namespace maildict::storage {

namespace {

SqlError classify(const pqxx::sql_error& e) { return classify_sql_error(e.sqlstate().c_str(), first_line(e.what())); }

class PostgresSession final : public SqlSession {
 public:
  PostgresSession(const PostgresSessionOptions& options, SessionRole role) : options_(options), role_(role) {
    connect();
  }

  // (Re)connects and applies the session settings. Throws std::runtime_error.
  void connect() {
    names_.clear();  // prepared statements belong to the server session
    tx_.reset();
    conn_.reset();
    healthy_ = false;
    const auto& options = options_;
    try {
      conn_ = std::make_unique<pqxx::connection>(with_connect_timeout(options.conninfo, options.application_name));
      // pqxx would otherwise reconnect behind our back after a lost connection, dropping the
      // session settings below; the pool replaces an unhealthy session itself.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
      conn_->inhibit_reactivation(true);
#pragma GCC diagnostic pop
      pqxx::nontransaction n(*conn_);
      n.exec_params(kSessionSettingsSql, options.application_name, std::to_string(options.statement_timeout.count()));
    } catch (const pqxx::broken_connection& e) {
      throw std::runtime_error("postgresql: " + first_line(e.what()));
    } catch (const pqxx::sql_error& e) {
      throw std::runtime_error("postgresql: " + first_line(e.what()));
    }
    healthy_ = true;
    if (options_.retire_after.count() > 0) retire_at_ = Clock::now() + options_.retire_after;
  }

  ~PostgresSession() override {
    tx_.reset();  // a transaction still open is rolled back
  }

  SqlDialect dialect() const override { return SqlDialect::postgresql; }

  void set_deadline(Deadline deadline) override { deadline_ = deadline; }

  bool run(std::string_view sql, std::span<const SqlValue> params, SqlRows* rows, SqlError& err) override {
    return run_retrying(sql, params, rows, nullptr, err);
  }

  bool run_named(std::string_view sql, std::span<const SqlValue> params, SqlRows& rows, std::vector<std::string>& names,
                 SqlError& err) override {
    return run_retrying(sql, params, &rows, &names, err);
  }

  bool run_retrying(std::string_view sql, std::span<const SqlValue> params, SqlRows* rows,
                    std::vector<std::string>* names, SqlError& err) {
    if (!usable(err)) return false;
    if (!parameters_fit_libpq(params, err)) return false;
    // After a server restart every pooled connection is dead but does not know it yet. A
    // lookup outside a transaction is safe to repeat, so it gets one fresh connection instead
    // of a temporary failure; changes are never repeated (they might have been applied).
    const bool may_retry = role_ == SessionRole::read && !tx_;
    if (run_once(sql, params, rows, names, err)) return true;
    if (!may_retry || healthy_) return false;
    try {
      connect();
    } catch (const std::exception& e) {
      err = {SqlError::Kind::transient, first_line(e.what())};
      return false;
    }
    if (rows) rows->clear();
    return run_once(sql, params, rows, names, err);
  }

  bool run_once(std::string_view sql, std::span<const SqlValue> params, SqlRows* rows, std::vector<std::string>* names,
                SqlError& err) {
    return guarded(err, [&] {
      const std::string& name = statement_name(sql);
      auto args = pqxx::prepare::make_dynamic_params(params.begin(), params.end());
      pqxx::result r;
      if (tx_) {
        r = tx_->exec_prepared(name, args);
      } else {
        pqxx::nontransaction n(*conn_);
        r = n.exec_prepared(name, args);
      }
      if (names) {
        names->clear();
        for (pqxx::row::size_type c = 0; c < r.columns(); ++c) names->emplace_back(r.column_name(c));
      }
      if (!rows) return;
      rows->reserve(rows->size() + r.size());
      for (const auto& row : r) {
        SqlRow out;
        out.reserve(row.size());
        for (const auto& field : row) {
          if (field.is_null())
            out.emplace_back(std::nullopt);
          else
            out.emplace_back(std::string(field.c_str(), field.size()));
        }
        rows->push_back(std::move(out));
      }
    });
  }

  bool prepare(std::string_view sql, SqlError& err) override {
    if (!usable(err)) return false;
    return guarded(err, [&] { conn_->prepare_now(statement_name(sql)); });
  }

  bool begin(SessionRole role, SqlError& err) override {
    if (!usable(err)) return false;
    if (role == SessionRole::write && role_ != SessionRole::write) {
      err = {SqlError::Kind::permanent, "a read session cannot begin a write transaction"};
      return false;
    }
    tx_.reset();
    return guarded(err, [&] {
      if (role == SessionRole::write)
        tx_ = std::make_unique<pqxx::work>(*conn_);
      else
        tx_ = std::make_unique<pqxx::read_transaction>(*conn_);
    });
  }

  bool commit(SqlError& err) override {
    if (!tx_) {
      err = {SqlError::Kind::permanent, "no transaction to commit"};
      return false;
    }
    bool ok = guarded(err, [&] { tx_->commit(); });
    tx_.reset();
    return ok;
  }

  void rollback() noexcept override {
    try {
      if (tx_) tx_->abort();
    } catch (...) {
      healthy_ = false;
    }
    tx_.reset();
  }

  bool healthy() const override { return healthy_ && (retire_at_ == Clock::time_point{} || Clock::now() < retire_at_); }

 private:
  bool usable(SqlError& err) {
    if (!healthy_ || !conn_ || !conn_->is_open()) {
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

  const std::string& statement_name(std::string_view sql) {
    if (auto it = names_.find(sql); it != names_.end()) return it->second;
    std::string name = "maildict_" + std::to_string(names_.size() + 1);
    conn_->prepare(name, std::string(sql));
    return names_.emplace(std::string(sql), std::move(name)).first->second;
  }

  // Runs `f`, turning libpqxx's exceptions into an SqlError. A failed statement inside a
  // transaction aborts that transaction (PostgreSQL refuses everything after it).
  template <class F>
  bool guarded(SqlError& err, F&& f) {
    try {
      f();
      return true;
    } catch (const pqxx::broken_connection& e) {
      healthy_ = false;
      err = {SqlError::Kind::transient, "lost connection to PostgreSQL: " + first_line(e.what())};
    } catch (const pqxx::sql_error& e) {
      err = classify(e);
      if (err.kind == SqlError::Kind::transient && conn_ && !conn_->is_open()) healthy_ = false;
    } catch (const pqxx::in_doubt_error& e) {
      healthy_ = false;
      err = {SqlError::Kind::transient, "commit outcome unknown: " + first_line(e.what())};
    } catch (const pqxx::usage_error& e) {
      err = {SqlError::Kind::permanent, first_line(e.what())};
    } catch (const std::exception& e) {
      healthy_ = false;
      err = {SqlError::Kind::transient, "database error: " + first_line(e.what())};
    }
    if (tx_) {
      try {
        tx_->abort();
      } catch (...) {
        healthy_ = false;
      }
      tx_.reset();
    }
    return false;
  }

  PostgresSessionOptions options_;
  SessionRole role_;
  std::unique_ptr<pqxx::connection> conn_;
  std::unique_ptr<pqxx::transaction_base> tx_;
  std::unordered_map<std::string, std::string, TextHash, std::equal_to<>> names_;
  Deadline deadline_ = Deadline::max();
  Clock::time_point retire_at_{};
  bool healthy_ = false;
};

}  // namespace

std::unique_ptr<SqlSession> open_postgres_session(const PostgresSessionOptions& options, SessionRole role) {
  return std::make_unique<PostgresSession>(options, role);
}

}  // namespace maildict::storage
