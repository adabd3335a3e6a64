// From typed directory results to dict values: the JSON objects Dovecot's passdb/userdb dict
// driver reads (DESIGN.md §4). Runs on pool threads; pure apart from the one storage call.
#pragma once
#include <optional>
#include <string>
#include <string_view>
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

// ---- shared/smtpd/<service>/<key> (DESIGN.md §4) ---------------------------------------------
// What table-maildict forwards and what comes back (found value / N / F), one row per service;
// keys are ASCII lower-cased here as smtpd does, values are smtpd's table(5) formats (§5.3):
//   domain/<domain>        active domain or alias domain        -> the domain
//   alias/<user@domain>    recipient resolution (DESIGN.md §3)   -> "john_example.org, jane_example.org"
//                          keys without a full address (vmail, vmail@, @dom, @) -> N
//   mailaddr/<address>     the address resolves as a recipient   -> the address
//   userinfo/<name>        active user, either spelling          -> "uid:gid:home", ids decimal
//   credentials/<login>    key holds '@', or splits at '_' into two parts: SMTP AUTH login
//                                                                -> "user@domain:crypt-hash"
//   credentials/<label>    anything else: relay_credentials.label
//                                                                -> "username:password" (clear text)
//   mailaddrmap/<login>    addresses the login may send as      -> "a@d, b@d"
//   netaddr/<address>      smtpd_values('netaddr') entry covering the address (CIDR, [v6],
//                          or the same word: local, a host name) -> the matching entry
//   addrname/<address>     smtpd_values('addrname', address)    -> host name (first row)
//   source/<key>           smtpd_values('source', key); fetch uses the empty key
//                                                                -> "a1, a2" (table-maildict cycles)
//   relayhost/<domain>     smtpd_values('relayhost', domain) (`relay domain <t>`)
//                                                                -> relay URL (first row)
//   relayhost/             smtpd_values('relayhost', '') (fetch, `relay host <t>`)
//                                                                -> "url1, url2" (cycled)
//   string/, regex/, auth/, anything else                        -> F (no data behind them)
// A value smtpd would refuse (too long, empty, NUL or line break) is F with the reason, never cut.

// smtpd's table values (specs/smtpd-tables.md §5.3). A list as smtpd's alias and mailaddrmap
// parsers read it: items joined by ", ", an item that holds a comma, quote or backslash quoted.
// nullopt when it would not fit smtpd's 2047 bytes: a cut list would lose recipients silently.
std::optional<std::string> smtpd_list(const std::vector<std::string>& items);
// Whether a netaddr entry (an address or CIDR block, IPv6 with or without brackets, or a word
// such as "local" or a host name, compared as is) covers the key smtpd sent.
bool netaddr_matches(std::string_view entry, std::string_view key);
// Whether shared/smtpd/<service>/ has data behind it (string, regex and auth do not).
bool smtpd_service_served(std::string_view service);
// The answer to shared/smtpd/<service>/<key>.
LookupAnswer answer_smtpd(storage::DirectoryConnection& conn, const dict::SmtpdQuestion& question,
                          storage::Deadline deadline);

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
