// `maildictctl import` as the dispatcher calls it (server/maildictctl_import.hpp): arguments,
// report, exit statuses, against real SQLite files. The mapping itself is tested in
// storage_directory_import_test.cpp.
#include <doctest/doctest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <vector>

#include "server/maildictctl_import.hpp"
#include "storage/sqlite_directory.hpp"

using namespace maildict::server;
using maildict::storage::SqliteBackend;
using maildict::storage::UserDefaults;

namespace {

const std::filesystem::path& dir() {
  static const std::filesystem::path d = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "maildict-import-cli-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    return std::filesystem::path(tmpl);
  }();
  static const struct Cleanup {
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);
    }
  } cleanup;
  return d;
}

std::string fresh(const std::string& stem) {
  static int n = 0;
  return (dir() / (stem + std::to_string(++n) + ".db")).string();
}

void sql(const std::string& path, const char* text) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* msg = nullptr;
  int rc = sqlite3_exec(db, text, nullptr, nullptr, &msg);
  std::string why = msg ? msg : "";
  sqlite3_free(msg);
  sqlite3_close(db);
  REQUIRE_MESSAGE(rc == SQLITE_OK, why);
}

std::string scalar(const std::string& path, const char* text) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  std::string out;
  if (sqlite3_prepare_v2(db, text, -1, &s, nullptr) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
    out = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
  sqlite3_finalize(s);
  sqlite3_close(db);
  return out;
}

// A small PostfixAdmin database: one domain, two mailboxes (one with a clear-text password
// PostfixAdmin can be configured to store, which maildict will not import), a list alias.
std::string postfixadmin(bool with_bad_row) {
  std::string p = fresh("pfa");
  sql(p,
      "CREATE TABLE domain (domain TEXT PRIMARY KEY, description TEXT, active INTEGER);"
      "INSERT INTO domain VALUES ('example.org', 'x', 1);"
      "CREATE TABLE alias_domain (alias_domain TEXT PRIMARY KEY, target_domain TEXT, active INTEGER);"
      "CREATE TABLE mailbox (username TEXT PRIMARY KEY, password TEXT, name TEXT, quota INTEGER, active INTEGER);"
      "INSERT INTO mailbox VALUES ('alice@example.org', '{SHA512-CRYPT}$6$abc$def', 'Alice', 0, 1);"
      "CREATE TABLE alias (address TEXT PRIMARY KEY, goto TEXT, active INTEGER);"
      "INSERT INTO alias VALUES ('alice@example.org', 'alice@example.org', 1);"
      "INSERT INTO alias VALUES ('list@example.org', 'alice@example.org,friend@else.example', 1);");
  if (with_bad_row) sql(p, "INSERT INTO mailbox VALUES ('bob@example.org', 'secret', 'Bob', 0, 1);");
  return p;
}

std::string directory() {
  std::string p = fresh("target");
  SqliteBackend(p, UserDefaults{}).prepare_schema();
  return p;
}

struct Run {
  int status = -1;
  std::string out;
  std::string err;
};

std::string slurp(std::FILE* f) {
  std::rewind(f);
  std::string s;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  std::fclose(f);
  return s;
}

