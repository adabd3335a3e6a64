#include "storage/directory_admin.hpp"

#include <algorithm>
#include <charconv>
#include <functional>
#include <set>

#include "storage/sql_session.hpp"

namespace maildict::storage {

// ---- names -----------------------------------------------------------------------------------

namespace {

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

// Shown in error messages: the operator's own input, but cut and with control characters made
// visible so a stray escape sequence cannot mess up the terminal.
std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s.substr(0, 200)) {
    if (c < 0x20 || c == 0x7f) {
      static const char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > 200) out += "...";
  return out;
}

bool valid_local_char(unsigned char c) {
  if (c <= 0x20 || c >= 0x7f) return false;
  // Printable ASCII except the specials of RFC 5322 (a quoted local part is not supported: no
  // peer of ours handles one), and '/', which would walk out of a home directory template.
  static constexpr std::string_view specials = "@/\"\\(),:;<>[]";
  return specials.find(static_cast<char>(c)) == std::string_view::npos;
}

bool valid_local_part(std::string_view local, std::string& why) {
  if (local.empty()) {
    why = "the local part (before '@') is empty";
    return false;
  }
  if (local.size() > 64) {
    why = "the local part is longer than 64 characters";
    return false;
  }
  for (unsigned char c : local) {
    if (!valid_local_char(c)) {
      why = c >= 0x80 ? "the local part holds a non-ASCII character (not supported)"
                      : std::string("the local part holds a character that is not allowed: '") +
                            printable(std::string_view(reinterpret_cast<const char*>(&c), 1)) + "'";
      return false;
    }
  }
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos) {
    why = "the local part may not start or end with '.' or hold '..'";
    return false;
  }
  return true;
}

bool parse_active(const SqlValue& v) { return v && *v == "1"; }

std::int64_t parse_int(const SqlValue& v) {
  std::int64_t n = 0;
  if (v) std::from_chars(v->data(), v->data() + v->size(), n);
  return n;
}

std::optional<std::int64_t> parse_optional_int(const SqlValue& v) {
  if (!v) return std::nullopt;
  std::int64_t n = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || p != v->data() + v->size()) return std::nullopt;
  return n;
}

SqlValue text(std::string_view s) { return std::string(s); }
SqlValue flag(bool b) { return std::string(b ? "1" : "0"); }

const char* kind_name(SqlError::Kind k) {
  switch (k) {
    case SqlError::Kind::transient: return "temporary database failure";
    case SqlError::Kind::invalid_input: return "the database cannot store this value";
    case SqlError::Kind::constraint: return "the database refused the change";
    case SqlError::Kind::permanent: return "database error";
  }
  return "database error";
}

AdminStatus status_of(SqlError::Kind k) {
  switch (k) {
    case SqlError::Kind::transient: return AdminStatus::temp_fail;
    case SqlError::Kind::invalid_input: return AdminStatus::bad_input;
    case SqlError::Kind::constraint: return AdminStatus::conflict;
    case SqlError::Kind::permanent: return AdminStatus::db_error;
  }
  return AdminStatus::db_error;
}

}  // namespace

std::optional<std::string> normalize_domain(std::string_view in, std::string& why) {
  if (in.empty()) {
    why = "the domain name is empty";
    return std::nullopt;
  }
  std::string d = lowered(in);
  if (d.size() > 253) {
    why = "the domain name is longer than 253 characters";
    return std::nullopt;
  }
  std::size_t label_start = 0;
  for (std::size_t i = 0; i <= d.size(); ++i) {
    if (i == d.size() || d[i] == '.') {
      std::size_t len = i - label_start;
      if (len == 0) {
        why = "'" + printable(in) + "' has an empty label (leading, trailing or doubled '.')";
        return std::nullopt;
      }
      if (len > 63) {
        why = "'" + printable(in) + "' has a label longer than 63 characters";
        return std::nullopt;
      }
      if (d[label_start] == '-' || d[i - 1] == '-') {
        why = "'" + printable(in) + "' has a label that starts or ends with '-'";
        return std::nullopt;
      }
      label_start = i + 1;
      continue;
    }
    unsigned char c = static_cast<unsigned char>(d[i]);
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') continue;
    if (c == '_')
      why = "'" + printable(in) + "' holds '_', which no domain name may (logins split user_domain at the last '_')";
    else if (c >= 0x80)
      why = "'" + printable(in) + "' is not ASCII: give an international domain in its xn-- form";
    else
      why = "'" + printable(in) + "' is not a valid domain name (letters, digits, '-' and '.' only)";
    return std::nullopt;
  }
  return d;
}

std::optional<MailboxName> normalize_address(std::string_view in, std::string_view delimiters, std::string& why) {
  auto at = in.rfind('@');
  if (at == std::string_view::npos) {
    why = "'" + printable(in) + "' is not an address (expected local@domain)";
    return std::nullopt;
  }
  std::string_view local = in.substr(0, at);
  if (!valid_local_part(local, why)) {
    why = "'" + printable(in) + "': " + why;
    return std::nullopt;
  }
  std::string dwhy;
  auto domain = normalize_domain(in.substr(at + 1), dwhy);
  if (!domain) {
    why = "'" + printable(in) + "': " + dwhy;
    return std::nullopt;
  }
  if (!delimiters.empty()) {
    auto pos = local.find_first_of(delimiters);
    // A delimiter in first position is not a sub-address (maildictd keeps it), so it is fine.
    if (pos != std::string_view::npos && pos > 0) {
      why = "'" + printable(in) + "': the local part holds '" + std::string(1, local[pos]) +
            "', the recipient delimiter: mail to it would go to '" + lowered(local.substr(0, pos)) + "@" + *domain +
            "' instead";
      return std::nullopt;
    }
  }
  return MailboxName{lowered(local), *domain};
}

std::optional<MailboxName> normalize_alias_source(std::string_view in, std::string_view delimiters,
                                                  std::string& why) {
  if (!in.empty() && in.front() == '@') {
    auto domain = normalize_domain(in.substr(1), why);
    if (!domain) {
      why = "catch-all '" + printable(in) + "': " + why;
      return std::nullopt;
    }
    return MailboxName{"", *domain};
  }
  return normalize_address(in, delimiters, why);
}

