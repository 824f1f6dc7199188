// The canonical bytes of a journal record and the hash chain over them (journal.hpp).
//
// Record layout, version 1 (integers unsigned big-endian; "bytes" = u32 length, then the bytes):
//   magic           4 bytes "PFJR"
//   version         1 byte  0x01
//   seq             u64
//   step            u64
//   recorded_at_ms  u64 (two's complement of the signed wall-clock milliseconds)
//   workflow_id     bytes
//   machine         bytes
//   event_type      bytes
//   event           bytes   (canonical machines::Event bytes, opaque here)
//   result_of       bytes   (idempotency key of the command this event answers, or empty)
//   state_name      bytes
//   state           bytes   (canonical machines::State bytes, opaque here)
//   status          bytes   ("running", "suspended", "done" or "cancelled")
//   commands        u32 count, then per command:
//                     index u32, idempotency_key bytes, type bytes, payload bytes
// The `commands` part is also what the records table stores in its `commands` column.
//
// hash = lowercase hex of SHA-256( raw 32 bytes of prev_hash || canonical bytes ), where
// prev_hash is the previous record's hash, or 32 zero bytes for seq 1. The same layout is
// documented in docs/journal.md; changing it is a new version byte, never an edit.
#include <openssl/evp.h>

#include <charconv>
#include <cstdint>
#include <cstring>

#include "journal_codec.hpp"
#include "persoflow/storage/journal.hpp"

