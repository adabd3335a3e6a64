// A minimal SqlSession over one sqlite3 handle, for the admin-operation tests while the storage
// library has no SQLite session of its own. Binds $1..$n by name, returns every column as text
// (or NULL), maps SQLite's result codes to SqlError kinds the way a real session must: BUSY /
// LOCKED -> transient, CONSTRAINT -> constraint, anything else -> permanent.
#pragma once
#include <sqlite3.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "storage/sql_session.hpp"

namespace maildict::storage::testing {

class SqliteTestSession final : public SqlSession {
 public:
  explicit SqliteTestSession(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK)
      throw std::runtime_error("cannot open test database " + path);
    sqlite3_busy_timeout(db_, 0);
  }
  ~SqliteTestSession() override { sqlite3_close_v2(db_); }

  SqlDialect dialect() const override { return SqlDialect::sqlite; }
  void set_deadline(Deadline) override {}

  bool run(std::string_view sql, std::span<const SqlValue> params, SqlRows* rows, SqlError& err) override {
    ++statements;
    // MAILDICT_SQL_LOG=FILE appends every statement text (one per line), so the same SQL can be
    // checked against PostgreSQL (PREPARE) without a PostgreSQL session here.
    if (const char* log = std::getenv("MAILDICT_SQL_LOG")) {
      if (std::FILE* f = std::fopen(log, "a")) {
        std::fprintf(f, "%.*s\n", static_cast<int>(sql.size()), sql.data());
        std::fclose(f);
      }
    }
    if (fail_at_statement != 0 && statements == fail_at_statement) {
      err = {SqlError::Kind::transient, "injected failure"};
      return false;
    }
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &s, nullptr) != SQLITE_OK)
      return error(err, s);
    for (std::size_t i = 0; i < params.size(); ++i) {
      int index = sqlite3_bind_parameter_index(s, ("$" + std::to_string(i + 1)).c_str());
      if (index == 0) continue;
      if (params[i]) sqlite3_bind_text(s, index, params[i]->data(), static_cast<int>(params[i]->size()), SQLITE_TRANSIENT);
      else sqlite3_bind_null(s, index);
    }
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      if (!rows) continue;
      SqlRow row;
      for (int c = 0; c < sqlite3_column_count(s); ++c) {
        if (sqlite3_column_type(s, c) == SQLITE_NULL) row.emplace_back(std::nullopt);
        else row.emplace_back(std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, c)),
                                          static_cast<std::size_t>(sqlite3_column_bytes(s, c))));
      }
      rows->push_back(std::move(row));
    }
    if (rc != SQLITE_DONE) return error(err, s);
    sqlite3_finalize(s);
    return true;
  }

  bool begin(SessionRole role, SqlError& err) override {
    return exec(role == SessionRole::write ? "BEGIN IMMEDIATE" : "BEGIN", err);
  }
  bool commit(SqlError& err) override { return exec("COMMIT", err); }
  void rollback() noexcept override { sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr); }
  bool healthy() const override { return true; }

  int statements = 0;
  int fail_at_statement = 0;  // > 0: that statement (counted from 1) fails transiently

 private:
  bool exec(const char* sql, SqlError& err) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) == SQLITE_OK) return true;
    return error(err, nullptr);
  }
  bool error(SqlError& err, sqlite3_stmt* s) {
    int rc = sqlite3_errcode(db_) & 0xff;
    err.kind = rc == SQLITE_BUSY || rc == SQLITE_LOCKED ? SqlError::Kind::transient
               : rc == SQLITE_CONSTRAINT                ? SqlError::Kind::constraint
                                                        : SqlError::Kind::permanent;
    err.message = sqlite3_errstr(rc);
    sqlite3_finalize(s);
    return false;
  }
  sqlite3* db_ = nullptr;
};

}  // namespace maildict::storage::testing
