#include "storage/sqlite_directory.hpp"

#include "storage/sql_session.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <grp.h>
#include <pwd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "storage/login_name.hpp"
#include "storage/password_scheme.hpp"

namespace maildict::storage {

namespace {

constexpr int kSchemaVersion = 1;

// Opening and preparing happen outside any request's deadline; a lock held by a writer for
// longer than this makes the pool report the open as failed and retry a little later.
constexpr int kOpenBusyMs = 100;
constexpr int kPrepareSchemaBusyMs = 5000;
constexpr int kProgressSteps = 1000;

// How often data_version() and each connection check that the path still names the file they
// have open (deleted, or replaced by a rename). A stat() is a system call, slower than the
// rest of data_version() on its fast path, so it is not made on every call.
constexpr auto kIdentityCheckInterval = std::chrono::milliseconds(250);

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
PRAGMA user_version = 1;
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

// "active = 1" rather than "<> 0": a value nobody meant as "enabled" (2, 'no', '') must not
// let a disabled account log in.
const char kPassdbSql[] =
    "SELECT u.password FROM users u JOIN domains d ON d.domain = u.domain "
    "WHERE u.local_part = ?1 AND u.domain = ?2 AND u.active = 1 AND d.active = 1";
const char kUserdbSql[] =
    "SELECT u.uid, u.gid, u.home, u.mail, u.quota_bytes FROM users u "
    "JOIN domains d ON d.domain = u.domain "
    "WHERE u.local_part = ?1 AND u.domain = ?2 AND u.active = 1 AND d.active = 1";
// smtpd's questions. Prepared on first use, so a database whose schema predates a table still
// answers Dovecot; only the smtpd question that needs the table fails (temporarily).
const char kDomainRowSql[] = "SELECT active, alias_for FROM domains WHERE domain = ?1";
const char kAliasRowsSql[] =
    "SELECT destination FROM aliases WHERE local_part = ?1 AND domain = ?2 AND active = 1 ORDER BY rowid";
const char kUserActiveSql[] =
    "SELECT 1 FROM users u JOIN domains d ON d.domain = u.domain "
    "WHERE u.local_part = ?1 AND u.domain = ?2 AND u.active = 1 AND d.active = 1";
const char kRelaySql[] = "SELECT username, password FROM relay_credentials WHERE label = ?1";
const char kSenderLoginsSql[] = "SELECT address FROM sender_logins WHERE login IN (?1, ?2) ORDER BY address";
// Aliases whose only active destination is this user (in either spelling); never the catch-all,
// which would let one user send as anyone at the domain.
const char kSoleAliasesSql[] =
    "SELECT a.local_part, a.domain FROM aliases a JOIN domains d ON d.domain = a.domain "
    "WHERE a.destination IN (?1, ?2) AND a.active = 1 AND d.active = 1 AND a.local_part <> '' "
    "AND NOT EXISTS (SELECT 1 FROM aliases o WHERE o.domain = a.domain AND o.local_part = a.local_part "
    "AND o.active = 1 AND o.destination <> a.destination) ORDER BY a.domain, a.local_part";
const char kSmtpdValuesSql[] =
    "SELECT value FROM smtpd_values WHERE service = ?1 AND key = ?2 ORDER BY rowid";
const char kSmtpdKeysSql[] = "SELECT DISTINCT key FROM smtpd_values WHERE service = ?1 ORDER BY key";

const char kUsersSql[] =
    "SELECT u.local_part, u.domain, u.uid, u.gid, u.home, u.mail, u.quota_bytes FROM users u "
    "JOIN domains d ON d.domain = u.domain "
    "WHERE u.active = 1 AND d.active = 1 ORDER BY u.domain, u.local_part";

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// Ends the statement's read transaction as soon as the answer is read: a statement left
// stepping would pin an old snapshot (stale answers) and stop WAL checkpoints.
class ResetOnExit {
 public:
  explicit ResetOnExit(sqlite3_stmt* s) : s_(s) {}
  ~ResetOnExit() { sqlite3_reset(s_); }
  ResetOnExit(const ResetOnExit&) = delete;
  ResetOnExit& operator=(const ResetOnExit&) = delete;

 private:
  sqlite3_stmt* s_;
};

// One snapshot for the questions that read several statements (recipient resolution, sender
// addresses), so a commit landing between two of them cannot mix old and new rows. Best effort:
// if BEGIN fails the statements still run, each in its own snapshot. Declared before any
// ResetOnExit, so every statement is reset before the transaction ends; a transaction left
// open would pin an old snapshot for good.
class ReadTransaction {
 public:
  ReadTransaction(sqlite3* db, bool& healthy) : db_(db), healthy_(healthy) {
    open_ = sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) == SQLITE_OK;
  }
  ~ReadTransaction() {
    if (!open_) return;
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK)
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    // Still inside a transaction: this handle would serve an old snapshot; let the pool
    // replace it.
    if (!sqlite3_get_autocommit(db_)) healthy_ = false;
  }
  ReadTransaction(const ReadTransaction&) = delete;
  ReadTransaction& operator=(const ReadTransaction&) = delete;

