#include "server/policy_engine.hpp"

#include <algorithm>
#include <charconv>

namespace maildict::server {

using policy::Decision;
using policy::IpAddress;
using policy::IpNetwork;

std::uint64_t fingerprint(std::string_view a, std::string_view b) {
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  mix(a);
  h ^= 0xff;  // separator: ("ab","c") and ("a","bc") differ
  h *= 1099511628211ull;
  mix(b);
  return h;
}

namespace {

std::string block_key(std::string_view kind, std::string_view target) {
  std::string k(kind);
  k += '\n';
  k += target;
  return k;
}

void append_hex(std::string& out, std::uint64_t v) {
  char buf[17];
  auto [p, ec] = std::to_chars(buf, buf + 16, v, 16);
  out.append(buf, p);
}

template <class T>
bool parse_number(std::string_view s, T& v, int base = 10) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  return !s.empty() && ec == std::errc() && p == s.data() + s.size();
}

// "net|login" -> the network part of an ip_login key, or the whole of an ip key.
std::optional<IpNetwork> network_of_key(std::string_view key) {
  auto bar = key.find('|');
  return policy::parse_network(key.substr(0, bar));
}

}  // namespace

PolicyEngine::PolicyEngine(PolicySettings settings, NowFn now) : settings_(std::move(settings)), now_(std::move(now)) {}

std::int64_t PolicyEngine::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(now_().time_since_epoch()).count();
}

std::string PolicyEngine::map_key(Scope s, std::string_view key) {
  std::string k(1, static_cast<char>(s));
  k += key;
  return k;
}

std::size_t PolicyEngine::max_marks() const {
  unsigned m = std::max({settings_.ip_login_tarpit, settings_.ip_login_reject, settings_.ip_tarpit,
                         settings_.ip_reject, settings_.login_tarpit, settings_.login_reject});
  return std::clamp<std::size_t>(m + 1, 16, 1024);
}

bool PolicyEngine::allow_listed(const IpAddress& ip) const {
  for (const auto& net : settings_.allow_networks)
    if (net.contains(ip)) return true;
  return false;
}

unsigned PolicyEngine::count(const std::string& key, std::int64_t now) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return 0;
  const std::int64_t since = now - settings_.window.count();
  unsigned distinct = 0;
  std::uint64_t repeats = 0;
  for (const auto& m : it->second.marks) {
    if (m.last_ms <= since) continue;
    ++distinct;
    repeats += m.repeats;
  }
  if (settings_.repeats_per_failure) distinct += static_cast<unsigned>(repeats / settings_.repeats_per_failure);
  return distinct;
}

void PolicyEngine::erase(const std::string& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  lru_.erase(it->second.lru);
  entries_.erase(it);
  dirty_.insert(key);
}

void PolicyEngine::add_failure(const std::string& key, std::uint64_t pw, std::uint64_t peer, std::int64_t now) {
  auto [it, inserted] = entries_.try_emplace(key);
  Entry& e = it->second;
  if (inserted) {
    lru_.push_front(key);
    e.lru = lru_.begin();
  } else {
    lru_.splice(lru_.begin(), lru_, e.lru);
  }
  const std::int64_t since = now - settings_.window.count();
  std::erase_if(e.marks, [since](const Mark& m) { return m.last_ms <= since; });
  auto m = std::find_if(e.marks.begin(), e.marks.end(), [pw](const Mark& x) { return x.pw == pw; });
  if (m != e.marks.end()) {
    ++m->repeats;
    m->last_ms = now;
    m->peer = peer;
  } else {
    if (e.marks.size() >= max_marks()) {
      auto oldest = std::min_element(e.marks.begin(), e.marks.end(),
                                     [](const Mark& a, const Mark& b) { return a.last_ms < b.last_ms; });
      e.marks.erase(oldest);
    }
    e.marks.push_back(Mark{pw, peer, now, 0});
  }
  e.updated_ms = now;
  dirty_.insert(key);
  while (entries_.size() > settings_.max_entries && !lru_.empty()) {
    std::string victim = lru_.back();
    erase(victim);
    ++evictions_;
  }
}

