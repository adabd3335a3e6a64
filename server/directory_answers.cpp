#include "server/directory_answers.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "protocol/json_writer.hpp"
#include "server/lookup_service.hpp"

namespace maildict::server {
namespace {

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() < 19 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// uid/gid go out as JSON numbers when numeric (as Dovecot's own examples do) and as strings when
// they are system account names, which Dovecot resolves itself.
void add_id(json::FlatObjectWriter& w, std::string_view name, const std::string& id) {
  if (all_digits(id)) w.add(name, static_cast<std::int64_t>(std::stoll(id)));
  else w.add(name, id);
}

std::string failure_text(std::string_view what, const std::string& why) {
  return "maildict: " + std::string(what) + " failed: " + why;
}

}  // namespace

std::string passdb_json(const storage::PassdbEntry& entry) {
  json::FlatObjectWriter w;
  // No password means "receives mail, cannot log in": Dovecot then refuses the password
  // ("No password returned") instead of calling the user unknown.
  if (entry.password) w.add("password", *entry.password);
  w.add("user", entry.user);
  return w.finish();
}

std::string userdb_json(const storage::UserdbEntry& entry) {
  json::FlatObjectWriter w;
  w.add("user", entry.user);
  add_id(w, "uid", entry.uid);
  add_id(w, "gid", entry.gid);
  w.add("home", entry.home);
  if (!entry.mail.empty()) w.add("mail", entry.mail);
  if (entry.quota_rule) w.add("quota_rule", *entry.quota_rule);
  return w.finish();
}

// ---- smtpd (specs/smtpd-tables.md §5) ---------------------------------------------------------

namespace {

// smtpd's own limits on what it parses (§5.3): a longer value is refused by smtpd as a whole,
// so it is refused here with the reason instead.
constexpr std::size_t kLineMax = 2047;       // alias, mailaddrmap, credentials: < LINE_MAX (2048)
constexpr std::size_t kHostNameMax = 64;     // domain, addrname: HOST_NAME_MAX on Linux
constexpr std::size_t kRelayHostMax = 1023;  // relayhost: < 1024
constexpr std::size_t kHomeMax = 4095;       // userinfo homedir: < PATH_MAX

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

bool has_line_break_or_nul(std::string_view s) { return s.find_first_of(std::string_view("\0\r\n", 3)) != std::string_view::npos; }

// Every found smtpd value passes here: smtpd exits on an empty value and a NUL or line break
// would cut the reply, so a bad row becomes a temporary failure that names the service.
LookupAnswer smtpd_value(std::string_view service, std::string value, std::size_t max) {
  if (value.empty()) return LookupAnswer::failed("maildict: smtpd " + std::string(service) + ": empty value in the directory");
  if (has_line_break_or_nul(value))
    return LookupAnswer::failed("maildict: smtpd " + std::string(service) + ": value holds a NUL or line break");
  if (value.size() > max)
    return LookupAnswer::failed("maildict: smtpd " + std::string(service) + ": value longer than smtpd accepts (" +
                                std::to_string(value.size()) + " > " + std::to_string(max) + " bytes)");
  return LookupAnswer::found(std::move(value));
}

LookupAnswer list_answer(std::string_view service, const std::vector<std::string>& items) {
  auto list = smtpd_list(items);
  if (!list)
    return LookupAnswer::failed("maildict: smtpd " + std::string(service) + ": list of " +
                                std::to_string(items.size()) + " items is longer than smtpd's 2047 bytes");
  return smtpd_value(service, std::move(*list), kLineMax);
}

template <class T, class F>
LookupAnswer from_result(std::string_view what, const storage::Result<T>& r, F&& format) {
  if (r.outcome == storage::Outcome::temp_fail) return LookupAnswer::failed(failure_text(what, r.error));
  if (r.outcome == storage::Outcome::not_found) return LookupAnswer::not_found();
  return format(r.value);
}

// One operator-set value (the first row, in insertion order) for a single-valued service.
LookupAnswer first_value(storage::DirectoryConnection& conn, std::string_view service, const std::string& key,
                         std::size_t max, storage::Deadline deadline) {
  auto r = conn.smtpd_values(service, key, deadline);
  return from_result("smtpd " + std::string(service) + " lookup", r,
                     [&](const std::vector<std::string>& v) { return smtpd_value(service, v.front(), max); });
}

// Relay labels are the names in `relay host smtp+tls://LABEL@host auth <table>`; they share
// the credentials service with SMTP AUTH logins. A login always has '@' or splits at '_' into
// two parts (DESIGN.md §3); a label has neither, so a key is one or the other, never both.
bool is_login(const std::string& key) {
  if (key.find('@') != std::string::npos) return true;
  auto us = key.rfind('_');
  return us != std::string::npos && us > 0 && us + 1 < key.size();
}

// An existing table-sqlite/table-postgres setup: the rows of the operator's query, shaped as
// those tables shape them (specs/smtpd-tables.md §6.2): alias and mailaddrmap join column 0 of
// every row with ", "; credentials is "col0:col1" and userinfo "col0:col1:col2" of the first
// row; every other service the first row's column 0; a fetch (source, empty key) the list.
LookupAnswer table_rows_answer(const std::string& service, const std::string& key,
                               const storage::Result<std::vector<std::vector<std::string>>>& r) {
  return from_result("smtpd " + service + " lookup", r, [&](const std::vector<std::vector<std::string>>& rows) {
    auto columns = [&](std::size_t n) { return rows.front().size() >= n; };
    if (service == "alias" || service == "mailaddrmap" || (service == "source" && key.empty())) {
      std::string joined;
      for (const auto& row : rows) {
        if (row.empty()) continue;
        if (!joined.empty()) joined += ", ";
        joined += row[0];
      }
      return smtpd_value(service, std::move(joined), kLineMax);
    }
    if (service == "credentials") {
      if (!columns(2)) return LookupAnswer::failed("maildict: query_credentials must return 2 columns");
      return smtpd_value(service, rows.front()[0] + ":" + rows.front()[1], kLineMax);
    }
    if (service == "userinfo") {
      if (!columns(3)) return LookupAnswer::failed("maildict: query_userinfo must return 3 columns");
      const auto& row = rows.front();
      return smtpd_value(service, row[0] + ":" + row[1] + ":" + row[2], kLineMax + kHomeMax);
    }
    if (!columns(1)) return LookupAnswer::failed("maildict: query_" + service + " returns no column");
    return smtpd_value(service, rows.front()[0], kLineMax);
  });
}

struct ParsedNet {
  int family = 0;
  unsigned char bytes[16] = {};
  int prefix = -1;  // -1: the whole address
};

std::optional<ParsedNet> parse_net(std::string_view text, bool allow_prefix) {
  ParsedNet out;
  std::string_view addr = text;
  if (auto slash = text.find('/'); slash != std::string_view::npos) {
    if (!allow_prefix) return std::nullopt;
    auto len = text.substr(slash + 1);
    if (len.empty() || len.size() > 3) return std::nullopt;
    int n = 0;
    for (char c : len) {
      if (c < '0' || c > '9') return std::nullopt;
      n = n * 10 + (c - '0');
    }
    out.prefix = n;
    addr = text.substr(0, slash);
  }
  if (addr.size() >= 5 && ascii_lower(addr.substr(0, 5)) == "ipv6:") addr.remove_prefix(5);
  if (addr.size() >= 2 && addr.front() == '[' && addr.back() == ']') addr = addr.substr(1, addr.size() - 2);
  std::string a(addr);
  if (::inet_pton(AF_INET, a.c_str(), out.bytes) == 1) out.family = AF_INET;
  else if (::inet_pton(AF_INET6, a.c_str(), out.bytes) == 1) out.family = AF_INET6;
  else return std::nullopt;
  int bits = out.family == AF_INET ? 32 : 128;
  if (out.prefix > bits) return std::nullopt;
  if (out.prefix < 0) out.prefix = bits;
  return out;
}

}  // namespace

std::optional<std::string> smtpd_list(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += ", ";
    if (item.find_first_of(",\"'\\") == std::string::npos) {
      out += item;
    } else {
      out += '"';
      for (char c : item) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
      }
      out += '"';
    }
    if (out.size() > kLineMax) return std::nullopt;
  }
  return out;
}

