#include "server/host_checks.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>

namespace maildict::server {

namespace {

struct Account {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};

bool all_digits(const std::string& s) {
  if (s.empty() || s.size() > 10) return false;
  for (char ch : s)
    if (ch < '0' || ch > '9') return false;
  return true;
}

std::optional<Account> find_user(const std::string& name) {
  struct passwd pw, *found = nullptr;
  std::vector<char> buf(16384);
  if (::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || !found) return std::nullopt;
  return Account{found->pw_name, found->pw_uid, found->pw_gid};
}

std::optional<Account> find_uid(uid_t uid) {
  struct passwd pw, *found = nullptr;
  std::vector<char> buf(16384);
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || !found) return std::nullopt;
  return Account{found->pw_name, found->pw_uid, found->pw_gid};
}

std::optional<gid_t> find_group(const std::string& name) {
  struct group gr, *found = nullptr;
  std::vector<char> buf(16384);
  if (::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found) != 0 || !found) return std::nullopt;
  return found->gr_gid;
}

std::string group_name(gid_t gid) {
  struct group gr, *found = nullptr;
  std::vector<char> buf(16384);
  if (::getgrgid_r(gid, &gr, buf.data(), buf.size(), &found) != 0 || !found) return std::to_string(gid);
  return found->gr_name;
}

HostCheck pass(std::string line) { return HostCheck{true, false, std::move(line)}; }
HostCheck failure(std::string line, bool daemon_down = false) { return HostCheck{false, daemon_down, std::move(line)}; }

