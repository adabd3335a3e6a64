// smtpd's directory questions (DESIGN.md §3, specs/smtpd-tables.md §5) over the SQLite demo
// directory: recipient resolution, userinfo, credentials, sender addresses and the small tables.
#include <crypt.h>
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <chrono>
#include <string>
#include <vector>

#include "storage/demo_directory.hpp"
#include "storage/password_scheme.hpp"
#include "storage/sqlite_directory.hpp"
#include "storage_test_util.hpp"

using namespace maildict::storage;
using maildict::storage::testing::demo_copy;
using maildict::storage::testing::fresh_path;
using maildict::storage::testing::RawDb;
using namespace std::chrono_literals;
using List = std::vector<std::string>;

namespace {

Deadline soon() { return Clock::now() + 2s; }

UserDefaults numeric_defaults() {
  UserDefaults d;
  d.uid = "5000";
  d.gid = "5001";
  d.home = "/var/vmail/%d/%n";
  return d;
}

struct Demo {
  std::string path = demo_copy();
  SqliteBackend backend;
  std::unique_ptr<DirectoryConnection> conn;
  explicit Demo(UserDefaults defaults = numeric_defaults()) : backend(path, std::move(defaults)) {
    conn = backend.connect();
  }
};

bool verifies(const std::string& password, const std::string& hash) {
  crypt_data data{};
  const char* out = crypt_r(password.c_str(), hash.c_str(), &data);
  return out != nullptr && hash == out;
}

List resolved(DirectoryConnection& conn, const char* address) {
  auto r = conn.resolve_recipient(address, soon());
  REQUIRE_MESSAGE(r.outcome == Outcome::found, address);
  return r.value;
}

}  // namespace

TEST_CASE("domain_exists: active domains and alias domains, nothing else") {
  Demo d;
  for (auto [asked, found] : std::vector<std::pair<const char*, const char*>>{
           {"example.org", "example.org"}, {"example.net", "example.net"}, {"example.com", "example.com"},
           {"Example.ORG", "example.org"}}) {
    CAPTURE(asked);
    auto r = d.conn->domain_exists(asked, soon());
    REQUIRE(r.outcome == Outcome::found);
    CHECK(r.value == found);
  }
  for (const char* domain : {"disabled.example", "nope.example", "", "example.org.", "*.example.org", "bulk.example"}) {
    CAPTURE(domain);
    CHECK(d.conn->domain_exists(domain, soon()).outcome == Outcome::not_found);
  }
}

TEST_CASE("resolve_recipient: user, alias list, sub-address, alias domain, catch-all") {
  Demo d;
  CHECK(resolved(*d.conn, "john@example.org") == List{"john_example.org"});
  // Insertion order, not alphabetical: the operator's order is kept.
  CHECK(resolved(*d.conn, "postmaster@example.org") == List{"john_example.org", "jane_example.org"});
  CHECK(resolved(*d.conn, "sales@example.org") == List{"john_example.org"});
  CHECK(resolved(*d.conn, "john+tag@example.org") == List{"john_example.org"});
  CHECK(resolved(*d.conn, "John+Lists@Example.ORG") == List{"john_example.org"});
  CHECK(resolved(*d.conn, "anything@example.net") == List{"bob_example.net"});
  CHECK(resolved(*d.conn, "bob@example.net") == List{"bob_example.net"});
  CHECK(resolved(*d.conn, "john@example.com") == List{"john_example.org"});
  CHECK(resolved(*d.conn, "postmaster@example.com") == List{"john_example.org", "jane_example.org"});
  CHECK(resolved(*d.conn, "john_doe@example.org") == List{"john_doe_example.org"});
  // A user that cannot log in still receives mail.
  CHECK(resolved(*d.conn, "nopw@example.net") == List{"nopw_example.net"});
}

TEST_CASE("resolve_recipient: unknown, disabled and malformed keys are not found") {
  Demo d;
  for (const char* key :
       {"unknown@example.org", "unknown@example.com", "eve@example.org", "eve+x@example.org",
        "ghost@disabled.example", "anything@disabled.example", "john@nope.example",
        // smtpd asks these in its sequence; the catch-all is already applied for user@dom.
        "john_example.org", "vmail", "vmail@", "john_example.org@", "@example.org", "@example.net", "@", "john",
        "", "john@example.org ", "jo hn@example.org", "' OR 1=1 --@example.org"}) {
    CAPTURE(key);
    CHECK(d.conn->resolve_recipient(key, soon()).outcome == Outcome::not_found);
  }
}

