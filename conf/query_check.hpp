// Configuration errors found at start, not at the first lookup (issue 12): the operator's own
// statements (sql_<question> settings, the queries of an existing table-sqlite/table-postgres
// or dovecot-sql file) are prepared against the database before maildictd serves, so a typo is
// reported with the file, line and setting it is on instead of answering F to every lookup.
#pragma once
#include <string>
#include <vector>

#include "conf/config.hpp"
#include "storage/directory.hpp"

namespace maildict::conf {

struct QueryCheck {
  // A statement the database rejects (syntax, unknown table or column): maildictd refuses to
  // start and --check-config exits 1. "FILE:LINE (SETTING): cannot be prepared: WHY".
  std::vector<std::string> errors;
  // The database could not be asked (a SQLite file not created yet, PostgreSQL down): maildictd
  // starts and answers temporary failures until it is back, so this is no reason to refuse.
  std::vector<std::string> warnings;
};

// Opens the database through `backend` (never creating a SQLite file) and prepares every
// statement in config.operator_queries. A SQLite file that is missing is a warning naming
// where its path came from (maildictd creates its own schema's file at start).
QueryCheck check_queries(const Config& config, storage::DirectoryBackend& backend);

}  // namespace maildict::conf
