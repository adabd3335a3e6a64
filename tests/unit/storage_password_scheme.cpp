#include <crypt.h>
#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

#include "storage/password_scheme.hpp"

using maildict::storage::hash_password;
using maildict::storage::with_scheme_prefix;

namespace {

bool verifies(const std::string& password, const std::string& hash) {
  crypt_data data{};
  const char* out = crypt_r(password.c_str(), hash.c_str(), &data);
  return out != nullptr && hash == out;
}

}  // namespace

TEST_CASE("with_scheme_prefix: each known hash prefix") {
  CHECK(with_scheme_prefix("$2a$10$abc") == "{BLF-CRYPT}$2a$10$abc");
  CHECK(with_scheme_prefix("$2b$10$abc") == "{BLF-CRYPT}$2b$10$abc");
  CHECK(with_scheme_prefix("$2y$10$abc") == "{BLF-CRYPT}$2y$10$abc");
  CHECK(with_scheme_prefix("$6$salt$hash") == "{SHA512-CRYPT}$6$salt$hash");
  CHECK(with_scheme_prefix("$6$rounds=9000$salt$hash") == "{SHA512-CRYPT}$6$rounds=9000$salt$hash");
  CHECK(with_scheme_prefix("$5$salt$hash") == "{SHA256-CRYPT}$5$salt$hash");
  CHECK(with_scheme_prefix("$argon2id$v=19$m=65536") == "{ARGON2ID}$argon2id$v=19$m=65536");
  CHECK(with_scheme_prefix("$argon2i$v=19$m=65536") == "{ARGON2I}$argon2i$v=19$m=65536");
  // Everything else is left to libc crypt(), which understands yescrypt, MD5-crypt, DES...
  CHECK(with_scheme_prefix("$y$j9T$salt$hash") == "{CRYPT}$y$j9T$salt$hash");
  CHECK(with_scheme_prefix("$1$salt$hash") == "{CRYPT}$1$salt$hash");
  CHECK(with_scheme_prefix("abJnggxhB/yWI") == "{CRYPT}abJnggxhB/yWI");
  // Near misses must not be mistaken for bcrypt/sha512.
  CHECK(with_scheme_prefix("$2x$10$abc") == "{CRYPT}$2x$10$abc");
  CHECK(with_scheme_prefix("$66$abc") == "{CRYPT}$66$abc");
}

TEST_CASE("with_scheme_prefix: an existing {SCHEME} is kept") {
  CHECK(with_scheme_prefix("{PLAIN}secret") == "{PLAIN}secret");
  CHECK(with_scheme_prefix("{BLF-CRYPT}$2y$10$abc") == "{BLF-CRYPT}$2y$10$abc");
  CHECK(with_scheme_prefix("{SHA512-CRYPT}$6$x$y") == "{SHA512-CRYPT}$6$x$y");
  // Dovecot needs a closing brace to see a scheme; without one the whole value is the hash.
  CHECK(with_scheme_prefix("{PLAIN") == "{CRYPT}{PLAIN");
}

TEST_CASE("hash_password: bcrypt $2b$ cost 10 verifies with crypt()") {
  auto h = hash_password("john-secret", "bcrypt");
  CHECK(h.rfind("$2b$10$", 0) == 0);
  CHECK(h.size() == 60);
  CHECK(verifies("john-secret", h));
  CHECK_FALSE(verifies("john-secret2", h));
  CHECK_FALSE(verifies("", h));
}

TEST_CASE("hash_password: bcrypt-2y produces $2y$") {
  auto h = hash_password("doe-secret", "bcrypt-2y");
  CHECK(h.rfind("$2y$10$", 0) == 0);
  CHECK(verifies("doe-secret", h));
  CHECK_FALSE(verifies("doe-secreT", h));
}

TEST_CASE("hash_password: sha512-crypt $6$ with default rounds") {
  auto h = hash_password("jane-secret", "sha512-crypt");
  CHECK(h.rfind("$6$", 0) == 0);
  CHECK(h.find("rounds=") == std::string::npos);
  CHECK(verifies("jane-secret", h));
  CHECK_FALSE(verifies("jane-secret ", h));
}

TEST_CASE("hash_password: salts are random") {
  CHECK(hash_password("same", "sha512-crypt") != hash_password("same", "sha512-crypt"));
}

TEST_CASE("hash_password: refuses what it cannot do safely") {
  CHECK_THROWS_AS(hash_password("x", "md5"), std::runtime_error);
  CHECK_THROWS_AS(hash_password(std::string("ab\0cd", 5), "sha512-crypt"), std::runtime_error);
}

TEST_CASE("hash_password: an explicit cost is used and checked") {
  auto b = hash_password("cost-secret", "bcrypt", 4);
  CHECK(b.rfind("$2b$04$", 0) == 0);
  CHECK(verifies("cost-secret", b));
  auto s = hash_password("cost-secret", "sha512-crypt", 6000);
  CHECK(s.rfind("$6$rounds=6000$", 0) == 0);
  CHECK(verifies("cost-secret", s));
  auto y = hash_password("cost-secret", "yescrypt", 3);
  CHECK(y.rfind("$y$", 0) == 0);
  CHECK(verifies("cost-secret", y));
  CHECK_FALSE(verifies("cost-secreT", y));
  // 0 is the scheme's default, exactly as without a cost
  CHECK(hash_password("x", "bcrypt", 0).rfind("$2b$10$", 0) == 0);
  CHECK_THROWS_AS(hash_password("x", "bcrypt", 3), std::invalid_argument);
  CHECK_THROWS_AS(hash_password("x", "bcrypt", 32), std::invalid_argument);
  CHECK_THROWS_AS(hash_password("x", "sha512-crypt", 999), std::invalid_argument);
  CHECK_THROWS_AS(hash_password("x", "yescrypt", 12), std::invalid_argument);
}

TEST_CASE("cost_range and the bcrypt 72-byte limit") {
  using maildict::storage::cost_range;
  REQUIRE(cost_range("BCRYPT"));
  CHECK(cost_range("bcrypt")->min == 4);
  CHECK(cost_range("yescrypt")->max == 11);
  CHECK_FALSE(cost_range("md5"));
  CHECK(maildict::storage::scheme_truncates_at_72_bytes("bcrypt"));
  CHECK_FALSE(maildict::storage::scheme_truncates_at_72_bytes("yescrypt"));
}