std::optional<std::string> normalize_destination(std::string_view in, bool allow_domain, std::string& why) {
  if (allow_domain && !in.empty() && in.front() == '@') {
    auto domain = normalize_domain(in.substr(1), why);
    if (!domain) return std::nullopt;
    return "@" + *domain;
  }
  auto name = normalize_address(in, {}, why);
  if (!name) return std::nullopt;
  return name->canonical();
}

std::optional<std::int64_t> parse_quota(std::string_view in, std::string& why) {
  std::size_t digits = 0;
  while (digits < in.size() && in[digits] >= '0' && in[digits] <= '9') ++digits;
  std::uint64_t n = 0;
  auto [p, ec] = std::from_chars(in.data(), in.data() + digits, n);
  std::string_view unit = in.substr(digits);
  int shift = -1;
  if (unit.empty() || unit == "B" || unit == "b") shift = 0;
  else if (unit == "K" || unit == "k") shift = 10;
  else if (unit == "M" || unit == "m") shift = 20;
  else if (unit == "G" || unit == "g") shift = 30;
  else if (unit == "T" || unit == "t") shift = 40;
  if (digits == 0 || ec != std::errc() || shift < 0) {
    why = "'" + printable(in) + "' is not a size (a number of bytes, or with K, M, G or T: 500M, 2G; 0 is unlimited)";
    return std::nullopt;
  }
  if (n > (std::uint64_t{1} << (62 - shift))) {
    why = "'" + printable(in) + "' is too large";
    return std::nullopt;
  }
  return static_cast<std::int64_t>(n << shift);
}

// ---- transactions ------------------------------------------------------------------------------

namespace {

// Thrown inside an operation to end it with this result; the transaction then rolls back.
struct Failure {
  AdminResult result;
};

[[noreturn]] void fail(AdminStatus status, std::string why) { throw Failure{{status, std::move(why)}}; }

[[noreturn]] void fail_sql(const SqlError& err) {
  std::string why = kind_name(err.kind);
  if (!err.message.empty()) why += ": " + err.message;
  fail(status_of(err.kind), std::move(why));
}

// One transaction: begun on construction, rolled back unless commit() ran.
class Tx {
 public:
  Tx(SqlSession& s, SessionRole role, std::chrono::milliseconds timeout) : s_(s) {
    s_.set_deadline(Clock::now() + timeout);
    SqlError err;
    if (!s_.begin(role, err)) fail_sql(err);
    open_ = true;
  }
  ~Tx() {
    if (open_) s_.rollback();
  }
  Tx(const Tx&) = delete;
  Tx& operator=(const Tx&) = delete;

  SqlRows query(std::string_view sql, std::initializer_list<SqlValue> params) {
    SqlRows rows;
    SqlError err;
    if (!s_.run(sql, std::span<const SqlValue>(params.begin(), params.size()), &rows, err)) fail_sql(err);
    return rows;
  }
  void exec(std::string_view sql, std::initializer_list<SqlValue> params) {
    SqlError err;
    if (!s_.run(sql, std::span<const SqlValue>(params.begin(), params.size()), nullptr, err)) fail_sql(err);
  }
  void commit() {
    SqlError err;
    open_ = false;
    if (!s_.commit(err)) {
      s_.rollback();
      fail_sql(err);
    }
  }

