#include <crypt.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <set>

#include "storage/demo_directory.hpp"
#include "storage/sqlite_directory.hpp"
#include "storage_test_util.hpp"

using namespace maildict::storage;
using maildict::storage::testing::demo_copy;
using maildict::storage::testing::fresh_path;
using maildict::storage::testing::RawDb;
using namespace std::chrono_literals;

namespace {

Deadline soon() { return Clock::now() + 2s; }

bool verifies(const std::string& password, const std::string& hash) {
  crypt_data data{};
  const char* out = crypt_r(password.c_str(), hash.c_str(), &data);
  return out != nullptr && hash == out;
}

// Strips "{SCHEME}" so crypt() can check the hash itself.
std::string bare(const std::string& prefixed) { return prefixed.substr(prefixed.find('}') + 1); }

struct Demo {
  std::string path = demo_copy();
  SqliteBackend backend{path, UserDefaults{}};
  std::unique_ptr<DirectoryConnection> conn = backend.connect();
};

}  // namespace

TEST_CASE("passdb: john by both spellings, bcrypt with a BLF-CRYPT prefix") {
  Demo d;
  for (const char* login : {"john@example.org", "john_example.org", "John@Example.Org"}) {
    CAPTURE(login);
    auto r = d.conn->passdb(login, soon());
    REQUIRE(r.outcome == Outcome::found);
    CHECK(r.value.user == "john@example.org");
    REQUIRE(r.value.password.has_value());
    CHECK(r.value.password->rfind("{BLF-CRYPT}$2b$10$", 0) == 0);
    CHECK(verifies("john-secret", bare(*r.value.password)));
  }
}

TEST_CASE("passdb: jane has SHA512-CRYPT, john_doe keeps its stored $2y$ prefix") {
  Demo d;
  auto jane = d.conn->passdb("jane@example.org", soon());
  REQUIRE(jane.outcome == Outcome::found);
  REQUIRE(jane.value.password.has_value());
  CHECK(jane.value.password->rfind("{SHA512-CRYPT}$6$", 0) == 0);
  CHECK(verifies("jane-secret", bare(*jane.value.password)));

  for (const char* login : {"john_doe_example.org", "john_doe@example.org"}) {
    CAPTURE(login);
    auto r = d.conn->passdb(login, soon());
    REQUIRE(r.outcome == Outcome::found);
    CHECK(r.value.user == "john_doe@example.org");
    REQUIRE(r.value.password.has_value());
    CHECK(r.value.password->rfind("{BLF-CRYPT}$2y$10$", 0) == 0);
    CHECK(verifies("doe-secret", bare(*r.value.password)));
  }
}

TEST_CASE("passdb: disabled user, user of a disabled domain, unknown names are not found") {
  Demo d;
  for (const char* login : {"eve@example.org", "ghost@disabled.example", "nobody@example.org", "john@example.com",
                            "john@", "john", "john@example.org.", ""}) {
    CAPTURE(login);
    CHECK(d.conn->passdb(login, soon()).outcome == Outcome::not_found);
    CHECK(d.conn->userdb(login, soon()).outcome == Outcome::not_found);
  }
}

TEST_CASE("passdb: a user without password is found and has none") {
  Demo d;
  auto r = d.conn->passdb("nopw@example.net", soon());
  REQUIRE(r.outcome == Outcome::found);
  CHECK(r.value.user == "nopw@example.net");
  CHECK_FALSE(r.value.password.has_value());

  // An empty string cannot verify anything either, and must not become a bare "{CRYPT}".
  RawDb raw(d.path);
  REQUIRE(raw.exec("UPDATE users SET password = '' WHERE local_part = 'jane'") == SQLITE_OK);
  auto jane = d.conn->passdb("jane@example.org", soon());
  REQUIRE(jane.outcome == Outcome::found);
  CHECK_FALSE(jane.value.password.has_value());
}

