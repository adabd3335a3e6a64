#include "server/passdb_outcomes.hpp"

#include "storage/login_name.hpp"

namespace maildict::server {

std::string PassdbOutcomes::normal_form(std::string_view login) {
  if (auto name = storage::split_login(login)) return name->canonical();
  std::string out(login);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

void PassdbOutcomes::erase_locked(std::unordered_map<std::string, Entry>::iterator it) {
  oldest_first_.erase(it->second.age);
  failed_.erase(it);
  count_.store(failed_.size(), std::memory_order_relaxed);
}

void PassdbOutcomes::note_answered(std::string_view login) {
  // The common case by far: nothing has failed lately, and a lookup answered from the cache
  // should not take a lock for nothing.
  if (count_.load(std::memory_order_relaxed) == 0) return;
  const std::string key = normal_form(login);
  std::lock_guard lock(mutex_);
  if (auto it = failed_.find(key); it != failed_.end()) erase_locked(it);
}

void PassdbOutcomes::note_failed(std::string_view login, Clock::time_point now) {
  if (max_entries_ == 0) return;
  std::string key = normal_form(login);
  std::lock_guard lock(mutex_);
  if (auto it = failed_.find(key); it != failed_.end()) erase_locked(it);
  while (failed_.size() >= max_entries_) erase_locked(failed_.find(oldest_first_.front()));
  oldest_first_.push_back(key);
  failed_.emplace(std::move(key), Entry{now, std::prev(oldest_first_.end())});
  count_.store(failed_.size(), std::memory_order_relaxed);
}

bool PassdbOutcomes::failed_recently(std::string_view login, Clock::duration within, Clock::time_point now) {
  if (count_.load(std::memory_order_relaxed) == 0) return false;
  const std::string key = normal_form(login);
  std::lock_guard lock(mutex_);
  auto it = failed_.find(key);
  if (it == failed_.end()) return false;
  if (now - it->second.at > within) {
    erase_locked(it);
    return false;
  }
  return true;
}

std::size_t PassdbOutcomes::size() const {
  std::lock_guard lock(mutex_);
  return failed_.size();
}

}  // namespace maildict::server
