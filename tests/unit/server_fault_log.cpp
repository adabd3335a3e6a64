#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "server/fault_log.hpp"

using maildict::server::FaultLog;
using namespace std::chrono_literals;

namespace {

struct Lines {
  std::vector<std::string> all;
  FaultLog::Sink sink() {
    return [this](FaultLog::Level level, const std::string& line) {
      all.push_back((level == FaultLog::Level::warn ? "W " : "I ") + line);
    };
  }
};

}  // namespace

TEST_CASE("fault log: an outage is one line when it starts, summaries while it lasts, one when it ends") {
  Lines lines;
  FaultLog log(lines.sink(), 30s, 2s);
  auto t = FaultLog::Clock::time_point{} + 1000s;
  // 100,000 failures over 70 s, two causes.
  for (int i = 0; i < 100000; ++i) {
    auto now = t + std::chrono::microseconds(i * 700);
    log.failed(i % 10 == 0 ? "maildict: database file missing" : "maildict: cannot open database", now);
  }
  REQUIRE(lines.all.size() == 4);
  CHECK(lines.all[0].starts_with("W requests fail temporarily: maildict: database file missing"));
  CHECK(lines.all[1].starts_with("W requests fail temporarily: maildict: cannot open database"));
  CHECK(lines.all[2].starts_with("W requests still failing temporarily, in the last 30.0 s: maildict: database file "
                                 "missing: "));
  CHECK(lines.all[2].find("maildict: cannot open database: ") != std::string::npos);
  CHECK(lines.all[3].starts_with("W requests still failing temporarily"));

  // Answers while the last failure is recent: still the same episode (a flapping fault).
  auto end = t + 70s;
  log.answered(end + 1s);
  CHECK(lines.all.size() == 4);
  // Quiet long enough: one line per cause, with its count.
  log.answered(end + 3s);
  REQUIRE(lines.all.size() == 6);
  CHECK(lines.all[4].starts_with("I requests no longer fail: maildict: database file missing (10000 failed in"));
  CHECK(lines.all[5].starts_with("I requests no longer fail: maildict: cannot open database (90000 failed in"));
  log.answered(end + 4s);
  CHECK(lines.all.size() == 6);

  // A new outage starts again with one line.
  log.failed("maildict: database file missing", end + 10s);
  CHECK(lines.all.size() == 7);
}

TEST_CASE("fault log: a cause not seen for a whole interval ends without any answer") {
  Lines lines;
  FaultLog log(lines.sink(), 30s, 2s);
  auto t = FaultLog::Clock::time_point{} + 1000s;
  log.failed("a", t);
  log.failed("b", t + 1s);
  log.failed("b", t + 31s);  // the first summary: both failed in its interval
  REQUIRE(lines.all.size() == 3);
  CHECK(lines.all[2] == "W requests still failing temporarily, in the last 30.0 s: a: 1; b: 2");
  log.failed("b", t + 62s);  // the second: a is over, b goes on
  REQUIRE(lines.all.size() == 5);
  CHECK(lines.all[3].starts_with("I requests no longer fail: a (1 failed in"));
  CHECK(lines.all[4] == "W requests still failing temporarily, in the last 30.0 s: b: 1");
}

TEST_CASE("fault log: causes beyond the limit are counted together") {
  Lines lines;
  FaultLog log(lines.sink(), 30s, 2s, 3);
  auto t = FaultLog::Clock::time_point{} + 1000s;
  for (int i = 0; i < 1000; ++i) log.failed("maildict: unmapped key: k" + std::to_string(i), t + i * 1ms);
  CHECK(lines.all.size() == 3);  // the first three causes
  log.failed("x", t + 31s);
  REQUIRE(lines.all.size() == 4);
  CHECK(lines.all.back().ends_with("k2: 1; other causes: 998"));
  log.answered(t + 40s);
  REQUIRE(lines.all.size() == 8);
  CHECK(lines.all.back().starts_with("I requests no longer fail: other causes (998 failed"));
}
