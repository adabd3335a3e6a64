#include "server/lookup_service.hpp"

#include "server/metrics.hpp"

namespace maildict::server {

std::string printable_excerpt(std::string_view text, std::size_t max) {
  std::string out;
  out.reserve(std::min(text.size(), max) + 3);
  for (std::size_t i = 0; i < text.size() && i < max; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    out.push_back(c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?');
  }
  if (text.size() > max) out += "...";
  return out;
}

LookupService::LookupService(storage::DirectoryBackend& backend, storage::Pool& pool,
                             std::size_t cache_entries, std::chrono::milliseconds cache_ttl,
                             std::chrono::milliseconds request_timeout, std::chrono::milliseconds negative_ttl,
                             std::chrono::milliseconds serve_stale)
    : backend_(backend),
      pool_(pool),
      cache_(cache_entries, cache_ttl, serve_stale),
      request_timeout_(request_timeout),
      negative_ttl_(std::min(negative_ttl, cache_ttl)) {}

std::optional<LookupAnswer> LookupService::stale_answer(const std::string& key, const std::string& why) {
  auto stale = cache_.get_stale(key);
  if (!stale) return std::nullopt;
  if (on_stale_)
    on_stale_(printable_excerpt(key), std::chrono::duration_cast<std::chrono::milliseconds>(stale->second), why);
  return std::move(stale->first);
}

namespace {
// Counts an answer by outcome and its latency (GET /metrics on the policy listener).
LookupAnswer counted(LookupAnswer a, std::chrono::steady_clock::time_point start) {
  auto& m = metrics();
  switch (a.kind) {
    case LookupAnswer::Kind::found: m.lookup_found.inc(); break;
    case LookupAnswer::Kind::not_found: m.lookup_not_found.inc(); break;
    case LookupAnswer::Kind::failed: m.lookup_failed.inc(); break;
  }
  m.lookup_latency.observe(std::chrono::steady_clock::now() - start);
  return a;
}
}  // namespace

std::optional<LookupAnswer> LookupService::lookup(std::string_view key,
                                                  std::function<void(LookupAnswer)> done) {
  const auto start = std::chrono::steady_clock::now();
  // Which passdb login this is, when the policy wants to know (a stale answer served during an
  // outage counts as answered: Dovecot checked the password against it).
  std::string passdb_login;
  if (outcomes_ && key.starts_with("shared/passdb/")) {
    auto question = dict::classify_lookup_key(key);
    if (auto* p = std::get_if<dict::PassdbQuestion>(&question)) passdb_login = std::move(p->login);
  }
  auto note = [this, passdb_login](const LookupAnswer& a) {
    // A cache hit counts as an answer too: it proves the database's version could be read, and
    // once the cache is warm most answers are hits.
    if (faults_) {
      if (a.kind == LookupAnswer::Kind::failed) faults_->failed(a.text);
      else faults_->answered();
    }
    if (passdb_login.empty()) return;
    if (a.kind == LookupAnswer::Kind::failed) outcomes_->note_failed(passdb_login);
    else outcomes_->note_answered(passdb_login);
  };
  auto answer = lookup_uncounted(key, [start, note, done = std::move(done)](LookupAnswer a) {
    note(a);
    done(counted(std::move(a), start));
  });
  if (answer) {
    note(*answer);
    return counted(std::move(*answer), start);
  }
  return std::nullopt;
}

void LookupService::note_timed_out(std::string_view key) {
  if (!outcomes_ || !key.starts_with("shared/passdb/")) return;
  auto question = dict::classify_lookup_key(key);
  if (auto* p = std::get_if<dict::PassdbQuestion>(&question)) outcomes_->note_failed(p->login);
}

std::optional<LookupAnswer> LookupService::lookup_uncounted(std::string_view key,
                                                            std::function<void(LookupAnswer)> done) {
  auto question = dict::classify_lookup_key(key);
  if (std::holds_alternative<dict::UnmappedKey>(question))
    return LookupAnswer::failed("maildict: unmapped key: " + printable_excerpt(key));
  // No database work (and no cache entry) for a service that has no data behind it.
  if (auto* smtpd = std::get_if<dict::SmtpdQuestion>(&question); smtpd && !smtpd_service_served(smtpd->service))
    return LookupAnswer::failed("maildict: smtpd service not served: " + printable_excerpt(smtpd->service, 64));

  // The version is read before the query: if the data changes while the query runs, the entry
  // carries the older version and the next lookup misses, which is the safe direction.
  std::optional<std::uint64_t> version;
  if (cache_.enabled()) {
    version = backend_.data_version();
    if (version) {
      if (auto hit = cache_.get(key, *version)) {
        metrics().cache_hits.inc();
        return hit;
      }
    }
    metrics().cache_misses.inc();
  }

  auto job = [this, question = std::move(question), key = std::string(key), version,
              done = std::move(done)](storage::DirectoryConnection* conn, const std::string& why) mutable {
    struct Leave {
      std::atomic<std::size_t>& n;
      ~Leave() { n.fetch_sub(1, std::memory_order_relaxed); }
    } leave{in_flight_};
    if (!conn) {
      if (auto stale = stale_answer(key, why)) return done(std::move(*stale));
      done(LookupAnswer::failed("maildict: " + why));
      return;
    }
    auto answer = answer_question(*conn, question, key, deadline());
    if (answer.kind == LookupAnswer::Kind::failed) {
      if (auto stale = stale_answer(key, answer.text)) return done(std::move(*stale));
    } else if (version) {
      std::optional<storage::Clock::duration> ttl;
      if (answer.kind == LookupAnswer::Kind::not_found) ttl = negative_ttl_;
      cache_.put(key, *version, answer, ttl);
    }
    done(std::move(answer));
  };
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  if (!pool_.submit(deadline(), std::move(job))) {
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    metrics().pool_rejected.inc();
    const std::string why = "maildict: overloaded, too many requests waiting for the database";
    if (auto stale = stale_answer(std::string(key), why)) return stale;
    return LookupAnswer::failed(why);
  }
  return std::nullopt;
}

void LookupService::iterate(const dict::Iterate& request, std::function<void(IterateAnswer)> done) {
  auto fail = [&](std::string why) {
    IterateAnswer a;
    a.failed = true;
    a.error = std::move(why);
    done(std::move(a));
  };
  if (request.flags & dict::iterate_exact_key) {
    // EXACT_KEY asks for all values of one key: the lookup answer as a single row.
    std::string key = request.path;
    auto to_rows = [key, no_value = (request.flags & dict::iterate_no_value) != 0](LookupAnswer a) {
      IterateAnswer out;
      if (a.kind == LookupAnswer::Kind::failed) {
        out.failed = true;
        out.error = std::move(a.text);
      } else if (a.kind == LookupAnswer::Kind::found) {
        out.rows.emplace_back(key, no_value ? std::string() : std::move(a.text));
      }
      return out;
    };
    auto shared_done = std::make_shared<std::function<void(IterateAnswer)>>(std::move(done));
    if (auto now = lookup(key, [shared_done, to_rows](LookupAnswer a) { (*shared_done)(to_rows(std::move(a))); }))
      (*shared_done)(to_rows(std::move(*now)));
    return;
  }
  // Every other iteration answer passes here (an exact-key one was a lookup, reported there):
  // failures go to the fault log.
  if (faults_) {
    done = [faults = faults_, done = std::move(done)](IterateAnswer a) {
      if (a.failed) faults->failed(a.error);
      done(std::move(a));
    };
  }
  if (dict::classify_iterate_path(request.path) != dict::IteratePath::userdb)
    return fail("maildict: unmapped iteration path: " + printable_excerpt(request.path));

  bool with_values = (request.flags & dict::iterate_no_value) == 0;
  auto max_rows = request.max_rows;
  auto shared_done = std::make_shared<std::function<void(IterateAnswer)>>(std::move(done));
  auto job = [this, with_values, max_rows, shared_done](storage::DirectoryConnection* conn, const std::string& why) {
    if (!conn) {
      IterateAnswer a;
      a.failed = true;
      a.error = "maildict: " + why;
      (*shared_done)(std::move(a));
      return;
    }
    auto answer = answer_user_iteration(*conn, with_values, max_rows, deadline());
    if (faults_ && !answer.failed) faults_->answered();
    (*shared_done)(std::move(answer));
  };
  if (!pool_.submit(deadline(), std::move(job))) {
    IterateAnswer a;
    a.failed = true;
    a.error = "maildict: overloaded, too many requests waiting for the database";
    (*shared_done)(std::move(a));
  }
}

}  // namespace maildict::server
