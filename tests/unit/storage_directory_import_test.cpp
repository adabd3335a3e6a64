// The importer (storage/directory_import.hpp) against small SQLite databases in each admin
// tool's schema (specs/landscape.md §5: the columns the importer reads, plus a few it must
// ignore), into an empty maildict directory. Each kind is checked row by row, then through the
// real lookup path (SqliteBackend::connect), and for dry run, idempotence, --strict and a
// failure half-way.
#include <crypt.h>
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "storage/directory_import.hpp"
#include "storage/password_scheme.hpp"
#include "storage/sqlite_directory.hpp"
#include "storage/sqlite_session.hpp"
#include "storage_test_util.hpp"

using namespace maildict::storage;
using maildict::storage::testing::fresh_path;
using maildict::storage::testing::RawDb;
using namespace std::chrono_literals;

namespace {

Deadline soon() { return Clock::now() + 2s; }

// bcrypt at cost 10 is slow: each hash is made once for the whole program.
struct Hashes {
  std::string bcrypt_2y = hash_password("alice-secret", "bcrypt-2y");  // as PHP writes it
  std::string sha512 = hash_password("bob-secret", "sha512-crypt");
  std::string bcrypt = hash_password("carol-secret", "bcrypt");
};
const Hashes& hashes() {
  static const Hashes h;
  return h;
}

bool verifies(const std::string& password, const std::string& hash) {
  crypt_data data{};
  const char* out = crypt_r(password.c_str(), hash.c_str(), &data);
  return out != nullptr && hash == out;
}
std::string bare(const std::string& prefixed) { return prefixed.substr(prefixed.find('}') + 1); }

// Runs one statement with bound parameters (nullopt binds NULL).
void exec(RawDb& db, const char* sql, std::initializer_list<SqlValue> params = {}) {
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db.get(), sql, -1, &s, nullptr) == SQLITE_OK);
  int i = 1;
  for (auto& p : params) {
    if (p) sqlite3_bind_text(s, i, p->c_str(), -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(s, i);
    ++i;
  }
  int rc = sqlite3_step(s);
  sqlite3_finalize(s);
  REQUIRE_MESSAGE(rc == SQLITE_DONE, sql);
}

// Every row of a query as "a|b|c" (NULL as "NULL"), sorted, so a test states a table exactly.
std::set<std::string> rows(const std::string& path, const char* sql) {
  RawDb db(path);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db.get(), sql, -1, &s, nullptr) == SQLITE_OK);
  std::set<std::string> out;
  while (sqlite3_step(s) == SQLITE_ROW) {
    std::string line;
    for (int i = 0; i < sqlite3_column_count(s); ++i) {
      if (i) line += '|';
      auto* p = sqlite3_column_text(s, i);
      line += p ? reinterpret_cast<const char*>(p) : "NULL";
    }
    out.insert(line);
  }
  sqlite3_finalize(s);
  return out;
}

std::set<std::string> domains(const std::string& t) {
  return rows(t, "SELECT domain, active, alias_for FROM domains");
}
std::set<std::string> users(const std::string& t) {
  return rows(t, "SELECT local_part, domain, password, quota_bytes, active, uid, gid, home, mail FROM users");
}
std::set<std::string> aliases(const std::string& t) {
  return rows(t, "SELECT local_part, domain, destination, active FROM aliases");
}
std::set<std::string> senders(const std::string& t) { return rows(t, "SELECT login, address FROM sender_logins"); }

std::string everything(const std::string& t) {
  std::string out;
  for (const auto& set : {domains(t), users(t), aliases(t), senders(t)}) {
    for (auto& r : set) out += r + "\n";
    out += "--\n";
  }
  return out;
}

// An empty maildict directory, as `maildictd` or maildictctl would create it.
std::string empty_directory() {
  std::string p = fresh_path("target");
  SqliteBackend(p, UserDefaults{}).prepare_schema();
  return p;
}

ImportReport import(ImportKind kind, const std::string& source, const std::string& target, ImportOptions o = {}) {
  auto s = open_sqlite_session(source, SessionRole::read);
  auto t = open_sqlite_session(target, SessionRole::write);
  return import_directory(kind, *s, *t, o);
}

bool has_item(const ImportReport& r, const std::string& what, const std::string& key, ImportAction action,
              const std::string& reason_part = {}) {
  for (auto& i : r.items)
    if (i.what == what && i.key == key && i.action == action && i.reason.find(reason_part) != std::string::npos)
      return true;
  return false;
}

std::string dump(const ImportReport& r) {
  std::string out = "status " + std::to_string(static_cast<int>(r.status)) + " " + r.error + "\n";
  for (auto& i : r.items) out += i.what + " " + i.key + " " + import_action_name(i.action) + " " + i.reason + "\n";
  return out;
}

