#include "server/maildictctl_args.hpp"

#include <charconv>
#include <string_view>

#include "storage/password_scheme.hpp"

namespace maildict::ctl {

namespace {

using storage::Change;

enum Opt : unsigned {
  o_alias_for = 1u << 0,
  o_disabled = 1u << 1,
  o_force = 1u << 2,
  o_no_password = 1u << 3,
  o_show_secrets = 1u << 4,
  o_scheme = 1u << 5,
  o_cost = 1u << 6,
  o_quota = 1u << 7,
  o_uid = 1u << 8,
  o_gid = 1u << 9,
  o_home = 1u << 10,
  o_mail = 1u << 11,
  o_timeout = 1u << 12,
};
constexpr unsigned o_attributes = o_quota | o_uid | o_gid | o_home | o_mail;
constexpr unsigned o_hashing = o_scheme | o_cost | o_no_password;

struct Spec {
  std::string_view object, verb;
  int min_args, max_args;  // max -1: any number
  unsigned options;
  std::string_view synopsis;
};

// Every command, with the names and options it takes. --timeout bounds any database or daemon
// call, so every command takes it.
constexpr Spec kSpecs[] = {
    {"domain", "add", 1, 1, o_alias_for | o_disabled, "domain add DOMAIN [--alias-for DOMAIN] [--disabled]"},
    {"domain", "list", 0, 0, 0, "domain list"},
    {"domain", "show", 1, 1, 0, "domain show DOMAIN"},
    {"domain", "disable", 1, 1, 0, "domain disable DOMAIN"},
    {"domain", "enable", 1, 1, 0, "domain enable DOMAIN"},
    {"domain", "remove", 1, 1, o_force, "domain remove DOMAIN [--force]"},
    {"user", "add", 1, 1, o_hashing | o_attributes | o_disabled, "user add ADDRESS [options]"},
    {"user", "passwd", 1, 1, o_hashing, "user passwd ADDRESS [--scheme S] [--cost N] [--no-password]"},
    {"user", "set", 1, 1, o_attributes, "user set ADDRESS [--quota Q] [--uid N] [--gid N] [--home P] [--mail L]"},
    {"user", "disable", 1, 1, 0, "user disable ADDRESS"},
    {"user", "enable", 1, 1, 0, "user enable ADDRESS"},
    {"user", "remove", 1, 1, o_force, "user remove ADDRESS [--force]"},
    {"user", "list", 0, 1, 0, "user list [DOMAIN]"},
    {"user", "show", 1, 1, o_show_secrets, "user show ADDRESS [--show-secrets]"},
    {"alias", "add", 2, -1, o_force, "alias add SOURCE DESTINATION... [--force]"},
    {"alias", "remove", 1, -1, 0, "alias remove SOURCE [DESTINATION...]"},
    {"alias", "list", 0, 1, 0, "alias list [DOMAIN | SOURCE]"},
    {"sender", "add", 2, -1, 0, "sender add LOGIN ADDRESS..."},
    {"sender", "remove", 1, -1, 0, "sender remove LOGIN [ADDRESS...]"},
    {"sender", "list", 0, 1, 0, "sender list [LOGIN]"},
    {"lookup", "", 1, -1, o_show_secrets, "lookup KEY... [--show-secrets]"},
    {"check", "", 0, 0, 0, "check"},
};

struct OptionName {
  std::string_view name;
  Opt opt;
  bool takes_value;
};

constexpr OptionName kOptions[] = {
    {"--alias-for", o_alias_for, true}, {"--disabled", o_disabled, false}, {"--force", o_force, false},
    {"--no-password", o_no_password, false}, {"--show-secrets", o_show_secrets, false},
    {"--scheme", o_scheme, true}, {"--cost", o_cost, true}, {"--quota", o_quota, true},
    {"--uid", o_uid, true}, {"--gid", o_gid, true}, {"--home", o_home, true},
    {"--mail", o_mail, true}, {"--timeout", o_timeout, true},
};

// Spellings an operator might try to hand over a password with. Refused by name, so the error
// says why instead of "unknown option".
bool is_password_option(std::string_view name) {
  // "-pSECRET": a short option with its value attached.
  if (name.starts_with("-p") && !name.starts_with("--")) return true;
  for (std::string_view p : {"-p", "--password", "--pass", "--passwd", "--pw", "--secret", "--password-hash", "--hash"})
    if (name == p) return true;
  return false;
}

constexpr const char* kPasswordOnArgv =
    "refusing a password on the command line: it would be visible to every local user in ps(1) and kept in the "
    "shell history. maildictctl asks for it at a prompt (twice, without echo) or reads the first line of "
    "standard input, e.g.  printf '%s\\n' \"$PW\" | maildictctl user add ADDRESS";

const Spec* find_spec(std::string_view object, std::string_view verb) {
  for (const auto& s : kSpecs)
    if (s.object == object && s.verb == verb) return &s;
  return nullptr;
}

bool known_object(std::string_view object) {
  for (const auto& s : kSpecs)
    if (s.object == object) return true;
  return false;
}

std::string verbs_of(std::string_view object) {
  std::string out;
  for (const auto& s : kSpecs)
    if (s.object == object) out += (out.empty() ? "" : ", ") + std::string(s.verb);
  return out;
}

std::optional<std::chrono::milliseconds> parse_timeout(std::string_view v) {
  std::size_t digits = 0;
  while (digits < v.size() && v[digits] >= '0' && v[digits] <= '9') ++digits;
  unsigned long long n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + digits, n);
  if (digits == 0 || ec != std::errc() || n > 3'600'000) return std::nullopt;
  std::string_view unit = v.substr(digits);
  if (unit == "ms") return std::chrono::milliseconds(n);
  if (unit.empty() || unit == "s") return std::chrono::milliseconds(n * 1000);
  return std::nullopt;
}

// "default" (or "none" for the quota) turns the column back to NULL: the configured default.
bool is_reset_word(std::string_view v) { return v == "default" || v == "none"; }

}  // namespace

