// The SQL behind each directory question, per dialect. The default schema is the same on every
// backend (DESIGN.md §3); only details differ (insertion order: SQLite's rowid, PostgreSQL's
// id column). Every statement takes $n parameters, never spliced text.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "storage/sql_session.hpp"

namespace maildict::storage {

struct DirectorySql {
  // $1 local part, $2 domain -> password
  std::string passdb;
  // $1 local part, $2 domain -> uid, gid, home, mail, quota_bytes
  std::string userdb;
  // () -> local_part, domain, uid, gid, home, mail, quota_bytes of every active user
  std::string users;
  // $1 domain -> active, alias_for
  std::string domain_row;
  // $1 local part ('' = catch-all), $2 domain -> destination (in insertion order)
  std::string alias_rows;
  // $1 local part, $2 domain -> a row when the user and its domain are active
  std::string user_active;
  // $1 label -> username, password
  std::string relay;
  // $1 canonical login, $2 delivery name -> address
  std::string sender_logins;
  // $1 canonical login, $2 delivery name -> local_part, domain of aliases pointing only to it
  std::string sole_aliases;
  // $1 service, $2 key -> value (in insertion order)
  std::string smtpd_values;
  // $1 service -> key
  std::string smtpd_keys;
  // $1 local part, $2 domain -> a row when the user exists at all (active or not). Asked only
  // after user_active found nothing, so a row means a disabled user, whose mail is refused
  // rather than handed to a catch-all (DESIGN.md §3). Not replaceable on its own: empty (the
  // check is skipped) when user_active is replaced, since the default schema may not exist.
  std::string user_exists;
};

// The default schema's SQL for a dialect.
const DirectorySql& directory_sql(SqlDialect dialect);

// The names an operator uses to replace a question's SQL (maildict.conf `sql_<name> = ...`):
// passdb, userdb, users, domain, alias, user_active, relay, sender_logins, sole_aliases,
// smtpd_values, smtpd_keys. Each replacement takes the same $n parameters and returns the
// same columns, in the same order, as the default it replaces.
const std::vector<std::string>& directory_sql_names();

// `base` with the named statements replaced. Throws std::invalid_argument for an unknown name.
DirectorySql with_overrides(DirectorySql base, const std::map<std::string, std::string>& overrides);

}  // namespace maildict::storage
