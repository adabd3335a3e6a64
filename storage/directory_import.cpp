#include "storage/directory_import.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <stdexcept>
#include <tuple>
#include <utility>

#include "storage/login_name.hpp"

namespace maildict::storage {

namespace {

// ---- values as the source tools store them -----------------------------------------------------

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string text(const SqlRow& row, std::size_t i) { return i < row.size() && row[i] ? *row[i] : std::string(); }

// The tools' "active"/"enabled" columns: MySQL-style 0/1 (exported as integers), PostgreSQL
// booleans ('t'/'f' as text), Django's 'True'/'False' in some dumps. Anything else (NULL, '',
// 2 where the caller did not handle it) is "not active": an import must never enable an
// account its source had disabled.
bool truthy(const SqlValue& v) {
  if (!v) return false;
  std::string s = lower(trim(*v));
  return s == "1" || s == "t" || s == "true" || s == "y" || s == "yes";
}

// Domain names as maildict stores them: lower-case LDH labels (IDNs in their xn-- form), never
// '_' (the user_domain spelling splits at the last '_', DESIGN.md §3).
bool valid_domain(std::string_view d) {
  if (d.empty() || d.size() > 253 || d.front() == '.' || d.back() == '.' || d.front() == '-') return false;
  char prev = 0;
  for (char c : d) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
    if (!ok || (c == '.' && prev == '.')) return false;
    prev = c;
  }
  return true;
}

// A full address "local@domain", lower-cased. The local part must not hold '@' (the source's
// "a@b@c.org" is garbage, not a mailbox), ',' (a goto list that slipped in) or quotes.
std::optional<MailboxName> parse_address(std::string_view raw) {
  auto name = split_address(trim(raw), {});
  if (!name || !valid_domain(name->domain) || name->local_part.size() > 64) return std::nullopt;
  if (name->local_part.find_first_of("@,\"<>;") != std::string::npos) return std::nullopt;
  return name;
}

// "@domain" (every tool's catch-all; modoboa's UI also writes "*@domain"): the domain, or nullopt.
std::optional<std::string> catch_all_domain(std::string_view raw) {
  raw = trim(raw);
  if (raw.starts_with("*@")) raw.remove_prefix(1);
  if (!raw.starts_with("@")) return std::nullopt;
  std::string d = lower(raw.substr(1));
  if (!valid_domain(d)) return std::nullopt;
  return d;
}

// A goto / destination list: comma separated (PostfixAdmin, ViMbAdmin, mailcow), also with
// spaces or newlines (Mail-in-a-Box accepts both in its UI).
std::vector<std::string> split_list(std::string_view s) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ',' || std::isspace(static_cast<unsigned char>(s[i])))) ++i;
    std::size_t j = i;
    while (j < s.size() && s[j] != ',' && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

// PostfixAdmin's vacation: while an auto-reply is on, the mailbox's alias also goes to
// "john#example.org@<vacation domain>" (the address with '@' written as '#'), which its own
// transport answers. The vacation domain is configurable, so it is recognised by that shape.
bool is_vacation_destination(const std::string& dest, const std::string& alias_address) {
  auto at = dest.rfind('@');
  if (at == std::string::npos) return false;
  std::string local = dest.substr(0, at);
  auto hash = local.rfind('#');
  if (hash == std::string::npos) return false;
  local[hash] = '@';
  return local == alias_address;
}

enum class QuotaUnit { bytes, mebibytes, suffixed };

// The mailbox quota in bytes; nullopt is "no limit" (NULL, 0 or negative in every tool).
// `problem` is set when the value is not a number we understand.
std::optional<std::int64_t> parse_quota(const SqlValue& v, QuotaUnit unit, std::string& problem) {
  if (!v) return std::nullopt;
  std::string_view s = trim(*v);
  if (s.empty()) return std::nullopt;
  std::int64_t multiplier = unit == QuotaUnit::mebibytes ? 1024 * 1024 : 1;
  if (unit == QuotaUnit::suffixed) {
    // Mail-in-a-Box: "0", "NNN" (bytes), "NNNK", "NNNM", "NNNG", "NNNT" (Dovecot's 1024-based units).
    switch (std::toupper(static_cast<unsigned char>(s.back()))) {
      case 'K': multiplier = 1LL << 10; break;
      case 'M': multiplier = 1LL << 20; break;
      case 'G': multiplier = 1LL << 30; break;
      case 'T': multiplier = 1LL << 40; break;
      default: break;
    }
    if (multiplier != 1) s.remove_suffix(1);
  }
  // Some exports write integers as "1024.0".
  if (auto dot = s.find('.'); dot != std::string_view::npos && s.find_first_not_of('0', dot + 1) == std::string_view::npos)
    s = s.substr(0, dot);
  std::int64_t n = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc() || end != s.data() + s.size()) {
    problem = "quota is not a number";
    return std::nullopt;
  }
  if (n <= 0) return std::nullopt;
  if (n > INT64_MAX / multiplier) {
    problem = "quota too large";
    return std::nullopt;
  }
  return n * multiplier;
}