 private:
  SqlSession& s_;
  bool open_ = false;
};

// Runs `body` in one transaction; commits when it returns ok (for a write) and turns every
// Failure into its result.
template <class F>
AdminResult in_transaction(SqlSession& s, SessionRole role, std::chrono::milliseconds timeout, F&& body) {
  try {
    Tx tx(s, role, timeout);
    AdminResult r = body(tx);
    if (r.ok()) tx.commit();
    return r;
  } catch (const Failure& f) {
    return f.result;
  }
}

template <class T>
T need(std::optional<T> v, const std::string& why) {
  if (!v) fail(AdminStatus::bad_input, why);
  return std::move(*v);
}

// ---- rows ----------------------------------------------------------------------------------------

struct DomainRow {
  std::string domain;
  bool active = false;
  std::optional<std::string> alias_for;
};

std::optional<DomainRow> domain_row(Tx& tx, const std::string& domain) {
  auto rows = tx.query("SELECT domain, active, alias_for FROM domains WHERE domain = $1", {text(domain)});
  if (rows.empty()) return std::nullopt;
  DomainRow d;
  d.domain = rows[0][0].value_or("");
  d.active = parse_active(rows[0][1]);
  if (rows[0][2] && !rows[0][2]->empty()) d.alias_for = lowered(*rows[0][2]);
  return d;
}

DomainRow existing_domain(Tx& tx, const std::string& domain) {
  auto d = domain_row(tx, domain);
  if (!d) fail(AdminStatus::not_found, "domain " + domain + " does not exist");
  return *d;
}

const char kUserColumns[] =
    "SELECT u.local_part, u.domain, u.password, u.uid, u.gid, u.home, u.mail, u.quota_bytes, u.active, d.active "
    "FROM users u LEFT JOIN domains d ON d.domain = u.domain ";

UserRecord user_from_row(const SqlRow& r) {
  UserRecord u;
  u.name.local_part = r[0].value_or("");
  u.name.domain = r[1].value_or("");
  u.password = r[2];
  u.uid = r[3];
  u.gid = r[4];
  u.home = r[5];
  u.mail = r[6];
  u.quota_bytes = parse_optional_int(r[7]);
  u.active = parse_active(r[8]);
  u.domain_active = parse_active(r[9]);
  return u;
}

std::optional<UserRecord> user_row(Tx& tx, const MailboxName& name) {
  auto rows = tx.query(std::string(kUserColumns) + "WHERE u.local_part = $1 AND u.domain = $2",
                       {text(name.local_part), text(name.domain)});
  if (rows.empty()) return std::nullopt;
  return user_from_row(rows[0]);
}

UserRecord existing_user(Tx& tx, const MailboxName& name) {
  auto u = user_row(tx, name);
  if (!u) fail(AdminStatus::not_found, "user " + name.canonical() + " does not exist");
  return *u;
}

bool user_exists(Tx& tx, const MailboxName& name, bool only_active) {
  auto rows = tx.query(only_active ? "SELECT 1 FROM users u JOIN domains d ON d.domain = u.domain "
                                     "WHERE u.local_part = $1 AND u.domain = $2 AND u.active = 1 AND d.active = 1"
                                   : "SELECT 1 FROM users WHERE local_part = $1 AND domain = $2",
                       {text(name.local_part), text(name.domain)});
  return !rows.empty();
}

std::vector<AliasRow> alias_rows(Tx& tx, const MailboxName& source, bool only_active) {
  auto rows = tx.query(only_active ? "SELECT destination, active FROM aliases WHERE local_part = $1 AND domain = $2 "
                                     "AND active = 1 ORDER BY destination"
                                   : "SELECT destination, active FROM aliases WHERE local_part = $1 AND domain = $2 "
                                     "ORDER BY destination",
                       {text(source.local_part), text(source.domain)});
  std::vector<AliasRow> out;
  for (auto& r : rows) out.push_back(AliasRow{source.local_part, source.domain, r[0].value_or(""), parse_active(r[1])});
  return out;
}

std::vector<std::string> destinations_of(const std::vector<AliasRow>& rows) {
  std::vector<std::string> out;
  for (auto& r : rows) out.push_back(r.destination);
  return out;
}

std::string source_text(const MailboxName& n) { return n.local_part + "@" + n.domain; }

// ---- recipient resolution (DESIGN.md §3) ----------------------------------------------------------
// The same rules, in the same order, as the backends' resolve_recipient: alias rows of the exact
// address, an active user, the same local part at the alias_for domain (followed once: alias rows,
// user, that domain's catch-all), then the domain's own catch-all. `only_active` false treats
// every row as enabled: the loop check must also refuse a loop that enabling a row would close.
// A disabled user (only_active) ends the search: its mail is refused, never given to a catch-all.

Resolution disabled_user(const MailboxName& name) {
  Resolution r;
  r.rule = Resolution::Rule::user_disabled;
  r.matched = name.canonical();
  r.explanation = "user " + r.matched + " is disabled: smtpd refuses its mail (550), which never goes to a "
                  "catch-all (to forward it, add an alias)";
  return r;
}

Resolution resolve(Tx& tx, const MailboxName& name, bool only_active) {
  using Rule = Resolution::Rule;
  Resolution r;
  auto domain = domain_row(tx, name.domain);
  if (!domain) {
    r.rule = Rule::domain_not_served;
    r.explanation = name.domain + " is not a served domain: smtpd relays or refuses it by its own rules";
    return r;
  }
  if (only_active && !domain->active) {
    r.rule = Rule::domain_disabled;
    r.explanation = "domain " + name.domain + " is disabled: nothing there receives mail";
    return r;
  }
  if (auto rows = alias_rows(tx, name, only_active); !rows.empty()) {
    r.rule = Rule::alias_rows;
    r.matched = name.canonical();
    r.destinations = destinations_of(rows);
    r.explanation = "alias " + r.matched + " (rule 1: alias rows for the exact address)";
    return r;
  }
  if (user_exists(tx, name, only_active)) {
    r.rule = Rule::user;
    r.matched = name.canonical();
    r.destinations = {name.canonical()};
    r.explanation = "user " + r.matched + " (rule 2: a user with that address)";
    return r;
  }
  if (only_active && user_exists(tx, name, false)) return disabled_user(name);
  if (domain->alias_for && *domain->alias_for != name.domain) {
    auto target = domain_row(tx, *domain->alias_for);
    if (target && (!only_active || target->active)) {
      MailboxName there{name.local_part, target->domain};
      if (auto rows = alias_rows(tx, there, only_active); !rows.empty()) {
        r.rule = Rule::alias_domain_alias_rows;
        r.matched = there.canonical();
        r.destinations = destinations_of(rows);
        r.explanation = name.domain + " is an alias domain of " + there.domain + "; alias " + r.matched +
                        " (rule 3: the same local part at the alias_for domain)";
        return r;
      }
      if (user_exists(tx, there, only_active)) {
        r.rule = Rule::alias_domain_user;
        r.matched = there.canonical();
        r.destinations = {there.canonical()};
        r.explanation = name.domain + " is an alias domain of " + there.domain + "; user " + r.matched +
                        " (rule 3: the same local part at the alias_for domain)";
        return r;
      }
      if (only_active && user_exists(tx, there, false)) return disabled_user(there);
      if (auto rows = alias_rows(tx, MailboxName{"", there.domain}, only_active); !rows.empty()) {
        r.rule = Rule::alias_domain_catch_all;
        r.matched = "@" + there.domain;
        r.destinations = destinations_of(rows);
        r.explanation = name.domain + " is an alias domain of " + there.domain + "; catch-all " + r.matched +
                        " (rule 3, then that domain's catch-all)";
        return r;
      }
    }
  }
  if (auto rows = alias_rows(tx, MailboxName{"", name.domain}, only_active); !rows.empty()) {
    r.rule = Rule::catch_all;
    r.matched = "@" + name.domain;
    r.destinations = destinations_of(rows);
    r.explanation = "catch-all " + r.matched + " (rule 4: nothing more specific matched)";
    return r;
  }
  r.rule = Rule::none;
  r.explanation = "no alias, user or catch-all receives " + name.canonical() + ": smtpd refuses it (550)";
  return r;
}

bool is_alias_rule(Resolution::Rule rule) {
  using Rule = Resolution::Rule;
  return rule == Rule::alias_rows || rule == Rule::alias_domain_alias_rows || rule == Rule::alias_domain_catch_all ||
         rule == Rule::catch_all;
}

// The alias row set a resolution landed on, as a source ("a@d" or "@d").
MailboxName matched_node(const Resolution& r) {
  auto at = r.matched.rfind('@');
  return MailboxName{r.matched.substr(0, at), r.matched.substr(at + 1)};
}

// Follows the alias rows of `start` through every destination, as smtpd expands them, and
// returns the path when it comes back to `start` (empty when it does not).
std::vector<std::string> find_loop(Tx& tx, const MailboxName& start, std::string_view delimiters) {
  std::set<std::string> visited;
  std::vector<std::string> path{source_text(start)};
  std::function<bool(const MailboxName&)> walk = [&](const MailboxName& node) -> bool {
    for (const auto& dest : destinations_of(alias_rows(tx, node, false))) {
      // A destination that names a user exactly is delivered to that mailbox (maildictd hands
      // smtpd its delivery name), even when alias rows exist for the address: that is how an
      // alias keeps a copy for the user it shadows.
      if (auto exact = split_address(dest, {}); exact && user_exists(tx, *exact, false)) continue;
      // Anything else smtpd expands again through the same table, sub-address cut off.
      auto name = split_address(dest, delimiters);
      if (!name) continue;
      auto r = resolve(tx, *name, false);
      if (!is_alias_rule(r.rule)) continue;
      MailboxName next = matched_node(r);
      // "nobody@example.org (via @example.org)" when a catch-all or alias domain took it there
      path.push_back(dest == source_text(next) ? dest : dest + " (via " + source_text(next) + ")");
      if (next.local_part == start.local_part && next.domain == start.domain) return true;
      if (visited.insert(source_text(next)).second) {
        if (walk(next)) return true;
      }
      path.pop_back();
    }
    return false;
  };
  visited.insert(source_text(start));
  if (walk(start)) return path;
  return {};
}

std::string loop_text(const std::vector<std::string>& path) {
  std::string out;
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (i) out += " -> ";
    out += path[i];
  }
  return out;
}

