// One lookup from key to answer: classify the key, serve it from the cache when the database
// has not changed, otherwise run it on the pool (DESIGN.md §5). No sockets here: the caller
// gets the answer either at once or through a callback on a pool thread.
#pragma once
#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/dict_codec.hpp"
#include "server/directory_answers.hpp"
#include "server/fault_log.hpp"
#include "server/passdb_outcomes.hpp"
#include "storage/cache.hpp"
#include "storage/pool.hpp"

namespace maildict::server {

struct LookupStats {
  std::uint64_t cache_hits = 0;
  std::uint64_t queued = 0;
};

class LookupService {
 public:
  LookupService(storage::DirectoryBackend& backend, storage::Pool& pool, std::size_t cache_entries,
                std::chrono::milliseconds cache_ttl, std::chrono::milliseconds request_timeout,
                std::chrono::milliseconds negative_ttl = std::chrono::milliseconds(10000),
                std::chrono::milliseconds serve_stale = std::chrono::milliseconds(0));

  // Called (on a pool thread) each time a stale answer is served because the database could
  // not answer: key excerpt, age, why the database failed. The daemon logs it.
  void on_stale_answer(std::function<void(const std::string&, std::chrono::milliseconds, const std::string&)> f) {
    on_stale_ = std::move(f);
  }

  // Every temporary failure is reported there (by cause, a few lines per outage), and every
  // answer the database gave; the object must outlive this service. Set before the first lookup.
  void report_faults(FaultLog& faults) { faults_ = &faults; }

  // Each passdb lookup's outcome is noted there (for the auth policy); the object must outlive
  // this service. Set before the first lookup.
  void note_passdb_outcomes(PassdbOutcomes& outcomes) { outcomes_ = &outcomes; }
  // The caller answered `key` with a temporary failure of its own (its backstop timer fired
  // before the pool answered).
  void note_timed_out(std::string_view key);

  // Returns the answer when it needs no database (cache hit, unmapped key, overload);
  // otherwise returns nullopt and calls `done` later, on a pool thread, exactly once.
  std::optional<LookupAnswer> lookup(std::string_view key, std::function<void(LookupAnswer)> done);

  // Lookups handed to the pool and not answered yet (queued or running): the pool's use.
  std::size_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

  // Forgets every cached answer (SIGHUP).
  void clear_cache() { cache_.clear(); }

  // Answers an iteration; `done` is called exactly once (maybe at once, on the caller's thread).
  void iterate(const dict::Iterate& request, std::function<void(IterateAnswer)> done);

 private:
  storage::Deadline deadline() const { return storage::Clock::now() + request_timeout_; }
  std::optional<LookupAnswer> lookup_uncounted(std::string_view key, std::function<void(LookupAnswer)> done);

  storage::DirectoryBackend& backend_;
  storage::Pool& pool_;
  // A temporary failure answered from an out-of-date cache entry, when configured; nullopt
  // when there is none young enough.
  std::optional<LookupAnswer> stale_answer(const std::string& key, const std::string& why);

  storage::AnswerCache<LookupAnswer> cache_;
  std::chrono::milliseconds request_timeout_;
  std::chrono::milliseconds negative_ttl_;
  std::function<void(const std::string&, std::chrono::milliseconds, const std::string&)> on_stale_;
  std::atomic<std::size_t> in_flight_{0};
  PassdbOutcomes* outcomes_ = nullptr;
  FaultLog* faults_ = nullptr;
};

// A short, printable excerpt of untrusted text for error messages and logs.
std::string printable_excerpt(std::string_view text, std::size_t max = 128);

}  // namespace maildict::server
