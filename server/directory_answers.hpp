// From typed directory results to dict values: the JSON objects Dovecot's passdb/userdb dict
// driver reads (DESIGN.md §4). Runs on pool threads; pure apart from the one storage call.
#pragma once
#include <string>
#include <vector>

#include "protocol/dict_keys.hpp"
#include "storage/directory.hpp"

namespace maildict::server {

// The answer to one lookup, before it is put on the wire.
struct LookupAnswer {
  enum class Kind { found, not_found, failed };
  Kind kind = Kind::not_found;
  std::string text;  // the value when found, the error message (secret-free) when failed

  static LookupAnswer found(std::string v) { return {Kind::found, std::move(v)}; }
  static LookupAnswer not_found() { return {Kind::not_found, {}}; }
  static LookupAnswer failed(std::string why) { return {Kind::failed, std::move(why)}; }
};

std::string passdb_json(const storage::PassdbEntry& entry);
std::string userdb_json(const storage::UserdbEntry& entry);

// Asks the directory the question a key stands for. Unmapped and not-yet-served keys fail.
LookupAnswer answer_question(storage::DirectoryConnection& conn, const dict::KeyQuestion& question,
                             const std::string& key, storage::Deadline deadline);

// Iteration of shared/userdb/: one (key, value) row per active user.
struct IterateAnswer {
  bool failed = false;
  std::string error;
  std::vector<std::pair<std::string, std::string>> rows;
};
IterateAnswer answer_user_iteration(storage::DirectoryConnection& conn, bool with_values,
                                    std::uint64_t max_rows, storage::Deadline deadline);

}  // namespace maildict::server
