// shared/smtpd/<service>/<key> through LookupService over the SQLite demo directory: the exact
// values smtpd parses (specs/smtpd-tables.md §5.3), the three outcomes and the cache.
#include <crypt.h>
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <future>
#include <string>
#include <vector>

#include "server/directory_answers.hpp"
#include "server/lookup_service.hpp"
#include "storage/pool.hpp"
#include "storage/sqlite_directory.hpp"
#include "server_test_util.hpp"
#include "storage_test_util.hpp"

using namespace maildict;
using server::LookupAnswer;
using Kind = server::LookupAnswer::Kind;
using storage::testing::RawDb;

namespace {

server::testing::Looked ask(server::LookupService& service, const std::string& key) {
  return server::testing::look(service, key);
}

storage::UserDefaults smtpd_defaults() {
  storage::UserDefaults d;
  d.uid = "5000";
  d.gid = "5001";
  d.home = "/var/vmail/%d/%n";
  d.mail = "maildir:~/Maildir";
  return d;
}

struct SmtpdFixture {
  std::string db = storage::testing::demo_copy();
  storage::SqliteBackend backend;
  storage::Pool pool;
  server::LookupService service;
  explicit SmtpdFixture(storage::UserDefaults defaults = smtpd_defaults())
      : backend(db, std::move(defaults)),
        pool(backend, 2, 100),
        service(backend, pool, 1000, std::chrono::seconds(60), std::chrono::milliseconds(300)) {}

  LookupAnswer found(const std::string& key) {
    auto a = ask(service, key).answer;
    CAPTURE(key);
    CAPTURE(a.text);
    REQUIRE(a.kind == Kind::found);
    return a;
  }
  std::string value(const std::string& key) { return found(key).text; }
  Kind kind(const std::string& key) { return ask(service, key).answer.kind; }
};

bool verifies(const std::string& password, const std::string& hash) {
  crypt_data data{};
  const char* out = crypt_r(password.c_str(), hash.c_str(), &data);
  return out != nullptr && hash == out;
}

}  // namespace

TEST_CASE("smtpd domain: active and alias domains are found with their name") {
  SmtpdFixture f;
  CHECK(f.value("shared/smtpd/domain/example.org") == "example.org");
  CHECK(f.value("shared/smtpd/domain/example.com") == "example.com");
  CHECK(f.value("shared/smtpd/domain/EXAMPLE.net") == "example.net");
  CHECK(f.kind("shared/smtpd/domain/nope.example") == Kind::not_found);
  CHECK(f.kind("shared/smtpd/domain/disabled.example") == Kind::not_found);
  CHECK(f.kind("shared/smtpd/domain/") == Kind::not_found);
}

TEST_CASE("smtpd alias: comma-separated delivery names, smtpd's whole lookup sequence") {
  SmtpdFixture f;
  CHECK(f.value("shared/smtpd/alias/postmaster@example.org") == "john_example.org, jane_example.org");
  CHECK(f.value("shared/smtpd/alias/john@example.org") == "john_example.org");
  CHECK(f.value("shared/smtpd/alias/sales@example.org") == "john_example.org");
  CHECK(f.value("shared/smtpd/alias/john+tag@example.org") == "john_example.org");
  CHECK(f.value("shared/smtpd/alias/anything@example.net") == "bob_example.net");
  CHECK(f.value("shared/smtpd/alias/john@example.com") == "john_example.org");
  // The rest of smtpd's sequence for an unknown recipient, and the second round for a
  // delivery name: all not found, so smtpd goes on to userinfo or answers 550.
  for (const char* key : {"unknown@example.org", "unknown", "@example.org", "@", "john_example.org", "john_example.org@",
                          "vmail", "vmail@", "eve@example.org", "anything@disabled.example"}) {
    CAPTURE(key);
    CHECK(f.kind(std::string("shared/smtpd/alias/") + key) == Kind::not_found);
  }
}

