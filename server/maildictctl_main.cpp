// maildictctl: the operator's one-command tool for the directory (domains, users, aliases,
// sender rights) and for asking the running maildictd what Dovecot and smtpd would get.
// Argument rules live in maildictctl_args.cpp, the changes in storage/directory_admin.cpp; this
// file does the I/O: configuration, password prompt, database session, output, the daemon.
#include <signal.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "conf/config.hpp"
#include "server/dict_client.hpp"
#include "server/host_checks.hpp"
#include "server/maildictctl_args.hpp"
#include "server/maildictctl_import.hpp"
#include "storage/directory_admin.hpp"
#include "storage/login_name.hpp"
#include "storage/password_scheme.hpp"
#include "storage/sql_session.hpp"
#include "storage/backend_factory.hpp"

#ifndef MAILDICT_VERSION
#define MAILDICT_VERSION "unknown"
#endif

namespace {

using namespace maildict;
using ctl::Command;
using storage::AdminResult;
using storage::AdminStatus;

constexpr auto kDefaultDbTimeout = std::chrono::seconds(10);

void error(const std::string& message) { std::fprintf(stderr, "maildictctl: %s\n", message.c_str()); }

int report(const AdminResult& r, const std::string& done) {
  if (!r.ok()) {
    error(r.message);
    return ctl::exit_code_for(r.status);
  }
  if (!r.message.empty()) std::printf("%s (%s)\n", done.c_str(), r.message.c_str());
  else std::printf("%s\n", done.c_str());
  return ctl::exit_ok;
}

// ---- password input ------------------------------------------------------------------------------

// The terminal's settings while echo is off, so a signal cannot leave the operator's terminal
// silent.
struct termios g_saved_tty;
volatile sig_atomic_t g_echo_off = 0;

void restore_tty_and_die(int sig) {
  if (g_echo_off) tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_tty);
  const char nl = '\n';
  (void)!write(STDERR_FILENO, &nl, 1);
  signal(sig, SIG_DFL);
  raise(sig);
}

bool read_line_no_echo(const char* prompt, std::string& out) {
  if (tcgetattr(STDIN_FILENO, &g_saved_tty) != 0) return false;
  struct termios quiet = g_saved_tty;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  quiet.c_lflag |= ECHONL;
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) signal(sig, restore_tty_and_die);
  g_echo_off = 1;
  if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) != 0) {
    g_echo_off = 0;
    return false;
  }
  // The prompt only once echo is off: whatever is typed after it is never shown.
  std::fputs(prompt, stderr);
  std::fflush(stderr);
  bool ok = static_cast<bool>(std::getline(std::cin, out));
  tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_tty);
  g_echo_off = 0;
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) signal(sig, SIG_DFL);
  return ok;
}

// Wipes a string that held a password before it is freed.
struct Scrub {
  std::string& s;
  ~Scrub() { explicit_bzero(s.data(), s.size()); }
};

// Reads the password into `out` (the caller wipes it): from the terminal (asked twice) or the
// first line of standard input. False after printing why.
bool read_password(const std::string& who, const Command& c, std::string& out) {
  if (isatty(STDIN_FILENO)) {
    std::string again;
    Scrub s2{again};
    if (!read_line_no_echo(("New password for " + who + ": ").c_str(), out) ||
        !read_line_no_echo("Retype the password: ", again)) {
      error("could not read the password from the terminal");
      return false;
    }
    if (out != again) {
      error("the passwords do not match; nothing was changed");
      return false;
    }
  } else {
    if (!std::getline(std::cin, out)) {
      error("no password on standard input (expected it on the first line; --no-password for a user who "
            "cannot log in)");
      return false;
    }
    if (!out.empty() && out.back() == '\r') out.pop_back();
  }
  if (out.empty()) {
    error("the password is empty; use --no-password for a user who cannot log in");
    return false;
  }
  if (storage::scheme_truncates_at_72_bytes(c.scheme) && out.size() > 72) {
    error("the password is longer than 72 bytes, and bcrypt ignores everything after that; use --scheme "
          "yescrypt or sha512-crypt for long passwords");
    return false;
  }
  return true;
}

