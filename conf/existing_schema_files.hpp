// The files an operator already has, read as they are (issue 6): an OpenSMTPD table-sqlite or
// table-postgres configuration (specs/smtpd-tables.md §6.1) and a Dovecot dovecot-sql.conf.ext.
// Each names its database and holds the queries maildictd then runs instead of its own.
#pragma once
#include <string>
#include <vector>

#include "storage/existing_schema.hpp"

namespace maildict::conf {

// Where an operator wrote something, for messages that point at it: "FILE:LINE (SETTING)".
struct QueryOrigin {
  std::string where;  // "/etc/smtpd/sqlite.conf:7 (query_alias)"
  std::string sql;    // the statement as maildictd runs it (Dovecot variables already parameters)
};
struct FileOrigins {
  std::string database;              // where the database path or conninfo came from
  std::vector<QueryOrigin> queries;  // every query that is used, in file order
};

// Both return the database as a maildict URI ("sqlite:/path" or "postgresql:<conninfo>") and
// fill the queries; `origins`, when given, receives where each came from (--check-config
// prepares the queries and names the line of one that fails). Throw ConfigError naming the
// file and line.
std::string read_smtpd_table_file(const std::string& path, storage::SmtpdTableQueries& out,
                                  FileOrigins* origins = nullptr);
std::string parse_smtpd_table_file(const std::string& text, const std::string& name, storage::SmtpdTableQueries& out,
                                   FileOrigins* origins = nullptr);
std::string read_dovecot_sql_file(const std::string& path, storage::DovecotSqlQueries& out,
                                  FileOrigins* origins = nullptr);
std::string parse_dovecot_sql_file(const std::string& text, const std::string& name, storage::DovecotSqlQueries& out,
                                   FileOrigins* origins = nullptr);

}  // namespace maildict::conf