// What every kind must also do: a dry run writes nothing, a second run changes nothing, --strict
// refuses a source with unmappable rows, and a failure half-way leaves the target untouched.
void check_transaction_rules(ImportKind kind, const std::string& source) {
  SUBCASE("dry run reports the changes and writes nothing") {
    std::string t = empty_directory();
    std::string before = everything(t);
    auto dry = import(kind, source, t, {.dry_run = true});
    INFO(dump(dry));
    CHECK(dry.status == ImportStatus::ok);
    CHECK_FALSE(dry.committed);
    CHECK(dry.changes() > 0);
    CHECK(everything(t) == before);
    // ... and it predicts the real run exactly.
    auto real = import(kind, source, t);
    CHECK(real.committed);
    CHECK(dump(real) == dump(dry));
  }
  SUBCASE("a second import changes nothing") {
    std::string t = empty_directory();
    auto first = import(kind, source, t);
    REQUIRE(first.status == ImportStatus::ok);
    std::string after_first = everything(t);
    auto second = import(kind, source, t);
    INFO(dump(second));
    CHECK(second.status == ImportStatus::ok);
    CHECK(second.changes() == 0);
    CHECK(second.count(ImportAction::unchanged) == first.count(ImportAction::add));
    CHECK(second.count(ImportAction::skip) == first.count(ImportAction::skip));
    CHECK(everything(t) == after_first);
  }
  SUBCASE("--strict refuses a source with unmappable rows and writes nothing") {
    std::string t = empty_directory();
    std::string before = everything(t);
    auto r = import(kind, source, t, {.strict = true});
    CHECK(r.count(ImportAction::skip) > 0);
    CHECK(r.status == ImportStatus::strict_refused);
    CHECK_FALSE(r.committed);
    CHECK(everything(t) == before);
  }
  SUBCASE("a failure half-way rolls back everything") {
    std::string t = empty_directory();
    RawDb db(t);
    // The directory refuses the first alias row: domains and users were already written
    // inside the transaction by then.
    REQUIRE(db.exec("CREATE TRIGGER refuse BEFORE INSERT ON aliases BEGIN SELECT RAISE(ABORT, 'refused'); END") ==
            SQLITE_OK);
    std::string before = everything(t);
    auto r = import(kind, source, t);
    CHECK(r.status == ImportStatus::conflict);  // a trigger's RAISE(ABORT) is a constraint error
    CHECK(r.error.find("refused") != std::string::npos);
    CHECK_FALSE(r.committed);
    CHECK(everything(t) == before);
    CHECK(db.text("SELECT count(*) FROM domains") == "0");
  }
}

// ---- PostfixAdmin --------------------------------------------------------------------------------

std::string postfixadmin_source() {
  const auto& h = hashes();
  std::string p = fresh_path("postfixadmin");
  RawDb db(p);
  exec(db,
       "CREATE TABLE domain (domain TEXT PRIMARY KEY, description TEXT, aliases INTEGER, mailboxes INTEGER, "
       "maxquota INTEGER, quota INTEGER, transport TEXT, backupmx INTEGER, active INTEGER, created TEXT, "
       "modified TEXT, password_expiry INTEGER)");
  const char* dom = "INSERT INTO domain (domain, description, transport, active) VALUES ($1, 'x', 'virtual', $2)";
  exec(db, dom, {"ALL", "1"});  // superadmins' pseudo-domain
  exec(db, dom, {"Example.ORG", "1"});
  exec(db, dom, {"example.net", "1"});
  exec(db, dom, {"example.com", "1"});
  exec(db, dom, {"old.example", "0"});
  exec(db, dom, {"bad_domain.example", "1"});
  exec(db,
       "CREATE TABLE alias_domain (alias_domain TEXT PRIMARY KEY, target_domain TEXT, created TEXT, modified TEXT, "
       "active INTEGER)");
  exec(db, "INSERT INTO alias_domain (alias_domain, target_domain, active) VALUES ('example.com', 'example.org', 1)");
  exec(db,
       "CREATE TABLE mailbox (username TEXT PRIMARY KEY, password TEXT, name TEXT, maildir TEXT, quota INTEGER, "
       "local_part TEXT, domain TEXT, created TEXT, modified TEXT, active INTEGER, phone TEXT, totp_secret TEXT)");
  const char* mb =
      "INSERT INTO mailbox (username, password, name, maildir, quota, local_part, domain, active) "
      "VALUES ($1, $2, 'Someone', 'x/', $3, 'x', 'x', $4)";
  exec(db, mb, {"alice@example.org", h.bcrypt_2y, "1073741824", "1"});
  exec(db, mb, {"Bob@Example.org", "{SHA512-CRYPT}" + h.sha512, "0", "1"});
  exec(db, mb, {"carol@example.net", with_scheme_prefix(h.bcrypt), "0", "0"});
  exec(db, mb, {"dave@old.example", h.sha512, "-1", "1"});
  exec(db, mb, {"mallory@example.org", "cleartext-password", "0", "1"});  // unknown scheme
  exec(db, mb, {"no-at-sign.example.org", h.sha512, "0", "1"});           // not an address
  exec(db,
       "CREATE TABLE alias (address TEXT PRIMARY KEY, goto TEXT, domain TEXT, created TEXT, modified TEXT, "
       "active INTEGER)");
  const char* al = "INSERT INTO alias (address, goto, domain, active) VALUES ($1, $2, 'x', $3)";
  // One self-alias per mailbox, as PostfixAdmin writes them.
  // alice is on vacation: PostfixAdmin adds its auto-reply address to her alias.
  exec(db, al, {"alice@example.org", "alice@example.org,alice#example.org@autoreply.example.org", "1"});
  exec(db, al, {"bob@example.org", "bob@example.org", "1"});
  exec(db, al, {"carol@example.net", "carol@example.net", "1"});
  exec(db, al, {"dave@old.example", "dave@old.example", "1"});
  exec(db, al, {"Team@example.org", "alice@example.org, Bob@example.org,friend@Other.example", "1"});
  exec(db, al, {"@example.net", "alice@example.org", "1"});
  exec(db, al, {"old@example.org", "alice@example.org", "0"});
  exec(db, al, {"broken@example.org", "nobody-at-all", "1"});
  exec(db, al, {"loop@example.org", "loop@example.org", "1"});
  return p;
}

