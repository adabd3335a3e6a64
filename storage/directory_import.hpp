// Import from another mail admin tool's database (PostfixAdmin, ViMbAdmin, mailcow,
// Mail-in-a-Box, modoboa; their schemas: specs/landscape.md §5) into maildict's directory
// (DESIGN.md §3). A pure library: it reads the source through one SqlSession and writes the
// target through another, so either may be SQLite or PostgreSQL.
//
// The import is a merge, never a replacement: it adds rows that are missing, updates the few
// columns it owns (domains.active/alias_for, users.password/quota_bytes/active,
// aliases.active) when they differ, and never deletes anything or touches uid/gid/home/mail.
// Running it twice therefore changes nothing the second time. All writes happen in one write
// transaction on the target, committed only when everything went through (and never in a dry
// run), so a failure leaves the target exactly as it was.
#pragma once
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "storage/sql_session.hpp"

namespace maildict::storage {

enum class ImportKind { postfixadmin, vimbadmin, mailcow, mailinabox, modoboa };

// "postfixadmin", "vimbadmin", "mailcow", "mailinabox" (also "miab"), "modoboa"; case-insensitive.
std::optional<ImportKind> parse_import_kind(std::string_view name);
const char* import_kind_name(ImportKind kind);

struct ImportOptions {
  bool dry_run = false;  // do every read and write, report, then roll back
  bool strict = false;   // any row that cannot be mapped makes the whole import fail
  // Bounds the whole import (lock waits included); past it the import fails temporarily.
  std::chrono::seconds timeout{600};
};

// What happened (or would happen, in a dry run) to one item.
enum class ImportAction {
  add,        // a new row in the target
  update,     // an existing target row whose owned columns differed
  unchanged,  // already in the target exactly so
  ignore,     // redundant in maildict (e.g. PostfixAdmin's self-alias of a mailbox): nothing to do
  skip,       // cannot be mapped (unknown hash, invalid address, ...): not imported, see `reason`
};
const char* import_action_name(ImportAction action);

struct ImportItem {
  std::string what;  // "domain", "alias-domain", "user", "alias", "sender"
  std::string key;   // e.g. "john@example.org", "sales@example.org -> john@example.org"
  ImportAction action = ImportAction::unchanged;
  std::string reason;  // for update: which columns; for ignore/skip: why. Never a hash.
};

enum class ImportStatus {
  ok,              // committed (or, in a dry run, would commit)
  strict_refused,  // --strict and some rows were skipped: nothing written
  source_error,    // the source is not the expected schema, or a value in it is unusable
  conflict,        // the target refused a write as a constraint violation (a row in the way)
  target_error,    // the target is unusable (missing schema, bad SQL, read-only)
  temporary,       // lock, timeout, lost connection: nothing written, try again later
};

struct ImportReport {
  ImportKind kind = ImportKind::postfixadmin;
  bool dry_run = false;
  ImportStatus status = ImportStatus::ok;
  std::string error;  // set unless status is ok; safe to print (no values, no hashes)
  bool committed = false;
  std::vector<ImportItem> items;  // domains, users, aliases, senders; by name within each

  std::size_t count(ImportAction action) const;
  std::size_t count(std::string_view what, ImportAction action) const;
  // add + update: what a second run must bring down to zero.
  std::size_t changes() const { return count(ImportAction::add) + count(ImportAction::update); }
};

// Runs one import. Never throws for database trouble (it is in the report); the source is read
// in one read transaction, the target written in one write transaction.
ImportReport import_directory(ImportKind kind, SqlSession& source, SqlSession& target, const ImportOptions& options);

// A hash maildict can hand to Dovecot (and, for the crypt family, to smtpd): a bare crypt(3)
// string ($1$, $5$, $6$, $2a$/$2b$/$2y$, $y$, $gy$, $7$, $argon2i$, $argon2id$) or one with a
// Dovecot {SCHEME} prefix of a scheme Dovecot knows. Exposed for the tests.
bool importable_password_hash(std::string_view stored);

}  // namespace maildict::storage
