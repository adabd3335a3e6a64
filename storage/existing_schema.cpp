#include "storage/existing_schema.hpp"

#include <algorithm>
#include <set>
#include <stdexcept>

#include "storage/login_name.hpp"
#include "storage/password_scheme.hpp"

namespace maildict::storage {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// Reads one Dovecot variable at text[i] == '%'; returns its part and advances i past it, or
// nullopt for "%%" (a literal percent sign).
std::optional<LoginPart> read_variable(std::string_view text, std::size_t& i) {
  auto bad = [&](std::string_view what) {
    throw std::invalid_argument("uses %" + std::string(what) +
                                ", which maildict cannot supply (only %u, %n, %d, %{user}, %{username} and "
                                "%{domain})");
  };
  if (i + 1 >= text.size()) bad("");
  char c = text[i + 1];
  if (c == '%') {
    i += 2;
    return std::nullopt;
  }
  if (c == '{') {
    auto close = text.find('}', i + 2);
    if (close == std::string_view::npos) bad("{ without }");
    std::string name(text.substr(i + 2, close - i - 2));
    i = close + 1;
    if (name == "user") return LoginPart::user;
    if (name == "username") return LoginPart::local_part;
    if (name == "domain") return LoginPart::domain;
    bad("{" + name + "}");
  }
  std::size_t at = i + 1;
  if (c == 'L' && at + 1 < text.size()) ++at;  // %Lu: lower-case, which every part already is
  char v = text[at];
  i = at + 1;
  if (v == 'u') return LoginPart::user;
  if (v == 'n') return LoginPart::local_part;
  if (v == 'd') return LoginPart::domain;
  bad(c == 'L' ? std::string("L") + v : std::string(1, v));
  return std::nullopt;  // not reached
}

}  // namespace

TemplatedQuery translate_dovecot_query(std::string_view text) {
  TemplatedQuery out;
  auto param_of = [&out](LoginPart p) {
    auto it = std::find(out.params.begin(), out.params.end(), p);
    if (it == out.params.end()) {
      out.params.push_back(p);
      return out.params.size();
    }
    return static_cast<std::size_t>(it - out.params.begin()) + 1;
  };
  std::size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (c == '"') {  // a quoted identifier: copied as is
      auto close = text.find('"', i + 1);
      if (close == std::string_view::npos) close = text.size() - 1;
      out.sql.append(text.substr(i, close - i + 1));
      i = close + 1;
    } else if (c == '\'') {
      // A string literal: split into constant text and variables.
      std::vector<std::string> parts;  // SQL expressions
      std::string constant;
      bool has_variable = false;
      std::size_t j = i + 1;
      for (;;) {
        if (j >= text.size()) throw std::invalid_argument("has a string literal without its closing quote");
        if (text[j] == '\'') {
          if (j + 1 < text.size() && text[j + 1] == '\'') {
            constant += "''";
            j += 2;
            continue;
          }
          ++j;
          break;
        }
        if (text[j] == '%') {
          auto part = read_variable(text, j);
          if (!part) {
            constant += '%';
            continue;
          }
          has_variable = true;
          if (!constant.empty()) parts.push_back("'" + constant + "'");
          constant.clear();
          parts.push_back("$" + std::to_string(param_of(*part)));
          continue;
        }
        constant += text[j++];
      }
      if (!has_variable) {
        out.sql += "'" + constant + "'";  // %% became %
      } else {
        if (!constant.empty()) parts.push_back("'" + constant + "'");
        if (parts.size() == 1) {
          out.sql += parts[0];
        } else {
          out.sql += '(';
          for (std::size_t k = 0; k < parts.size(); ++k) out.sql += (k ? " || " : "") + parts[k];
          out.sql += ')';
        }
      }
      i = j;
    } else if (c == '%') {
      auto part = read_variable(text, i);
      if (!part)
        out.sql += '%';
      else
        out.sql += "$" + std::to_string(param_of(*part));
    } else {
      out.sql += c;
      ++i;
    }
  }
  return out;
}

namespace {

std::optional<std::size_t> column(const std::vector<std::string>& names, std::string_view wanted) {
  for (std::size_t i = 0; i < names.size(); ++i)
    if (lower(names[i]) == wanted) return i;
  return std::nullopt;
}

const std::string& cell(const SqlRow& row, std::optional<std::size_t> col) {
  static const std::string empty;
  return col && *col < row.size() && row[*col] ? *row[*col] : empty;
}
bool null_cell(const SqlRow& row, std::optional<std::size_t> col) {
  return !col || *col >= row.size() || !row[*col];
}

class ExistingSchemaDirectory final : public DirectoryConnection {
 public:
  ExistingSchemaDirectory(std::unique_ptr<SqlSession> session, std::shared_ptr<const ExistingSchema> schema,
                          UserDefaults defaults)
      : s_(std::move(session)), schema_(std::move(schema)), defaults_(std::move(defaults)) {}