TEST_CASE("resolve_recipient: first match wins, in DESIGN order") {
  Demo d;
  RawDb raw(d.path);
  // An alias row beats the user of the same address.
  REQUIRE(raw.exec("INSERT INTO aliases VALUES ('jane', 'example.org', 'jane@elsewhere.example', 1)") == SQLITE_OK);
  CHECK(resolved(*d.conn, "jane@example.org") == List{"jane@elsewhere.example"});
  // An inactive alias row is skipped: the user answers again.
  REQUIRE(raw.exec("UPDATE aliases SET active = 0 WHERE local_part = 'jane'") == SQLITE_OK);
  CHECK(resolved(*d.conn, "jane@example.org") == List{"jane_example.org"});

  // The alias domain's own catch-all comes after the target domain.
  REQUIRE(raw.exec("INSERT INTO aliases VALUES ('', 'example.com', 'catch@remote.example', 1)") == SQLITE_OK);
  CHECK(resolved(*d.conn, "john@example.com") == List{"john_example.org"});
  CHECK(resolved(*d.conn, "unknown@example.com") == List{"catch@remote.example"});

  // Destinations that are not local users stay as written; a disabled user is not local.
  REQUIRE(raw.exec("INSERT INTO aliases VALUES ('team', 'example.org', 'eve@example.org', 1), "
                   "('team', 'example.org', '|/usr/bin/vacation john', 1), "
                   "('team', 'example.org', 'bob@example.net', 1)") == SQLITE_OK);
  CHECK(resolved(*d.conn, "team@example.org") == List{"eve@example.org", "|/usr/bin/vacation john", "bob_example.net"});

  // Disabling the domain disables its aliases and users.
  REQUIRE(raw.exec("UPDATE domains SET active = 0 WHERE domain = 'example.org'") == SQLITE_OK);
  CHECK(d.conn->resolve_recipient("team@example.org", soon()).outcome == Outcome::not_found);
  CHECK(d.conn->resolve_recipient("john@example.org", soon()).outcome == Outcome::not_found);
  // ... so the alias domain falls through to its own catch-all.
  CHECK(resolved(*d.conn, "john@example.com") == List{"catch@remote.example"});
}

TEST_CASE("resolve_recipient: a disabled user's mail is refused, never given to a catch-all") {
  Demo d;
  RawDb raw(d.path);
  REQUIRE(raw.exec("INSERT INTO aliases VALUES ('', 'example.org', 'jane@example.org', 1)") == SQLITE_OK);
  CHECK(resolved(*d.conn, "unknown@example.org") == List{"jane_example.org"});  // the catch-all works
  // eve@example.org is disabled: not found (smtpd: 550), in both domains and with a +tag
  for (const char* key : {"eve@example.org", "eve+x@example.org", "eve@example.com"}) {
    CAPTURE(key);
    CHECK(d.conn->resolve_recipient(key, soon()).outcome == Outcome::not_found);
  }
  // the alias domain's own catch-all does not take it either
  REQUIRE(raw.exec("INSERT INTO aliases VALUES ('', 'example.com', 'catch@remote.example', 1)") == SQLITE_OK);
  CHECK(d.conn->resolve_recipient("eve@example.com", soon()).outcome == Outcome::not_found);
  // an alias for the address is how an operator forwards a former user's mail
  REQUIRE(raw.exec("INSERT INTO aliases VALUES ('eve', 'example.org', 'john@example.org', 1)") == SQLITE_OK);
  CHECK(resolved(*d.conn, "eve@example.org") == List{"john_example.org"});
  // enabled again: delivered to itself
  REQUIRE(raw.exec("DELETE FROM aliases WHERE local_part = 'eve'") == SQLITE_OK);
  REQUIRE(raw.exec("UPDATE users SET active = 1 WHERE local_part = 'eve'") == SQLITE_OK);
  CHECK(resolved(*d.conn, "eve@example.org") == List{"eve_example.org"});
}