 private:
  sqlite3* db_;
  bool& healthy_;
  bool open_ = false;
};

struct FileId {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  bool operator==(const FileId&) const = default;
};

// nullopt with errno set when the path cannot be stat'ed.
std::optional<FileId> file_id(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileId{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

std::string missing_file_reason(int err) {
  if (err == ENOENT) return "database file missing";
  return std::string("cannot access database file: ") + std::strerror(err);
}

[[noreturn]] void fail_open(const std::string& path, const std::string& why) {
  throw std::runtime_error("sqlite:" + path + ": " + why);
}

// ---- Sleeping with a deadline ------------------------------------------------------------
// SQLite waits in two places: the busy handler (bounded by sqlite3_busy_timeout) and the WAL
// read-lock retry loop, which sleeps up to ~10 s in total before giving up with
// SQLITE_PROTOCOL and never asks the busy handler or the progress handler (a process holding
// the -shm lock bytes causes it). Both sleep through the VFS, so connections use a copy of the
// default VFS whose xSleep never sleeps past the deadline of the query running on this thread:
// once the deadline is gone the loop runs out its retries at once and the query fails.

constexpr Deadline kNoDeadline = Deadline::max();
thread_local Deadline t_sleep_deadline = kNoDeadline;

class SleepDeadline {
 public:
  explicit SleepDeadline(Deadline d) : saved_(t_sleep_deadline) { t_sleep_deadline = d; }
  ~SleepDeadline() { t_sleep_deadline = saved_; }
  SleepDeadline(const SleepDeadline&) = delete;
  SleepDeadline& operator=(const SleepDeadline&) = delete;

 private:
  Deadline saved_;
};

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

// Name of the deadline-aware VFS, or nullptr (then SQLite's default is used as is).
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

// Runs a statement that yields one integer (PRAGMAs, counts). Throws on error.
std::int64_t query_int(sqlite3* db, const char* sql, const std::string& path) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &raw, nullptr) != SQLITE_OK)
    fail_open(path, std::string("cannot read the database: ") + sqlite3_errmsg(db));
  StmtPtr stmt(raw);
  int rc = sqlite3_step(stmt.get());
  if (rc != SQLITE_ROW) fail_open(path, std::string("cannot read the database: ") + sqlite3_errmsg(db));
  return sqlite3_column_int64(stmt.get(), 0);
}

void check_schema_version(sqlite3* db, const std::string& path) {
  auto version = query_int(db, "PRAGMA user_version", path);
  if (version > kSchemaVersion)
    fail_open(path, "schema version " + std::to_string(version) +
                        " is newer than this maildict understands (" + std::to_string(kSchemaVersion) + ")");
}

std::int64_t count_user_tables(sqlite3* db, const std::string& path) {
  return query_int(db,
                   "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                   "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
                   path);
}

StmtPtr prepare(sqlite3* db, const char* sql, const std::string& path) {
  sqlite3_stmt* raw = nullptr;
  // The message names a table or column of our own SQL, never a value: safe to pass on.
  if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr) != SQLITE_OK)
    fail_open(path, std::string("schema not usable: ") + sqlite3_errmsg(db));
  return StmtPtr(raw);
}

// Errors after which this handle cannot be trusted: the file is gone, moved, damaged, or the
// schema changed under us. A fresh handle may fix it (the file was restored or recreated).
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

std::string column_text(sqlite3_stmt* s, int col) {
  auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, col));
  if (p == nullptr) return {};
  return std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s, col)));
}

bool column_null(sqlite3_stmt* s, int col) { return sqlite3_column_type(s, col) == SQLITE_NULL; }

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

bool has_forbidden_char(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x21 || c == 0x7f || c == '/') return true;
  return false;
}

