// The demo directory that the README's "run" command serves: two domains, users with known
// passwords in bcrypt and SHA512-CRYPT, an alias with two destinations, a catch-all, an alias
// domain and a disabled user, plus the few smtpd rows (relay label relay1, smtpd_values). Also
// used by the tests and (with `bulk_users`) by the benchmark.
#pragma once
#include <cstddef>
#include <string>

namespace maildict::storage {

// Fills an empty (or new) SQLite database at `path` with the demo rows. With bulk_users > 0,
// also adds that many users user<N>@bulk.example (sharing one precomputed hash, so creating
// 100k users stays fast). Throws std::runtime_error when the file cannot be written.
void create_demo_directory(const std::string& path, std::size_t bulk_users = 0);

class DirectoryBackend;
// The same rows in any backend (creating the schema first when the database is empty).
void create_demo_directory(DirectoryBackend& backend, std::size_t bulk_users = 0);

}  // namespace maildict::storage
