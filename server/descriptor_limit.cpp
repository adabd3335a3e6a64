#include "server/descriptor_limit.hpp"

#include <sys/resource.h>

#include <algorithm>

namespace maildict::server {

DescriptorLimit raise_descriptor_limit() {
  DescriptorLimit out;
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return out;
  out.before = out.now = rl.rlim_cur;
  if (rl.rlim_cur < rl.rlim_max) {
    struct rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) out.now = raised.rlim_cur;
  }
  return out;
}

std::uint64_t reserved_descriptors(const conf::Config& config) {
  std::uint64_t pool = conf::pool_size(config);
  if (!config.database_replica.empty()) pool *= 2;
  // 64: stdio, the listeners, each I/O thread's epoll/eventfd/timerfd, the signal pipe, the
  // change listener, the policy state's own connection; 4 per pooled database connection.
  return 64 + 4 * pool;
}

std::vector<std::string> fit_connection_limits(conf::Config& config, std::uint64_t limit) {
  std::vector<std::string> notes;
  const std::uint64_t reserved = reserved_descriptors(config);
  const std::uint64_t available = limit > reserved + 16 ? limit - reserved : 16;
  const bool policy = conf::policy_enabled(config);
  std::uint64_t wanted = config.max_connections + (policy ? config.policy_max_connections : 0);
  if (wanted <= available) return notes;
  auto why = " (open-file limit " + std::to_string(limit) + ", " + std::to_string(reserved) +
             " descriptors kept for the daemon itself; raise LimitNOFILE to allow more)";
  if (policy) {
    // The policy listener keeps what it asked for up to a quarter of what there is: Dovecot
    // opens a few connections per auth process, the dict socket serves every lookup.
    std::uint64_t policy_share = std::min<std::uint64_t>(config.policy_max_connections, std::max<std::uint64_t>(available / 4, 1));
    if (policy_share < config.policy_max_connections) {
      notes.push_back("policy_max_connections lowered from " + std::to_string(config.policy_max_connections) +
                      " to " + std::to_string(policy_share) + why);
      config.policy_max_connections = static_cast<unsigned>(policy_share);
    }
  }
  std::uint64_t dict_share = available - (policy ? config.policy_max_connections : 0);
  dict_share = std::max<std::uint64_t>(dict_share, 1);
  if (dict_share < config.max_connections) {
    notes.push_back("max_connections lowered from " + std::to_string(config.max_connections) + " to " +
                    std::to_string(dict_share) + why);
    config.max_connections = static_cast<unsigned>(dict_share);
  }
  return notes;
}

}  // namespace maildict::server