bool smtpd_service_served(std::string_view service) {
  for (std::string_view s : {"domain", "alias", "mailaddr", "userinfo", "credentials", "mailaddrmap", "netaddr",
                             "addrname", "relayhost", "source"})
    if (s == service) return true;
  return false;
}

bool netaddr_matches(std::string_view entry, std::string_view key) {
  if (ascii_lower(entry) == ascii_lower(key)) return true;
  auto net = parse_net(entry, true);
  auto addr = parse_net(key, false);
  if (!net || !addr || net->family != addr->family) return false;
  int full = net->prefix / 8, rest = net->prefix % 8;
  if (std::memcmp(net->bytes, addr->bytes, static_cast<std::size_t>(full)) != 0) return false;
  if (rest == 0) return true;
  auto mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (net->bytes[full] & mask) == (addr->bytes[full] & mask);
}

LookupAnswer answer_smtpd(storage::DirectoryConnection& conn, const dict::SmtpdQuestion& question,
                          storage::Deadline deadline) {
  // smtpd lower-cases keys itself (§5.1); a replayed or hand-typed key must reach the same rows.
  const std::string key = ascii_lower(question.key);
  const std::string& service = question.service;

  if (auto rows = conn.smtpd_table_rows(service, key, deadline)) return table_rows_answer(service, key, *rows);

  if (service == "domain") {
    return from_result("smtpd domain lookup", conn.domain_exists(key, deadline),
                       [](const std::string& d) { return smtpd_value("domain", d, kHostNameMax); });
  }
  if (service == "alias") {
    return from_result("smtpd alias lookup", conn.resolve_recipient(key, deadline),
                       [](const std::vector<std::string>& v) { return list_answer("alias", v); });
  }
  if (service == "mailaddr") {
    // A check in practice (`rcpt-to <t>`, `mail-from <t>`, `auth <t>`): an address is in the
    // table when it reaches a recipient.
    return from_result("smtpd mailaddr lookup", conn.resolve_recipient(key, deadline),
                       [&key](const std::vector<std::string>&) { return smtpd_value("mailaddr", key, kLineMax); });
  }
  if (service == "userinfo") {
    // smtpd parses "uid:gid:home" after its own "name:" prefix, so a name holding ':' cannot be
    // answered unambiguously; no user of ours has one.
    if (key.find(':') != std::string::npos) return LookupAnswer::not_found();
    return from_result("smtpd userinfo lookup", conn.userinfo(key, deadline), [](const storage::UserInfo& u) {
      if (u.home.size() > kHomeMax) return LookupAnswer::failed("maildict: smtpd userinfo: home longer than smtpd accepts");
      return smtpd_value("userinfo", u.uid + ":" + u.gid + ":" + u.home, kLineMax + kHomeMax);
    });
  }
  if (service == "credentials") {
    if (is_login(key)) {
      return from_result("smtpd credentials lookup", conn.credentials(key, deadline), [](const storage::LoginHash& c) {
        // smtpd splits at the first ':'; the login part is ignored for AUTH, but a ':' in it
        // would shift the hash.
        if (c.login.find(':') != std::string::npos)
          return LookupAnswer::failed("maildict: smtpd credentials: login holds ':'");
        return smtpd_value("credentials", c.login + ":" + c.hash, kLineMax);
      });
    }
    return from_result("smtpd relay credentials lookup", conn.relay_credential(key, deadline),
                       [](const storage::RelayCredential& c) {
                         if (c.username.empty() || c.password.empty() || c.username.find(':') != std::string::npos)
                           return LookupAnswer::failed(
                               "maildict: smtpd relay credentials: username must be non-empty without ':', "
                               "password non-empty");
                         return smtpd_value("credentials", c.username + ":" + c.password, kLineMax);
                       });
  }
  if (service == "mailaddrmap") {
    return from_result("smtpd mailaddrmap lookup", conn.sender_addresses(key, deadline),
                       [](const std::vector<std::string>& v) { return list_answer("mailaddrmap", v); });
  }
  if (service == "netaddr") {
    // Entries are networks, so the key is matched against every one of them.
    auto r = conn.smtpd_keys("netaddr", deadline);
    return from_result("smtpd netaddr lookup", r, [&key](const std::vector<std::string>& entries) {
      for (const auto& e : entries)
        if (netaddr_matches(e, key)) return smtpd_value("netaddr", e, kLineMax);
      return LookupAnswer::not_found();
    });
  }
  if (service == "addrname") return first_value(conn, "addrname", key, kHostNameMax, deadline);
  // A fetch (the empty key) gets the whole list and table-maildict hands out one item per
  // fetch, going round; a keyed relayhost lookup (`relay domain <t>`) wants one URL.
  if (service == "relayhost" && !key.empty()) return first_value(conn, "relayhost", key, kRelayHostMax, deadline);
  if (service == "source" || service == "relayhost") {
    auto r = conn.smtpd_values(service, key, deadline);
    return from_result("smtpd " + service + " lookup", r,
                       [&service](const std::vector<std::string>& v) { return list_answer(service, v); });
  }
  // string, regex, auth and anything unknown: there is no data for them, and "not found" would
  // quietly turn a misconfigured smtpd.conf rule into a wrong decision.
  return LookupAnswer::failed("maildict: smtpd service not served: " + printable_excerpt(service, 64));
}