TEST_CASE("passdb: hostile logins are just names that do not exist") {
  Demo d;
  for (const char* login :
       {"' OR 1=1 --@example.org", "'OR'1'='1@example.org", "john'--@example.org", "%@example.org", "j%_example.org",
        "john@example.org' OR '1'='1", "\"john\"@example.org", "john@example.org;DROP TABLE users", "*@example.org"}) {
    CAPTURE(login);
    CHECK(d.conn->passdb(login, soon()).outcome == Outcome::not_found);
    CHECK(d.conn->userdb(login, soon()).outcome == Outcome::not_found);
  }
  CHECK(d.conn->passdb("john@example.org", soon()).outcome == Outcome::found);
  RawDb raw(d.path);
  CHECK(raw.text("SELECT count(*) FROM users") == "7");
}

TEST_CASE("userdb: defaults fill NULL columns, explicit values win, quota from quota_bytes") {
  Demo d;
  auto john = d.conn->userdb("john_example.org", soon());
  REQUIRE(john.outcome == Outcome::found);
  CHECK(john.value.user == "john@example.org");
  CHECK(john.value.uid == "vmail");
  CHECK(john.value.gid == "vmail");
  CHECK(john.value.home == "/var/vmail/example.org/john");
  CHECK(john.value.mail == "");
  REQUIRE(john.value.quota_rule.has_value());
  CHECK(*john.value.quota_rule == "*:storage=1073741824B");

  auto bob = d.conn->userdb("bob@example.net", soon());
  REQUIRE(bob.outcome == Outcome::found);
  CHECK(bob.value.user == "bob@example.net");
  CHECK(bob.value.uid == "2000");
  CHECK(bob.value.gid == "2000");
  CHECK(bob.value.home == "/var/vmail/custom/bob");
  CHECK(bob.value.mail == "maildir:~/Mail");
  CHECK_FALSE(bob.value.quota_rule.has_value());

  auto jane = d.conn->userdb("jane@example.org", soon());
  REQUIRE(jane.outcome == Outcome::found);
  CHECK_FALSE(jane.value.quota_rule.has_value());
}

TEST_CASE("userdb: configured defaults and templates") {
  std::string path = demo_copy();
  UserDefaults defaults;
  defaults.uid = "5000";
  defaults.gid = "mail";
  defaults.home = "/srv/mail/%u";
  defaults.mail = "maildir:/srv/mail/%d/%n/Maildir";
  SqliteBackend backend(path, defaults);
  auto conn = backend.connect();
  auto jane = conn->userdb("jane@example.org", soon());
  REQUIRE(jane.outcome == Outcome::found);
  CHECK(jane.value.uid == "5000");
  CHECK(jane.value.gid == "mail");
  CHECK(jane.value.home == "/srv/mail/jane@example.org");
  CHECK(jane.value.mail == "maildir:/srv/mail/example.org/jane/Maildir");
  auto bob = conn->userdb("bob@example.net", soon());
  REQUIRE(bob.outcome == Outcome::found);
  CHECK(bob.value.uid == "2000");
  CHECK(bob.value.mail == "maildir:~/Mail");
}

TEST_CASE("userdb: quota 0 means unlimited and is passed on; junk quota is left out") {
  Demo d;
  RawDb raw(d.path);
  REQUIRE(raw.exec("UPDATE users SET quota_bytes = 0 WHERE local_part = 'jane'") == SQLITE_OK);
  REQUIRE(raw.exec("UPDATE users SET quota_bytes = -5 WHERE local_part = 'bob'") == SQLITE_OK);
  REQUIRE(raw.exec("UPDATE users SET quota_bytes = '1G' WHERE local_part = 'john'") == SQLITE_OK);
  auto jane = d.conn->userdb("jane@example.org", soon());
  REQUIRE(jane.outcome == Outcome::found);
  REQUIRE(jane.value.quota_rule.has_value());
  CHECK(*jane.value.quota_rule == "*:storage=0B");
  auto bob = d.conn->userdb("bob@example.net", soon());
  REQUIRE(bob.outcome == Outcome::found);
  CHECK_FALSE(bob.value.quota_rule.has_value());
  auto john = d.conn->userdb("john@example.org", soon());
  REQUIRE(john.outcome == Outcome::found);
  CHECK_FALSE(john.value.quota_rule.has_value());
}

