// `maildictctl import KIND --from URI [--dry-run] [--strict] [--verbose]`: the command-line
// face of storage/directory_import.hpp. Parses the arguments, opens the source database, runs
// the import into the directory and prints the report. maildictctl's dispatcher calls it.
#pragma once
#include <cstdio>
#include <string>

#include "storage/directory.hpp"

namespace maildict::server {

// Exit statuses (also in the help text), the same numbers as maildictctl's other commands.
constexpr int kImportOk = 0;
constexpr int kImportUsage = 1;      // usage error, unreadable source or not the named tool's database
constexpr int kImportConflict = 3;   // --strict with unmappable rows, or a row in the way in the directory
constexpr int kImportDbError = 4;    // the directory refused permanently (schema missing or not maildict's)
constexpr int kImportTempFail = 75;  // EX_TEMPFAIL: locked, timed out, server down; nothing written

// The one-line synopsis, for maildictctl's own command list.
extern const char kImportSynopsis[];

// The full help text (what `maildictctl import --help` prints).
void print_import_help(std::FILE* to);

// argv[0] is the word "import"; argv[1..] its arguments. `directory` is the target (its schema
// is created when the database is empty). Prints the report to `out` and errors to `err`.
int run_import_command(int argc, char** argv, storage::DirectoryBackend& directory, std::FILE* out = stdout,
                       std::FILE* err = stderr);

// The same with the target given as a database URI ("sqlite:/path" or "postgresql:<conninfo>",
// as `database` in maildict.conf).
int run_import_command(int argc, char** argv, const std::string& database_uri, std::FILE* out = stdout,
                       std::FILE* err = stderr);

}  // namespace maildict::server
