// The directory's questions (DESIGN.md §3) answered over any SqlSession: one implementation of
// the rules (two spellings, defaults, recipient resolution, sender rights) for every backend.
// Each backend supplies a session and the SQL of its dialect.
#pragma once
#include <memory>

#include "storage/directory.hpp"
#include "storage/directory_sql.hpp"
#include "storage/sql_session.hpp"

namespace maildict::storage {

std::unique_ptr<DirectoryConnection> make_sql_directory(std::unique_ptr<SqlSession> session, DirectorySql sql,
                                                        UserDefaults defaults);

}  // namespace maildict::storage
