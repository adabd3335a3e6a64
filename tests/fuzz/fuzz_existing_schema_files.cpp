// libFuzzer target for the readers of the operator's own files (conf/existing_schema_files.hpp):
// an OpenSMTPD table-sqlite/table-postgres file and a Dovecot dovecot-sql.conf.ext, and with the
// latter the translation of Dovecot's %-variables into query parameters
// (storage::translate_dovecot_query). The input is read as both kinds of file. Each reader either
// returns a database URI maildict can open and the lines the database and each used query came
// from, or throws a ConfigError naming the file; the translated queries bind only the three
// login parts, each once.
//
//   mkdir -p /tmp/files-corpus && ./fuzz_existing_schema_files -max_total_time=60 \
//       /tmp/files-corpus tests/fuzz/corpus/existing_schema_files
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "conf/config.hpp"
#include "conf/existing_schema_files.hpp"
#include "tests/fuzz/fuzz_check.hpp"

namespace {

constexpr const char* kName = "fuzz-file";

void check_database(const std::string& uri) {
  CHECK(uri.starts_with("sqlite:/") || (uri.starts_with("postgresql:") && uri.size() > 11));
}

void check_query(const std::optional<maildict::storage::TemplatedQuery>& q) {
  if (!q) return;
  CHECK(q->params.size() <= 3);
  for (std::size_t i = 0; i < q->params.size(); ++i)
    CHECK(std::count(q->params.begin(), q->params.end(), q->params[i]) == 1);
}

// Where the database and each used query came from: lines of this file, each query once.
void check_origins(const maildict::conf::FileOrigins& o, std::size_t used_queries) {
  CHECK(o.database.starts_with(std::string(kName) + ":"));
  CHECK(o.queries.size() == used_queries);
  for (const auto& q : o.queries) CHECK(q.where.starts_with(std::string(kName) + ":") && q.where.ends_with(")"));
}

void check_error(const maildict::conf::ConfigError& e) {
  CHECK(std::string_view(e.what()).starts_with(std::string(kName) + ":"));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(bytes), size);
  try {
    maildict::storage::SmtpdTableQueries smtpd;
    maildict::conf::FileOrigins origins;
    check_database(maildict::conf::parse_smtpd_table_file(text, kName, smtpd, &origins));
    CHECK(smtpd.source == kName);
    for (const auto& [service, sql] : smtpd.queries) CHECK(!sql.empty() && !service.empty());
    check_origins(origins, smtpd.queries.size() + (smtpd.fetch_source.empty() ? 0 : 1));
  } catch (const maildict::conf::ConfigError& e) {
    check_error(e);
  }
  try {
    maildict::storage::DovecotSqlQueries dovecot;
    maildict::conf::FileOrigins origins;
    check_database(maildict::conf::parse_dovecot_sql_file(text, kName, dovecot, &origins));
    check_origins(origins, (dovecot.password_query ? 1 : 0) + (dovecot.user_query ? 1 : 0) +
                               (dovecot.iterate_query ? 1 : 0));
    check_query(dovecot.password_query);
    check_query(dovecot.user_query);
    check_query(dovecot.iterate_query);
  } catch (const maildict::conf::ConfigError& e) {
    check_error(e);
  }
  return 0;
}
