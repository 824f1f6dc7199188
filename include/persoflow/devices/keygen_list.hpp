// The key-generation list: the key algorithms an RA may generate, in the CM host's exact syntax
//
//   client.ra-key-generation = RSA:2048*, RSA:3072, RSA:4096, RSA:8192, (backslash)
//       EC:brainpoolP256r1, EC:secp256r1, DSA:1024
//
// where (backslash) is a `\` ending the line: the value continues on the next one.
//
// A pure parser (no I/O). It accepts the text of a whole configuration file (other `key = value`
// lines and `#` / `!` comments are skipped) or the value alone, with backslash continuation lines.
// Every error names the line and column of the offending character in the text given, e.g.
// "line 2, column 14: unknown EC curve 'secp999r1'".
//
// Defaults: `*` after an entry marks the single default; two `*` is an error. Without any `*`,
// the first entry is the default (explicit_default is then false, so a caller may warn).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "persoflow/common/status.hpp"

namespace persoflow::devices {

enum class KeyFamily { kRsa, kEc, kDsa };

// One key algorithm: RSA or DSA with a size in bits, or EC with a named curve.
struct KeyAlgorithm {
  KeyFamily family = KeyFamily::kRsa;
  int bits = 0;       // RSA/DSA modulus size; for EC the curve's field size (256, 320, ...)
  std::string curve;  // EC only: the list's spelling, "secp256r1", "brainpoolP320r1"

  // The list's spelling: "RSA:2048", "EC:secp256r1", "DSA:1024".
  std::string to_string() const;
  friend bool operator==(const KeyAlgorithm&, const KeyAlgorithm&) = default;
};

// The EC curves the list may name, in the list's spelling.
const std::vector<std::string>& known_ec_curves();

// Parses one entry without a default marker: "RSA:3072", "EC:brainpoolP256r1" (for command-line
// options). Errors name the column.
Result<KeyAlgorithm> parse_key_algorithm(std::string_view text);

struct KeygenEntry {
  KeyAlgorithm algorithm;
  int line = 0;  // where the entry starts in the parsed text (1-based)
  int column = 0;
};

struct KeygenList {
  std::vector<KeygenEntry> entries;  // in the order written
  std::size_t default_index = 0;     // the entry marked `*`, or 0 without a mark
  bool explicit_default = false;     // whether a `*` was written

  const KeyAlgorithm& default_algorithm() const { return entries.at(default_index).algorithm; }
  bool contains(const KeyAlgorithm& algorithm) const;
  // Back to the list's syntax (the value only, one line): "RSA:2048*, RSA:3072, ...".
  std::string to_string() const;
};

inline constexpr std::string_view kKeygenListKey = "client.ra-key-generation";

// The text of a configuration file: finds `client.ra-key-generation` (defined exactly once) and
// parses its value. Other keys and comments are skipped.
Result<KeygenList> parse_keygen_config(std::string_view text);

// The value alone (it may still span backslash-continued lines).
Result<KeygenList> parse_keygen_value(std::string_view text);

}  // namespace persoflow::devices
