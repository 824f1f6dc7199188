// PKCS#11 URIs (RFC 7512): how a person names a token or an object on it, e.g.
//   pkcs11:token=Officer%20Card;serial=0123abcd;object=sig;type=private;id=%01%02
// Pure parsing and matching, no PKCS#11 calls. Values are percent-decoded. A slot number
// (slot-id) is refused: slot numbers change between runs. A PIN in the URI (pin-value) is refused:
// PINs never travel on a command line.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "persoflow/common/status.hpp"

namespace persoflow::devices {

struct Pkcs11Uri {
  // Token attributes.
  std::optional<std::string> token;             // CK_TOKEN_INFO.label
  std::optional<std::string> serial;            // CK_TOKEN_INFO.serialNumber
  std::optional<std::string> manufacturer;      // CK_TOKEN_INFO.manufacturerID
  std::optional<std::string> model;             // CK_TOKEN_INFO.model
  std::optional<std::string> slot_description;  // the reader name with OpenSC
  std::optional<std::string> slot_manufacturer;
  std::optional<std::string> library_manufacturer;
  std::optional<std::string> library_description;
  // Object attributes.
  std::optional<std::string> object;             // CKA_LABEL
  std::optional<std::vector<unsigned char>> id;  // CKA_ID (raw bytes)
  std::optional<std::string> type;               // cert, private, public, secret-key, data
  // Query attributes.
  std::optional<std::string> module_path;  // ?module-path=/usr/lib/...

  // Whether the token attributes given all equal the token's (absent ones match anything).
  bool matches_token(std::string_view label, std::string_view serial, std::string_view manufacturer,
                     std::string_view model, std::string_view slot_description) const;
  bool names_token() const;  // any token or slot attribute given
};

// Parses "pkcs11:...". Errors (Errc::kInvalidArgument) say which attribute and where.
Result<Pkcs11Uri> parse_pkcs11_uri(std::string_view text);

// "%01%AB" style percent-encoding of raw bytes, as RFC 7512 writes an id.
std::string percent_encode_bytes(const std::vector<unsigned char>& bytes);

}  // namespace persoflow::devices
