#include "storage/sql_directory.hpp"

#include <grp.h>
#include <pwd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "storage/login_name.hpp"
#include "storage/password_scheme.hpp"

namespace maildict::storage {

namespace {

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

bool has_forbidden_char(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x21 || c == 0x7f || c == '/') return true;
  return false;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// smtpd takes uid and gid as numbers only (it never resolves names), while the directory's
// defaults may be account names for Dovecot's sake. A name that does not resolve is a
// temporary failure with the reason: a guessed number would deliver mail as the wrong user.
bool numeric_id(const std::string& id, bool group, std::string& out, std::string& why) {
  if (id.size() < 11 && all_digits(id)) {
    out = id;
    return true;
  }
  std::vector<char> buf(16384);
  int err = 0;
  if (group) {
    struct group gr, *found = nullptr;
    err = ::getgrnam_r(id.c_str(), &gr, buf.data(), buf.size(), &found);
    if (err == 0 && found) {
      out = std::to_string(found->gr_gid);
      return true;
    }
  } else {
    struct passwd pw, *found = nullptr;
    err = ::getpwnam_r(id.c_str(), &pw, buf.data(), buf.size(), &found);
    if (err == 0 && found) {
      out = std::to_string(found->pw_uid);
      return true;
    }
  }
  why = std::string(group ? "gid '" : "uid '") + id + (group ? "' is not a system group" : "' is not a system user") +
        (err != 0 ? std::string(" (") + std::strerror(err) + ")" : std::string()) +
        "; smtpd needs a number (set " + (group ? "default_gid" : "default_uid") + " or the column)";
  return false;
}

const std::string& text(const SqlRow& row, std::size_t col) {
  static const std::string empty;
  return col < row.size() && row[col] ? *row[col] : empty;
}
bool is_null(const SqlRow& row, std::size_t col) { return col >= row.size() || !row[col]; }

// Reads uid, gid, home, mail, quota_bytes starting at column `first`.
UserdbEntry userdb_from_row(const SqlRow& row, std::size_t first, const MailboxName& name,
                            const UserDefaults& defaults) {
  UserdbEntry e;
  e.user = name.canonical();
  e.uid = is_null(row, first) ? defaults.uid : text(row, first);
  e.gid = is_null(row, first + 1) ? defaults.gid : text(row, first + 1);
  e.home = is_null(row, first + 2) ? expand_template(defaults.home, name) : text(row, first + 2);
  e.mail = is_null(row, first + 3) ? expand_template(defaults.mail, name) : text(row, first + 3);
  // NULL: no per-user rule, Dovecot's configured quota_rule applies. 0 is emitted too: Dovecot
  // reads a zero limit as "unlimited", so an operator can lift the global limit for one user.
  // Anything that is not a non-negative integer would make Dovecot fail the whole lookup, so
  // it is left out instead.
  if (!is_null(row, first + 4) && all_digits(text(row, first + 4)) && text(row, first + 4).size() < 20)
    e.quota_rule = "*:storage=" + text(row, first + 4) + "B";
  return e;
}

// What a failed statement means for a lookup: a value the database cannot even hold names no
// row; anything else (lock, timeout, lost server, broken schema) is "could not look".
enum class Failed { no_row, temp_fail };
Failed classify(const SqlError& err) {
  return err.kind == SqlError::Kind::invalid_input ? Failed::no_row : Failed::temp_fail;
}

class SqlDirectory final : public DirectoryConnection {
 public:
  SqlDirectory(std::unique_ptr<SqlSession> session, DirectorySql sql, UserDefaults defaults)
      : s_(std::move(session)), sql_(std::move(sql)), defaults_(std::move(defaults)) {}

  Result<PassdbEntry> passdb(std::string_view login, Deadline deadline) override {
    using R = Result<PassdbEntry>;
    auto name = split_login(login);
    if (!name) return R::not_found();
    SqlRows rows;
    if (!query(deadline, sql_.passdb, {name->local_part, name->domain}, rows)) return fail<R>();
    if (rows.empty()) return R::not_found();
    PassdbEntry e;
    e.user = name->canonical();
    // An empty string cannot verify any password either; treat it like NULL rather than
    // handing Dovecot a bare "{CRYPT}".
    if (!text(rows[0], 0).empty()) e.password = with_scheme_prefix(text(rows[0], 0));
    return R::found(std::move(e));
  }

