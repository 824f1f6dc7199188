// Storage-internal pieces of the journal codec (journal_codec.cpp) that the writer uses to build
// a record's bytes and hash without the copies the public functions make.
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "persoflow/storage/journal.hpp"

namespace persoflow::storage {

// Appends the canonical bytes of the record (seq, recorded_at_ms, body) to `out`, the bytes of
// canonical_record_bytes(), and returns where their command part (the `commands` column,
// append_encoded_commands) starts: it comes last.
std::size_t append_canonical_record_bytes(std::string& out, std::uint64_t seq,
                                          std::int64_t recorded_at_ms, const AppendRequest& body);
void append_encoded_commands(std::string& out, const std::vector<CommandEntry>& commands);

// 64 lowercase hex digits to 32 bytes; false on anything else.
bool parse_hash_hex(std::string_view hex, unsigned char (&raw)[32]);

// chain_hash() with the digest fetched once and one context reused: OpenSSL 3 looks the
// algorithm up in its provider store on every implicit EVP_sha256() init, which costs as much as
// hashing a record. Not thread-safe; one per thread.
class ChainHasher {
 public:
  ChainHasher();
  ~ChainHasher();
  ChainHasher(const ChainHasher&) = delete;
  ChainHasher& operator=(const ChainHasher&) = delete;
  // out = hex SHA-256(raw prev hash || canonical bytes).
  void hash(std::string_view prev_hash_hex, std::string_view canonical_bytes, std::string& out);

 private:
  EVP_MD* sha256_;
  EVP_MD_CTX* ctx_;
  // The last hash computed, as hex and raw: usually the next call's prev.
  bool has_last_ = false;
  char last_hex_[64] = {};
  unsigned char last_raw_[32] = {};
};

}  // namespace persoflow::storage
