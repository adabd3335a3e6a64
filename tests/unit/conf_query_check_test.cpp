// Configuration errors found at start (issue 12): where each of the operator's statements and
// the database path came from, and check_queries() preparing them against a real SQLite file.
#include <doctest/doctest.h>

#include <fstream>

#include "conf/config.hpp"
#include "conf/existing_schema_files.hpp"
#include "conf/query_check.hpp"
#include "storage/backend_factory.hpp"
#include "storage_test_util.hpp"

namespace {

using namespace maildict;

std::string write_file(const std::string& stem, const std::string& text) {
  const std::string path = storage::testing::fresh_path(stem) + ".conf";
  std::ofstream(path) << text;
  return path;
}

conf::QueryCheck check(const std::string& conf_path) {
  auto config = conf::load_config(conf_path);
  auto backend = storage::open_backend(conf::backend_options(config));
  return conf::check_queries(config, *backend);
}

}  // namespace

TEST_CASE("existing-schema files tell where the database and each query came from") {
  storage::SmtpdTableQueries t;
  conf::FileOrigins o;
  conf::parse_smtpd_table_file("# comment\ndbpath /x.db\nquery_alias SELECT a FROM b WHERE c = ?\n"
                               "query_alias SELECT 'second'\nfetch_source SELECT s FROM src\n",
                               "t.conf", t, &o);
  CHECK(o.database == "t.conf:2 (dbpath)");
  REQUIRE(o.queries.size() == 2);  // the second query_alias is not used, as in table-sqlite
  CHECK(o.queries[0].where == "t.conf:3 (query_alias)");
  CHECK(o.queries[0].sql == "SELECT a FROM b WHERE c = ?");
  CHECK(o.queries[1].where == "t.conf:5 (fetch_source)");

  storage::DovecotSqlQueries d;
  conf::parse_dovecot_sql_file("driver = sqlite\n\nuser_query = SELECT home \\\n  FROM u WHERE n = '%n'\n"
                               "connect = /x.db\npassword_query = SELECT 1\npassword_query = SELECT password FROM u "
                               "WHERE n = '%u'\n",
                               "d.ext", d, &o);
  CHECK(o.database == "d.ext:5 (connect)");
  REQUIRE(o.queries.size() == 2);
  CHECK(o.queries[0].where == "d.ext:3 (user_query)");  // a continued value: its first line
  CHECK(o.queries[0].sql == "SELECT home  FROM u WHERE n = $1");
  CHECK(o.queries[1].where == "d.ext:7 (password_query)");  // the last one is used, as in Dovecot

  auto c = conf::parse_config("socket = /tmp/x.sock\n\ndatabase = sqlite:/tmp/x.db\nsql_passdb = SELECT 1\n",
                              "m.conf", false);
  CHECK(c.database_origin == "m.conf:3 (database)");
  REQUIRE(c.operator_queries.size() == 1);
  CHECK(c.operator_queries[0].where == "m.conf:4 (sql_passdb)");
  CHECK(conf::parse_config("", "m.conf", false).database_origin == "the built-in default");
}

TEST_CASE("check_queries: a query the database rejects is an error naming file, line and setting") {
  const std::string db = storage::testing::demo_copy();
  const std::string table = write_file("table", "dbpath " + db +
                                                    "\nquery_domain SELECT domain FROM domains WHERE domain = ?\n"
                                                    "query_alias SELEC destination FROM aliases WHERE domain = ?\n");
  auto r = check(write_file("m", "smtpd_table_config = " + table + "\n"));
  CHECK(r.warnings.empty());
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].find(table + ":3 (query_alias): cannot prepare statement") == 0);
  CHECK(r.errors[0].find("syntax error") != std::string::npos);
  CHECK(r.errors[0].find("SELEC destination") != std::string::npos);  // the statement itself

  // maildict's own schema with a replaced question: an unknown column.
  r = check(write_file("m", "database = sqlite:" + db + "\nsql_passdb = SELECT no_such_column FROM users WHERE "
                            "local_part = $1\n"));
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].find(":2 (sql_passdb): ") != std::string::npos);
  CHECK(r.errors[0].find("no_such_column") != std::string::npos);

  // Every query good: nothing to report.
  const std::string good = write_file("table", "dbpath " + db + "\nquery_domain SELECT domain FROM domains WHERE domain = ?\n");
  r = check(write_file("m", "smtpd_table_config = " + good + "\n"));
  CHECK(r.errors.empty());
  CHECK(r.warnings.empty());
}

TEST_CASE("check_queries: a database that is not there is a warning naming where its path came from") {
  const std::string db = storage::testing::demo_copy();
  // A stray trailing quote makes the path name a file that does not exist.
  const std::string table = write_file("table", "query_domain SELEC broken\ndbpath " + db + "\"\n");
  auto r = check(write_file("m", "smtpd_table_config = " + table + "\n"));
  CHECK(r.errors.empty());  // not checked: the database may simply not be created yet
  REQUIRE(r.warnings.size() == 1);
  CHECK(r.warnings[0].find("does not exist") != std::string::npos);
  CHECK(r.warnings[0].find(db + "\"") != std::string::npos);
  CHECK(r.warnings[0].find("from " + table + ":2 (dbpath)") != std::string::npos);

  // maildict's own schema: maildictd creates the file at start.
  const std::string missing = storage::testing::fresh_path("not-yet");
  r = check(write_file("m", "database = sqlite:" + missing + "\n"));
  CHECK(r.errors.empty());
  REQUIRE(r.warnings.size() == 1);
  CHECK(r.warnings[0].find("creates it at start") != std::string::npos);
  CHECK(r.warnings[0].find(":1 (database)") != std::string::npos);
  CHECK_FALSE(std::ifstream(missing).good());  // checking created nothing
}
