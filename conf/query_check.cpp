#include "conf/query_check.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <exception>

#include "storage/sql_session.hpp"

namespace maildict::conf {

QueryCheck check_queries(const Config& config, storage::DirectoryBackend& backend) {
  QueryCheck out;
  const std::string from = " (" + storage::describe_database(config.database) + ", from " + config.database_origin + ")";
  if (config.database.starts_with("sqlite:")) {
    // Asked before SQLite is: a path with a stray character (a quote, a ';') names a file
    // that is not there, and the message must say which line wrote that path.
    const std::string path = config.database.substr(7);
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      const int err = errno;
      if (err == ENOENT && !config.queries.existing)
        out.warnings.push_back("the database file does not exist yet; maildictd creates it at start" + from);
      else
        out.warnings.push_back(std::string(err == ENOENT ? "the database file does not exist"
                                                         : "the database file cannot be read: " + std::string(std::strerror(err))) +
                               from + "; lookups fail temporarily until it does");
      return out;
    }
  }
  if (config.operator_queries.empty()) return out;
  std::unique_ptr<storage::SqlSession> session;
  try {
    session = backend.open_session(storage::SessionRole::read);
  } catch (const std::exception& e) {
    out.warnings.push_back(std::string("the database is not available, so its queries were not checked: ") + e.what() +
                           from);
    return out;
  }
  for (const auto& q : config.operator_queries) {
    storage::SqlError err;
    if (session->prepare(q.sql, err)) continue;
    if (err.kind == storage::SqlError::Kind::permanent) {
      std::string sql = q.sql.size() > 160 ? q.sql.substr(0, 157) + "..." : q.sql;
      for (char& c : sql)
        if (c == '\n' || c == '\r' || c == '\t') c = ' ';
      out.errors.push_back(q.where + ": " +
                           (err.message.starts_with("cannot prepare") ? err.message : "cannot prepare statement: " + err.message) +
                           " (in: " + sql + ")");
    } else {
      out.warnings.push_back(q.where + ": not checked, the database did not answer: " + err.message);
      if (!session->healthy()) return out;
    }
  }
  return out;
}

}  // namespace maildict::conf
