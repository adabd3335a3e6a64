// Parsing of maildict.conf. Kept deliberately small: flat `name = value` lines, every name
// known, every value checked, and every error naming file and line.
#include "conf/config.hpp"

#include "conf/existing_schema_files.hpp"
#include "conf/text_file.hpp"
#include "storage/directory_sql.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

namespace maildict::conf {
namespace {

// A '#' starts a comment at the start of the value or after whitespace, so values such as
// "maildir:~/Mail#x" keep their '#'.
std::string_view strip_comment(std::string_view line) {
  for (std::size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) return line.substr(0, i);
  }
  return line;
}

struct BadValue {
  std::string why;
};

std::uint64_t parse_uint(std::string_view v, std::uint64_t max) {
  std::uint64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || p != v.data() + v.size()) throw BadValue{"expected a whole number"};
  if (n > max) throw BadValue{"must be at most " + std::to_string(max)};
  return n;
}

// "250ms", "2s", "5min", "1h"; a bare number is seconds.
std::chrono::milliseconds parse_duration(std::string_view v) {
  std::size_t digits = 0;
  while (digits < v.size() && v[digits] >= '0' && v[digits] <= '9') ++digits;
  if (digits == 0) throw BadValue{"expected a duration such as 500ms, 2s, 5min or 1h"};
  std::uint64_t n = parse_uint(v.substr(0, digits), 1'000'000'000);
  std::string_view unit = trim(v.substr(digits));
  std::uint64_t factor;
  if (unit.empty() || unit == "s" || unit == "sec" || unit == "secs") factor = 1000;
  else if (unit == "ms" || unit == "msec" || unit == "msecs") factor = 1;
  else if (unit == "min" || unit == "mins" || unit == "m") factor = 60'000;
  else if (unit == "h" || unit == "hour" || unit == "hours") factor = 3'600'000;
  else throw BadValue{"unknown duration unit '" + std::string(unit) + "' (use ms, s, min or h)"};
  return std::chrono::milliseconds(n * factor);
}

// "65536", "64k", "1M"
std::size_t parse_size(std::string_view v) {
  std::size_t digits = 0;
  while (digits < v.size() && v[digits] >= '0' && v[digits] <= '9') ++digits;
  if (digits == 0) throw BadValue{"expected a size such as 65536, 64k or 1M"};
  std::uint64_t n = parse_uint(v.substr(0, digits), 1ull << 40);
  std::string_view unit = trim(v.substr(digits));
  if (unit.empty() || unit == "b" || unit == "B") return n;
  if (unit == "k" || unit == "K") return n << 10;
  if (unit == "M" || unit == "m") return n << 20;
  throw BadValue{"unknown size unit '" + std::string(unit) + "' (use k or M)"};
}

mode_t parse_mode(std::string_view v) {
  unsigned n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n, 8);
  if (v.empty() || ec != std::errc() || p != v.data() + v.size() || n > 0777)
    throw BadValue{"expected an octal file mode such as 0660"};
  return static_cast<mode_t>(n);
}

bool valid_log_level(std::string_view v) {
  for (auto level : {"trace", "debug", "info", "warn", "error", "critical", "off"})
    if (v == level) return true;
  return false;
}

// A threshold: a count of failures (0 turns that step off).
unsigned parse_threshold(std::string_view v) { return static_cast<unsigned>(parse_uint(v, 1000)); }

std::optional<ListenAddress> split_listen(std::string_view v) {
  std::string_view host, port;
  if (v.starts_with('[')) {
    auto close = v.find("]:");
    if (close == std::string_view::npos) return std::nullopt;
    host = v.substr(1, close - 1);
    port = v.substr(close + 2);
  } else {
    auto colon = v.rfind(':');
    if (colon == std::string_view::npos || v.find(':') != colon) return std::nullopt;
    host = v.substr(0, colon);
    port = v.substr(colon + 1);
  }
  unsigned n = 0;
  auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
  if (port.empty() || ec != std::errc() || p != port.data() + port.size() || n == 0 || n > 65535) return std::nullopt;
  return ListenAddress{std::string(host), static_cast<unsigned short>(n)};
}

using Setter = std::function<void(Config&, std::string_view)>;

storage::ExistingSchema& existing_of(Config& c) {
  if (!c.queries.existing) c.queries.existing = std::make_shared<storage::ExistingSchema>();
  return const_cast<storage::ExistingSchema&>(*c.queries.existing);
}

