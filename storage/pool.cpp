#include "storage/pool.hpp"

#include <exception>
#include <string>

namespace maildict::storage {

namespace {

// A database that cannot be opened is usually still unopenable a moment later; retrying on
// every job would turn one outage into a storm of open() calls. The wait doubles with each
// failed open up to the backend's bound (a server that is down for minutes is not asked ten
// times a second per thread; a briefly locked file is retried soon).
constexpr auto kReopenFirst = std::chrono::milliseconds(100);

const std::string kShuttingDown = "shutting down";
const std::string kQueueTimeout = "timed out waiting for a database connection";
const std::string kNoError;

// A job that throws must not take its worker thread (and with it the pool's capacity) down.
void run_job(const Pool::Job& job, DirectoryConnection* conn, const std::string& why) {
  try {
    job(conn, why);
  } catch (...) {
  }
}

}  // namespace

Pool::Pool(DirectoryBackend& backend, std::size_t threads, std::size_t max_queued)
    : backend_(backend), max_queued_(max_queued) {
  if (threads == 0) threads = 1;
  threads_.reserve(threads);
  try {
    for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { worker_loop(); });
  } catch (...) {
    stop();
    throw;
  }
}

Pool::~Pool() { stop(); }

bool Pool::submit(Deadline deadline, Job job) {
  {
    std::lock_guard lock(mutex_);
    // After stop() nobody would ever run the job; refusing it lets the caller answer now.
    if (stopping_ || queue_.size() >= max_queued_) return false;
    queue_.push_back(Item{deadline, std::move(job)});
  }
  wake_.notify_one();
  return true;
}

void Pool::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();

  std::deque<Item> left;
  {
    std::lock_guard lock(mutex_);
    left.swap(queue_);
  }
  for (auto& item : left) run_job(item.job, nullptr, kShuttingDown);
}

void Pool::worker_loop() {
  std::unique_ptr<DirectoryConnection> conn;
  std::string open_error;
  Clock::time_point next_open_attempt{};
  Clock::duration reopen_interval = kReopenFirst;

  for (;;) {
    Item item;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;  // stop() answers whatever is still queued
      item = std::move(queue_.front());
      queue_.pop_front();
    }

    auto now = Clock::now();
    if (now >= item.deadline) {
      run_job(item.job, nullptr, kQueueTimeout);
      continue;
    }

    if (conn && !conn->healthy()) conn.reset();
    // The first open, and a reopen after a broken connection, happen at once; only after a
    // failed open do the next attempts wait. They are spaced from the start of the failed
    // one: an open that gave up after waiting out a lock has paced itself already, and the
    // lock may be gone for the next job.
    if (!conn && (open_error.empty() || now >= next_open_attempt)) {
      next_open_attempt = now + reopen_interval;
      try {
        conn = backend_.connect();
        open_error = conn ? std::string() : "cannot open database: backend gave no connection";
      } catch (const std::exception& e) {
        open_error = std::string("cannot open database: ") + e.what();
      } catch (...) {
        open_error = "cannot open database: unknown error";
      }
      reopen_interval = conn ? kReopenFirst : std::min<Clock::duration>(reopen_interval * 2, backend_.max_reopen_interval());
    }
    if (!conn) {
      run_job(item.job, nullptr, open_error);
      continue;
    }
    run_job(item.job, conn.get(), kNoError);
  }
}

}  // namespace maildict::storage
