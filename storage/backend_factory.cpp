#include "storage/backend_factory.hpp"

#include <stdexcept>

#include "storage/postgres_backend.hpp"
#include "storage/postgres_session.hpp"
#include "storage/sqlite_directory.hpp"

namespace maildict::storage {

std::unique_ptr<DirectoryBackend> open_backend(const BackendOptions& options) {
  const std::string& db = options.database;
  if (db.starts_with("sqlite:")) {
    if (!options.replica.empty())
      throw std::runtime_error("database_replica needs a postgresql: database (SQLite has no replicas)");
    return std::make_unique<SqliteBackend>(db.substr(7), options.defaults, options.queries);
  }
  if (db.starts_with("postgresql:")) {
    PostgresOptions pg;
    pg.conninfo = db.substr(11);
    if (!options.replica.empty()) {
      if (!options.replica.starts_with("postgresql:"))
        throw std::runtime_error("database_replica: expected postgresql:<conninfo>");
      pg.replica_conninfo = options.replica.substr(11);
    }
    pg.statement_timeout = options.statement_timeout;
    pg.application_name = options.application_name;
    pg.on_listener_event = options.on_event;
    return std::make_unique<PostgresBackend>(std::move(pg), options.defaults, options.queries);
  }
  throw std::runtime_error("database: expected sqlite:/path or postgresql:<conninfo>");
}

std::string describe_database(const std::string& uri) {
  if (uri.starts_with("postgresql:")) return "postgresql:" + describe_conninfo(uri.substr(11));
  return uri;
}

}  // namespace maildict::storage
