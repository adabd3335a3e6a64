// The importer with PostgreSQL on either side, against a private PostgreSQL cluster this test
// starts itself (initdb + postgres on a UNIX socket in a temp directory, as the unprivileged
// `postgres` account when run as root). PostgreSQL sources carry real booleans ('t'/'f') and
// timestamps, which the SQLite tests cannot show. Skipped, with a message, where PostgreSQL's
// server binaries are not installed.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "server/maildictctl_import.hpp"
#include "storage/directory_import.hpp"
#include "storage/password_scheme.hpp"
#include "storage/postgres_backend.hpp"
#include "storage/postgres_session.hpp"
#include "storage/sqlite_directory.hpp"
#include "storage/sqlite_session.hpp"

using namespace maildict::storage;
using namespace std::chrono_literals;

namespace {

std::optional<std::filesystem::path> postgres_bin() {
  std::error_code ec;
  for (auto& entry : std::filesystem::directory_iterator("/usr/lib/postgresql", ec))
    if (std::filesystem::exists(entry.path() / "bin" / "initdb")) return entry.path() / "bin";
  return std::nullopt;
}

// One private cluster for the whole program (initdb takes seconds).
class PrivatePostgres {
 public:
  explicit PrivatePostgres(const std::filesystem::path& bin) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "maildict-import-pg-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    if (geteuid() == 0) {
      // initdb refuses to run as root: the cluster belongs to the package's postgres account.
      passwd* pw = getpwnam("postgres");
      if (!pw) throw std::runtime_error("running as root and there is no postgres account");
      uid_ = pw->pw_uid;
      gid_ = pw->pw_gid;
      if (chown(dir_.c_str(), uid_, gid_) != 0) throw std::runtime_error("cannot chown the cluster directory");
    }
    std::string data = (dir_ / "data").string();
    int rc = wait_for(spawn({(bin / "initdb").string(), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                             "--locale=C", "--no-sync"}));
    if (rc != 0) throw std::runtime_error("initdb failed: " + log());
    pid_ = spawn({(bin / "postgres").string(), "-D", data, "-k", dir_.string(), "-c", "listen_addresses=", "-c",
                  "fsync=off", "-c", "full_page_writes=off"});
    // Readiness, not a timing assertion: the loop ends as soon as the server takes connections,
    // and fails only if it never does (or exits).
    for (int i = 0; i < 600; ++i) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("postgres exited: " + log());
      }
      try {
        open_postgres_session({conninfo("postgres")}, SessionRole::write);
        return;
      } catch (const std::exception&) {
        std::this_thread::sleep_for(100ms);
      }
    }
    throw std::runtime_error("postgres did not start: " + log());
  }

  ~PrivatePostgres() {
    if (pid_ > 0) {
      kill(pid_, SIGINT);  // fast shutdown
      int status = 0;
      waitpid(pid_, &status, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string socket_dir() const { return dir_.string(); }

  std::string conninfo(const std::string& dbname) const {
    return "host=" + dir_.string() + " dbname=" + dbname + " user=postgres connect_timeout=5";
  }

  // A fresh, empty database.
  std::string create_database(const std::string& name) {
    auto s = open_postgres_session({conninfo("postgres")}, SessionRole::write);
    SqlError err;
    // Names come from the test itself ([a-z0-9_]); CREATE DATABASE takes no parameters.
    if (!run(*s, "CREATE DATABASE " + name, {}, nullptr, err)) throw std::runtime_error(err.message);
    return conninfo(name);
  }

 private:
  pid_t spawn(std::vector<std::string> argv) {
    if (geteuid() == 0) {
      std::vector<std::string> wrap = {"setpriv", "--reuid", std::to_string(uid_), "--regid", std::to_string(gid_),
                                       "--init-groups", "--"};
      argv.insert(argv.begin(), wrap.begin(), wrap.end());
    }
    std::string logfile = (dir_ / "log").string();
    pid_t pid = fork();
    if (pid == 0) {
      int fd = open(logfile.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0666);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      if (chdir(dir_.c_str()) != 0) _exit(126);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execvp(args[0], args.data());
      _exit(127);
    }
    return pid;
  }

  static int wait_for(pid_t pid) {
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  std::string log() const {
    std::ifstream in(dir_ / "log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::filesystem::path dir_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  pid_t pid_ = -1;
};

PrivatePostgres* cluster() {
  static std::unique_ptr<PrivatePostgres> pg = []() -> std::unique_ptr<PrivatePostgres> {
    auto bin = postgres_bin();
    if (!bin) return nullptr;
    return std::make_unique<PrivatePostgres>(*bin);
  }();
  return pg.get();
}

void exec(SqlSession& s, const std::string& sql, std::initializer_list<SqlValue> params = {}) {
  SqlError err;
  INFO(sql);
  REQUIRE_MESSAGE(run(s, sql, params, nullptr, err), err.message);
}

std::set<std::string> rows(SqlSession& s, const std::string& sql) {
  SqlRows out;
  SqlError err;
  REQUIRE_MESSAGE(run(s, sql, {}, &out, err), err.message);
  std::set<std::string> lines;
  for (auto& r : out) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) line += (i ? "|" : "") + r[i].value_or("NULL");
    lines.insert(line);
  }
  return lines;
}

Deadline soon() { return Clock::now() + 5s; }

// modoboa as it lives on PostgreSQL (Django's types: boolean, timestamptz).
void make_modoboa(SqlSession& s, const std::string& sha512) {
  exec(s, "CREATE TABLE admin_domain (id serial PRIMARY KEY, name varchar(100) UNIQUE, quota integer, "
          "default_mailbox_quota integer, enabled boolean NOT NULL, type varchar(20), enable_dns_checks boolean)");
  exec(s, "INSERT INTO admin_domain (id, name, quota, enabled, type) VALUES (1, 'Example.org', 0, true, 'domain'), "
          "(2, 'closed.example', 0, false, 'domain')");
  exec(s, "CREATE TABLE admin_domainalias (id serial PRIMARY KEY, name varchar(100) UNIQUE, target_id integer, "
          "enabled boolean NOT NULL)");
  exec(s, "INSERT INTO admin_domainalias (name, target_id, enabled) VALUES ('mirror.example', 1, true)");
  exec(s, "CREATE TABLE core_user (id serial PRIMARY KEY, username varchar(254) UNIQUE, email varchar(254), "
          "password varchar(256), is_active boolean NOT NULL, master_user boolean NOT NULL DEFAULT false)");
  exec(s, "INSERT INTO core_user (id, username, email, password, is_active) VALUES "
          "(1, 'alice@example.org', 'alice@example.org', $1, true), "
          "(2, 'bob@example.org', 'bob@example.org', $1, false), "
          "(3, 'django@example.org', 'django@example.org', 'pbkdf2_sha256$1$s$h', true)",
       {"{SHA512-CRYPT}" + sha512});
  exec(s, "CREATE TABLE admin_mailbox (id serial PRIMARY KEY, address varchar(252), quota integer, "
          "use_domain_quota boolean, is_send_only boolean, domain_id integer, user_id integer)");
  exec(s, "INSERT INTO admin_mailbox (id, address, quota, use_domain_quota, is_send_only, domain_id, user_id) VALUES "
          "(1, 'alice', 100, false, false, 1, 1), (2, 'bob', 0, false, false, 1, 2), "
          "(3, 'django', 0, false, false, 1, 3)");
  exec(s, "CREATE TABLE admin_alias (id serial PRIMARY KEY, address varchar(254), domain_id integer, "
          "enabled boolean NOT NULL, internal boolean NOT NULL, description text, expire_at timestamptz)");
  exec(s, "INSERT INTO admin_alias (id, address, domain_id, enabled, internal, expire_at) VALUES "
          "(1, 'alice@example.org', 1, true, true, NULL), (2, 'sales@example.org', 1, true, false, NULL), "
          "(3, '@example.org', 1, true, false, now() - interval '1 day'), "
          "(4, 'old@example.org', 1, false, false, NULL)");
  exec(s, "CREATE TABLE modoboa_admin_aliasrecipient (id serial PRIMARY KEY, address varchar(254), alias_id integer, "
          "r_mailbox_id integer, r_alias_id integer)");
  exec(s, "INSERT INTO modoboa_admin_aliasrecipient (address, alias_id, r_mailbox_id) VALUES "
          "('alice@example.org', 1, 1), ('alice@example.org', 2, 1), ('partner@else.example', 2, NULL), "
          "('alice@example.org', 3, 1), ('bob@example.org', 4, 2)");
}

}  // namespace

TEST_CASE("import on PostgreSQL: modoboa source on PostgreSQL into a PostgreSQL directory") {
  if (!postgres_bin()) {
    MESSAGE("PostgreSQL server binaries not installed: skipped");
    return;
  }
  PrivatePostgres* pg = cluster();
  REQUIRE(pg);
  const std::string sha512 = hash_password("alice-secret", "sha512-crypt");
  std::string source_conninfo = pg->create_database("modoboa_src");
  std::string target_conninfo = pg->create_database("maildict_dir");
  {
    auto s = open_postgres_session({source_conninfo}, SessionRole::write);
    make_modoboa(*s, sha512);
  }
  PostgresOptions options;
  options.conninfo = target_conninfo;
  PostgresBackend backend(options, UserDefaults{});
  backend.prepare_schema();

  auto import = [&](ImportOptions o) {
    auto source = open_postgres_session({source_conninfo}, SessionRole::read);
    auto target = backend.open_session(SessionRole::write);
    return import_directory(ImportKind::modoboa, *source, *target, o);
  };

  auto dry = import({.dry_run = true});
  CHECK(dry.status == ImportStatus::ok);
  CHECK(dry.changes() > 0);
  auto check = backend.open_session(SessionRole::read);
  CHECK(rows(*check, "SELECT count(*) FROM domains") == std::set<std::string>{"0"});

  auto r = import({});
  REQUIRE(r.status == ImportStatus::ok);
  CHECK(r.committed);
  CHECK(rows(*check, "SELECT domain, active, alias_for FROM domains") ==
        std::set<std::string>{"example.org|1|NULL", "closed.example|0|NULL", "mirror.example|1|example.org"});
  CHECK(rows(*check, "SELECT local_part, domain, password, quota_bytes, active FROM users") ==
        std::set<std::string>{"alice|example.org|{SHA512-CRYPT}" + sha512 + "|104857600|1",
                              "bob|example.org|{SHA512-CRYPT}" + sha512 + "|NULL|0"});
  CHECK(rows(*check, "SELECT local_part, domain, destination, active FROM aliases") ==
        std::set<std::string>{"sales|example.org|alice@example.org|1", "sales|example.org|partner@else.example|1",
                              "|example.org|alice@example.org|0",  // expired
                              "old|example.org|bob@example.org|0"});
  CHECK(r.count(ImportAction::skip) == 1);  // django's pbkdf2 hash

  auto again = import({});
  CHECK(again.status == ImportStatus::ok);
  CHECK(again.changes() == 0);

  auto conn = backend.connect();
  auto alice = conn->passdb("alice@example.org", soon());
  REQUIRE(alice.outcome == Outcome::found);
  CHECK(alice.value.password == std::optional<std::string>("{SHA512-CRYPT}" + sha512));
  auto sales = conn->resolve_recipient("sales@mirror.example", soon());
  REQUIRE(sales.outcome == Outcome::found);
  CHECK(sales.value == std::vector<std::string>{"alice_example.org", "partner@else.example"});

  // --strict on PostgreSQL rolls back too.
  {
    auto s = open_postgres_session({source_conninfo}, SessionRole::write);
    exec(*s, "UPDATE admin_domain SET enabled = false WHERE id = 1");
  }
  auto strict = import({.strict = true});
  CHECK(strict.status == ImportStatus::strict_refused);
  CHECK(rows(*check, "SELECT active FROM domains WHERE domain = 'example.org'") == std::set<std::string>{"1"});
}

TEST_CASE("import on PostgreSQL: PostfixAdmin on PostgreSQL (boolean active) into an SQLite directory") {
  if (!postgres_bin()) {
    MESSAGE("PostgreSQL server binaries not installed: skipped");
    return;
  }
  PrivatePostgres* pg = cluster();
  REQUIRE(pg);
  std::string source_conninfo = pg->create_database("postfixadmin_src");
  {
    auto s = open_postgres_session({source_conninfo}, SessionRole::write);
    exec(*s, "CREATE TABLE domain (domain varchar(255) PRIMARY KEY, description varchar(255), active boolean NOT NULL)");
    exec(*s, "INSERT INTO domain VALUES ('example.org', '', true), ('off.example', '', false), ('ALL', '', true)");
    exec(*s, "CREATE TABLE alias_domain (alias_domain varchar(255) PRIMARY KEY, target_domain varchar(255), "
             "active boolean NOT NULL)");
    exec(*s, "INSERT INTO alias_domain VALUES ('alias.example', 'example.org', true)");
    exec(*s, "CREATE TABLE mailbox (username varchar(255) PRIMARY KEY, password varchar(255), name varchar(255), "
             "quota bigint, active boolean NOT NULL)");
    exec(*s, "INSERT INTO mailbox VALUES ('alice@example.org', '$2y$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ012', "
             "'A', 2048, true), ('carl@off.example', '$6$s$h', 'C', 0, true)");
    exec(*s, "CREATE TABLE alias (address varchar(255) PRIMARY KEY, goto text, active boolean NOT NULL)");
    exec(*s, "INSERT INTO alias VALUES ('alice@example.org', 'alice@example.org', true), "
             "('list@example.org', 'alice@example.org,carl@off.example', false)");
  }
  std::string t = (std::filesystem::temp_directory_path() / ("maildict-import-pg-target-" + std::to_string(getpid()) + ".db")).string();
  std::filesystem::remove(t);
  SqliteBackend backend(t, UserDefaults{});
  backend.prepare_schema();
  auto source = open_postgres_session({source_conninfo}, SessionRole::read);
  auto target = open_sqlite_session(t, SessionRole::write);
  auto r = import_directory(ImportKind::postfixadmin, *source, *target, {});
  INFO(r.error);
  REQUIRE(r.status == ImportStatus::ok);
  auto check = open_sqlite_session(t, SessionRole::read);
  CHECK(rows(*check, "SELECT domain, active, alias_for FROM domains") ==
        std::set<std::string>{"example.org|1|NULL", "off.example|0|NULL", "alias.example|1|example.org"});
  CHECK(rows(*check, "SELECT local_part, domain, quota_bytes, active FROM users") ==
        std::set<std::string>{"alice|example.org|2048|1", "carl|off.example|NULL|1"});
  CHECK(rows(*check, "SELECT local_part, domain, destination, active FROM aliases") ==
        std::set<std::string>{"list|example.org|alice@example.org|0", "list|example.org|carl@off.example|0"});
  auto again = import_directory(ImportKind::postfixadmin, *source, *target, {});
  CHECK(again.changes() == 0);

  // The command, with the source as a libpq URI.
  std::string uri = "postgresql:///postfixadmin_src?host=" + pg->socket_dir() + "&user=postgres";
  std::vector<std::string> args = {"import", "postfixadmin", "--from", uri};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  std::FILE* out = std::tmpfile();
  REQUIRE(out);
  int status = maildict::server::run_import_command(static_cast<int>(argv.size()), argv.data(), "sqlite:" + t, out, out);
  std::rewind(out);
  char buf[8192] = {};
  std::string printed(buf, std::fread(buf, 1, sizeof buf - 1, out));
  std::fclose(out);
  INFO(printed);
  CHECK(status == 0);
  CHECK(printed.find("0 added, 0 updated, 7 unchanged") != std::string::npos);
  std::filesystem::remove(t);
  std::filesystem::remove(t + "-wal");
  std::filesystem::remove(t + "-shm");
}
