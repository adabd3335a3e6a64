// One PostgreSQL connection (libpqxx) as an SqlSession: statements prepared on the server once
// per connection, parameters always out of line, errors sorted by SQLSTATE into "try again"
// (lost server, timeout, lock) and "will not work" (constraint, bad SQL).
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "storage/postgres_conninfo.hpp"  // with_connect_timeout, describe_conninfo
#include "storage/sql_session.hpp"

namespace maildict::storage {

struct PostgresSessionOptions {
  std::string conninfo;                       // libpq key=value string or postgresql:// URI
  std::string application_name = "maildictd";  // shown in pg_stat_activity
  std::chrono::milliseconds statement_timeout{2000};  // server-side bound on every statement
  // 0: for good. Otherwise the session reports itself unhealthy this long after connecting, so
  // the pool opens a new one (a lookup connection that fell back to the primary goes back to
  // the replica once that is reachable again).
  std::chrono::milliseconds retire_after{0};
  // The read session (postgres_async_session.hpp) gives up connecting at this time too.
  Deadline connect_deadline = Deadline::max();
};

// Connects at once. Throws std::runtime_error (message free of passwords) when it cannot.
std::unique_ptr<SqlSession> open_postgres_session(const PostgresSessionOptions& options, SessionRole role);

}  // namespace maildict::storage
