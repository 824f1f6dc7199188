// Software tokens: PKCS#12 files and certificate files, written with OpenSSL 3.
//
// A PKCS#12 file holds the private key, its certificate and the chain, under a friendly name.
// Both the key bag and the certificate bag are encrypted with AES-256-CBC under PBES2 /
// PBKDF2-HMAC-SHA256, and the MAC (HMAC-SHA256) uses the same iteration count: 600,000 by
// default (OpenSSL's own default MAC iteration count is 1).
//
// Every file is written atomically: a temporary file in the same folder, mode 0600, written and
// fsync'ed, then renamed into place and the folder fsync'ed. Without `force` an existing file is
// never replaced (the rename itself refuses: RENAME_NOREPLACE), so two writers cannot both win.
// All functions are synchronous and thread-safe (no shared state).
#pragma once

#include <openssl/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "persoflow/common/status.hpp"
#include "persoflow/devices/keygen_list.hpp"

namespace persoflow::devices {

inline constexpr int kDefaultPkcs12Iterations = 600000;

struct Pkcs12Options {
  int iterations = kDefaultPkcs12Iterations;  // PBKDF2 for both bags, and the MAC
  std::string friendly_name;                  // shown by importers; empty: none
  bool force = false;                         // replace an existing file
};

// Writes `data` to `path` atomically with mode 0600 (see above). An existing file without force:
// Errc::kAlreadyExists.
Status write_file_atomic(const std::string& path, std::string_view data, bool force);

// The PKCS#12 DER, in memory.
Result<std::string> make_pkcs12(EVP_PKEY* key, X509* cert, const std::vector<X509*>& chain,
                                std::string_view password, const Pkcs12Options& options);

// make_pkcs12, then write_file_atomic.
Status write_pkcs12(const std::string& path, EVP_PKEY* key, X509* cert,
                    const std::vector<X509*>& chain, std::string_view password,
                    const Pkcs12Options& options);

// The certificate alone: DER, or PEM when the file name ends in ".pem" (any case).
Status write_certificate_file(const std::string& path, X509* cert, bool force);

// A key pair generated in this process for a software token (RSA, EC or DSA of the
// key-generation list). The caller owns the key (EVP_PKEY_free).
Result<EVP_PKEY*> generate_software_key(const KeyAlgorithm& algorithm);

}  // namespace persoflow::devices
