#include "storage/demo_directory.hpp"

#include <sqlite3.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "storage/password_scheme.hpp"
#include "storage/sqlite_directory.hpp"

namespace maildict::storage {

namespace {

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};

class DemoWriter {
 public:
  explicit DemoWriter(const std::string& path) : path_(path) {
    sqlite3* raw = nullptr;
    int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE, nullptr);
    db_.reset(raw);
    if (rc != SQLITE_OK) fail("cannot open");
    sqlite3_busy_timeout(db_.get(), 5000);
  }

  void exec(const char* sql) {
    if (sqlite3_exec(db_.get(), sql, nullptr, nullptr, nullptr) != SQLITE_OK) fail("cannot write");
  }

  std::unique_ptr<sqlite3_stmt, StmtFinalizer> prepare(const char* sql) {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(db_.get(), sql, -1, &raw, nullptr) != SQLITE_OK) fail("cannot prepare");
    return std::unique_ptr<sqlite3_stmt, StmtFinalizer>(raw);
  }

  // Binds NULL for a null pointer; runs the statement once and resets it for reuse.
  void run(sqlite3_stmt* s, std::initializer_list<const char*> text_params, int first = 1) {
    int i = first;
    for (const char* p : text_params) {
      if (p == nullptr)
        sqlite3_bind_null(s, i);
      else
        sqlite3_bind_text(s, i, p, -1, SQLITE_TRANSIENT);
      ++i;
    }
    step(s);
  }

  void step(sqlite3_stmt* s) {
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) fail("cannot write");
  }

  bool exists(const char* sql) {
    auto s = prepare(sql);
    int rc = sqlite3_step(s.get());
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) fail("cannot read");
    return rc == SQLITE_ROW;
  }

  sqlite3* db() { return db_.get(); }

  [[noreturn]] void fail(const char* what) {
    throw std::runtime_error("sqlite:" + path_ + ": " + what + ": " +
                             (db_ ? sqlite3_errmsg(db_.get()) : "out of memory"));
  }

 private:
  std::string path_;
  std::unique_ptr<sqlite3, DbCloser> db_;
};

struct DemoUser {
  const char* local_part;
  const char* domain;
  const char* password;  // plain text, hashed on insert; nullptr = NULL column
  const char* scheme;
  bool with_prefix;      // store "{BLF-CRYPT}..." instead of the bare hash
  const char* uid;       // nullptr = NULL column
  const char* gid;
  const char* home;
  const char* mail;
  const char* quota_bytes;
  int active;
};

// The rows the README, the tests and the e2e checks rely on; change them only together.
const DemoUser kDemoUsers[] = {
    {"john", "example.org", "john-secret", "bcrypt", false, nullptr, nullptr, nullptr, nullptr, "1073741824", 1},
    {"jane", "example.org", "jane-secret", "sha512-crypt", false, nullptr, nullptr, nullptr, nullptr, nullptr, 1},
    {"john_doe", "example.org", "doe-secret", "bcrypt-2y", true, nullptr, nullptr, nullptr, nullptr, nullptr, 1},
    {"bob", "example.net", "bob-secret", "bcrypt", false, "2000", "2000", "/var/vmail/custom/bob", "maildir:~/Mail",
     nullptr, 1},
    {"nopw", "example.net", nullptr, nullptr, false, nullptr, nullptr, nullptr, nullptr, nullptr, 1},
    {"eve", "example.org", "eve-secret", "bcrypt", false, nullptr, nullptr, nullptr, nullptr, nullptr, 0},
    {"ghost", "disabled.example", "ghost-secret", "bcrypt", false, nullptr, nullptr, nullptr, nullptr, nullptr, 1},
};

// Text bound to INTEGER columns is stored as an integer thanks to column affinity.
const char kInsertUser[] =
    "INSERT INTO users (local_part, domain, password, uid, gid, home, mail, quota_bytes, active) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