void refuse_loop_from(Tx& tx, const MailboxName& start, std::string_view delimiters, const std::string& what) {
  auto loop = find_loop(tx, start, delimiters);
  if (!loop.empty()) fail(AdminStatus::conflict, what + " would make an alias loop: " + loop_text(loop));
}

void check_attributes(const UserAttributes& a) {
  auto check_id = [](const Change<std::string>& c, const char* what) {
    if (c.kind != Change<std::string>::Kind::set) return;
    const std::string& v = c.value;
    std::uint64_t n = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (v.empty() || ec != std::errc() || p != v.data() + v.size() || n > 4294967294u)
      fail(AdminStatus::bad_input, std::string(what) + " must be a number (0..4294967294): '" + printable(v) +
                                       "'; system account names belong in default_uid/default_gid");
  };
  check_id(a.uid, "--uid");
  check_id(a.gid, "--gid");
  if (a.home.kind == Change<std::string>::Kind::set) {
    if (a.home.value.empty() || a.home.value.front() != '/')
      fail(AdminStatus::bad_input, "--home must be an absolute path: '" + printable(a.home.value) + "'");
  }
  for (const auto* c : {&a.home, &a.mail}) {
    if (c->kind != Change<std::string>::Kind::set) continue;
    if (c->value.size() > 4095) fail(AdminStatus::bad_input, "--home/--mail is too long");
    for (unsigned char ch : c->value)
      if (ch < 0x20 || ch == 0x7f) fail(AdminStatus::bad_input, "--home/--mail holds a control character");
  }
  if (a.mail.kind == Change<std::string>::Kind::set && a.mail.value.empty())
    fail(AdminStatus::bad_input, "--mail is empty (use 'default' to return to the configured default)");
  if (a.quota_bytes.kind == Change<std::int64_t>::Kind::set && a.quota_bytes.value < 0)
    fail(AdminStatus::bad_input, "--quota must not be negative");
}

template <class T>
SqlValue column_value(const Change<T>& c) {
  if (c.kind != Change<T>::Kind::set) return std::nullopt;
  if constexpr (std::is_same_v<T, std::string>) return c.value;
  else return std::to_string(c.value);
}

}  // namespace

// ---- DirectoryAdmin ------------------------------------------------------------------------------

DirectoryAdmin::DirectoryAdmin(SqlSession& session, std::string delimiters, std::chrono::milliseconds timeout)
    : session_(session), delimiters_(std::move(delimiters)), timeout_(timeout) {}

AdminResult DirectoryAdmin::add_domain(std::string_view domain_in, std::optional<std::string_view> alias_for_in,
                                       bool active) {
  std::string why;
  auto domain = normalize_domain(domain_in, why);
  if (!domain) return AdminResult::fail(AdminStatus::bad_input, why);
  std::optional<std::string> alias_for;
  if (alias_for_in) {
    alias_for = normalize_domain(*alias_for_in, why);
    if (!alias_for) return AdminResult::fail(AdminStatus::bad_input, "--alias-for: " + why);
    if (*alias_for == *domain) return AdminResult::fail(AdminStatus::bad_input, "a domain cannot be an alias of itself");
  }
  return in_transaction(session_, SessionRole::write, timeout_, [&](Tx& tx) {
    if (domain_row(tx, *domain)) fail(AdminStatus::conflict, "domain " + *domain + " exists already");
    if (alias_for) {
      auto target = domain_row(tx, *alias_for);
      if (!target)
        fail(AdminStatus::not_found, "--alias-for: domain " + *alias_for + " does not exist; add it first");
      // maildictd follows alias_for once; a chain would silently stop after the first step.
      if (target->alias_for)
        fail(AdminStatus::conflict, "--alias-for: " + *alias_for + " is itself an alias domain of " +
                                        *target->alias_for + "; point " + *domain + " at " + *target->alias_for);
    }
    tx.exec("INSERT INTO domains (domain, active, alias_for) VALUES ($1, $2, $3)",
            {text(*domain), flag(active), alias_for ? SqlValue(*alias_for) : std::nullopt});
    // Aliases elsewhere that send mail to this name used to leave the server; now they come
    // back through this domain, which may close a loop.
    if (alias_for) {
      auto rows = tx.query("SELECT DISTINCT local_part, domain FROM aliases WHERE destination LIKE $1",
                           {text("%@" + *domain)});
      for (auto& r : rows)
        refuse_loop_from(tx, MailboxName{r[0].value_or(""), r[1].value_or("")}, delimiters_,
                         "alias domain " + *domain);
    }
    return AdminResult::success();
  });
}