TEST_CASE("smtpd alias: items with commas are quoted, an overlong list fails instead of being cut") {
  SmtpdFixture f;
  RawDb raw(f.db);
  REQUIRE(raw.exec("INSERT INTO aliases VALUES ('odd', 'example.org', '\"a,b\"@remote.example', 1), "
                   "('odd', 'example.org', 'jane@example.org', 1)") == SQLITE_OK);
  CHECK(f.value("shared/smtpd/alias/odd@example.org") == R"("\"a,b\"@remote.example", jane_example.org)");

  std::string rows;
  for (int i = 0; i < 120; ++i)
    rows += std::string(rows.empty() ? "" : ", ") + "('big', 'example.org', 'member" + std::to_string(i) +
            "@lists.remote.example', 1)";
  REQUIRE(raw.exec("INSERT INTO aliases VALUES " + rows) == SQLITE_OK);
  auto big = ask(f.service, "shared/smtpd/alias/big@example.org").answer;
  CHECK(big.kind == Kind::failed);
  CHECK(big.text.find("2047") != std::string::npos);
  CHECK(big.text.find("member") == std::string::npos);  // no part of the list in the message

  REQUIRE(raw.exec("INSERT INTO aliases VALUES ('broken', 'example.org', 'a@b.example' || char(10) || 'x', 1)") ==
          SQLITE_OK);
  auto broken = ask(f.service, "shared/smtpd/alias/broken@example.org").answer;
  CHECK(broken.kind == Kind::failed);
  CHECK(broken.text.find("line break") != std::string::npos);
}

