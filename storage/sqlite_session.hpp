// One SQLite connection as an SqlSession (storage/sql_session.hpp): statements prepared once and
// cached by text, $n placeholders, per-request deadlines (busy timeout, progress handler and the
// deadline-aware VFS), and a check that the path still names the file the handle has open.
#pragma once
#include <memory>
#include <string>

#include "storage/sql_session.hpp"

namespace maildict::storage {

// The highest schema version (PRAGMA user_version) this build understands.
constexpr int kSqliteSchemaVersion = 1;

// Opens the existing file at `path` (never creates it: a missing file throws "database file
// missing"). A `read` session refuses writes (PRAGMA query_only); a `write` session may change
// the directory. Throws std::runtime_error naming the file when it cannot open.
std::unique_ptr<SqlSession> open_sqlite_session(const std::string& path, SessionRole role);

}  // namespace maildict::storage
