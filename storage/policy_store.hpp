// Where the auth policy engine's state lives between restarts: its failure counters and the
// operator's blocks, in two tables of the directory database. Written once against SqlSession
// ($1..$n placeholders, portable types), so it works on SQLite and PostgreSQL alike. The store
// does not interpret a counter's `data`: the engine serializes its own state (policy_engine).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "storage/sql_session.hpp"

namespace maildict::storage {

// One tracked key of the policy engine: scope "ip", "login" or "ip_login"; key the network
// ("192.0.2.7/32", "2001:db8:1:2::/64"), the login, or "network|login".
struct PolicyCounterRow {
  std::string scope;
  std::string key;
  std::int64_t updated_ms = 0;  // Unix time in milliseconds of the newest failure in `data`
  std::string data;             // the engine's encoding of its distinct failures
};

// An operator's block: kind "ip" (target a network in CIDR form) or "login".
struct PolicyBlockRow {
  std::string kind;
  std::string target;
  std::string reason;
  std::int64_t created_ms = 0;
  std::int64_t expires_ms = 0;  // 0: until unblocked
};

struct PolicyKey {
  std::string a;  // scope (counters) or kind (blocks)
  std::string b;  // key (counters) or target (blocks)
};

// Everything that changed since the last save, as the engine hands it over.
struct PolicyChanges {
  std::vector<PolicyCounterRow> counters;   // inserted or replaced
  std::vector<PolicyKey> counters_erased;   // expired, evicted or reset
  std::vector<PolicyBlockRow> blocks;       // inserted or replaced
  std::vector<PolicyKey> blocks_erased;     // unblocked or expired

  bool empty() const {
    return counters.empty() && counters_erased.empty() && blocks.empty() && blocks_erased.empty();
  }
};

class PolicyStore {
 public:
  // The session must stay valid while the store is used; one thread at a time.
  explicit PolicyStore(SqlSession& session) : session_(session) {}

  // Creates the two tables when missing (idempotent). False with `err` on failure.
  bool prepare(SqlError& err);

  // Counters whose newest failure is at or after `since_ms` (older ones are of no use: their
  // window has passed), at most `limit` of them, newest first.
  bool load_counters(std::int64_t since_ms, std::size_t limit, std::vector<PolicyCounterRow>& out, SqlError& err);
  // Blocks that have not expired at `now_ms`.
  bool load_blocks(std::int64_t now_ms, std::vector<PolicyBlockRow>& out, SqlError& err);

  // Applies one batch of changes in one write transaction (all or nothing).
  bool save(const PolicyChanges& changes, SqlError& err);

  // Deletes counters last updated before `before_ms` and blocks expired before it (rows left by
  // a crash or by keys the engine evicted without telling, e.g. after a restart with a smaller
  // window).
  bool prune(std::int64_t before_ms, SqlError& err);

 private:
  SqlSession& session_;
};

}  // namespace maildict::storage
