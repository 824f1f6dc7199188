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

#include <cstdint>

#include "persoflow/storage/journal.hpp"

namespace persoflow::storage {
namespace {

void put_u32(std::string& out, std::uint64_t v) {
  PF_CHECK(v <= 0xffffffffu, "value too large for a journal record");
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xff);
}

void put_u64(std::string& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xff);
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

std::string encode_commands(const std::vector<CommandEntry>& commands) {
  std::string out;
  put_u32(out, commands.size());
  for (const CommandEntry& c : commands) {
    put_u32(out, c.index);
    put_bytes(out, c.idempotency_key);
    put_bytes(out, c.type);
    put_bytes(out, c.payload);
  }
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

std::string canonical_record_bytes(const JournalRecord& r) {
  const AppendRequest& b = r.body;
  std::string out = "PFJR";
  out += '\x01';
  put_u64(out, r.seq);
  put_u64(out, b.step);
  put_u64(out, static_cast<std::uint64_t>(r.recorded_at_ms));
  put_bytes(out, b.workflow_id);
  put_bytes(out, b.machine);
  put_bytes(out, b.event_type);
  put_bytes(out, b.event);
  put_bytes(out, b.result_of);
  put_bytes(out, b.state_name);
  put_bytes(out, b.state);
  put_bytes(out, to_string(b.status));
  out += encode_commands(b.commands);
  return out;
}

std::string chain_hash(const std::string& prev_hash_hex, const std::string& canonical_bytes) {
  PF_CHECK(prev_hash_hex.size() == 64, "prev_hash must be 64 hex digits");
  unsigned char prev[32];
  for (int i = 0; i < 32; ++i) {
    int hi = hex_value(prev_hash_hex[2 * i]), lo = hex_value(prev_hash_hex[2 * i + 1]);
    PF_CHECK(hi >= 0 && lo >= 0, "prev_hash must be lowercase hex");
    prev[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  PF_CHECK(ctx != nullptr, "EVP_MD_CTX_new failed");
  bool ok = EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1 &&
            EVP_DigestUpdate(ctx, prev, sizeof prev) == 1 &&
            EVP_DigestUpdate(ctx, canonical_bytes.data(), canonical_bytes.size()) == 1 &&
            EVP_DigestFinal_ex(ctx, md, &md_len) == 1;
  EVP_MD_CTX_free(ctx);
  PF_CHECK(ok && md_len == 32, "SHA-256 failed");
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(64);
  for (unsigned i = 0; i < md_len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 0xf];
  }
  return out;
}

}  // namespace persoflow::storage
