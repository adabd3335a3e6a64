#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "storage/pool.hpp"
#include "storage/sqlite_directory.hpp"
#include "storage_test_util.hpp"

using namespace maildict::storage;
using namespace std::chrono_literals;

namespace {

class FakeConnection final : public DirectoryConnection {
 public:
  explicit FakeConnection(int id) : id(id) {}
  Result<PassdbEntry> passdb(std::string_view, Deadline) override { return Result<PassdbEntry>::not_found(); }
  Result<UserdbEntry> userdb(std::string_view, Deadline) override { return Result<UserdbEntry>::not_found(); }
  Result<std::vector<UserdbEntry>> users(Deadline) override { return Result<std::vector<UserdbEntry>>::not_found(); }
  bool healthy() const override { return !broken; }
  int id;
  std::atomic<bool> broken{false};
};

class FakeBackend final : public DirectoryBackend {
 public:
  std::unique_ptr<DirectoryConnection> connect() override {
    int n = ++connects;
    std::this_thread::sleep_for(std::chrono::milliseconds(open_delay_ms.load()));
    if (fail_open) throw std::runtime_error("no such database");
    return std::make_unique<FakeConnection>(n);
  }
  std::optional<std::uint64_t> data_version() override { return 1; }
  std::string describe() const override { return "fake"; }
  void prepare_schema() override {}
  std::unique_ptr<SqlSession> open_session(SessionRole) override { throw std::runtime_error("no SQL here"); }
  std::atomic<int> connects{0};
  std::atomic<bool> fail_open{false};
  std::atomic<int> open_delay_ms{0};
};

Deadline soon() { return Clock::now() + 2s; }

// Holds a pool worker inside a job until released. Declared after the Pool in a test, so that
// even a failing test unblocks the worker before the pool's destructor joins it.
class Gate {
 public:
  Gate() : released_(release_.get_future().share()) {}
  ~Gate() { open(); }
  // A job that signals it has started, then waits for open().
  Pool::Job blocker() {
    return [this, released = released_](DirectoryConnection*, const std::string&) {
      started_.set_value();
      released.wait();
    };
  }
  void wait_started() { started_.get_future().wait(); }
  void open() {
    if (!opened_.exchange(true)) release_.set_value();
  }

 private:
  std::promise<void> release_;
  std::shared_future<void> released_;
  std::promise<void> started_;
  std::atomic<bool> opened_{false};
};

// Runs one job and waits for it; returns what the job saw.
struct Seen {
  FakeConnection* conn;
  std::string why;
};
Seen run_one(Pool& pool, Deadline deadline = soon()) {
  // Shared: if the wait below fails, the job may still run after this frame is gone.
  auto p = std::make_shared<std::promise<Seen>>();
  auto f = p->get_future();
  REQUIRE(pool.submit(deadline, [p](DirectoryConnection* c, const std::string& why) {
    p->set_value({static_cast<FakeConnection*>(c), why});
  }));
  REQUIRE(f.wait_for(5s) == std::future_status::ready);
  return f.get();
}

}  // namespace

TEST_CASE("pool: jobs run on a lazily opened connection per thread") {
  FakeBackend backend;
  std::mutex m;
  std::set<DirectoryConnection*> conns;
  std::atomic<int> done{0};
  Pool pool(backend, 3, 100);
  CHECK(backend.connects == 0);
  for (int i = 0; i < 50; ++i) {
    REQUIRE(pool.submit(soon(), [&](DirectoryConnection* c, const std::string& why) {
      std::lock_guard lock(m);
      if (c != nullptr && why.empty()) conns.insert(c);
      ++done;
    }));
  }
  for (int i = 0; i < 500 && done < 50; ++i) std::this_thread::sleep_for(10ms);
  CHECK(done == 50);
  CHECK(conns.size() >= 1);
  CHECK(conns.size() <= 3);
  CHECK(backend.connects == static_cast<int>(conns.size()));
}

TEST_CASE("pool: submit refuses when max_queued jobs wait") {
  FakeBackend backend;
  std::atomic<int> ran{0};
  Pool pool(backend, 1, 2);
  Gate gate;
  REQUIRE(pool.submit(soon(), gate.blocker()));
  gate.wait_started();  // the worker is busy, the queue is empty
  auto count = [&](DirectoryConnection* c, const std::string&) { if (c) ++ran; };
  CHECK(pool.submit(soon() + 10s, count));
  CHECK(pool.submit(soon() + 10s, count));
  CHECK_FALSE(pool.submit(soon() + 10s, count));
  gate.open();
  for (int i = 0; i < 500 && ran < 2; ++i) std::this_thread::sleep_for(10ms);
  CHECK(ran == 2);
  CHECK(pool.submit(soon(), count));  // room again
}