// ---- what the source holds, in maildict's terms but not yet checked ----------------------------

struct SrcDomain {
  std::string name;
  bool active = true;
};
struct SrcAliasDomain {
  std::string name;
  std::string target;
  bool active = true;
};
struct SrcUser {
  std::string address;
  SqlValue password;
  SqlValue quota;
  bool active = true;
  bool login = true;       // mailcow's active=2: receives mail, no login
};
struct SrcAlias {
  std::string address;
  std::vector<std::string> destinations;
  bool active = true;
  bool sender_allowed = false;  // mailcow: destinations may send as the alias
  bool send_only = false;       // Mail-in-a-Box: no destination, only permitted senders
};
struct SrcSender {
  std::string login;
  std::string address;
};

struct Source {
  QuotaUnit quota_unit = QuotaUnit::bytes;
  std::vector<SrcDomain> domains;
  std::vector<SrcAliasDomain> alias_domains;
  std::vector<SrcUser> users;
  std::vector<SrcAlias> aliases;
  std::vector<SrcSender> senders;
  std::map<std::string, std::string> ignored_domains;  // name -> why (PostfixAdmin's 'ALL')
  std::set<std::string> special_destinations;  // mailcow's null@localhost and friends
};

struct Failure {
  ImportStatus status;
  std::string message;
};

Failure failure_from(const SqlError& err, ImportStatus otherwise, const std::string& what) {
  ImportStatus status = otherwise;
  if (err.kind == SqlError::Kind::transient) status = ImportStatus::temporary;
  else if (err.kind == SqlError::Kind::constraint && otherwise == ImportStatus::target_error)
    status = ImportStatus::conflict;
  return {status, what + ": " + err.message};
}

class SourceReader {
 public:
  SourceReader(SqlSession& s, ImportKind kind) : s_(s), kind_(kind) {}

  SqlRows rows(const char* sql, const char* table) {
    SqlRows out;
    SqlError err;
    if (!run(s_, sql, {}, &out, err))
      throw failure_from(err, ImportStatus::source_error,
                         std::string("reading ") + table + " from the " + import_kind_name(kind_) + " database");
    return out;
  }

  // Whether a table (or a column of it) exists in the source, for optional parts of a schema
  // that differ between versions of a tool.
  bool has_table(const char* table) {
    const char* sql = s_.dialect() == SqlDialect::sqlite
                          ? "SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = $1"
                          : "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() "
                            "AND table_name = $1";
    return probe(sql, {table});
  }
  bool has_column(const char* table, const char* column) {
    const char* sql = s_.dialect() == SqlDialect::sqlite
                          ? "SELECT 1 FROM pragma_table_info($1) WHERE name = $2"
                          : "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                            "AND table_name = $1 AND column_name = $2";
    return probe(sql, {table, column});
  }

 private:
  bool probe(const char* sql, std::initializer_list<SqlValue> params) {
    SqlRows out;
    SqlError err;
    if (!run(s_, sql, params, &out, err))
      throw failure_from(err, ImportStatus::source_error, "inspecting the source database");
    return !out.empty();
  }

  SqlSession& s_;
  ImportKind kind_;
};

// PostfixAdmin and its relatives share the shape domain / mailbox / alias (goto list).
void read_postfixadmin_like(SourceReader& r, Source& src, bool alias_domains) {
  for (auto& row : r.rows("SELECT domain, active FROM domain ORDER BY domain", "domain"))
    src.domains.push_back({text(row, 0), truthy(row[1])});
  if (alias_domains)
    for (auto& row : r.rows("SELECT alias_domain, target_domain, active FROM alias_domain ORDER BY alias_domain",
                            "alias_domain"))
      src.alias_domains.push_back({text(row, 0), text(row, 1), truthy(row[2])});
  for (auto& row : r.rows("SELECT username, password, quota, active FROM mailbox ORDER BY username", "mailbox"))
    src.users.push_back({text(row, 0), row[1], row[2], truthy(row[3]), true});
  for (auto& row : r.rows("SELECT address, goto, active FROM alias ORDER BY address", "alias"))
    src.aliases.push_back({text(row, 0), split_list(text(row, 1)), truthy(row[2])});
}

void read_postfixadmin(SourceReader& r, Source& src) {
  read_postfixadmin_like(r, src, true);
  src.ignored_domains["all"] = "PostfixAdmin's pseudo-domain of its superadmins";
}