TEST_CASE("users: exactly the active users of active domains, in order") {
  Demo d;
  auto r = d.conn->users(soon());
  REQUIRE(r.outcome == Outcome::found);
  std::vector<std::string> names;
  for (auto& u : r.value) names.push_back(u.user);
  CHECK(names == std::vector<std::string>{"bob@example.net", "nopw@example.net", "jane@example.org",
                                          "john@example.org", "john_doe@example.org"});
  REQUIRE(r.value.size() == 5);
  CHECK(r.value[0].home == "/var/vmail/custom/bob");
  CHECK(r.value[2].home == "/var/vmail/example.org/jane");
  CHECK(r.value[3].quota_rule == std::optional<std::string>("*:storage=1073741824B"));
}

TEST_CASE("changes by another connection are seen at once, and data_version moves with them") {
  Demo d;
  auto v1 = d.backend.data_version();
  REQUIRE(v1.has_value());
  // Reads (including our own) do not move it.
  CHECK(d.conn->passdb("john@example.org", soon()).outcome == Outcome::found);
  CHECK(d.backend.data_version() == v1);
  CHECK(d.backend.data_version() == v1);

  RawDb raw(d.path);
  REQUIRE(raw.exec("UPDATE users SET password = '$6$abc$def' WHERE local_part = 'john' AND domain = 'example.org'") ==
          SQLITE_OK);
  auto v2 = d.backend.data_version();
  REQUIRE(v2.has_value());
  CHECK(v2 != v1);
  CHECK(d.backend.data_version() == v2);
  auto r = d.conn->passdb("john@example.org", soon());
  REQUIRE(r.outcome == Outcome::found);
  CHECK(r.value.password == std::optional<std::string>("{SHA512-CRYPT}$6$abc$def"));

  REQUIRE(raw.exec("UPDATE users SET active = 0 WHERE local_part = 'john' AND domain = 'example.org'") == SQLITE_OK);
  auto v3 = d.backend.data_version();
  CHECK(v3 != v2);
  CHECK(d.conn->passdb("john@example.org", soon()).outcome == Outcome::not_found);

  REQUIRE(raw.exec("UPDATE domains SET active = 0 WHERE domain = 'example.net'") == SQLITE_OK);
  CHECK(d.backend.data_version() != v3);
  CHECK(d.conn->passdb("bob@example.net", soon()).outcome == Outcome::not_found);
}

TEST_CASE("data_version moves on every commit, in WAL and in rollback-journal mode") {
  for (const char* mode : {"wal", "delete"}) {
    CAPTURE(mode);
    std::string path = demo_copy();
    RawDb writer(path);
    REQUIRE(writer.text(std::string("PRAGMA journal_mode = ") + mode) == mode);
    SqliteBackend backend(path, UserDefaults{});
    auto conn = backend.connect();
    std::set<std::uint64_t> seen;
    for (int i = 0; i < 20; ++i) {
      auto before = backend.data_version();
      REQUIRE(before.has_value());
      CHECK(conn->passdb("john@example.org", soon()).outcome == Outcome::found);
      CHECK(backend.data_version() == before);
      seen.insert(*before);
      REQUIRE(writer.exec("UPDATE users SET quota_bytes = " + std::to_string(i) + " WHERE local_part = 'jane'") ==
              SQLITE_OK);
      auto after = backend.data_version();
      REQUIRE(after.has_value());
      CHECK(after != before);
      auto jane = conn->userdb("jane@example.org", soon());
      REQUIRE(jane.outcome == Outcome::found);
      CHECK(jane.value.quota_rule == std::optional<std::string>("*:storage=" + std::to_string(i) + "B"));
    }
    CHECK(seen.size() == 20);
    // A checkpoint moves the data between files but changes nothing; it may or may not move
    // the version, but the version must still move on the next commit.
    REQUIRE(writer.exec("PRAGMA wal_checkpoint(TRUNCATE)") == SQLITE_OK);
    auto v = backend.data_version();
    REQUIRE(writer.exec("UPDATE users SET quota_bytes = NULL WHERE local_part = 'jane'") == SQLITE_OK);
    CHECK(backend.data_version() != v);
  }
}

