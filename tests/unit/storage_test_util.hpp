// Shared helpers for the storage unit tests: a private temp directory per test program and a
// demo directory built once (bcrypt at cost 10 is slow) and copied for each test that needs one.
#pragma once
#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>

#include "storage/demo_directory.hpp"

namespace maildict::storage::testing {

inline const std::filesystem::path& temp_dir() {
  static const std::filesystem::path dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "maildict-storage-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    return std::filesystem::path(tmpl);
  }();
  static const struct Cleanup {
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup;
  return dir;
}

inline std::string fresh_path(const std::string& stem) {
  static int counter = 0;
  return (temp_dir() / (stem + "-" + std::to_string(++counter) + ".db")).string();
}

// A private copy of the demo directory (the template is never opened by a test, so it has no
// WAL content and a plain file copy is a complete database).
inline std::string demo_copy() {
  static const std::string tmpl = [] {
    std::string p = (temp_dir() / "demo-template.db").string();
    create_demo_directory(p);
    return p;
  }();
  std::string p = fresh_path("demo");
  std::filesystem::copy_file(tmpl, p);
  return p;
}

// A plain sqlite3 handle, as another process (the admin tool, an operator's sqlite3 shell)
// would have.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK)
      throw std::runtime_error("cannot open test database");
  }
  ~RawDb() { sqlite3_close_v2(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  // Returns the sqlite result code; the tests assert on it.
  int exec(const std::string& sql) { return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr); }

  std::string text(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    std::string out;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW) {
      auto* p = sqlite3_column_text(s, 0);
      if (p) out = reinterpret_cast<const char*>(p);
    }
    sqlite3_finalize(s);
    return out;
  }

  sqlite3* get() { return db_; }

 private:
  sqlite3* db_ = nullptr;
};

}  // namespace maildict::storage::testing
