// StopWatchdog: bounds how long maildictd takes to stop.
//
// Stopping waits for the queries in flight and for the change listener. A database that hangs
// (a stopped server, a network cut without a reset) answers neither, and libpq has no client-side
// timeout on a UNIX socket, so the daemon would wait until systemd kills it. Armed when the
// stop begins, the watchdog logs what it is doing and ends the process once the grace period
// has passed; a stop that finishes in time disarms it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

namespace maildict::server {

class StopWatchdog {
 public:
  StopWatchdog() = default;
  StopWatchdog(const StopWatchdog&) = delete;
  StopWatchdog& operator=(const StopWatchdog&) = delete;

  ~StopWatchdog() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // Starts the clock. exit_code is what the process ends with when the grace period runs out.
  void arm(std::chrono::milliseconds grace, int exit_code) {
    thread_ = std::thread([this, grace, exit_code] {
      std::unique_lock lock(mutex_);
      if (wake_.wait_for(lock, grace, [this] { return done_; })) return;
      spdlog::error("stopping took more than {} ms, most likely waiting for a database that does not answer "
                    "(a query in flight cannot be cancelled); exiting without waiting any longer",
                    grace.count());
      spdlog::default_logger()->flush();
      std::_Exit(exit_code);
    });
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace maildict::server