  Result<PassdbEntry> passdb(std::string_view login, Deadline deadline) override {
    using R = Result<PassdbEntry>;
    return per_login<R>(&DovecotSqlQueries::password_query, "password_query", login, deadline,
                        [this](const SqlRow& row, const std::vector<std::string>& names, const MailboxName& name) {
                          auto password = column(names, "password");
                          if (!password)
                            return R::temp_fail("password_query in " + schema_->dovecot->source +
                                                " returns no 'password' column");
                          PassdbEntry e;
                          e.user = user_of(row, names, name);
                          const std::string& stored = cell(row, password);
                          if (!stored.empty()) {
                            const std::string& scheme = schema_->dovecot->default_pass_scheme;
                            if (stored.front() == '{' || scheme.empty())
                              e.password = with_scheme_prefix(stored);
                            else
                              e.password = "{" + scheme + "}" + stored;
                          }
                          return R::found(std::move(e));
                        });
  }

  Result<UserdbEntry> userdb(std::string_view login, Deadline deadline) override {
    using R = Result<UserdbEntry>;
    return per_login<R>(&DovecotSqlQueries::user_query, "user_query", login, deadline,
                        [this](const SqlRow& row, const std::vector<std::string>& names, const MailboxName& name) {
                          return R::found(entry_from(row, names, name));
                        });
  }

  Result<std::vector<UserdbEntry>> users(Deadline deadline) override {
    using R = Result<std::vector<UserdbEntry>>;
    const TemplatedQuery* q = dovecot_query(&DovecotSqlQueries::iterate_query);
    if (!q) return R::temp_fail(missing("iterate_query"));
    if (!q->params.empty()) return R::temp_fail("iterate_query in " + schema_->dovecot->source + " must not use %u, %n or %d");
    SqlRows rows;
    std::vector<std::string> names;
    if (auto failed = run(*q, MailboxName{}, deadline, rows, names)) return *failed ? R::temp_fail(error_) : R::found({});
    auto user = column(names, "user");
    auto username = column(names, "username");
    auto domain = column(names, "domain");
    if (!user && !(username && domain))
      return R::temp_fail("iterate_query in " + schema_->dovecot->source +
                          " must return a 'user' column, or 'username' and 'domain'");
    std::vector<UserdbEntry> out;
    for (const auto& row : rows) {
      std::string text = user ? cell(row, user) : cell(row, username) + "@" + cell(row, domain);
      auto name = split_login(text);
      if (!name) continue;  // not a user Dovecot could log in as
      SqlRow none;
      out.push_back(entry_from(none, {}, *name));
    }
    return R::found(std::move(out));
  }

  std::optional<Result<std::vector<std::vector<std::string>>>> smtpd_table_rows(std::string_view service,
                                                                               std::string_view key,
                                                                               Deadline deadline) override {
    using R = Result<std::vector<std::vector<std::string>>>;
    if (!schema_->smtpd) return std::nullopt;
    const SmtpdTableQueries& t = *schema_->smtpd;
    const bool fetch = service == "source" && key.empty();
    const std::string* sql = nullptr;
    bool mailaddr_by_alias = false;
    if (fetch) {
      if (t.fetch_source.empty()) return R::temp_fail("no fetch_source in " + t.source);
      sql = &t.fetch_source;
    } else {
      auto it = t.queries.find(std::string(service));
      // maildict's smtpd.conf checks recipients with `rcpt-to <recipients>` (a mailaddr check);
      // a table-sqlite setup seldom has query_mailaddr, so an address is taken to be in the
      // table when query_alias resolves it (the value of a check is not used).
      mailaddr_by_alias = it == t.queries.end() && service == "mailaddr";
      if (mailaddr_by_alias) it = t.queries.find("alias");
      if (it == t.queries.end()) return R::temp_fail("no query_" + std::string(service) + " in " + t.source);
      sql = &it->second;
    }
    s_->set_deadline(deadline);
    SqlRows rows;
    SqlValue k{std::string(key)};
    std::span<const SqlValue> params = fetch ? std::span<const SqlValue>() : std::span<const SqlValue>(&k, 1);
    if (!s_->run(*sql, params, &rows, error)) {
      if (error.kind == SqlError::Kind::invalid_input) return R::not_found();
      return R::temp_fail(error.message);
    }
    std::vector<std::vector<std::string>> out;
    out.reserve(rows.size());
    for (auto& row : rows) {
      std::vector<std::string> cells;
      for (auto& c : row) cells.push_back(c ? std::move(*c) : std::string());
      out.push_back(std::move(cells));
    }
    if (fetch) {
      // table-sqlite keeps the fetched list in a string-keyed tree: sorted, without repeats.
      std::set<std::string> unique;
      for (auto& r : out)
        if (!r.empty()) unique.insert(r[0]);
      out.clear();
      for (const auto& v : unique) out.push_back({v});
    }
    if (out.empty()) return R::not_found();
    if (mailaddr_by_alias) out = {{std::string(key)}};
    return R::found(std::move(out));
  }