// The hash to store for user add / passwd, or nullopt for --no-password. `failed` set (after
// printing why) when no hash could be made.
std::optional<std::string> password_hash(const std::string& who, const Command& c, int& failed) {
  failed = 0;
  if (c.no_password) return std::nullopt;
  std::string password;
  Scrub scrub{password};
  if (!read_password(who, c, password)) {
    failed = ctl::exit_usage;
    return std::nullopt;
  }
  try {
    return storage::hash_password(password, c.scheme, c.effective_cost());
  } catch (const std::exception& e) {
    error(e.what());
    failed = ctl::exit_usage;
    return std::nullopt;
  }
}

// ---- output helpers ---------------------------------------------------------------------------

// The scheme as Dovecot will see it, and the crypt(3) method behind a plain {CRYPT}.
std::string scheme_of(const std::string& stored) {
  auto prefixed = storage::with_scheme_prefix(stored);
  std::string scheme = prefixed.substr(1, prefixed.find('}') - 1);
  if (scheme == "CRYPT" && stored.starts_with("$y$")) scheme += "(yescrypt)";
  return scheme;
}

std::string quota_text(std::int64_t bytes) {
  if (bytes == 0) return "unlimited";
  static const char* units[] = {"", "K", "M", "G", "T"};
  int u = 0;
  while (u < 4 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++u;
  }
  return std::to_string(bytes) + units[u];
}

// ---- commands -------------------------------------------------------------------------------------

int domain_command(const Command& c, storage::DirectoryAdmin& admin) {
  if (c.verb == "add") {
    std::optional<std::string_view> alias_for;
    if (c.alias_for) alias_for = *c.alias_for;
    return report(admin.add_domain(c.args[0], alias_for, !c.disabled), "domain added");
  }
  if (c.verb == "disable") return report(admin.set_domain_active(c.args[0], false), "domain disabled");
  if (c.verb == "enable") return report(admin.set_domain_active(c.args[0], true), "domain enabled");
  if (c.verb == "remove") return report(admin.remove_domain(c.args[0], c.force), "domain removed");
  std::vector<storage::DomainRecord> list;
  AdminResult r;
  if (c.verb == "list") {
    r = admin.list_domains(list);
  } else {
    list.emplace_back();
    r = admin.show_domain(c.args[0], list.back());
  }
  if (!r.ok()) return report(r, "");
  for (const auto& d : list) {
    if (c.verb == "show") {
      std::printf("domain:    %s\nstate:     %s\n", d.domain.c_str(), d.active ? "enabled" : "disabled");
      if (d.alias_for) std::printf("alias for: %s\n", d.alias_for->c_str());
      std::printf("users:     %lld\naliases:   %lld (rows)\n", static_cast<long long>(d.users),
                  static_cast<long long>(d.aliases));
    } else {
      std::printf("%-30s %-8s users=%lld aliases=%lld%s%s\n", d.domain.c_str(), d.active ? "enabled" : "disabled",
                  static_cast<long long>(d.users), static_cast<long long>(d.aliases),
                  d.alias_for ? " alias-for=" : "", d.alias_for ? d.alias_for->c_str() : "");
    }
  }
  return ctl::exit_ok;
}

