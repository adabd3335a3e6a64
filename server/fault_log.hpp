// Lookup failures as a few log lines per outage instead of one per request (an outage under
// load would write tens of thousands of lines a second, and journald's rate limit would then
// drop the ones that matter): one line when a cause starts, a summary with counts every
// interval while it lasts, one line when it ends (the database answers again and the cause has
// not been seen for a quiet period, so a flapping fault stays one episode; or it has not been
// seen for a whole interval). Thread-safe; no I/O of its own (the sink logs).
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace maildict::server {

class FaultLog {
 public:
  using Clock = std::chrono::steady_clock;
  enum class Level { info, warn };
  using Sink = std::function<void(Level, const std::string&)>;

  // At most `max_causes` causes are tracked one by one (a cause text may carry a client's key);
  // the rest are counted together.
  explicit FaultLog(Sink sink, Clock::duration summary_interval = std::chrono::seconds(30),
                    Clock::duration quiet = std::chrono::seconds(2), std::size_t max_causes = 8);

  // A request was answered "temporary failure" because of `cause`.
  void failed(std::string_view cause) { failed(cause, Clock::now()); }
  // The database answered a request: causes not seen for the quiet period end.
  void answered() {
    if (any_open_.load(std::memory_order_relaxed)) answered(Clock::now());
  }

  // With an explicit time, for tests.
  void failed(std::string_view cause, Clock::time_point now);
  void answered(Clock::time_point now);

 private:
  struct Cause {
    std::string text;
    Clock::time_point since;
    Clock::time_point last;
    std::uint64_t total = 0;
    std::uint64_t recent = 0;  // since the last summary
  };
  void summarize(Clock::time_point now);
  void end(const Cause& c, Clock::time_point now);
  static std::string seconds(Clock::duration d);

  Sink sink_;
  Clock::duration interval_;
  Clock::duration quiet_;
  std::size_t max_causes_;
  std::mutex mutex_;
  std::vector<Cause> open_;
  Cause other_{"other causes", {}, {}, 0, 0};  // failures of causes beyond max_causes
  Clock::time_point next_summary_{};
  std::atomic<bool> any_open_{false};
};

}  // namespace maildict::server
