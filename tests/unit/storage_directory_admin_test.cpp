// DirectoryAdmin (maildictctl's changes) against a real SQLite file: every change one
// transaction, clear refusals, nothing half-written, and what the directory then answers.
#include <crypt.h>
#include <doctest/doctest.h>

#include "storage/directory_admin.hpp"
#include "storage/password_scheme.hpp"
#include "storage/sqlite_directory.hpp"
#include "storage_test_util.hpp"
#include "fault_injecting_session.hpp"

using namespace maildict::storage;
using maildict::storage::testing::RawDb;
using maildict::storage::testing::FaultInjectingSession;

namespace {

std::string empty_directory() {
  std::string path = testing::fresh_path("admin");
  SqliteBackend(path, {}).prepare_schema();
  return path;
}

// Every row of every table, in a fixed order: equal dumps mean "nothing was written".
std::string dump(const std::string& path) {
  RawDb db(path);
  std::string out;
  for (const char* sql : {
           "SELECT group_concat(x, '|') FROM (SELECT domain || ',' || active || ',' || ifnull(alias_for, '-') AS x "
           "FROM domains ORDER BY 1)",
           "SELECT group_concat(x, '|') FROM (SELECT local_part || ',' || domain || ',' || ifnull(password, '-') || ','"
           " || ifnull(uid, '-') || ',' || ifnull(gid, '-') || ',' || ifnull(home, '-') || ',' || ifnull(mail, '-') "
           "|| ',' || ifnull(quota_bytes, '-') || ',' || active AS x FROM users ORDER BY 1)",
           "SELECT group_concat(x, '|') FROM (SELECT local_part || ',' || domain || ',' || destination || ',' || active"
           " AS x FROM aliases ORDER BY 1)",
           "SELECT group_concat(x, '|') FROM (SELECT login || ',' || address AS x FROM sender_logins ORDER BY 1)",
       }) {
    out += db.text(sql);
    out += "\n";
  }
  return out;
}

UserAttributes no_attributes() { return {}; }

AdminStatus status_of(const AdminResult& r) { return r.status; }

Deadline soon() { return Clock::now() + std::chrono::seconds(5); }

bool verifies(const std::string& password, const std::string& hash) {
  crypt_data data{};
  const char* out = crypt_r(password.c_str(), hash.c_str(), &data);
  return out != nullptr && hash == out;
}

struct Fixture {
  std::string path = empty_directory();
  SqliteBackend admin_backend{path, {}};
  // The storage library's own SQLite session, as maildictctl uses it.
  FaultInjectingSession session{admin_backend.open_session(SessionRole::write)};
  DirectoryAdmin admin{session, "+", std::chrono::milliseconds(300)};

  void require_ok(const AdminResult& r) {
    INFO(r.message);
    REQUIRE(r.ok());
  }
  // example.org with john (password john-pw, cost 4), jane, an alias and an alias domain.
  void populate() {
    require_ok(admin.add_domain("Example.ORG", std::nullopt));
    require_ok(admin.add_domain("example.com", std::string_view("example.org")));
    require_ok(admin.add_user("John@Example.org", hash_password("john-pw", "bcrypt", 4), no_attributes()));
    require_ok(admin.add_user("jane@example.org", hash_password("jane-pw", "sha512-crypt"), no_attributes()));
  }
};

}  // namespace