void read_vimbadmin(SourceReader& r, Source& src) { read_postfixadmin_like(r, src, false); }

void read_mailcow(SourceReader& r, Source& src) {
  for (auto& row : r.rows("SELECT domain, active FROM domain ORDER BY domain", "domain"))
    src.domains.push_back({text(row, 0), truthy(row[1])});
  for (auto& row : r.rows("SELECT alias_domain, target_domain, active FROM alias_domain ORDER BY alias_domain",
                          "alias_domain"))
    src.alias_domains.push_back({text(row, 0), text(row, 1), truthy(row[2])});
  for (auto& row : r.rows("SELECT username, password, quota, active FROM mailbox ORDER BY username", "mailbox")) {
    // active = 2 is mailcow's "disallow login, accept mail": maildict's NULL password.
    bool receive_only = row[3] && trim(*row[3]) == "2";
    src.users.push_back({text(row, 0), row[1], row[2], receive_only || truthy(row[3]), !receive_only});
  }
  // sender_allowed appeared in mailcow 2019; before, every alias could be sent as by its targets.
  const char* aliases = r.has_column("alias", "sender_allowed")
                            ? "SELECT address, goto, active, sender_allowed FROM alias ORDER BY address"
                            : "SELECT address, goto, active, 1 FROM alias ORDER BY address";
  for (auto& row : r.rows(aliases, "alias"))
    src.aliases.push_back({text(row, 0), split_list(text(row, 1)), truthy(row[2]), truthy(row[3])});
  for (auto& row : r.rows("SELECT logged_in_as, send_as FROM sender_acl ORDER BY logged_in_as, send_as", "sender_acl"))
    src.senders.push_back({text(row, 0), text(row, 1)});
  // mailcow's learning and discard targets, handled by its own rspamd: meaningless elsewhere.
  src.special_destinations = {"null@localhost", "spam@localhost", "ham@localhost"};
}

void read_mailinabox(SourceReader& r, Source& src) {
  src.quota_unit = QuotaUnit::suffixed;
  // Mail-in-a-Box has no domain table: its domains are those of its users and aliases. The
  // quota column appeared in later versions.
  const char* users = r.has_column("users", "quota") ? "SELECT email, password, quota FROM users ORDER BY email"
                                                     : "SELECT email, password, NULL FROM users ORDER BY email";
  for (auto& row : r.rows(users, "users")) src.users.push_back({text(row, 0), row[1], row[2], true, true});

  auto add_aliases = [&](const char* sql, const char* table, bool with_senders) {
    std::set<std::string> seen;
    for (auto& a : src.aliases) seen.insert(lower(trim(a.address)));
    for (auto& row : r.rows(sql, table)) {
      std::string source = text(row, 0);
      // An explicit alias overrides the automatic one for the same address (MIAB's own rule).
      if (!with_senders && seen.count(lower(trim(source)))) continue;
      SrcAlias a{source, split_list(text(row, 1)), true};
      if (with_senders) {
        auto senders = split_list(text(row, 2));
        a.send_only = a.destinations.empty() && !senders.empty();
        for (auto& s : senders) src.senders.push_back({s, source});
      }
      src.aliases.push_back(std::move(a));
    }
  };
  add_aliases("SELECT source, destination, permitted_senders FROM aliases ORDER BY source", "aliases", true);
  if (r.has_table("auto_aliases"))
    add_aliases("SELECT source, destination FROM auto_aliases ORDER BY source", "auto_aliases", false);

  std::set<std::string> domains;
  for (auto& u : src.users)
    if (auto at = u.address.rfind('@'); at != std::string::npos) domains.insert(lower(trim(u.address.substr(at + 1))));
  for (auto& a : src.aliases)
    if (auto at = a.address.rfind('@'); at != std::string::npos) domains.insert(lower(trim(a.address.substr(at + 1))));
  for (auto& d : domains) src.domains.push_back({d, true});
}

