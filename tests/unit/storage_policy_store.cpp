// The policy store through a real SQLite session (SqliteBackend::open_session): tables created
// idempotently, batches saved all-or-nothing, rows read back by age, pruning.
#include <doctest/doctest.h>

#include "storage/policy_store.hpp"
#include "storage/sqlite_directory.hpp"
#include "storage_test_util.hpp"

using namespace maildict::storage;
using maildict::storage::testing::demo_copy;
using maildict::storage::testing::RawDb;

namespace {

struct Fixture {
  std::string path = demo_copy();
  SqliteBackend backend{path, UserDefaults{}};
  std::unique_ptr<SqlSession> session = backend.open_session(SessionRole::write);
  PolicyStore store{*session};
  SqlError err;
};

}  // namespace

TEST_CASE("policy store: prepare is idempotent and leaves the directory alone") {
  Fixture f;
  REQUIRE(f.store.prepare(f.err));
  REQUIRE(f.store.prepare(f.err));
  RawDb raw(f.path);
  CHECK(raw.text("SELECT count(*) FROM policy_counters") == "0");
  CHECK(raw.text("SELECT count(*) FROM policy_blocks") == "0");
  CHECK(raw.text("SELECT count(*) FROM users") != "0");
}

TEST_CASE("policy store: save, replace, erase and load back") {
  Fixture f;
  REQUIRE(f.store.prepare(f.err));
  PolicyChanges c;
  c.counters.push_back({"ip", "192.0.2.1/32", 1000, "a:0:1000:0"});
  c.counters.push_back({"ip_login", "192.0.2.1/32|john", 2000, "b:0:2000:1"});
  c.counters.push_back({"login", "o'brien@example.org", 3000, "c:1:3000:0"});  // quotes are data
  c.blocks.push_back({"ip", "203.0.113.0/24", "ticket 1", 500, 0});
  c.blocks.push_back({"login", "eve@example.org", "", 500, 1500});
  REQUIRE(f.store.save(c, f.err));

  std::vector<PolicyCounterRow> rows;
  REQUIRE(f.store.load_counters(1500, 100, rows, f.err));
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].key == "o'brien@example.org");  // newest first
  CHECK(rows[0].updated_ms == 3000);
  CHECK(rows[1].data == "b:0:2000:1");
  rows.clear();
  REQUIRE(f.store.load_counters(0, 1, rows, f.err));
  CHECK(rows.size() == 1);

  std::vector<PolicyBlockRow> blocks;
  REQUIRE(f.store.load_blocks(1000, blocks, f.err));
  CHECK(blocks.size() == 2);
  blocks.clear();
  REQUIRE(f.store.load_blocks(2000, blocks, f.err));  // eve's block expired at 1500
  REQUIRE(blocks.size() == 1);
  CHECK(blocks[0].target == "203.0.113.0/24");
  CHECK(blocks[0].reason == "ticket 1");
  CHECK(blocks[0].expires_ms == 0);

  PolicyChanges d;
  d.counters.push_back({"ip", "192.0.2.1/32", 4000, "new"});
  d.counters_erased.push_back({"login", "o'brien@example.org"});
  d.blocks_erased.push_back({"ip", "203.0.113.0/24"});
  REQUIRE(f.store.save(d, f.err));
  rows.clear();
  REQUIRE(f.store.load_counters(0, 100, rows, f.err));
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].key == "192.0.2.1/32");
  CHECK(rows[0].data == "new");
  blocks.clear();
  REQUIRE(f.store.load_blocks(0, blocks, f.err));
  REQUIRE(blocks.size() == 1);
  CHECK(blocks[0].kind == "login");

  REQUIRE(f.store.prune(3000, f.err));
  rows.clear();
  REQUIRE(f.store.load_counters(0, 100, rows, f.err));
  CHECK(rows.size() == 1);  // the 2000 row is gone, the 4000 row stays
  blocks.clear();
  REQUIRE(f.store.load_blocks(0, blocks, f.err));
  CHECK(blocks.empty());  // expired at 1500
}

TEST_CASE("policy store: a failing batch changes nothing") {
  Fixture f;
  REQUIRE(f.store.prepare(f.err));
  PolicyChanges good;
  good.counters.push_back({"ip", "192.0.2.1/32", 1000, "x"});
  REQUIRE(f.store.save(good, f.err));
  RawDb raw(f.path);
  // A trigger makes the second statement of the next batch fail.
  REQUIRE(raw.exec("CREATE TRIGGER no_logins BEFORE INSERT ON policy_blocks "
                   "BEGIN SELECT RAISE(ABORT, 'refused'); END") == 0);
  PolicyChanges bad;
  bad.counters.push_back({"ip", "192.0.2.1/32", 9000, "changed"});
  bad.blocks.push_back({"login", "x", "", 1, 0});
  CHECK_FALSE(f.store.save(bad, f.err));
  CHECK(raw.text("SELECT data FROM policy_counters") == "x");
}