// Closing any descriptor of a file drops every POSIX lock this process holds on it, SQLite's
// included; a change probe that opened (and closed) the -shm itself dropped the lock that tells
// other processes the wal-index is in use, and the next one to open the database truncated it
// under our mapping (SIGBUS). Every mapping of the -shm must therefore be SQLite's own: whole
// 32 KiB wal-index regions (walformat.html), nothing smaller.
TEST_CASE("the change probe reads the wal-index only through SQLite's own mapping") {
  Demo d;
  REQUIRE(d.conn->passdb("john@example.org", soon()).outcome == Outcome::found);
  REQUIRE(d.backend.data_version().has_value());
  RawDb writer(d.path);
  REQUIRE(writer.exec("UPDATE users SET quota_bytes = 1 WHERE local_part = 'jane'") == SQLITE_OK);
  REQUIRE(d.backend.data_version().has_value());

  std::string shm = std::filesystem::canonical(d.path).string() + "-shm";
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int mappings = 0;
  while (std::getline(maps, line)) {
    if (!line.ends_with(shm)) continue;
    ++mappings;
    unsigned long start = 0, end = 0;
    REQUIRE(std::sscanf(line.c_str(), "%lx-%lx", &start, &end) == 2);
    CAPTURE(line);
    CHECK((end - start) % 32768 == 0);
  }
  CHECK(mappings >= 1);
}

TEST_CASE("a database file replaced under the same name is noticed") {
  Demo d;
  auto v1 = d.backend.data_version();
  REQUIRE(v1.has_value());
  REQUIRE(d.conn->passdb("jane@example.org", soon()).outcome == Outcome::found);

  std::string other = demo_copy();
  {
    RawDb raw(other);
    REQUIRE(raw.exec("DELETE FROM users WHERE local_part = 'jane'") == SQLITE_OK);
  }
  std::filesystem::rename(other, d.path);
  // Noticed at the next identity check (every 250 ms), not on every call: a stat() per call
  // would cost more than the rest of data_version().
  std::this_thread::sleep_for(300ms);

  auto v2 = d.backend.data_version();
  REQUIRE(v2.has_value());
  CHECK(v2 != v1);
  CHECK(d.conn->passdb("jane@example.org", soon()).outcome == Outcome::not_found);
  CHECK(d.conn->passdb("john@example.org", soon()).outcome == Outcome::found);
  CHECK(d.conn->healthy());
}

