// The directory's changes, as typed operations for maildictctl: domains, users, aliases and
// sender rights (DESIGN.md §3). Written once against SqlSession ($n placeholders, text/NULL
// parameters, portable SQL), so the same code changes an SQLite file or a PostgreSQL database.
//
// Every change is one write transaction: it validates its input, checks the rows it depends
// on inside the transaction, and either commits everything or nothing. Results carry one of
// a few statuses that the tool maps to exit codes; a database fault is always temp_fail (or
// db_error for a permanent one), never "not found". Messages are safe to print and never hold
// a password or hash.
//
// The daemon needs no notice: SQLite commits change data_version, PostgreSQL commits fire the
// NOTIFY triggers, and maildictd's cache drops what changed.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "storage/login_name.hpp"

namespace maildict::storage {

class SqlSession;

enum class AdminStatus {
  ok,
  bad_input,   // invalid name, option or value: nothing was asked of the database
  not_found,   // the domain, user, alias or sender row the change names does not exist
  conflict,    // it exists already, it would make a loop, or other rows still depend on it
  temp_fail,   // database locked, timed out, unreachable: try again
  db_error,    // the database refused in a way retrying will not fix (schema missing, ...)
};

struct AdminResult {
  AdminStatus status = AdminStatus::ok;
  std::string message;  // what went wrong, or for ok an optional note; never a secret
  bool ok() const { return status == AdminStatus::ok; }
  static AdminResult success(std::string note = {}) { return {AdminStatus::ok, std::move(note)}; }
  static AdminResult fail(AdminStatus s, std::string why) { return {s, std::move(why)}; }
};

// ---- names (pure) ------------------------------------------------------------------------------
// All return the lower-cased name, or nullopt with `why` set to a sentence for the operator.

// A domain name: ASCII letters, digits and '-' in dot-separated labels of 1..63 characters, at
// most 253 in all; no '_' (DESIGN.md §3 splits "user_domain" at the last '_'). International
// names must be given in their xn-- form.
std::optional<std::string> normalize_domain(std::string_view in, std::string& why);

// A mailbox address "local@domain". The local part: 1..64 printable ASCII characters other than
// space, '@', '/', '"', '\\', '(', ')', ',', ':', ';', '<', '>', '[', ']', with no leading,
// trailing or doubled '.'. With `delimiters` non-empty, a local part holding one of them is
// refused: smtpd would read "a+b@d" as the sub-address b of a@d and never reach it.
std::optional<MailboxName> normalize_address(std::string_view in, std::string_view delimiters, std::string& why);

// An alias source: "local@domain", or "@domain" for the domain's catch-all (local_part "").
std::optional<MailboxName> normalize_alias_source(std::string_view in, std::string_view delimiters,
                                                  std::string& why);

// An alias destination or a sender address: a full address anywhere (a sub-address allowed:
// "john+lists@example.org"), lower-cased. Sender addresses may also be "@domain" (the login may
// send as anyone at that domain) when `allow_domain` is set.
std::optional<std::string> normalize_destination(std::string_view in, bool allow_domain, std::string& why);

// A quota: bytes as a number with an optional binary unit K, M, G or T ("500M", "2G", "0" for
// unlimited).
std::optional<std::int64_t> parse_quota(std::string_view in, std::string& why);

// ---- records -----------------------------------------------------------------------------------

struct DomainRecord {
  std::string domain;
  bool active = true;
  std::optional<std::string> alias_for;
  std::int64_t users = 0;
  std::int64_t aliases = 0;  // alias rows (one per destination)
};

struct UserRecord {
  MailboxName name;
  std::optional<std::string> password;  // the stored hash: never printed unless asked
  std::optional<std::string> uid, gid, home, mail;
  std::optional<std::int64_t> quota_bytes;
  bool active = true;
  bool domain_active = true;
};

struct AliasRow {
  std::string local_part;  // "" is the catch-all
  std::string domain;
  std::string destination;
  bool active = true;
  std::string source() const { return local_part + "@" + domain; }
};

struct SenderRow {
  std::string login;
  std::string address;
};

// A change to one optional column: nullopt leaves it alone, a value sets it, reset sets NULL
// (the configured default applies again).
template <class T>
struct Change {
  enum class Kind { keep, set, reset };
  Kind kind = Kind::keep;
  T value{};
  static Change set_to(T v) { return {Kind::set, std::move(v)}; }
  static Change reset_to_default() { return {Kind::reset, {}}; }
};

struct UserAttributes {
  Change<std::string> uid, gid, home, mail;  // uid/gid: decimal numbers (the columns are INTEGER)
  Change<std::int64_t> quota_bytes;
};

// How a recipient address resolves (DESIGN.md §3), for `maildictctl lookup`.
struct Resolution {
  enum class Rule { none, domain_not_served, domain_disabled, alias_rows, user, alias_domain_alias_rows,
                    alias_domain_user, alias_domain_catch_all, catch_all, user_disabled };
  Rule rule = Rule::none;
  std::string matched;                    // the row set that matched: "sales@example.org", "@example.net", ...
  std::vector<std::string> destinations;  // as the rows say (alias rules) or the user's address
  std::string explanation;                // one sentence
};

// ---- the operations ------------------------------------------------------------------------------

class DirectoryAdmin {
 public:
  // `delimiters`: the configured recipient_delimiter (local parts may not hold them).
  // `timeout`: how long one operation may take, lock waits included.
  explicit DirectoryAdmin(SqlSession& session, std::string delimiters = "+",
                          std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Domains. `alias_for`: mail for this domain goes to the same local parts at that domain
  // (which must exist and must not itself be an alias domain).
  AdminResult add_domain(std::string_view domain, std::optional<std::string_view> alias_for, bool active = true);
  AdminResult set_domain_active(std::string_view domain, bool active);
  // Refuses (conflict) while users, aliases or alias domains depend on it; with `force` removes
  // its users, their sender rights and its aliases too (alias domains are still refused).
  AdminResult remove_domain(std::string_view domain, bool force);
  AdminResult list_domains(std::vector<DomainRecord>& out);
  AdminResult show_domain(std::string_view domain, DomainRecord& out);

  // Users. `password_hash`: a crypt(3) hash from hash_password(), or nullopt for a user who
  // receives mail but cannot log in. The domain must exist, be active and not be an alias domain.
  AdminResult add_user(std::string_view address, const std::optional<std::string>& password_hash,
                       const UserAttributes& attributes, bool active = true);
  AdminResult set_password(std::string_view address, const std::optional<std::string>& password_hash);
  AdminResult set_user_active(std::string_view address, bool active);
  AdminResult set_user_attributes(std::string_view address, const UserAttributes& attributes);
  // Refuses (conflict) while aliases name the user as a destination; with `force` those alias
  // rows go too. Its sender rights always go with it.
  AdminResult remove_user(std::string_view address, bool force);
  AdminResult list_users(std::optional<std::string_view> domain, std::vector<UserRecord>& out);
  AdminResult show_user(std::string_view address, UserRecord& out);

  // Aliases. `source`: "local@domain" or "@domain" (catch-all). Every destination is checked;
  // one already present, one in a served domain that reaches nobody (unless `force`), or a set
  // whose expansion through other aliases comes back to `source` (a loop) refuses the whole
  // change.
  AdminResult add_alias(std::string_view source, const std::vector<std::string>& destinations, bool force = false);
  // Without destinations: every row of the source.
  AdminResult remove_alias(std::string_view source, const std::vector<std::string>& destinations);
  // `filter`: nothing, a domain, or a source address.
  AdminResult list_aliases(std::optional<std::string_view> filter, std::vector<AliasRow>& out);

  // Sender rights (sender_logins): `login` must be an existing user.
  AdminResult add_sender(std::string_view login, const std::vector<std::string>& addresses);
  AdminResult remove_sender(std::string_view login, const std::vector<std::string>& addresses);
  AdminResult list_senders(std::optional<std::string_view> login, std::vector<SenderRow>& out);

  // Which rule of DESIGN.md §3 a recipient address matches, read in one snapshot.
  AdminResult explain_recipient(std::string_view address, Resolution& out);

 private:
  SqlSession& session_;
  std::string delimiters_;
  std::chrono::milliseconds timeout_;
};

}  // namespace maildict::storage