AdminResult DirectoryAdmin::set_domain_active(std::string_view domain_in, bool active) {
  std::string why;
  auto domain = normalize_domain(domain_in, why);
  if (!domain) return AdminResult::fail(AdminStatus::bad_input, why);
  return in_transaction(session_, SessionRole::write, timeout_, [&](Tx& tx) {
    auto d = existing_domain(tx, *domain);
    if (d.active == active)
      return AdminResult::success("domain " + *domain + " was already " + (active ? "enabled" : "disabled"));
    tx.exec("UPDATE domains SET active = $2 WHERE domain = $1", {text(*domain), flag(active)});
    return AdminResult::success();
  });
}

AdminResult DirectoryAdmin::remove_domain(std::string_view domain_in, bool force) {
  std::string why;
  auto domain = normalize_domain(domain_in, why);
  if (!domain) return AdminResult::fail(AdminStatus::bad_input, why);
  return in_transaction(session_, SessionRole::write, timeout_, [&](Tx& tx) {
    existing_domain(tx, *domain);
    auto alias_domains = tx.query("SELECT domain FROM domains WHERE alias_for = $1 ORDER BY domain", {text(*domain)});
    if (!alias_domains.empty()) {
      std::string names;
      for (auto& r : alias_domains) names += (names.empty() ? "" : ", ") + r[0].value_or("");
      fail(AdminStatus::conflict, "domain " + *domain + " is the target of alias domain(s) " + names +
                                      "; remove those first (also with --force)");
    }
    std::int64_t users = parse_int(tx.query("SELECT count(*) FROM users WHERE domain = $1", {text(*domain)})[0][0]);
    std::int64_t aliases =
        parse_int(tx.query("SELECT count(*) FROM aliases WHERE domain = $1", {text(*domain)})[0][0]);
    std::int64_t inbound = parse_int(tx.query("SELECT count(*) FROM aliases WHERE destination LIKE $1 AND domain <> $2",
                                              {text("%@" + *domain), text(*domain)})[0][0]);
    if ((users || aliases || inbound) && !force) {
      fail(AdminStatus::conflict, "domain " + *domain + " still has " + std::to_string(users) + " user(s) and " +
                                      std::to_string(aliases) + " alias row(s)" +
                                      (inbound ? ", and " + std::to_string(inbound) +
                                                     " alias destination(s) of other domains point into it"
                                               : std::string()) +
                                      "; remove them first or use --force to remove them with it");
    }
    // Sender rights of its users (stored as user@domain) and rights to send as its addresses.
    // '%@d' cannot match another domain: '@' must come right before the name.
    tx.exec("DELETE FROM sender_logins WHERE login LIKE $1 OR address LIKE $1 OR address = $2",
            {text("%@" + *domain), text("@" + *domain)});
    tx.exec("DELETE FROM aliases WHERE domain = $1 OR destination LIKE $2", {text(*domain), text("%@" + *domain)});
    tx.exec("DELETE FROM users WHERE domain = $1", {text(*domain)});
    tx.exec("DELETE FROM domains WHERE domain = $1", {text(*domain)});
    if (users || aliases || inbound)
      return AdminResult::success("removed with " + std::to_string(users) + " user(s) and " +
                                  std::to_string(aliases + inbound) + " alias row(s)");
    return AdminResult::success();
  });
}

AdminResult DirectoryAdmin::list_domains(std::vector<DomainRecord>& out) {
  return in_transaction(session_, SessionRole::read, timeout_, [&](Tx& tx) {
    auto rows = tx.query(
        "SELECT d.domain, d.active, d.alias_for, "
        "(SELECT count(*) FROM users u WHERE u.domain = d.domain), "
        "(SELECT count(*) FROM aliases a WHERE a.domain = d.domain) "
        "FROM domains d ORDER BY d.domain",
        {});
    for (auto& r : rows) {
      DomainRecord d;
      d.domain = r[0].value_or("");
      d.active = parse_active(r[1]);
      if (r[2] && !r[2]->empty()) d.alias_for = r[2];
      d.users = parse_int(r[3]);
      d.aliases = parse_int(r[4]);
      out.push_back(std::move(d));
    }
    return AdminResult::success();
  });
}

AdminResult DirectoryAdmin::show_domain(std::string_view domain_in, DomainRecord& out) {
  std::string why;
  auto domain = normalize_domain(domain_in, why);
  if (!domain) return AdminResult::fail(AdminStatus::bad_input, why);
  return in_transaction(session_, SessionRole::read, timeout_, [&](Tx& tx) {
    auto d = existing_domain(tx, *domain);
    out.domain = d.domain;
    out.active = d.active;
    out.alias_for = d.alias_for;
    out.users = parse_int(tx.query("SELECT count(*) FROM users WHERE domain = $1", {text(*domain)})[0][0]);
    out.aliases = parse_int(tx.query("SELECT count(*) FROM aliases WHERE domain = $1", {text(*domain)})[0][0]);
    return AdminResult::success();
  });
}

// ---- users -----------------------------------------------------------------------------------------

