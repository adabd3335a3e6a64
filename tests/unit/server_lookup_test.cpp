// LookupService and the answers it builds, over a real SQLite demo directory and a real pool.
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <future>

#include "server/directory_answers.hpp"
#include "server/lookup_service.hpp"
#include "server_test_util.hpp"
#include "storage/password_scheme.hpp"
#include "storage/pool.hpp"
#include "storage/sqlite_directory.hpp"
#include "storage_test_util.hpp"

using namespace maildict;
using server::LookupAnswer;
using Kind = server::LookupAnswer::Kind;

namespace {

using server::testing::iterate;
using server::testing::look;
using storage::testing::RawDb;

// Applies SQL as another process would (an operator's sqlite3 shell, the admin tool).
void change(const std::string& db, const std::string& sql) {
  RawDb raw(db);
  REQUIRE(raw.exec(sql) == SQLITE_OK);
}

struct Fixture {
  std::string db = storage::testing::demo_copy();
  storage::UserDefaults defaults{"1000", "mailgroup", "/var/vmail/%d/%n", "maildir:~/Maildir"};
  storage::SqliteBackend backend{db, defaults};
  storage::Pool pool{backend, 2, 100};
  server::LookupService service{backend, pool, 1000, std::chrono::seconds(60), std::chrono::milliseconds(300)};
};

}  // namespace

TEST_CASE("passdb and userdb JSON are flat objects Dovecot reads") {
  CHECK(server::passdb_json({"john@example.org", std::string("{BLF-CRYPT}$2b$05$abc")}) ==
        R"({"password":"{BLF-CRYPT}$2b$05$abc","user":"john@example.org"})");
  // No password: the user exists but cannot log in; Dovecot then refuses the password.
  CHECK(server::passdb_json({"nopw@example.net", std::nullopt}) == R"({"user":"nopw@example.net"})");
  storage::UserdbEntry u{"a@b.c", "1000", "vmail", "/home/\"q\"", "", std::string("*:storage=5B")};
  CHECK(server::userdb_json(u) ==
        R"({"user":"a@b.c","uid":1000,"gid":"vmail","home":"/home/\"q\"","quota_rule":"*:storage=5B"})");
}

