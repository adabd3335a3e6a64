// Serving an operator's existing database unchanged: instead of maildict's schema, the
// questions are answered by the operator's own queries, as found in the files the mail daemons
// already use (issue 6, DESIGN.md §3 last paragraph):
//   * a Dovecot dovecot-sql.conf.ext: password_query, user_query, iterate_query, with Dovecot's
//     %u / %n / %d variables turned into query parameters (never spliced into the SQL);
//   * an OpenSMTPD table-sqlite / table-postgres file: query_<service> lines, the lower-cased
//     key bound as parameter 1, rows read as those tables read them (specs/smtpd-tables.md §6).
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "storage/directory.hpp"
#include "storage/sql_session.hpp"

namespace maildict::storage {

// What a Dovecot variable stands for; every one is taken from the login after it is split
// (either spelling) and lower-cased, so "john_example.org" and "John@Example.org" agree.
enum class LoginPart { user, local_part, domain };

// A Dovecot query with its variables replaced by $1..$n; params[i] feeds $(i+1).
struct TemplatedQuery {
  std::string sql;
  std::vector<LoginPart> params;
};

// Turns Dovecot's query text into a parameterised one. A variable inside a quoted literal
// becomes a concatenation ('%n@%d' -> ($1 || '@' || $2)), a bare one a parameter. Supported:
// %u %n %d (and their %L lower-case forms), %{user} %{username} %{domain}, %%. Throws
// std::invalid_argument naming any other variable (maildict cannot supply %r, %s, ...).
TemplatedQuery translate_dovecot_query(std::string_view text);

struct DovecotSqlQueries {
  std::string source;  // the file, for messages
  std::optional<TemplatedQuery> password_query;
  std::optional<TemplatedQuery> user_query;
  std::optional<TemplatedQuery> iterate_query;
  // The scheme of stored passwords without a {SCHEME} prefix; empty: recognised from the
  // value ($2b$ bcrypt, $6$ SHA512-CRYPT, ...).
  std::string default_pass_scheme;
};

struct SmtpdTableQueries {
  std::string source;
  std::map<std::string, std::string> queries;  // service (alias, domain, ...) -> SQL, key = parameter 1
  std::string fetch_source;                    // no parameter: the source list for fetch
};

struct ExistingSchema {
  std::optional<DovecotSqlQueries> dovecot;
  std::optional<SmtpdTableQueries> smtpd;
};

// The directory over an existing schema. Questions without a query fail temporarily with a
// message naming the missing line (as table-sqlite does), never "not found". One addition to
// table-sqlite's behaviour: without query_mailaddr, a mailaddr check (maildict's smtpd.conf
// uses `rcpt-to <recipients>`) is answered by query_alias.
std::unique_ptr<DirectoryConnection> make_existing_schema_directory(std::unique_ptr<SqlSession> session,
                                                                   std::shared_ptr<const ExistingSchema> schema,
                                                                   UserDefaults defaults);

// How the backends build their connections: maildict's schema (with any `sql_<question>`
// replacements), or an existing schema served through the operator's files.
struct QuerySetup {
  std::map<std::string, std::string> sql_overrides;
  std::shared_ptr<const ExistingSchema> existing;
};

}  // namespace maildict::storage
