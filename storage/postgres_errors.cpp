#include "storage/postgres_errors.hpp"

#include <string_view>

namespace maildict::storage {

std::string first_line(const char* what) {
  std::string_view s(what ? what : "");
  auto nl = s.find('\n');
  if (nl != std::string_view::npos) s = s.substr(0, nl);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r')) s.remove_suffix(1);
  return std::string(s);
}

SqlError classify_sql_error(const char* sqlstate, const std::string& message) {
  const std::string state = sqlstate ? sqlstate : "";
  const std::string cls = state.substr(0, 2);
  if (state == "57014") return {SqlError::Kind::transient, "deadline passed during the query (statement_timeout)"};
  if (cls == "23") return {SqlError::Kind::constraint, message};
  // Data exceptions: a value the column cannot hold (invalid UTF-8, too long, not a number).
  if (cls == "22") return {SqlError::Kind::invalid_input, "value not accepted by the database (" + state + ")"};
  // Syntax, undefined table or column, insufficient privilege, feature not supported,
  // read-only transaction (a write sent to a replica).
  if (cls == "42" || cls == "0A" || state == "25006") return {SqlError::Kind::permanent, message};
  // Connection trouble, shutdown, out of resources, serialization and lock failures: later.
  return {SqlError::Kind::transient, "database error: " + message};
}

bool parameters_fit_libpq(std::span<const SqlValue> params, SqlError& err) {
  for (const auto& p : params) {
    if (p && p->find('\0') != std::string::npos) {
      err = {SqlError::Kind::invalid_input, "value holds a NUL byte"};
      return false;
    }
  }
  return true;
}

}  // namespace maildict::storage
