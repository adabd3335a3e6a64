// The connection pool: a fixed set of threads, each owning one DirectoryConnection, fed by a
// bounded queue. Blocking database work happens here, never on the I/O threads (DESIGN.md §2
// rule 8). A job that waits past its deadline, or finds the queue full, or cannot get a
// connection, is told so and must answer "temporary failure". A job still queued when its
// deadline passes is told so then, by a watcher thread, even while every worker is busy (a hung
// database must not keep waiting clients from their answer).
#pragma once
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "storage/directory.hpp"

namespace maildict::storage {

class Pool {
 public:
  // `conn` is nullptr when no connection could be had (open failed, deadline passed before the
  // job started, shutdown); `why` then says why, safe to log.
  using Job = std::function<void(DirectoryConnection* conn, const std::string& why)>;

  // Where the pool reports a job that threw (a bug): one line, safe to log. The daemon logs it.
  using ErrorReport = std::function<void(const std::string& message)>;

  Pool(DirectoryBackend& backend, std::size_t threads, std::size_t max_queued, ErrorReport report_error = {});
  ~Pool();  // stops the threads; queued jobs run with conn == nullptr ("shutting down")

  // Queues a job. Returns false (and does not run it) when max_queued jobs are already waiting,
  // or after stop(). Jobs should not throw; one that does is reported (at most one line every
  // few seconds, with the count of the others) and its worker lives on.
  bool submit(Deadline deadline, Job job);

  // Joins the threads (a job already running finishes first), then runs every job still
  // queued with conn == nullptr and "shutting down". Idempotent; not from inside a job.
  void stop();

 private:
  struct Item {
    Deadline deadline;
    Job job;
  };
  void worker_loop();
  void deadline_loop();
  void run_job(const Job& job, DirectoryConnection* conn, const std::string& why);

  DirectoryBackend& backend_;
  std::size_t max_queued_;
  ErrorReport report_error_;
  std::mutex mutex_;
  std::condition_variable wake_;
  // The deadline watcher: sleeps until the earliest queued deadline (`watch_until_`).
  std::condition_variable watch_wake_;
  Deadline watch_until_ = Deadline::max();
  std::deque<Item> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
  std::thread watcher_;
  // Throwing jobs: reported at most once per interval, with how many were not reported.
  std::mutex report_mutex_;
  Clock::time_point next_report_{};
  std::uint64_t unreported_ = 0;
};

}  // namespace maildict::storage
