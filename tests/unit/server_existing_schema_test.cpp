// An operator's existing database served unchanged (issue 6): the two example schemas of
// tests/data/existing/ with their table-sqlite and dovecot-sql files given as they are, read
// through maildict.conf, answered through the real pool and LookupService.
#include <doctest/doctest.h>

#include <fstream>
#include <regex>
#include <sstream>

#include "conf/config.hpp"
#include "conf/existing_schema_files.hpp"
#include "server/lookup_service.hpp"
#include "server_test_util.hpp"
#include "storage/backend_factory.hpp"
#include "storage/existing_schema.hpp"
#include "storage/password_scheme.hpp"
#include "storage/pool.hpp"
#include "storage_test_util.hpp"

namespace {

using namespace maildict;
using Kind = server::LookupAnswer::Kind;
using server::testing::look;
using storage::testing::RawDb;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

const std::string& legacy_hash() {
  static const std::string h = storage::hash_password("legacy-secret", "bcrypt");
  return h;
}

// Builds tests/data/existing/<kind> in a fresh directory; returns the maildict.conf path.
struct Fixture {
  std::string db;
  std::string conf;
  explicit Fixture(const std::string& kind, const std::string& extra_conf = "") {
    const std::string src = std::string(MAILDICT_SOURCE_DIR) + "/tests/data/existing/" + kind + "/";
    db = storage::testing::fresh_path(kind);
    {
      RawDb raw(db);
      REQUIRE(raw.exec(replaced(slurp(src + "schema.sql"), "@HASH@", legacy_hash()).c_str()) == SQLITE_OK);
    }
    const std::string dir = storage::testing::temp_dir().string() + "/";
    std::string smtpd = dir + kind + "-" + std::to_string(reinterpret_cast<std::uintptr_t>(this)) + "-smtpd.conf";
    std::string dovecot = dir + kind + "-" + std::to_string(reinterpret_cast<std::uintptr_t>(this)) + "-dovecot.ext";
    auto fill = [&](const std::string& text) {
      return replaced(replaced(replaced(replaced(text, "@DB@", db), "@VMAIL@", "/var/vmail"), "@UID@", "5000"),
                      "@GID@", "5000");
    };
    std::ofstream(smtpd) << fill(slurp(src + "smtpd-table.conf"));
    std::ofstream(dovecot) << fill(slurp(src + "dovecot-sql.conf.ext"));
    conf = dir + kind + "-" + std::to_string(reinterpret_cast<std::uintptr_t>(this)) + ".conf";
    std::ofstream(conf) << "smtpd_table_config = " << smtpd << "\ndovecot_sql_config = " << dovecot << "\n"
                        << extra_conf;
  }
};

struct Served {
  conf::Config config;
  std::unique_ptr<storage::DirectoryBackend> backend;
  std::unique_ptr<storage::Pool> pool;
  std::unique_ptr<server::LookupService> service;
  explicit Served(const std::string& conf_path) : config(conf::load_config(conf_path)) {
    backend = storage::open_backend(conf::backend_options(config));
    backend->prepare_schema();
    pool = std::make_unique<storage::Pool>(*backend, 2, 100);
    service = std::make_unique<server::LookupService>(*backend, *pool, 1000, std::chrono::seconds(60),
                                                      std::chrono::seconds(2));
  }
  ~Served() { pool->stop(); }
  server::LookupAnswer ask(const std::string& key) { return look(*service, key).answer; }
};

}  // namespace

TEST_CASE("translate_dovecot_query: variables become parameters, never text") {
  auto q = storage::translate_dovecot_query("SELECT password FROM users WHERE userid = '%u' AND x = '%Lu'");
  CHECK(q.sql == "SELECT password FROM users WHERE userid = $1 AND x = $1");
  REQUIRE(q.params.size() == 1);
  CHECK(q.params[0] == storage::LoginPart::user);

  q = storage::translate_dovecot_query("SELECT 1 FROM t WHERE a = '%n@%d' AND b = '%d' AND c LIKE '100%%'");
  CHECK(q.sql == "SELECT 1 FROM t WHERE a = ($1 || '@' || $2) AND b = $2 AND c LIKE '100%'");
  CHECK(q.params == std::vector{storage::LoginPart::local_part, storage::LoginPart::domain});

  q = storage::translate_dovecot_query("SELECT 1 FROM t WHERE u = '%{user}' AND n = 'it''s %{username}' AND \"%x\" = 1");
  CHECK(q.sql == "SELECT 1 FROM t WHERE u = $1 AND n = ('it''s ' || $2) AND \"%x\" = 1");

  CHECK_THROWS_AS(storage::translate_dovecot_query("SELECT 1 WHERE ip = '%r'"), std::invalid_argument);
  CHECK_THROWS_AS(storage::translate_dovecot_query("SELECT 1 WHERE s = '%{service}'"), std::invalid_argument);
  CHECK_THROWS_AS(storage::translate_dovecot_query("SELECT 1 WHERE u = '%u"), std::invalid_argument);
}

