#include "storage/directory_sql.hpp"

#include <stdexcept>

namespace maildict::storage {

namespace {

// "active = 1" rather than "<> 0": a value nobody meant as "enabled" (2, 'no', '') must not
// let a disabled account log in.
constexpr char kPassdb[] =
    "SELECT u.password FROM users u JOIN domains d ON d.domain = u.domain "
    "WHERE u.local_part = $1 AND u.domain = $2 AND u.active = 1 AND d.active = 1";
constexpr char kUserdb[] =
    "SELECT u.uid, u.gid, u.home, u.mail, u.quota_bytes FROM users u "
    "JOIN domains d ON d.domain = u.domain "
    "WHERE u.local_part = $1 AND u.domain = $2 AND u.active = 1 AND d.active = 1";
constexpr char kUsers[] =
    "SELECT u.local_part, u.domain, u.uid, u.gid, u.home, u.mail, u.quota_bytes FROM users u "
    "JOIN domains d ON d.domain = u.domain "
    "WHERE u.active = 1 AND d.active = 1 ORDER BY u.domain, u.local_part";
constexpr char kDomainRow[] =
    "SELECT active, alias_for FROM domains WHERE domain = $1";
constexpr char kUserActive[] =
    "SELECT 1 FROM users u JOIN domains d ON d.domain = u.domain "
    "WHERE u.local_part = $1 AND u.domain = $2 AND u.active = 1 AND d.active = 1";
constexpr char kRelay[] =
    "SELECT username, password FROM relay_credentials WHERE label = $1";
constexpr char kSenderLogins[] =
    "SELECT address FROM sender_logins WHERE login IN ($1, $2) ORDER BY address";
// Aliases whose only active destination is this user (in either spelling); never the catch-all,
// which would let one user send as anyone at the domain.
constexpr char kSoleAliases[] =
    "SELECT a.local_part, a.domain FROM aliases a JOIN domains d ON d.domain = a.domain "
    "WHERE a.destination IN ($1, $2) AND a.active = 1 AND d.active = 1 AND a.local_part <> '' "
    "AND NOT EXISTS (SELECT 1 FROM aliases o WHERE o.domain = a.domain AND o.local_part = a.local_part "
    "AND o.active = 1 AND o.destination <> a.destination) ORDER BY a.domain, a.local_part";
constexpr char kSmtpdKeys[] =
    "SELECT DISTINCT key FROM smtpd_values WHERE service = $1 ORDER BY key";
constexpr char kUserExists[] = "SELECT 1 FROM users WHERE local_part = $1 AND domain = $2";

const DirectorySql kSqlite = {
    kPassdb,
    kUserdb,
    kUsers,
    kDomainRow,
    "SELECT destination FROM aliases WHERE local_part = $1 AND domain = $2 AND active = 1 ORDER BY rowid",
    kUserActive,
    kRelay,
    kSenderLogins,
    kSoleAliases,
    "SELECT value FROM smtpd_values WHERE service = $1 AND key = $2 ORDER BY rowid",
    kSmtpdKeys,
    kUserExists,
};

const DirectorySql kPostgresql = {
    kPassdb,
    kUserdb,
    kUsers,
    kDomainRow,
    "SELECT destination FROM aliases WHERE local_part = $1 AND domain = $2 AND active = 1 ORDER BY id",
    kUserActive,
    kRelay,
    kSenderLogins,
    kSoleAliases,
    "SELECT value FROM smtpd_values WHERE service = $1 AND key = $2 ORDER BY id",
    kSmtpdKeys,
    kUserExists,
};

std::string DirectorySql::* field_of(const std::string& name) {
  static const std::map<std::string, std::string DirectorySql::*> fields = {
      {"passdb", &DirectorySql::passdb},
      {"userdb", &DirectorySql::userdb},
      {"users", &DirectorySql::users},
      {"domain", &DirectorySql::domain_row},
      {"alias", &DirectorySql::alias_rows},
      {"user_active", &DirectorySql::user_active},
      {"relay", &DirectorySql::relay},
      {"sender_logins", &DirectorySql::sender_logins},
      {"sole_aliases", &DirectorySql::sole_aliases},
      {"smtpd_values", &DirectorySql::smtpd_values},
      {"smtpd_keys", &DirectorySql::smtpd_keys},
  };
  auto it = fields.find(name);
  return it == fields.end() ? nullptr : it->second;
}

}  // namespace

const DirectorySql& directory_sql(SqlDialect dialect) {
  return dialect == SqlDialect::postgresql ? kPostgresql : kSqlite;
}

const std::vector<std::string>& directory_sql_names() {
  static const std::vector<std::string> names = {"passdb",      "userdb", "users",         "domain",
                                                 "alias",       "user_active", "relay", "sender_logins",
                                                 "sole_aliases", "smtpd_values", "smtpd_keys"};
  return names;
}

DirectorySql with_overrides(DirectorySql base, const std::map<std::string, std::string>& overrides) {
  for (const auto& [name, sql] : overrides) {
    auto field = field_of(name);
    if (!field) throw std::invalid_argument("no directory question named '" + name + "'");
    base.*field = sql;
  }
  if (overrides.count("user_active")) base.user_exists.clear();
  return base;
}

}  // namespace maildict::storage