LookupAnswer answer_question(storage::DirectoryConnection& conn, const dict::KeyQuestion& question,
                             const std::string& key, storage::Deadline deadline) {
  using storage::Outcome;
  if (auto* q = std::get_if<dict::PassdbQuestion>(&question)) {
    auto r = conn.passdb(q->login, deadline);
    if (r.outcome == Outcome::temp_fail) return LookupAnswer::failed(failure_text("passdb lookup", r.error));
    if (r.outcome == Outcome::not_found) return LookupAnswer::not_found();
    return LookupAnswer::found(passdb_json(r.value));
  }
  if (auto* q = std::get_if<dict::UserdbQuestion>(&question)) {
    auto r = conn.userdb(q->login, deadline);
    if (r.outcome == Outcome::temp_fail) return LookupAnswer::failed(failure_text("userdb lookup", r.error));
    if (r.outcome == Outcome::not_found) return LookupAnswer::not_found();
    return LookupAnswer::found(userdb_json(r.value));
  }
  if (auto* q = std::get_if<dict::SmtpdQuestion>(&question)) return answer_smtpd(conn, *q, deadline);
  return LookupAnswer::failed("maildict: key is not served here");
}

IterateAnswer answer_user_iteration(storage::DirectoryConnection& conn, bool with_values,
                                    std::uint64_t max_rows, storage::Deadline deadline) {
  IterateAnswer answer;
  auto r = conn.users(deadline);
  if (r.outcome == storage::Outcome::temp_fail) {
    answer.failed = true;
    answer.error = failure_text("user iteration", r.error);
    return answer;
  }
  std::size_t n = r.value.size();
  if (max_rows != 0 && max_rows < n) n = static_cast<std::size_t>(max_rows);
  answer.rows.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& user = r.value[i];
    answer.rows.emplace_back(std::string(dict::userdb_prefix) + user.user,
                             with_values ? userdb_json(user) : std::string());
  }
  return answer;
}

}  // namespace maildict::server