TEST_CASE("existing single-table schema: Dovecot and smtpd answers from the operator's queries") {
  Fixture f("single");
  Served s(f.conf);
  CHECK(s.config.database == "sqlite:" + f.db);
  {
    // Served unchanged: none of maildict's tables appeared.
    RawDb raw(f.db);
    CHECK(raw.text("SELECT count(*) FROM sqlite_master") == "1");
  }

  auto a = s.ask("shared/passdb/alice@single.example");
  REQUIRE(a.kind == Kind::found);
  CHECK(a.text == "{\"password\":\"{BLF-CRYPT}" + legacy_hash() + "\",\"user\":\"alice@single.example\"}");
  // Both spellings, any case, reach the row.
  CHECK(s.ask("shared/passdb/Alice_single.example").text == a.text);
  CHECK(s.ask("shared/passdb/nobody@single.example").kind == Kind::not_found);
  // A hostile key is a parameter like any other.
  CHECK(s.ask("shared/passdb/x'%20OR%20'1'='1@single.example").kind == Kind::not_found);

  auto u = s.ask("shared/userdb/bert@single.example");
  REQUIRE(u.kind == Kind::found);
  CHECK(u.text.find("\"home\":\"/var/vmail/bert_single.example\"") != std::string::npos);
  CHECK(u.text.find("\"uid\":5000") != std::string::npos);

  CHECK(s.ask("shared/smtpd/domain/single.example").text == "single.example");
  CHECK(s.ask("shared/smtpd/domain/other.example").kind == Kind::not_found);
  CHECK(s.ask("shared/smtpd/alias/bert@single.example").text == "bert_single.example");
  CHECK(s.ask("shared/smtpd/alias/whoever@single.example").text == "alice_single.example");  // the % row
  CHECK(s.ask("shared/smtpd/alias/bert@other.example").kind == Kind::not_found);
  CHECK(s.ask("shared/smtpd/userinfo/alice_single.example").text == "5000:5000:/var/vmail/alice_single.example");
  CHECK(s.ask("shared/smtpd/credentials/alice@single.example").text == "alice@single.example:" + legacy_hash());
  CHECK(s.ask("shared/smtpd/mailaddrmap/alice@single.example").text == "alice@single.example");
  // No query_mailaddr: the `rcpt-to` check of maildict's smtpd.conf is answered by query_alias.
  CHECK(s.ask("shared/smtpd/mailaddr/bert@single.example").text == "bert@single.example");
  CHECK(s.ask("shared/smtpd/mailaddr/bert@other.example").kind == Kind::not_found);
  // No query_netaddr in the file: a temporary failure naming the line, as table-sqlite gives.
  auto n = s.ask("shared/smtpd/netaddr/127.0.0.1");
  CHECK(n.kind == Kind::failed);
  CHECK(n.text.find("query_netaddr") != std::string::npos);

  dict::Iterate all;
  all.path = "shared/userdb/";
  auto it = server::testing::iterate(*s.service, all);
  REQUIRE_FALSE(it.failed);
  REQUIRE(it.rows.size() == 2);
  CHECK(it.rows[0].first == "shared/userdb/alice@single.example");
  CHECK(it.rows[1].first == "shared/userdb/bert@single.example");
}

TEST_CASE("existing three-table schema with active flags") {
  Fixture f("three");
  Served s(f.conf);
  CHECK(s.ask("shared/passdb/carol@three.example").kind == Kind::found);
  CHECK(s.ask("shared/passdb/old@three.example").kind == Kind::not_found);     // user inactive
  CHECK(s.ask("shared/passdb/ghost@gone.example").kind == Kind::not_found);    // domain inactive
  CHECK(s.ask("shared/smtpd/domain/gone.example").kind == Kind::not_found);
  CHECK(s.ask("shared/smtpd/alias/team@three.example").text == "carol_three.example, dave_three.example");
  CHECK(s.ask("shared/smtpd/alias/retired@three.example").kind == Kind::not_found);
  CHECK(s.ask("shared/smtpd/userinfo/dave_three.example").text == "5000:5000:/var/vmail/three.example/dave/");
  CHECK(s.ask("shared/smtpd/credentials/old@three.example").kind == Kind::not_found);

  // A change made by SQL is seen at once (SQLite's change counter works on any file).
  {
    RawDb raw(f.db);
    REQUIRE(raw.exec("UPDATE users SET active = 0 WHERE email = 'carol@three.example'") == SQLITE_OK);
  }
  CHECK(s.ask("shared/passdb/carol@three.example").kind == Kind::not_found);
}