  Result<UserdbEntry> userdb(std::string_view login, Deadline deadline) override {
    using R = Result<UserdbEntry>;
    auto name = split_login(login);
    if (!name) return R::not_found();
    SqlRows rows;
    if (!query(deadline, sql_.userdb, {name->local_part, name->domain}, rows)) return fail<R>();
    if (rows.empty()) return R::not_found();
    return R::found(userdb_from_row(rows[0], 0, *name, defaults_));
  }

  Result<std::vector<UserdbEntry>> users(Deadline deadline) override {
    using R = Result<std::vector<UserdbEntry>>;
    SqlRows rows;
    if (!query(deadline, sql_.users, {}, rows)) return fail<R>();
    std::vector<UserdbEntry> out;
    out.reserve(rows.size());
    MailboxName name;
    for (const auto& row : rows) {
      name.local_part = text(row, 0);
      name.domain = text(row, 1);
      out.push_back(userdb_from_row(row, 2, name, defaults_));
    }
    return R::found(std::move(out));
  }

  // ---- smtpd's questions ---------------------------------------------------------------------

  Result<std::string> domain_exists(std::string_view domain, Deadline deadline) override {
    using R = Result<std::string>;
    std::string name = lowered(domain);
    if (name.empty() || has_forbidden_char(name)) return R::not_found();
    s_->set_deadline(deadline);
    DomainRow row;
    if (!read_domain(name, row)) return fail<R>();
    if (!row.exists || !row.active) return R::not_found();
    return R::found(std::move(name));
  }

  Result<std::vector<std::string>> resolve_recipient(std::string_view address, Deadline deadline) override {
    using R = Result<std::vector<std::string>>;
    auto name = split_address(address, defaults_.recipient_delimiter);
    if (!name) return R::not_found();
    s_->set_deadline(deadline);
    Snapshot snapshot(*this);
    if (!snapshot.ok) return fail<R>();
    std::vector<std::string> out;
    if (!resolve(*name, /*follow_alias_domain=*/true, out)) return fail<R>();
    if (out.empty()) return R::not_found();
    return R::found(std::move(out));
  }

  Result<UserInfo> userinfo(std::string_view login, Deadline deadline) override {
    using R = Result<UserInfo>;
    auto name = split_login(login);
    if (!name) return R::not_found();
    SqlRows rows;
    if (!query(deadline, sql_.userdb, {name->local_part, name->domain}, rows)) return fail<R>();
    if (rows.empty()) return R::not_found();
    UserdbEntry entry = userdb_from_row(rows[0], 0, *name, defaults_);
    UserInfo info;
    std::string why;
    if (!numeric_id(entry.uid, false, info.uid, why) || !numeric_id(entry.gid, true, info.gid, why))
      return R::temp_fail(std::move(why));
    info.home = std::move(entry.home);
    return R::found(std::move(info));
  }

  Result<LoginHash> credentials(std::string_view login, Deadline deadline) override {
    using R = Result<LoginHash>;
    auto name = split_login(login);
    if (!name) return R::not_found();
    SqlRows rows;
    if (!query(deadline, sql_.passdb, {name->local_part, name->domain}, rows)) return fail<R>();
    if (rows.empty() || is_null(rows[0], 0)) return R::not_found();
    auto hash = crypt_hash_for_smtpd(text(rows[0], 0));
    if (!hash) return R::not_found();
    return R::found(LoginHash{name->canonical(), std::move(*hash)});
  }

  Result<RelayCredential> relay_credential(std::string_view label, Deadline deadline) override {
    using R = Result<RelayCredential>;
    std::string key = lowered(label);
    if (key.empty()) return R::not_found();
    SqlRows rows;
    if (!query(deadline, sql_.relay, {key}, rows)) return fail<R>();
    if (rows.empty()) return R::not_found();
    return R::found(RelayCredential{text(rows[0], 0), text(rows[0], 1)});
  }