AdminResult DirectoryAdmin::add_user(std::string_view address, const std::optional<std::string>& password_hash,
                                     const UserAttributes& attributes, bool active) {
  std::string why;
  auto name = normalize_address(address, delimiters_, why);
  if (!name) return AdminResult::fail(AdminStatus::bad_input, why);
  return in_transaction(session_, SessionRole::write, timeout_, [&](Tx& tx) {
    check_attributes(attributes);
    auto d = domain_row(tx, name->domain);
    if (!d)
      fail(AdminStatus::not_found, "domain " + name->domain + " does not exist; add it first (maildictctl domain add " +
                                       name->domain + ")");
    if (!d->active)
      fail(AdminStatus::conflict, "domain " + name->domain + " is disabled; enable it first (maildictctl domain enable " +
                                      name->domain + ")");
    if (d->alias_for)
      fail(AdminStatus::conflict, name->domain + " is an alias domain of " + *d->alias_for + "; add the user as " +
                                      name->local_part + "@" + *d->alias_for);
    if (user_exists(tx, *name, false)) fail(AdminStatus::conflict, "user " + name->canonical() + " exists already");
    tx.exec(
        "INSERT INTO users (local_part, domain, password, uid, gid, home, mail, quota_bytes, active) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        {text(name->local_part), text(name->domain), password_hash, column_value(attributes.uid),
         column_value(attributes.gid), column_value(attributes.home), column_value(attributes.mail),
         column_value(attributes.quota_bytes), flag(active)});
    return AdminResult::success();
  });
}

AdminResult DirectoryAdmin::set_password(std::string_view address, const std::optional<std::string>& password_hash) {
  std::string why;
  auto name = normalize_address(address, {}, why);
  if (!name) return AdminResult::fail(AdminStatus::bad_input, why);
  return in_transaction(session_, SessionRole::write, timeout_, [&](Tx& tx) {
    existing_user(tx, *name);
    tx.exec("UPDATE users SET password = $3 WHERE local_part = $1 AND domain = $2",
            {text(name->local_part), text(name->domain), password_hash});
    return AdminResult::success();
  });
}

AdminResult DirectoryAdmin::set_user_active(std::string_view address, bool active) {
  std::string why;
  auto name = normalize_address(address, {}, why);
  if (!name) return AdminResult::fail(AdminStatus::bad_input, why);
  return in_transaction(session_, SessionRole::write, timeout_, [&](Tx& tx) {
    auto u = existing_user(tx, *name);
    if (u.active == active)
      return AdminResult::success("user " + name->canonical() + " was already " + (active ? "enabled" : "disabled"));
    tx.exec("UPDATE users SET active = $3 WHERE local_part = $1 AND domain = $2",
            {text(name->local_part), text(name->domain), flag(active)});
    if (active && !u.domain_active)
      return AdminResult::success("note: domain " + name->domain + " is disabled, so the user still cannot log in");
    return AdminResult::success();
  });
}

AdminResult DirectoryAdmin::set_user_attributes(std::string_view address, const UserAttributes& a) {
  std::string why;
  auto name = normalize_address(address, {}, why);
  if (!name) return AdminResult::fail(AdminStatus::bad_input, why);
  return in_transaction(session_, SessionRole::write, timeout_, [&](Tx& tx) {
    check_attributes(a);
    existing_user(tx, *name);
    // One statement per column keeps the SQL fixed (no text assembled from the options).
    auto update = [&](const char* sql, SqlValue v) { tx.exec(sql, {text(name->local_part), text(name->domain), v}); };
    if (a.uid.kind != Change<std::string>::Kind::keep)
      update("UPDATE users SET uid = $3 WHERE local_part = $1 AND domain = $2", column_value(a.uid));
    if (a.gid.kind != Change<std::string>::Kind::keep)
      update("UPDATE users SET gid = $3 WHERE local_part = $1 AND domain = $2", column_value(a.gid));
    if (a.home.kind != Change<std::string>::Kind::keep)
      update("UPDATE users SET home = $3 WHERE local_part = $1 AND domain = $2", column_value(a.home));
    if (a.mail.kind != Change<std::string>::Kind::keep)
      update("UPDATE users SET mail = $3 WHERE local_part = $1 AND domain = $2", column_value(a.mail));
    if (a.quota_bytes.kind != Change<std::int64_t>::Kind::keep)
      update("UPDATE users SET quota_bytes = $3 WHERE local_part = $1 AND domain = $2", column_value(a.quota_bytes));
    return AdminResult::success();
  });
}

AdminResult DirectoryAdmin::remove_user(std::string_view address, bool force) {
  std::string why;
  auto name = normalize_address(address, {}, why);
  if (!name) return AdminResult::fail(AdminStatus::bad_input, why);
  return in_transaction(session_, SessionRole::write, timeout_, [&](Tx& tx) {
    existing_user(tx, *name);
    const std::string canonical = name->canonical(), delivery = delivery_name(*name);
    auto pointing = tx.query(
        "SELECT DISTINCT local_part, domain FROM aliases WHERE destination IN ($1, $2) ORDER BY domain, local_part",
        {text(canonical), text(delivery)});
    if (!pointing.empty() && !force) {
      std::string names;
      for (std::size_t i = 0; i < pointing.size() && i < 5; ++i)
        names += (i ? ", " : "") + pointing[i][0].value_or("") + "@" + pointing[i][1].value_or("");
      if (pointing.size() > 5) names += ", ...";
      fail(AdminStatus::conflict, "user " + canonical + " is a destination of " + std::to_string(pointing.size()) +
                                      " alias(es) (" + names +
                                      "); remove it from them first or use --force to remove those rows too");
    }
    tx.exec("DELETE FROM aliases WHERE destination IN ($1, $2)", {text(canonical), text(delivery)});
    tx.exec("DELETE FROM sender_logins WHERE login IN ($1, $2)", {text(canonical), text(delivery)});
    tx.exec("DELETE FROM users WHERE local_part = $1 AND domain = $2", {text(name->local_part), text(name->domain)});
    // Mail for the address now falls through to a catch-all (of this domain, or of an alias
    // domain of it), which may lead back to itself.
    std::vector<MailboxName> catch_alls{{"", name->domain}};
    for (auto& r : tx.query("SELECT domain FROM domains WHERE alias_for = $1", {text(name->domain)}))
      catch_alls.push_back({"", r[0].value_or("")});
    for (auto& c : catch_alls) refuse_loop_from(tx, c, delimiters_, "removing " + canonical);
    if (!pointing.empty())
      return AdminResult::success("also removed it from " + std::to_string(pointing.size()) + " alias(es)");
    return AdminResult::success();
  });
}