TEST_CASE("resolve_recipient: alias domain loops end") {
  Demo d;
  RawDb raw(d.path);
  REQUIRE(raw.exec("INSERT INTO domains VALUES ('a.example', 1, 'b.example'), ('b.example', 1, 'a.example'), "
                   "('self.example', 1, 'self.example')") == SQLITE_OK);
  CHECK(d.conn->resolve_recipient("x@a.example", soon()).outcome == Outcome::not_found);
  CHECK(d.conn->resolve_recipient("x@self.example", soon()).outcome == Outcome::not_found);
  REQUIRE(raw.exec("INSERT INTO users (local_part, domain, active) VALUES ('x', 'b.example', 1)") == SQLITE_OK);
  CHECK(resolved(*d.conn, "x@a.example") == List{"x_b.example"});
}

TEST_CASE("resolve_recipient: the delimiter is configurable and can be turned off") {
  std::string path = demo_copy();
  UserDefaults dash = numeric_defaults();
  dash.recipient_delimiter = "-";
  SqliteBackend b1(path, dash);
  auto c1 = b1.connect();
  CHECK(resolved(*c1, "john-tag@example.org") == List{"john_example.org"});
  // '+' is an ordinary character now: john+tag is unknown at example.org (no catch-all there).
  CHECK(c1->resolve_recipient("john+tag@example.org", soon()).outcome == Outcome::not_found);

  UserDefaults off = numeric_defaults();
  off.recipient_delimiter = "";
  SqliteBackend b2(path, off);
  auto c2 = b2.connect();
  CHECK(c2->resolve_recipient("john+tag@example.org", soon()).outcome == Outcome::not_found);
  // A delimiter in first position leaves nothing to reach: the whole local part is used.
  CHECK(c2->resolve_recipient("+john@example.org", soon()).outcome == Outcome::not_found);
}

TEST_CASE("userinfo: both spellings, decimal ids, defaults and explicit columns") {
  Demo d;
  for (const char* name : {"john_example.org", "john@example.org", "JOHN@example.org"}) {
    CAPTURE(name);
    auto r = d.conn->userinfo(name, soon());
    REQUIRE(r.outcome == Outcome::found);
    CHECK(r.value.uid == "5000");
    CHECK(r.value.gid == "5001");
    CHECK(r.value.home == "/var/vmail/example.org/john");
  }
  auto bob = d.conn->userinfo("bob_example.net", soon());
  REQUIRE(bob.outcome == Outcome::found);
  CHECK(bob.value.uid == "2000");
  CHECK(bob.value.gid == "2000");
  CHECK(bob.value.home == "/var/vmail/custom/bob");
  auto doe = d.conn->userinfo("john_doe_example.org", soon());
  REQUIRE(doe.outcome == Outcome::found);
  CHECK(doe.value.home == "/var/vmail/example.org/john_doe");
  CHECK(d.conn->userinfo("nopw_example.net", soon()).outcome == Outcome::found);

  for (const char* name : {"vmail", "eve_example.org", "ghost_disabled.example", "nobody_example.org", "john_example.com", ""}) {
    CAPTURE(name);
    CHECK(d.conn->userinfo(name, soon()).outcome == Outcome::not_found);
  }
}

TEST_CASE("userinfo: account names resolve to numbers; an unknown name fails temporarily") {
  UserDefaults names = numeric_defaults();
  names.uid = "root";
  names.gid = "root";
  Demo named(names);
  auto r = named.conn->userinfo("john_example.org", soon());
  REQUIRE(r.outcome == Outcome::found);
  CHECK(r.value.uid == "0");
  CHECK(r.value.gid == "0");

  UserDefaults missing = numeric_defaults();
  missing.uid = "maildict-no-such-user";
  Demo bad(missing);
  auto f = bad.conn->userinfo("john_example.org", soon());
  CHECK(f.outcome == Outcome::temp_fail);
  CHECK(f.error.find("maildict-no-such-user") != std::string::npos);
  CHECK(f.error.find("default_uid") != std::string::npos);
  // bob has explicit numeric columns, so the broken default does not touch him.
  CHECK(bad.conn->userinfo("bob_example.net", soon()).outcome == Outcome::found);

  UserDefaults missing_group = numeric_defaults();
  missing_group.gid = "maildict-no-such-group";
  Demo bad_group(missing_group);
  auto g = bad_group.conn->userinfo("jane@example.org", soon());
  CHECK(g.outcome == Outcome::temp_fail);
  CHECK(g.error.find("default_gid") != std::string::npos);
}

