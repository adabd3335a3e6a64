#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <thread>

#include "storage/cache.hpp"

using maildict::storage::AnswerCache;
using namespace std::chrono_literals;

TEST_CASE("cache: hit while the version is unchanged") {
  AnswerCache<std::string> cache(10, 60s);
  CHECK(cache.enabled());
  CHECK_FALSE(cache.get("a", 1).has_value());
  cache.put("a", 1, "A");
  CHECK(cache.get("a", 1) == std::optional<std::string>("A"));
  CHECK(cache.size() == 1);
}

TEST_CASE("cache: a new data version evicts the entry") {
  AnswerCache<std::string> cache(10, 60s);
  cache.put("a", 1, "A");
  CHECK_FALSE(cache.get("a", 2).has_value());
  CHECK(cache.size() == 0);
  // Even going back to the old version does not resurrect it.
  CHECK_FALSE(cache.get("a", 1).has_value());
}

TEST_CASE("cache: entries expire after the TTL") {
  AnswerCache<std::string> cache(10, 5ms);
  cache.put("a", 1, "A");
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(cache.get("a", 1).has_value());
}

TEST_CASE("cache: bounded, least recently used goes first") {
  AnswerCache<int> cache(2, 60s);
  cache.put("a", 1, 1);
  cache.put("b", 1, 2);
  CHECK(cache.get("a", 1) == std::optional<int>(1));  // a is now the most recent
  cache.put("c", 1, 3);
  CHECK(cache.size() == 2);
  CHECK_FALSE(cache.get("b", 1).has_value());
  CHECK(cache.get("a", 1) == std::optional<int>(1));
  CHECK(cache.get("c", 1) == std::optional<int>(3));
}

TEST_CASE("cache: put replaces, clear empties, size 0 disables") {
  AnswerCache<int> cache(2, 60s);
  cache.put("a", 1, 1);
  cache.put("a", 2, 5);
  CHECK(cache.size() == 1);
  CHECK(cache.get("a", 2) == std::optional<int>(5));
  cache.clear();
  CHECK(cache.size() == 0);

  AnswerCache<int> off(0, 60s);
  CHECK_FALSE(off.enabled());
  off.put("a", 1, 1);
  CHECK_FALSE(off.get("a", 1).has_value());
}

TEST_CASE("AnswerCache: a per-entry TTL (negative answers) and stale answers only when configured") {
  using namespace std::chrono_literals;
  AnswerCache<std::string> strict(10, 60s);
  strict.put("k", 1, "v");
  CHECK(strict.get("k", 2) == std::nullopt);  // the data changed
  CHECK(strict.get_stale("k") == std::nullopt);  // and without a stale limit it is gone

  AnswerCache<std::string> lenient(10, 60s, 5min);
  lenient.put("k", 1, "v");
  CHECK(lenient.get("k", 2) == std::nullopt);  // a changed database is never served by get()
  auto stale = lenient.get_stale("k");
  REQUIRE(stale.has_value());
  CHECK(stale->first == "v");
  CHECK(stale->second < 5min);
  CHECK(lenient.get_stale("other") == std::nullopt);

  AnswerCache<std::string> short_negative(10, 60s);
  short_negative.put("missing", 1, "N", 0ms);  // expires at once
  short_negative.put("present", 1, "O");
  CHECK(short_negative.get("missing", 1) == std::nullopt);
  CHECK(short_negative.get("present", 1) == std::optional<std::string>("O"));
}