  Result<std::vector<std::string>> sender_addresses(std::string_view login, Deadline deadline) override {
    using R = Result<std::vector<std::string>>;
    auto name = split_login(login);
    if (!name) return R::not_found();
    s_->set_deadline(deadline);
    Snapshot snapshot(*this);
    if (!snapshot.ok) return fail<R>();

    bool active = false;
    if (!user_active(*name, active)) return fail<R>();
    if (!active) return R::not_found();

    const std::string canonical = name->canonical();
    const std::string delivery = delivery_name(*name);
    std::vector<std::string> out{canonical};
    auto add = [&out](std::string a) {
      if (!a.empty() && std::find(out.begin(), out.end(), a) == out.end()) out.push_back(std::move(a));
    };
    SqlRows rows;
    if (!run(sql_.sender_logins, {canonical, delivery}, &rows)) return fail<R>();
    for (const auto& row : rows) add(text(row, 0));
    rows.clear();
    if (!run(sql_.sole_aliases, {canonical, delivery}, &rows)) return fail<R>();
    for (const auto& row : rows) add(text(row, 0) + "@" + text(row, 1));
    return R::found(std::move(out));
  }

  Result<std::vector<std::string>> smtpd_values(std::string_view service, std::string_view key,
                                                Deadline deadline) override {
    using R = Result<std::vector<std::string>>;
    SqlRows rows;
    if (!query(deadline, sql_.smtpd_values, {std::string(service), std::string(key)}, rows)) return fail<R>();
    return column_list<R>(rows);
  }

  Result<std::vector<std::string>> smtpd_keys(std::string_view service, Deadline deadline) override {
    using R = Result<std::vector<std::string>>;
    SqlRows rows;
    if (!query(deadline, sql_.smtpd_keys, {std::string(service)}, rows)) return fail<R>();
    return column_list<R>(rows);
  }

  bool healthy() const override { return s_->healthy(); }

 private:
  // One consistent snapshot for the questions that read several statements (recipient
  // resolution, sender addresses), so a commit landing between two of them cannot mix old and
  // new rows. Ended (never left open: it would pin an old snapshot) when it goes out of scope.
  struct Snapshot {
    explicit Snapshot(SqlDirectory& d) : dir(d) { ok = d.s_->begin(SessionRole::read, d.error_); }
    ~Snapshot() {
      if (!ok) return;
      SqlError ignored;
      if (!dir.s_->commit(ignored)) dir.s_->rollback();
    }
    Snapshot(const Snapshot&) = delete;
    Snapshot& operator=(const Snapshot&) = delete;
    SqlDirectory& dir;
    bool ok = false;
  };

  struct DomainRow {
    bool exists = false;
    bool active = false;
    std::string alias_for;
  };

  // Runs one statement under `deadline`; false when it failed (see fail()). A value the
  // database cannot hold counts as success with no rows.
  bool query(Deadline deadline, const std::string& sql, std::initializer_list<SqlValue> params, SqlRows& rows) {
    s_->set_deadline(deadline);
    return run(sql, params, &rows);
  }

  bool run(const std::string& sql, std::initializer_list<SqlValue> params, SqlRows* rows) {
    if (s_->run(sql, std::span<const SqlValue>(params.begin(), params.size()), rows, error_)) return true;
    if (classify(error_) == Failed::no_row) {
      if (rows) rows->clear();
      return true;
    }
    return false;
  }

  template <class R>
  R fail() {
    return R::temp_fail(error_.message.empty() ? std::string("database error") : error_.message);
  }

  template <class R>
  static R column_list(const SqlRows& rows) {
    if (rows.empty()) return R::not_found();
    std::vector<std::string> out;
    out.reserve(rows.size());
    for (const auto& row : rows) out.push_back(text(row, 0));
    return R::found(std::move(out));
  }

  bool read_domain(const std::string& domain, DomainRow& row) {
    SqlRows rows;
    if (!run(sql_.domain_row, {domain}, &rows)) return false;
    if (rows.empty()) return true;
    row.exists = true;
    // Same rule as the user queries: only exactly 1 is active.
    row.active = text(rows[0], 0) == "1";
    if (!is_null(rows[0], 1)) row.alias_for = lowered(text(rows[0], 1));
    return true;
  }