void read_modoboa(SourceReader& r, Source& src) {
  src.quota_unit = QuotaUnit::mebibytes;
  for (auto& row : r.rows("SELECT name, enabled FROM admin_domain ORDER BY name", "admin_domain"))
    src.domains.push_back({text(row, 0), truthy(row[1])});
  for (auto& row : r.rows("SELECT a.name, d.name, a.enabled FROM admin_domainalias a "
                          "JOIN admin_domain d ON d.id = a.target_id ORDER BY a.name",
                          "admin_domainalias"))
    src.alias_domains.push_back({text(row, 0), text(row, 1), truthy(row[2])});
  // admin_mailbox.address is the local part; the password and the active flag live on the
  // Django user the mailbox belongs to.
  for (auto& row : r.rows("SELECT m.address, d.name, u.password, m.quota, u.is_active FROM admin_mailbox m "
                          "JOIN admin_domain d ON d.id = m.domain_id JOIN core_user u ON u.id = m.user_id "
                          "ORDER BY d.name, m.address",
                          "admin_mailbox"))
    src.users.push_back({text(row, 0) + "@" + text(row, 1), row[2], row[3], truthy(row[4]), true});
  // One row per (alias, recipient); an alias without recipients still shows once. An alias
  // past its expire_at no longer delivers in modoboa: it comes over disabled, not revived.
  const char* aliases =
      r.has_column("admin_alias", "expire_at")
          ? "SELECT a.address, a.enabled, r.address, (a.expire_at IS NOT NULL AND a.expire_at <= CURRENT_TIMESTAMP) "
            "FROM admin_alias a LEFT JOIN modoboa_admin_aliasrecipient r ON r.alias_id = a.id "
            "ORDER BY a.address, a.id, r.id"
          : "SELECT a.address, a.enabled, r.address, NULL FROM admin_alias a "
            "LEFT JOIN modoboa_admin_aliasrecipient r ON r.alias_id = a.id ORDER BY a.address, a.id, r.id";
  for (auto& row : r.rows(aliases, "admin_alias")) {
    std::string address = text(row, 0);
    if (src.aliases.empty() || src.aliases.back().address != address)
      src.aliases.push_back({address, {}, truthy(row[1]) && !truthy(row[3])});
    if (row[2]) src.aliases.back().destinations.push_back(*row[2]);
  }
}

// ---- the plan: maildict rows, each with its report item --------------------------------------

struct PlannedDomain {
  std::string name;
  bool active = true;
  std::optional<std::string> alias_for;
  std::string what = "domain";
};
struct PlannedUser {
  MailboxName name;
  SqlValue password;
  std::optional<std::int64_t> quota_bytes;
  bool active = true;
  std::string note;
};
struct PlannedAlias {
  std::string local_part;  // '' = catch-all
  std::string domain;
  std::string destination;
  bool active = true;
};
struct PlannedSender {
  std::string login;
  std::string address;
};

std::string alias_label(const std::string& local_part, const std::string& domain) {
  return local_part + "@" + domain;  // a catch-all shows as "@domain", as the tools write it
}

class Importer {
 public:
  Importer(ImportKind kind, SqlSession& target, ImportReport& report) : kind_(kind), t_(target), report_(report) {}

  void plan(Source& src) {
    plan_domains(src);
    plan_users(src);
    plan_aliases(src);
    plan_senders(src);
  }

  void write() {
    for (auto& d : domains_) write_domain(d);
    for (auto& u : users_) write_user(u);
    for (auto& a : aliases_) write_alias(a);
    for (auto& s : senders_) write_sender(s);
    // Planning reported the skipped rows first: put every item with its kind, in name order,
    // so a report reads domain by domain, user by user.
    auto rank = [](const ImportItem& i) {
      if (i.what == "domain" || i.what == "alias-domain") return 0;
      if (i.what == "user") return 1;
      if (i.what == "alias") return 2;
      return 3;
    };
    std::stable_sort(report_.items.begin(), report_.items.end(), [&](const ImportItem& a, const ImportItem& b) {
      int ra = rank(a), rb = rank(b);
      return ra != rb ? ra < rb : a.key < b.key;
    });
  }

 private:
  void item(std::string what, std::string key, ImportAction action, std::string reason = {}) {
    report_.items.push_back({std::move(what), std::move(key), action, std::move(reason)});
  }

  PlannedDomain* planned_domain(const std::string& name) {
    auto it = domain_index_.find(name);
    return it == domain_index_.end() ? nullptr : &domains_[it->second];
  }