namespace persoflow::storage {
namespace {

void put_u32(std::string& out, std::uint64_t v) {
  PF_CHECK(v <= 0xffffffffu, "value too large for a journal record");
  const char be[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                      static_cast<char>(v >> 8), static_cast<char>(v)};
  out.append(be, sizeof be);
}

void put_u64(std::string& out, std::uint64_t v) {
  char be[8];
  for (int i = 0; i < 8; ++i) be[i] = static_cast<char>(v >> (56 - 8 * i));
  out.append(be, sizeof be);
}

void put_bytes(std::string& out, std::string_view s) {
  put_u32(out, s.size());
  out.append(s);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

const char* to_string(WorkflowStatus status) {
  switch (status) {
    case WorkflowStatus::kRunning:
      return "running";
    case WorkflowStatus::kSuspended:
      return "suspended";
    case WorkflowStatus::kDone:
      return "done";
    case WorkflowStatus::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

Result<WorkflowStatus> parse_workflow_status(std::string_view text) {
  for (auto s : {WorkflowStatus::kRunning, WorkflowStatus::kSuspended, WorkflowStatus::kDone,
                 WorkflowStatus::kCancelled}) {
    if (text == to_string(s)) return s;
  }
  return make_status(Errc::kCorrupt, "unknown workflow status '" + std::string(text) + "'");
}

std::string idempotency_key_of(std::string_view workflow_id, std::uint64_t step,
                               std::uint32_t index) {
  std::string key(workflow_id);
  key += '/';
  key += std::to_string(step);
  key += '/';
  key += std::to_string(index);
  return key;
}

bool is_derived_key(std::string_view key, std::string_view workflow_id, std::uint64_t step,
                    std::uint32_t index) {
  // Compared in pieces: the writer checks every command of every append.
  if (!key.starts_with(workflow_id)) return false;
  key.remove_prefix(workflow_id.size());
  auto take_number = [&key](std::uint64_t expected) {
    if (key.empty() || key.front() != '/') return false;
    key.remove_prefix(1);
    char digits[24];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, expected);
    const std::string_view text(digits, static_cast<std::size_t>(end - digits));
    if (ec != std::errc() || !key.starts_with(text)) return false;
    key.remove_prefix(text.size());
    return true;
  };
  return take_number(step) && take_number(index) && key.empty();
}

void append_encoded_commands(std::string& out, const std::vector<CommandEntry>& commands) {
  put_u32(out, commands.size());
  for (const CommandEntry& c : commands) {
    put_u32(out, c.index);
    put_bytes(out, c.idempotency_key);
    put_bytes(out, c.type);
    put_bytes(out, c.payload);
  }
}

std::string encode_commands(const std::vector<CommandEntry>& commands) {
  std::string out;
  append_encoded_commands(out, commands);
  return out;
}

Result<std::vector<CommandEntry>> decode_commands(std::string_view bytes) {
  std::size_t pos = 0;
  auto u32 = [&](std::uint32_t& v) {
    if (bytes.size() - pos < 4) return false;
    v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[pos++]);
    return true;
  };
  auto str = [&](std::string& s) {
    std::uint32_t n;
    if (!u32(n) || bytes.size() - pos < n) return false;
    s.assign(bytes.substr(pos, n));
    pos += n;
    return true;
  };
  auto bad = [](const char* what) {
    return make_status(Errc::kCorrupt, std::string("malformed commands: ") + what);
  };
  std::uint32_t count;
  if (!u32(count)) return bad("truncated count");
  if (count > bytes.size() / 16) return bad("count too large");
  std::vector<CommandEntry> out(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    CommandEntry& c = out[i];
    if (!u32(c.index) || !str(c.idempotency_key) || !str(c.type) || !str(c.payload)) {
      return bad("truncated command");
    }
  }
  if (pos != bytes.size()) return bad("trailing bytes");
  return out;
}

std::size_t append_canonical_record_bytes(std::string& out, std::uint64_t seq,
                                          std::int64_t recorded_at_ms, const AppendRequest& b) {
  out.append("PFJR\x01", 5);
  put_u64(out, seq);
  put_u64(out, b.step);
  put_u64(out, static_cast<std::uint64_t>(recorded_at_ms));
  put_bytes(out, b.workflow_id);
  put_bytes(out, b.machine);
  put_bytes(out, b.event_type);
  put_bytes(out, b.event);
  put_bytes(out, b.result_of);
  put_bytes(out, b.state_name);
  put_bytes(out, b.state);
  put_bytes(out, to_string(b.status));
  const std::size_t commands_at = out.size();
  append_encoded_commands(out, b.commands);
  return commands_at;
}

std::string canonical_record_bytes(const JournalRecord& r) {
  std::string out;
  append_canonical_record_bytes(out, r.seq, r.recorded_at_ms, r.body);
  return out;
}

bool parse_hash_hex(std::string_view hex, unsigned char (&raw)[32]) {
  if (hex.size() != 64) return false;
  for (int i = 0; i < 32; ++i) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    raw[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  return true;
}

ChainHasher::ChainHasher()
    : sha256_(EVP_MD_fetch(nullptr, "SHA256", nullptr)), ctx_(EVP_MD_CTX_new()) {
  PF_CHECK(sha256_ != nullptr && ctx_ != nullptr, "SHA-256 is unavailable");
}

ChainHasher::~ChainHasher() {
  EVP_MD_CTX_free(ctx_);
  EVP_MD_free(sha256_);
}

void ChainHasher::hash(std::string_view prev_hash_hex, std::string_view canonical_bytes,
                       std::string& out) {
  // The chain feeds each hash back as the next prev: reuse its raw bytes instead of parsing hex.
  unsigned char parsed[32];
  const unsigned char* prev = last_raw_;
  if (!has_last_ || prev_hash_hex != std::string_view(last_hex_, sizeof last_hex_)) {
    PF_CHECK(parse_hash_hex(prev_hash_hex, parsed), "prev_hash must be 64 lowercase hex digits");
    prev = parsed;
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  bool ok = EVP_DigestInit_ex(ctx_, sha256_, nullptr) == 1 &&
            EVP_DigestUpdate(ctx_, prev, 32) == 1 &&
            EVP_DigestUpdate(ctx_, canonical_bytes.data(), canonical_bytes.size()) == 1 &&
            EVP_DigestFinal_ex(ctx_, md, &md_len) == 1;
  PF_CHECK(ok && md_len == 32, "SHA-256 failed");
  static constexpr char kHex[] = "0123456789abcdef";
  out.resize(64);
  for (unsigned i = 0; i < md_len; ++i) {
    out[2 * i] = kHex[md[i] >> 4];
    out[2 * i + 1] = kHex[md[i] & 0xf];
  }
  std::memcpy(last_raw_, md, sizeof last_raw_);
  std::memcpy(last_hex_, out.data(), sizeof last_hex_);
  has_last_ = true;
}

std::string chain_hash(const std::string& prev_hash_hex, const std::string& canonical_bytes) {
  // Fetching the digest is the expensive part of a one-off hash in OpenSSL 3; keep one per
  // thread (verify hashes every record).
  thread_local ChainHasher hasher;
  std::string out;
  hasher.hash(prev_hash_hex, canonical_bytes, out);
  return out;
}

}  // namespace persoflow::storage