TEST_CASE("import postfixadmin: rows") {
  const auto& h = hashes();
  std::string src = postfixadmin_source();
  std::string t = empty_directory();
  auto r = import(ImportKind::postfixadmin, src, t);
  INFO(dump(r));
  REQUIRE(r.status == ImportStatus::ok);
  CHECK(r.committed);

  CHECK(domains(t) == std::set<std::string>{"example.com|1|example.org", "example.net|1|NULL",
                                            "example.org|1|NULL", "old.example|0|NULL"});
  CHECK(users(t) == std::set<std::string>{
                        "alice|example.org|" + h.bcrypt_2y + "|1073741824|1|NULL|NULL|NULL|NULL",
                        "bob|example.org|{SHA512-CRYPT}" + h.sha512 + "|NULL|1|NULL|NULL|NULL|NULL",
                        "carol|example.net|{BLF-CRYPT}" + h.bcrypt + "|NULL|0|NULL|NULL|NULL|NULL",
                        "dave|old.example|" + h.sha512 + "|NULL|1|NULL|NULL|NULL|NULL",
                    });
  CHECK(aliases(t) == std::set<std::string>{
                          "|example.net|alice@example.org|1",
                          "old|example.org|alice@example.org|0",
                          "team|example.org|alice@example.org|1",
                          "team|example.org|bob@example.org|1",
                          "team|example.org|friend@other.example|1",
                      });
  CHECK(senders(t).empty());

  // The report says why each thing was left out.
  CHECK(r.count(ImportAction::skip) == 6);
  CHECK(has_item(r, "alias", "alice@example.org -> alice#example.org@autoreply.example.org", ImportAction::skip,
                 "vacation"));
  CHECK(has_item(r, "domain", "bad_domain.example", ImportAction::skip, "not a valid domain"));
  CHECK(has_item(r, "user", "mallory@example.org", ImportAction::skip, "unknown scheme"));
  CHECK(has_item(r, "user", "no-at-sign.example.org", ImportAction::skip, "not a valid address"));
  CHECK(has_item(r, "alias", "broken@example.org -> nobody-at-all", ImportAction::skip, "destination"));
  CHECK(has_item(r, "alias", "loop@example.org", ImportAction::skip, "itself"));
  CHECK(r.count("alias", ImportAction::ignore) == 4);  // the self-aliases
  CHECK(has_item(r, "domain", "all", ImportAction::ignore, "superadmins"));
  CHECK(has_item(r, "alias", "alice@example.org", ImportAction::ignore, "redundant"));
  CHECK(has_item(r, "alias-domain", "example.com -> example.org", ImportAction::add));
  CHECK(has_item(r, "alias", "@example.net -> alice@example.org", ImportAction::add, "catch-all"));
  CHECK(r.count(ImportAction::add) == 4 + 4 + 5);
  // No hash in the report, ever.
  for (auto& i : r.items) {
    CHECK(i.key.find("$") == std::string::npos);
    CHECK(i.reason.find("$") == std::string::npos);
  }
}

TEST_CASE("import postfixadmin: the imported directory answers Dovecot's and smtpd's questions") {
  std::string t = empty_directory();
  REQUIRE(import(ImportKind::postfixadmin, postfixadmin_source(), t).status == ImportStatus::ok);
  SqliteBackend backend(t, UserDefaults{});
  auto conn = backend.connect();

  auto alice = conn->passdb("Alice@Example.org", soon());
  REQUIRE(alice.outcome == Outcome::found);
  CHECK(alice.value.user == "alice@example.org");
  REQUIRE(alice.value.password.has_value());
  CHECK(alice.value.password->starts_with("{BLF-CRYPT}$2y$"));
  CHECK(verifies("alice-secret", bare(*alice.value.password)));
  auto bob = conn->passdb("bob_example.org", soon());
  REQUIRE(bob.outcome == Outcome::found);
  REQUIRE(bob.value.password.has_value());
  CHECK(bob.value.password->starts_with("{SHA512-CRYPT}$6$"));
  CHECK(verifies("bob-secret", bare(*bob.value.password)));
  CHECK(conn->passdb("carol@example.net", soon()).outcome == Outcome::not_found);  // inactive
  CHECK(conn->passdb("dave@old.example", soon()).outcome == Outcome::not_found);   // domain inactive
  CHECK(conn->passdb("mallory@example.org", soon()).outcome == Outcome::not_found);

  auto userdb = conn->userdb("alice@example.org", soon());
  REQUIRE(userdb.outcome == Outcome::found);
  REQUIRE(userdb.value.quota_rule.has_value());
  CHECK(*userdb.value.quota_rule == "*:storage=1073741824B");
  CHECK(userdb.value.home == "/var/vmail/example.org/alice");

  auto smtp = conn->credentials("alice@example.org", soon());
  REQUIRE(smtp.outcome == Outcome::found);
  CHECK(smtp.value.hash.starts_with("$2b$"));
  CHECK(verifies("alice-secret", smtp.value.hash));

  using V = std::vector<std::string>;
  auto team = conn->resolve_recipient("team@example.org", soon());
  REQUIRE(team.outcome == Outcome::found);
  CHECK(std::set<std::string>(team.value.begin(), team.value.end()) ==
        std::set<std::string>{"alice_example.org", "bob_example.org", "friend@other.example"});
  CHECK(conn->resolve_recipient("alice@example.org", soon()).value == V{"alice_example.org"});
  CHECK(conn->resolve_recipient("alice@example.com", soon()).value == V{"alice_example.org"});  // alias domain
  CHECK(conn->resolve_recipient("anyone@example.net", soon()).value == V{"alice_example.org"});  // catch-all
  CHECK(conn->resolve_recipient("old@example.org", soon()).outcome == Outcome::not_found);  // inactive alias
  CHECK(conn->domain_exists("example.com", soon()).outcome == Outcome::found);
  CHECK(conn->domain_exists("old.example", soon()).outcome == Outcome::not_found);
}

TEST_CASE("import postfixadmin: transaction rules") {
  check_transaction_rules(ImportKind::postfixadmin, postfixadmin_source());
}