int exit_code_for(storage::AdminStatus status) {
  switch (status) {
    case storage::AdminStatus::ok: return exit_ok;
    case storage::AdminStatus::bad_input: return exit_usage;
    case storage::AdminStatus::not_found: return exit_not_found;
    case storage::AdminStatus::conflict: return exit_conflict;
    case storage::AdminStatus::temp_fail: return exit_tempfail;
    case storage::AdminStatus::db_error: return exit_db_error;
  }
  return exit_db_error;
}

unsigned long Command::effective_cost() const {
  if (cost != 0) return cost;
  if (storage::scheme_truncates_at_72_bytes(scheme)) return kDefaultBcryptCost;
  return 0;
}

ParseResult parse_args(std::span<const std::string> args) {
  Command c;
  std::vector<std::string> words;  // object, verb and names, in order
  unsigned given = 0;
  bool options_done = false;

  auto error = [](std::string why) { return ParseResult{std::nullopt, std::move(why)}; };

  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    if (options_done || a.empty() || a[0] != '-' || a == "-") {
      words.emplace_back(a);
      continue;
    }
    if (a == "--") {
      options_done = true;
      continue;
    }
    std::string_view name = a;
    std::optional<std::string> inline_value;
    if (auto eq = a.find('='); eq != std::string_view::npos && a.starts_with("--")) {
      name = a.substr(0, eq);
      inline_value = std::string(a.substr(eq + 1));
    }
    if (is_password_option(name)) return error(kPasswordOnArgv);
    if (name == "-h" || name == "--help") {
      c.object = "help";
      return ParseResult{c, {}};
    }
    if (name == "--version" || name == "-V") {
      c.object = "version";
      return ParseResult{c, {}};
    }
    auto take_value = [&](std::string& out) -> bool {
      if (inline_value) {
        out = *inline_value;
        return true;
      }
      if (i + 1 >= args.size()) return false;
      out = args[++i];
      return true;
    };
    if (name == "-c" || name == "--config") {
      if (!take_value(c.config_path) || c.config_path.empty()) return error(std::string(name) + " needs a file name");
      continue;
    }
    const OptionName* opt = nullptr;
    for (const auto& o : kOptions)
      if (o.name == name) opt = &o;
    // Only the name is echoed: whatever followed '=' could be something secret.
    if (!opt) return error("unknown option '" + std::string(name) + "' (see maildictctl --help)");
    if (given & opt->opt) return error("option " + std::string(name) + " is given twice");
    given |= opt->opt;
    std::string value;
    if (opt->takes_value) {
      if (!take_value(value)) return error("option " + std::string(name) + " needs a value");
    } else if (inline_value) {
      return error("option " + std::string(name) + " takes no value");
    }
    std::string why;
    switch (opt->opt) {
      case o_alias_for: c.alias_for = value; break;
      case o_disabled: c.disabled = true; break;
      case o_force: c.force = true; break;
      case o_no_password: c.no_password = true; break;
      case o_show_secrets: c.show_secrets = true; break;
      case o_scheme:
        if (!storage::cost_range(value))
          return error("--scheme: unknown scheme '" + value + "' (bcrypt, sha512-crypt or yescrypt)");
        c.scheme = value;
        for (char& ch : c.scheme)
          if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
        break;
      case o_cost: {
        auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), c.cost);
        if (value.empty() || ec != std::errc() || p != value.data() + value.size() || c.cost == 0)
          return error("--cost needs a positive number");
        break;
      }
      case o_quota:
        if (is_reset_word(value)) {
          c.attributes.quota_bytes = Change<std::int64_t>::reset_to_default();
        } else {
          auto q = storage::parse_quota(value, why);
          if (!q) return error("--quota: " + why);
          c.attributes.quota_bytes = Change<std::int64_t>::set_to(*q);
        }
        break;
      case o_uid:
      case o_gid:
      case o_home:
      case o_mail: {
        auto& field = opt->opt == o_uid   ? c.attributes.uid
                      : opt->opt == o_gid ? c.attributes.gid
                      : opt->opt == o_home ? c.attributes.home
                                           : c.attributes.mail;
        field = value == "default" ? Change<std::string>::reset_to_default() : Change<std::string>::set_to(value);
        break;
      }
      case o_timeout: {
        auto t = parse_timeout(value);
        if (!t || t->count() == 0) return error("--timeout needs a duration such as 10s or 500ms");
        c.timeout = *t;
        break;
      }
    }
  }

  if (words.empty()) return error("no command given (see maildictctl --help)");
  c.object = words[0];
  if (c.object == "help") return ParseResult{c, {}};
  if (c.object == "version") return ParseResult{c, {}};
  if (!known_object(c.object))
    return error("unknown command '" + c.object + "' (domain, user, alias, sender, lookup, check or help)");
  std::size_t first_arg = 1;
  if (c.object != "lookup" && c.object != "check") {
    if (words.size() < 2) return error(c.object + " needs a subcommand: " + verbs_of(c.object));
    c.verb = words[1];
    first_arg = 2;
  }
  const Spec* spec = find_spec(c.object, c.verb);
  if (!spec) return error("unknown subcommand '" + c.object + " " + c.verb + "' (" + verbs_of(c.object) + ")");
  c.args.assign(words.begin() + static_cast<std::ptrdiff_t>(first_arg), words.end());

  const int n = static_cast<int>(c.args.size());
  const bool hashes = (spec->options & o_no_password) != 0;
  if (spec->max_args >= 0 && n > spec->max_args) {
    // `user add john@example.org secret`: the one mistake that must never reach a database.
    if (hashes) return error(kPasswordOnArgv);
    return error("too many arguments; usage: maildictctl " + std::string(spec->synopsis));
  }
  if (n < spec->min_args) return error("missing argument; usage: maildictctl " + std::string(spec->synopsis));

  unsigned not_allowed = given & ~(spec->options | o_timeout);
  if (not_allowed) {
    for (const auto& o : kOptions)
      if (not_allowed & o.opt)
        return error("option " + std::string(o.name) + " does not apply to '" + c.object +
                     (c.verb.empty() ? "" : " " + c.verb) + "'");
  }
  if (c.no_password && (given & (o_scheme | o_cost)))
    return error("--no-password stores no hash: --scheme and --cost do not apply");
  if (c.verb == "set" && !(given & o_attributes))
    return error("user set needs at least one of --quota, --uid, --gid, --home, --mail");
  if (given & o_cost) {
    auto range = storage::cost_range(c.scheme);
    if (range && (c.cost < range->min || c.cost > range->max))
      return error("--cost " + std::to_string(c.cost) + " is out of range for " + c.scheme + " (" +
                   std::to_string(range->min) + ".." + std::to_string(range->max) + ")");
  }
  return ParseResult{c, {}};
}

