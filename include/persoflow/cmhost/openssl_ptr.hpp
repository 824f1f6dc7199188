// Owning smart pointers for the OpenSSL objects the CM host's API passes around, and two small
// helpers to convert between DER/PEM and those objects. Each pointer frees with the matching
// OpenSSL *_free; an up-ref'd copy is made with share().
#pragma once

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <string_view>

#include "persoflow/common/status.hpp"

namespace persoflow::cmhost {

struct OpenSslFree {
  void operator()(X509* p) const noexcept { X509_free(p); }
  void operator()(X509_NAME* p) const noexcept { X509_NAME_free(p); }
  void operator()(X509_REQ* p) const noexcept { X509_REQ_free(p); }
  void operator()(X509_CRL* p) const noexcept { X509_CRL_free(p); }
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
  void operator()(BIO* p) const noexcept { BIO_free_all(p); }
  void operator()(CMS_ContentInfo* p) const noexcept { CMS_ContentInfo_free(p); }
  void operator()(STACK_OF(X509)* p) const noexcept { sk_X509_pop_free(p, X509_free); }
};

using X509Ptr = std::unique_ptr<X509, OpenSslFree>;
using X509NamePtr = std::unique_ptr<X509_NAME, OpenSslFree>;
using X509ReqPtr = std::unique_ptr<X509_REQ, OpenSslFree>;
using X509CrlPtr = std::unique_ptr<X509_CRL, OpenSslFree>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, OpenSslFree>;
using BioPtr = std::unique_ptr<BIO, OpenSslFree>;
using CmsPtr = std::unique_ptr<CMS_ContentInfo, OpenSslFree>;
using X509StackPtr = std::unique_ptr<STACK_OF(X509), OpenSslFree>;

// A second owning reference to the same object (X509_up_ref / EVP_PKEY_up_ref).
X509Ptr share(X509* cert);
EvpPkeyPtr share(EVP_PKEY* key);

// The pending OpenSSL error queue as one line ("" when empty); clears the queue.
std::string openssl_errors();
// A Status in the openssl category: "<what>: <openssl error queue>".
Status openssl_failure(const std::string& what);

Result<std::string> to_der(const X509* cert);
Result<X509Ptr> x509_from_der(std::string_view der);
// DER or PEM, whichever the bytes are.
Result<X509Ptr> x509_from_bytes(std::string_view bytes);
std::string to_pem(const X509* cert);
// The public key as SubjectPublicKeyInfo DER (compare keys by it).
Result<std::string> public_key_der(const EVP_PKEY* key);

// Serial numbers: uppercase hex with an even number of digits, as BN_bn2hex prints them.
std::string serial_hex(const X509* cert);
// Accepts "0x..", colons, lower case, leading zeros; returns the canonical form or kInvalidArgument
// "serial number 'zz' is not hexadecimal".
Result<std::string> normalize_serial_hex(std::string_view text);

// "CN=Alice,O=Example" (RFC 2253, as stored in the CM database).
std::string name_to_string(const X509_NAME* name);
// Parses "CN=Alice,O=Example" or "/CN=Alice/O=Example"; attribute names as OpenSSL knows them
// (CN, O, OU, C, L, ST, emailAddress, serialNumber, GN, SN, ...). Bad input: kInvalidArgument.
Result<X509NamePtr> parse_name(std::string_view text);

}  // namespace persoflow::cmhost