TEST_CASE("names: domains, addresses, catch-alls and quotas") {
  std::string why;
  CHECK(normalize_domain("Example.ORG", why) == "example.org");
  CHECK(normalize_domain("xn--bcher-kva.example", why) == "xn--bcher-kva.example");
  for (const char* bad : {"", ".example", "example.", "ex..ample", "ex_ample.org", "-x.org", "x-.org", "exa mple.org",
                          "b\xc3\xbc" "cher.example", "a/b.org"}) {
    INFO(bad);
    CHECK_FALSE(normalize_domain(bad, why));
    CHECK_FALSE(why.empty());
  }
  CHECK_FALSE(normalize_domain(std::string(64, 'a') + ".org", why));

  auto a = normalize_address("John.Doe@Example.ORG", "+", why);
  REQUIRE(a);
  CHECK(a->canonical() == "john.doe@example.org");
  for (const char* bad : {"john", "@example.org", "john@", "jo hn@example.org", "john@@example.org", ".john@example.org",
                          "jo..hn@example.org", "jo\"hn@example.org", "jo/hn@example.org", "john@exa_mple.org",
                          "jo\nhn@example.org"}) {
    INFO(bad);
    CHECK_FALSE(normalize_address(bad, "+", why));
  }
  // the recipient delimiter would make the address unreachable
  CHECK_FALSE(normalize_address("john+x@example.org", "+", why));
  CHECK(why.find("delimiter") != std::string::npos);
  CHECK(normalize_address("john+x@example.org", "", why));
  CHECK(normalize_address("+x@example.org", "+", why));  // a leading delimiter is no sub-address

  auto c = normalize_alias_source("@Example.net", "+", why);
  REQUIRE(c);
  CHECK(c->local_part.empty());
  CHECK(c->domain == "example.net");
  CHECK_FALSE(normalize_alias_source("@", "+", why));

  CHECK(normalize_destination("Bob+Lists@Example.net", false, why) == "bob+lists@example.net");
  CHECK_FALSE(normalize_destination("@example.net", false, why));
  CHECK(normalize_destination("@example.net", true, why) == "@example.net");

  CHECK(parse_quota("0", why) == 0);
  CHECK(parse_quota("1024", why) == 1024);
  CHECK(parse_quota("500M", why) == 500ll << 20);
  CHECK(parse_quota("2G", why) == 2ll << 30);
  CHECK(parse_quota("1t", why) == 1ll << 40);
  for (const char* bad : {"", "G", "-1", "1.5G", "10X", "99999999999999999999"}) {
    INFO(bad);
    CHECK_FALSE(parse_quota(bad, why));
  }
}

TEST_CASE_FIXTURE(Fixture, "domains: add, list, show, disable, enable, remove") {
  require_ok(admin.add_domain("example.org", std::nullopt));
  require_ok(admin.add_domain("example.com", std::string_view("EXAMPLE.org")));
  CHECK(status_of(admin.add_domain("Example.org", std::nullopt)) == AdminStatus::conflict);
  CHECK(status_of(admin.add_domain("a.example", std::string_view("missing.example"))) == AdminStatus::not_found);
  // alias_for is followed once only: a chain is refused
  CHECK(status_of(admin.add_domain("b.example", std::string_view("example.com"))) == AdminStatus::conflict);
  CHECK(status_of(admin.add_domain("bad_domain.org", std::nullopt)) == AdminStatus::bad_input);

  std::vector<DomainRecord> list;
  require_ok(admin.list_domains(list));
  REQUIRE(list.size() == 2);
  CHECK(list[0].domain == "example.com");
  CHECK(list[0].alias_for == "example.org");
  CHECK(list[1].domain == "example.org");
  CHECK(list[1].active);

  require_ok(admin.set_domain_active("example.org", false));
  DomainRecord d;
  require_ok(admin.show_domain("EXAMPLE.ORG", d));
  CHECK_FALSE(d.active);
  auto again = admin.set_domain_active("example.org", false);
  CHECK(again.ok());
  CHECK(again.message.find("already") != std::string::npos);
  require_ok(admin.set_domain_active("example.org", true));
  CHECK(status_of(admin.show_domain("nope.example", d)) == AdminStatus::not_found);

  // the target of an alias domain cannot go, not even with --force
  CHECK(status_of(admin.remove_domain("example.org", true)) == AdminStatus::conflict);
  require_ok(admin.remove_domain("example.com", false));
  require_ok(admin.remove_domain("example.org", false));
  CHECK(status_of(admin.remove_domain("example.org", false)) == AdminStatus::not_found);
  CHECK(dump(path) == "\n\n\n\n");
}

TEST_CASE_FIXTURE(Fixture, "domains: removing one with users needs --force, which removes what depends on it") {
  populate();
  require_ok(admin.add_domain("example.net", std::nullopt));
  require_ok(admin.add_user("bob@example.net", std::nullopt, no_attributes()));
  require_ok(admin.add_alias("info@example.net", {"bob@example.net", "john@example.org"}));
  require_ok(admin.add_alias("team@example.org", {"bob@example.net", "jane@example.org"}));
  require_ok(admin.add_sender("bob@example.net", {"info@example.net"}));
  require_ok(admin.add_sender("john@example.org", {"@example.net"}));

  std::string before = dump(path);
  auto r = admin.remove_domain("example.net", false);
  CHECK(r.status == AdminStatus::conflict);
  CHECK(r.message.find("--force") != std::string::npos);
  CHECK(dump(path) == before);

  require_ok(admin.remove_domain("example.net", true));
  RawDb db(path);
  CHECK(db.text("SELECT count(*) FROM users WHERE domain = 'example.net'") == "0");
  CHECK(db.text("SELECT count(*) FROM aliases WHERE domain = 'example.net' OR destination LIKE '%@example.net'") == "0");
  CHECK(db.text("SELECT count(*) FROM sender_logins") == "0");
  // the rest is untouched
  CHECK(db.text("SELECT group_concat(destination) FROM aliases WHERE local_part = 'team'") == "jane@example.org");
  CHECK(db.text("SELECT count(*) FROM users WHERE domain = 'example.org'") == "2");
}

