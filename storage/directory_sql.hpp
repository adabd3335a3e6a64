// The SQL behind each directory question, per dialect. The default schema is the same on every
// backend (DESIGN.md §3); only details differ (insertion order: SQLite's rowid, PostgreSQL's
// id column). Every statement takes $n parameters, never spliced text.
#pragma once
#include "storage/sql_session.hpp"

namespace maildict::storage {

struct DirectorySql {
  // $1 local part, $2 domain -> password
  const char* passdb;
  // $1 local part, $2 domain -> uid, gid, home, mail, quota_bytes
  const char* userdb;
  // () -> local_part, domain, uid, gid, home, mail, quota_bytes of every active user
  const char* users;
  // $1 domain -> active, alias_for
  const char* domain_row;
  // $1 local part ('' = catch-all), $2 domain -> destination (in insertion order)
  const char* alias_rows;
  // $1 local part, $2 domain -> a row when the user and its domain are active
  const char* user_active;
  // $1 label -> username, password
  const char* relay;
  // $1 canonical login, $2 delivery name -> address
  const char* sender_logins;
  // $1 canonical login, $2 delivery name -> local_part, domain of aliases pointing only to it
  const char* sole_aliases;
  // $1 service, $2 key -> value (in insertion order)
  const char* smtpd_values;
  // $1 service -> key
  const char* smtpd_keys;
};

const DirectorySql& directory_sql(SqlDialect dialect);

}  // namespace maildict::storage
