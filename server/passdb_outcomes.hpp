// Which logins maildict could not look up just now. Dovecot 2.3 reports a login that failed
// because its passdb lookup failed temporarily (database away, overload) to the auth policy
// exactly like a wrong password: `"success":false`. Counting those would punish real users for
// maildict's own outage: after a database restart a whole office behind one address would be
// rejected. maildictd answers both the passdb lookup and the policy report, so it can tell:
// the lookup service notes each passdb outcome here, and the policy server does not count a
// failure whose login's latest passdb lookup was a temporary failure a moment ago.
//
// Only the *latest* outcome counts: an attacker who overloads the daemon gains nothing for the
// attempts whose lookups were answered (those passwords were checked, and their failures count).
//
// Thread-safe; bounded (at most max_entries logins; when full, the oldest are dropped first,
// which only means a failure may be counted as before).
#pragma once
#include <chrono>
#include <cstddef>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <atomic>

namespace maildict::server {

class PassdbOutcomes {
 public:
  using Clock = std::chrono::steady_clock;

  explicit PassdbOutcomes(std::size_t max_entries = 10000) : max_entries_(max_entries) {}

  // The passdb lookup of `login` was answered (found or not found: maildict looked), or it
  // failed temporarily.
  void note_answered(std::string_view login);
  void note_failed(std::string_view login, Clock::time_point now = Clock::now());

  // True when the latest passdb lookup of `login` failed temporarily, no longer than `within` ago.
  bool failed_recently(std::string_view login, Clock::duration within, Clock::time_point now = Clock::now());

  std::size_t size() const;

  // The name the two sides agree on: "user_domain" and "User@Domain" are "user@domain";
  // anything that is not a login is lower-cased as it is.
  static std::string normal_form(std::string_view login);

 private:
  struct Entry {
    Clock::time_point at;
    std::list<std::string>::iterator age;
  };
  void erase_locked(std::unordered_map<std::string, Entry>::iterator it);

  const std::size_t max_entries_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Entry> failed_;
  std::list<std::string> oldest_first_;
  std::atomic<std::size_t> count_{0};  // lets note_answered skip the lock when nothing failed
};

}  // namespace maildict::server