const char* help_text() {
  return R"(NAME
    maildictctl - manage the maildict directory: domains, users, aliases, sender rights

SYNOPSIS
    maildictctl [-c FILE] domain add DOMAIN [--alias-for DOMAIN] [--disabled]
    maildictctl [-c FILE] domain list | show DOMAIN | disable DOMAIN | enable DOMAIN
    maildictctl [-c FILE] domain remove DOMAIN [--force]
    maildictctl [-c FILE] user add ADDRESS [--scheme S] [--cost N] [--no-password]
                          [--quota SIZE] [--uid N] [--gid N] [--home PATH] [--mail LOCATION]
                          [--disabled]
    maildictctl [-c FILE] user passwd ADDRESS [--scheme S] [--cost N] [--no-password]
    maildictctl [-c FILE] user set ADDRESS [--quota SIZE] [--uid N] [--gid N] [--home PATH]
                          [--mail LOCATION]
    maildictctl [-c FILE] user disable | enable | remove [--force] | show [--show-secrets] ADDRESS
    maildictctl [-c FILE] user list [DOMAIN]
    maildictctl [-c FILE] alias add SOURCE DESTINATION... [--force]
    maildictctl [-c FILE] alias remove SOURCE [DESTINATION...]
    maildictctl [-c FILE] alias list [DOMAIN | SOURCE]
    maildictctl [-c FILE] sender add LOGIN ADDRESS...
    maildictctl [-c FILE] sender remove LOGIN [ADDRESS...]
    maildictctl [-c FILE] sender list [LOGIN]
    maildictctl [-c FILE] lookup KEY... [--show-secrets]
    maildictctl [-c FILE] check
    maildictctl [-c FILE] import KIND --from URI [--dry-run] [--strict] [--verbose]
                          (see maildictctl import --help)

DESCRIPTION
    maildictctl changes the directory that maildictd serves to Dovecot and OpenSMTPD. It finds
    the database through the `database` setting of maildictd's configuration file. Every change
    is one transaction: it is checked completely and either written completely or not at all.
    maildictd notices each commit by itself and answers with the new data at once; no reload
    or restart is needed. Names are stored in lower case. Both backends are managed alike
    (database = sqlite:/path or postgresql:<conninfo>; changes always go to the primary). A
    configuration that serves an existing schema (smtpd_table_config, dovecot_sql_config) is
    the operator's own tables: maildictctl changes nothing there (lookup still works).

DOMAINS
    domain add DOMAIN       Serve DOMAIN. --alias-for TARGET makes it an alias domain: mail for
                            local@DOMAIN goes to local@TARGET (TARGET must exist and not be an
                            alias domain itself). --disabled adds it switched off.
    domain list             Every domain with its state, user and alias counts.
    domain show DOMAIN      One domain.
    domain disable DOMAIN   Switch a domain off: its users cannot log in and receive no mail,
    domain enable DOMAIN    its aliases stop; enable switches it back on. Rows are kept.
    domain remove DOMAIN    Delete a domain. Refused while users or aliases belong to it (or
                            aliases elsewhere point into it); --force deletes them with it,
                            and their sender rights. Refused while an alias domain points at
                            it, even with --force.

USERS
    ADDRESS is local@domain. Dovecot logins may also use the local_domain spelling.

    user add ADDRESS        Add a user in an existing, enabled, non-alias domain. The password
                            is asked for at the terminal (twice, not echoed) or, when standard
                            input is not a terminal, read from its first line. It is never
                            taken from the command line. --no-password adds a user who
                            receives mail but cannot log in.
          --scheme S        bcrypt (default; $2b$), sha512-crypt ($6$) or yescrypt ($y$),
                            all verified by Dovecot and by smtpd's crypt(3).
          --cost N          bcrypt: log2 rounds, 4..31 (default 12); sha512-crypt: rounds,
                            1000..999999999 (default 5000); yescrypt: 1..11 (default 5).
          --quota SIZE      storage quota: bytes, or with K, M, G, T (1024-based); 0 means
                            unlimited; none removes the per-user limit (Dovecot's applies).
          --uid N, --gid N  numeric owner of the mailbox; default: default_uid/default_gid.
          --home PATH       absolute home directory; default: the default_home template.
          --mail LOCATION   Dovecot mail location (e.g. maildir:~/Maildir); default:
                            default_mail.
          --disabled        add the user switched off.
    user passwd ADDRESS     Set a new password (same input rules and options as user add).
                            Takes effect at once: the old password stops working.
    user set ADDRESS        Change --quota, --uid, --gid, --home or --mail; the value
                            `default` (or `none` for --quota) returns to the configured default.
    user disable ADDRESS    The user can no longer log in and receives no mail: smtpd refuses
                            mail to it (550); it never goes to the domain's catch-all. To
                            forward it, add an alias for the address.
    user enable ADDRESS     Switch a disabled user back on.
    user remove ADDRESS     Delete the user and its sender rights. Refused while aliases name
                            it as a destination; --force deletes those alias rows too. Mail
                            files are not touched.
    user list [DOMAIN]      Users (of one domain), with state, password scheme and quota.
    user show ADDRESS       Every stored field and the defaults that apply. The password hash
                            is only printed with --show-secrets.

ALIASES
    SOURCE is local@domain, or @domain for the domain's catch-all (mail for addresses of the
    domain that match nothing else). DESTINATION is any address, local or remote. How a
    recipient is resolved, first match wins: alias rows for the exact address, a user with the
    address, the same local part at the alias_for domain, the domain's catch-all.

    alias add SOURCE DESTINATION...
                            Add destinations (one row each; several make a list). Refused:
                            a destination already present, a missing source domain, an alias
                            loop (an expansion that comes back to SOURCE), and a destination
                            in a served domain that nobody receives (--force adds it anyway).
                            An alias at a user's own address takes the user's mail; name the
                            user among the destinations to keep a copy.
    alias remove SOURCE [DESTINATION...]
                            Remove those destinations, or without any, the whole alias.
    alias list [DOMAIN | SOURCE]
                            Aliases with their destinations.

SENDER RIGHTS
    Every user may send as its own address and as the aliases whose only destination it is
    (smtpd's `senders` check through the mailaddrmap table). Extra rights:

    sender add LOGIN ADDRESS...     Let LOGIN (an existing user) send as ADDRESS; @domain
                                    allows any address of that domain.
    sender remove LOGIN [ADDRESS...]
                                    Remove those rights, or without addresses all of them.
    sender list [LOGIN]             The extra rights.

IMPORT
    import KIND --from URI  Copy another admin tool's domains, users, aliases and sender
                            rights into the directory, in one transaction; idempotent, with
                            a dry run. KIND: postfixadmin, vimbadmin, mailcow, mailinabox,
                            modoboa. `maildictctl import --help` tells what each reads.

LOOKUP
    lookup KEY...           Ask the running maildictd, through its socket, exactly what Dovecot
                            and smtpd would get for KEY: for an address or login the passdb
                            and userdb answers and smtpd's credentials, userinfo, alias
                            (recipient resolution) and mailaddrmap answers; for a domain,
                            smtpd's domain check. Says which resolution rule matched (read
                            from the database). Password hashes are shown as <hidden> unless
                            --show-secrets is given. Exits 2 when a KEY got no answer at all.

CHECK
    check                   Check this host against the configuration, one line per check
                            with the fix when it fails: the accounts it names exist (user,
                            socket_owner, socket_group, default_uid, default_gid); the SQLite
                            database and its directory are writable by maildictd's user; smtpd's
                            tables (as opensmtpd, its primary group only) and Dovecot 2.3's auth
                            worker (root) can connect to the socket. Run it as root. Exits 78
                            when a check fails, 75 when only maildictd is not answering.

OPTIONS
    -c, --config FILE       maildictd's configuration (default /etc/maildict/maildict.conf):
                            database, socket, default_* and recipient_delimiter are read.
    --timeout DURATION      bound on each database transaction or daemon lookup, e.g. 10s or
                            500ms (default 10s for the database, request_timeout + 1s for
                            lookups).
    -h, --help              this text.  --version: the version.

EXIT STATUS
    0   success (also for enable/disable of something already in that state)
    1   usage error or invalid input (bad address or domain, password on the command line,
        unknown option, passwords that do not match)
    2   not found: the domain, user, alias or sender right does not exist (lookup: a KEY
        that no lookup found)
    3   conflict: it exists already, an alias loop, a disabled or alias domain, or other rows
        still depend on it
    4   the database refused permanently (e.g. it has no maildict schema)
    75  temporary failure: the database or maildictd is unreachable, locked or too slow; try
        again. Nothing was changed.
    78  the configuration file cannot be read or is invalid

EXAMPLES
    maildictctl domain add example.org
    maildictctl user add john@example.org --quota 2G
    printf '%s\n' "$NEWPASS" | maildictctl user passwd john@example.org
    maildictctl alias add postmaster@example.org john@example.org jane@example.org
    maildictctl alias add @example.org john@example.org
    maildictctl sender add john@example.org sales@example.org
    maildictctl lookup john@example.org postmaster@example.org example.org
)";
}

}  // namespace maildict::ctl