TEST_CASE("existing-schema files: clear errors with file and line") {
  storage::DovecotSqlQueries d;
  CHECK_THROWS_WITH_AS(conf::parse_dovecot_sql_file("driver = sqlite\nconnect = /x.db\n\npassword_query = SELECT "
                                                    "password FROM u WHERE ip = '%r'\n",
                                                    "d.ext", d),
                       doctest::Contains("d.ext:4: password_query uses %r"), conf::ConfigError);
  CHECK_THROWS_WITH_AS(conf::parse_dovecot_sql_file("driver = mysql\nconnect = host=db\n", "d.ext", d),
                       doctest::Contains("driver = mysql is not served"), conf::ConfigError);
  storage::SmtpdTableQueries t;
  CHECK(conf::parse_smtpd_table_file("dbpath\t/x.db\nquery_alias: SELECT a FROM b WHERE c = ?\n"
                                     "query_alias SELECT 'second'\n# query_domain x\n",
                                     "t.conf", t) == "sqlite:/x.db");
  CHECK(t.queries.at("alias") == "SELECT a FROM b WHERE c = ?");  // the first one wins
  CHECK(t.queries.count("domain") == 0);
  CHECK(conf::parse_smtpd_table_file("conninfo host=/run/postgresql dbname=mail\n", "t.conf", t) ==
        "postgresql:host=/run/postgresql dbname=mail");
  CHECK_THROWS_WITH_AS(conf::parse_smtpd_table_file("dbpath /x.db\nquery_bogus SELECT 1\n", "t.conf", t),
                       doctest::Contains("t.conf:2: unknown key 'query_bogus'"), conf::ConfigError);

  // Two files naming two databases cannot be served by one daemon.
  Fixture single("single");
  Fixture three("three");
  std::string conf_path = storage::testing::fresh_path("mixed") + ".conf";
  std::ofstream(conf_path) << "smtpd_table_config = " << slurp(single.conf).substr(21, slurp(single.conf).find('\n') - 21)
                           << "\n" << slurp(three.conf).substr(slurp(three.conf).find('\n') + 1);
  CHECK_THROWS_WITH_AS(conf::load_config(conf_path), doctest::Contains("name different databases"), conf::ConfigError);
}

TEST_CASE("sql_<question>: the operator's statement replaces one of maildict's, the rest stay") {
  std::string db = storage::testing::demo_copy();
  {
    RawDb raw(db);
    REQUIRE(raw.exec("CREATE TABLE legacy_pw (lp TEXT, dom TEXT, pw TEXT);"
                     "INSERT INTO legacy_pw VALUES ('john', 'example.org', '{PLAIN}from-legacy')") == SQLITE_OK);
  }
  std::string conf_path = storage::testing::fresh_path("override") + ".conf";
  std::ofstream(conf_path) << "database = sqlite:" << db << "\n"
                           << "sql_passdb = SELECT pw FROM legacy_pw WHERE lp = $1 AND dom = $2\n";
  Served s(conf_path);
  CHECK(s.ask("shared/passdb/john@example.org").text ==
        "{\"password\":\"{PLAIN}from-legacy\",\"user\":\"john@example.org\"}");
  CHECK(s.ask("shared/passdb/jane@example.org").kind == Kind::not_found);  // not in legacy_pw
  CHECK(s.ask("shared/userdb/jane@example.org").kind == Kind::found);      // userdb is maildict's own
  CHECK(s.ask("shared/smtpd/alias/sales@example.org").text == "john_example.org");

  CHECK_THROWS_WITH_AS(conf::parse_config("sql_bogus = SELECT 1\n", "t.conf"),
                       doctest::Contains("unknown setting 'sql_bogus'"), conf::ConfigError);
  // A statement that does not fit the schema is refused when the pool connects: every lookup
  // fails temporarily with the reason, none is "not found".
  std::string bad_conf = storage::testing::fresh_path("override-bad") + ".conf";
  std::ofstream(bad_conf) << "database = sqlite:" << db << "\nsql_passdb = SELECT pw FROM no_such_table\n";
  Served bad(bad_conf);
  auto a = bad.ask("shared/passdb/john@example.org");
  CHECK(a.kind == Kind::failed);
  CHECK(a.text.find("no_such_table") != std::string::npos);
}