// Runs `probe` (which returns 0 or an errno) with the identity of `who`, as the daemon that
// uses it would have it: in a child process that switches groups and user (root only), or
// directly when we already are that user. nullopt: we cannot take that identity.
std::optional<int> as_account(const Account& who, bool primary_group_only, const std::function<int()>& probe) {
  if (::geteuid() == who.uid && ::getegid() == who.gid) return probe();
  if (::geteuid() != 0) return std::nullopt;
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return errno;
  if (pid == 0) {
    // smtpd gives its table programs their primary group only; a daemon started by systemd
    // or Dovecot's master gets the supplementary groups of its account.
    const int groups_set = primary_group_only ? ::setgroups(1, &who.gid) : ::initgroups(who.name.c_str(), who.gid);
    if (groups_set != 0 || ::setgid(who.gid) != 0 || ::setuid(who.uid) != 0) ::_exit(255);
    ::_exit(probe() & 0xff);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return errno;
  if (!WIFEXITED(status) || WEXITSTATUS(status) == 255) return std::nullopt;  // could not switch
  return WEXITSTATUS(status);
}

int connect_errno(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return ENAMETOOLONG;
  std::memcpy(addr.sun_path, path.data(), path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int err = rc == 0 ? 0 : errno;
  ::close(fd);
  return err;
}

std::string parent_dir(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == 0 ? "/" : path.substr(0, slash);
}

HostCheck check_database(const conf::Config& c) {
  if (!c.database.starts_with("sqlite:"))
    return pass("database: PostgreSQL; the role's rights are checked when maildictd connects");
  const std::string file = conf::sqlite_path_of(c);
  const std::string dir = parent_dir(file);
  std::optional<Account> who = c.run_as_user.empty() ? find_uid(::geteuid()) : find_user(c.run_as_user);
  if (!who) return failure("database " + file + ": not checked, the run-as user does not exist (see above)");
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return failure("database directory " + dir + " does not exist: install -d -o " + who->name + " -g " +
                   group_name(who->gid) + " -m 0750 " + dir);
  const bool exists = ::stat(file.c_str(), &st) == 0;
  // SQLite writes its -wal and -shm files next to the database: the directory must be
  // writable as well as the file.
  auto result = as_account(*who, false, [&] {
    if (::access(dir.c_str(), W_OK | X_OK) != 0) return errno ? errno : EACCES;
    if (exists && ::access(file.c_str(), R_OK | W_OK) != 0) return errno ? errno : EACCES;
    return 0;
  });
  const std::string owner = who->name + ":" + group_name(who->gid);
  if (!result)
    return failure("database " + file + ": cannot check as " + who->name + " (run maildictctl check as root)");
  if (*result != 0)
    return failure("database " + file + ": " + (exists ? "" : "(not created yet) ") + "maildictd's user " + who->name +
                   " cannot write " + (exists ? "it or its directory" : "its directory") + " (" +
                   std::strerror(*result) + "); fix: chown " + owner + " " + dir + (exists ? " " + file : "") +
                   " (SQLite also writes the -wal and -shm files there)");
  return pass("database " + file + (exists ? "" : " (created at the first start)") + ": writable by " + who->name +
              ", directory too");
}

HostCheck check_socket_client(const conf::Config& c, const SocketClient& client) {
  const std::string& path = c.socket_path;
  auto who = find_user(client.user);
  if (!who)
    return pass(client.label + ": no user " + client.user + " on this host (not installed?): not checked");
  auto err = as_account(*who, client.primary_group_only, [&] { return connect_errno(path); });
  const std::string as = client.label + " (user " + who->name + ", group " + group_name(who->gid) +
                         (client.primary_group_only ? " only" : "") + ")";
  if (!err) return failure(as + ": cannot check (run maildictctl check as root)");
  if (*err == 0) return pass(as + " can connect to " + path);
  if (*err == EACCES || *err == EPERM)
    return failure(as + " may not connect to " + path + ": permission denied; fix: socket_group = " +
                   group_name(who->gid) + " and socket_mode = 0660 in " + c.source + ", then restart maildictd");
  if (*err == ENOENT || *err == ECONNREFUSED)
    return failure(as + ": " + path + ": " + std::strerror(*err) + "; is maildictd running? (start it)", true);
  return failure(as + ": connect " + path + ": " + std::strerror(*err));
}

}  // namespace

std::vector<HostCheck> check_accounts(const conf::Config& c) {
  std::vector<HostCheck> out;
  if (!c.run_as_user.empty()) {
    if (auto a = find_user(c.run_as_user))
      out.push_back(pass("user " + a->name + " exists (uid " + std::to_string(a->uid) + ", group " +
                         group_name(a->gid) + ")"));
    else
      out.push_back(failure("user: no system user '" + c.run_as_user + "'; create it: adduser --system --group "
                            "--home /var/lib/maildict --no-create-home " + c.run_as_user));
  }
  if (!c.socket_owner.empty() && !find_user(c.socket_owner))
    out.push_back(failure("socket_owner: no system user '" + c.socket_owner + "'"));
  if (!c.socket_group.empty()) {
    if (auto g = find_group(c.socket_group))
      out.push_back(pass("socket_group " + c.socket_group + " exists (gid " + std::to_string(*g) + ")"));
    else
      out.push_back(failure("socket_group: no group '" + c.socket_group + "'" +
                            (c.socket_group == "opensmtpd" ? " (OpenSMTPD is not installed): install opensmtpd first, "
                                                             "or leave socket_group empty on a host without it"
                                                           : ": create it (addgroup --system " + c.socket_group +
                                                                 ") or name an existing group")));
  }
  const std::string& uid = c.defaults.uid;
  if (!uid.empty() && !all_digits(uid)) {
    if (find_user(uid)) out.push_back(pass("default_uid " + uid + " exists"));
    else
      out.push_back(failure("default_uid: no system user '" + uid + "' (smtpd answers 451 to every delivery); "
                            "create it: adduser --system --group --home /var/vmail " + uid +
                            ", or set default_uid to a number"));
  }
  const std::string& gid = c.defaults.gid;
  if (!gid.empty() && !all_digits(gid)) {
    if (find_group(gid)) out.push_back(pass("default_gid " + gid + " exists"));
    else
      out.push_back(failure("default_gid: no system group '" + gid + "' (smtpd answers 451 to every delivery); "
                            "create it: addgroup --system " + gid + ", or set default_gid to a number"));
  }
  return out;
}

bool report_account_problems(const conf::Config& c) {
  bool ok = true;
  for (const auto& check : check_accounts(c)) {
    if (check.ok) continue;
    std::fprintf(stderr, "%s: %s\n", c.source.c_str(), check.line.c_str());
    ok = false;
  }
  return ok;
}

std::vector<SocketClient> default_socket_clients() {
  return {{"smtpd's tables", "opensmtpd", true}, {"Dovecot 2.3's auth worker", "root", false}};
}

std::vector<HostCheck> check_host(const conf::Config& c, const std::vector<SocketClient>& clients) {
  std::vector<HostCheck> out = check_accounts(c);
  out.push_back(check_database(c));
  for (const auto& client : clients) out.push_back(check_socket_client(c, client));
  return out;
}

}  // namespace maildict::server