TEST_CASE("import postfixadmin: a changed source updates only what differs, never uid/gid/home") {
  std::string src = postfixadmin_source();
  std::string t = empty_directory();
  REQUIRE(import(ImportKind::postfixadmin, src, t).status == ImportStatus::ok);
  {
    RawDb target(t);
    REQUIRE(target.exec("UPDATE users SET home = '/srv/alice', uid = 5000 WHERE local_part = 'alice'") == SQLITE_OK);
    RawDb source(src);
    exec(source, "UPDATE mailbox SET password = $1, quota = 0 WHERE username = 'alice@example.org'",
         {"{SHA512-CRYPT}" + hashes().sha512});
    exec(source, "UPDATE alias SET active = 1 WHERE address = 'old@example.org'");
    exec(source, "UPDATE domain SET active = 1 WHERE domain = 'old.example'");
  }
  auto r = import(ImportKind::postfixadmin, src, t);
  INFO(dump(r));
  REQUIRE(r.status == ImportStatus::ok);
  CHECK(r.count(ImportAction::add) == 0);
  CHECK(r.count(ImportAction::update) == 3);
  CHECK(has_item(r, "user", "alice@example.org", ImportAction::update, "password, quota 1073741824 -> none"));
  CHECK(has_item(r, "alias", "old@example.org -> alice@example.org", ImportAction::update, "active 0 -> 1"));
  CHECK(has_item(r, "domain", "old.example", ImportAction::update, "active 0 -> 1"));
  CHECK(rows(t, "SELECT password, quota_bytes, uid, home FROM users WHERE local_part = 'alice'") ==
        std::set<std::string>{"{SHA512-CRYPT}" + hashes().sha512 + "|NULL|5000|/srv/alice"});
  CHECK(import(ImportKind::postfixadmin, src, t).changes() == 0);
}

TEST_CASE("import: a source that is not the named tool's database is a clear error, nothing written") {
  std::string src = postfixadmin_source();
  std::string t = empty_directory();
  auto r = import(ImportKind::modoboa, src, t);
  CHECK(r.status == ImportStatus::source_error);
  CHECK(r.error.find("modoboa") != std::string::npos);
  CHECK(r.error.find("admin_domain") != std::string::npos);
  CHECK(everything(t) == "--\n--\n--\n--\n");
}

// ---- ViMbAdmin -----------------------------------------------------------------------------------

std::string vimbadmin_source() {
  const auto& h = hashes();
  std::string p = fresh_path("vimbadmin");
  RawDb db(p);
  exec(db,
       "CREATE TABLE domain (id INTEGER PRIMARY KEY, domain TEXT UNIQUE, description TEXT, max_aliases INTEGER, "
       "max_mailboxes INTEGER, max_quota INTEGER, quota INTEGER, transport TEXT, backupmx INTEGER, active INTEGER, "
       "homedir TEXT, maildir TEXT, uid INTEGER, gid INTEGER)");
  exec(db, "INSERT INTO domain (id, domain, transport, active, uid, gid) VALUES (1, 'example.org', 'virtual', 1, 2000, 2000)");
  exec(db, "INSERT INTO domain (id, domain, transport, active) VALUES (2, 'gone.example', 'virtual', 0)");
  exec(db,
       "CREATE TABLE mailbox (id INTEGER PRIMARY KEY, username TEXT UNIQUE, password TEXT, name TEXT, alt_email TEXT, "
       "quota INTEGER, local_part TEXT, active INTEGER, access_restriction TEXT, homedir TEXT, maildir TEXT, "
       "uid INTEGER, gid INTEGER, delete_pending INTEGER, Domain_id INTEGER)");
  const char* mb =
      "INSERT INTO mailbox (username, password, quota, local_part, active, access_restriction, homedir, uid, gid, "
      "Domain_id) VALUES ($1, $2, $3, 'x', $4, 'ALL', '/srv/vmail/x', 2000, 2000, 1)";
  exec(db, mb, {"alice@example.org", "{BLF-CRYPT}" + h.bcrypt_2y, "524288000", "1"});
  exec(db, mb, {"bob@example.org", "{SHA512-CRYPT}" + h.sha512, "0", "0"});
  exec(db, mb, {"zed@gone.example", h.sha512, std::nullopt, "1"});
  exec(db, mb, {"legacy@example.org", "5f4dcc3b5aa765d61d8327deb882cf99", "0", "1"});  // bare md5: unknown
  exec(db,
       "CREATE TABLE alias (id INTEGER PRIMARY KEY, address TEXT UNIQUE, goto TEXT, active INTEGER, created TEXT, "
       "Domain_id INTEGER)");
  const char* al = "INSERT INTO alias (address, goto, active, Domain_id) VALUES ($1, $2, $3, 1)";
  exec(db, al, {"alice@example.org", "alice@example.org", "1"});
  exec(db, al, {"bob@example.org", "bob@example.org", "1"});
  exec(db, al, {"list@example.org", "alice@example.org,bob@example.org", "1"});
  exec(db, al, {"@example.org", "alice@example.org", "1"});
  exec(db, al, {"off@example.org", "bob@example.org", "0"});
  exec(db, al, {"x@unknown.example", "alice@example.org", "1"});  // domain not in the source
  return p;
}

