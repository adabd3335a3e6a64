// libFuzzer target for the maildict.conf parser (conf/config.hpp). Whatever the text, parsing
// either returns a configuration that the accessors the daemon calls next accept, or throws a
// ConfigError that names the file (and, for a bad line, the line). Any other exception, a crash
// or a message that does not say where the error is would reach the operator as a puzzle.
//
// The files a configuration refers to (smtpd_table_config, dovecot_sql_config) are not opened
// here: fuzz_existing_schema_files covers their readers.
//
//   mkdir -p /tmp/config-corpus && ./fuzz_config -max_total_time=60 /tmp/config-corpus \
//       tests/fuzz/corpus/config
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "conf/config.hpp"
#include "tests/fuzz/fuzz_check.hpp"

namespace {

constexpr const char* kName = "fuzz.conf";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(bytes), size);
  maildict::conf::Config config;
  try {
    config = maildict::conf::parse_config(text, kName, /*read_referenced_files=*/false);
  } catch (const maildict::conf::ConfigError& e) {
    CHECK(std::string_view(e.what()).starts_with(std::string(kName) + ":"));
    return 0;
  }
  // What maildictd derives from an accepted configuration must not throw anything unexpected.
  CHECK(config.source == kName);
  CHECK(maildict::conf::pool_size(config) >= 1);
  CHECK(config.database.starts_with("sqlite:/") || config.database.starts_with("postgresql:"));
  (void)maildict::conf::backend_options(config);
  if (!config.policy_listen.empty()) {
    const auto listen = maildict::conf::policy_listen_address(config);  // must not throw
    CHECK(listen.port != 0);
  }
  if (config.database.starts_with("sqlite:")) CHECK(maildict::conf::sqlite_path_of(config).front() == '/');
  CHECK(config.max_pending >= 1 && config.max_connections >= 1);
  CHECK(config.request_timeout.count() > 0 && config.idle_timeout.count() > 0);
  return 0;
}
