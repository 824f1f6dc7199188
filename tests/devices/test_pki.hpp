// Test-only PKI helpers for the devices tests: keys, names, certificates and files made with
// OpenSSL in-process, so tests can put real certificates on tokens and into PKCS#12 files.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace persoflow::testing {

using EvpPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;
using NamePtr = std::unique_ptr<X509_NAME, decltype(&X509_NAME_free)>;

inline EvpPtr make_ec_key(const char* curve = "P-256") {
  return EvpPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve), EVP_PKEY_free);
}

// Most significant first: {{"O", "Example"}, {"CN", "Alice"}} prints as "CN=Alice,O=Example".
inline NamePtr make_name(const std::vector<std::pair<std::string, std::string>>& rdns) {
  NamePtr name(X509_NAME_new(), X509_NAME_free);
  for (const auto& [type, value] : rdns) {
    X509_NAME_add_entry_by_txt(name.get(), type.c_str(), MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1, 0);
  }
  return name;
}

// A certificate for `subject_key` (its public half), issued by `issuer` and signed by `signer`.
inline X509Ptr make_cert(const X509_NAME* subject, const X509_NAME* issuer, EVP_PKEY* subject_key,
                         EVP_PKEY* signer, long serial, const std::string& policies = "",
                         bool ca = false) {
  X509Ptr cert(X509_new(), X509_free);
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial);
  X509_set_subject_name(cert.get(), subject);
  X509_set_issuer_name(cert.get(), issuer);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 365L * 24 * 3600);
  X509_set_pubkey(cert.get(), subject_key);
  if (!policies.empty()) {
    CERTIFICATEPOLICIES* pols = sk_POLICYINFO_new_null();
    POLICYINFO* info = POLICYINFO_new();
    ASN1_OBJECT_free(info->policyid);
    info->policyid = OBJ_txt2obj(policies.c_str(), 1);
    if (!info->policyid) throw std::runtime_error("bad policy OID " + policies);
    sk_POLICYINFO_push(pols, info);
    X509_add1_ext_i2d(cert.get(), NID_certificate_policies, pols, 0, 0);
    CERTIFICATEPOLICIES_free(pols);
  }
  if (ca) {
    X509_EXTENSION* ext =
        X509V3_EXT_conf_nid(nullptr, nullptr, NID_basic_constraints, "critical,CA:TRUE");
    X509_add_ext(cert.get(), ext, -1);
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(cert.get(), signer, EVP_sha256()) <= 0) throw std::runtime_error("X509_sign");
  return cert;
}

inline std::string cert_der(X509* cert) {
  unsigned char* buf = nullptr;
  int n = i2d_X509(cert, &buf);
  std::string out(reinterpret_cast<char*>(buf), static_cast<std::size_t>(n));
  OPENSSL_free(buf);
  return out;
}

// The public key of a DER PKCS#10 request.
inline EvpPtr csr_public_key(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  X509_REQ* req = d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size()));
  if (!req) throw std::runtime_error("not a DER CSR");
  EvpPtr key(X509_REQ_get_pubkey(req), EVP_PKEY_free);
  X509_REQ_free(req);
  return key;
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A small CA: an EC key and a self-signed certificate.
struct TestCa {
  EvpPtr key = make_ec_key();
  NamePtr name;
  X509Ptr cert{nullptr, X509_free};
  explicit TestCa(const std::string& cn, const std::string& o = "Example")
      : name(make_name({{"O", o}, {"CN", cn}})) {
    cert = make_cert(name.get(), name.get(), key.get(), key.get(), 1, "", true);
  }
  X509Ptr issue(const std::string& cn, EVP_PKEY* subject_key, long serial,
                const std::string& policies = "") const {
    NamePtr subject = make_name({{"O", "Example"}, {"CN", cn}});
    return make_cert(subject.get(), name.get(), subject_key, key.get(), serial, policies);
  }
};

}  // namespace persoflow::testing