TEST_CASE("import vimbadmin: rows and lookups") {
  const auto& h = hashes();
  std::string t = empty_directory();
  auto r = import(ImportKind::vimbadmin, vimbadmin_source(), t);
  INFO(dump(r));
  REQUIRE(r.status == ImportStatus::ok);
  CHECK(domains(t) == std::set<std::string>{"example.org|1|NULL", "gone.example|0|NULL"});
  CHECK(users(t) == std::set<std::string>{
                        "alice|example.org|{BLF-CRYPT}" + h.bcrypt_2y + "|524288000|1|NULL|NULL|NULL|NULL",
                        "bob|example.org|{SHA512-CRYPT}" + h.sha512 + "|NULL|0|NULL|NULL|NULL|NULL",
                        "zed|gone.example|" + h.sha512 + "|NULL|1|NULL|NULL|NULL|NULL",
                    });
  CHECK(aliases(t) == std::set<std::string>{
                          "|example.org|alice@example.org|1",
                          "list|example.org|alice@example.org|1",
                          "list|example.org|bob@example.org|1",
                          "off|example.org|bob@example.org|0",
                      });
  CHECK(r.count(ImportAction::skip) == 2);
  CHECK(has_item(r, "user", "legacy@example.org", ImportAction::skip, "unknown scheme"));
  CHECK(has_item(r, "alias", "x@unknown.example", ImportAction::skip, "not among the source's domains"));

  SqliteBackend backend(t, UserDefaults{});
  auto conn = backend.connect();
  auto alice = conn->passdb("alice@example.org", soon());
  REQUIRE(alice.outcome == Outcome::found);
  CHECK(verifies("alice-secret", bare(alice.value.password.value_or(""))));
  CHECK(conn->passdb("bob@example.org", soon()).outcome == Outcome::not_found);
  CHECK(conn->passdb("zed@gone.example", soon()).outcome == Outcome::not_found);
  CHECK(conn->userdb("alice@example.org", soon()).value.quota_rule == std::optional<std::string>("*:storage=524288000B"));
  // The catch-all does not swallow the list, and the disabled bob is delivered as written.
  auto list = conn->resolve_recipient("list@example.org", soon());
  CHECK(list.value == std::vector<std::string>{"alice_example.org", "bob@example.org"});
  CHECK(conn->resolve_recipient("off@example.org", soon()).value == std::vector<std::string>{"alice_example.org"});
}

TEST_CASE("import vimbadmin: transaction rules") { check_transaction_rules(ImportKind::vimbadmin, vimbadmin_source()); }

// ---- mailcow -------------------------------------------------------------------------------------

std::string mailcow_source() {
  const auto& h = hashes();
  std::string p = fresh_path("mailcow");
  RawDb db(p);
  exec(db,
       "CREATE TABLE domain (domain TEXT PRIMARY KEY, description TEXT, aliases INTEGER, mailboxes INTEGER, "
       "defquota INTEGER, maxquota INTEGER, quota INTEGER, relayhost TEXT, backupmx INTEGER, gal INTEGER, "
       "relay_all_recipients INTEGER, relay_unknown_only INTEGER, created TEXT, modified TEXT, active INTEGER)");
  exec(db, "INSERT INTO domain (domain, defquota, relayhost, active) VALUES ('example.org', 3072, '0', 1)");
  exec(db, "INSERT INTO domain (domain, defquota, relayhost, active) VALUES ('example.net', 3072, '0', 0)");
  exec(db,
       "CREATE TABLE alias_domain (alias_domain TEXT PRIMARY KEY, target_domain TEXT, created TEXT, modified TEXT, "
       "active INTEGER)");
  exec(db, "INSERT INTO alias_domain (alias_domain, target_domain, active) VALUES ('alias.example', 'example.org', 1)");
  exec(db, "INSERT INTO alias_domain (alias_domain, target_domain, active) VALUES ('dormant.example', 'example.org', 0)");
  exec(db,
       "CREATE TABLE mailbox (username TEXT PRIMARY KEY, password TEXT, name TEXT, description TEXT, "
       "mailbox_path_prefix TEXT, quota INTEGER, local_part TEXT, domain TEXT, attributes TEXT, kind TEXT, "
       "multiple_bookings INTEGER, authsource TEXT, created TEXT, modified TEXT, active INTEGER)");
  const char* mb =
      "INSERT INTO mailbox (username, password, quota, local_part, domain, attributes, authsource, active) "
      "VALUES ($1, $2, $3, 'x', 'x', '{\"imap_access\":\"1\"}', 'mailcow', $4)";
  exec(db, mb, {"alice@example.org", "{BLF-CRYPT}" + h.bcrypt_2y, "3221225472", "1"});
  exec(db, mb, {"recv@example.org", "{SSHA256}c29tZXRoaW5nc2FsdHk=", "0", "2"});  // mail only
  exec(db, mb, {"bob@example.net", "{SHA512-CRYPT}" + h.sha512, "0", "1"});
  exec(db, mb, {"broken@@example.org", "{SHA512-CRYPT}" + h.sha512, "0", "1"});
  exec(db,
       "CREATE TABLE alias (id INTEGER PRIMARY KEY, address TEXT UNIQUE, goto TEXT, domain TEXT, created TEXT, "
       "modified TEXT, private_comment TEXT, public_comment TEXT, sogo_visible INTEGER, internal INTEGER, "
       "sender_allowed INTEGER, active INTEGER)");
  const char* al = "INSERT INTO alias (address, goto, domain, sogo_visible, sender_allowed, active) VALUES ($1, $2, 'x', 1, $3, $4)";
  exec(db, al, {"team@example.org", "alice@example.org,recv@example.org", "1", "1"});
  exec(db, al, {"nosend@example.org", "alice@example.org,external@else.example", "0", "1"});
  exec(db, al, {"@example.org", "alice@example.org", "1", "1"});
  exec(db, al, {"junk@example.org", "spam@localhost", "1", "1"});
  exec(db, "CREATE TABLE sender_acl (id INTEGER PRIMARY KEY, logged_in_as TEXT, send_as TEXT, external INTEGER)");
  const char* acl = "INSERT INTO sender_acl (logged_in_as, send_as, external) VALUES ($1, $2, 0)";
  exec(db, acl, {"alice@example.org", "@example.net"});
  exec(db, acl, {"alice@example.org", "Boss@example.org"});
  exec(db, acl, {"alice@example.org", "*"});
  return p;
}

