#include "server/table_backend.hpp"

#include <bit>

namespace maildict::table {

using smtpd::Answer;
using smtpd::Operation;
using smtpd::Service;

std::string TableBackend::dict_key(Service service, std::string_view key) {
  std::string k = "shared/smtpd/";
  k += smtpd::service_name(service);
  k += '/';
  k += key;
  return k;
}

std::vector<std::string> TableBackend::split_list(std::string_view list) {
  std::vector<std::string> items;
  while (true) {
    const auto comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    const auto first = item.find_first_not_of(" \t");
    if (first != std::string_view::npos) {
      item = item.substr(first, item.find_last_not_of(" \t") - first + 1);
      items.emplace_back(item);
    }
    if (comma == std::string_view::npos) return items;
    list.remove_prefix(comma + 1);
  }
}

Answer TableBackend::answer(Operation op, std::optional<Service> service, std::string_view key) {
  if (op == Operation::update) return Answer::found({});
  if (!service) return Answer::temp_fail("unknown service");
  // 7.6's `auth` check carries "user:password" (lower-cased, §4.4). It is never registered,
  // and refusing it here keeps the password out of maildictd's request and of any F reason.
  if (*service == Service::auth) return Answer::temp_fail("the auth service is not served, use credentials");
  if (op != Operation::fetch) {
    if (const auto problem = smtpd::key_problem(key)) return Answer::temp_fail(std::string(*problem));
  }

  const auto reply = client_.lookup(dict_key(*service, op == Operation::fetch ? std::string_view{} : key));
  switch (reply.status) {
    case DictClient::Status::not_found: return Answer::not_found();
    case DictClient::Status::failed: return Answer::temp_fail(reply.error);
    case DictClient::Status::found: break;
  }
  if (op != Operation::fetch) return Answer::found(reply.value);

  const auto items = split_list(reply.value);
  if (items.empty()) return Answer::not_found();
  const auto slot = static_cast<std::size_t>(std::countr_zero(static_cast<std::uint32_t>(*service))) %
                    fetch_position_.size();
  const std::size_t position = fetch_position_[slot]++ % items.size();
  return Answer::found(items[position]);
}

}  // namespace maildict::table