// In WAL mode readers never wait for writers, and every open connection keeps a shared lock
// on the file, so nobody can take an exclusive lock under an open connection. A lock that
// blocks readers therefore comes either from a database in rollback-journal mode (WAL turned
// off by an operator, or a file system without shared memory) or from a process that took
// locking_mode=EXCLUSIVE before our connections opened.
TEST_CASE("a write lock on a rollback-journal database is a temporary failure within the deadline") {
  std::string path = demo_copy();
  {
    RawDb raw(path);
    REQUIRE(raw.text("PRAGMA journal_mode = DELETE") == "delete");
  }
  SqliteBackend backend(path, UserDefaults{});
  auto conn = backend.connect();
  REQUIRE(conn->passdb("john@example.org", soon()).outcome == Outcome::found);
  REQUIRE(backend.data_version().has_value());

  auto locker = std::make_unique<RawDb>(path);
  REQUIRE(locker->exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  REQUIRE(locker->exec("UPDATE users SET active = 1 WHERE local_part = 'jane'") == SQLITE_OK);

  auto start = Clock::now();
  auto r = conn->passdb("john@example.org", Clock::now() + 200ms);
  auto took = Clock::now() - start;
  CHECK(r.outcome == Outcome::temp_fail);
  CHECK(r.error == "database is locked");
  CHECK(took >= 150ms);   // it did wait for the lock to go away...
  CHECK(took < 1500ms);   // ...but gave up around the deadline
  CHECK(conn->userdb("john@example.org", Clock::now() + 50ms).outcome == Outcome::temp_fail);
  CHECK(conn->users(Clock::now() + 50ms).outcome == Outcome::temp_fail);
  // The probe never waits, and a version it cannot read must not be trusted.
  CHECK_FALSE(backend.data_version().has_value());

  REQUIRE(locker->exec("COMMIT") == SQLITE_OK);
  locker.reset();
  CHECK(conn->healthy());
  CHECK(conn->passdb("john@example.org", soon()).outcome == Outcome::found);
  CHECK(backend.data_version().has_value());
}

namespace {

// Another process holding the WAL-index lock bytes of the -shm file (WAL_WRITE_LOCK ..
// WAL_READ_LOCK(4), offsets 120..127, https://www.sqlite.org/walformat.html): readers can then
// take no read mark. POSIX locks only conflict between processes, hence the child.
class ShmLocker {
 public:
  explicit ShmLocker(const std::string& shm_path) {
    int ready[2], hold[2];
    REQUIRE(pipe(ready) == 0);
    REQUIRE(pipe(hold) == 0);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      close(ready[0]);
      close(hold[1]);
      int fd = open(shm_path.c_str(), O_RDWR);
      struct flock fl {};
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      fl.l_start = 120;
      fl.l_len = 8;
      char ok = (fd >= 0 && fcntl(fd, F_SETLKW, &fl) == 0) ? 'y' : 'n';
      if (write(ready[1], &ok, 1) != 1) _exit(1);
      char c;
      while (read(hold[0], &c, 1) > 0) {
      }
      _exit(0);
    }
    close(ready[1]);
    close(hold[0]);
    hold_ = hold[1];
    char ok = 'n';
    REQUIRE(read(ready[0], &ok, 1) == 1);
    close(ready[0]);
    REQUIRE(ok == 'y');
  }
  ~ShmLocker() { release(); }
  void release() {
    if (pid_ <= 0) return;
    close(hold_);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int hold_ = -1;
};

}  // namespace

TEST_CASE("a WAL index locked by another process is a temporary failure within the deadline") {
  Demo d;
  REQUIRE(d.conn->passdb("john@example.org", soon()).outcome == Outcome::found);
  auto v = d.backend.data_version();
  REQUIRE(v.has_value());
  {
    ShmLocker locker(d.path + "-shm");
    auto start = Clock::now();
    auto r = d.conn->passdb("john@example.org", Clock::now() + 200ms);
    auto took = Clock::now() - start;
    CHECK(r.outcome == Outcome::temp_fail);
    CHECK(r.error == "database is locked");
    CHECK(took >= 150ms);   // it did wait...
    CHECK(took < 1500ms);   // ...but not the ~10 s SQLite alone keeps retrying
    CHECK(d.conn->healthy());
    // Nobody can commit while those locks are held, and the WAL-index header has not moved
    // since the last PRAGMA: the version is served without a read (and without waiting).
    start = Clock::now();
    auto during = d.backend.data_version();
    CHECK(during == v);
    CHECK(Clock::now() - start < 500ms);
  }
  CHECK(d.conn->passdb("john@example.org", soon()).outcome == Outcome::found);
  CHECK(d.backend.data_version().has_value());
}

TEST_CASE("an exclusive lock taken before connecting makes connect() fail, never 'not found'") {
  std::string path = demo_copy();
  auto locker = std::make_unique<RawDb>(path);
  REQUIRE(locker->exec("PRAGMA locking_mode = EXCLUSIVE") == SQLITE_OK);
  REQUIRE(locker->exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  REQUIRE(locker->exec("UPDATE users SET active = 1 WHERE local_part = 'jane'") == SQLITE_OK);
  REQUIRE(locker->exec("COMMIT") == SQLITE_OK);  // exclusive mode keeps the lock after commit

  SqliteBackend backend(path, UserDefaults{});
  try {
    backend.connect();
    FAIL("connect() on an exclusively locked database must throw");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("database is locked") != std::string::npos);
  }
  CHECK_FALSE(backend.data_version().has_value());

  locker.reset();
  auto conn = backend.connect();
  CHECK(conn->passdb("john@example.org", soon()).outcome == Outcome::found);
  CHECK(backend.data_version().has_value());
}

TEST_CASE("a deadline that has already passed fails before touching the database") {
  Demo d;
  auto r = d.conn->passdb("john@example.org", Clock::now() - 1ms);
  CHECK(r.outcome == Outcome::temp_fail);
  CHECK(r.error == "deadline passed before the query");
  CHECK(d.conn->healthy());
}

TEST_CASE("a long query is interrupted at the deadline") {
  std::string path = fresh_path("bulk");
  create_demo_directory(path, 30000);
  SqliteBackend backend(path, UserDefaults{});
  auto conn = backend.connect();
  auto all = conn->users(soon() + 10s);
  REQUIRE(all.outcome == Outcome::found);
  CHECK(all.value.size() == 30005);
  auto r = conn->users(Clock::now() + 2ms);
  CHECK(r.outcome == Outcome::temp_fail);
  CHECK(conn->healthy());
  CHECK(conn->passdb("user29999@bulk.example", soon()).outcome == Outcome::found);

  // Without the index, the first step sorts every row inside SQLite: only the progress
  // handler can stop that.
  {
    RawDb raw(path);
    REQUIRE(raw.exec("DROP INDEX users_by_domain") == SQLITE_OK);
  }
  auto slow = backend.connect();
  auto start = Clock::now();
  auto unsorted = slow->users(soon());
  auto full = Clock::now() - start;
  REQUIRE(unsorted.outcome == Outcome::found);
  CHECK(unsorted.value.size() == 30005);
  double full_ms = std::chrono::duration<double, std::milli>(full).count();
  CAPTURE(full_ms);
  auto cut = slow->users(Clock::now() + 3ms);
  CHECK(cut.outcome == Outcome::temp_fail);
  // "before the query" only if this thread was descheduled for 3 ms; never "while reading".
  CHECK((cut.error == "deadline passed during the query" || cut.error == "deadline passed before the query"));
  CHECK(slow->healthy());
}

TEST_CASE("a missing database file is never an empty directory") {
  std::string path = fresh_path("missing");
  SqliteBackend backend(path, UserDefaults{});
  try {
    backend.connect();
    FAIL("connect() on a missing file must throw");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("database file missing") != std::string::npos);
  }
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK_FALSE(backend.data_version().has_value());
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK(backend.describe() == "sqlite:" + path);
}