int user_command(const Command& c, storage::DirectoryAdmin& admin, const conf::Config& config) {
  if (c.verb == "add" || c.verb == "passwd") {
    // Checked before the prompt: no one should type a password for a name that is refused.
    std::string why;
    auto name = storage::normalize_address(c.args[0], c.verb == "add" ? config.defaults.recipient_delimiter : "", why);
    if (!name) {
      error(why);
      return ctl::exit_usage;
    }
    // Also before the prompt, what can be known already (the change checks it all again in
    // its transaction): passwd needs the user, add needs a usable domain and a free name.
    storage::UserRecord existing;
    auto found = admin.show_user(name->canonical(), existing);
    if (c.verb == "passwd" && !found.ok()) return report(found, "");
    if (c.verb == "add") {
      if (found.ok()) {
        error("user " + name->canonical() + " exists already");
        return ctl::exit_conflict;
      }
      if (found.status != AdminStatus::not_found) return report(found, "");
      storage::DomainRecord domain;
      auto d = admin.show_domain(name->domain, domain);
      if (!d.ok() && d.status != AdminStatus::not_found) return report(d, "");
      if (!d.ok()) {
        error("domain " + name->domain + " does not exist; add it first (maildictctl domain add " + name->domain + ")");
        return ctl::exit_not_found;
      }
      if (!domain.active) {
        error("domain " + name->domain + " is disabled; enable it first (maildictctl domain enable " + name->domain +
              ")");
        return ctl::exit_conflict;
      }
      if (domain.alias_for) {
        error(name->domain + " is an alias domain of " + *domain.alias_for + "; add the user as " + name->local_part +
              "@" + *domain.alias_for);
        return ctl::exit_conflict;
      }
    }
    int failed = 0;
    auto hash = password_hash(name->canonical(), c, failed);
    if (failed) return failed;
    if (c.verb == "passwd")
      return report(admin.set_password(name->canonical(), hash), c.no_password ? "password removed" : "password changed");
    return report(admin.add_user(name->canonical(), hash, c.attributes, !c.disabled), "user added");
  }
  if (c.verb == "set") return report(admin.set_user_attributes(c.args[0], c.attributes), "user changed");
  if (c.verb == "disable") return report(admin.set_user_active(c.args[0], false), "user disabled");
  if (c.verb == "enable") return report(admin.set_user_active(c.args[0], true), "user enabled");
  if (c.verb == "remove") return report(admin.remove_user(c.args[0], c.force), "user removed");
  if (c.verb == "list") {
    std::vector<storage::UserRecord> users;
    std::optional<std::string_view> domain;
    if (!c.args.empty()) domain = c.args[0];
    auto r = admin.list_users(domain, users);
    if (!r.ok()) return report(r, "");
    for (const auto& u : users) {
      std::string state = !u.active ? "disabled" : !u.domain_active ? "domain-disabled" : "enabled";
      std::string pw = u.password && !u.password->empty() ? scheme_of(*u.password) : "no-login";
      std::string quota = u.quota_bytes ? " quota=" + quota_text(*u.quota_bytes) : "";
      std::printf("%-40s %-15s %s%s\n", u.name.canonical().c_str(), state.c_str(), pw.c_str(), quota.c_str());
    }
    return ctl::exit_ok;
  }
  // show
  storage::UserRecord u;
  auto r = admin.show_user(c.args[0], u);
  if (!r.ok()) return report(r, "");
  auto value = [](const std::optional<std::string>& v, const std::string& fallback) {
    return v ? *v : fallback + " (default)";
  };
  std::printf("user:      %s\n", u.name.canonical().c_str());
  std::printf("state:     %s\n", !u.active ? "disabled" : !u.domain_active ? "enabled, but its domain is disabled" : "enabled");
  if (!u.password || u.password->empty()) std::printf("password:  none (receives mail, cannot log in)\n");
  else if (c.show_secrets) std::printf("password:  %s\n", u.password->c_str());
  else std::printf("password:  set (%s; --show-secrets prints the hash)\n", scheme_of(*u.password).c_str());
  std::printf("uid:       %s\n", value(u.uid, config.defaults.uid).c_str());
  std::printf("gid:       %s\n", value(u.gid, config.defaults.gid).c_str());
  std::printf("home:      %s\n", value(u.home, storage::expand_template(config.defaults.home, u.name)).c_str());
  std::string mail_default = storage::expand_template(config.defaults.mail, u.name);
  std::printf("mail:      %s\n",
              value(u.mail, mail_default.empty() ? "Dovecot's mail_location" : mail_default).c_str());
  std::printf("quota:     %s\n", u.quota_bytes ? quota_text(*u.quota_bytes).c_str() : "none (Dovecot's quota_rule)");
  std::printf("delivery:  %s (the name smtpd delivers to)\n", storage::delivery_name(u.name).c_str());
  return ctl::exit_ok;
}