TEST_CASE("smtpd_list: joins with \", \", quotes only what needs it, knows smtpd's limit") {
  CHECK(server::smtpd_list({"a@b.example"}) == "a@b.example");
  CHECK(server::smtpd_list({"a", "b"}) == "a, b");
  CHECK(server::smtpd_list({"x,y", "it's", R"(back\slash)"}) == R"("x,y", "it's", "back\\slash")");
  CHECK(server::smtpd_list({"|/usr/bin/vacation john"}) == "|/usr/bin/vacation john");
  CHECK(server::smtpd_list({std::string(2047, 'a')}) == std::string(2047, 'a'));
  CHECK_FALSE(server::smtpd_list({std::string(2048, 'a')}).has_value());
  CHECK(server::smtpd_list({std::string(2040, 'a'), "bcdef"}) == std::string(2040, 'a') + ", bcdef");
  CHECK_FALSE(server::smtpd_list({std::string(2041, 'a'), "bcdef"}).has_value());
}

TEST_CASE("smtpd userinfo: uid:gid:home for both spellings, decimal ids") {
  SmtpdFixture f;
  CHECK(f.value("shared/smtpd/userinfo/john_example.org") == "5000:5001:/var/vmail/example.org/john");
  CHECK(f.value("shared/smtpd/userinfo/john@example.org") == "5000:5001:/var/vmail/example.org/john");
  CHECK(f.value("shared/smtpd/userinfo/john_doe_example.org") == "5000:5001:/var/vmail/example.org/john_doe");
  CHECK(f.value("shared/smtpd/userinfo/bob_example.net") == "2000:2000:/var/vmail/custom/bob");
  CHECK(f.kind("shared/smtpd/userinfo/vmail") == Kind::not_found);
  CHECK(f.kind("shared/smtpd/userinfo/eve_example.org") == Kind::not_found);
}

TEST_CASE("smtpd userinfo: a default account name smtpd cannot use is a clear temporary failure") {
  auto defaults = smtpd_defaults();
  defaults.uid = "root";
  defaults.gid = "maildict-no-such-group";
  SmtpdFixture f(defaults);
  auto a = ask(f.service, "shared/smtpd/userinfo/john_example.org").answer;
  CHECK(a.kind == Kind::failed);
  CHECK(a.text.find("maildict-no-such-group") != std::string::npos);
  // Explicit numeric columns do not need the defaults.
  CHECK(f.value("shared/smtpd/userinfo/bob_example.net") == "2000:2000:/var/vmail/custom/bob");
}

TEST_CASE("smtpd credentials: login:hash without scheme, $2y$ shown as $2b$; relay labels") {
  SmtpdFixture f;
  auto john = f.value("shared/smtpd/credentials/john@example.org");
  REQUIRE(john.rfind("john@example.org:$2b$10$", 0) == 0);
  CHECK(verifies("john-secret", john.substr(john.find(':') + 1)));
  // The AUTH user name as typed is lower-cased by smtpd; a replayed mixed-case key is too.
  CHECK(f.value("shared/smtpd/credentials/John@Example.ORG") == john);
  CHECK(f.value("shared/smtpd/credentials/john_example.org") == john);

  auto jane = f.value("shared/smtpd/credentials/jane@example.org");
  REQUIRE(jane.rfind("jane@example.org:$6$", 0) == 0);
  CHECK(verifies("jane-secret", jane.substr(jane.find(':') + 1)));

  auto doe = f.value("shared/smtpd/credentials/john_doe@example.org");
  REQUIRE(doe.rfind("john_doe@example.org:$2b$10$", 0) == 0);
  CHECK(doe.find('{') == std::string::npos);
  CHECK(verifies("doe-secret", doe.substr(doe.find(':') + 1)));

  CHECK(f.kind("shared/smtpd/credentials/nopw@example.net") == Kind::not_found);
  CHECK(f.kind("shared/smtpd/credentials/eve@example.org") == Kind::not_found);

  // No '@' and no '_': a relay label, answered with the clear-text pair smtpd sends in AUTH.
  CHECK(f.value("shared/smtpd/credentials/relay1") == "relayuser:relaypass");
  CHECK(f.kind("shared/smtpd/credentials/relay2") == Kind::not_found);
  // A login never falls back to the relay table, and a label never reaches a user's hash.
  RawDb raw(f.db);
  REQUIRE(raw.exec("INSERT INTO relay_credentials VALUES ('jane@example.org', 'x', 'y'), ('john', 'x', 'y')") ==
          SQLITE_OK);
  CHECK(f.value("shared/smtpd/credentials/jane@example.org").rfind("jane@example.org:$6$", 0) == 0);
  CHECK(f.value("shared/smtpd/credentials/john") == "x:y");
}

TEST_CASE("smtpd mailaddrmap and mailaddr") {
  SmtpdFixture f;
  CHECK(f.value("shared/smtpd/mailaddrmap/john@example.org") == "john@example.org, sales@example.org");
  CHECK(f.value("shared/smtpd/mailaddrmap/jane@example.org") == "jane@example.org");
  CHECK(f.kind("shared/smtpd/mailaddrmap/eve@example.org") == Kind::not_found);

  CHECK(f.value("shared/smtpd/mailaddr/sales@example.org") == "sales@example.org");
  CHECK(f.value("shared/smtpd/mailaddr/john+x@example.org") == "john+x@example.org");
  CHECK(f.kind("shared/smtpd/mailaddr/unknown@example.org") == Kind::not_found);
  CHECK(f.kind("shared/smtpd/mailaddr/@") == Kind::not_found);
}

TEST_CASE("smtpd netaddr, addrname, source and relayhost from smtpd_values") {
  SmtpdFixture f;
  CHECK(f.value("shared/smtpd/netaddr/127.0.0.1") == "127.0.0.0/8");
  CHECK(f.value("shared/smtpd/netaddr/127.9.8.7") == "127.0.0.0/8");
  CHECK(f.value("shared/smtpd/netaddr/[::1]") == "::1");
  CHECK(f.value("shared/smtpd/netaddr/local") == "local");
  CHECK(f.kind("shared/smtpd/netaddr/128.0.0.1") == Kind::not_found);
  CHECK(f.kind("shared/smtpd/netaddr/[::2]") == Kind::not_found);

  CHECK(f.value("shared/smtpd/addrname/127.0.0.1") == "mail.example.org");
  CHECK(f.kind("shared/smtpd/addrname/192.0.2.1") == Kind::not_found);
  CHECK(f.value("shared/smtpd/source/") == "127.0.0.1");
  CHECK(f.value("shared/smtpd/relayhost/relay.example") == "smtp+tls://relay1@smtp.relay.example:587");

  CHECK(f.kind("shared/smtpd/relayhost/") == Kind::not_found);

  RawDb raw(f.db);
  REQUIRE(raw.exec("INSERT INTO smtpd_values VALUES ('source', '', '192.0.2.9'), "
                   "('relayhost', '', 'smtp://a.example'), ('relayhost', '', 'smtp://b.example:2525'), "
                   "('relayhost', 'relay.example', 'smtp://second.example')") == SQLITE_OK);
  CHECK(f.value("shared/smtpd/source/") == "127.0.0.1, 192.0.2.9");
  CHECK(f.value("shared/smtpd/relayhost/") == "smtp://a.example, smtp://b.example:2525");
  CHECK(f.value("shared/smtpd/relayhost/relay.example") == "smtp+tls://relay1@smtp.relay.example:587");
}

TEST_CASE("netaddr_matches: CIDR blocks, exact words, families never mix") {
  CHECK(server::netaddr_matches("192.0.2.0/24", "192.0.2.200"));
  CHECK_FALSE(server::netaddr_matches("192.0.2.0/24", "192.0.3.1"));
  CHECK(server::netaddr_matches("192.0.2.128/25", "192.0.2.129"));
  CHECK_FALSE(server::netaddr_matches("192.0.2.128/25", "192.0.2.127"));
  CHECK(server::netaddr_matches("0.0.0.0/0", "203.0.113.5"));
  CHECK(server::netaddr_matches("192.0.2.1", "192.0.2.1"));
  CHECK_FALSE(server::netaddr_matches("192.0.2.1", "192.0.2.10"));
  CHECK(server::netaddr_matches("2001:db8::/32", "[2001:db8:1::5]"));
  CHECK(server::netaddr_matches("[2001:db8::]/33", "2001:db8:7fff::1"));
  CHECK_FALSE(server::netaddr_matches("2001:db8::/33", "[2001:db8:8000::1]"));
  CHECK(server::netaddr_matches("IPv6:::1", "[::1]"));
  CHECK_FALSE(server::netaddr_matches("::/0", "127.0.0.1"));
  CHECK_FALSE(server::netaddr_matches("127.0.0.0/33", "127.0.0.1"));
  CHECK(server::netaddr_matches("local", "local"));
  CHECK(server::netaddr_matches("mx.example.org", "MX.example.org"));
  CHECK_FALSE(server::netaddr_matches("local", "127.0.0.1"));
  CHECK_FALSE(server::netaddr_matches("127.0.0.0/8", "local"));
}

TEST_CASE("smtpd services without data fail loudly") {
  SmtpdFixture f;
  for (const char* key : {"shared/smtpd/string/anything", "shared/smtpd/regex/x", "shared/smtpd/auth/john@example.org:pw",
                          "shared/smtpd/bogus/x"}) {
    CAPTURE(key);
    auto a = ask(f.service, key);
    CHECK(a.immediate);
    CHECK(a.answer.kind == Kind::failed);
    CHECK(a.answer.text.find("not served") != std::string::npos);
  }
}

TEST_CASE("smtpd answers are cached until the directory changes") {
  SmtpdFixture f;
  auto first = ask(f.service, "shared/smtpd/alias/sales@example.org");
  CHECK_FALSE(first.immediate);
  auto second = ask(f.service, "shared/smtpd/alias/sales@example.org");
  CHECK(second.immediate);
  CHECK(second.answer.text == "john_example.org");
  CHECK(ask(f.service, "shared/smtpd/alias/nobody@example.org").answer.kind == Kind::not_found);
  CHECK(ask(f.service, "shared/smtpd/alias/nobody@example.org").immediate);

  RawDb raw(f.db);
  REQUIRE(raw.exec("INSERT INTO aliases VALUES ('sales', 'example.org', 'jane@example.org', 1), "
                   "('nobody', 'example.org', 'bob@example.net', 1)") == SQLITE_OK);
  auto third = ask(f.service, "shared/smtpd/alias/sales@example.org");
  CHECK_FALSE(third.immediate);
  CHECK(third.answer.text == "john_example.org, jane_example.org");
  CHECK(f.value("shared/smtpd/alias/nobody@example.org") == "bob_example.net");
  // sales has two destinations now: john may no longer send as it.
  CHECK(f.value("shared/smtpd/mailaddrmap/john@example.org") == "john@example.org, sales@example.org");
  REQUIRE(raw.exec("DELETE FROM sender_logins") == SQLITE_OK);
  CHECK(f.value("shared/smtpd/mailaddrmap/john@example.org") == "john@example.org");
}

TEST_CASE("smtpd lookups on a locked directory fail temporarily, never as not found") {
  std::string db = storage::testing::demo_copy();
  {
    RawDb raw(db);
    REQUIRE(raw.text("PRAGMA journal_mode = DELETE") == "delete");
  }
  storage::SqliteBackend backend(db, smtpd_defaults());
  storage::Pool pool(backend, 1, 100);
  server::LookupService service(backend, pool, 1000, std::chrono::seconds(60), std::chrono::milliseconds(300));
  RawDb locker(db);
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  REQUIRE(locker.exec("UPDATE domains SET active = active") == SQLITE_OK);
  for (const char* key : {"shared/smtpd/domain/nope.example", "shared/smtpd/alias/unknown@example.org",
                          "shared/smtpd/credentials/john@example.org", "shared/smtpd/userinfo/john_example.org",
                          "shared/smtpd/mailaddrmap/john@example.org", "shared/smtpd/netaddr/127.0.0.1"}) {
    CAPTURE(key);
    CHECK(ask(service, key).answer.kind == Kind::failed);
  }
  REQUIRE(locker.exec("ROLLBACK") == SQLITE_OK);
  auto after = ask(service, "shared/smtpd/domain/nope.example").answer;
  CAPTURE(after.text);
  CHECK(after.kind == Kind::not_found);
  CHECK(ask(service, "shared/smtpd/alias/unknown@example.org").answer.kind == Kind::not_found);
}
