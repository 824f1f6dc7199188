// Owning handles for OpenSSL objects (unique_ptr with the matching free function), DER helpers,
// and the one place where OpenSSL's error queue becomes a persoflow Status.
#pragma once

#include <openssl/bio.h>
#include <openssl/cmp.h>
#include <openssl/cms.h>
#include <openssl/crmf.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <vector>

#include "persoflow/common/status.hpp"

namespace persoflow::protocol {

template <auto Free>
struct OsslDeleter {
  template <typename T>
  void operator()(T* p) const noexcept {
    Free(p);
  }
};

using X509Ptr = std::unique_ptr<X509, OsslDeleter<X509_free>>;
using X509ReqPtr = std::unique_ptr<X509_REQ, OsslDeleter<X509_REQ_free>>;
using X509CrlPtr = std::unique_ptr<X509_CRL, OsslDeleter<X509_CRL_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, OsslDeleter<X509_STORE_free>>;
using X509NamePtr = std::unique_ptr<X509_NAME, OsslDeleter<X509_NAME_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, OsslDeleter<EVP_PKEY_free>>;
using BioPtr = std::unique_ptr<BIO, OsslDeleter<BIO_free_all>>;
using CmpMsgPtr = std::unique_ptr<OSSL_CMP_MSG, OsslDeleter<OSSL_CMP_MSG_free>>;
using CmpCtxPtr = std::unique_ptr<OSSL_CMP_CTX, OsslDeleter<OSSL_CMP_CTX_free>>;
using CmpSrvCtxPtr = std::unique_ptr<OSSL_CMP_SRV_CTX, OsslDeleter<OSSL_CMP_SRV_CTX_free>>;
using CmsPtr = std::unique_ptr<CMS_ContentInfo, OsslDeleter<CMS_ContentInfo_free>>;
using Asn1OctetStringPtr =
    std::unique_ptr<ASN1_OCTET_STRING, OsslDeleter<ASN1_OCTET_STRING_free>>;

inline void free_x509_stack(STACK_OF(X509) * sk) { sk_X509_pop_free(sk, X509_free); }
using X509StackPtr = std::unique_ptr<STACK_OF(X509), OsslDeleter<free_x509_stack>>;

// Everything on OpenSSL's error queue of this thread as one line (and clears the queue).
std::string drain_openssl_errors();
// A Status of openssl_category with `what` and the drained error queue.
Status openssl_failure(const std::string& what);

// DER of a CMP message, and back (nullptr / failure on malformed input).
Result<std::string> cmp_msg_to_der(const OSSL_CMP_MSG* msg);
CmpMsgPtr cmp_msg_from_der(const std::string& der);

Result<std::string> x509_to_der(const X509* cert);
Result<X509Ptr> x509_from_der(const std::string& der);
std::string x509_to_pem(const X509* cert);
// Serial number as upper-case hexadecimal without leading zeros ("0" for zero).
std::string serial_hex(const ASN1_INTEGER* serial);
std::string hex(const unsigned char* data, std::size_t len);

// Reads every certificate of a PEM file.
Result<std::vector<X509Ptr>> read_pem_certs(const std::string& path);
Result<EvpPkeyPtr> read_pem_key(const std::string& path, const std::string& password = {});

// An officer's credentials from a PKCS#12 file.
struct Credentials {
  EvpPkeyPtr key;
  X509Ptr cert;
  std::vector<X509Ptr> chain;
};
Result<Credentials> load_pkcs12(const std::string& path, const std::string& password);

}  // namespace persoflow::protocol
