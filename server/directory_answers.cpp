#include "server/directory_answers.hpp"

#include <algorithm>

#include "protocol/json_writer.hpp"

namespace maildict::server {
namespace {

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() < 19 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// uid/gid go out as JSON numbers when numeric (as Dovecot's own examples do) and as strings when
// they are system account names, which Dovecot resolves itself.
void add_id(json::FlatObjectWriter& w, std::string_view name, const std::string& id) {
  if (all_digits(id)) w.add(name, static_cast<std::int64_t>(std::stoll(id)));
  else w.add(name, id);
}

std::string failure_text(std::string_view what, const std::string& why) {
  return "maildict: " + std::string(what) + " failed: " + why;
}

}  // namespace

std::string passdb_json(const storage::PassdbEntry& entry) {
  json::FlatObjectWriter w;
  // No password means "receives mail, cannot log in": Dovecot then refuses the password
  // ("No password returned") instead of calling the user unknown.
  if (entry.password) w.add("password", *entry.password);
  w.add("user", entry.user);
  return w.finish();
}

std::string userdb_json(const storage::UserdbEntry& entry) {
  json::FlatObjectWriter w;
  w.add("user", entry.user);
  add_id(w, "uid", entry.uid);
  add_id(w, "gid", entry.gid);
  w.add("home", entry.home);
  if (!entry.mail.empty()) w.add("mail", entry.mail);
  if (entry.quota_rule) w.add("quota_rule", *entry.quota_rule);
  return w.finish();
}

LookupAnswer answer_question(storage::DirectoryConnection& conn, const dict::KeyQuestion& question,
                             const std::string& key, storage::Deadline deadline) {
  using storage::Outcome;
  if (auto* q = std::get_if<dict::PassdbQuestion>(&question)) {
    auto r = conn.passdb(q->login, deadline);
    if (r.outcome == Outcome::temp_fail) return LookupAnswer::failed(failure_text("passdb lookup", r.error));
    if (r.outcome == Outcome::not_found) return LookupAnswer::not_found();
    return LookupAnswer::found(passdb_json(r.value));
  }
  if (auto* q = std::get_if<dict::UserdbQuestion>(&question)) {
    auto r = conn.userdb(q->login, deadline);
    if (r.outcome == Outcome::temp_fail) return LookupAnswer::failed(failure_text("userdb lookup", r.error));
    if (r.outcome == Outcome::not_found) return LookupAnswer::not_found();
    return LookupAnswer::found(userdb_json(r.value));
  }
  return LookupAnswer::failed("maildict: key is not served here");
}

IterateAnswer answer_user_iteration(storage::DirectoryConnection& conn, bool with_values,
                                    std::uint64_t max_rows, storage::Deadline deadline) {
  IterateAnswer answer;
  auto r = conn.users(deadline);
  if (r.outcome == storage::Outcome::temp_fail) {
    answer.failed = true;
    answer.error = failure_text("user iteration", r.error);
    return answer;
  }
  std::size_t n = r.value.size();
  if (max_rows != 0 && max_rows < n) n = static_cast<std::size_t>(max_rows);
  answer.rows.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& user = r.value[i];
    answer.rows.emplace_back(std::string(dict::userdb_prefix) + user.user,
                             with_values ? userdb_json(user) : std::string());
  }
  return answer;
}

}  // namespace maildict::server