int alias_command(const Command& c, storage::DirectoryAdmin& admin) {
  std::vector<std::string> rest(c.args.begin() + (c.args.empty() ? 0 : 1), c.args.end());
  if (c.verb == "add") return report(admin.add_alias(c.args[0], rest, c.force), "alias added");
  if (c.verb == "remove")
    return report(admin.remove_alias(c.args[0], rest), rest.empty() ? "alias removed" : "destination(s) removed");
  std::vector<storage::AliasRow> rows;
  std::optional<std::string_view> filter;
  if (!c.args.empty()) filter = c.args[0];
  auto r = admin.list_aliases(filter, rows);
  if (!r.ok()) return report(r, "");
  // One line per source: "postmaster@example.org -> john@example.org, jane@example.org".
  for (std::size_t i = 0; i < rows.size();) {
    std::string line = rows[i].source() + " -> ";
    std::size_t j = i;
    for (; j < rows.size() && rows[j].source() == rows[i].source(); ++j) {
      line += (j == i ? "" : ", ") + rows[j].destination;
      if (!rows[j].active) line += " (disabled)";
    }
    std::printf("%s\n", line.c_str());
    i = j;
  }
  return ctl::exit_ok;
}

int sender_command(const Command& c, storage::DirectoryAdmin& admin) {
  std::vector<std::string> rest(c.args.begin() + (c.args.empty() ? 0 : 1), c.args.end());
  if (c.verb == "add") return report(admin.add_sender(c.args[0], rest), "sender right(s) added");
  if (c.verb == "remove") return report(admin.remove_sender(c.args[0], rest), "sender right(s) removed");
  std::vector<storage::SenderRow> rows;
  std::optional<std::string_view> login;
  if (!c.args.empty()) login = c.args[0];
  auto r = admin.list_senders(login, rows);
  if (!r.ok()) return report(r, "");
  for (const auto& s : rows) std::printf("%s may send as %s\n", s.login.c_str(), s.address.c_str());
  return ctl::exit_ok;
}

// ---- lookup -------------------------------------------------------------------------------------

// The value of "password" in a flat JSON object replaced by a marker naming its scheme.
std::string hide_json_password(const std::string& json) {
  const std::string key = "\"password\":\"";
  auto start = json.find(key);
  if (start == std::string::npos) return json;
  start += key.size();
  auto end = start;
  while (end < json.size() && json[end] != '"') end += json[end] == '\\' ? 2 : 1;
  if (end > json.size()) end = json.size();
  std::string value = json.substr(start, end - start);
  std::string scheme = value.starts_with("{") && value.find('}') != std::string::npos
                           ? value.substr(1, value.find('}') - 1)
                           : std::string("?");
  return json.substr(0, start) + "<hidden " + scheme + ">" + json.substr(end);
}

struct Lookup {
  table::DictClient& client;
  bool show_secrets;
  int failures = 0;          // answered F by maildictd (it runs; its database or query failed)
  int no_answer = 0;         // maildictd not reached, or no answer in time
  int found_answers = 0;
  int connect_errno = 0;     // of the last lookup that failed before a connection existed

