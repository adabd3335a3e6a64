// Chooses the directory backend from the configured database URI: "sqlite:/path" (the embedded
// default) or "postgresql:<libpq conninfo>" (many mail hosts sharing one cluster).
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "storage/directory.hpp"
#include "storage/existing_schema.hpp"

namespace maildict::storage {

struct BackendOptions {
  std::string database;  // "sqlite:/path" or "postgresql:<conninfo>"
  std::string replica;   // "" or "postgresql:<conninfo>": lookups go there, changes to `database`
  UserDefaults defaults;
  QuerySetup queries;  // the operator's SQL: replaced questions, or an existing schema
  // PostgreSQL's statement_timeout for lookup connections (the request deadline).
  std::chrono::milliseconds statement_timeout{2000};
  // PostgreSQL's application_name, so an operator can tell maildict's connections apart in
  // pg_stat_activity.
  std::string application_name = "maildictd";
  // Told when the change listener (PostgreSQL) loses or regains the database: ok, message.
  std::function<void(bool, const std::string&)> on_event;
};

// The database URI for logs and --check-config, without secrets (no password=...).
std::string describe_database(const std::string& uri);

// Throws std::runtime_error for an unknown scheme or a replica without PostgreSQL. Does not
// connect: the daemon starts while the database is down and answers temporary failures.
std::unique_ptr<DirectoryBackend> open_backend(const BackendOptions& options);

}  // namespace maildict::storage
