// The officer's signing token: the key that signs (CMP-protects) every request an officer sends
// to the CM host, with the officer's certificate. On a smart card (PKCS#11, the key never leaves
// the card; recommended) or in a PKCS#12 software token (accepted, with a warning).
//
// key() is an OpenSSL EVP_PKEY usable with any OpenSSL API (OSSL_CMP_CTX_set1_pkey,
// EVP_DigestSign); for a card its operations run on the card through libp11.
// Threading: like Card, an OfficerToken serialises nothing itself beyond what Card does; use it
// from one thread at a time.
#pragma once

#include <openssl/types.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "persoflow/common/status.hpp"
#include "persoflow/devices/card.hpp"

namespace persoflow::devices {

inline constexpr const char* kSoftwareOfficerWarning =
    "a software token is not recommended for officers: its key can be copied with the file and "
    "its password; use a smart card";

class OfficerToken {
 public:
  virtual ~OfficerToken() = default;
  // Owned by the token; valid while it lives.
  virtual EVP_PKEY* key() const = 0;
  virtual X509* certificate() const = 0;
  virtual const std::vector<X509*>& chain() const = 0;  // PKCS#12 only; empty for a card
  virtual bool is_software() const = 0;
  // Things the officer should hear (the software-token warning, a file readable by others).
  virtual const std::vector<std::string>& warnings() const = 0;
  // "card 'Officer Card' (serial ...), key id ..." or "software token /path/officer.p12".
  virtual std::string describe() const = 0;
  // A SHA-256 signature of data with key() (ECDSA DER or RSA PKCS#1 v1.5).
  Result<std::string> sign(std::string_view data) const;
};

struct OfficerCardOptions {
  std::string module_path = kDefaultPkcs11Module;
  TokenSelector token;
  // Which key: its CKA_ID, else the URI's id= / object=, else the only key that has a
  // certificate and may sign.
  std::optional<std::vector<unsigned char>> key_id;
};

// Opens the card, logs in with the Signature PIN and finds the key and its certificate.
Result<std::unique_ptr<OfficerToken>> open_officer_card(const OfficerCardOptions& options,
                                                        std::string_view pin);

// Opens a PKCS#12 file; the warning kSoftwareOfficerWarning is always among warnings().
// A wrong password: Errc::kPermissionDenied.
Result<std::unique_ptr<OfficerToken>> open_officer_pkcs12(const std::string& path,
                                                          std::string_view password);

}  // namespace persoflow::devices