  // One question to maildictd, printed as one line. Returns the value when found.
  std::optional<std::string> ask(const std::string& label, const std::string& key, bool secret_after_colon = false,
                                 bool json_password = false) {
    auto reply = client.lookup(key);
    std::string shown;
    std::optional<std::string> found;
    switch (reply.status) {
      case table::DictClient::Status::found:
        ++found_answers;
        found = reply.value;
        shown = reply.value;
        if (!show_secrets && json_password) shown = hide_json_password(shown);
        if (!show_secrets && secret_after_colon) {
          auto colon = shown.find(':');
          if (colon != std::string::npos) shown = shown.substr(0, colon + 1) + "<hidden>";
        }
        std::printf("  %-18s found      %s\n", label.c_str(), shown.c_str());
        break;
      case table::DictClient::Status::not_found:
        std::printf("  %-18s not found\n", label.c_str());
        break;
      case table::DictClient::Status::failed:
        ++(reply.answered ? failures : no_answer);
        if (reply.connect_errno) connect_errno = reply.connect_errno;
        std::printf("  %-18s TEMPORARY FAILURE (%s%s)\n", label.c_str(), reply.answered ? "maildictd: " : "",
                    reply.error.c_str());
        break;
    }
    return found;
  }
};

int lookup_command(const Command& c, const conf::Config& config, storage::DirectoryAdmin* admin,
                   const std::string& db_problem) {
  table::DictClient::Options options;
  options.socket_path = config.socket_path;
  options.timeout = c.timeout ? *c.timeout : config.request_timeout + std::chrono::seconds(1);
  options.client_name = "maildictctl";
  table::DictClient client(options);
  Lookup lookup{client, c.show_secrets};
  const bool overrides = !config.queries.sql_overrides.empty();
  int keys_without_answer = 0;

  for (const auto& key_in : c.args) {
    const int found_before = lookup.found_answers;
    struct CountUnanswered {  // a key none of whose lookups found anything: exit 2
      const Lookup& l;
      int before;
      int& count;
      ~CountUnanswered() {
        if (l.found_answers == before) ++count;
      }
    } count_unanswered{lookup, found_before, keys_without_answer};
    std::string key = key_in;
    for (char& ch : key)
      if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    if (key.empty() || key.find_first_of(std::string_view("\t\n\r/\0", 5)) != std::string::npos) {
      std::printf("%s\n  not a key maildictd serves (empty, or holds '/' or a control character)\n\n", key.c_str());
      continue;
    }
    std::printf("%s\n", key.c_str());
    const bool address = key.find('@') != std::string::npos;
    const bool login = address || storage::split_login(key).has_value();
    if (!login) {
      std::printf(" smtpd (domain table):\n");
      lookup.ask("domain", "shared/smtpd/domain/" + key);
      std::printf("\n");
      continue;
    }
    std::printf(" Dovecot:\n");
    bool known = lookup.ask("passdb", "shared/passdb/" + key, false, true).has_value();
    lookup.ask("userdb", "shared/userdb/" + key);
    // Why a stored user is not served: the database says, not the daemon.
    if (!known && admin) {
      storage::UserRecord u;
      if (admin->show_user(key, u).ok()) {
        if (!u.active) std::printf("  %-18s user %s exists but is disabled\n", "note", u.name.canonical().c_str());
        else if (!u.domain_active)
          std::printf("  %-18s user %s exists but its domain is disabled\n", "note", u.name.canonical().c_str());
      }
    }
    std::printf(" smtpd:\n");
    if (address) {
      std::string domain = key.substr(key.rfind('@') + 1);
      // (the domain being served says nothing about the address itself: not counted as found)
      if (lookup.ask("domain", "shared/smtpd/domain/" + domain)) --lookup.found_answers;
      auto alias = lookup.ask("alias (recipient)", "shared/smtpd/alias/" + key);
      if (admin) {
        storage::Resolution how;
        auto r = admin->explain_recipient(key, how);
        if (r.ok())
          std::printf("  %-18s %s%s\n", "rule", how.explanation.c_str(),
                      overrides ? " [maildict's default rules; sql_* replacements are configured]" : "");
        else std::printf("  %-18s (cannot tell: %s)\n", "rule", r.message.c_str());
      } else {
        std::printf("  %-18s (cannot tell: %s)\n", "rule", db_problem.c_str());
      }
      // smtpd delivers each local result (a name without '@') after asking userinfo for it.
      if (alias) {
        std::string_view list = *alias;
        while (!list.empty()) {
          auto comma = list.find(',');
          std::string item(list.substr(0, comma));
          while (!item.empty() && item.front() == ' ') item.erase(item.begin());
          if (!item.empty() && item.find('@') == std::string::npos) {
            if (lookup.ask("userinfo", "shared/smtpd/userinfo/" + item)) std::printf("  %-18s (for %s)\n", "", item.c_str());
          }
          if (comma == std::string_view::npos) break;
          list.remove_prefix(comma + 1);
        }
      }
    } else {
      lookup.ask("userinfo", "shared/smtpd/userinfo/" + key);
    }
    lookup.ask("credentials", "shared/smtpd/credentials/" + key, true);
    lookup.ask("mailaddrmap", "shared/smtpd/mailaddrmap/" + key);
    std::printf("\n");
  }
  // Only a lookup that got no answer is blamed on the daemon, and the hint fits the cause: a
  // refused permission is the socket's group or mode, not a stopped daemon. One it answered
  // with F points at what is behind it (its log says which database or query failed).
  if (lookup.no_answer) {
    std::string why = " (no answer in time from " + config.socket_path + ")";
    if (lookup.connect_errno == EACCES || lookup.connect_errno == EPERM)
      why = " (permission denied: " + config.socket_path + ", check socket_group/socket_mode in maildict.conf)";
    else if (lookup.connect_errno == ENOENT || lookup.connect_errno == ECONNREFUSED)
      why = " (is maildictd running on " + config.socket_path + "?)";
    error(std::to_string(lookup.no_answer) + " lookup(s) got no answer from maildictd" + why);
  }
  if (lookup.failures)
    error(std::to_string(lookup.failures) + " lookup(s) answered with a temporary failure by maildictd on " +
          config.socket_path + " (its log says why; `maildictd --check-config` checks the database and queries)");
  if (lookup.no_answer || lookup.failures) return ctl::exit_tempfail;
  if (keys_without_answer) return ctl::exit_not_found;
  return ctl::exit_ok;
}