TEST_CASE("import mailcow: rows and lookups") {
  const auto& h = hashes();
  std::string t = empty_directory();
  auto r = import(ImportKind::mailcow, mailcow_source(), t);
  INFO(dump(r));
  REQUIRE(r.status == ImportStatus::ok);
  CHECK(domains(t) == std::set<std::string>{"alias.example|1|example.org", "dormant.example|0|example.org",
                                            "example.net|0|NULL", "example.org|1|NULL"});
  CHECK(users(t) == std::set<std::string>{
                        "alice|example.org|{BLF-CRYPT}" + h.bcrypt_2y + "|3221225472|1|NULL|NULL|NULL|NULL",
                        "recv|example.org|NULL|NULL|1|NULL|NULL|NULL|NULL",
                        "bob|example.net|{SHA512-CRYPT}" + h.sha512 + "|NULL|1|NULL|NULL|NULL|NULL",
                    });
  CHECK(aliases(t) == std::set<std::string>{
                          "team|example.org|alice@example.org|1",
                          "team|example.org|recv@example.org|1",
                          "nosend|example.org|alice@example.org|1",
                          "nosend|example.org|external@else.example|1",
                          "|example.org|alice@example.org|1",
                      });
  CHECK(senders(t) == std::set<std::string>{"alice@example.org|team@example.org", "recv@example.org|team@example.org",
                                            "alice@example.org|@example.net", "alice@example.org|boss@example.org"});
  CHECK(r.count(ImportAction::skip) == 3);
  CHECK(has_item(r, "user", "broken@@example.org", ImportAction::skip, "not a valid address"));
  CHECK(has_item(r, "alias", "junk@example.org -> spam@localhost", ImportAction::skip, "mailcow"));
  CHECK(has_item(r, "sender", "alice@example.org as *", ImportAction::skip));
  CHECK(has_item(r, "user", "recv@example.org", ImportAction::add, "cannot log in"));

  SqliteBackend backend(t, UserDefaults{});
  auto conn = backend.connect();
  auto recv = conn->passdb("recv@example.org", soon());
  REQUIRE(recv.outcome == Outcome::found);
  CHECK_FALSE(recv.value.password.has_value());
  CHECK(conn->resolve_recipient("recv@example.org", soon()).value == std::vector<std::string>{"recv_example.org"});
  CHECK(conn->resolve_recipient("whoever@alias.example", soon()).value == std::vector<std::string>{"alice_example.org"});
  CHECK(conn->resolve_recipient("x@dormant.example", soon()).outcome == Outcome::not_found);
  CHECK(conn->passdb("bob@example.net", soon()).outcome == Outcome::not_found);
  auto send = conn->sender_addresses("recv@example.org", soon());
  REQUIRE(send.outcome == Outcome::found);
  CHECK(send.value == std::vector<std::string>{"recv@example.org", "team@example.org"});
}

TEST_CASE("import mailcow: before sender_allowed existed, every list alias may be sent as by its mailboxes") {
  std::string src = mailcow_source();
  {
    RawDb db(src);
    REQUIRE(db.exec("ALTER TABLE alias DROP COLUMN sender_allowed") == SQLITE_OK);
  }
  std::string t = empty_directory();
  auto r = import(ImportKind::mailcow, src, t);
  INFO(dump(r));
  REQUIRE(r.status == ImportStatus::ok);
  CHECK(senders(t) == std::set<std::string>{"alice@example.org|team@example.org", "recv@example.org|team@example.org",
                                            "alice@example.org|nosend@example.org", "alice@example.org|@example.net",
                                            "alice@example.org|boss@example.org"});
}

TEST_CASE("import mailcow: transaction rules") { check_transaction_rules(ImportKind::mailcow, mailcow_source()); }

// ---- Mail-in-a-Box -------------------------------------------------------------------------------

std::string mailinabox_source() {
  const auto& h = hashes();
  std::string p = fresh_path("mailinabox");
  RawDb db(p);
  exec(db,
       "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL UNIQUE, password TEXT NOT NULL, "
       "extra, privileges TEXT NOT NULL DEFAULT '', quota TEXT NOT NULL DEFAULT '0')");
  const char* u = "INSERT INTO users (email, password, privileges, quota) VALUES ($1, $2, 'admin', $3)";
  exec(db, u, {"admin@box.example", "{SHA512-CRYPT}" + h.sha512, "0"});
  exec(db, u, {"user@Other.Example", "{SHA512-CRYPT}" + h.sha512, "2G"});
  exec(db, u, {"greedy@box.example", "{SHA512-CRYPT}" + h.sha512, "lots"});  // bad quota
  exec(db,
       "CREATE TABLE aliases (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL UNIQUE, destination TEXT "
       "NOT NULL, permitted_senders TEXT)");
  const char* a = "INSERT INTO aliases (source, destination, permitted_senders) VALUES ($1, $2, $3)";
  exec(db, a, {"hello@box.example", "admin@box.example, user@other.example", std::nullopt});
  exec(db, a, {"@other.example", "user@other.example", std::nullopt});
  exec(db, a, {"noreply@box.example", "", "admin@box.example"});  // send-only
  exec(db, a, {"postmaster@box.example", "admin@box.example", std::nullopt});
  exec(db,
       "CREATE TABLE auto_aliases (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL UNIQUE, destination "
       "TEXT NOT NULL, permitted_senders TEXT)");
  exec(db, a = "INSERT INTO auto_aliases (source, destination) VALUES ($1, $2)",
       {"postmaster@box.example", "other@x.example"});  // overridden by the explicit alias
  exec(db, a, {"abuse@other.example", "admin@box.example"});
  exec(db, "CREATE TABLE mfa (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER, type TEXT, secret TEXT)");
  return p;
}

