// The files an operator already has, read as they are (issue 6): an OpenSMTPD table-sqlite or
// table-postgres configuration (specs/smtpd-tables.md §6.1) and a Dovecot dovecot-sql.conf.ext.
// Each names its database and holds the queries maildictd then runs instead of its own.
#pragma once
#include <string>

#include "storage/existing_schema.hpp"

namespace maildict::conf {

// Both return the database as a maildict URI ("sqlite:/path" or "postgresql:<conninfo>") and
// fill the queries. Throw ConfigError naming the file and line.
std::string read_smtpd_table_file(const std::string& path, storage::SmtpdTableQueries& out);
std::string parse_smtpd_table_file(const std::string& text, const std::string& name, storage::SmtpdTableQueries& out);
std::string read_dovecot_sql_file(const std::string& path, storage::DovecotSqlQueries& out);
std::string parse_dovecot_sql_file(const std::string& text, const std::string& name, storage::DovecotSqlQueries& out);

}  // namespace maildict::conf