TEST_CASE_FIXTURE(Fixture, "users: add with attributes, then the directory answers with them") {
  populate();
  UserAttributes a;
  a.quota_bytes = Change<std::int64_t>::set_to(1ll << 30);
  a.uid = Change<std::string>::set_to("2000");
  a.home = Change<std::string>::set_to("/srv/mail/bob");
  require_ok(admin.add_user("Bob@example.org", hash_password("bob-pw", "yescrypt", 3), a));

  SqliteBackend backend(path, {});
  auto conn = backend.connect();
  auto pass = conn->passdb("bob@example.org", soon());
  REQUIRE(pass.outcome == Outcome::found);
  REQUIRE(pass.value.password);
  CHECK(pass.value.password->rfind("{CRYPT}$y$", 0) == 0);
  CHECK(verifies("bob-pw", pass.value.password->substr(7)));
  auto user = conn->userdb("bob_example.org", soon());
  REQUIRE(user.outcome == Outcome::found);
  CHECK(user.value.uid == "2000");
  CHECK(user.value.gid == "vmail");  // the default
  CHECK(user.value.home == "/srv/mail/bob");
  CHECK(user.value.quota_rule == "*:storage=1073741824B");
  // names are stored lower-case
  CHECK(RawDb(path).text("SELECT local_part FROM users WHERE domain = 'example.org' AND local_part = 'bob'") == "bob");

  UserRecord rec;
  require_ok(admin.show_user("BOB@EXAMPLE.ORG", rec));
  CHECK(rec.quota_bytes == (1ll << 30));
  CHECK(rec.password);

  // change and reset attributes
  UserAttributes b;
  b.home = Change<std::string>::reset_to_default();
  b.quota_bytes = Change<std::int64_t>::set_to(0);
  b.mail = Change<std::string>::set_to("maildir:~/Mail");
  require_ok(admin.set_user_attributes("bob@example.org", b));
  user = conn->userdb("bob@example.org", soon());
  REQUIRE(user.outcome == Outcome::found);
  CHECK(user.value.home == "/var/vmail/example.org/bob");
  CHECK(user.value.mail == "maildir:~/Mail");
  CHECK(user.value.uid == "2000");  // kept
  CHECK(user.value.quota_rule == "*:storage=0B");

  std::vector<UserRecord> users;
  require_ok(admin.list_users(std::string_view("example.org"), users));
  REQUIRE(users.size() == 3);
  CHECK(users[0].name.canonical() == "bob@example.org");
  CHECK(status_of(admin.list_users(std::string_view("nope.example"), users)) == AdminStatus::not_found);
}

TEST_CASE_FIXTURE(Fixture, "users: refusals leave the database as it was") {
  populate();
  require_ok(admin.add_domain("off.example", std::nullopt, false));
  std::string before = dump(path);
  auto hash = hash_password("x", "bcrypt", 4);

  auto check = [&](AdminResult r, AdminStatus expected, const char* word) {
    INFO(r.message);
    CHECK(r.status == expected);
    CHECK(r.message.find(word) != std::string::npos);
    CHECK(dump(path) == before);
  };
  check(admin.add_user("john@example.org", hash, no_attributes()), AdminStatus::conflict, "exists");
  check(admin.add_user("JOHN@example.org", hash, no_attributes()), AdminStatus::conflict, "exists");
  check(admin.add_user("new@missing.example", hash, no_attributes()), AdminStatus::not_found, "domain add");
  check(admin.add_user("new@off.example", hash, no_attributes()), AdminStatus::conflict, "disabled");
  check(admin.add_user("new@example.com", hash, no_attributes()), AdminStatus::conflict, "alias domain");
  check(admin.add_user("not an address", hash, no_attributes()), AdminStatus::bad_input, "not an address");
  check(admin.add_user("new+tag@example.org", hash, no_attributes()), AdminStatus::bad_input, "delimiter");
  UserAttributes bad_uid;
  bad_uid.uid = Change<std::string>::set_to("vmail");
  check(admin.add_user("new@example.org", hash, bad_uid), AdminStatus::bad_input, "--uid");
  UserAttributes bad_home;
  bad_home.home = Change<std::string>::set_to("relative/path");
  check(admin.add_user("new@example.org", hash, bad_home), AdminStatus::bad_input, "--home");
  check(admin.set_password("nobody@example.org", hash), AdminStatus::not_found, "does not exist");
  check(admin.set_user_active("nobody@example.org", false), AdminStatus::not_found, "does not exist");
  check(admin.remove_user("nobody@example.org", false), AdminStatus::not_found, "does not exist");
}

