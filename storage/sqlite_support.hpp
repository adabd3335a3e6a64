// Small pieces shared by the SQLite backend (schema, change probe) and its sessions: handle
// ownership, the deadline-aware VFS, file identity and error classification.
#pragma once
#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "storage/directory.hpp"

namespace maildict::storage::sqlite {

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// Opening and preparing happen outside any request's deadline; a lock held by a writer for
// longer than this makes the pool report the open as failed and retry a little later.
constexpr int kOpenBusyMs = 100;

// How often the change probe and each connection check that the path still names the file
// they have open (deleted, or replaced by a rename). A stat() is a system call, slower than
// the rest of data_version() on its fast path, so it is not made on every call.
constexpr auto kIdentityCheckInterval = std::chrono::milliseconds(250);

// ---- Sleeping with a deadline ------------------------------------------------------------
// SQLite waits in two places: the busy handler (bounded by sqlite3_busy_timeout) and the WAL
// read-lock retry loop, which sleeps up to ~10 s in total before giving up with
// SQLITE_PROTOCOL and never asks the busy handler or the progress handler (a process holding
// the -shm lock bytes causes it). Both sleep through the VFS, so connections use a copy of the
// default VFS whose xSleep never sleeps past the deadline set on this thread: once the
// deadline is gone the loop runs out its retries at once and the query fails.
class SleepDeadline {
 public:
  explicit SleepDeadline(Deadline d);
  ~SleepDeadline();
  SleepDeadline(const SleepDeadline&) = delete;
  SleepDeadline& operator=(const SleepDeadline&) = delete;

 private:
  Deadline saved_;
};

// Name of the deadline-aware VFS, or nullptr (then SQLite's default is used as is).
const char* deadline_vfs();

struct FileId {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  bool operator==(const FileId&) const = default;
};

// nullopt with errno set when the path cannot be stat'ed.
std::optional<FileId> file_id(const std::string& path);
std::string missing_file_reason(int err);
[[noreturn]] void fail_open(const std::string& path, const std::string& why);
// Same, as SchemaMismatch: the file opens but its schema is not one maildict can use.
[[noreturn]] void fail_schema(const std::string& path, const std::string& why);

// Gives a database file this process has just created mode 0660 minus the umask, and never
// any permission for others: 0640 under the usual umask 022, 0660 under 002 (a group of admin
// tools that write it), 0600 under 077. Only a file that is still empty is changed: one that
// another process filled meanwhile is left alone.
void restrict_new_file(const std::string& path);

// The database file, -wal or -shm that others may read (mode & 0004), as a sentence for the
// log; nullopt when there is none (or the files cannot be examined).
std::optional<std::string> readable_by_others(const std::string& path);

// Opens with the deadline VFS and extended result codes. Throws std::runtime_error naming the
// file ("database file missing" when it does not exist and `flags` lacks CREATE).
DbPtr open_db(const std::string& path, int flags);
// Runs SQL or throws naming the file and `what`.
void exec(sqlite3* db, const char* sql, const std::string& path, const char* what);
// Runs a statement that yields one integer (PRAGMAs, counts). Throws on error.
std::int64_t query_int(sqlite3* db, const char* sql, const std::string& path);

// Errors after which a handle cannot be trusted: the file is gone, moved, damaged, or the
// schema changed under us. A fresh handle may fix it (the file was restored or recreated).
bool needs_reopen(int rc);
// BUSY, LOCKED, PROTOCOL: someone holds a lock (PROTOCOL: the WAL read-lock retries ran out).
bool is_lock_error(int rc);

}  // namespace maildict::storage::sqlite
