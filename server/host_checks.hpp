// Checks of the host against the configuration: do the accounts maildict.conf names exist, can
// the run-as user write the SQLite database, can smtpd's table program and Dovecot's auth
// worker connect to the socket. `maildictctl check` runs them all; `maildictd --check-config`
// runs the account checks (a configuration that names a missing account is not valid).
// Each check is one line an operator can act on: what was checked and, when it failed, the fix.
#pragma once
#include <string>
#include <vector>

#include "conf/config.hpp"

namespace maildict::server {

struct HostCheck {
  bool ok = true;
  bool daemon_down = false;  // failed only because maildictd does not answer on its socket
  std::string line;
};

// user, socket_owner, socket_group, default_uid, default_gid: every name must resolve
// (numbers need no account; empty settings are not checked).
std::vector<HostCheck> check_accounts(const conf::Config& c);

// For --check-config: prints each failed account check to stderr ("<source>: <line>");
// false when any failed.
bool report_account_problems(const conf::Config& c);

// Who connects to the socket, as the daemons do it.
struct SocketClient {
  std::string label;          // "smtpd's tables", "Dovecot's auth worker"
  std::string user;           // the account the daemon runs it as
  bool primary_group_only;    // smtpd: no supplementary groups; else initgroups()
};

// Every check: the accounts, the database (SQLite: readable and writable by the run-as user,
// its directory too), and the socket connected to as each client.
std::vector<HostCheck> check_host(const conf::Config& c, const std::vector<SocketClient>& clients);

// smtpd's table programs (Debian: user opensmtpd) and Dovecot 2.3's auth worker (root).
std::vector<SocketClient> default_socket_clients();

}  // namespace maildict::server