// smtpd takes uid and gid as numbers only (it never resolves names), while the directory's
// defaults may be account names for Dovecot's sake. A name that does not resolve is a
// temporary failure with the reason: a guessed number would deliver mail as the wrong user.
bool numeric_id(const std::string& id, bool group, std::string& out, std::string& why) {
  if (!id.empty() && id.size() < 11 && std::all_of(id.begin(), id.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    out = id;
    return true;
  }
  std::vector<char> buf(16384);
  int err = 0;
  if (group) {
    struct group gr, *found = nullptr;
    err = ::getgrnam_r(id.c_str(), &gr, buf.data(), buf.size(), &found);
    if (err == 0 && found) {
      out = std::to_string(found->gr_gid);
      return true;
    }
  } else {
    struct passwd pw, *found = nullptr;
    err = ::getpwnam_r(id.c_str(), &pw, buf.data(), buf.size(), &found);
    if (err == 0 && found) {
      out = std::to_string(found->pw_uid);
      return true;
    }
  }
  why = std::string(group ? "gid '" : "uid '") + id + (group ? "' is not a system group" : "' is not a system user") +
        (err != 0 ? std::string(" (") + std::strerror(err) + ")" : std::string()) +
        "; smtpd needs a number (set " + (group ? "default_gid" : "default_uid") + " or the column)";
  return false;
}

// Reads uid, gid, home, mail, quota_bytes starting at column `first`.
UserdbEntry userdb_from_row(sqlite3_stmt* s, int first, const MailboxName& name, const UserDefaults& defaults) {
  UserdbEntry e;
  e.user = name.canonical();
  e.uid = column_null(s, first) ? defaults.uid : column_text(s, first);
  e.gid = column_null(s, first + 1) ? defaults.gid : column_text(s, first + 1);
  e.home = column_null(s, first + 2) ? expand_template(defaults.home, name) : column_text(s, first + 2);
  e.mail = column_null(s, first + 3) ? expand_template(defaults.mail, name) : column_text(s, first + 3);
  // NULL: no per-user rule, Dovecot's configured quota_rule applies. 0 is emitted too: Dovecot
  // reads a zero limit as "unlimited", so an operator can lift the global limit for one user.
  // Anything that is not a non-negative integer would make Dovecot fail the whole lookup, so
  // it is left out instead.
  if (sqlite3_column_type(s, first + 4) == SQLITE_INTEGER) {
    auto bytes = sqlite3_column_int64(s, first + 4);
    if (bytes >= 0) e.quota_rule = "*:storage=" + std::to_string(bytes) + "B";
  }
  return e;
}

class SqliteConnection final : public DirectoryConnection {
 public:
  SqliteConnection(const std::string& path, const UserDefaults& defaults) : path_(path), defaults_(defaults) {
    open();
  }

  Result<PassdbEntry> passdb(std::string_view login, Deadline deadline) override {
    auto name = split_login(login);
    if (!name) return Result<PassdbEntry>::not_found();
    std::string why;
    SleepDeadline sleep_limit(deadline);
    if (!begin(deadline, why)) return Result<PassdbEntry>::temp_fail(std::move(why));

    sqlite3_stmt* s = passdb_.get();
    ResetOnExit reset(s);
    bind_name(s, *name);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return Result<PassdbEntry>::not_found();
    if (rc != SQLITE_ROW) return Result<PassdbEntry>::temp_fail(failure(rc));

    PassdbEntry e;
    e.user = name->canonical();
    // An empty string cannot verify any password either; treat it like NULL rather than
    // handing Dovecot a bare "{CRYPT}".
    if (!column_null(s, 0)) {
      std::string stored = column_text(s, 0);
      if (!stored.empty()) e.password = with_scheme_prefix(stored);
    }
    return Result<PassdbEntry>::found(std::move(e));
  }

  Result<UserdbEntry> userdb(std::string_view login, Deadline deadline) override {
    auto name = split_login(login);
    if (!name) return Result<UserdbEntry>::not_found();
    std::string why;
    SleepDeadline sleep_limit(deadline);
    if (!begin(deadline, why)) return Result<UserdbEntry>::temp_fail(std::move(why));

    sqlite3_stmt* s = userdb_.get();
    ResetOnExit reset(s);
    bind_name(s, *name);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return Result<UserdbEntry>::not_found();
    if (rc != SQLITE_ROW) return Result<UserdbEntry>::temp_fail(failure(rc));
    return Result<UserdbEntry>::found(userdb_from_row(s, 0, *name, defaults_));
  }

  Result<std::vector<UserdbEntry>> users(Deadline deadline) override {
    using R = Result<std::vector<UserdbEntry>>;
    std::string why;
    SleepDeadline sleep_limit(deadline);
    if (!begin(deadline, why)) return R::temp_fail(std::move(why));

    sqlite3_stmt* s = users_.get();
    ResetOnExit reset(s);
    std::vector<UserdbEntry> out;
    MailboxName name;
    for (;;) {
      int rc = sqlite3_step(s);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return R::temp_fail(failure(rc));
      // The progress handler only sees time spent inside SQLite; building entries for a big
      // directory happens out here.
      if ((out.size() & 1023) == 1023 && Clock::now() >= deadline_)
        return R::temp_fail("deadline passed while reading the rows");
      name.local_part = column_text(s, 0);
      name.domain = column_text(s, 1);
      out.push_back(userdb_from_row(s, 2, name, defaults_));
    }
    return R::found(std::move(out));
  }

  // ---- smtpd's questions ---------------------------------------------------------------------

  Result<std::string> domain_exists(std::string_view domain, Deadline deadline) override {
    using R = Result<std::string>;
    std::string name = lowered(domain);
    if (name.empty() || has_forbidden_char(name)) return R::not_found();
    std::string why;
    SleepDeadline sleep_limit(deadline);
    if (!begin(deadline, why)) return R::temp_fail(std::move(why));
    DomainRow row;
    int rc = read_domain(name, row, why);
    if (rc != SQLITE_DONE) return R::temp_fail(std::move(why));
    if (!row.exists || !row.active) return R::not_found();
    return R::found(std::move(name));
  }

  Result<std::vector<std::string>> resolve_recipient(std::string_view address, Deadline deadline) override {
    using R = Result<std::vector<std::string>>;
    auto name = split_address(address, defaults_.recipient_delimiter);
    if (!name) return R::not_found();
    std::string why;
    SleepDeadline sleep_limit(deadline);
    if (!begin(deadline, why)) return R::temp_fail(std::move(why));
    ReadTransaction snapshot(db_.get(), healthy_);
    std::vector<std::string> out;
    int rc = resolve(*name, /*follow_alias_domain=*/true, out, why);
    if (rc != SQLITE_DONE) return R::temp_fail(std::move(why));
    if (out.empty()) return R::not_found();
    return R::found(std::move(out));
  }

  Result<UserInfo> userinfo(std::string_view login, Deadline deadline) override {
    using R = Result<UserInfo>;
    auto name = split_login(login);
    if (!name) return R::not_found();
    std::string why;
    SleepDeadline sleep_limit(deadline);
    if (!begin(deadline, why)) return R::temp_fail(std::move(why));

    sqlite3_stmt* s = userdb_.get();
    UserdbEntry entry;
    {
      ResetOnExit reset(s);
      bind_name(s, *name);
      int rc = sqlite3_step(s);
      if (rc == SQLITE_DONE) return R::not_found();
      if (rc != SQLITE_ROW) return R::temp_fail(failure(rc));
      entry = userdb_from_row(s, 0, *name, defaults_);
    }
    UserInfo info;
    if (!numeric_id(entry.uid, false, info.uid, why) || !numeric_id(entry.gid, true, info.gid, why))
      return R::temp_fail(std::move(why));
    info.home = std::move(entry.home);
    return R::found(std::move(info));
  }

  Result<LoginHash> credentials(std::string_view login, Deadline deadline) override {
    using R = Result<LoginHash>;
    auto name = split_login(login);
    if (!name) return R::not_found();
    std::string why;
    SleepDeadline sleep_limit(deadline);
    if (!begin(deadline, why)) return R::temp_fail(std::move(why));

    sqlite3_stmt* s = passdb_.get();
    ResetOnExit reset(s);
    bind_name(s, *name);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return R::not_found();
    if (rc != SQLITE_ROW) return R::temp_fail(failure(rc));
    if (column_null(s, 0)) return R::not_found();
    auto hash = crypt_hash_for_smtpd(column_text(s, 0));
    if (!hash) return R::not_found();
    return R::found(LoginHash{name->canonical(), std::move(*hash)});
  }

  Result<RelayCredential> relay_credential(std::string_view label, Deadline deadline) override {
    using R = Result<RelayCredential>;
    std::string key = lowered(label);
    if (key.empty()) return R::not_found();
    std::string why;
    SleepDeadline sleep_limit(deadline);
    if (!begin(deadline, why)) return R::temp_fail(std::move(why));
    sqlite3_stmt* s = statement(relay_, kRelaySql, why);
    if (!s) return R::temp_fail(std::move(why));
    ResetOnExit reset(s);
    bind_text(s, 1, key);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return R::not_found();
    if (rc != SQLITE_ROW) return R::temp_fail(failure(rc));
    return R::found(RelayCredential{column_text(s, 0), column_text(s, 1)});
  }

  Result<std::vector<std::string>> sender_addresses(std::string_view login, Deadline deadline) override {
    using R = Result<std::vector<std::string>>;
    auto name = split_login(login);
    if (!name) return R::not_found();
    std::string why;
    SleepDeadline sleep_limit(deadline);
    if (!begin(deadline, why)) return R::temp_fail(std::move(why));
    ReadTransaction snapshot(db_.get(), healthy_);

    bool active = false;
    if (int rc = user_active(*name, active, why); rc != SQLITE_DONE) return R::temp_fail(std::move(why));
    if (!active) return R::not_found();

    const std::string canonical = name->canonical();
    const std::string delivery = delivery_name(*name);
    std::vector<std::string> out{canonical};
    auto add = [&out](std::string a) {
      if (!a.empty() && std::find(out.begin(), out.end(), a) == out.end()) out.push_back(std::move(a));
    };

    sqlite3_stmt* s = statement(sender_logins_, kSenderLoginsSql, why);
    if (!s) return R::temp_fail(std::move(why));
    {
      ResetOnExit reset(s);
      bind_text(s, 1, canonical);
      bind_text(s, 2, delivery);
      int rc;
      while ((rc = sqlite3_step(s)) == SQLITE_ROW) add(column_text(s, 0));
      if (rc != SQLITE_DONE) return R::temp_fail(failure(rc));
    }
    s = statement(sole_aliases_, kSoleAliasesSql, why);
    if (!s) return R::temp_fail(std::move(why));
    {
      ResetOnExit reset(s);
      bind_text(s, 1, canonical);
      bind_text(s, 2, delivery);
      int rc;
      while ((rc = sqlite3_step(s)) == SQLITE_ROW) add(column_text(s, 0) + "@" + column_text(s, 1));
      if (rc != SQLITE_DONE) return R::temp_fail(failure(rc));
    }
    return R::found(std::move(out));
  }

  Result<std::vector<std::string>> smtpd_values(std::string_view service, std::string_view key,
                                                Deadline deadline) override {
    using R = Result<std::vector<std::string>>;
    std::string why;
    SleepDeadline sleep_limit(deadline);
    if (!begin(deadline, why)) return R::temp_fail(std::move(why));
    sqlite3_stmt* s = statement(smtpd_values_, kSmtpdValuesSql, why);
    if (!s) return R::temp_fail(std::move(why));
    ResetOnExit reset(s);
    bind_text(s, 1, service);
    bind_text(s, 2, key);
    std::vector<std::string> out;
    if (int rc = collect(s, out); rc != SQLITE_DONE) return R::temp_fail(failure(rc));
    if (out.empty()) return R::not_found();
    return R::found(std::move(out));
  }

  Result<std::vector<std::string>> smtpd_keys(std::string_view service, Deadline deadline) override {
    using R = Result<std::vector<std::string>>;
    std::string why;
    SleepDeadline sleep_limit(deadline);
    if (!begin(deadline, why)) return R::temp_fail(std::move(why));
    sqlite3_stmt* s = statement(smtpd_keys_, kSmtpdKeysSql, why);
    if (!s) return R::temp_fail(std::move(why));
    ResetOnExit reset(s);
    bind_text(s, 1, service);
    std::vector<std::string> out;
    if (int rc = collect(s, out); rc != SQLITE_DONE) return R::temp_fail(failure(rc));
    if (out.empty()) return R::not_found();
    return R::found(std::move(out));
  }

  bool healthy() const override { return healthy_; }

 private:
  // ---- helpers of the smtpd questions (all return an sqlite code: SQLITE_DONE = answered) -----

  struct DomainRow {
    bool exists = false;
    bool active = false;
    std::string alias_for;
  };

  int read_domain(const std::string& domain, DomainRow& row, std::string& why) {
    sqlite3_stmt* s = statement(domain_row_, kDomainRowSql, why);
    if (!s) return SQLITE_ERROR;
    ResetOnExit reset(s);
    bind_text(s, 1, domain);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return SQLITE_DONE;
    if (rc != SQLITE_ROW) {
      why = failure(rc);
      return rc;
    }
    row.exists = true;
    // Same rule as the user queries: only exactly 1 is active.
    row.active = sqlite3_column_type(s, 0) == SQLITE_INTEGER && sqlite3_column_int64(s, 0) == 1;
    if (!column_null(s, 1)) row.alias_for = lowered(column_text(s, 1));
    return SQLITE_DONE;
  }

  int user_active(const MailboxName& name, bool& active, std::string& why) {
    sqlite3_stmt* s = statement(user_active_, kUserActiveSql, why);
    if (!s) return SQLITE_ERROR;
    ResetOnExit reset(s);
    bind_name(s, name);
    int rc = sqlite3_step(s);
    active = rc == SQLITE_ROW;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
      why = failure(rc);
      return rc;
    }
    return SQLITE_DONE;
  }

  int alias_rows(const MailboxName& name, std::vector<std::string>& rows, std::string& why) {
    sqlite3_stmt* s = statement(alias_rows_, kAliasRowsSql, why);
    if (!s) return SQLITE_ERROR;
    ResetOnExit reset(s);
    bind_name(s, name);
    int rc = collect(s, rows);
    if (rc != SQLITE_DONE) why = failure(rc);
    return rc;
  }

  // A destination that is an active local user becomes its delivery name, so smtpd delivers it
  // without another round through its rules; anything else (remote address, pipe, file, an
  // address at an alias domain) is left for smtpd to expand as written.
  int map_destinations(std::vector<std::string>& rows, std::vector<std::string>& out, std::string& why) {
    for (auto& dest : rows) {
      if (dest.find('@') != std::string::npos) {
        if (auto user = split_address(dest, {})) {
          bool active = false;
          if (int rc = user_active(*user, active, why); rc != SQLITE_DONE) return rc;
          if (active) {
            out.push_back(delivery_name(*user));
            continue;
          }
        }
      }
      out.push_back(std::move(dest));
    }
    return SQLITE_DONE;
  }

  // DESIGN.md §3, first match wins. An alias domain is followed once: its target's own
  // alias_for is not, so a loop (a -> b -> a) ends after one step.
  int resolve(const MailboxName& name, bool follow_alias_domain, std::vector<std::string>& out, std::string& why) {
    DomainRow domain;
    if (int rc = read_domain(name.domain, domain, why); rc != SQLITE_DONE) return rc;
    if (!domain.exists || !domain.active) return SQLITE_DONE;

    std::vector<std::string> rows;
    if (int rc = alias_rows(name, rows, why); rc != SQLITE_DONE) return rc;
    if (!rows.empty()) return map_destinations(rows, out, why);

    bool user = false;
    if (int rc = user_active(name, user, why); rc != SQLITE_DONE) return rc;
    if (user) {
      out.push_back(delivery_name(name));
      return SQLITE_DONE;
    }

    if (follow_alias_domain && !domain.alias_for.empty() && domain.alias_for != name.domain) {
      if (int rc = resolve(MailboxName{name.local_part, domain.alias_for}, false, out, why); rc != SQLITE_DONE)
        return rc;
      if (!out.empty()) return SQLITE_DONE;
    }

    if (int rc = alias_rows(MailboxName{"", name.domain}, rows, why); rc != SQLITE_DONE) return rc;
    return map_destinations(rows, out, why);
  }

  // Prepares an smtpd statement on first use (see kDomainRowSql). nullptr with `why` set when
  // the database cannot: a missing table is a temporary failure of that question alone, and the
  // connection stays healthy for everything else.
  sqlite3_stmt* statement(StmtPtr& slot, const char* sql, std::string& why) {
    if (slot) return slot.get();
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v3(db_.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(raw);
      int primary = rc & 0xff;
      if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED || primary == SQLITE_PROTOCOL)
        why = "database is locked";
      else  // the message names a table or column of our own SQL, never a value
        why = std::string("schema not usable for smtpd lookups: ") + sqlite3_errmsg(db_.get());
      return nullptr;
    }
    slot.reset(raw);
    return raw;
  }

  // Reads column 0 of every row. The caller resets the statement.
  int collect(sqlite3_stmt* s, std::vector<std::string>& out) {
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) out.push_back(column_text(s, 0));
    return rc;
  }

  static void bind_text(sqlite3_stmt* s, int index, std::string_view text) {
    // SQLITE_STATIC: the caller's string outlives the step, and ResetOnExit runs first.
    sqlite3_bind_text(s, index, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
  }

  void open() {
    auto id = file_id(path_);
    if (!id) fail_open(path_, missing_file_reason(errno));
    // Read-write without CREATE: WAL readers may need to create the -shm file, and a missing
    // database must stay an error instead of becoming an empty directory that rejects everyone.
    // SQLite falls back to read-only by itself when the file is write-protected.
    DbPtr db = open_db(path_, SQLITE_OPEN_READWRITE);
    sqlite3_busy_timeout(db.get(), kOpenBusyMs);
    // These connections only answer questions; make any accidental write fail loudly.
    exec(db.get(), "PRAGMA query_only = 1", path_, "cannot configure the connection");
    // SQLite's default 2 MiB page cache holds a fraction of a 100k-user directory; 16 MiB (an
    // upper bound, filled on use) saves a pread per lookup. Not mmap: an I/O error on a mapped
    // file is a SIGBUS that would take the daemon down instead of failing one lookup.
    exec(db.get(), "PRAGMA cache_size = -16384", path_, "cannot configure the connection");
    check_schema_version(db.get(), path_);
    StmtPtr passdb = prepare(db.get(), kPassdbSql, path_);
    StmtPtr userdb = prepare(db.get(), kUserdbSql, path_);
    StmtPtr users = prepare(db.get(), kUsersSql, path_);
    sqlite3_progress_handler(db.get(), kProgressSteps, &SqliteConnection::on_progress, this);

    passdb_ = std::move(passdb);
    userdb_ = std::move(userdb);
    users_ = std::move(users);
    db_ = std::move(db);
    file_ = *id;
    next_identity_check_ = Clock::now() + kIdentityCheckInterval;
    healthy_ = true;
  }

  void close() {
    // Statements belong to the handle: the lazily prepared ones go too and are prepared again
    // on the reopened handle.
    domain_row_.reset();
    alias_rows_.reset();
    user_active_.reset();
    relay_.reset();
    sender_logins_.reset();
    sole_aliases_.reset();
    smtpd_values_.reset();
    smtpd_keys_.reset();
    passdb_.reset();
    userdb_.reset();
    users_.reset();
    db_.reset();
  }

  static int on_progress(void* self) {
    return Clock::now() >= static_cast<SqliteConnection*>(self)->deadline_ ? 1 : 0;
  }

  // Arms the deadline for one query and makes sure the handle still reads the file that is
  // at `path_` now. False with `why` set when the query must not run.
  bool begin(Deadline deadline, std::string& why) {
    if (!healthy_ || !db_) {
      why = "database connection is broken";
      return false;
    }
    auto now = Clock::now();
    // A file deleted or replaced under the same name (restore, rename over) would otherwise be
    // served from the old, unlinked inode for as long as this handle lives.
    if (now >= next_identity_check_) {
      auto id = file_id(path_);
      if (!id) {
        healthy_ = false;
        why = missing_file_reason(errno);
        return false;
      }
      if (!(*id == file_)) {
        close();
        try {
          open();
        } catch (const std::exception& e) {
          healthy_ = false;
          why = std::string("cannot reopen database: ") + e.what();
          return false;
        }
        now = Clock::now();  // reopening may have waited on a lock
      }
      next_identity_check_ = now + kIdentityCheckInterval;
    }

    if (now >= deadline) {
      why = "deadline passed before the query";
      return false;
    }
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
    sqlite3_busy_timeout(db_.get(), left < 1 ? 1 : (left > INT32_MAX ? INT32_MAX : static_cast<int>(left)));
    deadline_ = deadline;
    return true;
  }

  void bind_name(sqlite3_stmt* s, const MailboxName& name) {
    // SQLITE_STATIC: the strings outlive the step, and ResetOnExit runs before they die.
    sqlite3_bind_text(s, 1, name.local_part.data(), static_cast<int>(name.local_part.size()), SQLITE_STATIC);
    sqlite3_bind_text(s, 2, name.domain.data(), static_cast<int>(name.domain.size()), SQLITE_STATIC);
  }

  // Turns a failed step into a message that is safe to log: the generic text for the code,
  // never sqlite3_errmsg (it could quote data).
  std::string failure(int rc) {
    int primary = rc & 0xff;
    // PROTOCOL: the WAL read-lock retries ran out, i.e. someone holds the -shm locks.
    if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED || primary == SQLITE_PROTOCOL)
      return "database is locked";
    if (primary == SQLITE_INTERRUPT) return "deadline passed during the query";
    if (needs_reopen(rc)) healthy_ = false;
    return std::string("database error: ") + sqlite3_errstr(rc) + " (" + std::to_string(rc) + ")";
  }

  std::string path_;
  UserDefaults defaults_;
  DbPtr db_;
  StmtPtr passdb_, userdb_, users_;
  StmtPtr domain_row_, alias_rows_, user_active_, relay_, sender_logins_, sole_aliases_, smtpd_values_, smtpd_keys_;
  FileId file_;
  Clock::time_point next_identity_check_{};
  Deadline deadline_{};
  bool healthy_ = false;
};

}  // namespace