// ---- check ------------------------------------------------------------------------------------------

int check_command(const conf::Config& config) {
  bool failed = false, only_daemon_down = true;
  for (const auto& check : server::check_host(config, server::default_socket_clients())) {
    std::printf("%-5s %s\n", check.ok ? "ok" : "FAIL", check.line.c_str());
    if (check.ok) continue;
    failed = true;
    only_daemon_down = only_daemon_down && check.daemon_down;
  }
  if (!failed) return ctl::exit_ok;
  return only_daemon_down ? ctl::exit_tempfail : ctl::exit_config;
}

// ---- main -------------------------------------------------------------------------------------------

int run(const Command& c) {
  if (c.object == "help") {
    std::fputs(ctl::help_text(), stdout);
    return ctl::exit_ok;
  }
  if (c.object == "version") {
    std::printf("maildictctl %s\n", MAILDICT_VERSION);
    return ctl::exit_ok;
  }
  conf::Config config;
  try {
    config = conf::load_config(c.config_path);
  } catch (const std::exception& e) {
    error(e.what());
    return ctl::exit_config;
  }
  if (c.object == "check") return check_command(config);

  // An existing schema (smtpd_table_config / dovecot_sql_config) is the operator's own tables,
  // read by their own queries: maildictctl knows neither, so it changes nothing there.
  const bool existing_schema = config.queries.existing != nullptr;
  if (existing_schema && c.object != "lookup") {
    error("this configuration serves an existing schema (smtpd_table_config / dovecot_sql_config): "
          "maildictctl only manages maildict's own tables; change yours with the tools that own them "
          "(maildictctl lookup still shows what Dovecot and smtpd get)");
    return ctl::exit_usage;
  }

  std::unique_ptr<storage::DirectoryBackend> backend;
  std::unique_ptr<storage::SqlSession> session;
  std::string db_problem;
  int db_exit = ctl::exit_tempfail;
  const bool writes = c.object != "lookup" &&
                      !(c.verb == "list" || c.verb == "show");
  if (!existing_schema) try {
    storage::BackendOptions options = conf::backend_options(config);
    // Everything goes to the primary: a change must be read back as written, and a lagging
    // replica would explain a lookup with old rows.
    options.replica.clear();
    options.application_name = "maildictctl";
    options.statement_timeout = c.timeout ? *c.timeout : kDefaultDbTimeout;
    try {
      backend = storage::open_backend(options);
    } catch (const std::exception& e) {
      error(e.what());  // the database URI itself is wrong
      return ctl::exit_config;
    }
    // A change on a fresh install creates the schema (as maildictd does at startup).
    if (writes) backend->prepare_schema();
    session = backend->open_session(storage::SessionRole::write);
  } catch (const storage::SchemaMismatch& e) {
    // A database that is there but not ours (or newer than us) will not get better by trying
    // again; everything else (down, locked, missing file, refused connection) may.
    db_problem = e.what();
    db_exit = ctl::exit_db_error;
  } catch (const std::exception& e) {
    db_problem = e.what();
  }
  if (!session && c.object != "lookup") {
    error((db_exit == ctl::exit_tempfail ? "cannot reach the database: " : "unusable database: ") + db_problem);
    return db_exit;
  }

  std::unique_ptr<storage::DirectoryAdmin> admin;
  if (existing_schema) db_problem = "the rules of an existing schema are its own queries";
  if (session)
    admin = std::make_unique<storage::DirectoryAdmin>(*session, config.defaults.recipient_delimiter,
                                                      c.timeout ? *c.timeout : kDefaultDbTimeout);
  if (c.object == "lookup") return lookup_command(c, config, admin.get(), db_problem);
  if (c.object == "domain") return domain_command(c, *admin);
  if (c.object == "user") return user_command(c, *admin, config);
  if (c.object == "alias") return alias_command(c, *admin);
  return sender_command(c, *admin);
}

}  // namespace