void PolicyEngine::forget_peer(const std::string& key, std::uint64_t peer, std::int64_t now) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  auto& marks = it->second.marks;
  auto before = marks.size();
  std::erase_if(marks, [peer](const Mark& m) { return m.peer == peer; });
  if (marks.empty()) erase(key);
  else if (marks.size() != before) dirty_.insert(key);
}

const PolicyBlock* PolicyEngine::find_block(const policy::PolicyRequest& r, const std::optional<IpAddress>& ip,
                                            std::int64_t now) {
  if (blocks_.empty()) return nullptr;
  auto live = [now](const PolicyBlock& b) { return b.expires_ms == 0 || b.expires_ms > now; };
  if (!r.login.empty()) {
    auto it = blocks_.find(block_key("login", r.login));
    if (it != blocks_.end() && live(it->second)) return &it->second;
  }
  if (ip) {
    for (const auto& [k, b] : blocks_)
      if (b.network && b.network->contains(*ip) && live(b)) return &b;
  }
  return nullptr;
}

Decision PolicyEngine::decide(const policy::PolicyRequest& r) {
  std::lock_guard lock(mutex_);
  const std::int64_t now = now_ms();
  auto ip = policy::parse_ip(r.remote);
  if (find_block(r, ip, now)) return Decision::reject(settings_.reject_message);
  if (ip && allow_listed(*ip)) return Decision::allow();

  std::string net = ip ? policy::to_string(policy::aggregate(*ip)) : std::string();
  bool reject = false;
  unsigned seconds = 0;
  auto judge = [&](Scope scope, std::string_view key, unsigned tarpit_at, unsigned reject_at) {
    unsigned n = count(map_key(scope, key), now);
    if (n == 0) return;
    if (reject_at && n >= reject_at) reject = true;
    else if (tarpit_at && n >= tarpit_at) {
      std::uint64_t s = std::uint64_t(settings_.tarpit_seconds) * (1 + n - tarpit_at);
      seconds = std::max<unsigned>(seconds, static_cast<unsigned>(std::min<std::uint64_t>(s, settings_.tarpit_max_seconds)));
    }
  };
  if (ip) {
    judge(Scope::ip_login, net + "|" + r.login, settings_.ip_login_tarpit, settings_.ip_login_reject);
    judge(Scope::ip, net, settings_.ip_tarpit, settings_.ip_reject);
  }
  if (!r.login.empty()) judge(Scope::login, r.login, settings_.login_tarpit, settings_.login_reject);
  if (reject) return Decision::reject(settings_.reject_message);
  if (seconds > 0) return Decision::tarpit(static_cast<int>(seconds));
  return Decision::allow();
}

void PolicyEngine::report(const policy::PolicyRequest& r) {
  // A failure of the server itself (Dovecot 2.4's fail_type) says nothing about the client.
  if (!r.success && r.fail_type == "internal") return;
  std::lock_guard lock(mutex_);
  const std::int64_t now = now_ms();
  auto ip = policy::parse_ip(r.remote);
  if (ip && allow_listed(*ip)) return;
  std::string net = ip ? policy::to_string(policy::aggregate(*ip)) : std::string();
  const std::uint64_t login_fp = fingerprint(r.login);
  const std::uint64_t net_fp = fingerprint(net);

  if (r.success) {
    if (ip) {
      erase(map_key(Scope::ip_login, net + "|" + r.login));
      forget_peer(map_key(Scope::ip, net), login_fp, now);
    }
    if (!r.login.empty()) forget_peer(map_key(Scope::login, r.login), net_fp, now);
    return;
  }
  // Dovecot 2.4 says why a login failed. An unknown account ("account") tells something about
  // the client (it guesses or sprays names) but nothing about any login: it counts for the
  // network only, once per name, and creates no per-login or per-pair keys. So a client that
  // tries thousands of made-up names cannot push the counters of real users out of
  // max_entries, nor get a login tarpitted that does not exist.
  if (r.fail_type == "account") {
    if (ip) {
      std::uint64_t login_pw = r.pwhash ? fingerprint(r.login, *r.pwhash) : (0x8000000000000000ull | next_unique_++);
      add_failure(map_key(Scope::ip, net), login_pw, login_fp, now);
    }
    return;
  }
  // Without a pwhash, repeats cannot be told from new passwords: every failure is new.
  std::uint64_t pw = r.pwhash ? fingerprint(*r.pwhash) : (0x8000000000000000ull | next_unique_++);
  std::uint64_t login_pw = r.pwhash ? fingerprint(r.login, *r.pwhash) : pw;
  if (ip) {
    add_failure(map_key(Scope::ip_login, net + "|" + r.login), pw, 0, now);
    add_failure(map_key(Scope::ip, net), login_pw, login_fp, now);
  }
  if (!r.login.empty()) add_failure(map_key(Scope::login, r.login), pw, net_fp, now);
}

