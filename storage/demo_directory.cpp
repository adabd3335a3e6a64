#include "storage/demo_directory.hpp"

#include <memory>
#include <stdexcept>
#include <string>

#include "storage/password_scheme.hpp"
#include "storage/sql_session.hpp"
#include "storage/sqlite_directory.hpp"

namespace maildict::storage {

namespace {

// Runs the demo's statements in one write transaction; any failure throws with the
// statement's (secret-free) error message.
class DemoWriter {
 public:
  explicit DemoWriter(SqlSession& s) : s_(s) {}

  void run(const char* sql, std::initializer_list<SqlValue> params) {
    SqlError err;
    if (!storage::run(s_, sql, params, nullptr, err)) throw std::runtime_error("cannot write the demo rows: " + err.message);
  }

  bool exists(const char* sql) {
    SqlRows rows;
    SqlError err;
    if (!storage::run(s_, sql, {}, &rows, err)) throw std::runtime_error("cannot read the directory: " + err.message);
    return !rows.empty();
  }

 private:
  SqlSession& s_;
};

SqlValue opt(const char* p) { return p ? SqlValue(p) : SqlValue(); }

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

// Integers travel as text; both databases convert them by column type.
const char kInsertUser[] =
    "INSERT INTO users (local_part, domain, password, uid, gid, home, mail, quota_bytes, active) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

void insert_named_rows(DemoWriter& w) {
  const char* domain = "INSERT INTO domains (domain, active, alias_for) VALUES ($1, $2, $3)";
  w.run(domain, {"example.org", "1", std::nullopt});
  w.run(domain, {"example.net", "1", std::nullopt});
  w.run(domain, {"example.com", "1", "example.org"});
  w.run(domain, {"disabled.example", "0", std::nullopt});

  for (const auto& u : kDemoUsers) {
    SqlValue stored;
    if (u.password) {
      stored = hash_password(u.password, u.scheme);
      if (u.with_prefix) stored = with_scheme_prefix(*stored);
    }
    w.run(kInsertUser, {u.local_part, u.domain, stored, opt(u.uid), opt(u.gid), opt(u.home), opt(u.mail),
                        opt(u.quota_bytes), std::to_string(u.active)});
  }

  const char* alias = "INSERT INTO aliases (local_part, domain, destination, active) VALUES ($1, $2, $3, 1)";
  w.run(alias, {"postmaster", "example.org", "john@example.org"});
  w.run(alias, {"postmaster", "example.org", "jane@example.org"});
  w.run(alias, {"", "example.net", "bob@example.net"});
  w.run(alias, {"sales", "example.org", "john@example.org"});

  w.run("INSERT INTO sender_logins (login, address) VALUES ($1, $2)", {"john@example.org", "sales@example.org"});
}

// What a demo smtpd needs besides users and aliases (specs/smtpd-tables.md §5.2): a relay
// label, the loopback networks for `from src`, a banner name, a source address and a relay
// route. ON CONFLICT DO NOTHING, so running the demo again completes an older demo database.
void insert_smtpd_rows(DemoWriter& w) {
  w.run("INSERT INTO relay_credentials (label, username, password) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        {"relay1", "relayuser", "relaypass"});
  const char* value = "INSERT INTO smtpd_values (service, key, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
  w.run(value, {"netaddr", "127.0.0.0/8", "127.0.0.0/8"});
  w.run(value, {"netaddr", "::1", "::1"});
  w.run(value, {"netaddr", "local", "local"});
  w.run(value, {"addrname", "127.0.0.1", "mail.example.org"});
  w.run(value, {"source", "", "127.0.0.1"});
  w.run(value, {"relayhost", "relay.example", "smtp+tls://relay1@smtp.relay.example:587"});
}

void insert_bulk_users(DemoWriter& w, std::size_t count) {
  w.run("INSERT INTO domains (domain, active) VALUES ('bulk.example', 1) ON CONFLICT DO NOTHING", {});
  // One hash for all: bcrypt at cost 10 takes tens of milliseconds, 100k of them would take
  // more than an hour.
  const std::string hash = hash_password("bulk-secret", "bcrypt");
  for (std::size_t n = 1; n <= count; ++n)
    w.run("INSERT INTO users (local_part, domain, password, active) VALUES ($1, 'bulk.example', $2, 1) "
          "ON CONFLICT DO NOTHING",
          {"user" + std::to_string(n), hash});
}

}  // namespace

void create_demo_directory(DirectoryBackend& backend, std::size_t bulk_users) {
  // The same schema code the daemon uses, so the demo can never drift from it.
  backend.prepare_schema();
  auto session = backend.open_session(SessionRole::write);
  SqlError err;
  if (!session->begin(SessionRole::write, err)) throw std::runtime_error("cannot write the demo rows: " + err.message);
  try {
    DemoWriter w(*session);
    if (!w.exists("SELECT 1 FROM domains WHERE domain = 'example.org'")) insert_named_rows(w);
    insert_smtpd_rows(w);
    if (bulk_users > 0) insert_bulk_users(w, bulk_users);
    if (!session->commit(err)) throw std::runtime_error("cannot write the demo rows: " + err.message);
  } catch (...) {
    session->rollback();
    throw;
  }
}

void create_demo_directory(const std::string& path, std::size_t bulk_users) {
  SqliteBackend backend(path, UserDefaults{});
  create_demo_directory(backend, bulk_users);
}

}  // namespace maildict::storage