  void plan_domains(Source& src) {
    for (auto& d : src.domains) {
      std::string name = lower(trim(d.name));
      if (src.ignored_domains.count(name)) {
        item("domain", name, ImportAction::ignore, "not a mail domain (" + src.ignored_domains.at(name) + ")");
        continue;
      }
      if (!valid_domain(name)) {
        item("domain", d.name, ImportAction::skip, "not a valid domain name");
        continue;
      }
      if (domain_index_.count(name)) {
        item("domain", name, ImportAction::ignore, "duplicate (names are compared case-insensitively)");
        continue;
      }
      domain_index_[name] = domains_.size();
      domains_.push_back({name, d.active, std::nullopt});
    }
    for (auto& a : src.alias_domains) {
      std::string name = lower(trim(a.name));
      std::string target = lower(trim(a.target));
      std::string key = name + " -> " + target;
      if (!valid_domain(name) || !valid_domain(target)) {
        item("alias-domain", a.name + " -> " + a.target, ImportAction::skip, "not a valid domain name");
        continue;
      }
      if (name == target) {
        item("alias-domain", key, ImportAction::skip, "an alias domain of itself");
        continue;
      }
      PlannedDomain* to = planned_domain(target);
      if (!to && !domain_in_target(target)) {
        item("alias-domain", key, ImportAction::skip, "the target domain is neither in the source nor in the directory");
        continue;
      }
      if (to && to->alias_for) {
        item("alias-domain", key, ImportAction::skip,
             "the target is itself an alias domain (maildict follows one step only)");
        continue;
      }
      PlannedDomain* existing = planned_domain(name);
      if (existing && existing->alias_for) {
        item("alias-domain", key, ImportAction::ignore, "the domain is already an alias of " + *existing->alias_for);
        continue;
      }
      if (!a.active && existing) {
        // maildict has no switch for the alias relation alone; the domain itself stays as it is.
        item("alias-domain", key, ImportAction::ignore, "inactive alias relation: " + name + " stays a plain domain");
        continue;
      }
      if (existing) {
        existing->alias_for = target;
        existing->what = "alias-domain";
      } else {
        domain_index_[name] = domains_.size();
        domains_.push_back({name, a.active, target, "alias-domain"});
      }
    }
  }

  void plan_users(Source& src) {
    for (auto& u : src.users) {
      auto name = parse_address(u.address);
      if (!name) {
        item("user", u.address, ImportAction::skip, "not a valid address");
        continue;
      }
      std::string key = name->canonical();
      if (!planned_domain(name->domain)) {
        item("user", key, ImportAction::skip, "its domain " + name->domain + " is not among the source's domains");
        continue;
      }
      if (user_index_.count(key)) {
        item("user", key, ImportAction::ignore, "duplicate (names are compared case-insensitively)");
        continue;
      }
      PlannedUser p{*name, std::nullopt, std::nullopt, u.active, {}};
      std::string problem;
      p.quota_bytes = parse_quota(u.quota, src.quota_unit, problem);
      if (!problem.empty()) {
        item("user", key, ImportAction::skip, problem);
        continue;
      }
      std::string_view pw = u.password ? trim(*u.password) : std::string_view();
      if (!u.login) {
        p.note = "receives mail, cannot log in (no password)";
      } else if (pw.empty()) {
        p.note = "no password in the source: receives mail, cannot log in";
      } else if (!importable_password_hash(pw)) {
        item("user", key, ImportAction::skip,
             "password hash in an unknown scheme: neither a crypt(3) hash nor a Dovecot {SCHEME} value");
        continue;
      } else {
        p.password = std::string(pw);
      }
      user_index_[key] = users_.size();
      users_.push_back(std::move(p));
    }
  }

  void plan_aliases(Source& src) {
    std::set<std::tuple<std::string, std::string, std::string>> seen;
    for (auto& a : src.aliases) {
      std::string local_part, domain;
      if (auto d = catch_all_domain(a.address)) {
        domain = *d;
      } else if (auto name = parse_address(a.address)) {
        local_part = name->local_part;
        domain = name->domain;
      } else {
        item("alias", a.address, ImportAction::skip, "not a valid address");
        continue;
      }
      std::string label = alias_label(local_part, domain);
      if (!planned_domain(domain)) {
        item("alias", label, ImportAction::skip, "its domain " + domain + " is not among the source's domains");
        continue;
      }
      if (a.send_only) continue;  // its permitted senders are planned as sender rights
      if (a.destinations.empty()) {
        item("alias", label, ImportAction::skip, "no destination");
        continue;
      }
      // First the destinations maildict cannot use, each reported on its own line.
      std::vector<std::string> usable;
      for (auto& raw : a.destinations) {
        std::string dest = lower(trim(raw));
        std::string key = label + " -> " + dest;
        if (src.special_destinations.count(dest)) {
          item("alias", key, ImportAction::skip, "a " + std::string(import_kind_name(kind_)) + "-internal destination");
          continue;
        }
        if (is_vacation_destination(dest, label)) {
          item("alias", key, ImportAction::skip, "PostfixAdmin's vacation auto-reply: not imported");
          continue;
        }
        if (catch_all_domain(dest)) {
          item("alias", key, ImportAction::skip, "a whole-domain redirection: import the domain as an alias domain");
          continue;
        }
        auto name = parse_address(dest);
        if (!name) {
          item("alias", label + " -> " + std::string(trim(raw)), ImportAction::skip, "not a valid destination address");
          continue;
        }
        usable.push_back(name->canonical());
      }
      if (usable.empty()) continue;
      // PostfixAdmin and ViMbAdmin keep one alias per mailbox pointing to itself (plus the
      // vacation address while one is on), modoboa an internal one: maildict delivers to a
      // user's own address without it.
      if (usable.size() == 1 && usable[0] == label) {
        if (user_index_.count(label))
          item("alias", label, ImportAction::ignore, "redundant: the mailbox's own address");
        else
          item("alias", label, ImportAction::skip, "points to itself and is not a mailbox");
        continue;
      }
      std::vector<std::string> kept;
      for (auto& dest : usable) {
        if (!seen.insert({local_part, domain, dest}).second) {
          item("alias", label + " -> " + dest, ImportAction::ignore, "duplicate destination");
          continue;
        }
        aliases_.push_back({local_part, domain, dest, a.active});
        kept.push_back(dest);
      }
      // mailcow's sender_allowed: every mailbox an alias delivers to may send as it. maildict
      // already allows that for an alias with a single destination; a list needs explicit rows.
      if (a.sender_allowed && a.active && !local_part.empty() && kept.size() > 1)
        for (auto& dest : kept)
          if (user_index_.count(dest)) planned_senders_.push_back({dest, label});
    }
  }

