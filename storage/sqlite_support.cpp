#include "storage/sqlite_support.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace maildict::storage::sqlite {

namespace {

constexpr Deadline kNoDeadline = Deadline::max();
thread_local Deadline t_sleep_deadline = kNoDeadline;

sqlite3_vfs* g_base_vfs = nullptr;
sqlite3_vfs g_deadline_vfs;

int deadline_sleep(sqlite3_vfs*, int microseconds) {
  Deadline d = t_sleep_deadline;
  if (d != kNoDeadline) {
    auto left = std::chrono::ceil<std::chrono::microseconds>(d - Clock::now()).count();
    if (left <= 0) return 0;
    if (left < microseconds) microseconds = static_cast<int>(left);
  }
  return g_base_vfs->xSleep(g_base_vfs, microseconds);
}

}  // namespace

SleepDeadline::SleepDeadline(Deadline d) : saved_(t_sleep_deadline) { t_sleep_deadline = d; }
SleepDeadline::~SleepDeadline() { t_sleep_deadline = saved_; }

const char* deadline_vfs() {
  static const char* name = []() -> const char* {
    g_base_vfs = sqlite3_vfs_find(nullptr);
    if (g_base_vfs == nullptr || g_base_vfs->xSleep == nullptr) return nullptr;
    // A field-by-field copy keeps pAppData, which the unix VFS methods read from the pointer
    // they are given, so every other method behaves exactly as the original.
    g_deadline_vfs = *g_base_vfs;
    g_deadline_vfs.zName = "maildict-deadline";
    g_deadline_vfs.pNext = nullptr;
    g_deadline_vfs.xSleep = &deadline_sleep;
    if (sqlite3_vfs_register(&g_deadline_vfs, 0) != SQLITE_OK) return nullptr;
    return g_deadline_vfs.zName;
  }();
  return name;
}

std::optional<FileId> file_id(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileId{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

std::string missing_file_reason(int err) {
  if (err == ENOENT) return "database file missing";
  return std::string("cannot access database file: ") + std::strerror(err);
}

void fail_open(const std::string& path, const std::string& why) {
  throw std::runtime_error("sqlite:" + path + ": " + why);
}

void fail_schema(const std::string& path, const std::string& why) {
  throw SchemaMismatch("sqlite:" + path + ": " + why);
}

namespace {

// The process's umask, read without changing it (umask(2) can only be read by setting it,
// which would race with other threads creating files): Linux shows it in /proc/self/status.
mode_t current_umask() {
  std::FILE* f = std::fopen("/proc/self/status", "re");
  if (f == nullptr) return 022;
  char line[256];
  unsigned mask = 022;
  while (std::fgets(line, sizeof line, f) != nullptr)
    if (std::sscanf(line, "Umask: %o", &mask) == 1) break;
  std::fclose(f);
  return static_cast<mode_t>(mask);
}

}  // namespace

void restrict_new_file(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != 0) return;
  // SQLite creates files 0644 minus the umask: group write never comes through, though a
  // group of admin tools (umask 002) needs it. Read and write for the owner and, as the umask
  // allows, the group; nothing for others, whatever the umask.
  const mode_t mode = 0660 & ~current_umask() & ~static_cast<mode_t>(S_IRWXO);
  if ((st.st_mode & 07777) == mode) return;
  // chmod by name, not by descriptor: opening SQLite's file here would be exactly what DESIGN.md
  // §2 rule 8 forbids (a close drops SQLite's POSIX locks).
  ::chmod(path.c_str(), mode | S_IRUSR | S_IWUSR);
}

std::optional<std::string> readable_by_others(const std::string& path) {
  std::string found;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::string file = path + suffix;
    struct stat st;
    if (::stat(file.c_str(), &st) != 0 || !(st.st_mode & S_IROTH)) continue;
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    if (!found.empty()) found += ", ";
    found += file + " (mode " + mode + ")";
  }
  if (found.empty()) return std::nullopt;
  return "readable by every local user: " + found +
         "; the directory holds password hashes and relay passwords, make it private (chmod o-rwx)";
}

DbPtr open_db(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, deadline_vfs());
  DbPtr db(raw);
  if (rc != SQLITE_OK) {
    // Without SQLITE_OPEN_CREATE a missing file is CANTOPEN; say so plainly.
    if ((rc & 0xff) == SQLITE_CANTOPEN && !(flags & SQLITE_OPEN_CREATE)) {
      int err = 0;
      if (!file_id(path)) err = errno;
      if (err != 0) fail_open(path, missing_file_reason(err));
    }
    fail_open(path, std::string("cannot open: ") + (db ? sqlite3_errmsg(db.get()) : sqlite3_errstr(rc)));
  }
  sqlite3_extended_result_codes(db.get(), 1);
  return db;
}

void exec(sqlite3* db, const char* sql, const std::string& path, const char* what) {
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) fail_open(path, std::string(what) + ": " + sqlite3_errmsg(db));
}

std::int64_t query_int(sqlite3* db, const char* sql, const std::string& path) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &raw, nullptr) != SQLITE_OK)
    fail_open(path, std::string("cannot read the database: ") + sqlite3_errmsg(db));
  StmtPtr stmt(raw);
  int rc = sqlite3_step(stmt.get());
  if (rc != SQLITE_ROW) fail_open(path, std::string("cannot read the database: ") + sqlite3_errmsg(db));
  return sqlite3_column_int64(stmt.get(), 0);
}

bool needs_reopen(int rc) {
  switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_SCHEMA:
    case SQLITE_ERROR:
    case SQLITE_MISUSE:
      return true;
    default:
      return rc == SQLITE_READONLY_DBMOVED;
  }
}

bool is_lock_error(int rc) {
  int primary = rc & 0xff;
  return primary == SQLITE_BUSY || primary == SQLITE_LOCKED || primary == SQLITE_PROTOCOL;
}

}  // namespace maildict::storage::sqlite