TEST_CASE("both spellings reach the same row and the reply carries the canonical user") {
  Fixture f;
  auto at = look(f.service, "shared/passdb/john@example.org");
  auto underscore = look(f.service, "shared/passdb/john_example.org");
  REQUIRE(at.answer.kind == Kind::found);
  REQUIRE(underscore.answer.kind == Kind::found);
  CHECK(at.answer.text == underscore.answer.text);
  CHECK(at.answer.text.find(R"("user":"john@example.org")") != std::string::npos);
  CHECK(at.answer.text.find(R"("password":"{BLF-CRYPT}$2b$)") != std::string::npos);

  auto doe = look(f.service, "shared/userdb/john_doe_example.org");
  REQUIRE(doe.answer.kind == Kind::found);
  CHECK(doe.answer.text.find(R"("user":"john_doe@example.org")") != std::string::npos);
  CHECK(doe.answer.text.find(R"("uid":1000,"gid":"mailgroup")") != std::string::npos);
  CHECK(doe.answer.text.find(R"("home":"/var/vmail/example.org/john_doe")") != std::string::npos);
}

TEST_CASE("disabled users, users of disabled domains and unknown users are not found") {
  Fixture f;
  CHECK(look(f.service, "shared/passdb/eve@example.org").answer.kind == Kind::not_found);
  CHECK(look(f.service, "shared/passdb/ghost@disabled.example").answer.kind == Kind::not_found);
  CHECK(look(f.service, "shared/userdb/nosuch@example.org").answer.kind == Kind::not_found);
  CHECK(look(f.service, "shared/passdb/' OR '1'='1@example.org").answer.kind == Kind::not_found);
  // A NUL inside a login cannot name any row: not found (and no truncation to "john").
  CHECK(look(f.service, std::string("shared/passdb/john\0@example.org", 31)).answer.kind == Kind::not_found);
}

TEST_CASE("keys maildict does not own fail at once and never read as unknown users") {
  Fixture f;
  for (const std::string& key : std::vector<std::string>{"shared/userdb/john@example.org/quota", "priv/quota/storage", "shared/unmapped/key",
                          "shared/passdb/"}) {
    auto r = look(f.service, key);
    CHECK(r.immediate);
    CHECK(r.answer.kind == Kind::failed);
  }
}

TEST_CASE("a cached answer is served until the database changes, then read again") {
  Fixture f;
  auto first = look(f.service, "shared/passdb/jane@example.org");
  REQUIRE(first.answer.kind == Kind::found);
  CHECK_FALSE(first.immediate);
  auto second = look(f.service, "shared/passdb/jane@example.org");
  CHECK(second.immediate);  // from the cache
  CHECK(second.answer.text == first.answer.text);

  // Another process changes the password: the next lookup must see the new hash.
  std::string fresh = storage::hash_password("changed", "sha512-crypt");
  change(f.db, "UPDATE users SET password = '" + fresh + "' WHERE local_part = 'jane'");
  auto third = look(f.service, "shared/passdb/jane@example.org");
  CHECK_FALSE(third.immediate);
  REQUIRE(third.answer.kind == Kind::found);
  CHECK(third.answer.text.find(fresh) != std::string::npos);

  // Disabling a user is seen at once too, and "not found" is cached the same way.
  change(f.db, "UPDATE users SET active = 0 WHERE local_part = 'jane'");
  CHECK(look(f.service, "shared/passdb/jane@example.org").answer.kind == Kind::not_found);
  CHECK(look(f.service, "shared/passdb/jane@example.org").immediate);
}

TEST_CASE("a locked database is a temporary failure, and failures are not cached") {
  Fixture f;
  sqlite3* locker = nullptr;
  REQUIRE(sqlite3_open(f.db.c_str(), &locker) == SQLITE_OK);
  REQUIRE(sqlite3_exec(locker, "PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; "
                               "UPDATE domains SET active = active;", nullptr, nullptr, nullptr) == SQLITE_OK);
  auto blocked = look(f.service, "shared/passdb/bob@example.net");
  CHECK(blocked.answer.kind == Kind::failed);
  REQUIRE(sqlite3_exec(locker, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(locker);
  auto after = look(f.service, "shared/passdb/bob@example.net");
  CHECK_FALSE(after.immediate);
  CHECK(after.answer.kind == Kind::found);
}

TEST_CASE("passdb outcomes are noted for the auth policy: failed while locked, answered after") {
  Fixture f;
  server::PassdbOutcomes outcomes;
  f.service.note_passdb_outcomes(outcomes);
  sqlite3* locker = nullptr;
  REQUIRE(sqlite3_open(f.db.c_str(), &locker) == SQLITE_OK);
  REQUIRE(sqlite3_exec(locker, "PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; "
                               "UPDATE domains SET active = active;", nullptr, nullptr, nullptr) == SQLITE_OK);
  CHECK(look(f.service, "shared/passdb/bob_example.net").answer.kind == Kind::failed);
  // a userdb lookup is not a login attempt
  CHECK(look(f.service, "shared/userdb/jane@example.org").answer.kind == Kind::failed);
  REQUIRE(sqlite3_exec(locker, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(locker);
  CHECK(outcomes.failed_recently("bob@example.net", std::chrono::seconds(60)));
  CHECK_FALSE(outcomes.failed_recently("jane@example.org", std::chrono::seconds(60)));
  // looked up again and answered: no longer a failure
  CHECK(look(f.service, "shared/passdb/bob@example.net").answer.kind == Kind::found);
  CHECK_FALSE(outcomes.failed_recently("bob@example.net", std::chrono::seconds(60)));
  // the dict server answered F on its own (backstop timer): a failure too; not for userdb keys
  f.service.note_timed_out("shared/userdb/jane@example.org");
  CHECK_FALSE(outcomes.failed_recently("jane@example.org", std::chrono::seconds(60)));
  f.service.note_timed_out("shared/passdb/jane_example.org");
  CHECK(outcomes.failed_recently("jane@example.org", std::chrono::seconds(60)));
}

TEST_CASE("user iteration lists active users as direct children of shared/userdb/") {
  Fixture f;
  auto all = iterate(f.service, dict::Iterate{0, 0, "shared/userdb/", "*"});
  REQUIRE_FALSE(all.failed);
  std::vector<std::string> keys;
  for (auto& [k, v] : all.rows) {
    keys.push_back(k);
    CHECK(v.starts_with("{\"user\":"));
  }
  std::sort(keys.begin(), keys.end());
  CHECK(keys == std::vector<std::string>{"shared/userdb/bob@example.net", "shared/userdb/jane@example.org",
                                         "shared/userdb/john@example.org", "shared/userdb/john_doe@example.org",
                                         "shared/userdb/nopw@example.net"});

  auto keys_only = iterate(f.service, dict::Iterate{dict::iterate_no_value, 2, "shared/userdb/", ""});
  REQUIRE(keys_only.rows.size() == 2);
  CHECK(keys_only.rows[0].second.empty());

  auto exact = iterate(f.service, dict::Iterate{dict::iterate_exact_key, 0, "shared/passdb/bob@example.net", ""});
  REQUIRE(exact.rows.size() == 1);
  CHECK(exact.rows[0].first == "shared/passdb/bob@example.net");

  CHECK(iterate(f.service, dict::Iterate{0, 0, "shared/nothing/", ""}).failed);
}

TEST_CASE("a full queue is an immediate temporary failure, not a wait") {
  storage::SqliteBackend backend{storage::testing::demo_copy(), {}};
  storage::Pool pool{backend, 1, 0};  // no room for anything waiting
  server::LookupService service{backend, pool, 0, std::chrono::seconds(1), std::chrono::milliseconds(300)};
  // With one worker and no queue, flood it: some lookups must be refused at once as overload.
  int refused = 0;
  std::vector<std::future<LookupAnswer>> waiting;
  std::vector<std::shared_ptr<std::promise<LookupAnswer>>> promises;
  for (int i = 0; i < 50; ++i) {
    auto p = std::make_shared<std::promise<LookupAnswer>>();
    waiting.push_back(p->get_future());
    promises.push_back(p);
    auto now = service.lookup("shared/passdb/john@example.org", [p](LookupAnswer a) { p->set_value(std::move(a)); });
    if (now) {
      CHECK(now->kind == Kind::failed);
      CHECK(now->text.find("overloaded") != std::string::npos);
      ++refused;
      p->set_value(*now);
    }
  }
  CHECK(refused > 0);
  for (auto& w : waiting) CHECK(w.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
}
