#include "storage/sqlite_directory.hpp"

#include <sqlite3.h>
#include <sys/stat.h>

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

#include "storage/directory_sql.hpp"
#include "storage/sql_directory.hpp"
#include "storage/sql_session.hpp"
#include "storage/sqlite_session.hpp"
#include "storage/sqlite_support.hpp"

namespace maildict::storage {

using namespace sqlite;

namespace {

constexpr int kPrepareSchemaBusyMs = 5000;

const char kSchemaSql[] = R"SQL(
CREATE TABLE domains (
  domain    TEXT PRIMARY KEY NOT NULL,
  active    INTEGER NOT NULL DEFAULT 1,
  alias_for TEXT NULL
);
CREATE TABLE users (
  local_part  TEXT NOT NULL,
  domain      TEXT NOT NULL,
  password    TEXT NULL,
  uid         INTEGER NULL,
  gid         INTEGER NULL,
  home        TEXT NULL,
  mail        TEXT NULL,
  quota_bytes INTEGER NULL,
  active      INTEGER NOT NULL DEFAULT 1,
  PRIMARY KEY (local_part, domain)
);
-- Iteration walks users in (domain, local_part) order; this index makes that a plain scan.
CREATE INDEX users_by_domain ON users (domain, local_part);
CREATE TABLE aliases (
  local_part  TEXT NOT NULL,  -- '' is the domain's catch-all
  domain      TEXT NOT NULL,
  destination TEXT NOT NULL,
  active      INTEGER NOT NULL DEFAULT 1,
  PRIMARY KEY (domain, local_part, destination)
);
CREATE TABLE sender_logins (
  login   TEXT NOT NULL,
  address TEXT NOT NULL,
  PRIMARY KEY (login, address)
);
-- Credentials smtpd presents to outgoing relays: `relay host smtp+tls://LABEL@host auth <t>`
-- asks credentials/LABEL. password is clear text (smtpd sends it in AUTH PLAIN).
CREATE TABLE relay_credentials (
  label    TEXT PRIMARY KEY NOT NULL,
  username TEXT NOT NULL,
  password TEXT NOT NULL
);
PRAGMA user_version = 1;  -- kSqliteSchemaVersion
)SQL";

// Added to version 1 without a version bump: only new objects, so an older maildict keeps
// working on a database that has them, and prepare_schema adds them to older databases.
const char kSmtpdSchemaSql[] = R"SQL(
-- The small operator-managed lists smtpd asks for that are not users or aliases (see
-- specs/smtpd-tables.md §5.2): service 'netaddr' (key: an address, CIDR block or 'local'; a
-- check matches), 'addrname' (key: a local address, value: the host name), 'source' (key '',
-- values: the source addresses smtpd cycles through), 'relayhost' (key: a recipient domain,
-- or '' for the fetched relay; value: a relay URL).
CREATE TABLE IF NOT EXISTS smtpd_values (
  service TEXT NOT NULL,
  key     TEXT NOT NULL,
  value   TEXT NOT NULL,
  PRIMARY KEY (service, key, value)
);
-- mailaddrmap asks which aliases point to a login: without this, a scan of every alias.
CREATE INDEX IF NOT EXISTS aliases_by_destination ON aliases (destination);
)SQL";

std::int64_t count_user_tables(sqlite3* db, const std::string& path) {
  return query_int(db,
                   "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                   "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
                   path);
}


}  // namespace

const char* default_schema_sql() {
  static const std::string full = std::string(kSchemaSql) + kSmtpdSchemaSql;
  return full.c_str();
}

SqliteBackend::SqliteBackend(std::string path, UserDefaults defaults, QuerySetup queries)
    : path_(std::move(path)),
      defaults_(std::move(defaults)),
      sql_(with_overrides(directory_sql(SqlDialect::sqlite), queries.sql_overrides)),
      existing_(std::move(queries.existing)) {}

SqliteBackend::~SqliteBackend() {
  std::lock_guard lock(probe_mutex_);
  close_probe();
}