TEST_CASE("pool: a job dequeued after its deadline gets no connection") {
  FakeBackend backend;
  std::promise<Seen> p;
  auto late_seen = p.get_future();
  Pool pool(backend, 1, 10);
  auto seen = run_one(pool, Clock::now() - 1ms);
  CHECK(seen.conn == nullptr);
  CHECK(seen.why == "timed out waiting for a database connection");
  CHECK(backend.connects == 0);  // no need to open anything for it

  // Waiting behind a slow job past its deadline counts too.
  Gate gate;
  REQUIRE(pool.submit(soon(), gate.blocker()));
  REQUIRE(pool.submit(Clock::now() + 20ms, [&p](DirectoryConnection* c, const std::string& why) {
    p.set_value({static_cast<FakeConnection*>(c), why});
  }));
  std::this_thread::sleep_for(50ms);
  gate.open();
  REQUIRE(late_seen.wait_for(5s) == std::future_status::ready);
  auto late = late_seen.get();
  CHECK(late.conn == nullptr);
  CHECK(late.why == "timed out waiting for a database connection");
}

TEST_CASE("pool: open failures are reported, and retried at most every ~100 ms") {
  FakeBackend backend;
  backend.fail_open = true;
  Pool pool(backend, 1, 10);
  auto first = run_one(pool);
  CHECK(first.conn == nullptr);
  CHECK(first.why == "cannot open database: no such database");
  CHECK(backend.connects == 1);
  auto second = run_one(pool);
  CHECK(second.conn == nullptr);
  CHECK(second.why == "cannot open database: no such database");
  CHECK(backend.connects == 1);  // no new attempt so soon

  backend.fail_open = false;
  std::this_thread::sleep_for(150ms);
  auto third = run_one(pool);
  CHECK(third.conn != nullptr);
  CHECK(third.why.empty());
  CHECK(backend.connects == 2);
}

TEST_CASE("pool: an open that failed after waiting (a lock) may be retried by the next job") {
  FakeBackend backend;
  backend.fail_open = true;
  backend.open_delay_ms = 120;  // like SQLite waiting out a lock before giving up
  Pool pool(backend, 1, 10);
  auto first = run_one(pool);
  CHECK(first.conn == nullptr);
  CHECK(backend.connects == 1);
  backend.fail_open = false;
  backend.open_delay_ms = 0;
  auto second = run_one(pool);
  CHECK(second.conn != nullptr);
  CHECK(backend.connects == 2);
}

TEST_CASE("pool: an unhealthy connection is replaced") {
  FakeBackend backend;
  Pool pool(backend, 1, 10);
  auto a = run_one(pool);
  REQUIRE(a.conn != nullptr);
  int first_id = a.conn->id;
  auto b = run_one(pool);
  REQUIRE(b.conn != nullptr);
  CHECK(b.conn->id == first_id);
  b.conn->broken = true;
  auto c = run_one(pool);
  REQUIRE(c.conn != nullptr);
  CHECK(c.conn->id != first_id);
  CHECK(backend.connects == 2);
}

TEST_CASE("pool: a throwing job does not kill its worker, and is reported") {
  FakeBackend backend;
  std::mutex m;
  std::vector<std::string> reports;
  Pool pool(backend, 1, 10, [&](const std::string& message) {
    std::lock_guard lock(m);
    reports.push_back(message);
  });
  REQUIRE(pool.submit(soon(), [](DirectoryConnection*, const std::string&) {
    throw std::runtime_error("boom\nsecond line stays out of the log");
  }));
  auto after = run_one(pool);
  CHECK(after.conn != nullptr);
  {
    std::lock_guard lock(m);
    REQUIRE(reports.size() == 1);
    CHECK(reports[0] == "a database job failed with an exception: boom");
  }

  // The same bug on every request is one line, not one per request: the next reports within
  // the interval are only counted.
  for (int i = 0; i < 5; ++i)
    REQUIRE(pool.submit(soon(), [](DirectoryConnection*, const std::string&) { throw 42; }));
  run_one(pool);
  std::lock_guard lock(m);
  CHECK(reports.size() == 1);
}

