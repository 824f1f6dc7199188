// A private key kept in a PKCS#11 token (an HSM; SoftHSM2 in the tests) as an OpenSSL EVP_PKEY
// whose operations the token performs (libp11): the CM host's CA key when `persoflow cm init
// --ca-key pkcs11:...` put it there. Only devices/ may include PKCS#11 headers; this is the way
// for cmhost/ to a key in a token.
//
// The key is named by a PKCS#11 URI (RFC 7512): the token attributes (token=, serial=, ...) pick
// the token, object= (CKA_LABEL) and/or id= (CKA_ID) the key. A PIN never travels in the URI.
//
// Threads: key() may be used by many threads at once (signing runs in the token; SoftHSM2 and
// libp11 were found to take 16 threads signing with one key). The EVP_PKEY is valid while the
// TokenKey lives: it keeps the token's session and the loaded module.
#pragma once

#include <openssl/types.h>

#include <memory>
#include <string>

#include "persoflow/common/status.hpp"
#include "persoflow/devices/card.hpp"

namespace persoflow::devices {

struct TokenKeyOptions {
  std::string uri;     // pkcs11:token=...;object=...  (its module-path, when given, wins)
  std::string module;  // the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so
  std::string pin;     // the token's user PIN
};

class TokenKey {
 public:
  ~TokenKey();
  TokenKey(const TokenKey&) = delete;
  TokenKey& operator=(const TokenKey&) = delete;

  EVP_PKEY* key() const { return key_; }  // owned by this object
  const KeyInfo& info() const { return info_; }
  const TokenInfo& token() const;

 private:
  friend Result<std::unique_ptr<TokenKey>> open_token_key(const TokenKeyOptions&,
                                                          const std::string&);
  TokenKey() = default;
  std::unique_ptr<Card> card_;
  KeyInfo info_;
  EVP_PKEY* key_ = nullptr;
};

// Opens the token the URI names, logs in with the PIN and finds the private key the URI names
// (object and/or id; at least one). When the token holds no such key and generate_algorithm is
// not empty ("EC:secp256r1", "RSA:3072", ... as in client.ra-key-generation), the key pair is
// generated in the token under the URI's object label (CKA_ID derived from it, see
// derive_key_id). No such key and nothing to generate, or several keys matching: kNotFound /
// kAlreadyExists naming them; a wrong PIN: the token's CKR_PIN_INCORRECT.
Result<std::unique_ptr<TokenKey>> open_token_key(const TokenKeyOptions& options,
                                                 const std::string& generate_algorithm = {});

}  // namespace persoflow::devices
