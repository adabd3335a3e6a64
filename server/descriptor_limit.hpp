// Open-file limits: maildictd needs a descriptor per client connection, and a process starts
// with a soft limit (often 1024) far below max_connections. At start the soft limit is raised
// to the hard one, and the connection limits are lowered to what the result allows, so that
// running out of descriptors shows up as refused connections, not as clients hanging in the
// listen backlog while accept() fails.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "conf/config.hpp"

namespace maildict::server {

struct DescriptorLimit {
  std::uint64_t before = 0;  // the soft limit the process started with
  std::uint64_t now = 0;     // the soft limit after raising it (the hard limit when allowed)
};

// Raises RLIMIT_NOFILE's soft limit to its hard limit.
DescriptorLimit raise_descriptor_limit();

// Descriptors kept for everything that is not a client connection: standard streams, listeners,
// event loops, the database connections (a SQLite connection holds up to three files).
std::uint64_t reserved_descriptors(const conf::Config& config);

// Lowers max_connections (and policy_max_connections when the policy listener is on) so that
// both together fit `limit`. Returns one log line per setting changed.
std::vector<std::string> fit_connection_limits(conf::Config& config, std::uint64_t limit);

}  // namespace maildict::server
