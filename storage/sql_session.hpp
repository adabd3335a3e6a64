// One database connection seen as "run this parameterised statement". The directory's
// questions (sql_directory.cpp), the admin tool's changes and the policy store are written once
// against this interface; each backend (SQLite, PostgreSQL) implements it.
//
// Statements use PostgreSQL-style placeholders $1..$n in both dialects (SQLite accepts them as
// named parameters; the SQLite session binds them by name). Parameters and results are text or
// NULL: integers travel as decimal text, which both databases convert by column type.
// Statements are prepared once per connection and cached by their text.
#pragma once
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "storage/directory.hpp"

namespace maildict::storage {

using SqlValue = std::optional<std::string>;  // nullopt is SQL NULL
using SqlRow = std::vector<SqlValue>;
using SqlRows = std::vector<SqlRow>;

enum class SqlDialect { sqlite, postgresql };

struct SqlError {
  enum class Kind {
    transient,      // lock, timeout, lost connection, server down: try again later (temp_fail)
    invalid_input,  // a parameter the database cannot hold (e.g. not UTF-8 for PostgreSQL):
                    // for a lookup this means "no such row"
    constraint,     // unique / foreign key / check violated (admin tool: a clear error)
    permanent,      // anything else (bad SQL, missing table): reported, not retried
  };
  Kind kind = Kind::transient;
  std::string message;  // safe to log: never contains parameter values
};

// Whether a session may go to a read replica (lookups) or must reach the primary (changes).
enum class SessionRole { read, write };

class SqlSession {
 public:
  virtual ~SqlSession() = default;

  virtual SqlDialect dialect() const = 0;

  // Bounds the statements that follow (lock waits, server-side statement timeout, client-side
  // waits). A statement that cannot finish by then fails with Kind::transient.
  virtual void set_deadline(Deadline deadline) = 0;

  // Runs one statement. `rows`, when given, receives the result rows (appended). False with
  // `err` filled on failure; after a transient failure the session may be unhealthy.
  virtual bool run(std::string_view sql, std::span<const SqlValue> params, SqlRows* rows, SqlError& err) = 0;

  // Like run(), and also tells the result's column names (for queries whose columns are
  // identified by name, such as a Dovecot password_query).
  virtual bool run_named(std::string_view sql, std::span<const SqlValue> params, SqlRows& rows,
                         std::vector<std::string>& names, SqlError& err) = 0;

  // Prepares a statement ahead of its first run (a connection checks its schema this way).
  virtual bool prepare(std::string_view sql, SqlError& err) = 0;

  // Transactions. A read transaction gives several statements one consistent snapshot; a write
  // transaction makes several changes one unit (rolled back unless committed).
  virtual bool begin(SessionRole role, SqlError& err) = 0;
  virtual bool commit(SqlError& err) = 0;
  virtual void rollback() noexcept = 0;

  // False once the connection needs replacing (the pool and callers open a fresh session).
  virtual bool healthy() const = 0;
};

// Convenience for callers with a fixed number of parameters:
//   run(s, "SELECT ... WHERE a = $1 AND b = $2", {a, b}, &rows, err)
inline bool run(SqlSession& s, std::string_view sql, std::initializer_list<SqlValue> params, SqlRows* rows,
                SqlError& err) {
  return s.run(sql, std::span<const SqlValue>(params.begin(), params.size()), rows, err);
}

}  // namespace maildict::storage