// ---- blocks ---------------------------------------------------------------------------------

void PolicyEngine::forget_network(const IpNetwork& net) {
  std::vector<std::string> doomed;
  for (const auto& [k, e] : entries_) {
    if (k[0] != static_cast<char>(Scope::ip) && k[0] != static_cast<char>(Scope::ip_login)) continue;
    auto n = network_of_key(std::string_view(k).substr(1));
    if (n && net.contains(n->base) && n->prefix >= net.prefix) doomed.push_back(k);
  }
  for (const auto& k : doomed) erase(k);
}

void PolicyEngine::forget_login(const std::string& login) {
  erase(map_key(Scope::login, login));
  std::vector<std::string> doomed;
  const std::string suffix = "|" + login;
  for (const auto& [k, e] : entries_)
    if (k[0] == static_cast<char>(Scope::ip_login) && k.ends_with(suffix)) doomed.push_back(k);
  for (const auto& k : doomed) erase(k);
  const std::uint64_t fp = fingerprint(login);
  const std::int64_t now = now_ms();
  std::vector<std::string> ip_keys;
  for (const auto& [k, e] : entries_)
    if (k[0] == static_cast<char>(Scope::ip)) ip_keys.push_back(k);
  for (const auto& k : ip_keys) forget_peer(k, fp, now);
}

bool PolicyEngine::block(const policy::BlockRequest& r, PolicyBlock* made) {
  std::lock_guard lock(mutex_);
  const std::int64_t now = now_ms();
  expire_blocks(now);
  PolicyBlock b;
  b.network = r.network;
  if (r.login) b.login = *r.login;
  b.reason = r.reason;
  b.created_ms = now;
  b.expires_ms = r.seconds ? now + r.seconds * 1000 : 0;
  std::string key = block_key(b.kind(), b.target());
  if (!blocks_.count(key) && blocks_.size() >= settings_.max_blocks) return false;
  blocks_[key] = b;
  dirty_blocks_.insert(key);
  if (made) *made = b;
  return true;
}

std::size_t PolicyEngine::marks_total() const {
  std::size_t n = 0;
  for (const auto& [k, e] : entries_) n += e.marks.size();
  return n;
}

bool PolicyEngine::unblock(const policy::BlockRequest& r, bool* counters_reset) {
  std::lock_guard lock(mutex_);
  std::string key = r.network ? block_key("ip", policy::to_string(*r.network)) : block_key("login", *r.login);
  bool removed = blocks_.erase(key) > 0;
  if (removed) dirty_blocks_.insert(key);
  const std::size_t before = counters_reset ? marks_total() : 0;
  if (r.network) forget_network(*r.network);
  else forget_login(*r.login);
  if (counters_reset) *counters_reset = marks_total() < before;
  return removed;
}

