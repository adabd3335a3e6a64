#include "storage/password_scheme.hpp"

#include <crypt.h>
#include <string.h>

#include <memory>
#include <stdexcept>

namespace maildict::storage {

namespace {

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

struct SchemeSetting {
  const char* prefix;
  unsigned long count;  // 0 lets libxcrypt pick its default cost
};

SchemeSetting setting_for(std::string_view scheme) {
  if (iequals(scheme, "bcrypt")) return {"$2b$", 10};
  // $2y$ is what PHP and many existing directories store; the demo data needs one to prove
  // such rows keep working.
  if (iequals(scheme, "bcrypt-2y")) return {"$2y$", 10};
  if (iequals(scheme, "sha512-crypt")) return {"$6$", 0};
  if (iequals(scheme, "sha256-crypt")) return {"$5$", 0};
  if (iequals(scheme, "yescrypt")) return {"$y$", 0};
  throw std::runtime_error("unknown password scheme (use bcrypt, sha512-crypt, sha256-crypt or yescrypt)");
}

}  // namespace

std::string with_scheme_prefix(std::string_view stored) {
  // Same test Dovecot applies to a password field: '{' first and a '}' somewhere after it.
  if (starts_with(stored, "{") && stored.find('}') != std::string_view::npos) return std::string(stored);

  const char* scheme = "CRYPT";
  if (starts_with(stored, "$2a$") || starts_with(stored, "$2b$") || starts_with(stored, "$2y$"))
    scheme = "BLF-CRYPT";
  else if (starts_with(stored, "$6$"))
    scheme = "SHA512-CRYPT";
  else if (starts_with(stored, "$5$"))
    scheme = "SHA256-CRYPT";
  else if (starts_with(stored, "$argon2id$"))
    scheme = "ARGON2ID";
  else if (starts_with(stored, "$argon2i$"))
    scheme = "ARGON2I";

  std::string out;
  out.reserve(stored.size() + 16);
  out += '{';
  out += scheme;
  out += '}';
  out += stored;
  return out;
}

std::optional<std::string> crypt_hash_for_smtpd(std::string_view stored) {
  std::string_view hash = stored;
  if (starts_with(hash, "{")) {
    auto close = hash.find('}');
    if (close == std::string_view::npos) return std::nullopt;
    auto scheme = hash.substr(1, close - 1);
    bool crypt_family = false;
    for (std::string_view s : {"crypt", "blf-crypt", "sha256-crypt", "sha512-crypt", "md5-crypt", "des-crypt"})
      crypt_family = crypt_family || iequals(scheme, s);
    if (!crypt_family) return std::nullopt;
    hash = hash.substr(close + 1);
  }
  if (hash.empty() || hash.find('\0') != std::string_view::npos) return std::nullopt;
  std::string out(hash);
  // libxcrypt computes $2y$ exactly as $2b$; smtpd's issue asks for the canonical spelling.
  if (starts_with(out, "$2y$")) out[2] = 'b';
  // Asks this host's libcrypt, the one smtpd's crypt_checkpass uses, rather than a list of our
  // own that could disagree with it (yescrypt, scrypt, legacy DES...).
  int check = crypt_checksalt(out.c_str());
  if (check != CRYPT_SALT_OK && check != CRYPT_SALT_METHOD_LEGACY && check != CRYPT_SALT_TOO_CHEAP)
    return std::nullopt;
  return out;
}

std::optional<CostRange> cost_range(std::string_view scheme) {
  if (iequals(scheme, "bcrypt") || iequals(scheme, "bcrypt-2y")) return CostRange{4, 31};
  // libxcrypt clamps SHA-crypt rounds into this range itself; refusing outside it keeps the
  // stored hash saying what the operator asked for.
  if (iequals(scheme, "sha512-crypt") || iequals(scheme, "sha256-crypt")) return CostRange{1000, 999999999};
  if (iequals(scheme, "yescrypt")) return CostRange{1, 11};
  return std::nullopt;
}

bool scheme_truncates_at_72_bytes(std::string_view scheme) {
  return iequals(scheme, "bcrypt") || iequals(scheme, "bcrypt-2y");
}

std::string hash_password(std::string_view password, std::string_view scheme) {
  return hash_password(password, scheme, 0);
}

std::string hash_password(std::string_view password, std::string_view scheme, unsigned long cost) {
  // crypt() takes a C string: an embedded NUL would silently hash a shorter password.
  if (password.find('\0') != std::string_view::npos)
    throw std::runtime_error("password contains a NUL byte");
  SchemeSetting s = setting_for(scheme);
  if (cost != 0) {
    auto range = cost_range(scheme);
    if (!range || cost < range->min || cost > range->max)
      throw std::invalid_argument("cost " + std::to_string(cost) + " is out of range for " + std::string(scheme) +
                                  (range ? " (" + std::to_string(range->min) + ".." + std::to_string(range->max) + ")"
                                         : std::string()));
    s.count = cost;
  }

  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  // NULL random bytes: libxcrypt draws the salt from the OS random source itself.
  if (crypt_gensalt_rn(s.prefix, s.count, nullptr, 0, salt, sizeof salt) == nullptr)
    throw std::runtime_error("libcrypt cannot generate a salt for this scheme");

  // struct crypt_data is ~32 KiB: too big for a pool thread's stack to take lightly.
  auto data = std::make_unique<crypt_data>();
  std::string phrase(password);
  const char* hashed = crypt_rn(phrase.c_str(), salt, data.get(), sizeof *data);
  std::string result;
  bool ok = hashed != nullptr && hashed[0] != '*';
  if (ok) result = hashed;
  // The work area holds password-derived state; do not leave it in freed heap memory.
  explicit_bzero(data.get(), sizeof *data);
  explicit_bzero(phrase.data(), phrase.size());
  if (!ok) throw std::runtime_error("libcrypt refused to hash the password");
  return result;
}

}  // namespace maildict::storage
