#include "storage/policy_store.hpp"

#include <charconv>

namespace maildict::storage {
namespace {

// Portable DDL: TEXT and BIGINT exist in both SQLite and PostgreSQL; composite primary keys
// give the ON CONFLICT targets the upserts need (SQLite >= 3.24, PostgreSQL >= 9.5).
constexpr std::string_view create_counters =
    "CREATE TABLE IF NOT EXISTS policy_counters ("
    " scope TEXT NOT NULL,"
    " key TEXT NOT NULL,"
    " updated_ms BIGINT NOT NULL,"
    " data TEXT NOT NULL,"
    " PRIMARY KEY (scope, key))";
constexpr std::string_view create_counters_index =
    "CREATE INDEX IF NOT EXISTS policy_counters_updated ON policy_counters (updated_ms)";
constexpr std::string_view create_blocks =
    "CREATE TABLE IF NOT EXISTS policy_blocks ("
    " kind TEXT NOT NULL,"
    " target TEXT NOT NULL,"
    " reason TEXT NOT NULL,"
    " created_ms BIGINT NOT NULL,"
    " expires_ms BIGINT NOT NULL,"
    " PRIMARY KEY (kind, target))";

constexpr std::string_view upsert_counter =
    "INSERT INTO policy_counters (scope, key, updated_ms, data) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (scope, key) DO UPDATE SET updated_ms = excluded.updated_ms, data = excluded.data";
constexpr std::string_view delete_counter = "DELETE FROM policy_counters WHERE scope = $1 AND key = $2";
constexpr std::string_view upsert_block =
    "INSERT INTO policy_blocks (kind, target, reason, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (kind, target) DO UPDATE SET reason = excluded.reason, created_ms = excluded.created_ms,"
    " expires_ms = excluded.expires_ms";
constexpr std::string_view delete_block = "DELETE FROM policy_blocks WHERE kind = $1 AND target = $2";

std::int64_t to_int(const SqlValue& v) {
  std::int64_t n = 0;
  if (v) std::from_chars(v->data(), v->data() + v->size(), n);
  return n;
}

std::string text(const SqlValue& v) { return v ? *v : std::string(); }

}  // namespace

bool PolicyStore::prepare(SqlError& err) {
  for (auto sql : {create_counters, create_counters_index, create_blocks})
    if (!run(session_, sql, {}, nullptr, err)) return false;
  return true;
}

bool PolicyStore::load_counters(std::int64_t since_ms, std::size_t limit, std::vector<PolicyCounterRow>& out,
                                SqlError& err) {
  SqlRows rows;
  if (!run(session_,
           "SELECT scope, key, updated_ms, data FROM policy_counters WHERE updated_ms >= $1"
           " ORDER BY updated_ms DESC LIMIT $2",
           {std::to_string(since_ms), std::to_string(limit)}, &rows, err))
    return false;
  out.reserve(out.size() + rows.size());
  for (auto& r : rows) {
    if (r.size() != 4) continue;
    out.push_back(PolicyCounterRow{text(r[0]), text(r[1]), to_int(r[2]), text(r[3])});
  }
  return true;
}

bool PolicyStore::load_blocks(std::int64_t now_ms, std::vector<PolicyBlockRow>& out, SqlError& err) {
  SqlRows rows;
  if (!run(session_,
           "SELECT kind, target, reason, created_ms, expires_ms FROM policy_blocks"
           " WHERE expires_ms = 0 OR expires_ms > $1 ORDER BY created_ms",
           {std::to_string(now_ms)}, &rows, err))
    return false;
  for (auto& r : rows) {
    if (r.size() != 5) continue;
    out.push_back(PolicyBlockRow{text(r[0]), text(r[1]), text(r[2]), to_int(r[3]), to_int(r[4])});
  }
  return true;
}

bool PolicyStore::save(const PolicyChanges& c, SqlError& err) {
  if (c.empty()) return true;
  if (!session_.begin(SessionRole::write, err)) return false;
  auto fail = [&] {
    session_.rollback();
    return false;
  };
  for (const auto& k : c.counters_erased)
    if (!run(session_, delete_counter, {k.a, k.b}, nullptr, err)) return fail();
  for (const auto& r : c.counters)
    if (!run(session_, upsert_counter, {r.scope, r.key, std::to_string(r.updated_ms), r.data}, nullptr, err))
      return fail();
  for (const auto& k : c.blocks_erased)
    if (!run(session_, delete_block, {k.a, k.b}, nullptr, err)) return fail();
  for (const auto& b : c.blocks)
    if (!run(session_, upsert_block,
             {b.kind, b.target, b.reason, std::to_string(b.created_ms), std::to_string(b.expires_ms)}, nullptr, err))
      return fail();
  if (!session_.commit(err)) return fail();
  return true;
}

bool PolicyStore::prune(std::int64_t before_ms, SqlError& err) {
  std::string t = std::to_string(before_ms);
  return run(session_, "DELETE FROM policy_counters WHERE updated_ms < $1", {t}, nullptr, err) &&
         run(session_, "DELETE FROM policy_blocks WHERE expires_ms <> 0 AND expires_ms < $1", {t}, nullptr, err);
}

}  // namespace maildict::storage