TEST_CASE_FIXTURE(Fixture, "users: passwd, disable, enable, remove take effect in the directory") {
  populate();
  SqliteBackend backend(path, {});
  auto conn = backend.connect();

  require_ok(admin.set_password("john@example.org", hash_password("new-pw", "sha512-crypt", 6000)));
  auto pass = conn->passdb("john@example.org", soon());
  REQUIRE(pass.outcome == Outcome::found);
  REQUIRE(pass.value.password);
  CHECK(pass.value.password->rfind("{SHA512-CRYPT}$6$rounds=6000$", 0) == 0);
  CHECK(verifies("new-pw", pass.value.password->substr(14)));
  CHECK_FALSE(verifies("john-pw", pass.value.password->substr(14)));

  // no password: receives mail, cannot log in
  require_ok(admin.set_password("john@example.org", std::nullopt));
  pass = conn->passdb("john@example.org", soon());
  REQUIRE(pass.outcome == Outcome::found);
  CHECK_FALSE(pass.value.password);

  require_ok(admin.set_user_active("john@example.org", false));
  CHECK(conn->passdb("john@example.org", soon()).outcome == Outcome::not_found);
  require_ok(admin.set_user_active("john@example.org", true));
  CHECK(conn->passdb("john@example.org", soon()).outcome == Outcome::found);

  require_ok(admin.add_sender("john@example.org", {"sales@example.org"}));
  require_ok(admin.remove_user("john@example.org", false));
  CHECK(conn->passdb("john@example.org", soon()).outcome == Outcome::not_found);
  CHECK(RawDb(path).text("SELECT count(*) FROM sender_logins") == "0");
}

TEST_CASE_FIXTURE(Fixture, "users: removing a user named by aliases needs --force") {
  populate();
  require_ok(admin.add_alias("postmaster@example.org", {"john@example.org", "jane@example.org"}));
  std::string before = dump(path);
  auto r = admin.remove_user("john@example.org", false);
  CHECK(r.status == AdminStatus::conflict);
  CHECK(r.message.find("postmaster@example.org") != std::string::npos);
  CHECK(dump(path) == before);
  require_ok(admin.remove_user("john@example.org", true));
  CHECK(RawDb(path).text("SELECT group_concat(destination) FROM aliases") == "jane@example.org");
}

