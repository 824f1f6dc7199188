// Private to cmhost/: the CA's cryptography on OpenSSL 3 — key generation, certificate and CRL
// signing, the qcStatements extension, encrypted PEM and PKCS#12 files. No policy here: what to
// put into a certificate is decided by cm_host.cpp from the procedures.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "persoflow/cmhost/config.hpp"
#include "persoflow/cmhost/openssl_ptr.hpp"
#include "persoflow/common/status.hpp"

namespace persoflow::cmhost::crypto {

struct CertSpec {
  const X509_NAME* subject = nullptr;
  const EVP_PKEY* public_key = nullptr;
  // Issuer; both null for a self-signed certificate (signed by signing_key = the subject's key).
  const X509* issuer = nullptr;
  const EVP_PKEY* signing_key = nullptr;
  std::int64_t not_before = 0;  // Unix seconds
  std::int64_t not_after = 0;
  bool ca = false;
  std::vector<std::string> key_usage;
  std::vector<std::string> extended_key_usage;
  std::vector<std::string> subject_alt_names;  // "IP:127.0.0.1", "DNS:localhost"
  std::string crl_url;                         // empty: no CRL distribution point
  std::optional<QcStatements> qc;              // the statements to encode (values resolved)
};

// A random positive 128-bit serial (16 bytes, top bit clear, second bit set so it has 16 bytes).
Result<X509Ptr> sign_certificate(const CertSpec& spec);

// The digest to sign with for a key (SHA-256 / SHA-384 for larger EC keys; none for EdDSA).
const EVP_MD* digest_for(const EVP_PKEY* key);

// DER of the qcStatements extension value (RFC 3739, ETSI EN 319 412-5).
Result<std::string> qc_statements_der(const QcStatements& qc);

struct RevokedEntry {
  std::string serial_hex;
  std::int64_t revoked_at = 0;
  int reason = 0;
};
Result<std::string> sign_crl(const X509* ca, const EVP_PKEY* ca_key,
                             const std::vector<RevokedEntry>& revoked, std::int64_t crl_number,
                             std::int64_t this_update, std::int64_t next_update);

// "RSA:2048", "EC:secp256r1", "DSA:1024", "Ed25519"; the CA's "ec-p256", "rsa-3072" forms too.
Result<EvpPkeyPtr> generate_key(const std::string& spec);

// Encrypted PKCS#8 PEM (AES-256-CBC, PBKDF2) and back.
Result<std::string> encrypted_key_pem(const EVP_PKEY* key, const std::string& passphrase);
Result<EvpPkeyPtr> load_key_pem(const std::string& pem, const std::string& passphrase);
std::string key_pem_unencrypted(const EVP_PKEY* key);
// Whether the key holds its private part (not only the public key).
bool has_private_part(const EVP_PKEY* key);
// PKCS#8 PrivateKeyInfo DER (unencrypted: only ever put inside a CMS envelope).
Result<std::string> private_key_pkcs8_der(const EVP_PKEY* key);
Result<EvpPkeyPtr> private_key_from_pkcs8_der(const std::string& der);

Result<std::string> pkcs12(const std::string& friendly_name, const EVP_PKEY* key, const X509* cert,
                           const std::vector<const X509*>& chain, const std::string& password);

Result<std::vector<X509Ptr>> load_pem_chain(const std::string& pem);

std::int64_t asn1_time_to_unix(const ASN1_TIME* t);
std::string random_password(std::size_t length);

}  // namespace persoflow::cmhost::crypto