Run run(std::vector<std::string> args, const std::string& target_uri) {
  args.insert(args.begin(), "import");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::FILE* out = std::tmpfile();
  std::FILE* err = std::tmpfile();
  REQUIRE(out);
  REQUIRE(err);
  Run r;
  r.status = run_import_command(static_cast<int>(args.size()), argv.data(), target_uri, out, err);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("maildictctl import: help") {
  for (const char* h : {"--help", "-h"}) {
    auto r = run({h}, "sqlite:/nonexistent/never-opened.db");
    CHECK(r.status == 0);
    CHECK(has(r.out, "Usage: maildictctl import KIND --from URI"));
    CHECK(has(r.out, "MySQL"));
    CHECK(has(r.out, "Exit status"));
    for (const char* kind : {"postfixadmin", "vimbadmin", "mailcow", "mailinabox", "modoboa"}) CHECK(has(r.out, kind));
  }
}

TEST_CASE("maildictctl import: usage errors exit 1 and touch nothing") {
  std::string t = directory();
  std::string uri = "sqlite:" + t;
  std::string src = postfixadmin(false);
  struct Case {
    std::vector<std::string> args;
    const char* message;
  };
  for (const Case& c : std::initializer_list<Case>{
           {{}, "KIND is missing"},
           {{"iredmail", "--from", src}, "unknown KIND 'iredmail'"},
           {{"postfixadmin"}, "--from URI is required"},
           {{"postfixadmin", "--from"}, "--from needs a database URI"},
           {{"postfixadmin", "--from", src, "--force"}, "unknown option '--force'"},
           {{"postfixadmin", "--from", src, "extra"}, "unexpected argument 'extra'"},
           {{"postfixadmin", "--from", "mysql://root@localhost/postfix"}, "MySQL/MariaDB sources are not supported"},
           {{"postfixadmin", "--from", "sqlite:" + (dir() / "missing.db").string()}, "does not exist"},
           {{"postfixadmin", "--from", "ldap://x"}, "expected sqlite:/path or postgresql:<conninfo>"},
           {{"postfixadmin", "--from", src, "--timeout", "soon"}, "--timeout needs a number"},
           {{"postfixadmin", "--from", t}, "is the directory itself"},
       }) {
    CAPTURE(c.message);
    auto r = run(c.args, uri);
    CHECK(r.status == 1);
    CHECK(has(r.err, c.message));
  }
  CHECK(scalar(t, "SELECT count(*) FROM domains") == "0");
}

TEST_CASE("maildictctl import: dry run, real run, second run") {
  std::string t = directory();
  std::string uri = "sqlite:" + t;
  std::string src = postfixadmin(false);

  auto dry = run({"postfixadmin", "--from", "sqlite:" + src, "--dry-run"}, uri);
  INFO(dry.out, dry.err);
  CHECK(dry.status == 0);
  CHECK(has(dry.out, "dry run"));
  CHECK(has(dry.out, "add       user         alice@example.org"));
  CHECK(has(dry.out, "add       alias        list@example.org -> friend@else.example"));
  CHECK_FALSE(has(dry.out, "ignore    "));  // redundant rows are only counted unless --verbose
  CHECK(has(dry.out, "4 would be added, 0 would be updated, 0 unchanged, 1 ignored, 0 skipped"));
  CHECK_FALSE(has(dry.out, "$6$"));  // never a hash in the report
  CHECK(scalar(t, "SELECT count(*) FROM users") == "0");

  auto real = run({"postfixadmin", "--from", src}, uri);  // a plain path is an SQLite file
  CHECK(real.status == 0);
  CHECK(has(real.out, "4 added, 0 updated, 0 unchanged"));
  CHECK(scalar(t, "SELECT password FROM users WHERE local_part = 'alice'") == "{SHA512-CRYPT}$6$abc$def");

  auto again = run({"postfixadmin", "--from=sqlite:" + src}, uri);
  CHECK(again.status == 0);
  CHECK(has(again.out, "0 added, 0 updated, 4 unchanged"));
  CHECK_FALSE(has(again.out, "unchanged domain"));  // listed only with --verbose
  auto verbose = run({"postfixadmin", "--from", src, "--verbose"}, uri);
  CHECK(has(verbose.out, "unchanged domain       example.org"));
  CHECK(has(verbose.out, "ignore    alias        alice@example.org  (redundant"));
}

TEST_CASE("maildictctl import: unmappable rows are skipped, or refused with --strict (exit 3)") {
  std::string src = postfixadmin(true);

  std::string strict_target = directory();
  auto strict = run({"postfixadmin", "--from", src, "--strict"}, "sqlite:" + strict_target);
  CHECK(strict.status == 3);
  CHECK(has(strict.out, "skip      user         bob@example.org  (password hash in an unknown scheme"));
  CHECK(has(strict.out, "(nothing written)"));
  CHECK(has(strict.err, "--strict"));
  CHECK(scalar(strict_target, "SELECT count(*) FROM domains") == "0");

  std::string t = directory();
  auto lenient = run({"postfixadmin", "--from", src}, "sqlite:" + t);
  CHECK(lenient.status == 0);
  CHECK(has(lenient.out, "1 skipped"));
  CHECK(scalar(t, "SELECT group_concat(local_part) FROM users") == "alice");
}

TEST_CASE("maildictctl import: a source of another tool is exit 1 with the missing table named") {
  std::string t = directory();
  auto r = run({"mailcow", "--from", postfixadmin(false)}, "sqlite:" + t);
  CHECK(r.status == 1);
  INFO(r.err);
  CHECK(has(r.err, "reading sender_acl from the mailcow database"));
  CHECK(has(r.err, "no such table: sender_acl"));
  CHECK(scalar(t, "SELECT count(*) FROM domains") == "0");
}

TEST_CASE("maildictctl import: a locked directory is a temporary failure (exit 75), nothing written") {
  std::string t = directory();
  std::string src = postfixadmin(false);
  sqlite3* holder = nullptr;
  REQUIRE(sqlite3_open(t.c_str(), &holder) == SQLITE_OK);
  REQUIRE(sqlite3_exec(holder, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  auto r = run({"postfixadmin", "--from", src, "--timeout", "1"}, "sqlite:" + t);
  sqlite3_exec(holder, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(holder);
  INFO(r.out, r.err);
  CHECK(r.status == 75);
  CHECK(scalar(t, "SELECT count(*) FROM domains") == "0");
}

TEST_CASE("maildictctl import: a control character in a source name cannot forge report lines") {
  std::string src = postfixadmin(false);
  sql(src, "INSERT INTO mailbox VALUES ('x' || char(10) || 'add       user         forged@example.org', "
           "'{SHA512-CRYPT}$6$abc$def', 'X', 0, 1);");
  auto r = run({"postfixadmin", "--from", src, "--dry-run"}, "sqlite:" + directory());
  CHECK(r.status == 0);
  CHECK(has(r.out, "skip      user         x?add       user         forged@example.org  (not a valid address)"));
  CHECK_FALSE(has(r.out, "\nadd       user         forged@example.org"));
}

TEST_CASE("maildictctl import: a directory that is not maildict's is exit 4, nothing written") {
  std::string foreign = postfixadmin(false);  // someone else's tables where the directory should be
  auto r = run({"postfixadmin", "--from", postfixadmin(false)}, "sqlite:" + foreign);
  CHECK(r.status == 4);
  CHECK(has(r.err, "not maildict's"));
  CHECK(scalar(foreign, "SELECT count(*) FROM sqlite_master WHERE name = 'users'") == "0");
}