TEST_CASE("credentials: canonical login and a bare crypt hash smtpd can verify") {
  Demo d;
  auto john = d.conn->credentials("john@example.org", soon());
  REQUIRE(john.outcome == Outcome::found);
  CHECK(john.value.login == "john@example.org");
  CHECK(john.value.hash.rfind("$2b$10$", 0) == 0);
  CHECK(verifies("john-secret", john.value.hash));
  CHECK_FALSE(verifies("wrong", john.value.hash));

  auto jane = d.conn->credentials("jane_example.org", soon());
  REQUIRE(jane.outcome == Outcome::found);
  CHECK(jane.value.login == "jane@example.org");
  CHECK(jane.value.hash.rfind("$6$", 0) == 0);
  CHECK(verifies("jane-secret", jane.value.hash));

  // Stored as "{BLF-CRYPT}$2y$...": prefix gone, shown as $2b$, still the same password.
  auto doe = d.conn->credentials("john_doe@example.org", soon());
  REQUIRE(doe.outcome == Outcome::found);
  CHECK(doe.value.login == "john_doe@example.org");
  CHECK(doe.value.hash.find('{') == std::string::npos);
  CHECK(doe.value.hash.rfind("$2b$10$", 0) == 0);
  CHECK(verifies("doe-secret", doe.value.hash));

  for (const char* login : {"nopw@example.net", "eve@example.org", "ghost@disabled.example", "nobody@example.org",
                            "john@example.com", "relay1", ""}) {
    CAPTURE(login);
    CHECK(d.conn->credentials(login, soon()).outcome == Outcome::not_found);
  }
}

TEST_CASE("credentials: schemes crypt(3) cannot check are not found") {
  Demo d;
  RawDb raw(d.path);
  REQUIRE(raw.exec("UPDATE users SET password = '{PLAIN}jane-secret' WHERE local_part = 'jane'") == SQLITE_OK);
  CHECK(d.conn->credentials("jane@example.org", soon()).outcome == Outcome::not_found);
  REQUIRE(raw.exec("UPDATE users SET password = '' WHERE local_part = 'jane'") == SQLITE_OK);
  CHECK(d.conn->credentials("jane@example.org", soon()).outcome == Outcome::not_found);
  std::string sha = hash_password("x", "sha256-crypt");
  REQUIRE(raw.exec("UPDATE users SET password = '{CRYPT}" + sha + "' WHERE local_part = 'jane'") == SQLITE_OK);
  auto r = d.conn->credentials("jane@example.org", soon());
  REQUIRE(r.outcome == Outcome::found);
  CHECK(r.value.hash == sha);
}

TEST_CASE("crypt_hash_for_smtpd: prefixes, $2y$ and refused schemes") {
  std::string b = hash_password("pw", "bcrypt-2y");
  REQUIRE(b.rfind("$2y$", 0) == 0);
  auto h = crypt_hash_for_smtpd("{BLF-CRYPT}" + b);
  REQUIRE(h.has_value());
  CHECK(h->rfind("$2b$", 0) == 0);
  CHECK(h->substr(4) == b.substr(4));
  CHECK(verifies("pw", *h));
  std::string y = hash_password("pw", "yescrypt");
  CHECK(crypt_hash_for_smtpd(y) == y);
  CHECK(crypt_hash_for_smtpd("{sha512-crypt}" + y) == y);
  CHECK_FALSE(crypt_hash_for_smtpd("{SSHA}abcdef").has_value());
  CHECK_FALSE(crypt_hash_for_smtpd("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA").has_value());
  CHECK_FALSE(crypt_hash_for_smtpd("$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA").has_value());
  CHECK_FALSE(crypt_hash_for_smtpd("{CRYPT}").has_value());
  CHECK_FALSE(crypt_hash_for_smtpd("").has_value());
  CHECK_FALSE(crypt_hash_for_smtpd("{BLF-CRYPT").has_value());
}

