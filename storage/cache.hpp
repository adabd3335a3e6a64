// A bounded cache of answers in front of storage (DESIGN.md §5). Each entry remembers the
// backend's data_version at the time it was read and is served only while that version is
// unchanged and its TTL has not run out, so a changed password is never served stale.
// Thread-safe (a mutex; lookups are short). Temporary failures are never cached.
#pragma once
#include <chrono>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace maildict::storage {

template <class Value>
class AnswerCache {
 public:
  using Clock = std::chrono::steady_clock;

  AnswerCache(std::size_t max_entries, Clock::duration ttl) : max_entries_(max_entries), ttl_(ttl) {}

  bool enabled() const { return max_entries_ > 0; }

  std::optional<Value> get(std::string_view key, std::uint64_t current_version) {
    std::lock_guard lock(mutex_);
    auto it = index_.find(std::string(key));
    if (it == index_.end()) return std::nullopt;
    auto node = it->second;
    if (node->version != current_version || Clock::now() >= node->expires) {
      index_.erase(it);
      lru_.erase(node);
      return std::nullopt;
    }
    lru_.splice(lru_.begin(), lru_, node);
    return node->value;
  }

  void put(std::string key, std::uint64_t version, Value value) {
    if (max_entries_ == 0) return;
    std::lock_guard lock(mutex_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      lru_.erase(it->second);
      index_.erase(it);
    }
    lru_.push_front(Entry{key, version, Clock::now() + ttl_, std::move(value)});
    index_.emplace(std::move(key), lru_.begin());
    while (index_.size() > max_entries_) {
      index_.erase(lru_.back().key);
      lru_.pop_back();
    }
  }

  void clear() {
    std::lock_guard lock(mutex_);
    index_.clear();
    lru_.clear();
  }

  std::size_t size() {
    std::lock_guard lock(mutex_);
    return index_.size();
  }

 private:
  struct Entry {
    std::string key;
    std::uint64_t version;
    Clock::time_point expires;
    Value value;
  };
  std::size_t max_entries_;
  Clock::duration ttl_;
  std::mutex mutex_;
  std::list<Entry> lru_;
  std::unordered_map<std::string, typename std::list<Entry>::iterator> index_;
};

}  // namespace maildict::storage