std::vector<PolicyThrottled> PolicyEngine::throttled(std::size_t limit) {
  std::lock_guard lock(mutex_);
  const std::int64_t now = now_ms();
  std::vector<PolicyThrottled> out;
  for (const auto& [key, e] : entries_) {
    PolicyThrottled t;
    unsigned tarpit_at = 0, reject_at = 0;
    switch (static_cast<Scope>(key[0])) {
      case Scope::ip: t.kind = "ip", tarpit_at = settings_.ip_tarpit, reject_at = settings_.ip_reject; break;
      case Scope::login: t.kind = "login", tarpit_at = settings_.login_tarpit, reject_at = settings_.login_reject; break;
      case Scope::ip_login:
        t.kind = "ip_login", tarpit_at = settings_.ip_login_tarpit, reject_at = settings_.ip_login_reject;
        break;
    }
    t.failures = count(key, now);
    if (t.failures == 0) continue;
    // the same thresholds and delays as decide()
    if (reject_at && t.failures >= reject_at) {
      t.reject = true;
    } else if (tarpit_at && t.failures >= tarpit_at) {
      std::uint64_t s = std::uint64_t(settings_.tarpit_seconds) * (1 + t.failures - tarpit_at);
      t.tarpit_seconds = static_cast<unsigned>(std::min<std::uint64_t>(s, settings_.tarpit_max_seconds));
    } else {
      continue;
    }
    t.target = key.substr(1);
    out.push_back(std::move(t));
  }
  std::sort(out.begin(), out.end(), [](const PolicyThrottled& a, const PolicyThrottled& b) {
    return std::tie(b.failures, a.kind, a.target) < std::tie(a.failures, b.kind, b.target);
  });
  if (out.size() > limit) out.resize(limit);
  return out;
}

void PolicyEngine::expire_blocks(std::int64_t now) {
  for (auto it = blocks_.begin(); it != blocks_.end();) {
    if (it->second.expires_ms != 0 && it->second.expires_ms <= now) {
      dirty_blocks_.insert(it->first);
      it = blocks_.erase(it);
    } else {
      ++it;
    }
  }
}

std::vector<PolicyBlock> PolicyEngine::blocks() {
  std::lock_guard lock(mutex_);
  expire_blocks(now_ms());
  std::vector<PolicyBlock> out;
  for (const auto& [k, b] : blocks_) out.push_back(b);
  std::sort(out.begin(), out.end(), [](const PolicyBlock& a, const PolicyBlock& b) {
    return std::tie(a.created_ms, a.login) < std::tie(b.created_ms, b.login);
  });
  return out;
}

// ---- persistence ----------------------------------------------------------------------------

void PolicyEngine::sweep(std::int64_t now) {
  const std::int64_t since = now - settings_.window.count();
  // The LRU list is ordered by the newest failure: everything behind the first live key is dead.
  while (!lru_.empty()) {
    auto it = entries_.find(lru_.back());
    if (it != entries_.end() && it->second.updated_ms > since) break;
    erase(std::string(lru_.back()));
  }
}

