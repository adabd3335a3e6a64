#include "server/fault_log.hpp"

#include <algorithm>
#include <cstdio>

namespace maildict::server {

FaultLog::FaultLog(Sink sink, Clock::duration summary_interval, Clock::duration quiet, std::size_t max_causes)
    : sink_(std::move(sink)), interval_(summary_interval), quiet_(quiet), max_causes_(max_causes) {}

std::string FaultLog::seconds(Clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", std::chrono::duration<double>(d).count());
  return buf;
}

// The sink is called under the lock: lines keep their order, and the daemon's sink (spdlog)
// never calls back.
void FaultLog::failed(std::string_view cause, Clock::time_point now) {
  std::lock_guard lock(mutex_);
  if (open_.empty() && other_.total == 0) next_summary_ = now + interval_;
  any_open_.store(true, std::memory_order_relaxed);
  auto it = std::find_if(open_.begin(), open_.end(), [&](const Cause& c) { return c.text == cause; });
  Cause* c = nullptr;
  if (it != open_.end()) {
    c = &*it;
  } else if (open_.size() < max_causes_) {
    c = &open_.emplace_back(Cause{std::string(cause), now, now, 0, 0});
    sink_(Level::warn, "requests fail temporarily: " + c->text + " (counts follow every " + seconds(interval_) +
                           " while it lasts)");
  } else {
    c = &other_;
    if (other_.total == 0) other_.since = now;
  }
  ++c->total;
  ++c->recent;
  c->last = now;
  if (now >= next_summary_) summarize(now);
}

void FaultLog::end(const Cause& c, Clock::time_point now) {
  sink_(Level::info, "requests no longer fail: " + c.text + " (" + std::to_string(c.total) + " failed in " +
                         seconds(c.last - c.since) + ", last " + seconds(now - c.last) + " ago)");
}

// Under mutex_: what still fails in one line; causes not seen in the whole interval end.
void FaultLog::summarize(Clock::time_point now) {
  std::string still;
  for (auto it = open_.begin(); it != open_.end();) {
    if (it->recent == 0) {
      end(*it, now);
      it = open_.erase(it);
      continue;
    }
    still += (still.empty() ? "" : "; ") + it->text + ": " + std::to_string(it->recent);
    it->recent = 0;
    ++it;
  }
  if (other_.recent > 0) {
    still += (still.empty() ? "" : "; ") + other_.text + ": " + std::to_string(other_.recent);
    other_.recent = 0;
  } else if (other_.total > 0) {
    end(other_, now);
    other_.total = 0;
  }
  next_summary_ = now + interval_;
  any_open_.store(!open_.empty() || other_.total > 0, std::memory_order_relaxed);
  if (!still.empty())
    sink_(Level::warn, "requests still failing temporarily, in the last " + seconds(interval_) + ": " + still);
}

void FaultLog::answered(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  for (auto it = open_.begin(); it != open_.end();) {
    if (now - it->last >= quiet_) {
      end(*it, now);
      it = open_.erase(it);
    } else {
      ++it;
    }
  }
  if (other_.total > 0 && now - other_.last >= quiet_) {
    end(other_, now);
    other_.total = other_.recent = 0;
  }
  if ((!open_.empty() || other_.total > 0) && now >= next_summary_) summarize(now);
  any_open_.store(!open_.empty() || other_.total > 0, std::memory_order_relaxed);
}

}  // namespace maildict::server