  void plan_senders(Source& src) {
    std::vector<PlannedSender> all = std::move(planned_senders_);
    for (auto& s : src.senders) {
      auto login = parse_address(s.login);
      std::string address_raw = lower(trim(s.address));
      std::string key = std::string(trim(s.login)) + " as " + address_raw;
      if (!login) {
        item("sender", key, ImportAction::skip, "the login is not a valid address");
        continue;
      }
      std::string address;
      if (auto d = catch_all_domain(address_raw)) {
        address = "@" + *d;  // smtpd's mailaddr "@domain": any address at the domain
      } else if (auto a = parse_address(address_raw)) {
        address = a->canonical();
      } else {
        item("sender", login->canonical() + " as " + address_raw, ImportAction::skip,
             "not an address or @domain (maildict has no \"any address\" right)");
        continue;
      }
      if (!user_index_.count(login->canonical())) {
        item("sender", login->canonical() + " as " + address, ImportAction::skip, "the login is not an imported user");
        continue;
      }
      all.push_back({login->canonical(), address});
    }
    std::set<std::pair<std::string, std::string>> seen;
    for (auto& s : all)
      if (seen.insert({s.login, s.address}).second) senders_.push_back(std::move(s));
  }

  // ---- writing -------------------------------------------------------------------------------

  SqlRows query(const char* sql, std::initializer_list<SqlValue> params, const char* what) {
    SqlRows rows;
    SqlError err;
    if (!run(t_, sql, params, &rows, err)) throw failure_from(err, ImportStatus::target_error, what);
    return rows;
  }

  bool domain_in_target(const std::string& name) {
    return !query("SELECT 1 FROM domains WHERE domain = $1", {name}, "reading the directory's domains").empty();
  }

  static std::string flag(bool b) { return b ? "1" : "0"; }
  static SqlValue opt_int(const std::optional<std::int64_t>& v) {
    return v ? SqlValue(std::to_string(*v)) : SqlValue();
  }
  static std::string shown(const SqlValue& v) { return v ? *v : std::string("none"); }

