#include <doctest/doctest.h>

#include "conf/config.hpp"

#include <unistd.h>

#include <cstdlib>
#include <fstream>

using maildict::conf::ConfigError;
using maildict::conf::parse_config;

namespace {
std::string error_of(const std::string& text) {
  try {
    parse_config(text, "test.conf");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("the shipped example configuration parses and keeps its documented values") {
  auto c = maildict::conf::load_config(MAILDICT_SOURCE_DIR "/conf/maildict.conf");
  CHECK(c.socket_path == "/run/maildict/dict.sock");
  CHECK(c.socket_mode == 0660);
  CHECK(c.socket_group == "opensmtpd");
  CHECK(c.request_timeout == std::chrono::seconds(2));
  CHECK(c.max_line_length == 65536);
  CHECK(c.defaults.home == "/var/vmail/%d/%n");
  CHECK(c.defaults.mail == "maildir:~/Maildir");
  CHECK(c.defaults.recipient_delimiter == "+");
  CHECK(maildict::conf::sqlite_path_of(c) == "/var/lib/maildict/directory.db");
}

TEST_CASE("values with units, comments and whitespace") {
  auto c = parse_config(
      "# comment\n\n  request_timeout = 250ms  # trailing comment\n"
      "idle_timeout=5min\nmax_line_length = 128k\ncache_ttl = 3\n"
      "default_mail = maildir:~/Mail#keep\nsocket_mode = 0666\n",
      "t.conf");
  CHECK(c.request_timeout == std::chrono::milliseconds(250));
  CHECK(c.idle_timeout == std::chrono::minutes(5));
  CHECK(c.max_line_length == 128 * 1024);
  CHECK(c.cache_ttl == std::chrono::seconds(3));
  CHECK(c.defaults.mail == "maildir:~/Mail#keep");
  CHECK(c.socket_mode == 0666);
}

TEST_CASE("recipient_delimiter: several characters, empty turns it off, '@' is refused") {
  CHECK(parse_config("recipient_delimiter = +-\n", "t.conf").defaults.recipient_delimiter == "+-");
  CHECK(parse_config("recipient_delimiter =\n", "t.conf").defaults.recipient_delimiter == "");
  CHECK_THROWS_AS(parse_config("recipient_delimiter = +@\n", "t.conf"), maildict::conf::ConfigError);
}

TEST_CASE("errors name the file, the line and the setting") {
  CHECK(error_of("socket = /tmp/x\nbogus = 1\n") == "test.conf:2: unknown setting 'bogus'");
  CHECK(error_of("\n\nrequest_timeout = fast\n").starts_with("test.conf:3: request_timeout: "));
  CHECK(error_of("request_timeout = 2 fortnights\n").find("unknown duration unit") != std::string::npos);
  CHECK(error_of("socket = relative/path\n").starts_with("test.conf:1: socket: "));
  CHECK(error_of("database = mysql:/x\n").starts_with("test.conf:1: database: "));
  CHECK(error_of("socket_mode = 999\n").starts_with("test.conf:1: socket_mode: "));
  CHECK(error_of("log_level = chatty\n").starts_with("test.conf:1: log_level: "));
  CHECK(error_of("db_connections = 300\n").starts_with("test.conf:1: db_connections: "));
  CHECK(error_of("just some words\n") == "test.conf:1: expected 'name = value'");
  CHECK(error_of("log_level = info\nlog_level = debug\n") == "test.conf:2: 'log_level' is already set on line 1");
  CHECK(error_of("max_pending = 99999999999999999999\n").starts_with("test.conf:1: max_pending: "));
}

TEST_CASE("a missing file is a clear error") {
  CHECK_THROWS_WITH_AS(maildict::conf::load_config("/nonexistent/maildict.conf"),
                       "/nonexistent/maildict.conf: cannot read the configuration file", ConfigError);
}

TEST_CASE("db_connections 0 means one per core, at least two") {
  auto automatic = parse_config("db_connections = 0\n", "t.conf");
  CHECK(maildict::conf::pool_size(automatic) >= 2);
  auto fixed = parse_config("db_connections = 7\n", "t.conf");
  CHECK(maildict::conf::pool_size(fixed) == 7);
}

TEST_CASE("postgresql: conninfo, replica, pool default and secret-free description") {
  auto c = parse_config(
      "database = postgresql:host=/run/postgresql dbname=maildict user=md password=s3cret\n"
      "database_replica = postgresql:host=replica.example dbname=maildict\n"
      "cache_negative_ttl = 2s\ncache_serve_stale = 5min\n",
      "t.conf");
  CHECK(c.database == "postgresql:host=/run/postgresql dbname=maildict user=md password=s3cret");
  CHECK(c.database_replica == "postgresql:host=replica.example dbname=maildict");
  CHECK(c.cache_negative_ttl == std::chrono::seconds(2));
  CHECK(c.cache_serve_stale == std::chrono::minutes(5));
  CHECK(maildict::conf::pool_size(c) >= 4);
  auto options = maildict::conf::backend_options(c);
  CHECK(options.replica == c.database_replica);
  CHECK(options.statement_timeout == c.request_timeout);
  std::string shown = maildict::storage::describe_database(c.database);
  CHECK(shown.find("s3cret") == std::string::npos);
  CHECK(shown.find("dbname=maildict") != std::string::npos);
  CHECK(maildict::storage::describe_database("postgresql:postgresql://md:s3cret@db.example/maildict").find("s3cret") ==
        std::string::npos);

  CHECK(error_of("database = postgresql:\n").starts_with("test.conf:1: database: "));
  CHECK(error_of("database_replica = sqlite:/x\n").starts_with("test.conf:1: database_replica: "));
  // A replica only makes sense with PostgreSQL.
  CHECK(error_of("database_replica = postgresql:host=r\n").find("needs database = postgresql") != std::string::npos);
  CHECK(parse_config("cache_serve_stale = 0\n", "t.conf").cache_serve_stale.count() == 0);
}

TEST_CASE("an existing schema naming another database than `database`: the file is named, no secret") {
  // The error names the file rather than describing its conninfo: describing one safely takes
  // libpq, which table-maildict-static (it parses this file too) is linked without.
  char path[] = "/tmp/maildict-conf-test-XXXXXX";
  int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::close(fd);
  std::ofstream(path) << "conninfo host=/run/postgresql dbname=mail password=s3cret\nquery_domain SELECT 1\n";
  std::string e = error_of(std::string("database = sqlite:/var/lib/maildict/directory.db\nsmtpd_table_config = ") +
                           path + "\n");
  ::unlink(path);
  CHECK(e.starts_with("test.conf:1: database: "));
  CHECK(e.find(path) != std::string::npos);
  CHECK(e.find("names another database") != std::string::npos);
  CHECK(e.find("s3cret") == std::string::npos);
}
