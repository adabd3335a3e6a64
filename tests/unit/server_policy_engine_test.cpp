// The auth policy engine with a fake clock: escalation, distinct passwords, sprays, resets,
// allow-lists, blocks, windows, eviction and the state it hands to the store.
#include <doctest/doctest.h>

#include <string>

#include "server/policy_engine.hpp"

using namespace maildict::server;
using maildict::policy::BlockRequest;
using maildict::policy::Command;
using maildict::policy::Decision;
using maildict::policy::PolicyRequest;
using namespace std::chrono_literals;

namespace {

struct FakeClock {
  WallClock::time_point t = WallClock::time_point(std::chrono::seconds(1'800'000'000));
  NowFn fn() {
    return [this] { return t; };
  }
};

PolicyRequest req(std::string login, std::string remote, std::string pwhash) {
  PolicyRequest r;
  r.login = std::move(login);
  r.remote = std::move(remote);
  r.pwhash = std::move(pwhash);
  return r;
}

PolicyRequest failed(std::string login, std::string remote, std::string pwhash) {
  auto r = req(std::move(login), std::move(remote), std::move(pwhash));
  r.command = Command::report;
  return r;
}

PolicyRequest succeeded(std::string login, std::string remote, std::string pwhash) {
  auto r = failed(std::move(login), std::move(remote), std::move(pwhash));
  r.success = true;
  return r;
}

std::string pw(int i) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04x", i & 0xfff);
  return buf;
}

PolicySettings test_settings() {
  PolicySettings s;
  s.window = 10min;
  s.ip_login_tarpit = 3;
  s.ip_login_reject = 10;
  s.ip_tarpit = 10;
  s.ip_reject = 30;
  s.login_tarpit = 10;
  s.login_reject = 0;
  s.repeats_per_failure = 10;
  s.tarpit_seconds = 1;
  s.tarpit_max_seconds = 10;
  return s;
}

Decision::Kind kind_of(PolicyEngine& e, const PolicyRequest& r) { return e.decide(r).kind; }

}  // namespace

TEST_CASE("a fresh engine allows everyone") {
  FakeClock clock;
  PolicyEngine e(test_settings(), clock.fn());
  CHECK(kind_of(e, req("john@example.org", "192.0.2.1", "0834")) == Decision::Kind::allow);
  CHECK(kind_of(e, req("", "", "")) == Decision::Kind::allow);
}

TEST_CASE("wrong passwords from one IP for one login: allow, then tarpit growing, then reject") {
  FakeClock clock;
  PolicyEngine e(test_settings(), clock.fn());
  auto ask = req("john@example.org", "192.0.2.1", "0000");
  std::vector<Decision> seen;
  for (int i = 0; i < 20; ++i) {
    seen.push_back(e.decide(ask));
    e.report(failed("john@example.org", "192.0.2.1", pw(i)));
    clock.t += 1s;
  }
  // 0..2 failures: allow; 3..9: tarpit 1..7 s; 10+: reject
  for (int i = 0; i < 3; ++i) CHECK(seen[i].kind == Decision::Kind::allow);
  for (int i = 3; i < 10; ++i) {
    CHECK(seen[i].kind == Decision::Kind::tarpit);
    CHECK(seen[i].seconds == i - 2);
  }
  for (int i = 10; i < 20; ++i) {
    CHECK(seen[i].kind == Decision::Kind::reject);
    CHECK(seen[i].message == test_settings().reject_message);
  }
  // another user from another IP is not affected
  CHECK(kind_of(e, req("jane@example.org", "198.51.100.7", "1234")) == Decision::Kind::allow);
  // the same user from another IP: the per-login count (20 >= 10) tarpits, it does not reject
  auto other = e.decide(req("john@example.org", "198.51.100.7", "1234"));
  CHECK(other.kind == Decision::Kind::tarpit);
  CHECK(other.seconds == 10);  // capped at tarpit_max_seconds
}

TEST_CASE("the tarpit is capped") {
  FakeClock clock;
  auto s = test_settings();
  s.ip_login_reject = 0;
  s.tarpit_max_seconds = 4;
  PolicyEngine e(s, clock.fn());
  for (int i = 0; i < 9; ++i) e.report(failed("a", "192.0.2.1", pw(i)));
  CHECK(e.decide(req("a", "192.0.2.1", "x")).seconds == 4);
}

TEST_CASE("after the window, the IP may log in again") {
  FakeClock clock;
  PolicyEngine e(test_settings(), clock.fn());
  for (int i = 0; i < 15; ++i) e.report(failed("john", "192.0.2.1", pw(i)));
  CHECK(kind_of(e, req("john", "192.0.2.1", "x")) == Decision::Kind::reject);
  clock.t += 9min;
  CHECK(kind_of(e, req("john", "192.0.2.1", "x")) == Decision::Kind::reject);
  clock.t += 1min + 1ms;
  CHECK(kind_of(e, req("john", "192.0.2.1", "x")) == Decision::Kind::allow);
}

TEST_CASE("the window slides: old failures drop out one by one") {
  FakeClock clock;
  PolicyEngine e(test_settings(), clock.fn());
  for (int i = 0; i < 10; ++i) {
    e.report(failed("john", "192.0.2.1", pw(i)));
    clock.t += 1min;
  }
  // failures at t0+0..9 min; now t0+10 min: the first has just left the window
  auto d = e.decide(req("john", "192.0.2.1", "x"));
  CHECK(d.kind == Decision::Kind::tarpit);
  CHECK(d.seconds == 7);  // 9 failures
}

TEST_CASE("one stale password retried 50 times is throttled less than 50 distinct ones") {
  FakeClock clock;
  PolicyEngine e(test_settings(), clock.fn());
  for (int i = 0; i < 50; ++i) {
    e.report(failed("phone@example.org", "192.0.2.1", "0abc"));
    e.report(failed("guesser@example.org", "192.0.2.2", pw(i)));
    clock.t += 1s;
  }
  auto stale = e.decide(req("phone@example.org", "192.0.2.1", "0abc"));
  auto spray = e.decide(req("guesser@example.org", "192.0.2.2", "0fff"));
  CHECK(spray.kind == Decision::Kind::reject);
  CHECK(stale.kind != Decision::Kind::reject);
  // 1 distinct + 49 repeats / 10 = 5 -> tarpit 3 s at the 3-failure threshold
  CHECK(stale.kind == Decision::Kind::tarpit);
  CHECK(stale.seconds == 3);
}

TEST_CASE("repeats_per_failure = 0: repeats never count") {
  FakeClock clock;
  auto s = test_settings();
  s.repeats_per_failure = 0;
  PolicyEngine e(s, clock.fn());
  for (int i = 0; i < 100; ++i) e.report(failed("phone", "192.0.2.1", "0abc"));
  CHECK(kind_of(e, req("phone", "192.0.2.1", "0abc")) == Decision::Kind::allow);
}

TEST_CASE("one password sprayed over 50 logins from one IP is rejected") {
  FakeClock clock;
  PolicyEngine e(test_settings(), clock.fn());
  for (int i = 0; i < 50; ++i) {
    // the same password gives a different pwhash per login (the login is hashed in)
    e.report(failed("user" + std::to_string(i) + "@example.org", "203.0.113.9", pw(i * 7)));
  }
  CHECK(kind_of(e, req("user99@example.org", "203.0.113.9", "0123")) == Decision::Kind::reject);
  CHECK(kind_of(e, req("user99@example.org", "203.0.113.10", "0123")) == Decision::Kind::allow);
}

TEST_CASE("IPv6 clients are counted per /64") {
  FakeClock clock;
  PolicyEngine e(test_settings(), clock.fn());
  for (int i = 0; i < 40; ++i) {
    char ip[64];
    std::snprintf(ip, sizeof ip, "2001:db8:1:2::%x", i + 1);
    e.report(failed("u" + std::to_string(i), ip, pw(i)));
  }
  CHECK(kind_of(e, req("x", "2001:db8:1:2:ffff::1", "0001")) == Decision::Kind::reject);
  CHECK(kind_of(e, req("x", "2001:db8:1:3::1", "0001")) == Decision::Kind::allow);
}

TEST_CASE("a success forgets that login's failures from that IP only") {
  FakeClock clock;
  PolicyEngine e(test_settings(), clock.fn());
  for (int i = 0; i < 5; ++i) {
    e.report(failed("john", "192.0.2.1", pw(i)));
    e.report(failed("john", "198.51.100.1", pw(100 + i)));
  }
  for (int i = 0; i < 9; ++i) e.report(failed("jane", "192.0.2.1", pw(200 + i)));
  CHECK(kind_of(e, req("john", "192.0.2.1", "x")) == Decision::Kind::tarpit);
  e.report(succeeded("john", "192.0.2.1", "0834"));
  // john from 192.0.2.1: pair reset; john's login count now 5 (< 10) and the IP's 9 (< 10)
  CHECK(kind_of(e, req("john", "192.0.2.1", "x")) == Decision::Kind::allow);
  // john from the other IP still has its own 5 failures
  CHECK(kind_of(e, req("john", "198.51.100.1", "x")) == Decision::Kind::tarpit);
  // jane's failures from 192.0.2.1 are untouched
  CHECK(kind_of(e, req("jane", "192.0.2.1", "x")) == Decision::Kind::tarpit);
}

TEST_CASE("allow-listed networks are neither counted nor throttled") {
  FakeClock clock;
  auto s = test_settings();
  s.allow_networks.push_back(*maildict::policy::parse_network("10.0.0.0/8"));
  PolicyEngine e(s, clock.fn());
  for (int i = 0; i < 50; ++i) e.report(failed("john", "10.1.2.3", pw(i)));
  CHECK(kind_of(e, req("john", "10.1.2.3", "x")) == Decision::Kind::allow);
  // not counted: the login is not throttled from elsewhere either
  CHECK(kind_of(e, req("john", "192.0.2.1", "x")) == Decision::Kind::allow);
  CHECK(e.stats().entries == 0);
}

TEST_CASE("internal failures (Dovecot 2.4 fail_type) are not counted") {
  FakeClock clock;
  PolicyEngine e(test_settings(), clock.fn());
  for (int i = 0; i < 50; ++i) {
    auto r = failed("john", "192.0.2.1", pw(i));
    r.fail_type = "internal";
    e.report(r);
  }
  CHECK(kind_of(e, req("john", "192.0.2.1", "x")) == Decision::Kind::allow);
}

TEST_CASE("without pwhash every failure counts as a new password") {
  FakeClock clock;
  PolicyEngine e(test_settings(), clock.fn());
  for (int i = 0; i < 10; ++i) {
    auto r = failed("john", "192.0.2.1", "");
    r.pwhash.reset();
    e.report(r);
  }
  CHECK(kind_of(e, req("john", "192.0.2.1", "x")) == Decision::Kind::reject);
}

TEST_CASE("manual blocks: network and login, expiry, unblock clears counters") {
  FakeClock clock;
  auto s = test_settings();
  s.allow_networks.push_back(*maildict::policy::parse_network("10.0.0.0/8"));
  PolicyEngine e(s, clock.fn());
  BlockRequest net;
  net.network = maildict::policy::parse_network("203.0.113.0/24");
  net.reason = "abuse";
  REQUIRE(e.block(net));
  CHECK(kind_of(e, req("john", "203.0.113.77", "x")) == Decision::Kind::reject);
  CHECK(kind_of(e, req("john", "203.0.114.1", "x")) == Decision::Kind::allow);

  BlockRequest login;
  login.login = "jane@example.org";
  login.seconds = 60;
  REQUIRE(e.block(login));
  // a block beats the allow-list
  CHECK(kind_of(e, req("jane@example.org", "10.0.0.1", "x")) == Decision::Kind::reject);
  CHECK(e.blocks().size() == 2);
  clock.t += 61s;
  CHECK(kind_of(e, req("jane@example.org", "10.0.0.1", "x")) == Decision::Kind::allow);
  CHECK(e.blocks().size() == 1);

  // counters for a network are forgotten on unblock (the login's own count stays: 12 >= 10)
  for (int i = 0; i < 12; ++i) e.report(failed("john", "203.0.113.5", pw(i)));
  CHECK(e.unblock(net));
  CHECK(kind_of(e, req("john", "203.0.113.5", "x")) == Decision::Kind::tarpit);
  CHECK(kind_of(e, req("jim", "203.0.113.5", "x")) == Decision::Kind::allow);
  CHECK_FALSE(e.unblock(net));
  // and for a login
  for (int i = 0; i < 12; ++i) e.report(failed("bob", "192.0.2.9", pw(i)));
  CHECK(kind_of(e, req("bob", "192.0.2.9", "x")) == Decision::Kind::reject);
  BlockRequest bob;
  bob.login = "bob";
  CHECK_FALSE(e.unblock(bob));
  CHECK(kind_of(e, req("bob", "192.0.2.9", "x")) == Decision::Kind::allow);
}

TEST_CASE("throttled keys are listed; unblock says whether it reset counters") {
  FakeClock clock;
  PolicyEngine e(test_settings(), clock.fn());
  CHECK(e.throttled(10).empty());
  // 12 distinct wrong passwords for bob from one address: the pair is rejected (>= 10), the
  // network (>= 10) and the login (>= 10) are tarpitted
  for (int i = 0; i < 12; ++i) e.report(failed("bob", "192.0.2.9", pw(i)));
  REQUIRE(kind_of(e, req("bob", "192.0.2.9", "x")) == Decision::Kind::reject);
  CHECK(e.blocks().empty());  // no operator block: the refusal comes from the counters
  auto t = e.throttled(10);
  REQUIRE(t.size() == 3);
  CHECK(t[0].kind == "ip");
  CHECK(t[0].target == "192.0.2.9/32");
  CHECK(t[0].failures == 12);
  CHECK_FALSE(t[0].reject);
  CHECK(t[0].tarpit_seconds == 3);
  CHECK(t[1].kind == "ip_login");
  CHECK(t[1].target == "192.0.2.9/32|bob");
  CHECK(t[1].reject);
  CHECK(t[2].kind == "login");
  CHECK(t[2].target == "bob");
  CHECK(e.throttled(1).size() == 1);
  // two failures of alice: below every threshold, not listed
  for (int i = 0; i < 2; ++i) e.report(failed("alice", "198.51.100.1", pw(i)));
  CHECK(e.throttled(10).size() == 3);

  BlockRequest bob;
  bob.login = "bob";
  bool reset = false;
  CHECK_FALSE(e.unblock(bob, &reset));  // no operator block was there...
  CHECK(reset);                         // ...but the counters were forgotten
  CHECK(kind_of(e, req("bob", "192.0.2.9", "x")) == Decision::Kind::allow);
  CHECK_FALSE(e.unblock(bob, &reset));
  CHECK_FALSE(reset);                   // nothing left to forget
  CHECK(e.throttled(10).empty());       // bob's failures are forgotten everywhere
  for (int i = 0; i < 3; ++i) e.report(failed("carol", "192.0.2.10", pw(i)));
  REQUIRE(e.throttled(10).size() == 1);  // the pair, tarpitted at 3
  clock.t += 11min;
  CHECK(e.throttled(10).empty());       // out of the window
}

TEST_CASE("the number of blocks is bounded") {
  FakeClock clock;
  auto s = test_settings();
  s.max_blocks = 2;
  PolicyEngine e(s, clock.fn());
  BlockRequest b;
  for (auto l : {"a", "b"}) {
    b.login = l;
    CHECK(e.block(b));
  }
  b.login = "c";
  CHECK_FALSE(e.block(b));
  b.login = "a";  // replacing an existing one is fine
  CHECK(e.block(b));
}

TEST_CASE("memory is bounded: the least recently failed keys are evicted") {
  FakeClock clock;
  auto s = test_settings();
  s.max_entries = 30;
  PolicyEngine e(s, clock.fn());
  for (int i = 0; i < 12; ++i) e.report(failed("old", "192.0.2.1", pw(i)));
  CHECK(kind_of(e, req("old", "192.0.2.1", "x")) == Decision::Kind::reject);
  for (int i = 0; i < 100; ++i) {
    clock.t += 1s;
    e.report(failed("u" + std::to_string(i), "198.51.100." + std::to_string(i), "0001"));
  }
  auto st = e.stats();
  CHECK(st.entries <= 30);
  CHECK(st.evictions > 0);
  CHECK(kind_of(e, req("old", "192.0.2.1", "x")) == Decision::Kind::allow);
}

TEST_CASE("distinct failures per key are bounded") {
  FakeClock clock;
  PolicyEngine e(test_settings(), clock.fn());
  for (int i = 0; i < 5000; ++i) e.report(failed("john", "192.0.2.1", std::to_string(i)));
  auto c = e.take_changes();
  for (const auto& row : c.counters) CHECK(std::count(row.data.begin(), row.data.end(), ',') < 64);
  CHECK(kind_of(e, req("john", "192.0.2.1", "x")) == Decision::Kind::reject);
}

TEST_CASE("state round-trips through the store's rows") {
  FakeClock clock;
  PolicyEngine a(test_settings(), clock.fn());
  for (int i = 0; i < 12; ++i) a.report(failed("john", "192.0.2.1", pw(i)));
  for (int i = 0; i < 5; ++i) a.report(failed("jane", "2001:db8::1", pw(i)));
  BlockRequest b;
  b.network = maildict::policy::parse_network("203.0.113.0/24");
  b.reason = "ticket";
  REQUIRE(a.block(b));
  auto changes = a.take_changes();
  CHECK(changes.counters.size() == 6);  // 2 x (ip, login, ip_login)
  CHECK(changes.blocks.size() == 1);
  CHECK(a.take_changes().empty());  // nothing new

  clock.t += 1min;
  PolicyEngine restored(test_settings(), clock.fn());
  for (const auto& row : changes.counters) restored.restore(row);
  for (const auto& row : changes.blocks) restored.restore(row);
  CHECK(kind_of(restored, req("john", "192.0.2.1", "x")) == Decision::Kind::reject);
  CHECK(restored.decide(req("jane", "2001:db8::2", "x")).kind == Decision::Kind::tarpit);
  CHECK(kind_of(restored, req("x", "203.0.113.1", "x")) == Decision::Kind::reject);
  CHECK(restored.blocks().at(0).reason == "ticket");
  CHECK(restored.take_changes().empty());  // restoring is not a change

  // expired rows and garbage are skipped
  clock.t += 10min;
  PolicyEngine later(test_settings(), clock.fn());
  for (const auto& row : changes.counters) later.restore(row);
  later.restore(maildict::storage::PolicyCounterRow{"ip", "192.0.2.9/32", 0, "zz:1:2"});
  later.restore(maildict::storage::PolicyCounterRow{"ip", "not-an-ip", 0, "1:1:1:1"});
  later.restore(maildict::storage::PolicyCounterRow{"nope", "x", 0, "1:1:1:1"});
  later.restore(maildict::storage::PolicyBlockRow{"ip", "1.2.3.4/8", "", 0, 0});
  CHECK(later.stats().entries == 0);
  CHECK(later.stats().blocks == 0);
}

TEST_CASE("changes: expired keys, resets and unblocks are erased from the store") {
  FakeClock clock;
  PolicyEngine e(test_settings(), clock.fn());
  e.report(failed("john", "192.0.2.1", "0001"));
  e.report(failed("jane", "192.0.2.2", "0001"));
  (void)e.take_changes();
  e.report(succeeded("john", "192.0.2.1", "0002"));
  auto c = e.take_changes();
  CHECK(c.counters_erased.size() == 3);
  clock.t += 11min;
  c = e.take_changes();
  CHECK(c.counters_erased.size() == 3);  // jane's keys have expired
  CHECK(e.stats().entries == 0);

  BlockRequest b;
  b.login = "x";
  e.block(b);
  (void)e.take_changes();
  e.unblock(b);
  c = e.take_changes();
  REQUIRE(c.blocks_erased.size() == 1);
  CHECK(c.blocks_erased[0].a == "login");
  CHECK(c.blocks_erased[0].b == "x");
}

TEST_CASE("unknown accounts (Dovecot 2.4 fail_type=account) count for the network only") {
  FakeClock clock;
  PolicyEngine e(test_settings(), clock.fn());
  // 20 made-up names, one password each, from one address
  for (int i = 0; i < 20; ++i) {
    auto r = failed("nobody" + std::to_string(i) + "@example.org", "192.0.2.1", pw(i));
    r.fail_type = "account";
    e.report(r);
  }
  // the network is throttled (ip_tarpit 10) ...
  CHECK(kind_of(e, req("someone@example.org", "192.0.2.1", "x")) == Decision::Kind::tarpit);
  // ... but no login or pair key was made for names that do not exist: one network key
  CHECK(e.stats().entries == 1);
  // the same name from elsewhere is not affected
  CHECK(kind_of(e, req("nobody1@example.org", "198.51.100.1", "x")) == Decision::Kind::allow);

  // a wrong password for a real account still counts everywhere (ip_login_tarpit 3)
  PolicyEngine e2(test_settings(), clock.fn());
  for (int i = 0; i < 3; ++i) {
    auto r = failed("john@example.org", "192.0.2.2", pw(i));
    r.fail_type = "credentials";
    e2.report(r);
  }
  CHECK(kind_of(e2, req("john@example.org", "192.0.2.2", "x")) == Decision::Kind::tarpit);
  CHECK(e2.stats().entries == 3);
}

TEST_CASE("one unknown name retried counts once for the network") {
  FakeClock clock;
  PolicyEngine e(test_settings(), clock.fn());
  // 15 distinct names would reach ip_tarpit (10); 15 repeats of one name and password do not
  for (int i = 0; i < 15; ++i) {
    auto r = failed("ghost@example.org", "192.0.2.3", "0aaa");
    r.fail_type = "account";
    e.report(r);
  }
  CHECK(kind_of(e, req("ghost@example.org", "192.0.2.3", "x")) == Decision::Kind::allow);
}
