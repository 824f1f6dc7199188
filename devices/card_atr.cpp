// ATRs that carry a token serial (card_atr.hpp).
#include "persoflow/devices/card_atr.hpp"

#include <cctype>
#include <cstdint>
#include <vector>

namespace persoflow::devices {
namespace {

constexpr char kHex[] = "0123456789ABCDEF";

bool is_hex_serial(const std::string& s) {
  if (s.size() != 16) return false;
  for (char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

int nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::vector<std::uint8_t>> from_hex(const std::string& hex) {
  std::vector<std::uint8_t> out;
  int high = -1;
  for (char c : hex) {
    if (c == ' ' || c == ':') continue;
    int v = nibble(c);
    if (v < 0) return std::nullopt;
    if (high < 0) {
      high = v;
    } else {
      out.push_back(static_cast<std::uint8_t>(high << 4 | v));
      high = -1;
    }
  }
  if (high >= 0) return std::nullopt;
  return out;
}

}  // namespace

Result<std::string> card_atr_for_token(const std::string& token_serial) {
  std::vector<std::uint8_t> historical = {'P', 'F'};
  if (is_hex_serial(token_serial)) {
    historical.push_back('T');
    for (std::size_t i = 0; i < 16; i += 2) {
      historical.push_back(
          static_cast<std::uint8_t>(nibble(token_serial[i]) << 4 | nibble(token_serial[i + 1])));
    }
  } else {
    if (token_serial.empty() || token_serial.size() > 12) {
      return make_status(Errc::kInvalidArgument,
                         "token serial '" + token_serial +
                             "' fits no card ATR: give 16 hex digits or 1 to 12 characters");
    }
    historical.push_back('A');
    for (char c : token_serial) {
      if (c < 0x21 || c > 0x7e) {
        return make_status(Errc::kInvalidArgument,
                           "token serial '" + token_serial + "' has a character that is not printable");
      }
      historical.push_back(static_cast<std::uint8_t>(c));
    }
  }
  std::vector<std::uint8_t> atr = {0x3B, static_cast<std::uint8_t>(0x80 | historical.size()), 0x80,
                                   0x01};
  atr.insert(atr.end(), historical.begin(), historical.end());
  std::uint8_t tck = 0;
  for (std::size_t i = 1; i < atr.size(); ++i) tck ^= atr[i];
  atr.push_back(tck);
  std::string hex;
  for (std::uint8_t b : atr) {
    hex += kHex[b >> 4];
    hex += kHex[b & 15];
  }
  return hex;
}

std::optional<std::string> token_serial_from_atr(const std::string& atr_hex) {
  auto atr = from_hex(atr_hex);
  if (!atr || atr->size() < 8) return std::nullopt;
  const auto& a = *atr;
  const std::size_t k = a[1] & 0x0F;
  if (a[0] != 0x3B || (a[1] & 0xF0) != 0x80 || a[2] != 0x80 || a[3] != 0x01 ||
      a.size() != 4 + k + 1 || k < 4 || a[4] != 'P' || a[5] != 'F') {
    return std::nullopt;
  }
  std::uint8_t tck = 0;
  for (std::size_t i = 1; i < a.size(); ++i) tck ^= a[i];
  if (tck != 0) return std::nullopt;  // the XOR over T0 .. TCK is zero
  std::string serial;
  if (a[6] == 'T' && k == 11) {
    for (std::size_t i = 7; i < 15; ++i) {
      serial += static_cast<char>(std::tolower(kHex[a[i] >> 4]));
      serial += static_cast<char>(std::tolower(kHex[a[i] & 15]));
    }
    return serial;
  }
  if (a[6] == 'A') {
    serial.assign(a.begin() + 7, a.begin() + 4 + static_cast<std::ptrdiff_t>(k));
    return serial;
  }
  return std::nullopt;
}

}  // namespace persoflow::devices
