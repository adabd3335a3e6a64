// The directory: typed questions about domains, users and aliases, and typed answers with
// one of three outcomes (DESIGN.md §2 rule 1, §3). Every backend (SQLite now, PostgreSQL
// later) implements DirectoryConnection; the server never sees SQL.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace maildict::storage {

// The database answers, but its schema is not one this maildict can use (newer than it
// understands, or tables that are someone else's): retrying will not help, the operator must.
// Everything else prepare_schema() or opening throws may pass by itself (server down, locked).
struct SchemaMismatch : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class SqlSession;          // storage/sql_session.hpp
enum class SessionRole;    // read (replica allowed) or write (primary)

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
  // Sub-address delimiters (any one of these characters): "john+lists@example.org" reaches
  // john@example.org. Empty turns sub-addressing off.
  std::string recipient_delimiter = "+";
};

// What smtpd's userbase needs (specs/smtpd-tables.md §5.3 USERINFO). smtpd cannot resolve names,
// so uid and gid are always decimal here, unlike UserdbEntry.
struct UserInfo {
  std::string uid;
  std::string gid;
  std::string home;
};

// What smtpd's listener AUTH needs: a hash its own crypt(3) verifies, so no {SCHEME} prefix.
struct LoginHash {
  std::string login;  // canonical user@domain
  std::string hash;
};

// Clear-text credentials smtpd presents to an outgoing relay (`relay host URL auth <table>`).
struct RelayCredential {
  std::string username;
  std::string password;
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

  // ---- smtpd's questions (DESIGN.md §3, specs/smtpd-tables.md §5) ----------------------------
  // They have default bodies that fail temporarily, so a backend (or a test double) that does
  // not answer them yet makes smtpd defer, never bounce.

  // An active domain (alias domains included); found carries the lower-cased name.
  virtual Result<std::string> domain_exists(std::string_view domain, Deadline deadline) {
    return Result<std::string>::temp_fail("smtpd lookups are not supported by this directory backend");
  }
  // Recipient resolution of DESIGN.md §3 for a full "user@domain" (sub-address stripped). Found:
  // one item per destination, a local user as its delivery name ("john_example.org"), anything
  // else as written. Keys that are not a full address are not found.
  virtual Result<std::vector<std::string>> resolve_recipient(std::string_view address, Deadline deadline) {
    return Result<std::vector<std::string>>::temp_fail("smtpd lookups are not supported by this directory backend");
  }
  // An active user named in either spelling.
  virtual Result<UserInfo> userinfo(std::string_view name, Deadline deadline) {
    return Result<UserInfo>::temp_fail("smtpd lookups are not supported by this directory backend");
  }
  // An active user with a password crypt(3) can verify; no password (or one in a scheme crypt
  // cannot check) is not found, so smtpd refuses the login instead of deferring it forever.
  virtual Result<LoginHash> credentials(std::string_view login, Deadline deadline) {
    return Result<LoginHash>::temp_fail("smtpd lookups are not supported by this directory backend");
  }
  virtual Result<RelayCredential> relay_credential(std::string_view label, Deadline deadline) {
    return Result<RelayCredential>::temp_fail("smtpd lookups are not supported by this directory backend");
  }
  // The addresses an active login may send as: its own, its sender_logins rows and the active
  // aliases whose only destination it is. Own address first, no duplicates.
  virtual Result<std::vector<std::string>> sender_addresses(std::string_view login, Deadline deadline) {
    return Result<std::vector<std::string>>::temp_fail("smtpd lookups are not supported by this directory backend");
  }
  // The smtpd_values rows for (service, key), in insertion order: the operator-managed lists
  // for netaddr, addrname, source and relayhost.
  virtual Result<std::vector<std::string>> smtpd_values(std::string_view service, std::string_view key,
                                                        Deadline deadline) {
    return Result<std::vector<std::string>>::temp_fail("smtpd lookups are not supported by this directory backend");
  }
  // Every key of one service in smtpd_values (netaddr checks match CIDR blocks, which an exact
  // lookup cannot).
  virtual Result<std::vector<std::string>> smtpd_keys(std::string_view service, Deadline deadline) {
    return Result<std::vector<std::string>>::temp_fail("smtpd lookups are not supported by this directory backend");
  }

  // When the operator's own smtpd table queries are configured (a table-sqlite/table-postgres
  // file, storage/existing_schema.hpp): the rows of `service`'s query for `key`, cell by cell
  // (NULL as ""), exactly as that table reads them; temp_fail when the service has no query.
  // nullopt: this directory answers smtpd through the typed questions above.
  virtual std::optional<Result<std::vector<std::vector<std::string>>>> smtpd_table_rows(std::string_view service,
                                                                                       std::string_view key,
                                                                                       Deadline deadline) {
    return std::nullopt;
  }

  // False once the connection has failed in a way that needs a fresh one (the pool reopens it).
  virtual bool healthy() const = 0;
};

// A database: opens connections and tells cheaply whether its data changed.
class DirectoryBackend {
 public:
  virtual ~DirectoryBackend() = default;

  // Opens one connection. Throws std::runtime_error with a clear message when it cannot.
  virtual std::unique_ptr<DirectoryConnection> connect() = 0;
  // The same, giving up (throwing) once `deadline` has passed where the backend can: the pool
  // opens connections for a waiting request, which must get its answer by its deadline.
  virtual std::unique_ptr<DirectoryConnection> connect(Deadline deadline) { return connect(); }

  // A number that changes whenever committed data changes, without blocking (a busy or broken
  // database gives nullopt: the caller must then not trust its cache). Thread-safe.
  virtual std::optional<std::uint64_t> data_version() = 0;

  // Short, secret-free description for logs ("sqlite:/var/lib/maildict/directory.db").
  virtual std::string describe() const = 0;

  // A warning for the log when the database's files can be read by more users than they
  // should (the directory holds password hashes); nullopt when all is well or unknown.
  virtual std::optional<std::string> access_warning() const { return std::nullopt; }

  // Creates the default schema in an empty database and applies pending migrations (both
  // idempotent, safe with several daemons starting at once). Throws std::runtime_error with a
  // clear message when it cannot (SchemaMismatch when trying again will not help); the daemon
  // then still starts and answers temporary failures.
  virtual void prepare_schema() = 0;

  // How long the pool waits at most between failed opens; the wait doubles from 100 ms up to
  // this. An embedded file is usually locked only for moments (retry soon); a server that is
  // down stays down for a while (do not hammer it).
  virtual std::chrono::milliseconds max_reopen_interval() const { return std::chrono::milliseconds(100); }

  // A raw SQL session for the admin tool and the policy store. `read` may go to a replica;
  // `write` always reaches the primary. Throws std::runtime_error when it cannot connect.
  virtual std::unique_ptr<SqlSession> open_session(SessionRole role) = 0;
};

}  // namespace maildict::storage
