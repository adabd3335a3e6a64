// Password hashes as Dovecot must see them: always with a {SCHEME} prefix (specs/dovecot.md
// §2.5), so Dovecot's default_pass_scheme never matters. Pure.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace maildict::storage {

// Returns the hash with a {SCHEME} prefix. A stored value that already has one ("{...}...")
// is returned unchanged. Otherwise: $2a$/$2b$/$2y$ -> BLF-CRYPT, $6$ -> SHA512-CRYPT,
// $5$ -> SHA256-CRYPT, $argon2id$ -> ARGON2ID, $argon2i$ -> ARGON2I, any other value -> CRYPT.
std::string with_scheme_prefix(std::string_view stored_hash);

// The hash as smtpd's crypt(3) must see it (specs/smtpd-tables.md §5.3 CREDENTIALS): a crypt-family
// {SCHEME} prefix (CRYPT, BLF-CRYPT, SHA256-CRYPT, SHA512-CRYPT, MD5-CRYPT, DES-CRYPT) is removed
// and "$2y$" becomes "$2b$" (the same bcrypt). nullopt when this host's libcrypt cannot verify
// the hash (ARGON2, SSHA, PLAIN, ... or an empty value): such a user cannot log in through smtpd.
std::optional<std::string> crypt_hash_for_smtpd(std::string_view stored);

// Hashes a password with libcrypt and a random salt. scheme (case-insensitive): "bcrypt"
// ($2b$, cost 10), "bcrypt-2y" ($2y$, cost 10, as PHP writes them), "sha512-crypt" ($6$,
// default rounds), "sha256-crypt" ($5$) or "yescrypt" ($y$). Throws std::runtime_error for an
// unknown scheme, a password holding NUL, or when libcrypt refuses.
std::string hash_password(std::string_view password, std::string_view scheme);

// The same with an explicit cost; 0 takes the scheme's default (as above). The cost means what
// each scheme calls it: bcrypt's log2 rounds (4..31), SHA-crypt's rounds (1000..999999999),
// yescrypt's cost factor (1..11). Throws std::invalid_argument naming the valid range when the
// cost is out of it, and std::runtime_error as above.
std::string hash_password(std::string_view password, std::string_view scheme, unsigned long cost);

// The valid cost range of a scheme, for help texts and argument checks; nullopt for an unknown
// scheme.
struct CostRange {
  unsigned long min;
  unsigned long max;
};
std::optional<CostRange> cost_range(std::string_view scheme);

// bcrypt hashes only the first 72 bytes of a password: a longer one would quietly accept any
// password sharing that prefix. True for the bcrypt schemes.
bool scheme_truncates_at_72_bytes(std::string_view scheme);

}  // namespace maildict::storage