  void write_domain(const PlannedDomain& d) {
    const char* what = "writing the domains";
    auto rows = query("SELECT active, alias_for FROM domains WHERE domain = $1", {d.name}, what);
    SqlValue alias_for = d.alias_for ? SqlValue(*d.alias_for) : SqlValue();
    std::string key = d.alias_for ? d.name + " -> " + *d.alias_for : d.name;
    std::string note = d.active ? "" : "inactive";
    if (rows.empty()) {
      query("INSERT INTO domains (domain, active, alias_for) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            {d.name, flag(d.active), alias_for}, what);
      item(d.what, key, ImportAction::add, note);
      return;
    }
    std::string changed;
    if (text(rows[0], 0) != flag(d.active))
      changed += "active " + text(rows[0], 0) + " -> " + flag(d.active);
    if (rows[0][1] != alias_for)
      changed += (changed.empty() ? "" : ", ") + std::string("alias_for ") + shown(rows[0][1]) + " -> " + shown(alias_for);
    if (changed.empty()) {
      item(d.what, key, ImportAction::unchanged);
      return;
    }
    query("UPDATE domains SET active = $2, alias_for = $3 WHERE domain = $1", {d.name, flag(d.active), alias_for}, what);
    item(d.what, key, ImportAction::update, changed);
  }

  void write_user(const PlannedUser& u) {
    const char* what = "writing the users";
    std::string key = u.name.canonical();
    SqlValue quota = opt_int(u.quota_bytes);
    auto rows = query("SELECT password, quota_bytes, active FROM users WHERE local_part = $1 AND domain = $2",
                      {u.name.local_part, u.name.domain}, what);
    std::string note = u.note;
    if (!u.active) note = note.empty() ? "inactive" : "inactive; " + note;
    if (rows.empty()) {
      query("INSERT INTO users (local_part, domain, password, quota_bytes, active) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT DO NOTHING",
            {u.name.local_part, u.name.domain, u.password, quota, flag(u.active)}, what);
      item("user", key, ImportAction::add, note);
      return;
    }
    std::vector<std::string> changed;
    if (rows[0][0] != u.password) changed.push_back("password");  // never the hash itself
    if (rows[0][1] != quota) changed.push_back("quota " + shown(rows[0][1]) + " -> " + shown(quota));
    if (text(rows[0], 2) != flag(u.active)) changed.push_back("active " + text(rows[0], 2) + " -> " + flag(u.active));
    if (changed.empty()) {
      item("user", key, ImportAction::unchanged);
      return;
    }
    query("UPDATE users SET password = $3, quota_bytes = $4, active = $5 WHERE local_part = $1 AND domain = $2",
          {u.name.local_part, u.name.domain, u.password, quota, flag(u.active)}, what);
    std::string reason;
    for (auto& c : changed) reason += (reason.empty() ? "" : ", ") + c;
    item("user", key, ImportAction::update, reason);
  }

  void write_alias(const PlannedAlias& a) {
    const char* what = "writing the aliases";
    std::string key = alias_label(a.local_part, a.domain) + " -> " + a.destination;
    auto rows = query("SELECT active FROM aliases WHERE domain = $1 AND local_part = $2 AND destination = $3",
                      {a.domain, a.local_part, a.destination}, what);
    std::string note = a.active ? "" : "inactive";
    if (a.local_part.empty()) note = note.empty() ? "catch-all" : "catch-all, " + note;
    if (rows.empty()) {
      query("INSERT INTO aliases (local_part, domain, destination, active) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING",
            {a.local_part, a.domain, a.destination, flag(a.active)}, what);
      item("alias", key, ImportAction::add, note);
      return;
    }
    if (text(rows[0], 0) == flag(a.active)) {
      item("alias", key, ImportAction::unchanged);
      return;
    }
    query("UPDATE aliases SET active = $4 WHERE domain = $1 AND local_part = $2 AND destination = $3",
          {a.domain, a.local_part, a.destination, flag(a.active)}, what);
    item("alias", key, ImportAction::update, "active " + text(rows[0], 0) + " -> " + flag(a.active));
  }

  void write_sender(const PlannedSender& s) {
    const char* what = "writing the sender rights";
    std::string key = s.login + " as " + s.address;
    auto rows = query("SELECT 1 FROM sender_logins WHERE login = $1 AND address = $2", {s.login, s.address}, what);
    if (!rows.empty()) {
      item("sender", key, ImportAction::unchanged);
      return;
    }
    query("INSERT INTO sender_logins (login, address) VALUES ($1, $2) ON CONFLICT DO NOTHING", {s.login, s.address},
          what);
    item("sender", key, ImportAction::add);
  }

  ImportKind kind_;
  SqlSession& t_;
  ImportReport& report_;
  std::vector<PlannedDomain> domains_;
  std::map<std::string, std::size_t> domain_index_;
  std::vector<PlannedUser> users_;
  std::map<std::string, std::size_t> user_index_;
  std::vector<PlannedAlias> aliases_;
  std::vector<PlannedSender> planned_senders_;  // from aliases, merged into senders_
  std::vector<PlannedSender> senders_;
};

void read_source(ImportKind kind, SqlSession& source, Source& src) {
  SqlError err;
  if (!source.begin(SessionRole::read, err))
    throw failure_from(err, ImportStatus::source_error, "opening a read transaction on the source");
  SourceReader r(source, kind);
  try {
    switch (kind) {
      case ImportKind::postfixadmin: read_postfixadmin(r, src); break;
      case ImportKind::vimbadmin: read_vimbadmin(r, src); break;
      case ImportKind::mailcow: read_mailcow(r, src); break;
      case ImportKind::mailinabox: read_mailinabox(r, src); break;
      case ImportKind::modoboa: read_modoboa(r, src); break;
    }
  } catch (...) {
    source.rollback();
    throw;
  }
  source.rollback();  // read only: nothing to keep
}

}  // namespace

