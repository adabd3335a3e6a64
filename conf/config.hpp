// maildictd's configuration: one file of `name = value` lines (conf/maildict.conf documents
// every setting). Errors name the file and line.
#pragma once
#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>
#include <sys/types.h>

#include "conf/existing_schema_files.hpp"
#include "server/policy_engine.hpp"
#include "storage/backend_factory.hpp"
#include "storage/directory.hpp"

namespace maildict::conf {

struct Config {
  // listener
  std::string socket_path = "/run/maildict/dict.sock";
  mode_t socket_mode = 0660;
  std::string socket_owner;            // empty: the daemon's own user
  std::string socket_group = "dovecot";
  std::string run_as_user;             // `user`: drop privileges to it after binding; empty: stay
  // database
  std::string database = "sqlite:/var/lib/maildict/directory.db";  // or postgresql:<conninfo>
  std::string database_replica;        // postgresql:<conninfo> for lookups; empty: the primary
  // The operator's SQL: `sql_<question>` replacements of maildict's own queries, or an
  // existing schema served through the files in smtpd_table_config / dovecot_sql_config.
  storage::QuerySetup queries;
  std::string smtpd_table_config;
  std::string dovecot_sql_config;
  std::vector<std::pair<std::string, std::string>> existing_database;  // (file, database URI) read from them
  // Where `database` came from, for the messages about it: "FILE:LINE (database)", the line
  // of an existing-schema file ("FILE:LINE (dbpath)"), or the built-in default.
  std::string database_origin = "the built-in default";
  // Every statement of the operator's (sql_<question> settings, the queries of the files
  // above) and where it was written: check_queries() (conf/query_check.hpp) prepares each.
  std::vector<QueryOrigin> operator_queries;
  unsigned db_connections = 0;         // 0: one per CPU core, at least two (pool_size())
  std::size_t max_queued_requests = 10000;
  // threads and limits
  unsigned io_threads = 0;             // 0: half the CPU cores, at least one
  std::chrono::milliseconds request_timeout{2000};
  std::chrono::milliseconds idle_timeout{300000};
  std::size_t max_line_length = 65536;
  unsigned max_pending = 1000;
  // Replies accepted for a client and not yet written; at this many bytes maildictd stops
  // reading its requests (and producing iteration rows) until it reads.
  std::size_t max_write_buffer = 256 * 1024;
  std::chrono::milliseconds write_timeout{30000};  // a client that reads nothing for this long is closed
  unsigned max_connections = 4096;
  // cache
  std::size_t cache_entries = 100000;
  std::chrono::milliseconds cache_ttl{60000};
  std::chrono::milliseconds cache_negative_ttl{10000};  // "not found" answers
  std::chrono::milliseconds cache_serve_stale{0};       // 0: never serve a stale answer
  // directory defaults
  storage::UserDefaults defaults;
  // logging: trace, debug, info, warn, error, critical, off
  std::string log_level = "info";
  // auth policy server (HTTP on loopback TCP); empty policy_listen: off
  std::string policy_listen;            // "127.0.0.1:8642" or "[::1]:8642"
  // auth policy on a UNIX socket too (Dovecot 2.4: auth_policy { http_client_proxy_socket_path });
  // empty: off. Mode, owner and group as for the dict socket.
  std::string policy_socket;
  mode_t policy_socket_mode = 0660;
  std::string policy_socket_owner;
  std::string policy_socket_group = "dovecot";
  std::string policy_api_key;           // empty: no key required
  std::string policy_api_header = "X-API-Key";
  unsigned policy_max_connections = 256;
  std::chrono::milliseconds policy_header_timeout{5000};  // a new connection's request head must arrive within this
  std::size_t policy_max_header = 8192;
  std::size_t policy_max_body = 16384;
  std::chrono::milliseconds policy_persist_interval{5000};
  server::PolicySettings policy;

  std::string source;  // the file this was read from
  // Whether smtpd_table_config / dovecot_sql_config are opened and read. table-maildict only
  // needs the socket and runs as smtpd's user, who may not read them (they can hold passwords).
  bool read_referenced_files = true;
};

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;  // message already says "file:line: ..."
};

// Reads and validates a configuration file. Throws ConfigError.
Config load_config(const std::string& path, bool read_referenced_files = true);
// Parses configuration text; `name` is used in error messages.
Config parse_config(const std::string& text, const std::string& name, bool read_referenced_files = true);

// The number of database connections (and pool threads) to open: db_connections, or when it
// is 0 one per CPU core and at least two (SQLite), twice the cores and at least four (PostgreSQL).
unsigned pool_size(const Config& config);

// policy_listen split into a loopback address and a port (validated by parse_config).
struct ListenAddress {
  std::string host;  // "127.0.0.1", "::1"
  unsigned short port = 0;
};
ListenAddress policy_listen_address(const Config& config);
// Whether the auth policy server runs (policy_listen or policy_socket set).
inline bool policy_enabled(const Config& config) { return !config.policy_listen.empty() || !config.policy_socket.empty(); }
// What storage::open_backend needs from the configuration.
storage::BackendOptions backend_options(const Config& config);

// "sqlite:/path" -> "/path"; throws ConfigError for any other scheme.
std::string sqlite_path_of(const Config& config);

}  // namespace maildict::conf
