// PassdbOutcomes: which logins maildict could not look up a moment ago (for the auth policy).
#include <doctest/doctest.h>

#include "server/passdb_outcomes.hpp"

using maildict::server::PassdbOutcomes;
using namespace std::chrono_literals;

TEST_CASE("only the latest outcome of a login counts, within the given time") {
  PassdbOutcomes o;
  const auto t0 = PassdbOutcomes::Clock::time_point(100s);
  CHECK_FALSE(o.failed_recently("john@example.org", 60s, t0));
  o.note_failed("john@example.org", t0);
  CHECK(o.failed_recently("john@example.org", 60s, t0 + 5s));
  CHECK_FALSE(o.failed_recently("jane@example.org", 60s, t0 + 5s));
  // too long ago: forgotten
  CHECK_FALSE(o.failed_recently("john@example.org", 60s, t0 + 61s));
  CHECK(o.size() == 0);

  // a later answered lookup wins over an earlier failure
  o.note_failed("john@example.org", t0);
  o.note_answered("john@example.org");
  CHECK_FALSE(o.failed_recently("john@example.org", 60s, t0 + 1s));
  // and a later failure over an earlier answer
  o.note_failed("john@example.org", t0 + 2s);
  CHECK(o.failed_recently("john@example.org", 60s, t0 + 3s));
}

TEST_CASE("both spellings and any case name the same login") {
  PassdbOutcomes o;
  const auto t0 = PassdbOutcomes::Clock::time_point(100s);
  o.note_failed("John_Example.org", t0);
  CHECK(o.failed_recently("john@example.org", 60s, t0));
  CHECK(o.failed_recently("JOHN@EXAMPLE.ORG", 60s, t0));
  o.note_answered("john@EXAMPLE.org");
  CHECK_FALSE(o.failed_recently("john_example.org", 60s, t0));
  // not a login at all: lower-cased as it is
  o.note_failed("Admin", t0);
  CHECK(o.failed_recently("admin", 60s, t0));
  CHECK(PassdbOutcomes::normal_form("john_doe_Example.org") == "john_doe@example.org");
}

TEST_CASE("bounded: the oldest failures are dropped first") {
  PassdbOutcomes o(3);
  const auto t0 = PassdbOutcomes::Clock::time_point(100s);
  for (int i = 0; i < 5; ++i) o.note_failed("u" + std::to_string(i) + "@d.example", t0 + std::chrono::seconds(i));
  CHECK(o.size() == 3);
  CHECK_FALSE(o.failed_recently("u0@d.example", 60s, t0 + 5s));
  CHECK_FALSE(o.failed_recently("u1@d.example", 60s, t0 + 5s));
  CHECK(o.failed_recently("u2@d.example", 60s, t0 + 5s));
  CHECK(o.failed_recently("u4@d.example", 60s, t0 + 5s));
  // a login failing again moves to the young end
  o.note_failed("u2@d.example", t0 + 6s);
  o.note_failed("u5@d.example", t0 + 7s);
  CHECK(o.failed_recently("u2@d.example", 60s, t0 + 7s));
  CHECK_FALSE(o.failed_recently("u3@d.example", 60s, t0 + 7s));
}
