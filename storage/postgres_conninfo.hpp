// What both PostgreSQL sessions (libpqxx: postgres_session.cpp, libpq async:
// postgres_async_session.cpp) and the backend do with a conninfo before and right after
// connecting: the defaults that keep a connection from hanging, the settings every session
// applies, and a description of the conninfo that is safe to log.
#pragma once
#include <chrono>
#include <string>
#include <string_view>

namespace maildict::storage {

// The conninfo with connect_timeout=2 added unless it sets one (libpq would wait as long as the
// network does), TCP keepalives and tcp_user_timeout=10000 (a dead network path is noticed in
// about 10 s) unless it sets them, and application_name unless it sets one.
std::string with_connect_timeout(const std::string& conninfo, std::string_view application_name = {});

// The connect_timeout a conninfo sets (with_connect_timeout always sets one; 2 s if none), as
// libpq applies it: at least 2 s, and 0 means "wait for ever", returned as a year.
std::chrono::seconds connect_timeout_of(const std::string& conninfo);

// Run once on every new connection with $1 = application_name and $2 = statement_timeout in
// milliseconds: the server-side bound means a statement the client gave up on does not run on.
inline constexpr char kSessionSettingsSql[] =
    "SELECT set_config('application_name', $1, false), set_config('statement_timeout', $2, false)";

// The conninfo without secrets, for logs: "host=/run/postgresql dbname=maildict user=maildict".
std::string describe_conninfo(const std::string& conninfo);

}  // namespace maildict::storage
