// What table-maildict answers for one smtpd request, whichever protocol carried it: one dict
// lookup `shared/smtpd/<service>/<key>` to maildictd (DESIGN.md §4) and its outcome. No
// protocol bytes and no sockets of its own: the DictClient does the talking.
#pragma once
#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/smtpd_service.hpp"
#include "server/dict_client.hpp"

namespace maildict::table {

class TableBackend {
 public:
  explicit TableBackend(DictClient& client) : client_(client) {}

  // check: a lookup whose value is dropped (the protocol encoders never send it).
  // lookup: the value as maildictd has it in smtpd's format for the service.
  // fetch: smtpd wants one item per call and expects successive calls to go round the list
  //   (source addresses). maildictd answers `shared/smtpd/<service>/` with the whole
  //   comma-separated list; each fetch asks afresh (so changes show at once) and hands out the
  //   next item, wrapping. An empty list is "not found", as smtpd expects.
  // update is not a lookup: the caller answers it.
  smtpd::Answer answer(smtpd::Operation op, std::optional<smtpd::Service> service, std::string_view key);

  // The dict key for a lookup; fetch uses the key "" (the list).
  static std::string dict_key(smtpd::Service service, std::string_view key);
  // Splits a fetched list at commas, dropping surrounding blanks and empty items.
  static std::vector<std::string> split_list(std::string_view list);

 private:
  DictClient& client_;
  std::array<std::size_t, 16> fetch_position_{};  // per service bit
};

}  // namespace maildict::table
