#include "server/maildictctl_import.hpp"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "storage/backend_factory.hpp"
#include "storage/directory_import.hpp"
#include "storage/postgres_session.hpp"
#include "storage/sql_session.hpp"
#include "storage/sqlite_session.hpp"

namespace maildict::server {

using namespace maildict::storage;

const char kImportSynopsis[] = "import KIND --from URI [--dry-run] [--strict] [--verbose] [--timeout S]";

void print_import_help(std::FILE* to) {
  std::fprintf(to, R"(Usage: maildictctl import KIND --from URI [--dry-run] [--strict] [--verbose]
                         [--timeout S]

Copies the domains, users, aliases and sender rights of another mail admin
tool's database into the maildict directory, in one transaction.

KIND names the tool that owns the source database:
  postfixadmin  tables domain, alias_domain, mailbox, alias. The alias that
                PostfixAdmin keeps for every mailbox, pointing to itself, is
                redundant in maildict and left out ("ignore"); the pseudo-domain
                ALL of its superadmins is not a mail domain.
  vimbadmin     tables domain, mailbox, alias (same conventions; quota in bytes).
  mailcow       tables domain, alias_domain, mailbox, alias, sender_acl. A
                mailbox with active=2 ("disallow login, accept mail") becomes a
                user without password; an alias with sender_allowed and several
                destinations gives each destination mailbox the right to send
                as it; the destinations null@, spam@ and ham@localhost are
                mailcow-internal and left out.
  mailinabox    (also miab) tables users, aliases and auto_aliases of
                /home/user-data/mail/users.sqlite. The domains are those of the
                users and aliases; permitted_senders become sender rights; an
                explicit alias wins over the automatic one for the same address;
                quotas such as 500M or 2G become bytes.
  modoboa       tables admin_domain, admin_domainalias, admin_mailbox with
                core_user (password, is_active), admin_alias with
                modoboa_admin_aliasrecipient (quota in MB). Its internal alias
                of each mailbox is redundant and left out.

URI is the source database:
  sqlite:/path/to/file.db   an SQLite file (a plain path works too); opened
                            read-only
  postgresql:<conninfo>     a libpq key=value string, e.g.
                            postgresql:host=/run/postgresql dbname=postfix
  postgresql://user@host/db a libpq URI as it is
MySQL and MariaDB, where PostfixAdmin, ViMbAdmin and mailcow usually keep their
data, are not read directly: load a copy into PostgreSQL first (for example
  pgloader mysql://user:pw@host/postfix postgresql:///postfix_copy
or restore a dump converted for PostgreSQL) and import from that copy.

What is imported, and how:
  * Names are lower-cased. Active flags are kept (a disabled domain, mailbox
    or alias stays disabled). An alias domain becomes a domain with alias_for.
  * A goto list of several destinations becomes one alias row per
    destination; "@domain" is the domain's catch-all. A domain-wide redirect
    (a destination "@other.example") is left out: import an alias domain.
  * Password hashes are kept as they are: bare crypt(3) hashes ($2y$/$2b$
    bcrypt, $6$ SHA512-CRYPT, $5$, $1$, $y$ yescrypt, $argon2id$) and Dovecot
    values with a {SCHEME} prefix. An empty password means "receives mail,
    cannot log in".
  * The quota becomes bytes; 0 or a negative value is "no limit".
  * uid, gid, home and mail are not imported: the directory's configured
    defaults apply, as for users added with maildictctl.
  * Rows that cannot be mapped (a hash in an unknown scheme such as clear
    text, Django's pbkdf2 or a bare MD5; an invalid address; a domain the
    source does not list) are reported as "skip" with the reason, and left
    out; the rest is imported unless --strict is given.

The import merges, it never deletes: it adds what is missing and, for rows that
exist, updates only the columns it owns (domain active/alias_for; user
password, quota and active; alias active) when they differ. Running the same
import twice changes nothing the second time. Everything is one transaction:
on any error nothing is written. The running daemon sees the result at once.
An empty directory first gets its tables, as when maildictd starts (also for
a dry run: that writes no rows).

Options:
  --from URI   the source database (required)
  --dry-run    do the whole import, print the report, then roll it back:
               shows exactly what would be added, updated and skipped
  --strict     fail, writing nothing, if any row would be skipped
  --verbose    also list the rows already present and unchanged, and the
               redundant ones left out (counted in the summary either way)
  --timeout S  give up (exit 75, nothing written) when the import has not
               finished after S seconds, lock waits included (default 600)
  -h, --help   print this help

The report has one line per row: its action (add, update, unchanged, ignore,
skip), what it is (domain, alias-domain, user, alias, sender), its name, and
the reason or the changed columns (never a password hash), then a summary.

Exit status:
  0    imported (with --dry-run: would import)
  1    usage error; the source cannot be read or is not a KIND database
  3    --strict and some rows cannot be mapped, or a row in the directory
       conflicts (a constraint refused the write); nothing written
  4    the directory refused permanently (tables missing or not maildict's,
       read-only); nothing written
  75   temporary failure (database locked, timeout, server down); nothing
       written, try again
)");
}

namespace {

bool is_help(const char* a) { return std::strcmp(a, "-h") == 0 || std::strcmp(a, "--help") == 0 || std::strcmp(a, "help") == 0; }

struct Args {
  ImportKind kind = ImportKind::postfixadmin;
  std::string from;
  ImportOptions options;
  bool verbose = false;
};

// Parses argv after the word "import". Returns an exit status when the command ends here
// (help, usage error), nullopt to go on.
std::optional<int> parse(int argc, char** argv, Args& args, std::FILE* out, std::FILE* err) {
  std::optional<ImportKind> kind;
  bool from = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (is_help(argv[i])) {
      print_import_help(out);
      return kImportOk;
    }
    if (a == "--from" || a.starts_with("--from=")) {
      if (a == "--from") {
        if (i + 1 >= argc) {
          std::fprintf(err, "maildictctl import: --from needs a database URI (sqlite:/path or postgresql:<conninfo>)\n");
          return kImportUsage;
        }
        args.from = argv[++i];
      } else {
        args.from = std::string(a.substr(7));
      }
      from = true;
    } else if (a == "--dry-run" || a == "-n") {
      args.options.dry_run = true;
    } else if (a == "--strict") {
      args.options.strict = true;
    } else if (a == "--timeout") {
      char* end = nullptr;
      long secs = i + 1 < argc ? std::strtol(argv[i + 1], &end, 10) : 0;
      if (i + 1 >= argc || !end || *end || secs <= 0 || secs > 86400) {
        std::fprintf(err, "maildictctl import: --timeout needs a number of seconds between 1 and 86400\n");
        return kImportUsage;
      }
      ++i;
      args.options.timeout = std::chrono::seconds(secs);
    } else if (a == "--verbose" || a == "-v") {
      args.verbose = true;
    } else if (a.starts_with("-")) {
      std::fprintf(err, "maildictctl import: unknown option '%s' (see maildictctl import --help)\n", argv[i]);
      return kImportUsage;
    } else if (!kind) {
      kind = parse_import_kind(a);
      if (!kind) {
        std::fprintf(err,
                     "maildictctl import: unknown KIND '%s': expected postfixadmin, vimbadmin, mailcow, mailinabox "
                     "or modoboa\n",
                     argv[i]);
        return kImportUsage;
      }
    } else {
      std::fprintf(err, "maildictctl import: unexpected argument '%s' (see maildictctl import --help)\n", argv[i]);
      return kImportUsage;
    }
  }
  if (!kind) {
    std::fprintf(err, "usage: maildictctl %s\nmaildictctl import: KIND is missing (see maildictctl import --help)\n",
                 kImportSynopsis);
    return kImportUsage;
  }
  if (!from || args.from.empty()) {
    std::fprintf(err, "maildictctl import: --from URI is required: the %s database to read\n", import_kind_name(*kind));
    return kImportUsage;
  }
  args.kind = *kind;
  return std::nullopt;
}

struct Source {
  std::unique_ptr<SqlSession> session;
  std::string sqlite_path;  // set for an SQLite source
};

// Opens the source read-only. Returns an exit status on failure.
std::optional<int> open_source(const std::string& uri, Source& src, std::FILE* err) {
  std::string_view u = uri;
  for (const char* scheme : {"mysql:", "mysql://", "mariadb:", "mariadb://"})
    if (u.starts_with(scheme)) {
      std::fprintf(err,
                   "maildictctl import: MySQL/MariaDB sources are not supported: load a copy into PostgreSQL (e.g. "
                   "with pgloader) or SQLite and import from that (see maildictctl import --help)\n");
      return kImportUsage;
    }
  if (u.starts_with("postgresql:") || u.starts_with("postgres:")) {
    PostgresSessionOptions pg;
    // "postgresql://user@host/db" is already a libpq URI; "postgresql:<conninfo>" as in maildict.conf.
    pg.conninfo = u.starts_with("postgresql://") || u.starts_with("postgres://") ? uri
                                                                                 : std::string(u.substr(u.find(':') + 1));
    pg.application_name = "maildictctl-import";
    pg.statement_timeout = std::chrono::minutes(10);
    try {
      src.session = open_postgres_session(pg, SessionRole::read);
    } catch (const std::exception& e) {
      // A server that is down or refusing connections now may take them later.
      std::fprintf(err, "maildictctl import: cannot connect to the source postgresql:%s: %s\n",
                   describe_conninfo(pg.conninfo).c_str(), e.what());
      return kImportTempFail;
    }
    return std::nullopt;
  }
  std::string path = u.starts_with("sqlite:") ? std::string(u.substr(7)) : uri;
  if (path.empty() || (u.find(':') != std::string_view::npos && !u.starts_with("sqlite:") && !u.starts_with("/") &&
                       !u.starts_with("."))) {
    // Not echoed: a mistyped URI may carry a password.
    std::fprintf(err, "maildictctl import: --from: expected sqlite:/path or postgresql:<conninfo>\n");
    return kImportUsage;
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    std::fprintf(err, "maildictctl import: the source %s does not exist or is not a file\n", path.c_str());
    return kImportUsage;
  }
  try {
    src.session = open_sqlite_session(path, SessionRole::read);
  } catch (const std::exception& e) {
    std::fprintf(err, "maildictctl import: cannot open the source: %s\n", e.what());
    return kImportUsage;
  }
  src.sqlite_path = path;
  return std::nullopt;
}

int exit_status(ImportStatus s) {
  switch (s) {
    case ImportStatus::ok: return kImportOk;
    case ImportStatus::strict_refused:
    case ImportStatus::conflict: return kImportConflict;
    case ImportStatus::temporary: return kImportTempFail;
    case ImportStatus::source_error: return kImportUsage;
    case ImportStatus::target_error: return kImportDbError;
  }
  return kImportUsage;
}

// Names of skipped rows come from the source as stored: a control character in one must not
// rewrite the operator's terminal or split a report line.
std::string printable(const std::string& s) {
  std::string out = s;
  for (auto& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return out;
}

void print_report(const ImportReport& r, bool verbose, std::FILE* out) {
  std::fprintf(out, "import from %s%s\n", import_kind_name(r.kind), r.dry_run ? " (dry run: nothing is written)" : "");
  for (auto& i : r.items) {
    // A large PostfixAdmin has one redundant self-alias per mailbox: those, like the rows that
    // are already there, only clutter the report unless asked for.
    if ((i.action == ImportAction::unchanged || i.action == ImportAction::ignore) && !verbose) continue;
    std::string key = printable(i.key);
    if (i.reason.empty())
      std::fprintf(out, "%-9s %-12s %s\n", import_action_name(i.action), i.what.c_str(), key.c_str());
    else
      std::fprintf(out, "%-9s %-12s %s  (%s)\n", import_action_name(i.action), i.what.c_str(), key.c_str(),
                   printable(i.reason).c_str());
  }
  bool done = r.status == ImportStatus::ok;
  const char* verb = r.dry_run || !done ? "would be " : "";
  std::fprintf(out, "%zu %sadded, %zu %supdated, %zu unchanged, %zu ignored, %zu skipped%s\n",
               r.count(ImportAction::add), verb, r.count(ImportAction::update), verb, r.count(ImportAction::unchanged),
               r.count(ImportAction::ignore), r.count(ImportAction::skip),
               r.dry_run && done ? " (dry run)" : done ? "" : " (nothing written)");
}

}  // namespace

int run_import_command(int argc, char** argv, DirectoryBackend& directory, std::FILE* out, std::FILE* err) {
  Args args;
  if (auto status = parse(argc, argv, args, out, err)) return *status;

  Source src;
  if (auto status = open_source(args.from, src, err)) return *status;

  // The directory itself as source would read and write the same file in one go.
  std::string target = directory.describe();
  if (!src.sqlite_path.empty() && target.starts_with("sqlite:")) {
    std::error_code ec;
    if (std::filesystem::equivalent(src.sqlite_path, target.substr(7), ec)) {
      std::fprintf(err, "maildictctl import: the source %s is the directory itself\n", src.sqlite_path.c_str());
      return kImportUsage;
    }
  }

  std::unique_ptr<SqlSession> session;
  try {
    directory.prepare_schema();  // an empty directory gets its tables, as when maildictd starts
    session = directory.open_session(SessionRole::write);
  } catch (const std::exception& e) {
    // A database that is there but not ours (or newer than us) will not get better by trying
    // again; everything else (down, locked, refused connection) may.
    const bool permanent = dynamic_cast<const SchemaMismatch*>(&e) != nullptr;
    std::fprintf(err, "maildictctl import: cannot open the directory %s: %s\n", target.c_str(), e.what());
    return permanent ? kImportDbError : kImportTempFail;
  }

  ImportReport report = import_directory(args.kind, *src.session, *session, args.options);
  print_report(report, args.verbose, out);
  if (report.status != ImportStatus::ok)
    std::fprintf(err, "maildictctl import: %s\n", report.error.c_str());
  return exit_status(report.status);
}

int run_import_command(int argc, char** argv, const std::string& database_uri, std::FILE* out, std::FILE* err) {
  // Help and usage errors need no database (the second parse, below, is then silent).
  Args args;
  if (auto status = parse(argc, argv, args, out, err)) return *status;
  BackendOptions options;
  options.database = database_uri;
  options.application_name = "maildictctl-import";
  options.statement_timeout = std::chrono::minutes(10);  // one long transaction
  std::unique_ptr<DirectoryBackend> backend;
  try {
    backend = open_backend(options);
  } catch (const std::exception& e) {
    std::fprintf(err, "maildictctl import: %s\n", e.what());
    return kImportUsage;
  }
  return run_import_command(argc, argv, *backend, out, err);
}

}  // namespace maildict::server
