// The connection pool: a fixed set of threads, each owning one DirectoryConnection, fed by a
// bounded queue. Blocking database work happens here, never on the I/O threads (DESIGN.md §2
// rule 8). A job that waits past its deadline, or finds the queue full, or cannot get a
// connection, is told so and must answer "temporary failure".
#pragma once
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "storage/directory.hpp"

namespace maildict::storage {

class Pool {
 public:
  // `conn` is nullptr when no connection could be had (open failed, deadline passed before the
  // job started, shutdown); `why` then says why, safe to log.
  using Job = std::function<void(DirectoryConnection* conn, const std::string& why)>;

  Pool(DirectoryBackend& backend, std::size_t threads, std::size_t max_queued);
  ~Pool();  // stops the threads; queued jobs run with conn == nullptr ("shutting down")

  // Queues a job. Returns false (and does not run it) when max_queued jobs are already waiting,
  // or after stop(). Jobs should not throw; one that does is ignored and its worker lives on.
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

  DirectoryBackend& backend_;
  std::size_t max_queued_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace maildict::storage