storage::PolicyChanges PolicyEngine::take_changes() {
  // Only copying happens under the lock; the text encoding (the costly part with thousands of
  // changed keys) is done after, so the I/O thread is not held up by a save.
  struct Snapshot {
    std::string key;
    bool erased = false;
    std::int64_t updated_ms = 0;
    std::vector<Mark> marks;
  };
  std::vector<Snapshot> counters;
  storage::PolicyChanges c;
  {
    std::lock_guard lock(mutex_);
    const std::int64_t now = now_ms();
    sweep(now);
    expire_blocks(now);
    counters.reserve(dirty_.size());
    for (const auto& k : dirty_) {
      auto it = entries_.find(k);
      if (it == entries_.end()) counters.push_back({k, true, 0, {}});
      else counters.push_back({k, false, it->second.updated_ms, it->second.marks});
    }
    dirty_.clear();
    for (const auto& k : dirty_blocks_) {
      auto nl = k.find('\n');
      auto it = blocks_.find(k);
      if (it == blocks_.end()) {
        c.blocks_erased.push_back({k.substr(0, nl), k.substr(nl + 1)});
        continue;
      }
      const auto& b = it->second;
      c.blocks.push_back({b.kind(), b.target(), b.reason, b.created_ms, b.expires_ms});
    }
    dirty_blocks_.clear();
  }
  for (auto& snap : counters) {
    const char* scope = snap.key[0] == 'i' ? "ip" : snap.key[0] == 'l' ? "login" : "ip_login";
    std::string key = snap.key.substr(1);
    if (snap.erased) {
      c.counters_erased.push_back({scope, std::move(key)});
      continue;
    }
    storage::PolicyCounterRow row{scope, std::move(key), snap.updated_ms, {}};
    row.data.reserve(snap.marks.size() * 48);
    for (const auto& m : snap.marks) {
      if (!row.data.empty()) row.data += ',';
      append_hex(row.data, m.pw);
      row.data += ':';
      append_hex(row.data, m.peer);
      row.data += ':' + std::to_string(m.last_ms) + ':' + std::to_string(m.repeats);
    }
    c.counters.push_back(std::move(row));
  }
  return c;
}

void PolicyEngine::restore(const storage::PolicyCounterRow& row) {
  std::lock_guard lock(mutex_);
  Scope scope;
  if (row.scope == "ip") scope = Scope::ip;
  else if (row.scope == "login") scope = Scope::login;
  else if (row.scope == "ip_login") scope = Scope::ip_login;
  else return;
  if (scope != Scope::login && !network_of_key(row.key)) return;
  if (entries_.size() >= settings_.max_entries) return;
  const std::int64_t since = now_ms() - settings_.window.count();
  Entry e;
  std::string_view data = row.data;
  while (!data.empty() && e.marks.size() < max_marks()) {
    auto comma = data.find(',');
    std::string_view item = data.substr(0, comma);
    data = comma == std::string_view::npos ? std::string_view() : data.substr(comma + 1);
    std::string_view f[4];
    for (int i = 0; i < 4; ++i) {
      auto colon = item.find(':');
      if (colon == std::string_view::npos && i < 3) return;  // malformed row: skip it whole
      f[i] = item.substr(0, colon);
      item = colon == std::string_view::npos ? std::string_view() : item.substr(colon + 1);
    }
    Mark m;
    if (!parse_number(f[0], m.pw, 16) || !parse_number(f[1], m.peer, 16) || !parse_number(f[2], m.last_ms) ||
        !parse_number(f[3], m.repeats))
      return;
    if (m.last_ms > since) e.marks.push_back(m);
  }
  if (e.marks.empty()) return;
  e.updated_ms = 0;
  for (const auto& m : e.marks) e.updated_ms = std::max(e.updated_ms, m.last_ms);
  std::string key = map_key(scope, row.key);
  if (entries_.count(key)) return;
  // Rows arrive newest first; appending keeps the LRU order.
  lru_.push_back(key);
  e.lru = std::prev(lru_.end());
  entries_.emplace(std::move(key), std::move(e));
}

void PolicyEngine::restore(const storage::PolicyBlockRow& row) {
  std::lock_guard lock(mutex_);
  if (blocks_.size() >= settings_.max_blocks) return;
  PolicyBlock b;
  if (row.kind == "ip") {
    b.network = policy::parse_network(row.target);
    if (!b.network) return;
  } else if (row.kind == "login") {
    if (row.target.empty()) return;
    b.login = row.target;
  } else {
    return;
  }
  b.reason = row.reason;
  b.created_ms = row.created_ms;
  b.expires_ms = row.expires_ms;
  if (b.expires_ms != 0 && b.expires_ms <= now_ms()) return;
  blocks_[block_key(b.kind(), b.target())] = std::move(b);
}

PolicyEngineStats PolicyEngine::stats() {
  std::lock_guard lock(mutex_);
  return {entries_.size(), blocks_.size(), evictions_};
}

}  // namespace maildict::server
