// Canonical bytes of machine values (engine.hpp: encode / decode_*).
//
// Layout (all integers unsigned 32-bit big-endian):
//   kind      1 byte: 'S' state, 'E' event, 'C' command
//   version   1 byte: 0x01
//   name      u32 length, then the bytes of State::name / Event::type / Command::type
//   count     u32 number of fields
//   fields    count times: u32 key length, key bytes, u32 value length, value bytes,
//             keys strictly increasing in byte order (std::map order), so no duplicates
// Nothing follows the last field. Every value has exactly one encoding, and decode_* accept only
// what encode can produce (wrong kind or version, truncation, trailing bytes, unsorted or
// duplicate keys are Errc::kCorrupt), so replay can compare bytes and the journal can hash them.
#include <cstdint>

#include "persoflow/machines/engine.hpp"

namespace persoflow::machines {
namespace {

constexpr char kVersion = 0x01;

void put_u32(std::string& out, std::size_t v) {
  PF_CHECK(v <= 0xffffffffu, "value too large for the canonical encoding");
  out += static_cast<char>((v >> 24) & 0xff);
  out += static_cast<char>((v >> 16) & 0xff);
  out += static_cast<char>((v >> 8) & 0xff);
  out += static_cast<char>(v & 0xff);
}

void put_bytes(std::string& out, std::string_view s) {
  put_u32(out, s.size());
  out.append(s);
}

std::string encode_value(char kind, const std::string& name, const Fields& fields) {
  std::string out;
  std::size_t size = 2 + 4 + name.size() + 4;
  for (const auto& [k, v] : fields) size += 8 + k.size() + v.size();
  out.reserve(size);
  out += kind;
  out += kVersion;
  put_bytes(out, name);
  put_u32(out, fields.size());
  for (const auto& [k, v] : fields) {
    put_bytes(out, k);
    put_bytes(out, v);
  }
  return out;
}

class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  bool u32(std::uint32_t& v) {
    if (bytes_.size() - pos_ < 4) return false;
    v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(bytes_[pos_++]);
    return true;
  }
  bool bytes(std::string& s) {
    std::uint32_t n;
    if (!u32(n) || bytes_.size() - pos_ < n) return false;
    s.assign(bytes_.substr(pos_, n));
    pos_ += n;
    return true;
  }
  bool byte(char& c) {
    if (pos_ >= bytes_.size()) return false;
    c = bytes_[pos_++];
    return true;
  }
  bool at_end() const { return pos_ == bytes_.size(); }
  std::size_t pos() const { return pos_; }

 private:
  std::string_view bytes_;
  std::size_t pos_ = 0;
};

Status corrupt(const char* what, const char* problem, std::size_t at) {
  return make_status(Errc::kCorrupt, std::string("malformed ") + what + " bytes: " + problem +
                                         " at offset " + std::to_string(at));
}

Status decode_value(std::string_view bytes, char kind, const char* what, std::string& name,
                    Fields& fields) {
  Reader r(bytes);
  char k = 0, version = 0;
  if (!r.byte(k) || !r.byte(version)) return corrupt(what, "truncated header", r.pos());
  if (k != kind) return corrupt(what, "wrong kind tag", 0);
  if (version != kVersion) return corrupt(what, "unknown version", 1);
  if (!r.bytes(name)) return corrupt(what, "truncated name", r.pos());
  std::uint32_t count;
  if (!r.u32(count)) return corrupt(what, "truncated field count", r.pos());
  // Each field needs at least 8 bytes: a huge count in a short buffer is caught in the loop, and
  // this bound keeps the loop from spinning on a corrupt count.
  if (count > (bytes.size() - r.pos()) / 8) return corrupt(what, "field count too large", r.pos());
  const std::string* prev = nullptr;
  for (std::uint32_t i = 0; i < count; ++i) {
    std::string key, value;
    std::size_t at = r.pos();
    if (!r.bytes(key)) return corrupt(what, "truncated field key", at);
    if (!r.bytes(value)) return corrupt(what, "truncated field value", r.pos());
    if (prev && !(*prev < key)) return corrupt(what, "field keys not strictly increasing", at);
    auto it = fields.emplace_hint(fields.end(), std::move(key), std::move(value));
    prev = &it->first;
  }
  if (!r.at_end()) return corrupt(what, "trailing bytes", r.pos());
  return Status::ok();
}

}  // namespace

std::string encode(const State& state) { return encode_value('S', state.name, state.data); }
std::string encode(const Event& event) { return encode_value('E', event.type, event.fields); }
std::string encode(const Command& command) {
  return encode_value('C', command.type, command.fields);
}

Result<State> decode_state(std::string_view bytes) {
  State s;
  PF_RETURN_IF_ERROR(decode_value(bytes, 'S', "state", s.name, s.data));
  return s;
}

Result<Event> decode_event(std::string_view bytes) {
  Event e;
  PF_RETURN_IF_ERROR(decode_value(bytes, 'E', "event", e.type, e.fields));
  return e;
}

Result<Command> decode_command(std::string_view bytes) {
  Command c;
  PF_RETURN_IF_ERROR(decode_value(bytes, 'C', "command", c.type, c.fields));
  return c;
}

}  // namespace persoflow::machines