TEST_CASE("import mailinabox: rows and lookups") {
  const auto& h = hashes();
  std::string t = empty_directory();
  auto r = import(ImportKind::mailinabox, mailinabox_source(), t);
  INFO(dump(r));
  REQUIRE(r.status == ImportStatus::ok);
  CHECK(domains(t) == std::set<std::string>{"box.example|1|NULL", "other.example|1|NULL"});
  CHECK(users(t) == std::set<std::string>{
                        "admin|box.example|{SHA512-CRYPT}" + h.sha512 + "|NULL|1|NULL|NULL|NULL|NULL",
                        "user|other.example|{SHA512-CRYPT}" + h.sha512 + "|2147483648|1|NULL|NULL|NULL|NULL",
                    });
  CHECK(aliases(t) == std::set<std::string>{
                          "hello|box.example|admin@box.example|1",
                          "hello|box.example|user@other.example|1",
                          "|other.example|user@other.example|1",
                          "postmaster|box.example|admin@box.example|1",
                          "abuse|other.example|admin@box.example|1",
                      });
  CHECK(senders(t) == std::set<std::string>{"admin@box.example|noreply@box.example"});
  CHECK(r.count(ImportAction::skip) == 1);
  CHECK(has_item(r, "user", "greedy@box.example", ImportAction::skip, "quota"));

  SqliteBackend backend(t, UserDefaults{});
  auto conn = backend.connect();
  auto admin = conn->passdb("admin@box.example", soon());
  REQUIRE(admin.outcome == Outcome::found);
  CHECK(verifies("bob-secret", bare(admin.value.password.value_or(""))));
  CHECK(conn->userdb("user@other.example", soon()).value.quota_rule ==
        std::optional<std::string>("*:storage=2147483648B"));
  CHECK(conn->resolve_recipient("postmaster@box.example", soon()).value ==
        std::vector<std::string>{"admin_box.example"});
  CHECK(conn->resolve_recipient("random@other.example", soon()).value ==
        std::vector<std::string>{"user_other.example"});
  auto send = conn->sender_addresses("admin@box.example", soon());
  REQUIRE(send.outcome == Outcome::found);
  CHECK(std::find(send.value.begin(), send.value.end(), "noreply@box.example") != send.value.end());
}

TEST_CASE("import mailinabox: transaction rules") {
  check_transaction_rules(ImportKind::mailinabox, mailinabox_source());
}

// ---- modoboa -------------------------------------------------------------------------------------

std::string modoboa_source() {
  const auto& h = hashes();
  std::string p = fresh_path("modoboa");
  RawDb db(p);
  exec(db,
       "CREATE TABLE admin_domain (id INTEGER PRIMARY KEY, name TEXT UNIQUE, quota INTEGER, "
       "default_mailbox_quota INTEGER, enabled INTEGER, type TEXT, enable_dns_checks INTEGER)");
  exec(db, "INSERT INTO admin_domain (id, name, quota, enabled, type) VALUES (1, 'example.org', 0, 1, 'domain')");
  exec(db, "INSERT INTO admin_domain (id, name, quota, enabled, type) VALUES (2, 'closed.example', 0, 0, 'domain')");
  exec(db, "CREATE TABLE admin_domainalias (id INTEGER PRIMARY KEY, name TEXT UNIQUE, target_id INTEGER, enabled INTEGER)");
  exec(db, "INSERT INTO admin_domainalias (name, target_id, enabled) VALUES ('mirror.example', 1, 1)");
  exec(db,
       "CREATE TABLE core_user (id INTEGER PRIMARY KEY, username TEXT UNIQUE, email TEXT, password TEXT, "
       "is_active INTEGER, master_user INTEGER, first_name TEXT)");
  const char* cu = "INSERT INTO core_user (id, username, email, password, is_active, master_user) VALUES ($1, $2, $2, $3, $4, 0)";
  exec(db, cu, {"1", "alice@example.org", "{SHA512-CRYPT}" + h.sha512, "1"});
  exec(db, cu, {"2", "bob@example.org", "{BLF-CRYPT}" + h.bcrypt_2y, "0"});
  exec(db, cu, {"3", "admin", "pbkdf2_sha256$260000$salt$hash", "1"});  // an admin without mailbox
  exec(db, cu, {"4", "django@example.org", "pbkdf2_sha256$260000$salt$hash", "1"});
  exec(db, cu, {"5", "carl@closed.example", "{SHA512-CRYPT}" + h.sha512, "1"});
  exec(db,
       "CREATE TABLE admin_mailbox (id INTEGER PRIMARY KEY, address TEXT, quota INTEGER, use_domain_quota INTEGER, "
       "is_send_only INTEGER, domain_id INTEGER, user_id INTEGER)");
  const char* m = "INSERT INTO admin_mailbox (id, address, quota, use_domain_quota, is_send_only, domain_id, user_id) "
                  "VALUES ($1, $2, $3, 0, 0, $4, $1)";
  exec(db, m, {"1", "alice", "100", "1"});
  exec(db, m, {"2", "bob", "0", "1"});
  exec(db, m, {"4", "django", "0", "1"});
  exec(db, m, {"5", "carl", "0", "2"});
  exec(db,
       "CREATE TABLE admin_alias (id INTEGER PRIMARY KEY, address TEXT, domain_id INTEGER, enabled INTEGER, "
       "internal INTEGER, description TEXT, expire_at TEXT)");
  const char* al = "INSERT INTO admin_alias (id, address, domain_id, enabled, internal) VALUES ($1, $2, 1, $3, $4)";
  exec(db, al, {"1", "alice@example.org", "1", "1"});  // modoboa's internal self-alias
  exec(db, al, {"2", "bob@example.org", "1", "1"});
  exec(db, al, {"4", "sales@example.org", "1", "0"});
  exec(db, al, {"5", "@example.org", "1", "0"});
  exec(db, al, {"6", "old@example.org", "0", "0"});
  exec(db, al, {"7", "empty@example.org", "1", "0"});  // no recipients
  exec(db, "UPDATE admin_alias SET expire_at = '2001-01-01 00:00:00' WHERE id = 5");  // expired catch-all
  exec(db, "UPDATE admin_alias SET expire_at = '2999-01-01 00:00:00' WHERE id = 4");  // not yet
  exec(db,
       "CREATE TABLE modoboa_admin_aliasrecipient (id INTEGER PRIMARY KEY, address TEXT, alias_id INTEGER, "
       "r_mailbox_id INTEGER, r_alias_id INTEGER)");
  const char* rc = "INSERT INTO modoboa_admin_aliasrecipient (address, alias_id, r_mailbox_id) VALUES ($1, $2, $3)";
  exec(db, rc, {"alice@example.org", "1", "1"});
  exec(db, rc, {"bob@example.org", "2", "2"});
  exec(db, rc, {"alice@example.org", "4", "1"});
  exec(db, rc, {"External@Partner.example", "4", std::nullopt});
  exec(db, rc, {"alice@example.org", "5", "1"});
  exec(db, rc, {"bob@example.org", "6", "2"});
  return p;
}