AdminResult DirectoryAdmin::list_users(std::optional<std::string_view> domain_in, std::vector<UserRecord>& out) {
  std::optional<std::string> domain;
  if (domain_in) {
    std::string why;
    domain = normalize_domain(*domain_in, why);
    if (!domain) return AdminResult::fail(AdminStatus::bad_input, why);
  }
  return in_transaction(session_, SessionRole::read, timeout_, [&](Tx& tx) {
    SqlRows rows;
    if (domain) {
      existing_domain(tx, *domain);
      rows = tx.query(std::string(kUserColumns) + "WHERE u.domain = $1 ORDER BY u.local_part", {text(*domain)});
    } else {
      rows = tx.query(std::string(kUserColumns) + "ORDER BY u.domain, u.local_part", {});
    }
    for (auto& r : rows) out.push_back(user_from_row(r));
    return AdminResult::success();
  });
}

AdminResult DirectoryAdmin::show_user(std::string_view address, UserRecord& out) {
  std::string why;
  auto name = split_login(address);  // either spelling, as Dovecot would ask
  if (!name) {
    auto strict = normalize_address(address, {}, why);
    if (!strict) return AdminResult::fail(AdminStatus::bad_input, why);
    name = strict;
  }
  return in_transaction(session_, SessionRole::read, timeout_, [&](Tx& tx) {
    out = existing_user(tx, *name);
    return AdminResult::success();
  });
}

// ---- aliases -----------------------------------------------------------------------------------------

AdminResult DirectoryAdmin::add_alias(std::string_view source_in, const std::vector<std::string>& destinations_in,
                                      bool force) {
  std::string why;
  auto source = normalize_alias_source(source_in, delimiters_, why);
  if (!source) return AdminResult::fail(AdminStatus::bad_input, why);
  if (destinations_in.empty()) return AdminResult::fail(AdminStatus::bad_input, "an alias needs at least one destination");
  std::vector<std::string> destinations;
  for (const auto& d : destinations_in) {
    auto n = normalize_destination(d, false, why);
    if (!n) return AdminResult::fail(AdminStatus::bad_input, "destination " + why);
    if (std::find(destinations.begin(), destinations.end(), *n) != destinations.end())
      return AdminResult::fail(AdminStatus::bad_input, "destination " + *n + " is given twice");
    destinations.push_back(*n);
  }
  const std::string src = source_text(*source);
  return in_transaction(session_, SessionRole::write, timeout_, [&](Tx& tx) {
    auto d = domain_row(tx, source->domain);
    if (!d)
      fail(AdminStatus::not_found, "domain " + source->domain + " does not exist; add it first (maildictctl domain add " +
                                       source->domain + ")");
    auto existing = destinations_of(alias_rows(tx, *source, false));
    for (const auto& dest : destinations) {
      if (std::find(existing.begin(), existing.end(), dest) != existing.end())
        fail(AdminStatus::conflict, "alias " + src + " already has destination " + dest);
      if (dest == src && !user_exists(tx, *source, false))
        fail(AdminStatus::conflict, "alias " + src + " cannot point to itself (only a user's own address may "
                                    "name the user, to keep a copy)");
    }
    for (const auto& dest : destinations)
      tx.exec("INSERT INTO aliases (local_part, domain, destination, active) VALUES ($1, $2, $3, 1)",
              {text(source->local_part), text(source->domain), text(dest)});
    refuse_loop_from(tx, *source, delimiters_, "alias " + src);
    if (!force) {
      for (const auto& dest : destinations) {
        auto name = split_address(dest, delimiters_);
        if (!name) continue;
        auto r = resolve(tx, *name, false);
        if (r.rule == Resolution::Rule::none)
          fail(AdminStatus::not_found, "destination " + dest + " is in served domain " + name->domain +
                                           " but no user, alias or catch-all receives it; add it first, or use "
                                           "--force to add the alias anyway");
      }
    }
    // Alias rows come first in recipient resolution: a user at the same address stops getting
    // mail unless it is one of the destinations. Allowed (a forward with a copy is common), but said.
    if (!source->local_part.empty() && user_exists(tx, *source, false)) {
      auto all = destinations_of(alias_rows(tx, *source, false));
      if (std::find(all.begin(), all.end(), src) == all.end())
        return AdminResult::success("note: " + src + " is also a user; its mail now goes only to the alias "
                                    "destinations (add " + src + " as a destination to keep a copy)");
    }
    return AdminResult::success();
  });
}

AdminResult DirectoryAdmin::remove_alias(std::string_view source_in, const std::vector<std::string>& destinations_in) {
  std::string why;
  // No delimiter check: an old row holding one must still be removable.
  auto source = normalize_alias_source(source_in, {}, why);
  if (!source) return AdminResult::fail(AdminStatus::bad_input, why);
  std::vector<std::string> destinations;
  for (const auto& d : destinations_in) {
    auto n = normalize_destination(d, false, why);
    if (!n) return AdminResult::fail(AdminStatus::bad_input, "destination " + why);
    destinations.push_back(*n);
  }
  const std::string src = source_text(*source);
  return in_transaction(session_, SessionRole::write, timeout_, [&](Tx& tx) {
    auto existing = destinations_of(alias_rows(tx, *source, false));
    if (existing.empty()) fail(AdminStatus::not_found, "alias " + src + " does not exist");
    if (destinations.empty()) {
      tx.exec("DELETE FROM aliases WHERE local_part = $1 AND domain = $2",
              {text(source->local_part), text(source->domain)});
      return AdminResult::success();
    }
    for (const auto& dest : destinations) {
      if (std::find(existing.begin(), existing.end(), dest) == existing.end())
        fail(AdminStatus::not_found, "alias " + src + " has no destination " + dest);
      tx.exec("DELETE FROM aliases WHERE local_part = $1 AND domain = $2 AND destination = $3",
              {text(source->local_part), text(source->domain), text(dest)});
    }
    return AdminResult::success();
  });
}

