// A bounded cache of answers in front of storage (DESIGN.md §5). Each entry remembers the
// backend's data_version at the time it was read and is served only while that version is
// unchanged and its TTL has not run out, so a changed password is never served stale.
// Thread-safe (a mutex; lookups are short). Temporary failures are never cached.
//
// Serving stale answers during an outage is a separate, explicit call (get_stale): an entry
// whose version or TTL has passed is kept (until LRU eviction) only when the cache was built
// with a stale limit, and get_stale hands it out only while it is younger than that limit.
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

  // `stale_limit` 0: entries are dropped as soon as they are out of date.
  AnswerCache(std::size_t max_entries, Clock::duration ttl, Clock::duration stale_limit = Clock::duration::zero())
      : max_entries_(max_entries), ttl_(ttl), stale_limit_(stale_limit) {}

  bool enabled() const { return max_entries_ > 0; }
  bool keeps_stale() const { return stale_limit_ > Clock::duration::zero(); }

  std::optional<Value> get(std::string_view key, std::uint64_t current_version) {
    std::lock_guard lock(mutex_);
    auto it = index_.find(key);
    if (it == index_.end()) return std::nullopt;
    auto node = it->second;
    if (node->version != current_version || Clock::now() >= node->expires) {
      if (!keeps_stale()) {
        index_.erase(it);
        lru_.erase(node);
      }
      return std::nullopt;
    }
    lru_.splice(lru_.begin(), lru_, node);
    return node->value;
  }

  // The last answer stored for `key` whatever the database's version, if it was read less
  // than the stale limit ago; with its age. For outages only, and only when configured.
  std::optional<std::pair<Value, Clock::duration>> get_stale(std::string_view key) {
    if (!keeps_stale()) return std::nullopt;
    std::lock_guard lock(mutex_);
    auto it = index_.find(key);
    if (it == index_.end()) return std::nullopt;
    auto age = Clock::now() - it->second->stored;
    if (age > stale_limit_) return std::nullopt;
    return std::make_pair(it->second->value, age);
  }

  // `ttl` overrides the cache's TTL for this entry (shorter for "not found" answers).
  void put(std::string key, std::uint64_t version, Value value, std::optional<Clock::duration> ttl = std::nullopt) {
    if (max_entries_ == 0) return;
    auto now = Clock::now();
    std::lock_guard lock(mutex_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      lru_.erase(it->second);
      index_.erase(it);
    }
    lru_.push_front(Entry{key, version, now + ttl.value_or(ttl_), now, std::move(value)});
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
    Clock::time_point stored;
    Value value;
  };
  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::size_t max_entries_;
  Clock::duration ttl_;
  Clock::duration stale_limit_;
  std::mutex mutex_;
  std::list<Entry> lru_;
  std::unordered_map<std::string, typename std::list<Entry>::iterator, KeyHash, std::equal_to<>> index_;
};

}  // namespace maildict::storage