TEST_CASE("import modoboa: rows and lookups") {
  const auto& h = hashes();
  std::string t = empty_directory();
  auto r = import(ImportKind::modoboa, modoboa_source(), t);
  INFO(dump(r));
  REQUIRE(r.status == ImportStatus::ok);
  CHECK(domains(t) == std::set<std::string>{"closed.example|0|NULL", "example.org|1|NULL",
                                            "mirror.example|1|example.org"});
  CHECK(users(t) == std::set<std::string>{
                        "alice|example.org|{SHA512-CRYPT}" + h.sha512 + "|104857600|1|NULL|NULL|NULL|NULL",
                        "bob|example.org|{BLF-CRYPT}" + h.bcrypt_2y + "|NULL|0|NULL|NULL|NULL|NULL",
                        "carl|closed.example|{SHA512-CRYPT}" + h.sha512 + "|NULL|1|NULL|NULL|NULL|NULL",
                    });
  CHECK(aliases(t) == std::set<std::string>{
                          "sales|example.org|alice@example.org|1",
                          "sales|example.org|external@partner.example|1",
                          "|example.org|alice@example.org|0",
                          "old|example.org|bob@example.org|0",
                      });
  CHECK(r.count(ImportAction::skip) == 2);
  CHECK(has_item(r, "user", "django@example.org", ImportAction::skip, "unknown scheme"));
  CHECK(has_item(r, "alias", "empty@example.org", ImportAction::skip, "no destination"));
  CHECK(has_item(r, "alias", "alice@example.org", ImportAction::ignore, "redundant"));
  CHECK(has_item(r, "alias", "bob@example.org", ImportAction::ignore, "redundant"));

  SqliteBackend backend(t, UserDefaults{});
  auto conn = backend.connect();
  auto alice = conn->passdb("alice_example.org", soon());
  REQUIRE(alice.outcome == Outcome::found);
  CHECK(verifies("bob-secret", bare(alice.value.password.value_or(""))));
  CHECK(conn->userdb("alice@example.org", soon()).value.quota_rule == std::optional<std::string>("*:storage=104857600B"));
  CHECK(conn->passdb("bob@example.org", soon()).outcome == Outcome::not_found);
  CHECK(conn->passdb("carl@closed.example", soon()).outcome == Outcome::not_found);
  CHECK(conn->resolve_recipient("sales@mirror.example", soon()).value ==
        std::vector<std::string>{"alice_example.org", "external@partner.example"});
}

TEST_CASE("import modoboa: transaction rules") { check_transaction_rules(ImportKind::modoboa, modoboa_source()); }

// ---- pieces --------------------------------------------------------------------------------------

TEST_CASE("import: which stored hashes are importable") {
  for (const char* ok : {"$2y$10$abcdefghijklmnopqrstuu", "$2b$12$x", "$6$salt$hash", "$5$s$h", "$1$s$h", "$y$j9T$s$h",
                         "$argon2id$v=19$m=65536,t=3,p=1$s$h", "{SHA512-CRYPT}$6$s$h", "{BLF-CRYPT}$2y$10$x",
                         "{ARGON2ID}$argon2id$x", "{SSHA256}c29tZQ==", "{PLAIN-MD5}5f4dcc3b5aa765d61d8327deb882cf99",
                         "{sha512-crypt}$6$s$h", "{SHA256.b64}abc", "{CRYPT}$6$s$h"}) {
    CAPTURE(ok);
    CHECK(importable_password_hash(ok));
  }
  for (const char* bad : {"", "secret", "5f4dcc3b5aa765d61d8327deb882cf99", "pbkdf2_sha256$260000$salt$hash",
                          "{NOPE}abc", "{SHA512-CRYPT}", "{SHA512-CRYPT", "$6$", "$6$ with space", "$9$x"}) {
    CAPTURE(bad);
    CHECK_FALSE(importable_password_hash(bad));
  }
}

TEST_CASE("import: kind names") {
  CHECK(parse_import_kind("PostfixAdmin") == ImportKind::postfixadmin);
  CHECK(parse_import_kind("miab") == ImportKind::mailinabox);
  CHECK(parse_import_kind("mailinabox") == ImportKind::mailinabox);
  CHECK_FALSE(parse_import_kind("iredmail").has_value());
  for (auto k : {ImportKind::postfixadmin, ImportKind::vimbadmin, ImportKind::mailcow, ImportKind::mailinabox,
                 ImportKind::modoboa})
    CHECK(parse_import_kind(import_kind_name(k)) == k);
}

}  // namespace