  bool user_active(const MailboxName& name, bool& active) {
    SqlRows rows;
    if (!run(sql_.user_active, {name.local_part, name.domain}, &rows)) return false;
    active = !rows.empty();
    return true;
  }

  // Called after user_active found nothing: a row is a disabled user.
  bool user_disabled(const MailboxName& name, bool& disabled) {
    disabled = false;
    if (sql_.user_exists.empty()) return true;
    SqlRows rows;
    if (!run(sql_.user_exists, {name.local_part, name.domain}, &rows)) return false;
    disabled = !rows.empty();
    return true;
  }

  bool alias_rows(const MailboxName& name, std::vector<std::string>& out) {
    SqlRows rows;
    if (!run(sql_.alias_rows, {name.local_part, name.domain}, &rows)) return false;
    for (const auto& row : rows) out.push_back(text(row, 0));
    return true;
  }

  // A destination that is an active local user becomes its delivery name, so smtpd delivers it
  // without another round through its rules; anything else (remote address, pipe, file, an
  // address at an alias domain) is left for smtpd to expand as written.
  bool map_destinations(std::vector<std::string>& rows, std::vector<std::string>& out) {
    for (auto& dest : rows) {
      if (dest.find('@') != std::string::npos) {
        if (auto user = split_address(dest, {})) {
          bool active = false;
          if (!user_active(*user, active)) return false;
          if (active) {
            out.push_back(delivery_name(*user));
            continue;
          }
        }
      }
      out.push_back(std::move(dest));
    }
    return true;
  }

  // DESIGN.md §3, first match wins. An alias domain is followed once: its target's own
  // alias_for is not, so a loop (a -> b -> a) ends after one step. A disabled user stops the
  // search with nothing found (`refused`): its mail is refused, never given to a catch-all.
  bool resolve(const MailboxName& name, bool follow_alias_domain, std::vector<std::string>& out) {
    bool refused = false;
    return resolve(name, follow_alias_domain, out, refused);
  }

  bool resolve(const MailboxName& name, bool follow_alias_domain, std::vector<std::string>& out,
               bool& refused) {
    DomainRow domain;
    if (!read_domain(name.domain, domain)) return false;
    if (!domain.exists || !domain.active) return true;

    std::vector<std::string> rows;
    if (!alias_rows(name, rows)) return false;
    if (!rows.empty()) return map_destinations(rows, out);

    bool user = false;
    if (!user_active(name, user)) return false;
    if (user) {
      out.push_back(delivery_name(name));
      return true;
    }
    if (!user_disabled(name, refused)) return false;
    if (refused) return true;

    if (follow_alias_domain && !domain.alias_for.empty() && domain.alias_for != name.domain) {
      if (!resolve(MailboxName{name.local_part, domain.alias_for}, false, out, refused)) return false;
      if (!out.empty() || refused) return true;
    }

    if (!alias_rows(MailboxName{"", name.domain}, rows)) return false;
    return map_destinations(rows, out);
  }

  std::unique_ptr<SqlSession> s_;
  const DirectorySql sql_;
  UserDefaults defaults_;
  SqlError error_;
};

}  // namespace

std::unique_ptr<DirectoryConnection> make_sql_directory(std::unique_ptr<SqlSession> session, DirectorySql sql,
                                                        UserDefaults defaults) {
  // Dovecot's statements are prepared now, so a database without the schema is refused when the
  // pool connects (a clear "schema not usable" in the log) instead of on every login. smtpd's
  // are prepared on first use: a database older than their tables still serves Dovecot.
  for (const std::string* text : {&sql.passdb, &sql.userdb, &sql.users}) {
    SqlError err;
    if (!session->prepare(*text, err)) {
      if (err.kind == SqlError::Kind::transient) throw std::runtime_error(err.message);
      throw std::runtime_error("schema not usable: " + err.message);
    }
  }
  return std::make_unique<SqlDirectory>(std::move(session), std::move(sql), std::move(defaults));
}

}  // namespace maildict::storage