std::unique_ptr<SqlSession> DirectoryBackend::open_session(SessionRole) {
  throw std::runtime_error("this directory backend has no SQL sessions");
}

const char* default_schema_sql() {
  static const std::string full = std::string(kSchemaSql) + kSmtpdSchemaSql;
  return full.c_str();
}

SqliteBackend::SqliteBackend(std::string path, UserDefaults defaults)
    : path_(std::move(path)), defaults_(std::move(defaults)) {}

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
  DbPtr db = open_db(path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  sqlite3* h = db.get();
  sqlite3_busy_timeout(h, kPrepareSchemaBusyMs);
  check_schema_version(h, path_);

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
  if (ours != 2) fail_open(path_, "database has tables but not maildict's (domains, users)");
  add_smtpd_tables(h);
}

std::unique_ptr<DirectoryConnection> SqliteBackend::connect() {
  return std::make_unique<SqliteConnection>(path_, defaults_);
}

void SqliteBackend::close_probe() {
  // The view of the -shm file goes first: once the last connection of this process closes,
  // SQLite may delete or truncate that file.
  if (probe_shm_) munmap(const_cast<unsigned char*>(probe_shm_), probe_shm_len_);
  probe_shm_ = nullptr;
  probe_shm_len_ = 0;
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
  // Never wait: a caller that cannot get a version simply does not trust its cache.
  sqlite3_busy_timeout(db, 0);
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v3(db, "PRAGMA data_version", -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) {
    sqlite3_close_v2(db);
    return false;
  }
  // A first read opens the WAL and its -shm file (when the database is in WAL mode) and proves
  // the file is a readable database.
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
  map_probe_shm();
  return true;
}

