#include "conf/existing_schema_files.hpp"

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "conf/config.hpp"
#include "conf/text_file.hpp"

namespace maildict::conf {

namespace {

const std::set<std::string, std::less<>> kSmtpdQueryServices = {
    "alias", "domain", "credentials", "netaddr", "userinfo", "source", "mailaddr", "addrname", "mailaddrmap"};

}  // namespace

// table-sqlite's rules (§6.1): key up to the first space, tab or ':'; then whitespace, and a
// ':' followed by whitespace, are skipped; the value is the rest of the line. '#' only starts a
// comment at the start of a line. The first of repeated query lines wins, as in table-sqlite.
std::string parse_smtpd_table_file(const std::string& text, const std::string& name, storage::SmtpdTableQueries& out,
                                   FileOrigins* origins) {
  out.source = name;
  std::string dbpath, conninfo;
  std::string database_at;
  std::vector<QueryOrigin> queries_at;
  auto at = [&](int line_no, const std::string& key) { return name + ":" + std::to_string(line_no) + " (" + key + ")"; };
  std::istringstream in(text);
  std::string raw;
  int line_no = 0;
  while (std::getline(in, raw)) {
    ++line_no;
    auto where = [&] { return name + ":" + std::to_string(line_no) + ": "; };
    std::string_view line = trim(raw);
    if (line.empty() || line.front() == '#') continue;
    auto end = line.find_first_of(" \t:");
    std::string key(line.substr(0, end));
    std::string_view value = end == std::string_view::npos ? std::string_view() : line.substr(end);
    value = trim(value);
    if (value.size() >= 1 && value.front() == ':' && (value.size() == 1 || value[1] == ' ' || value[1] == '\t'))
      value = trim(value.substr(1));
    if (value.empty()) throw ConfigError(where() + "'" + key + "' has no value");
    if (key == "dbpath") {
      dbpath = value;
      database_at = at(line_no, key);
    } else if (key == "conninfo") {
      conninfo = value;
      database_at = at(line_no, key);
    } else if (key == "fetch_source") {
      if (out.fetch_source.empty()) {
        out.fetch_source = value;
        queries_at.push_back({at(line_no, key), out.fetch_source});
      }
    } else if (key == "fetch_source_expire" || key == "fetch_source_refresh") {
      // table-maildict asks maildictd on every fetch; there is no list to refresh.
    } else if (key.starts_with("query_") && kSmtpdQueryServices.contains(key.substr(6))) {
      if (out.queries.emplace(key.substr(6), std::string(value)).second)  // the first one wins
        queries_at.push_back({at(line_no, key), std::string(value)});
    } else {
      throw ConfigError(where() + "unknown key '" + key + "' (table-sqlite/table-postgres keys: dbpath, conninfo, "
                                  "query_<service>, fetch_source)");
    }
  }
  if (!dbpath.empty() && !conninfo.empty()) throw ConfigError(name + ": has both dbpath and conninfo; keep one");
  if (origins) *origins = {database_at, std::move(queries_at)};
  if (!dbpath.empty()) {
    if (dbpath.front() != '/') throw ConfigError(name + ": dbpath must be an absolute path");
    return "sqlite:" + dbpath;
  }
  if (!conninfo.empty()) return "postgresql:" + conninfo;
  throw ConfigError(name + ": names no database (dbpath for SQLite, conninfo for PostgreSQL)");
}

std::string read_smtpd_table_file(const std::string& path, storage::SmtpdTableQueries& out, FileOrigins* origins) {
  return parse_smtpd_table_file(read_text_file(path), path, out, origins);
}

// Dovecot's rules: `key = value`, '#' comment lines, a value may be in double quotes and may
// go on over several lines that end in '\'. Keys maildict has no use for are ignored, as
// Dovecot's own settings for the same file would be read by Dovecot, not by us.
std::string parse_dovecot_sql_file(const std::string& text, const std::string& name, storage::DovecotSqlQueries& out,
                                   FileOrigins* origins) {
  out.source = name;
  std::string driver, connect;
  std::string connect_at;
  std::map<std::string, std::pair<int, std::string>> query_at;  // setting -> (line, SQL); the last one is used
  std::istringstream in(text);
  std::string raw;
  int line_no = 0;
  while (std::getline(in, raw)) {
    ++line_no;
    const int first_line = line_no;
    std::string logical = std::string(trim(raw));
    while (!logical.empty() && logical.back() == '\\') {
      logical.pop_back();
      std::string next;
      if (!std::getline(in, next)) break;
      ++line_no;
      logical += ' ';
      logical += trim(next);
    }
    auto where = [&] { return name + ":" + std::to_string(first_line) + ": "; };
    std::string_view line = trim(logical);
    if (line.empty() || line.front() == '#') continue;
    if (line.front() == '!') throw ConfigError(where() + "!include is not supported here; give the included file");
    auto eq = line.find('=');
    if (eq == std::string_view::npos) throw ConfigError(where() + "expected 'name = value'");
    std::string key(trim(line.substr(0, eq)));
    std::string value(trim(line.substr(eq + 1)));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
    auto query = [&](std::optional<storage::TemplatedQuery>& slot) {
      try {
        slot = storage::translate_dovecot_query(value);
      } catch (const std::invalid_argument& e) {
        throw ConfigError(where() + key + " " + e.what());
      }
      query_at[key] = {first_line, slot->sql};
    };
    if (key == "driver") driver = value;
    else if (key == "connect") {
      connect = value;
      connect_at = name + ":" + std::to_string(first_line) + " (connect)";
    }
    else if (key == "default_pass_scheme") out.default_pass_scheme = value;
    else if (key == "password_query") query(out.password_query);
    else if (key == "user_query") query(out.user_query);
    else if (key == "iterate_query") query(out.iterate_query);
  }
  if (connect.empty()) throw ConfigError(name + ": has no 'connect' line naming the database");
  if (origins) {
    origins->database = connect_at;
    std::vector<std::pair<int, QueryOrigin>> in_file_order;
    for (const auto& [key, line_and_sql] : query_at)
      in_file_order.push_back(
          {line_and_sql.first, {name + ":" + std::to_string(line_and_sql.first) + " (" + key + ")", line_and_sql.second}});
    std::sort(in_file_order.begin(), in_file_order.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    origins->queries.clear();
    for (auto& [line, origin] : in_file_order) origins->queries.push_back(std::move(origin));
  }
  if (driver == "sqlite") {
    if (connect.front() != '/') throw ConfigError(name + ": connect must be an absolute path for driver = sqlite");
    return "sqlite:" + connect;
  }
  if (driver == "pgsql") return "postgresql:" + connect;
  if (driver.empty()) throw ConfigError(name + ": has no 'driver' line (sqlite or pgsql)");
  throw ConfigError(name + ": driver = " + driver + " is not served by maildict (sqlite and pgsql are)");
}

std::string read_dovecot_sql_file(const std::string& path, storage::DovecotSqlQueries& out, FileOrigins* origins) {
  return parse_dovecot_sql_file(read_text_file(path), path, out, origins);
}

}  // namespace maildict::conf