TEST_CASE("a database file deleted under an open connection fails temporarily") {
  Demo d;
  REQUIRE(d.conn->passdb("john@example.org", soon()).outcome == Outcome::found);
  std::filesystem::remove(d.path);
  std::this_thread::sleep_for(300ms);  // see the identity check interval above
  auto r = d.conn->passdb("john@example.org", soon());
  CHECK(r.outcome == Outcome::temp_fail);
  CHECK(r.error == "database file missing");
  CHECK_FALSE(d.conn->healthy());
  CHECK_FALSE(d.backend.data_version().has_value());
}

TEST_CASE("a file that is not a database cannot be connected to") {
  std::string path = fresh_path("garbage");
  {
    std::ofstream out(path);
    out << std::string(8192, 'x');
  }
  SqliteBackend backend(path, UserDefaults{});
  CHECK_THROWS_AS(backend.connect(), std::runtime_error);
  CHECK_THROWS_AS(backend.prepare_schema(), std::runtime_error);
}

TEST_CASE("prepare_schema: creates the schema once, in WAL mode, version 1") {
  std::string path = fresh_path("schema");
  SqliteBackend backend(path, UserDefaults{});
  backend.prepare_schema();
  {
    RawDb raw(path);
    CHECK(raw.text("PRAGMA user_version") == "1");
    CHECK(raw.text("PRAGMA journal_mode") == "wal");
    CHECK(raw.text("SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master WHERE type = 'table' "
                   "ORDER BY name)") == "aliases,domains,relay_credentials,sender_logins,smtpd_values,users");
    REQUIRE(raw.exec("INSERT INTO domains (domain) VALUES ('kept.example')") == SQLITE_OK);
  }
  backend.prepare_schema();  // an existing directory is left alone
  RawDb raw(path);
  CHECK(raw.text("SELECT count(*) FROM domains") == "1");
  CHECK(raw.text("SELECT active FROM domains") == "1");

  auto conn = backend.connect();
  CHECK(conn->passdb("a@kept.example", soon()).outcome == Outcome::not_found);
  auto users = conn->users(soon());
  CHECK(users.outcome == Outcome::found);
  CHECK(users.value.empty());
}

