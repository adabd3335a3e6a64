#include "storage/pool.hpp"

#include <algorithm>
#include <exception>
#include <string>
#include <utility>
#include <vector>

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

// A job that keeps throwing (the same bug hit by every request) must not flood the log.
constexpr auto kReportInterval = std::chrono::seconds(10);

// The first line of an exception's text, cut short and made printable: it ends up in a log.
std::string describe_exception(std::exception_ptr e) {
  std::string what;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    what = ex.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
  what = what.substr(0, what.find('\n'));
  if (what.size() > 200) what = what.substr(0, 200) + "...";
  for (char& c : what)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return what;
}

}  // namespace

Pool::Pool(DirectoryBackend& backend, std::size_t threads, std::size_t max_queued, ErrorReport report_error)
    : backend_(backend), max_queued_(max_queued), report_error_(std::move(report_error)) {
  if (threads == 0) threads = 1;
  threads_.reserve(threads);
  try {
    for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { worker_loop(); });
    watcher_ = std::thread([this] { deadline_loop(); });
  } catch (...) {
    stop();
    throw;
  }
}

// A job that throws must not take its worker thread (and with it the pool's capacity) down,
// nor vanish without a trace: its caller's answer may be lost with it.
void Pool::run_job(const Job& job, DirectoryConnection* conn, const std::string& why) {
  try {
    job(conn, why);
    return;
  } catch (...) {
    auto what = describe_exception(std::current_exception());
    std::uint64_t others = 0;
    {
      std::lock_guard lock(report_mutex_);
      auto now = Clock::now();
      if (now < next_report_) {
        ++unreported_;
        return;
      }
      next_report_ = now + kReportInterval;
      others = std::exchange(unreported_, 0);
    }
    if (!report_error_) return;
    std::string message = "a database job failed with an exception: " + what;
    if (others > 0) message += " (and " + std::to_string(others) + " more since the last report)";
    try {
      report_error_(message);
    } catch (...) {
    }
  }
}

Pool::~Pool() { stop(); }

bool Pool::submit(Deadline deadline, Job job) {
  {
    std::lock_guard lock(mutex_);
    // After stop() nobody would ever run the job; refusing it lets the caller answer now.
    if (stopping_ || queue_.size() >= max_queued_) return false;
    queue_.push_back(Item{deadline, std::move(job)});
    if (deadline < watch_until_) {
      watch_until_ = deadline;
      watch_wake_.notify_one();
    }
  }
  wake_.notify_one();
  return true;
}

void Pool::deadline_loop() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (queue_.empty()) {
      watch_until_ = Deadline::max();
      watch_wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      continue;
    }
    auto now = Clock::now();
    // Jobs that cannot start in time any more are answered now, whatever the workers do.
    std::vector<Item> expired;
    Deadline earliest = Deadline::max();
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->deadline <= now) {
        expired.push_back(std::move(*it));
        it = queue_.erase(it);
      } else {
        earliest = std::min(earliest, it->deadline);
        ++it;
      }
    }
    if (!expired.empty()) {
      lock.unlock();
      for (auto& item : expired) run_job(item.job, nullptr, kQueueTimeout);
      expired.clear();
      lock.lock();
      continue;
    }
    watch_until_ = earliest;
    // Woken early by a job with an earlier deadline (submit) or by stop().
    watch_wake_.wait_until(lock, earliest);
  }
}

void Pool::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  watch_wake_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  if (watcher_.joinable()) watcher_.join();

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
        conn = backend_.connect(item.deadline);
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
