// How both PostgreSQL sessions (libpqxx and libpq async) turn a server error into an SqlError:
// sorted by SQLSTATE into "try again" and "will not work", with only the message's first line.
#pragma once
#include <span>
#include <string>

#include "storage/sql_session.hpp"

namespace maildict::storage {

// The first line of a server message: PostgreSQL puts the offending values (a duplicate key,
// a bad input) in the DETAIL lines, which must stay out of logs. nullptr gives "".
std::string first_line(const char* what);

// The SqlError for a failed statement with this SQLSTATE (nullptr: unknown) and first-line
// message.
SqlError classify_sql_error(const char* sqlstate, const std::string& message);

// False, with an invalid_input error, when a parameter holds a NUL byte: libpq passes
// parameters as C strings, so the value would be cut short silently and could match another
// row.
bool parameters_fit_libpq(std::span<const SqlValue> params, SqlError& err);

}  // namespace maildict::storage
