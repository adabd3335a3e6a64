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

}  // namespace maildict::storage