TEST_CASE("prepare_schema: a newer schema or someone else's tables are refused") {
  std::string newer = fresh_path("newer");
  {
    RawDb raw(newer);
    REQUIRE(raw.exec(default_schema_sql()) == SQLITE_OK);
    REQUIRE(raw.exec("PRAGMA user_version = 2") == SQLITE_OK);
  }
  SqliteBackend b1(newer, UserDefaults{});
  CHECK_THROWS_AS(b1.prepare_schema(), std::runtime_error);
  CHECK_THROWS_AS(b1.connect(), std::runtime_error);

  std::string foreign = fresh_path("foreign");
  {
    RawDb raw(foreign);
    REQUIRE(raw.exec("CREATE TABLE accounts (name TEXT)") == SQLITE_OK);
  }
  SqliteBackend b2(foreign, UserDefaults{});
  CHECK_THROWS_AS(b2.prepare_schema(), std::runtime_error);
  try {
    b2.connect();
    FAIL("connect() without our tables must throw");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("schema not usable") != std::string::npos);
  }
}

TEST_CASE("create_demo_directory: exact rows, idempotent, bulk users share one hash") {
  std::string path = fresh_path("demo-fresh");
  create_demo_directory(path, 1000);
  create_demo_directory(path, 1000);  // twice must not fail nor duplicate
  RawDb raw(path);
  CHECK(raw.text("SELECT count(*) FROM users") == "1007");
  CHECK(raw.text("SELECT group_concat(domain || ':' || active || ':' || ifnull(alias_for, '-'), ' ') FROM "
                 "(SELECT * FROM domains ORDER BY domain)") ==
        "bulk.example:1:- disabled.example:0:- example.com:1:example.org example.net:1:- example.org:1:-");
  CHECK(raw.text("SELECT count(*) FROM aliases") == "4");
  CHECK(raw.text("SELECT group_concat(destination, ',') FROM (SELECT destination FROM aliases WHERE local_part = "
                 "'postmaster' AND domain = 'example.org' ORDER BY destination)") ==
        "jane@example.org,john@example.org");
  CHECK(raw.text("SELECT destination FROM aliases WHERE local_part = '' AND domain = 'example.net'") ==
        "bob@example.net");
  CHECK(raw.text("SELECT login || '>' || address FROM sender_logins") == "john@example.org>sales@example.org");
  CHECK(raw.text("SELECT count(DISTINCT password) FROM users WHERE domain = 'bulk.example'") == "1");
  CHECK(raw.text("SELECT quota_bytes FROM users WHERE local_part = 'john' AND domain = 'example.org'") ==
        "1073741824");
  CHECK(raw.text("SELECT typeof(uid) FROM users WHERE local_part = 'bob'") == "integer");
  CHECK(raw.text("SELECT substr(password, 1, 4) FROM users WHERE local_part = 'john'") == "$2b$");
  CHECK(raw.text("SELECT substr(password, 1, 3) FROM users WHERE local_part = 'jane'") == "$6$");
  CHECK(raw.text("SELECT substr(password, 1, 15) FROM users WHERE local_part = 'john_doe'") == "{BLF-CRYPT}$2y$");
  CHECK(raw.text("SELECT ifnull(password, 'NULL') FROM users WHERE local_part = 'nopw'") == "NULL");
  CHECK(verifies("bulk-secret", raw.text("SELECT password FROM users WHERE local_part = 'user1000'")));
  CHECK(verifies("ghost-secret", raw.text("SELECT password FROM users WHERE local_part = 'ghost'")));
  CHECK(verifies("eve-secret", raw.text("SELECT password FROM users WHERE local_part = 'eve'")));
  CHECK(verifies("bob-secret", raw.text("SELECT password FROM users WHERE local_part = 'bob'")));

  SqliteBackend backend(path, UserDefaults{});
  auto conn = backend.connect();
  auto u = conn->passdb("user1000_bulk.example", soon());
  REQUIRE(u.outcome == Outcome::found);
  CHECK(u.value.user == "user1000@bulk.example");
  CHECK(conn->passdb("user1001@bulk.example", soon()).outcome == Outcome::not_found);
  auto all = conn->users(soon());
  REQUIRE(all.outcome == Outcome::found);
  CHECK(all.value.size() == 1005);
}
