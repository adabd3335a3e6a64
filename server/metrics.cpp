#include "server/metrics.hpp"

#include <cstdio>

namespace maildict::server {

void Histogram::observe(std::chrono::steady_clock::duration d) {
  double s = std::chrono::duration<double>(d).count();
  std::size_t i = 0;
  while (i < bounds.size() && s > bounds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  sum_ns_.fetch_add(ns > 0 ? static_cast<std::uint64_t>(ns) : 0, std::memory_order_relaxed);
}

namespace {

std::string fmt_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void sample(std::string& out, std::string_view name, std::string_view labels, std::uint64_t v) {
  out += name;
  if (!labels.empty()) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
  out += std::to_string(v);
  out += '\n';
}

}  // namespace

void Histogram::render(std::string& out, std::string_view name, std::string_view labels) const {
  std::uint64_t cumulative = 0;
  std::string sep = labels.empty() ? "" : ",";
  for (std::size_t i = 0; i <= bounds.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    std::string le = i < bounds.size() ? fmt_double(bounds[i]) : "+Inf";
    sample(out, std::string(name) + "_bucket", std::string(labels) + sep + "le=\"" + le + "\"", cumulative);
  }
  out += std::string(name) + "_sum";
  if (!labels.empty()) out += "{" + std::string(labels) + "}";
  out += ' ' + fmt_double(static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9) + '\n';
  sample(out, std::string(name) + "_count", labels, count_.load(std::memory_order_relaxed));
}

void Metrics::add_gauge(std::string name, std::string help, std::function<double()> read) {
  std::lock_guard lock(gauges_mutex_);
  gauges_.push_back(Gauge{std::move(name), std::move(help), std::move(read)});
}

std::string Metrics::render() const {
  std::string out;
  out.reserve(8192);
  header(out, "maildict_policy_requests_total", "counter", "Requests on the policy listener by kind.");
  sample(out, "maildict_policy_requests_total", "kind=\"allow\"", policy_allow.value());
  sample(out, "maildict_policy_requests_total", "kind=\"report\"", policy_report.value());
  sample(out, "maildict_policy_requests_total", "kind=\"admin\"", policy_admin.value());
  sample(out, "maildict_policy_requests_total", "kind=\"metrics\"", policy_metrics.value());
  sample(out, "maildict_policy_requests_total", "kind=\"invalid\"", policy_bad_requests.value());
  header(out, "maildict_policy_decisions_total", "counter", "Answers to command=allow by decision.");
  sample(out, "maildict_policy_decisions_total", "decision=\"allow\"", decision_allow.value());
  sample(out, "maildict_policy_decisions_total", "decision=\"tarpit\"", decision_tarpit.value());
  sample(out, "maildict_policy_decisions_total", "decision=\"reject\"", decision_reject.value());
  header(out, "maildict_policy_failures_not_counted_total", "counter",
         "Failed logins reported by Dovecot but not counted: their passdb lookup had failed "
         "temporarily (the database was away), so no password was checked.");
  sample(out, "maildict_policy_failures_not_counted_total", "", policy_failures_not_counted.value());
  header(out, "maildict_policy_connections_refused_total", "counter",
         "Policy connections closed at once because policy_max_connections were open.");
  sample(out, "maildict_policy_connections_refused_total", "", policy_connections_refused.value());
  header(out, "maildict_policy_request_duration_seconds", "histogram",
         "Time from a policy request read to its reply queued.");
  policy_latency.render(out, "maildict_policy_request_duration_seconds", "");

  header(out, "maildict_lookups_total", "counter", "Dict lookups by outcome.");
  sample(out, "maildict_lookups_total", "outcome=\"found\"", lookup_found.value());
  sample(out, "maildict_lookups_total", "outcome=\"not_found\"", lookup_not_found.value());
  sample(out, "maildict_lookups_total", "outcome=\"temp_fail\"", lookup_failed.value());
  header(out, "maildict_cache_requests_total", "counter", "Answer cache lookups by result.");
  sample(out, "maildict_cache_requests_total", "result=\"hit\"", cache_hits.value());
  sample(out, "maildict_cache_requests_total", "result=\"miss\"", cache_misses.value());
  header(out, "maildict_pool_rejected_total", "counter",
         "Lookups answered 'overloaded' because max_queued_requests were waiting for the database.");
  sample(out, "maildict_pool_rejected_total", "", pool_rejected.value());
  header(out, "maildict_lookup_duration_seconds", "histogram", "Time from a dict lookup read to its answer.");
  lookup_latency.render(out, "maildict_lookup_duration_seconds", "");

  std::lock_guard lock(gauges_mutex_);
  for (const auto& g : gauges_) {
    header(out, g.name, "gauge", g.help);
    out += g.name + ' ' + fmt_double(g.read()) + '\n';
  }
  return out;
}

Metrics& metrics() {
  static Metrics m;
  return m;
}

}  // namespace maildict::server