const std::map<std::string, Setter, std::less<>>& setters() {
  static const std::map<std::string, Setter, std::less<>> table = [] {
  std::map<std::string, Setter, std::less<>> t = {
      {"socket", [](Config& c, std::string_view v) {
         if (v.empty() || v.front() != '/') throw BadValue{"must be an absolute path"};
         if (v.size() >= 108) throw BadValue{"is too long for a UNIX socket path (107 bytes at most)"};
         c.socket_path = v;
       }},
      {"socket_mode", [](Config& c, std::string_view v) { c.socket_mode = parse_mode(v); }},
      {"socket_owner", [](Config& c, std::string_view v) { c.socket_owner = v; }},
      {"socket_group", [](Config& c, std::string_view v) { c.socket_group = v; }},
      {"user", [](Config& c, std::string_view v) { c.run_as_user = v; }},
      {"database", [](Config& c, std::string_view v) {
         if (v.starts_with("sqlite:")) {
           if (v.size() <= 7 || v[7] != '/') throw BadValue{"expected sqlite:/absolute/path"};
         } else if (v.starts_with("postgresql:")) {
           if (trim(v.substr(11)).empty())
             throw BadValue{"expected postgresql:<conninfo>, e.g. postgresql:host=/run/postgresql dbname=maildict"};
         } else {
           throw BadValue{"expected sqlite:/absolute/path or postgresql:<conninfo>"};
         }
         c.database = v;
       }},
      {"database_replica", [](Config& c, std::string_view v) {
         if (!v.empty() && (!v.starts_with("postgresql:") || trim(v.substr(11)).empty()))
           throw BadValue{"expected postgresql:<conninfo> of a read replica, or nothing"};
         c.database_replica = v;
       }},
      {"db_connections", [](Config& c, std::string_view v) {
         c.db_connections = static_cast<unsigned>(parse_uint(v, 256));
       }},
      {"max_queued_requests", [](Config& c, std::string_view v) { c.max_queued_requests = parse_uint(v, 10'000'000); }},
      {"io_threads", [](Config& c, std::string_view v) { c.io_threads = static_cast<unsigned>(parse_uint(v, 256)); }},
      {"request_timeout", [](Config& c, std::string_view v) {
         c.request_timeout = parse_duration(v);
         if (c.request_timeout.count() == 0) throw BadValue{"must be longer than 0"};
       }},
      {"idle_timeout", [](Config& c, std::string_view v) {
         c.idle_timeout = parse_duration(v);
         if (c.idle_timeout.count() == 0) throw BadValue{"must be longer than 0"};
       }},
      {"max_line_length", [](Config& c, std::string_view v) {
         c.max_line_length = parse_size(v);
         if (c.max_line_length < 1024) throw BadValue{"must be at least 1k"};
       }},
      {"max_pending", [](Config& c, std::string_view v) {
         c.max_pending = static_cast<unsigned>(parse_uint(v, 1'000'000));
         if (c.max_pending == 0) throw BadValue{"must be at least 1"};
       }},
      {"max_write_buffer", [](Config& c, std::string_view v) {
         c.max_write_buffer = parse_size(v);
         if (c.max_write_buffer < 4096 || c.max_write_buffer > (64u << 20)) throw BadValue{"must be between 4k and 64M"};
       }},
      {"write_timeout", [](Config& c, std::string_view v) {
         c.write_timeout = parse_duration(v);
         if (c.write_timeout.count() < 100) throw BadValue{"must be at least 100ms"};
       }},
      {"max_connections", [](Config& c, std::string_view v) {
         c.max_connections = static_cast<unsigned>(parse_uint(v, 1'000'000));
         if (c.max_connections == 0) throw BadValue{"must be at least 1"};
       }},
      {"cache_entries", [](Config& c, std::string_view v) { c.cache_entries = parse_uint(v, 100'000'000); }},
      {"cache_ttl", [](Config& c, std::string_view v) { c.cache_ttl = parse_duration(v); }},
      {"cache_negative_ttl", [](Config& c, std::string_view v) { c.cache_negative_ttl = parse_duration(v); }},
      {"cache_serve_stale", [](Config& c, std::string_view v) { c.cache_serve_stale = parse_duration(v); }},
      {"default_uid", [](Config& c, std::string_view v) {
         if (v.empty()) throw BadValue{"must not be empty"};
         c.defaults.uid = v;
       }},
      {"default_gid", [](Config& c, std::string_view v) {
         if (v.empty()) throw BadValue{"must not be empty"};
         c.defaults.gid = v;
       }},
      {"default_home", [](Config& c, std::string_view v) {
         if (v.empty() || v.front() != '/') throw BadValue{"must be an absolute path template"};
         c.defaults.home = v;
       }},
      {"default_mail", [](Config& c, std::string_view v) { c.defaults.mail = v; }},
      {"recipient_delimiter", [](Config& c, std::string_view v) {
         // '@' would cut every address; whitespace and controls never appear in a local part.
         for (unsigned char ch : v)
           if (ch == '@' || ch < 0x21 || ch == 0x7f) throw BadValue{"must be printable characters other than '@'"};
         c.defaults.recipient_delimiter = v;
       }},
      // ---- auth policy server ----
      {"policy_listen", [](Config& c, std::string_view v) {
         if (v.empty()) {
           c.policy_listen.clear();
           return;
         }
         auto a = split_listen(v);
         if (!a) throw BadValue{"expected ADDRESS:PORT such as 127.0.0.1:8642 or [::1]:8642"};
         auto ip = policy::parse_ip(a->host);
         bool loopback = ip && (ip->v6 ? (*ip == *policy::parse_ip("::1")) : ip->bytes[0] == 127);
         if (!loopback)
           throw BadValue{"must be a loopback address (127.0.0.0/8 or ::1): the policy listener has no TLS and "
                          "its admin endpoints change who may log in"};
         c.policy_listen = v;
       }},
      {"policy_socket", [](Config& c, std::string_view v) {
         if (!v.empty() && v.front() != '/') throw BadValue{"must be an absolute path, or nothing"};
         if (v.size() >= 108) throw BadValue{"is too long for a UNIX socket path (107 bytes at most)"};
         c.policy_socket = v;
       }},
      {"policy_socket_mode", [](Config& c, std::string_view v) { c.policy_socket_mode = parse_mode(v); }},
      {"policy_socket_owner", [](Config& c, std::string_view v) { c.policy_socket_owner = v; }},
      {"policy_socket_group", [](Config& c, std::string_view v) { c.policy_socket_group = v; }},
      {"policy_api_key", [](Config& c, std::string_view v) { c.policy_api_key = v; }},
      {"policy_api_header", [](Config& c, std::string_view v) {
         if (v.empty()) throw BadValue{"must not be empty"};
         for (unsigned char ch : v)
           if (!(std::isalnum(ch) || ch == '-' || ch == '_')) throw BadValue{"must be an HTTP header name such as X-API-Key"};
         c.policy_api_header = v;
       }},
      {"policy_max_connections", [](Config& c, std::string_view v) {
         c.policy_max_connections = static_cast<unsigned>(parse_uint(v, 100'000));
         if (c.policy_max_connections == 0) throw BadValue{"must be at least 1"};
       }},
      {"policy_header_timeout", [](Config& c, std::string_view v) {
         c.policy_header_timeout = parse_duration(v);
         if (c.policy_header_timeout.count() < 100) throw BadValue{"must be at least 100ms"};
       }},
      {"policy_max_header", [](Config& c, std::string_view v) {
         c.policy_max_header = parse_size(v);
         if (c.policy_max_header < 1024 || c.policy_max_header > (1u << 20)) throw BadValue{"must be between 1k and 1M"};
       }},
      {"policy_max_body", [](Config& c, std::string_view v) {
         c.policy_max_body = parse_size(v);
         if (c.policy_max_body < 1024 || c.policy_max_body > (16u << 20)) throw BadValue{"must be between 1k and 16M"};
       }},
      {"policy_persist_interval", [](Config& c, std::string_view v) {
         c.policy_persist_interval = parse_duration(v);
         if (c.policy_persist_interval.count() < 100) throw BadValue{"must be at least 100ms"};
       }},
      {"policy_window", [](Config& c, std::string_view v) {
         c.policy.window = parse_duration(v);
         if (c.policy.window.count() < 1000) throw BadValue{"must be at least 1s"};
       }},
      {"policy_ip_login_tarpit", [](Config& c, std::string_view v) { c.policy.ip_login_tarpit = parse_threshold(v); }},
      {"policy_ip_login_reject", [](Config& c, std::string_view v) { c.policy.ip_login_reject = parse_threshold(v); }},
      {"policy_ip_tarpit", [](Config& c, std::string_view v) { c.policy.ip_tarpit = parse_threshold(v); }},
      {"policy_ip_reject", [](Config& c, std::string_view v) { c.policy.ip_reject = parse_threshold(v); }},
      {"policy_login_tarpit", [](Config& c, std::string_view v) { c.policy.login_tarpit = parse_threshold(v); }},
      {"policy_login_reject", [](Config& c, std::string_view v) { c.policy.login_reject = parse_threshold(v); }},
      {"policy_repeats_per_failure", [](Config& c, std::string_view v) {
         c.policy.repeats_per_failure = static_cast<unsigned>(parse_uint(v, 1'000'000));
       }},
      {"policy_tarpit_seconds", [](Config& c, std::string_view v) {
         c.policy.tarpit_seconds = static_cast<unsigned>(parse_uint(v, 60));
         if (c.policy.tarpit_seconds == 0) throw BadValue{"must be at least 1 (Dovecot counts the tarpit in seconds)"};
       }},
      {"policy_tarpit_max_seconds", [](Config& c, std::string_view v) {
         c.policy.tarpit_max_seconds = static_cast<unsigned>(parse_uint(v, 60));
         if (c.policy.tarpit_max_seconds == 0) throw BadValue{"must be at least 1"};
       }},
      {"policy_reject_message", [](Config& c, std::string_view v) {
         for (unsigned char ch : v)
           if (ch < 0x20 || ch == 0x7f) throw BadValue{"must not contain control characters"};
         if (v.size() > 200) throw BadValue{"must be at most 200 bytes"};
         c.policy.reject_message = v;
       }},
      {"policy_allow_networks", [](Config& c, std::string_view v) {
         c.policy.allow_networks.clear();
         std::size_t i = 0;
         while (i < v.size()) {
           while (i < v.size() && (v[i] == ' ' || v[i] == ',' || v[i] == '\t')) ++i;
           std::size_t j = i;
           while (j < v.size() && v[j] != ' ' && v[j] != ',' && v[j] != '\t') ++j;
           if (j == i) break;
           auto item = v.substr(i, j - i);
           auto net = policy::parse_network(item);
           if (!net)
             throw BadValue{"'" + std::string(item) + "' is not an address or network such as 192.0.2.0/24 "
                            "or 2001:db8::/48 (host bits must be zero)"};
           c.policy.allow_networks.push_back(*net);
           i = j;
         }
       }},
      {"policy_max_entries", [](Config& c, std::string_view v) {
         c.policy.max_entries = parse_uint(v, 100'000'000);
         if (c.policy.max_entries == 0) throw BadValue{"must be at least 1"};
       }},
      {"policy_max_blocks", [](Config& c, std::string_view v) {
         c.policy.max_blocks = parse_uint(v, 10'000'000);
       }},
      {"log_level", [](Config& c, std::string_view v) {
         if (!valid_log_level(v)) throw BadValue{"expected trace, debug, info, warn, error, critical or off"};
         c.log_level = v;
       }},
      {"smtpd_table_config", [](Config& c, std::string_view v) {
         if (v.empty()) return;  // off
         if (v.front() != '/') throw BadValue{"must be an absolute path"};
         c.smtpd_table_config = v;
         if (!c.read_referenced_files) return;
         storage::SmtpdTableQueries q;
         FileOrigins origins;
         std::string db = read_smtpd_table_file(c.smtpd_table_config, q, &origins);
         existing_of(c).smtpd = std::move(q);
         c.existing_database.emplace_back(c.smtpd_table_config, db);
         c.database_origin = origins.database;
         for (auto& o : origins.queries) c.operator_queries.push_back(std::move(o));
       }},
      {"dovecot_sql_config", [](Config& c, std::string_view v) {
         if (v.empty()) return;  // off
         if (v.front() != '/') throw BadValue{"must be an absolute path"};
         c.dovecot_sql_config = v;
         if (!c.read_referenced_files) return;
         storage::DovecotSqlQueries q;
         FileOrigins origins;
         std::string db = read_dovecot_sql_file(c.dovecot_sql_config, q, &origins);
         existing_of(c).dovecot = std::move(q);
         c.existing_database.emplace_back(c.dovecot_sql_config, db);
         c.database_origin = origins.database;
         for (auto& o : origins.queries) c.operator_queries.push_back(std::move(o));
       }},
  };
  // sql_<question>: the operator's own statement for one of maildict's questions.
  for (const auto& question : storage::directory_sql_names()) {
    t.emplace("sql_" + question, [question](Config& c, std::string_view v) {
      if (v.empty()) throw BadValue{"must be an SQL statement"};
      c.queries.sql_overrides[question] = std::string(v);
    });
  }
  return t;
  }();
  return table;
}

}  // namespace

Config parse_config(const std::string& text, const std::string& name, bool read_referenced_files) {
  Config config;
  config.source = name;
  config.read_referenced_files = read_referenced_files;
  std::map<std::string, int, std::less<>> seen_at;
  std::istringstream in(text);
  std::string raw;
  int line_no = 0;
  while (std::getline(in, raw)) {
    ++line_no;
    auto where = [&] { return name + ":" + std::to_string(line_no) + ": "; };
    std::string_view line = trim(strip_comment(raw));
    if (line.empty()) continue;
    auto eq = line.find('=');
    if (eq == std::string_view::npos)
      throw ConfigError(where() + "expected 'name = value'");
    std::string_view key = trim(line.substr(0, eq));
    std::string_view value = trim(line.substr(eq + 1));
    auto it = setters().find(key);
    if (it == setters().end())
      throw ConfigError(where() + "unknown setting '" + std::string(key) + "'");
    if (auto prev = seen_at.find(key); prev != seen_at.end())
      throw ConfigError(where() + "'" + std::string(key) + "' is already set on line " + std::to_string(prev->second));
    seen_at.emplace(std::string(key), line_no);
    try {
      it->second(config, value);
    } catch (const BadValue& bad) {
      throw ConfigError(where() + std::string(key) + ": " + bad.why);
    }
    const std::string here = name + ":" + std::to_string(line_no) + " (" + std::string(key) + ")";
    if (key == "database") config.database_origin = here;
    if (key.starts_with("sql_")) config.operator_queries.push_back({here, std::string(value)});
  }
  // An existing schema names its own database; several files (and `database`) must agree,
  // because one daemon serves one database through one pool.
  for (const auto& [file, db] : config.existing_database) {
    auto explicit_db = seen_at.find("database");
    if (explicit_db != seen_at.end() && config.database != db)
      // The file is named, not its database: describing a conninfo safely takes libpq, and
      // table-maildict (which parses this file too) is linked statically without it.
      throw ConfigError(name + ":" + std::to_string(explicit_db->second) + ": database: " + file +
                        " names another database (its dbpath/conninfo line); drop `database` or make them agree");
    if (config.existing_database.front().second != db)
      throw ConfigError(name + ": " + config.existing_database.front().first + " and " + file +
                        " name different databases; maildictd serves one");
    config.database = db;
  }
  if (config.queries.existing && !config.queries.sql_overrides.empty())
    throw ConfigError(name + ": sql_* settings replace maildict's own queries; with smtpd_table_config or "
                             "dovecot_sql_config the operator's files are used instead (drop one or the other)");
  if (!config.database_replica.empty() && !config.database.starts_with("postgresql:"))
    throw ConfigError(name + ":" + std::to_string(seen_at.find("database_replica")->second) +
                      ": database_replica: needs database = postgresql:... (SQLite has no replicas)");
  return config;
}

std::string read_text_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot read " + what);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

Config load_config(const std::string& path, bool read_referenced_files) {
  return parse_config(read_text_file(path, "the configuration file"), path, read_referenced_files);
}

unsigned pool_size(const Config& config) {
  if (config.db_connections != 0) return config.db_connections;
  // A PostgreSQL query mostly waits for the server: more connections than cores keep the
  // server busy while this host's threads sleep.
  if (config.database.starts_with("postgresql:")) return std::max(4u, 2 * std::thread::hardware_concurrency());
  // SQLite reads from a warm page cache are CPU work: threads beyond the cores only add
  // wake-ups (on 2 cores, 2 connections answered 1.4x more cache misses than 4).
  return std::max(2u, std::thread::hardware_concurrency());
}

ListenAddress policy_listen_address(const Config& config) {
  auto a = split_listen(config.policy_listen);
  if (!a) throw ConfigError(config.source + ": policy_listen: expected ADDRESS:PORT");
  return *a;
}

storage::BackendOptions backend_options(const Config& config) {
  storage::BackendOptions o;
  o.database = config.database;
  o.replica = config.database_replica;
  o.defaults = config.defaults;
  o.queries = config.queries;
  o.statement_timeout = config.request_timeout;
  return o;
}

std::string sqlite_path_of(const Config& config) {
  if (!config.database.starts_with("sqlite:"))
    throw ConfigError(config.source + ": database: expected sqlite:/absolute/path");
  return config.database.substr(7);
}

}  // namespace maildict::conf
