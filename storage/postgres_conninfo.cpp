#include "storage/postgres_conninfo.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <cstdlib>
#include <optional>

namespace maildict::storage {

namespace {

// libpq waits for a connection as long as the network lets it unless told otherwise; a pool
// thread (or the daemon's shutdown) must not hang on a server that does not answer.
constexpr char kDefaultConnectTimeout[] = "2";

// The value the conninfo gives the keyword, if it gives one that is not empty (an unparsable
// conninfo gives none: libpq will refuse it when connecting, with its own message).
std::optional<std::string> conninfo_value(const std::string& conninfo, std::string_view keyword) {
  char* errmsg = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &errmsg);
  if (!opts) {
    if (errmsg) PQfreemem(errmsg);
    return std::nullopt;
  }
  std::optional<std::string> value;
  for (PQconninfoOption* o = opts; o->keyword; ++o)
    if (keyword == o->keyword && o->val && *o->val) value = o->val;
  PQconninfoFree(opts);
  return value;
}

// Adds keyword=value (a plain word) unless the conninfo sets the keyword itself.
std::string with_default(std::string conninfo, std::string_view keyword, std::string_view value) {
  if (conninfo_value(conninfo, keyword)) return conninfo;
  if (conninfo.starts_with("postgresql://") || conninfo.starts_with("postgres://"))
    return conninfo + (conninfo.find('?') == std::string::npos ? "?" : "&") + std::string(keyword) + "=" +
           std::string(value);
  return conninfo + " " + std::string(keyword) + "=" + std::string(value);
}

}  // namespace

std::string with_connect_timeout(const std::string& conninfo, std::string_view application_name) {
  std::string out = with_default(conninfo, "connect_timeout", kDefaultConnectTimeout);
  // A dead network path (a host that vanished without a reset) is noticed by TCP itself: an
  // idle connection is probed after 10 s, and data unacknowledged for 10 s ends the
  // connection. UNIX sockets ignore these.
  out = with_default(out, "keepalives", "1");
  out = with_default(out, "keepalives_idle", "10");
  out = with_default(out, "keepalives_interval", "5");
  out = with_default(out, "keepalives_count", "2");
  out = with_default(out, "tcp_user_timeout", "10000");
  // Named from the first moment, so pg_stat_activity never shows an anonymous maildict
  // connection.
  if (!application_name.empty()) out = with_default(out, "application_name", application_name);
  return out;
}

std::chrono::seconds connect_timeout_of(const std::string& conninfo) {
  const auto value = conninfo_value(conninfo, "connect_timeout");
  const int seconds = value ? std::atoi(value->c_str()) : 2;
  if (seconds <= 0) return std::chrono::hours(24 * 365);  // 0: wait for ever, as libpq would
  return std::chrono::seconds(std::max(seconds, 2));
}

std::string describe_conninfo(const std::string& conninfo) {
  char* errmsg = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &errmsg);
  if (!opts) {
    if (errmsg) PQfreemem(errmsg);
    return "(unparsable conninfo)";
  }
  std::string out;
  for (PQconninfoOption* o = opts; o->keyword; ++o) {
    if (!o->val || !*o->val) continue;
    std::string_view k(o->keyword);
    if (k == "host" || k == "hostaddr" || k == "port" || k == "dbname" || k == "user" || k == "application_name" ||
        k == "sslmode" || k == "target_session_attrs") {
      if (!out.empty()) out += ' ';
      out += std::string(k) + "=" + o->val;
    }
  }
  PQconninfoFree(opts);
  return out.empty() ? "(defaults)" : out;
}

}  // namespace maildict::storage
