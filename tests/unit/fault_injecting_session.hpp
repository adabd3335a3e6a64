// An SqlSession that passes everything to a real one, counts the statements, can make one of
// them fail (to prove a change is all or nothing), and can log every statement text
// (MAILDICT_SQL_LOG=FILE, one per line) so the same SQL can be PREPAREd on PostgreSQL.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "storage/sql_session.hpp"

namespace maildict::storage::testing {

class FaultInjectingSession final : public SqlSession {
 public:
  explicit FaultInjectingSession(std::unique_ptr<SqlSession> inner) : inner_(std::move(inner)) {}

  SqlDialect dialect() const override { return inner_->dialect(); }
  void set_deadline(Deadline d) override { inner_->set_deadline(d); }

  bool run(std::string_view sql, std::span<const SqlValue> params, SqlRows* rows, SqlError& err) override {
    ++statements;
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
    return inner_->run(sql, params, rows, err);
  }
  bool run_named(std::string_view sql, std::span<const SqlValue> params, SqlRows& rows,
                 std::vector<std::string>& names, SqlError& err) override {
    return inner_->run_named(sql, params, rows, names, err);
  }
  bool prepare(std::string_view sql, SqlError& err) override { return inner_->prepare(sql, err); }
  bool begin(SessionRole role, SqlError& err) override { return inner_->begin(role, err); }
  bool commit(SqlError& err) override { return inner_->commit(err); }
  void rollback() noexcept override { inner_->rollback(); }
  bool healthy() const override { return inner_->healthy(); }

  int statements = 0;
  int fail_at_statement = 0;  // > 0: that statement (counted from 1) fails as if the database had

 private:
  std::unique_ptr<SqlSession> inner_;
};

}  // namespace maildict::storage::testing