namespace {

// A database created before smtpd_values existed gets it here. Best effort: a read-only file
// keeps serving everything else, and only the smtpd questions that need the table fail.
void add_smtpd_tables(sqlite3* h) {
  auto missing = [h] {
    sqlite3_stmt* s = nullptr;
    bool absent = false;
    if (sqlite3_prepare_v2(h,
                           "SELECT count(*) FROM sqlite_master WHERE (type = 'table' AND name = 'smtpd_values') "
                           "OR (type = 'index' AND name = 'aliases_by_destination')",
                           -1, &s, nullptr) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
      absent = sqlite3_column_int64(s, 0) != 2;
    sqlite3_finalize(s);
    return absent;
  };
  if (!missing()) return;
  if (sqlite3_exec(h, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) return;
  if (sqlite3_exec(h, kSmtpdSchemaSql, nullptr, nullptr, nullptr) == SQLITE_OK)
    sqlite3_exec(h, "COMMIT", nullptr, nullptr, nullptr);
  else
    sqlite3_exec(h, "ROLLBACK", nullptr, nullptr, nullptr);
}

}  // namespace

void SqliteBackend::prepare_schema() {
  // Someone else's schema is served as it is; only check that the file is there.
  if (existing_) {
    open_sqlite_session(path_, SessionRole::read);
    return;
  }
  const bool existed = file_id(path_).has_value();
  DbPtr db = open_db(path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  // SQLite created the file (empty, with the umask's mode) and has written nothing yet. The
  // directory holds password hashes and relay passwords in clear: nobody but its owner and
  // group may read it. Done before the first statement, so the -wal and -shm files, which
  // SQLite creates later with the database file's mode, are private too.
  if (!existed) restrict_new_file(path_);
  sqlite3* h = db.get();
  sqlite3_busy_timeout(h, kPrepareSchemaBusyMs);
  if (query_int(h, "PRAGMA user_version", path_) > kSqliteSchemaVersion)
    fail_schema(path_, "schema version is newer than this maildict understands (" +
                         std::to_string(kSqliteSchemaVersion) + ")");

  // WAL lets the pool read while the admin tool writes. It cannot change inside a
  // transaction, and a file that refuses it (read-only medium) still works, only slower.
  sqlite3_exec(h, "PRAGMA journal_mode = WAL", nullptr, nullptr, nullptr);

  if (count_user_tables(h, path_) == 0) {
    exec(h, "BEGIN IMMEDIATE", path_, "cannot create the schema");
    try {
      // Another process (a second daemon, the admin tool) may have won the race.
      if (count_user_tables(h, path_) == 0) {
        exec(h, kSchemaSql, path_, "cannot create the schema");
        exec(h, kSmtpdSchemaSql, path_, "cannot create the schema");
      }
      exec(h, "COMMIT", path_, "cannot create the schema");
    } catch (...) {
      sqlite3_exec(h, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
    return;
  }

  // Someone else's tables: refuse now rather than answer "temporary failure" to every lookup.
  auto ours = query_int(h,
                        "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                        "AND name IN ('domains', 'users')",
                        path_);
  if (ours != 2) fail_schema(path_, "database has tables but not maildict's (domains, users)");
  add_smtpd_tables(h);
}

std::unique_ptr<DirectoryConnection> SqliteBackend::connect() {
  if (existing_) return make_existing_schema_directory(open_sqlite_session(path_, SessionRole::read), existing_, defaults_);
  return make_sql_directory(open_sqlite_session(path_, SessionRole::read), sql_, defaults_);
}

std::unique_ptr<SqlSession> SqliteBackend::open_session(SessionRole role) { return open_sqlite_session(path_, role); }

void SqliteBackend::close_probe() {
  // SQLite's view of the -shm file goes with the connection that holds it.
  probe_shm_ = nullptr;
  probe_known_ = false;
  if (probe_stmt_) sqlite3_finalize(probe_stmt_);
  if (probe_db_) sqlite3_close_v2(probe_db_);
  probe_stmt_ = nullptr;
  probe_db_ = nullptr;
}

bool SqliteBackend::open_probe(std::uint64_t dev, std::uint64_t ino) {
  sqlite3* db = nullptr;
  // data_version() runs on I/O threads: its SQLite calls must never sleep (see deadline_vfs()).
  SleepDeadline no_sleep(Clock::now());
  if (sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, deadline_vfs()) !=
      SQLITE_OK) {
    sqlite3_close_v2(db);
    return false;
  }
  sqlite3_extended_result_codes(db, 1);
  // Never wait: a caller that cannot get a version simply does not trust its cache.
  sqlite3_busy_timeout(db, 0);
  // The probe only reads; a write through it would be a bug.
  sqlite3_exec(db, "PRAGMA query_only = 1", nullptr, nullptr, nullptr);
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v3(db, "PRAGMA data_version", -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) {
    sqlite3_close_v2(db);
    return false;
  }
  // A first read proves the file is a readable database.
  int rc = sqlite3_step(stmt);
  sqlite3_reset(stmt);
  if (rc != SQLITE_ROW) {
    sqlite3_finalize(stmt);
    sqlite3_close_v2(db);
    return false;
  }
  probe_db_ = db;
  probe_stmt_ = stmt;
  probe_file_dev_ = dev;
  probe_file_ino_ = ino;
  ++probe_epoch_;
  find_wal_index();
  return true;
}

namespace {

// The WAL-index header (https://www.sqlite.org/walformat.html, "2.1 The WAL-Index Header"): two
// copies of a 48-byte block at the start of the wal-index, rewritten by every committing
// writer, whatever its process; its change counter moves on every commit. The wal-index is
// mapped by SQLite in regions of 32768 bytes (walformat.html: "pages").
constexpr std::size_t kWalHeaderSize = 48;
constexpr std::uint32_t kWalIndexFormat = 3007000;
constexpr int kWalIndexRegionSize = 32768;

}  // namespace

void SqliteBackend::find_wal_index() {
  // Only a database in WAL mode has a wal-index. It cannot leave WAL mode while the probe is
  // open: that needs an exclusive lock, and every WAL connection keeps a shared one.
  sqlite3_stmt* mode = nullptr;
  bool wal = false;
  if (sqlite3_prepare_v2(probe_db_, "PRAGMA journal_mode", -1, &mode, nullptr) == SQLITE_OK &&
      sqlite3_step(mode) == SQLITE_ROW) {
    auto* text = reinterpret_cast<const char*>(sqlite3_column_text(mode, 0));
    wal = text != nullptr && std::string_view(text) == "wal";
  }
  sqlite3_finalize(mode);
  if (!wal) return;
  // SQLite's own mapping of the wal-index, asked through its public file interface: the
  // database file's handle (SQLITE_FCNTL_FILE_POINTER) and its xShmMap method, which hands out
  // the region the probe connection's WAL already has mapped. Nothing is opened, mapped or
  // closed outside SQLite, so SQLite's locks on the -shm stay exactly as SQLite keeps them,
  // and the memory stays valid while the probe connection is open.
  sqlite3_file* file = nullptr;
  if (sqlite3_file_control(probe_db_, "main", SQLITE_FCNTL_FILE_POINTER, &file) != SQLITE_OK || file == nullptr ||
      file->pMethods == nullptr || file->pMethods->iVersion < 2 || file->pMethods->xShmMap == nullptr)
    return;
  void volatile* region = nullptr;
  if (file->pMethods->xShmMap(file, 0, kWalIndexRegionSize, 0, &region) != SQLITE_OK || region == nullptr) return;
  probe_shm_ = static_cast<const volatile unsigned char*>(region);
}

bool SqliteBackend::read_wal_header(unsigned char (&out)[48]) const {
  unsigned char second[kWalHeaderSize];
  // Byte-wise volatile reads: other processes write this memory, the compiler must not cache
  // or merge them. The fences order the two copies against the writer's barrier.
  for (std::size_t i = 0; i < kWalHeaderSize; ++i) out[i] = probe_shm_[i];
  std::atomic_thread_fence(std::memory_order_acquire);
  for (std::size_t i = 0; i < kWalHeaderSize; ++i) second[i] = probe_shm_[kWalHeaderSize + i];
  std::atomic_thread_fence(std::memory_order_acquire);
  // Different copies: a writer is in the middle of a commit; let SQLite sort it out.
  if (std::memcmp(out, second, kWalHeaderSize) != 0) return false;
  std::uint32_t format;
  std::memcpy(&format, out, sizeof format);
  return format == kWalIndexFormat && out[12] == 1;  // isInit
}

std::optional<std::uint64_t> SqliteBackend::data_version() {
  std::lock_guard lock(probe_mutex_);
  auto now = Clock::now();
  if (!probe_db_ || now >= probe_next_identity_check_) {
    auto id = file_id(path_);
    if (!id) {
      close_probe();
      return std::nullopt;
    }
    if (probe_db_ && (id->dev != probe_file_dev_ || id->ino != probe_file_ino_)) close_probe();
    if (!probe_db_ && !open_probe(id->dev, id->ino)) return std::nullopt;
    probe_next_identity_check_ = now + kIdentityCheckInterval;
  }

  // The header unchanged since the last PRAGMA: no commit has ended since, so the version that
  // PRAGMA gave still holds, and a cache hit costs no system call.
  unsigned char header[kWalHeaderSize];
  const bool header_ok = probe_shm_ != nullptr && read_wal_header(header);
  if (header_ok && probe_known_ && std::memcmp(header, probe_header_, kWalHeaderSize) == 0) return probe_version_;

  // PRAGMA data_version changes whenever another connection (in any process) has committed.
  // Only SQLite touches the database's files (DESIGN.md §2 rule 8): this starts and ends a
  // read transaction on the probe's own long-lived connection, which costs a few system calls
  // (lock and unlock on the -shm file, a stat; tests/bench/README.md has what that costs).
  SleepDeadline no_sleep(now);
  int rc = sqlite3_step(probe_stmt_);
  std::int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(probe_stmt_, 0) : 0;
  sqlite3_reset(probe_stmt_);
  if (rc != SQLITE_ROW) {
    // A lock held by a writer (or a WAL recovery) passes by itself; keep the connection and
    // only distrust the cache for this lookup. A damaged or vanished file needs a new one.
    if (!is_lock_error(rc)) close_probe();
    return std::nullopt;
  }
  // data_version values are only comparable within one probe connection; the epoch (bumped on
  // every reopen) keeps a reopened probe from repeating a number an older one already gave.
  constexpr std::uint64_t low_mask = (std::uint64_t{1} << 40) - 1;
  const std::uint64_t version = (probe_epoch_ << 40) | (static_cast<std::uint64_t>(v) & low_mask);
  // The header was read before the PRAGMA: a commit in between moves the header away from the
  // saved copy, so the next call asks SQLite again (never the other way round).
  probe_known_ = header_ok;
  if (header_ok) std::memcpy(probe_header_, header, kWalHeaderSize);
  probe_version_ = version;
  return version;
}

std::string SqliteBackend::describe() const { return "sqlite:" + path_; }

std::optional<std::string> SqliteBackend::access_warning() const {
  auto why = readable_by_others(path_);
  if (!why) return std::nullopt;
  return "sqlite:" + path_ + ": " + *why;
}

}  // namespace maildict::storage
