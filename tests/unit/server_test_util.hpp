// Shared helpers for the server unit tests: run one lookup or iteration through LookupService
// and wait for its answer, telling whether it came at once (cache, unmapped key, overload) or
// through the pool.
#pragma once
#include <doctest/doctest.h>

#include <chrono>
#include <future>
#include <string>

#include "server/lookup_service.hpp"

namespace maildict::server::testing {

struct Looked {
  LookupAnswer answer;
  bool immediate = false;
};

inline Looked look(LookupService& service, const std::string& key) {
  std::promise<LookupAnswer> later;
  auto fut = later.get_future();
  auto now = service.lookup(key, [&later](LookupAnswer a) { later.set_value(std::move(a)); });
  if (now) return {*now, true};
  REQUIRE(fut.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  return {fut.get(), false};
}

inline IterateAnswer iterate(LookupService& service, const dict::Iterate& request) {
  std::promise<IterateAnswer> p;
  auto fut = p.get_future();
  service.iterate(request, [&p](IterateAnswer a) { p.set_value(std::move(a)); });
  REQUIRE(fut.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  return fut.get();
}

}  // namespace maildict::server::testing