TEST_CASE_FIXTURE(Fixture, "aliases: several destinations, catch-all, and what smtpd then resolves") {
  populate();
  require_ok(admin.add_domain("example.net", std::nullopt));
  require_ok(admin.add_alias("Postmaster@example.org", {"john@example.org", "Jane@Example.org"}));
  require_ok(admin.add_alias("@example.net", {"john@example.org"}));
  require_ok(admin.add_alias("ext@example.org", {"someone@elsewhere.test"}));

  SqliteBackend backend(path, {});
  auto conn = backend.connect();
  auto r = conn->resolve_recipient("postmaster@example.org", soon());
  REQUIRE(r.outcome == Outcome::found);
  CHECK(r.value.size() == 2);
  r = conn->resolve_recipient("anything@example.net", soon());
  REQUIRE(r.outcome == Outcome::found);
  CHECK(r.value == std::vector<std::string>{"john_example.org"});

  // an alias at a user's own address takes its mail: allowed, with a note
  auto fwd = admin.add_alias("jane@example.org", {"someone@elsewhere.test"});
  REQUIRE(fwd.ok());
  CHECK(fwd.message.find("is also a user") != std::string::npos);
  require_ok(admin.remove_alias("jane@example.org", {}));
  // keeping a copy: the user's own address is delivered to its mailbox, not expanded again
  fwd = admin.add_alias("jane@example.org", {"jane@example.org", "someone@elsewhere.test"});
  INFO(fwd.message);
  CHECK(fwd.ok());
  CHECK(fwd.message.empty());
  {
    SqliteBackend b(path, {});
    auto r = b.connect()->resolve_recipient("jane@example.org", soon());
    REQUIRE(r.outcome == Outcome::found);
    CHECK(r.value == std::vector<std::string>{"jane_example.org", "someone@elsewhere.test"});
  }
  // but a sub-address of it is expanded again (smtpd cuts the tag): a loop
  CHECK(status_of(admin.add_alias("jane@example.org", {"jane+copy@example.org"})) == AdminStatus::conflict);
  require_ok(admin.remove_alias("jane@example.org", {}));

  std::vector<AliasRow> rows;
  require_ok(admin.list_aliases(std::string_view("postmaster@example.org"), rows));
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].destination == "jane@example.org");
  rows.clear();
  require_ok(admin.list_aliases(std::string_view("example.net"), rows));
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].source() == "@example.net");

  Resolution how;
  require_ok(admin.explain_recipient("postmaster@example.org", how));
  CHECK(how.rule == Resolution::Rule::alias_rows);
  require_ok(admin.explain_recipient("John+x@example.com", how));
  CHECK(how.rule == Resolution::Rule::alias_domain_user);
  CHECK(how.matched == "john@example.org");
  require_ok(admin.explain_recipient("who@example.net", how));
  CHECK(how.rule == Resolution::Rule::catch_all);
  require_ok(admin.explain_recipient("who@example.org", how));
  CHECK(how.rule == Resolution::Rule::none);
  require_ok(admin.explain_recipient("who@elsewhere.test", how));
  CHECK(how.rule == Resolution::Rule::domain_not_served);

  // remove one destination, then the whole alias
  require_ok(admin.remove_alias("postmaster@example.org", {"jane@example.org"}));
  r = conn->resolve_recipient("postmaster@example.org", soon());
  REQUIRE(r.outcome == Outcome::found);
  CHECK(r.value == std::vector<std::string>{"john_example.org"});
  CHECK(status_of(admin.remove_alias("postmaster@example.org", {"jane@example.org"})) == AdminStatus::not_found);
  require_ok(admin.remove_alias("postmaster@example.org", {}));
  CHECK(conn->resolve_recipient("postmaster@example.org", soon()).outcome == Outcome::not_found);
  CHECK(status_of(admin.remove_alias("postmaster@example.org", {})) == AdminStatus::not_found);
}

TEST_CASE_FIXTURE(Fixture, "aliases: loops, duplicates, missing domains and dangling destinations are refused whole") {
  populate();
  require_ok(admin.add_domain("example.net", std::nullopt));
  require_ok(admin.add_alias("a@example.org", {"b@example.org"}, /*force=*/true));
  require_ok(admin.add_alias("b@example.org", {"c@example.net", "john@example.org"}, true));
  std::string before = dump(path);

  auto check = [&](AdminResult r, AdminStatus expected, const char* word) {
    INFO(r.message);
    CHECK(r.status == expected);
    CHECK(r.message.find(word) != std::string::npos);
    CHECK(dump(path) == before);
  };
  // c -> a -> b -> c: the second destination is fine, the first closes a loop; nothing is written
  check(admin.add_alias("c@example.net", {"jane@example.org", "a@example.org"}), AdminStatus::conflict, "loop");
  check(admin.add_alias("c@example.net", {"a@example.org"}), AdminStatus::conflict,
        "c@example.net -> a@example.org -> b@example.org -> c@example.net");
  check(admin.add_alias("x@example.org", {"x@example.org"}), AdminStatus::conflict, "itself");
  // through an alias domain (x@example.com is x@example.org) and through a sub-address
  check(admin.add_alias("x@example.org", {"x@example.com"}), AdminStatus::conflict, "loop");
  check(admin.add_alias("x@example.org", {"x+tag@example.org"}), AdminStatus::conflict, "loop");
  // a catch-all reaching an address that only the catch-all itself receives
  check(admin.add_alias("@example.net", {"nobody@example.net"}), AdminStatus::conflict, "loop");
  check(admin.add_alias("b@example.org", {"john@example.org"}), AdminStatus::conflict, "already");
  check(admin.add_alias("x@missing.example", {"john@example.org"}), AdminStatus::not_found, "does not exist");
  check(admin.add_alias("x@example.org", {"nobody@example.org"}), AdminStatus::not_found, "--force");
  check(admin.add_alias("x@example.org", {"john@example.org", "John@example.org"}), AdminStatus::bad_input, "twice");
  check(admin.add_alias("x@example.org", {"not-an-address"}), AdminStatus::bad_input, "not an address");
  check(admin.add_alias("x@example.org", {}), AdminStatus::bad_input, "at least one");

  // a catch-all to a user's sub-address is fine, and then removing that user would make the
  // catch-all receive its own mail: refused
  require_ok(admin.add_user("bob@example.net", std::nullopt, no_attributes()));
  require_ok(admin.add_alias("@example.net", {"bob+all@example.net"}));
  before = dump(path);
  auto r = admin.remove_user("bob@example.net", true);
  INFO(r.message);
  CHECK(r.status == AdminStatus::conflict);
  CHECK(r.message.find("loop") != std::string::npos);
  CHECK(dump(path) == before);
}

