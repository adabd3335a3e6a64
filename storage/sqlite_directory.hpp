// The SQLite backend of the directory: the embedded default. WAL mode, prepared statements,
// one sqlite3 handle per DirectoryConnection (one per pool thread), busy timeout and a
// progress handler bounded by each request's deadline.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "storage/directory.hpp"
#include "storage/directory_sql.hpp"
#include "storage/existing_schema.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace maildict::storage {

class SqliteBackend final : public DirectoryBackend {
 public:
  // `queries`: maildict's schema with the operator's replacements, or an existing schema
  // (storage/existing_schema.hpp), which is then never changed (no schema, no WAL switch).
  SqliteBackend(std::string path, UserDefaults defaults, QuerySetup queries = {});
  ~SqliteBackend() override;

  // Creates the default schema when the database is empty and turns on WAL. Throws
  // std::runtime_error naming the file when it cannot. Call once at startup; when the file
  // cannot be opened yet the daemon still starts and answers temporary failures.
  void prepare_schema() override;

  // Opens the existing file (never creates it: a missing file throws "database file missing").
  std::unique_ptr<DirectoryConnection> connect() override;
  // PRAGMA data_version on a long-lived connection of its own: moves with every commit, from
  // any process, and is read through SQLite alone (never by opening the database's files). In
  // WAL mode the PRAGMA only runs when the WAL-index header, seen through SQLite's own mapping,
  // has changed since the last one, so a cache hit costs no system call. A deleted or replaced
  // file is noticed within 250 ms.
  std::optional<std::uint64_t> data_version() override;
  std::string describe() const override;
  // The database file, -wal or -shm is readable by others (see readable_by_others()).
  std::optional<std::string> access_warning() const override;
  std::unique_ptr<SqlSession> open_session(SessionRole role) override;

 private:
  std::string path_;
  UserDefaults defaults_;
  DirectorySql sql_;
  std::shared_ptr<const ExistingSchema> existing_;
  std::mutex probe_mutex_;  // guards the probe connection used by data_version()
  sqlite3* probe_db_ = nullptr;
  sqlite3_stmt* probe_stmt_ = nullptr;
  // Which file the probe has open (st_dev/st_ino), and how many times it has been (re)opened:
  // versions are only comparable within one probe connection, so the epoch goes into the
  // number, and a file replaced under the same name is noticed (within a short interval) and
  // reopened.
  std::uint64_t probe_file_dev_ = 0;
  std::uint64_t probe_file_ino_ = 0;
  std::uint64_t probe_epoch_ = 0;
  Clock::time_point probe_next_identity_check_{};
  // SQLite's mapping of the wal-index (region 0) while the probe is open in WAL mode, and the
  // header and version of the last PRAGMA data_version (see data_version()).
  const volatile unsigned char* probe_shm_ = nullptr;
  unsigned char probe_header_[48] = {};
  bool probe_known_ = false;
  std::uint64_t probe_version_ = 0;
  void close_probe();
  bool open_probe(std::uint64_t dev, std::uint64_t ino);
  void find_wal_index();
  bool read_wal_header(unsigned char (&out)[48]) const;
};

// The SQL that creates the default schema (DESIGN.md §3); exposed for the admin tool and tests.
const char* default_schema_sql();

}  // namespace maildict::storage