namespace {

// The WAL-index header (https://www.sqlite.org/walformat.html, "The WAL-Index Header"): two
// copies of a 48-byte block at the start of the -shm file, rewritten by every committing
// writer (copy 2 first, then copy 1) in the writer's native byte order.
constexpr std::size_t kWalHeaderSize = 48;
constexpr std::uint32_t kWalIndexFormat = 3007000;
constexpr std::size_t kShmMapBytes = 4096;

std::uint64_t mix64(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

constexpr std::uint64_t kWalVersionTag = std::uint64_t{1} << 63;

}  // namespace

void SqliteBackend::map_probe_shm() {
  // Only a database in WAL mode keeps its header in the -shm file; a stale -shm next to a
  // rollback-journal database would never change. The mode cannot leave WAL while the probe
  // is open: that needs an exclusive lock and every WAL connection holds a shared one.
  sqlite3_stmt* mode = nullptr;
  bool wal = false;
  if (sqlite3_prepare_v2(probe_db_, "PRAGMA journal_mode", -1, &mode, nullptr) == SQLITE_OK &&
      sqlite3_step(mode) == SQLITE_ROW) {
    auto* text = reinterpret_cast<const char*>(sqlite3_column_text(mode, 0));
    wal = text != nullptr && std::strcmp(text, "wal") == 0;
  }
  sqlite3_finalize(mode);
  if (!wal) return;

  // SQLite names the -shm after the file it really opened (symlinks resolved).
  const char* db_file = sqlite3_db_filename(probe_db_, "main");
  if (db_file == nullptr || *db_file == '\0') return;
  std::string shm_path = std::string(db_file) + "-shm";
  int fd = ::open(shm_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return;
  struct stat st;
  void* p = MAP_FAILED;
  // A mapping past the end of the file would fault; SQLite sizes it in 32 KiB regions.
  if (::fstat(fd, &st) == 0 && st.st_size >= static_cast<off_t>(kShmMapBytes))
    p = ::mmap(nullptr, kShmMapBytes, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return;
  // Not a header format we know (a future SQLite): keep using the PRAGMA. A momentary
  // mismatch of the two copies is fine here; each call checks that again.
  const auto* bytes = static_cast<const volatile unsigned char*>(p);
  unsigned char format_bytes[4] = {bytes[0], bytes[1], bytes[2], bytes[3]};
  std::uint32_t format;
  std::memcpy(&format, format_bytes, sizeof format);
  if (format != kWalIndexFormat) {
    munmap(p, kShmMapBytes);
    return;
  }
  probe_shm_ = bytes;
  probe_shm_len_ = kShmMapBytes;
}

std::optional<std::uint64_t> SqliteBackend::wal_index_version() const {
  unsigned char first[kWalHeaderSize], second[kWalHeaderSize];
  // Byte-wise volatile reads: another process writes this memory, the compiler must not
  // cache or merge them. The fence orders the two copies against the writer's barrier.
  for (std::size_t i = 0; i < kWalHeaderSize; ++i) first[i] = probe_shm_[i];
  std::atomic_thread_fence(std::memory_order_acquire);
  for (std::size_t i = 0; i < kWalHeaderSize; ++i) second[i] = probe_shm_[kWalHeaderSize + i];
  std::atomic_thread_fence(std::memory_order_acquire);
  // Different copies: a writer is in the middle of a commit (or died there); let SQLite
  // sort it out through the PRAGMA.
  if (std::memcmp(first, second, kWalHeaderSize) != 0) return std::nullopt;
  std::uint32_t format;
  std::memcpy(&format, first, sizeof format);
  const unsigned char is_init = first[12];
  if (format != kWalIndexFormat || is_init != 1) return std::nullopt;

  // Every commit changes the header (change counter, last frame, frame checksums, salts), so
  // hashing all of it gives a number that moves on every commit and survives a WAL reset or
  // a recovery that restarts the counter. The epoch separates reopened probes.
  std::uint64_t h = mix64(probe_epoch_ + 0x9e3779b97f4a7c15ULL);
  for (std::size_t i = 0; i < kWalHeaderSize; i += 8) {
    std::uint64_t word;
    std::memcpy(&word, first + i, sizeof word);
    h = mix64(h ^ word);
  }
  return h | kWalVersionTag;
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

  if (probe_shm_) {
    if (auto v = wal_index_version()) return v;
  }

  // The portable way: PRAGMA data_version changes whenever another connection (in any
  // process) has committed. It starts a read transaction, which costs a few system calls.
  SleepDeadline no_sleep(now);
  int rc = sqlite3_step(probe_stmt_);
  std::int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(probe_stmt_, 0) : 0;
  sqlite3_reset(probe_stmt_);
  if (rc != SQLITE_ROW) {
    close_probe();
    return std::nullopt;
  }
  // data_version values are only comparable within one probe connection; the epoch (bumped on
  // every reopen) keeps a reopened probe from repeating a number an older one already gave.
  // The top bit stays clear so these numbers never equal a WAL-header version.
  constexpr std::uint64_t low_mask = (std::uint64_t{1} << 40) - 1;
  return ((probe_epoch_ << 40) | (static_cast<std::uint64_t>(v) & low_mask)) & ~kWalVersionTag;
}

std::string SqliteBackend::describe() const { return "sqlite:" + path_; }

}  // namespace maildict::storage