TEST_CASE_FIXTURE(Fixture, "aliases: an alias domain added later may not close a loop") {
  populate();
  require_ok(admin.add_domain("example.net", std::nullopt));
  // y@example.net -> y@other.example, which is remote: fine for now
  require_ok(admin.add_alias("y@example.net", {"y@other.example"}));
  require_ok(admin.add_alias("@example.net", {"john@example.org"}));
  std::string before = dump(path);
  // other.example as an alias domain of example.net makes y@other.example come back to y@example.net
  auto r = admin.add_domain("other.example", std::string_view("example.net"));
  INFO(r.message);
  CHECK(r.status == AdminStatus::conflict);
  CHECK(r.message.find("loop") != std::string::npos);
  CHECK(dump(path) == before);
}

TEST_CASE_FIXTURE(Fixture, "senders: add, list, remove; smtpd's mailaddrmap sees them") {
  populate();
  require_ok(admin.add_alias("sales@example.org", {"john@example.org", "jane@example.org"}));
  require_ok(admin.add_sender("John@example.org", {"Sales@example.org", "@example.com"}));
  CHECK(status_of(admin.add_sender("john@example.org", {"sales@example.org"})) == AdminStatus::conflict);
  CHECK(status_of(admin.add_sender("nobody@example.org", {"sales@example.org"})) == AdminStatus::not_found);
  CHECK(status_of(admin.add_sender("john@example.org", {"john@example.org"})) == AdminStatus::bad_input);
  CHECK(status_of(admin.add_sender("john@example.org", {"bad address"})) == AdminStatus::bad_input);

  SqliteBackend backend(path, {});
  auto conn = backend.connect();
  auto s = conn->sender_addresses("john@example.org", soon());
  REQUIRE(s.outcome == Outcome::found);
  CHECK(s.value == std::vector<std::string>{"john@example.org", "@example.com", "sales@example.org"});

  std::vector<SenderRow> rows;
  require_ok(admin.list_senders(std::string_view("john@example.org"), rows));
  CHECK(rows.size() == 2);
  require_ok(admin.remove_sender("john@example.org", {"sales@example.org"}));
  CHECK(status_of(admin.remove_sender("john@example.org", {"sales@example.org"})) == AdminStatus::not_found);
  require_ok(admin.remove_sender("john@example.org", {}));
  rows.clear();
  require_ok(admin.list_senders(std::nullopt, rows));
  CHECK(rows.empty());
}

TEST_CASE_FIXTURE(Fixture, "a database fault in the middle of a change is a temporary failure and writes nothing") {
  populate();
  std::string before = dump(path);
  // every statement of a multi-statement change, in turn
  bool done = false;
  for (int n = 1; n <= 200 && !done; ++n) {
    session.statements = 0;
    session.fail_at_statement = n;
    auto r = admin.add_alias("team@example.org", {"john@example.org", "jane@example.org"});
    done = r.ok();  // n is past the last statement
    if (done) break;
    INFO("failing statement " << n << ": " << r.message);
    CHECK(r.status == AdminStatus::temp_fail);
    CHECK(dump(path) == before);
  }
  CHECK(done);
  session.fail_at_statement = 0;
  CHECK(RawDb(path).text("SELECT count(*) FROM aliases") == "2");
}

TEST_CASE_FIXTURE(Fixture, "a locked database is a temporary failure, not 'not found'") {
  populate();
  RawDb other(path);
  REQUIRE(other.exec("BEGIN IMMEDIATE") == SQLITE_OK);
  auto r = admin.add_user("new@example.org", std::nullopt, no_attributes());
  CHECK(r.status == AdminStatus::temp_fail);
  other.exec("ROLLBACK");
  require_ok(admin.add_user("new@example.org", std::nullopt, no_attributes()));
}
