// The auth policy engine: what to answer Dovecot's `allow` and what to learn from its
// `report` (specs/dovecot.md §3, landscape.md §4). Pure: no sockets and no database; time comes
// from an injectable clock so the tests can move it. Thread-safe (one mutex; every call is a few
// hash lookups).
//
// What it counts. Failed logins, over a sliding window, under three keys: the client network
// (IPv4 address, IPv6 /64), the login, and the pair. It counts *distinct* wrong passwords, told
// apart by Dovecot's `pwhash` (a salted, truncated hash of the password): a phone retrying one
// stale password is one failure, not fifty. Repeats of a known wrong password still count a
// little (one failure per `repeats_per_failure` repeats), so an endless retry loop is slowed
// too. Per network a failure is the pair (login, pwhash), so one password sprayed over many
// logins counts once per login.
//
// What it answers. For each key whose count reaches its `tarpit` threshold, a delay of
// tarpit_seconds growing by tarpit_seconds per further failure (capped at tarpit_max_seconds);
// at its `reject` threshold, a rejection. The strongest answer of the three keys wins. A
// successful login forgets that login's failures from that network. Allow-listed networks are
// neither counted nor throttled. Operator blocks (a network or a login) reject regardless.
//
// Bounded: at most max_entries keys (the least recently failed are evicted first) and a fixed
// number of distinct failures per key; at most max_blocks blocks.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "protocol/policy_codec.hpp"
#include "storage/policy_store.hpp"

namespace maildict::server {

struct PolicySettings {
  std::chrono::milliseconds window{std::chrono::minutes(10)};
  // Distinct failures within the window at which a key is tarpitted / rejected; 0 = never.
  unsigned ip_login_tarpit = 3;
  unsigned ip_login_reject = 10;
  unsigned ip_tarpit = 10;
  unsigned ip_reject = 30;
  unsigned login_tarpit = 10;
  unsigned login_reject = 0;  // off: anyone could lock a user out from anywhere
  unsigned repeats_per_failure = 10;  // 0: repeated wrong passwords never count again
  unsigned tarpit_seconds = 1;
  unsigned tarpit_max_seconds = 10;
  std::string reject_message = "Too many failed logins, try again later";
  std::vector<policy::IpNetwork> allow_networks;
  std::size_t max_entries = 100000;
  std::size_t max_blocks = 10000;
};

using WallClock = std::chrono::system_clock;  // persisted state needs wall-clock time
using NowFn = std::function<WallClock::time_point()>;

struct PolicyBlock {
  std::optional<policy::IpNetwork> network;  // exactly one of network and login
  std::string login;
  std::string reason;
  std::int64_t created_ms = 0;
  std::int64_t expires_ms = 0;  // 0: until unblocked

  std::string kind() const { return network ? "ip" : "login"; }
  std::string target() const { return network ? policy::to_string(*network) : login; }
};

// A key whose failures currently earn a tarpit or a rejection (not an operator block).
struct PolicyThrottled {
  std::string kind;    // "ip", "login" or "ip_login"
  std::string target;  // network, login, or "network|login"
  unsigned failures = 0;
  bool reject = false;           // else tarpitted
  unsigned tarpit_seconds = 0;   // when tarpitted
};

struct PolicyEngineStats {
  std::size_t entries = 0;
  std::size_t blocks = 0;
  std::uint64_t evictions = 0;
};

class PolicyEngine {
 public:
  explicit PolicyEngine(PolicySettings settings, NowFn now = [] { return WallClock::now(); });

  // Dovecot's `command=allow` (before and after authentication). Changes nothing.
  policy::Decision decide(const policy::PolicyRequest& r);
  // Dovecot's `command=report`: counts a failure or forgets failures after a success.
  void report(const policy::PolicyRequest& r);

  // Operator blocks. block() replaces an existing block of the same target; false when
  // max_blocks blocks exist already. unblock() also forgets the counters of that network or
  // login (so the unblocked client is not rejected by them at once); false if nothing was
  // blocked (the counters are forgotten anyway).
  bool block(const policy::BlockRequest& r, PolicyBlock* made = nullptr);
  // `counters_reset` (optional) tells whether any failure counters were forgotten.
  bool unblock(const policy::BlockRequest& r, bool* counters_reset = nullptr);
  std::vector<PolicyBlock> blocks();
  // Keys refused or slowed by their failure counters right now, most failures first, at most
  // `limit`: what /admin/blocks shows next to the operator blocks.
  std::vector<PolicyThrottled> throttled(std::size_t limit);

  // ---- persistence ----
  // Everything changed since the last call (also drops keys whose window has passed).
  storage::PolicyChanges take_changes();
  // At start: state read back from the store. Rows that do not parse or have expired are skipped.
  void restore(const storage::PolicyCounterRow& row);
  void restore(const storage::PolicyBlockRow& row);

  PolicyEngineStats stats();
  const PolicySettings& settings() const { return settings_; }

 private:
  struct Mark {
    std::uint64_t pw = 0;    // which wrong password (fingerprint of pwhash; per network: of login+pwhash)
    std::uint64_t peer = 0;  // the other half of the pair (login for a network key, network for a login key)
    std::int64_t last_ms = 0;
    std::uint32_t repeats = 0;
  };
  struct Entry {
    std::vector<Mark> marks;
    std::int64_t updated_ms = 0;
    std::list<std::string>::iterator lru;
  };
  enum class Scope : char { ip = 'i', login = 'l', ip_login = 'p' };

  std::int64_t now_ms() const;
  unsigned count(const std::string& key, std::int64_t now);
  void add_failure(const std::string& key, std::uint64_t pw, std::uint64_t peer, std::int64_t now);
  void forget_peer(const std::string& key, std::uint64_t peer, std::int64_t now);
  void erase(const std::string& key);
  void forget_network(const policy::IpNetwork& net);
  void forget_login(const std::string& login);
  const PolicyBlock* find_block(const policy::PolicyRequest& r, const std::optional<policy::IpAddress>& ip,
                                std::int64_t now);
  void expire_blocks(std::int64_t now);
  void sweep(std::int64_t now);
  static std::string map_key(Scope s, std::string_view key);
  bool allow_listed(const policy::IpAddress& ip) const;
  std::size_t max_marks() const;
  std::size_t marks_total() const;

  PolicySettings settings_;
  NowFn now_;
  std::mutex mutex_;
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // front: most recently failed
  std::unordered_set<std::string> dirty_;
  std::unordered_map<std::string, PolicyBlock> blocks_;  // by kind + '\n' + target
  std::unordered_set<std::string> dirty_blocks_;
  std::uint64_t evictions_ = 0;
  std::uint64_t next_unique_ = 1;
};

// Stable 64-bit fingerprint (FNV-1a); persisted, so it must not change between builds.
std::uint64_t fingerprint(std::string_view a, std::string_view b = {});

}  // namespace maildict::server