TEST_CASE("relay_credential: the demo label and nothing else") {
  Demo d;
  for (const char* label : {"relay1", "RELAY1"}) {
    CAPTURE(label);
    auto r = d.conn->relay_credential(label, soon());
    REQUIRE(r.outcome == Outcome::found);
    CHECK(r.value.username == "relayuser");
    CHECK(r.value.password == "relaypass");
  }
  CHECK(d.conn->relay_credential("relay2", soon()).outcome == Outcome::not_found);
  CHECK(d.conn->relay_credential("", soon()).outcome == Outcome::not_found);
}

TEST_CASE("sender_addresses: own address, sender_logins, aliases pointing only to the login") {
  Demo d;
  for (const char* login : {"john@example.org", "john_example.org"}) {
    CAPTURE(login);
    auto r = d.conn->sender_addresses(login, soon());
    REQUIRE(r.outcome == Outcome::found);
    // sales is both a sender_logins row and a sole-destination alias: listed once.
    CHECK(r.value == List{"john@example.org", "sales@example.org"});
  }
  // postmaster has two destinations, so neither may send as it.
  auto jane = d.conn->sender_addresses("jane@example.org", soon());
  REQUIRE(jane.outcome == Outcome::found);
  CHECK(jane.value == List{"jane@example.org"});
  // The catch-all never makes bob the sender of every address at example.net.
  auto bob = d.conn->sender_addresses("bob@example.net", soon());
  REQUIRE(bob.outcome == Outcome::found);
  CHECK(bob.value == List{"bob@example.net"});

  RawDb raw(d.path);
  REQUIRE(raw.exec("INSERT INTO aliases VALUES ('info', 'example.org', 'jane_example.org', 1), "
                   "('old', 'example.org', 'jane@example.org', 0)") == SQLITE_OK);
  REQUIRE(raw.exec("INSERT INTO sender_logins VALUES ('jane@example.org', 'jane@other.example')") == SQLITE_OK);
  jane = d.conn->sender_addresses("jane@example.org", soon());
  REQUIRE(jane.outcome == Outcome::found);
  CHECK(jane.value == List{"jane@example.org", "jane@other.example", "info@example.org"});

  for (const char* login : {"eve@example.org", "ghost@disabled.example", "nobody@example.org", "sales@example.org", ""}) {
    CAPTURE(login);
    CHECK(d.conn->sender_addresses(login, soon()).outcome == Outcome::not_found);
  }
}

TEST_CASE("smtpd_values and smtpd_keys: the demo rows, in insertion order") {
  Demo d;
  auto name = d.conn->smtpd_values("addrname", "127.0.0.1", soon());
  REQUIRE(name.outcome == Outcome::found);
  CHECK(name.value == List{"mail.example.org"});
  auto source = d.conn->smtpd_values("source", "", soon());
  REQUIRE(source.outcome == Outcome::found);
  CHECK(source.value == List{"127.0.0.1"});
  auto relay = d.conn->smtpd_values("relayhost", "relay.example", soon());
  REQUIRE(relay.outcome == Outcome::found);
  CHECK(relay.value == List{"smtp+tls://relay1@smtp.relay.example:587"});
  CHECK(d.conn->smtpd_values("addrname", "192.0.2.1", soon()).outcome == Outcome::not_found);
  CHECK(d.conn->smtpd_values("netaddr", "127.0.0.1", soon()).outcome == Outcome::not_found);

  auto nets = d.conn->smtpd_keys("netaddr", soon());
  REQUIRE(nets.outcome == Outcome::found);
  CHECK(nets.value == List{"127.0.0.0/8", "::1", "local"});
  CHECK(d.conn->smtpd_keys("nothing", soon()).outcome == Outcome::not_found);

  RawDb raw(d.path);
  REQUIRE(raw.exec("INSERT INTO smtpd_values VALUES ('source', '', '192.0.2.7'), ('source', '', '192.0.2.5')") ==
          SQLITE_OK);
  source = d.conn->smtpd_values("source", "", soon());
  REQUIRE(source.outcome == Outcome::found);
  CHECK(source.value == List{"127.0.0.1", "192.0.2.7", "192.0.2.5"});
}