// `maildictctl [-c FILE] import ...`: the importer parses its own arguments
// (server/maildictctl_import.cpp); -c/--config is taken out here, anywhere on the line.
int import_command(const std::vector<std::string>& args) {
  std::string config_path = ctl::kDefaultConfig;
  std::vector<std::string> rest;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if ((args[i] == "-c" || args[i] == "--config") && i + 1 < args.size()) {
      config_path = args[++i];
    } else if (args[i].starts_with("--config=")) {
      config_path = args[i].substr(9);
    } else {
      rest.push_back(args[i]);
    }
  }
  std::vector<char*> argv;
  for (auto& a : rest) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int argc = static_cast<int>(rest.size());
  for (const auto& a : rest)
    if (a == "--help" || a == "-h") return server::run_import_command(argc, argv.data(), "sqlite:/nonexistent");
  conf::Config config;
  try {
    config = conf::load_config(config_path);
  } catch (const std::exception& e) {
    error(e.what());
    return ctl::exit_config;
  }
  if (config.queries.existing) {
    error("this configuration serves an existing schema (smtpd_table_config / dovecot_sql_config): "
          "import writes maildict's own tables only");
    return ctl::exit_usage;
  }
  storage::BackendOptions options = conf::backend_options(config);
  options.replica.clear();
  options.application_name = "maildictctl";
  options.statement_timeout = std::chrono::minutes(10);  // one transaction for the whole import
  std::unique_ptr<storage::DirectoryBackend> backend;
  try {
    backend = storage::open_backend(options);
  } catch (const std::exception& e) {
    error(e.what());
    return ctl::exit_config;
  }
  return server::run_import_command(argc, argv.data(), *backend);
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "-c" || args[i] == "--config") {
      ++i;
      continue;
    }
    if (args[i].starts_with("-")) continue;
    if (args[i] == "import") return import_command(args);
    break;
  }
  auto parsed = ctl::parse_args(args);
  if (!parsed.command) {
    error(parsed.error);
    return ctl::exit_usage;
  }
  try {
    return run(*parsed.command);
  } catch (const std::exception& e) {
    error(e.what());
    return ctl::exit_db_error;
  }
}