  bool healthy() const override { return s_->healthy(); }

 private:
  // Runs one of Dovecot's per-login queries and hands its first row to `make`.
  template <class R, class Make>
  R per_login(std::optional<TemplatedQuery> DovecotSqlQueries::*which, const char* what, std::string_view login,
              Deadline deadline, Make&& make) {
    const TemplatedQuery* q = dovecot_query(which);
    if (!q) return R::temp_fail(missing(what));
    auto name = split_login(login);
    if (!name) return R::not_found();
    SqlRows rows;
    std::vector<std::string> names;
    if (auto failed = run(*q, *name, deadline, rows, names)) return *failed ? R::temp_fail(error_) : R::not_found();
    if (rows.empty()) return R::not_found();
    return make(rows[0], names, *name);
  }

  const TemplatedQuery* dovecot_query(std::optional<TemplatedQuery> DovecotSqlQueries::*which) const {
    if (!schema_->dovecot) return nullptr;
    const auto& q = (*schema_->dovecot).*which;
    return q ? &*q : nullptr;
  }

  std::string missing(const char* what) const {
    if (!schema_->dovecot) return std::string("no dovecot_sql_config: the ") + what + " for Dovecot is not configured";
    return std::string("no ") + what + " in " + schema_->dovecot->source;
  }

  // nullopt: ran. true: failed (error_ says why). false: the value cannot exist (no row).
  std::optional<bool> run(const TemplatedQuery& q, const MailboxName& name, Deadline deadline, SqlRows& rows,
                          std::vector<std::string>& names) {
    std::vector<SqlValue> params;
    params.reserve(q.params.size());
    for (auto p : q.params) {
      switch (p) {
        case LoginPart::user: params.emplace_back(name.canonical()); break;
        case LoginPart::local_part: params.emplace_back(name.local_part); break;
        case LoginPart::domain: params.emplace_back(name.domain); break;
      }
    }
    s_->set_deadline(deadline);
    if (s_->run_named(q.sql, params, rows, names, error)) return std::nullopt;
    if (error.kind == SqlError::Kind::invalid_input) return false;
    error_ = error.message;
    return true;
  }

  std::string user_of(const SqlRow& row, const std::vector<std::string>& names, const MailboxName& name) const {
    auto user = column(names, "user");
    if (user && !null_cell(row, user)) return lower(cell(row, user));
    return name.canonical();
  }

  // Dovecot's userdb fields by name; whatever the query leaves out takes maildict's defaults.
  UserdbEntry entry_from(const SqlRow& row, const std::vector<std::string>& names, const MailboxName& name) const {
    UserdbEntry e;
    e.user = name.canonical();
    auto pick = [&](std::string_view field, const std::string& fallback) {
      auto col = column(names, field);
      return null_cell(row, col) ? fallback : cell(row, col);
    };
    e.uid = pick("uid", defaults_.uid);
    e.gid = pick("gid", defaults_.gid);
    e.home = pick("home", expand_template(defaults_.home, name));
    e.mail = pick("mail", expand_template(defaults_.mail, name));
    if (auto q = column(names, "quota_rule"); q && !null_cell(row, q)) e.quota_rule = cell(row, q);
    return e;
  }

  std::unique_ptr<SqlSession> s_;
  std::shared_ptr<const ExistingSchema> schema_;
  UserDefaults defaults_;
  SqlError error;
  std::string error_;
};

}  // namespace

std::unique_ptr<DirectoryConnection> make_existing_schema_directory(std::unique_ptr<SqlSession> session,
                                                                   std::shared_ptr<const ExistingSchema> schema,
                                                                   UserDefaults defaults) {
  return std::make_unique<ExistingSchemaDirectory>(std::move(session), std::move(schema), std::move(defaults));
}

}  // namespace maildict::storage