TEST_CASE("a database from before smtpd_values: Dovecot's questions work, prepare_schema adds the table") {
  std::string path = demo_copy();
  {
    RawDb raw(path);
    REQUIRE(raw.exec("DROP TABLE smtpd_values; DROP INDEX aliases_by_destination") == SQLITE_OK);
    REQUIRE(raw.text("PRAGMA user_version") == "1");
  }
  SqliteBackend backend(path, numeric_defaults());
  {
    auto conn = backend.connect();
    CHECK(conn->passdb("john@example.org", soon()).outcome == Outcome::found);
    CHECK(resolved(*conn, "sales@example.org") == List{"john_example.org"});
    auto missing = conn->smtpd_values("source", "", soon());
    CHECK(missing.outcome == Outcome::temp_fail);
    CHECK(missing.error.find("smtpd_values") != std::string::npos);
    CHECK(conn->healthy());
  }
  backend.prepare_schema();
  RawDb raw(path);
  CHECK(raw.text("SELECT count(*) FROM sqlite_master WHERE name IN ('smtpd_values', 'aliases_by_destination')") == "2");
  CHECK(raw.text("PRAGMA user_version") == "1");
  auto conn = backend.connect();
  CHECK(conn->smtpd_values("source", "", soon()).outcome == Outcome::not_found);  // empty, not broken
  // The demo completes an older demo database with the smtpd rows.
  create_demo_directory(path);
  CHECK(conn->smtpd_values("source", "", soon()).outcome == Outcome::found);
  CHECK(raw.text("SELECT count(*) FROM aliases") == "4");
}

TEST_CASE("a locked database is a temporary failure for every smtpd question, never not found") {
  // A lock that blocks readers needs rollback-journal mode (see storage_sqlite.cpp).
  std::string path = demo_copy();
  {
    RawDb raw(path);
    REQUIRE(raw.text("PRAGMA journal_mode = DELETE") == "delete");
  }
  SqliteBackend backend(path, numeric_defaults());
  auto conn = backend.connect();
  // Some statements are prepared before the lock, the rest must be prepared under it.
  REQUIRE(conn->resolve_recipient("john@example.org", soon()).outcome == Outcome::found);
  REQUIRE(conn->domain_exists("example.org", soon()).outcome == Outcome::found);

  auto locker = std::make_unique<RawDb>(path);
  REQUIRE(locker->exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  REQUIRE(locker->exec("UPDATE domains SET active = active") == SQLITE_OK);
  auto quick = [] { return Clock::now() + 100ms; };
  CHECK(conn->domain_exists("example.org", quick()).outcome == Outcome::temp_fail);
  CHECK(conn->domain_exists("nope.example", quick()).outcome == Outcome::temp_fail);
  CHECK(conn->resolve_recipient("john@example.org", quick()).outcome == Outcome::temp_fail);
  CHECK(conn->resolve_recipient("unknown@example.org", quick()).outcome == Outcome::temp_fail);
  CHECK(conn->userinfo("john_example.org", quick()).outcome == Outcome::temp_fail);
  CHECK(conn->credentials("john@example.org", quick()).outcome == Outcome::temp_fail);
  auto relay = conn->relay_credential("relay1", quick());
  CHECK(relay.outcome == Outcome::temp_fail);
  CHECK(relay.error == "database is locked");
  CHECK(conn->sender_addresses("john@example.org", quick()).outcome == Outcome::temp_fail);
  CHECK(conn->smtpd_values("source", "", quick()).outcome == Outcome::temp_fail);
  CHECK(conn->smtpd_keys("netaddr", quick()).outcome == Outcome::temp_fail);
  REQUIRE(locker->exec("COMMIT") == SQLITE_OK);
  locker.reset();
  CHECK(conn->healthy());
  CHECK(conn->resolve_recipient("john@example.org", soon()).outcome == Outcome::found);
  CHECK(conn->relay_credential("relay1", soon()).outcome == Outcome::found);
  CHECK(conn->smtpd_keys("netaddr", soon()).outcome == Outcome::found);
}
