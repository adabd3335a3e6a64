// The PostgreSQL backend of the directory (libpqxx): for many mail hosts sharing one cluster.
// Same default schema and answers as SQLite. Changes are seen at once through LISTEN/NOTIFY:
// triggers on the directory tables notify channel `maildict_changes`, and a listener thread
// turns each notification into a new data_version(), which invalidates the answer cache.
// With a read replica, lookups go to the replica (falling back to the primary when it cannot
// be reached) and the listener also follows the replica's replay position, so an answer read
// before the replica caught up is not kept.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "storage/directory.hpp"
#include "storage/directory_sql.hpp"
#include "storage/existing_schema.hpp"

namespace maildict::storage {

struct PostgresOptions {
  std::string conninfo;          // the primary: changes, schema, LISTEN
  std::string replica_conninfo;  // optional: lookups
  std::chrono::milliseconds statement_timeout{2000};
  std::string application_name = "maildictd";
  // Where the listener reports that it lost or regained the primary (the daemon logs it).
  std::function<void(bool ok, const std::string& message)> on_listener_event;
};

// The schema version this build creates and understands (table maildict_schema).
constexpr int kPostgresSchemaVersion = 1;

class PostgresBackend final : public DirectoryBackend {
 public:
  // `queries` as for SqliteBackend; with an existing schema nothing is created (no tables, no
  // triggers): changes are noticed by watching the primary's transaction snapshot instead of
  // NOTIFY (within 100 ms, and any write in the cluster counts as a change).
  PostgresBackend(PostgresOptions options, UserDefaults defaults, QuerySetup queries = {});
  ~PostgresBackend() override;

  // A lookup connection: the replica when configured and reachable, else the primary.
  std::unique_ptr<DirectoryConnection> connect() override;
  // Gives up at `deadline` (a hung server never finishes the handshake).
  std::unique_ptr<DirectoryConnection> connect(Deadline deadline) override;
  // The listener's change counter; nullopt while the listener is not connected, or its server
  // has not answered a ping for a second (hung, cut off), so no cached answer is trusted then.
  // Starts the listener on first use.
  std::optional<std::uint64_t> data_version() override;
  std::string describe() const override;
  // Creates the schema (tables, triggers) in an empty database, under an advisory lock so that
  // several daemons starting at once do it once; refuses a newer schema version.
  void prepare_schema() override;
  std::unique_ptr<SqlSession> open_session(SessionRole role) override;
  std::chrono::milliseconds max_reopen_interval() const override { return std::chrono::milliseconds(1000); }

 private:
  void listen_loop();
  std::unique_ptr<SqlSession> session_to(const std::string& conninfo, SessionRole role,
                                         std::chrono::milliseconds retire_after = std::chrono::milliseconds(0),
                                         Deadline connect_deadline = Deadline::max()) const;
  std::unique_ptr<SqlSession> read_session(Deadline connect_deadline);

  PostgresOptions options_;
  UserDefaults defaults_;
  DirectorySql sql_;
  std::shared_ptr<const ExistingSchema> existing_;

  std::once_flag listener_started_;
  std::thread listener_;
  std::mutex stop_mutex_;
  std::condition_variable stop_wake_;
  bool stopping_ = false;
  std::atomic<bool> listening_{false};
  std::atomic<bool> schema_ready_{false};
  std::atomic<std::uint64_t> version_{1};
  // Steady-clock time (ticks) until which the listener's connection is known to be alive.
  std::atomic<std::int64_t> alive_until_{0};
};

}  // namespace maildict::storage