std::optional<ImportKind> parse_import_kind(std::string_view name) {
  std::string n = lower(name);
  if (n == "postfixadmin") return ImportKind::postfixadmin;
  if (n == "vimbadmin") return ImportKind::vimbadmin;
  if (n == "mailcow") return ImportKind::mailcow;
  if (n == "mailinabox" || n == "miab" || n == "mail-in-a-box") return ImportKind::mailinabox;
  if (n == "modoboa") return ImportKind::modoboa;
  return std::nullopt;
}

const char* import_kind_name(ImportKind kind) {
  switch (kind) {
    case ImportKind::postfixadmin: return "postfixadmin";
    case ImportKind::vimbadmin: return "vimbadmin";
    case ImportKind::mailcow: return "mailcow";
    case ImportKind::mailinabox: return "mailinabox";
    case ImportKind::modoboa: return "modoboa";
  }
  return "?";
}

const char* import_action_name(ImportAction action) {
  switch (action) {
    case ImportAction::add: return "add";
    case ImportAction::update: return "update";
    case ImportAction::unchanged: return "unchanged";
    case ImportAction::ignore: return "ignore";
    case ImportAction::skip: return "skip";
  }
  return "?";
}

std::size_t ImportReport::count(ImportAction action) const {
  return static_cast<std::size_t>(std::count_if(items.begin(), items.end(), [&](auto& i) { return i.action == action; }));
}

std::size_t ImportReport::count(std::string_view what, ImportAction action) const {
  return static_cast<std::size_t>(
      std::count_if(items.begin(), items.end(), [&](auto& i) { return i.action == action && i.what == what; }));
}

bool importable_password_hash(std::string_view stored) {
  if (stored.empty()) return false;
  for (char c : stored)
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) return false;
  if (stored.front() == '{') {
    auto close = stored.find('}');
    if (close == std::string_view::npos || close + 1 == stored.size()) return false;
    std::string scheme = lower(stored.substr(1, close - 1));
    for (const char* enc : {".b64", ".base64", ".hex"})
      if (scheme.ends_with(enc)) scheme.resize(scheme.size() - std::string_view(enc).size());
    // Dovecot 2.3's password schemes (doveadm pw -l), lower-cased.
    static const std::set<std::string> known = {
        "crypt",   "des-crypt", "md5-crypt",  "sha256-crypt", "sha512-crypt", "blf-crypt",     "argon2i",
        "argon2id", "pbkdf2",   "scram-sha-1", "scram-sha-256", "ssha",       "ssha256",       "ssha512",
        "sha",     "sha1",      "sha256",     "sha512",       "smd5",         "md5",           "plain-md5",
        "ldap-md5", "plain",    "cleartext",  "cram-md5",     "digest-md5",   "plain-trunc",   "lanman",
        "ntlm",    "otp",       "rpa",        "skey",         "hmac-md5"};
    return known.count(scheme) > 0;
  }
  for (const char* prefix : {"$1$", "$5$", "$6$", "$2a$", "$2b$", "$2y$", "$y$", "$gy$", "$7$", "$argon2i$", "$argon2id$"})
    if (stored.starts_with(prefix) && stored.size() > std::string_view(prefix).size()) return true;
  return false;
}

ImportReport import_directory(ImportKind kind, SqlSession& source, SqlSession& target, const ImportOptions& options) {
  ImportReport report;
  report.kind = kind;
  report.dry_run = options.dry_run;
  auto deadline = Clock::now() + options.timeout;
  source.set_deadline(deadline);
  target.set_deadline(deadline);

  bool in_transaction = false;
  try {
    Source src;
    read_source(kind, source, src);

    SqlError err;
    if (!target.begin(SessionRole::write, err))
      throw failure_from(err, ImportStatus::target_error, "opening a write transaction on the directory");
    in_transaction = true;
    Importer importer(kind, target, report);
    importer.plan(src);
    importer.write();

    if (options.strict && report.count(ImportAction::skip) > 0) {
      target.rollback();
      in_transaction = false;
      report.status = ImportStatus::strict_refused;
      report.error = "--strict: " + std::to_string(report.count(ImportAction::skip)) +
                     " source row(s) cannot be mapped (see the skip lines); nothing was written";
      return report;
    }
    if (options.dry_run) {
      target.rollback();
      return report;
    }
    if (!target.commit(err)) {
      in_transaction = false;
      throw failure_from(err, ImportStatus::target_error, "committing the import");
    }
    report.committed = true;
    return report;
  } catch (const Failure& f) {
    if (in_transaction) target.rollback();
    report.status = f.status;
    report.error = f.message;
  } catch (const std::exception& e) {
    if (in_transaction) target.rollback();
    report.status = ImportStatus::target_error;
    report.error = e.what();
  }
  return report;
}

}  // namespace maildict::storage