TEST_CASE("pool: a job that throws something else is reported too") {
  FakeBackend backend;
  std::promise<std::string> reported;
  auto f = reported.get_future();
  Pool pool(backend, 1, 10, [&](const std::string& message) { reported.set_value(message); });
  REQUIRE(pool.submit(soon(), [](DirectoryConnection*, const std::string&) { throw 42; }));
  REQUIRE(f.wait_for(5s) == std::future_status::ready);
  CHECK(f.get() == "a database job failed with an exception: an exception that is not a std::exception");
}

TEST_CASE("pool: queued jobs are answered at their deadline while every worker is busy") {
  FakeBackend backend;
  Pool pool(backend, 1, 100);
  Gate gate;
  REQUIRE(pool.submit(soon() + 10s, gate.blocker()));
  gate.wait_started();  // the only worker hangs (a database that does not answer)
  struct Answer {
    std::string why;
    Clock::duration late;
  };
  std::mutex m;
  std::vector<Answer> answers;
  const auto start = Clock::now();
  for (int i = 0; i < 20; ++i) {
    auto deadline = start + 100ms + i * 10ms;
    REQUIRE(pool.submit(deadline, [&, deadline](DirectoryConnection* c, const std::string& why) {
      std::lock_guard lock(m);
      answers.push_back({c ? "connection" : why, Clock::now() - deadline});
    }));
  }
  for (int i = 0; i < 500; ++i) {
    {
      std::lock_guard lock(m);
      if (answers.size() == 20) break;
    }
    std::this_thread::sleep_for(10ms);
  }
  std::lock_guard lock(m);
  REQUIRE(answers.size() == 20);  // every one of them, not only as many as there are workers
  for (const auto& a : answers) {
    CHECK(a.why == "timed out waiting for a database connection");
    CHECK(a.late >= 0ms);    // never before its deadline
    CHECK(a.late < 1000ms);  // generous: this machine is shared
  }
  gate.open();
}

TEST_CASE("pool: stop answers queued jobs with 'shutting down' and refuses new ones") {
  FakeBackend backend;
  std::vector<std::string> whys;
  std::atomic<int> null_conns{0};
  std::mutex m;
  Pool pool(backend, 1, 10);
  Gate gate;
  REQUIRE(pool.submit(soon(), gate.blocker()));
  gate.wait_started();
  for (int i = 0; i < 3; ++i)
    REQUIRE(pool.submit(soon() + 10s, [&](DirectoryConnection* c, const std::string& why) {
      std::lock_guard lock(m);
      if (c == nullptr) ++null_conns;
      whys.push_back(why);
    }));
  std::thread stopper([&] { pool.stop(); });
  std::this_thread::sleep_for(20ms);
  gate.open();
  stopper.join();
  CHECK(null_conns == 3);
  CHECK(whys == std::vector<std::string>(3, "shutting down"));
  CHECK_FALSE(pool.submit(soon(), [](DirectoryConnection*, const std::string&) {}));
  pool.stop();  // twice is harmless
}

TEST_CASE("pool: with the SQLite backend, a missing file is a temporary failure") {
  std::string path = maildict::storage::testing::fresh_path("pool-missing");
  SqliteBackend backend(path, UserDefaults{});
  std::promise<std::string> p;
  auto seen = p.get_future();
  Pool pool(backend, 1, 10);
  REQUIRE(pool.submit(soon(), [&p](DirectoryConnection* c, const std::string& why) {
    p.set_value(c == nullptr ? why : "connected?!");
  }));
  REQUIRE(seen.wait_for(5s) == std::future_status::ready);
  auto why = seen.get();
  CHECK(why.find("cannot open database: ") == 0);
  CHECK(why.find("database file missing") != std::string::npos);
}

TEST_CASE("pool: with the SQLite backend, lookups run on pool threads") {
  std::string path = maildict::storage::testing::demo_copy();
  SqliteBackend backend(path, UserDefaults{});
  std::atomic<int> found{0}, done{0};
  Pool pool(backend, 2, 100);
  for (int i = 0; i < 20; ++i)
    REQUIRE(pool.submit(soon(), [&, i](DirectoryConnection* c, const std::string&) {
      if (c && c->passdb(i % 2 ? "john@example.org" : "jane_example.org", soon()).outcome == Outcome::found) ++found;
      ++done;
    }));
  for (int i = 0; i < 500 && done < 20; ++i) std::this_thread::sleep_for(10ms);
  CHECK(done == 20);
  CHECK(found == 20);
}
