// A PostgreSQL read session (lookups) on libpq's asynchronous interface, so that every
// statement keeps the request's deadline by itself: send, then poll() the socket until the
// deadline, never a blocking call. libpqxx (storage/postgres_session.cpp, kept for changes and
// the listener) has no asynchronous call, and a pool thread blocked in it on a hung server held
// every request queued behind it past its deadline.
#pragma once
#include <memory>

#include "storage/postgres_session.hpp"

namespace maildict::storage {

// Connects at once (bounded by connect_timeout). Throws std::runtime_error (message free of
// passwords) when it cannot. The session only reads: begin(write) is refused.
std::unique_ptr<SqlSession> open_postgres_read_session(const PostgresSessionOptions& options);

}  // namespace maildict::storage