void insert_named_rows(DemoWriter& w) {
  auto domain = w.prepare("INSERT INTO domains (domain, active, alias_for) VALUES (?1, ?2, ?3)");
  w.run(domain.get(), {"example.org", "1", nullptr});
  w.run(domain.get(), {"example.net", "1", nullptr});
  w.run(domain.get(), {"example.com", "1", "example.org"});
  w.run(domain.get(), {"disabled.example", "0", nullptr});

  auto user = w.prepare(kInsertUser);
  for (const auto& u : kDemoUsers) {
    std::string stored;
    if (u.password) {
      stored = hash_password(u.password, u.scheme);
      if (u.with_prefix) stored = with_scheme_prefix(stored);
    }
    std::string active = std::to_string(u.active);
    w.run(user.get(), {u.local_part, u.domain, u.password ? stored.c_str() : nullptr, u.uid, u.gid, u.home, u.mail,
                       u.quota_bytes, active.c_str()});
  }

  auto alias = w.prepare("INSERT INTO aliases (local_part, domain, destination, active) VALUES (?1, ?2, ?3, 1)");
  w.run(alias.get(), {"postmaster", "example.org", "john@example.org"});
  w.run(alias.get(), {"postmaster", "example.org", "jane@example.org"});
  w.run(alias.get(), {"", "example.net", "bob@example.net"});
  w.run(alias.get(), {"sales", "example.org", "john@example.org"});

  auto sender = w.prepare("INSERT INTO sender_logins (login, address) VALUES (?1, ?2)");
  w.run(sender.get(), {"john@example.org", "sales@example.org"});
}

// What a demo smtpd needs besides users and aliases (specs/smtpd-tables.md §5.2): a relay
// label, the loopback networks for `from src`, a banner name, a source address and a relay
// route. INSERT OR IGNORE, so running the demo again completes an older demo database.
void insert_smtpd_rows(DemoWriter& w) {
  auto relay = w.prepare("INSERT OR IGNORE INTO relay_credentials (label, username, password) VALUES (?1, ?2, ?3)");
  w.run(relay.get(), {"relay1", "relayuser", "relaypass"});

  auto value = w.prepare("INSERT OR IGNORE INTO smtpd_values (service, key, value) VALUES (?1, ?2, ?3)");
  w.run(value.get(), {"netaddr", "127.0.0.0/8", "127.0.0.0/8"});
  w.run(value.get(), {"netaddr", "::1", "::1"});
  w.run(value.get(), {"netaddr", "local", "local"});
  w.run(value.get(), {"addrname", "127.0.0.1", "mail.example.org"});
  w.run(value.get(), {"source", "", "127.0.0.1"});
  w.run(value.get(), {"relayhost", "relay.example", "smtp+tls://relay1@smtp.relay.example:587"});
}

void insert_bulk_users(DemoWriter& w, std::size_t count) {
  auto domain = w.prepare("INSERT OR IGNORE INTO domains (domain, active) VALUES ('bulk.example', 1)");
  w.step(domain.get());

  // One hash for all: bcrypt at cost 10 takes tens of milliseconds, 100k of them would take
  // more than an hour.
  const std::string hash = hash_password("bulk-secret", "bcrypt");
  auto user = w.prepare(
      "INSERT OR IGNORE INTO users (local_part, domain, password, active) VALUES (?1, 'bulk.example', ?2, 1)");
  sqlite3_bind_text(user.get(), 2, hash.c_str(), static_cast<int>(hash.size()), SQLITE_STATIC);
  std::string local;
  for (std::size_t n = 1; n <= count; ++n) {
    local = "user" + std::to_string(n);
    sqlite3_bind_text(user.get(), 1, local.c_str(), static_cast<int>(local.size()), SQLITE_STATIC);
    w.step(user.get());
  }
}

}  // namespace

void create_demo_directory(const std::string& path, std::size_t bulk_users) {
  // The same schema code the daemon uses, so the demo can never drift from it.
  {
    SqliteBackend backend(path, UserDefaults{});
    backend.prepare_schema();
  }

  DemoWriter w(path);
  w.exec("BEGIN IMMEDIATE");
  try {
    if (!w.exists("SELECT 1 FROM domains WHERE domain = 'example.org'")) insert_named_rows(w);
    insert_smtpd_rows(w);
    if (bulk_users > 0) insert_bulk_users(w, bulk_users);
    w.exec("COMMIT");
  } catch (...) {
    sqlite3_exec(w.db(), "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

}  // namespace maildict::storage
