// maildictd's counters and latency histograms, served as Prometheus text (`GET /metrics` on
// the policy listener). Lock-free on the hot paths: every update is a relaxed atomic add, so
// counting costs the I/O and pool threads next to nothing. One process-wide instance.
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace maildict::server {

class Counter {
 public:
  void inc(std::uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

// Fixed buckets from 25 µs to 10 s, chosen for both a cache hit (tens of µs) and a database
// lookup at its deadline (seconds).
class Histogram {
 public:
  static constexpr std::array<double, 16> bounds = {0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                                    0.0025,   0.005,   0.01,   0.025,   0.05,   0.1,
                                                    0.25,     0.5,     1.0,    10.0};
  void observe(std::chrono::steady_clock::duration d);
  // Appends the _bucket/_sum/_count lines; `labels` is empty or `name="value"` pairs.
  void render(std::string& out, std::string_view name, std::string_view labels) const;

 private:
  std::array<std::atomic<std::uint64_t>, bounds.size() + 1> buckets_{};  // last: +Inf only
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_ns_{0};
};

struct Metrics {
  // policy listener
  Counter policy_allow, policy_report, policy_admin, policy_metrics;
  Counter policy_bad_requests;  // any 4xx
  Counter decision_allow, decision_tarpit, decision_reject;
  Counter policy_connections_refused;
  Counter policy_failures_not_counted;  // reports of logins maildict could not look up
  Histogram policy_latency;  // request fully read -> reply queued
  // dict lookups (LookupService)
  Counter lookup_found, lookup_not_found, lookup_failed;
  Counter cache_hits, cache_misses;
  Counter pool_rejected;  // the pool's queue was full: answered "overloaded"
  Histogram lookup_latency;

  // Values read at render time (connections, pool jobs in flight, policy entries...).
  void add_gauge(std::string name, std::string help, std::function<double()> read);

  std::string render() const;

 private:
  struct Gauge {
    std::string name, help;
    std::function<double()> read;
  };
  mutable std::mutex gauges_mutex_;
  std::vector<Gauge> gauges_;
};

Metrics& metrics();

}  // namespace maildict::server
