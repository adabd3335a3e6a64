// The directory: typed questions about domains, users and aliases, and typed answers with
// one of three outcomes (DESIGN.md §2 rule 1, §3). Every backend (SQLite now, PostgreSQL
// later) implements DirectoryConnection; the server never sees SQL.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace maildict::storage {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

enum class Outcome { found, not_found, temp_fail };

template <class T>
struct Result {
  Outcome outcome = Outcome::not_found;
  T value{};
  std::string error;  // for temp_fail: what went wrong, safe to log (no secrets, no SQL values)

  static Result found(T v) { return {Outcome::found, std::move(v), {}}; }
  static Result not_found() { return {Outcome::not_found, {}, {}}; }
  static Result temp_fail(std::string why) { return {Outcome::temp_fail, {}, std::move(why)}; }
};

// What Dovecot's passdb needs. `password` always carries a {SCHEME} prefix; it is empty
// when the user may receive mail but not log in (NULL password column).
struct PassdbEntry {
  std::string user;  // canonical user@domain
  std::optional<std::string> password;
};

// What Dovecot's userdb needs, with the configured defaults already applied.
struct UserdbEntry {
  std::string user;   // canonical user@domain
  std::string uid;    // numeric text, or a system user name from the configured default
  std::string gid;
  std::string home;
  std::string mail;   // may be empty: Dovecot's own mail_location then applies
  std::optional<std::string> quota_rule;  // "*:storage=<bytes>B" from quota_bytes
};

// Values used where a user row leaves uid/gid/home/mail NULL. Templates expand %u (user@domain),
// %n (local part), %d (domain) and %% (a literal %).
struct UserDefaults {
  std::string uid = "vmail";
  std::string gid = "vmail";
  std::string home = "/var/vmail/%d/%n";
  std::string mail = "";
};

// One database connection's worth of questions. Calls block; they run on the pool's threads.
// A call that cannot finish by `deadline` (lock, slow disk, lost server) returns temp_fail.
class DirectoryConnection {
 public:
  virtual ~DirectoryConnection() = default;

  virtual Result<PassdbEntry> passdb(std::string_view login, Deadline deadline) = 0;
  virtual Result<UserdbEntry> userdb(std::string_view login, Deadline deadline) = 0;
  // Every active user of every active domain, ordered by domain then local part.
  virtual Result<std::vector<UserdbEntry>> users(Deadline deadline) = 0;

  // False once the connection has failed in a way that needs a fresh one (the pool reopens it).
  virtual bool healthy() const = 0;
};

// A database: opens connections and tells cheaply whether its data changed.
class DirectoryBackend {
 public:
  virtual ~DirectoryBackend() = default;

  // Opens one connection. Throws std::runtime_error with a clear message when it cannot.
  virtual std::unique_ptr<DirectoryConnection> connect() = 0;

  // A number that changes whenever committed data changes, without blocking (a busy or broken
  // database gives nullopt: the caller must then not trust its cache). Thread-safe.
  virtual std::optional<std::uint64_t> data_version() = 0;

  // Short, secret-free description for logs ("sqlite:/var/lib/maildict/directory.db").
  virtual std::string describe() const = 0;
};

}  // namespace maildict::storage