AdminResult DirectoryAdmin::list_aliases(std::optional<std::string_view> filter, std::vector<AliasRow>& out) {
  std::optional<std::string> domain;
  std::optional<MailboxName> source;
  if (filter) {
    std::string why;
    if (filter->find('@') != std::string_view::npos) {
      source = normalize_alias_source(*filter, {}, why);
      if (!source) return AdminResult::fail(AdminStatus::bad_input, why);
    } else {
      domain = normalize_domain(*filter, why);
      if (!domain) return AdminResult::fail(AdminStatus::bad_input, why);
    }
  }
  return in_transaction(session_, SessionRole::read, timeout_, [&](Tx& tx) {
    SqlRows rows;
    const char* cols = "SELECT local_part, domain, destination, active FROM aliases ";
    if (source)
      rows = tx.query(std::string(cols) + "WHERE local_part = $1 AND domain = $2 ORDER BY destination",
                      {text(source->local_part), text(source->domain)});
    else if (domain)
      rows = tx.query(std::string(cols) + "WHERE domain = $1 ORDER BY local_part, destination", {text(*domain)});
    else
      rows = tx.query(std::string(cols) + "ORDER BY domain, local_part, destination", {});
    if (source && rows.empty()) fail(AdminStatus::not_found, "alias " + source_text(*source) + " does not exist");
    if (domain && rows.empty()) existing_domain(tx, *domain);
    for (auto& r : rows)
      out.push_back(AliasRow{r[0].value_or(""), r[1].value_or(""), r[2].value_or(""), parse_active(r[3])});
    return AdminResult::success();
  });
}

// ---- sender rights ---------------------------------------------------------------------------------

AdminResult DirectoryAdmin::add_sender(std::string_view login, const std::vector<std::string>& addresses_in) {
  std::string why;
  auto name = normalize_address(login, {}, why);
  if (!name) return AdminResult::fail(AdminStatus::bad_input, "login " + why);
  if (addresses_in.empty()) return AdminResult::fail(AdminStatus::bad_input, "give at least one address");
  std::vector<std::string> addresses;
  for (const auto& a : addresses_in) {
    auto n = normalize_destination(a, true, why);
    if (!n) return AdminResult::fail(AdminStatus::bad_input, "address " + why);
    if (std::find(addresses.begin(), addresses.end(), *n) != addresses.end())
      return AdminResult::fail(AdminStatus::bad_input, "address " + *n + " is given twice");
    addresses.push_back(*n);
  }
  return in_transaction(session_, SessionRole::write, timeout_, [&](Tx& tx) {
    existing_user(tx, *name);
    const std::string canonical = name->canonical();
    for (const auto& a : addresses) {
      if (a == canonical) fail(AdminStatus::bad_input, canonical + " may always send as itself; no row needed");
      auto rows = tx.query("SELECT 1 FROM sender_logins WHERE login IN ($1, $2) AND address = $3",
                           {text(canonical), text(delivery_name(*name)), text(a)});
      if (!rows.empty()) fail(AdminStatus::conflict, canonical + " may already send as " + a);
      tx.exec("INSERT INTO sender_logins (login, address) VALUES ($1, $2)", {text(canonical), text(a)});
    }
    return AdminResult::success();
  });
}

AdminResult DirectoryAdmin::remove_sender(std::string_view login, const std::vector<std::string>& addresses_in) {
  std::string why;
  auto name = normalize_address(login, {}, why);
  if (!name) return AdminResult::fail(AdminStatus::bad_input, "login " + why);
  std::vector<std::string> addresses;
  for (const auto& a : addresses_in) {
    auto n = normalize_destination(a, true, why);
    if (!n) return AdminResult::fail(AdminStatus::bad_input, "address " + why);
    addresses.push_back(*n);
  }
  const std::string canonical = name->canonical(), delivery = delivery_name(*name);
  return in_transaction(session_, SessionRole::write, timeout_, [&](Tx& tx) {
    // The user may be gone already: stale rights must still be removable.
    auto rows = tx.query("SELECT address FROM sender_logins WHERE login IN ($1, $2)", {text(canonical), text(delivery)});
    if (rows.empty()) fail(AdminStatus::not_found, canonical + " has no extra sender addresses");
    if (addresses.empty()) {
      tx.exec("DELETE FROM sender_logins WHERE login IN ($1, $2)", {text(canonical), text(delivery)});
      return AdminResult::success();
    }
    for (const auto& a : addresses) {
      bool present = std::any_of(rows.begin(), rows.end(), [&](const SqlRow& r) { return r[0] == a; });
      if (!present) fail(AdminStatus::not_found, canonical + " has no sender right for " + a);
      tx.exec("DELETE FROM sender_logins WHERE login IN ($1, $2) AND address = $3",
              {text(canonical), text(delivery), text(a)});
    }
    return AdminResult::success();
  });
}

AdminResult DirectoryAdmin::list_senders(std::optional<std::string_view> login, std::vector<SenderRow>& out) {
  std::optional<MailboxName> name;
  if (login) {
    std::string why;
    name = normalize_address(*login, {}, why);
    if (!name) return AdminResult::fail(AdminStatus::bad_input, "login " + why);
  }
  return in_transaction(session_, SessionRole::read, timeout_, [&](Tx& tx) {
    SqlRows rows = name ? tx.query("SELECT login, address FROM sender_logins WHERE login IN ($1, $2) ORDER BY address",
                                   {text(name->canonical()), text(delivery_name(*name))})
                        : tx.query("SELECT login, address FROM sender_logins ORDER BY login, address", {});
    for (auto& r : rows) out.push_back(SenderRow{r[0].value_or(""), r[1].value_or("")});
    return AdminResult::success();
  });
}

AdminResult DirectoryAdmin::explain_recipient(std::string_view address, Resolution& out) {
  auto name = split_address(address, delimiters_);
  if (!name) {
    return AdminResult::fail(AdminStatus::bad_input,
                             "'" + printable(address) + "' is not a recipient address (expected local@domain)");
  }
  return in_transaction(session_, SessionRole::read, timeout_, [&](Tx& tx) {
    out = resolve(tx, *name, true);
    return AdminResult::success();
  });
}

}  // namespace maildict::storage
