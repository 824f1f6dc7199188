// The RA side of CMP (RFC 4210) over HTTPS (RFC 6712): enrolment by ir / cr / p10cr / kur,
// revocation by rr, general messages (genm) with persoflow's info types, each request protected
// by the officer's signature. Built on OpenSSL's OSSL_CMP_CTX with our own HTTPS transfer.
//
// Crash-safe retries: the CMP transactionID is the CM host's idempotency key. A caller that must
// survive a crash keeps the DER of the request it sent (last_request_der(), saved before the
// answer is awaited through on_request_sent) and, after a restart, hands it to resend_next():
// the next exchange sends those exact bytes again (same transactionID, same senderNonce), so the
// CM host answers from its store and never issues twice.
//
// Not thread-safe: one client per thread (the bench runs one per thread). Keys and certificates
// passed in are up-referenced, never taken over.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "persoflow/common/status.hpp"
#include "persoflow/protocol/https_client.hpp"
#include "persoflow/protocol/ossl.hpp"

namespace persoflow::protocol {

struct CmpClientOptions {
  HttpsClientOptions https;          // where the CM host is and the CA its TLS cert chains to
  std::string cmp_trusted_pem;       // the CA certificate(s) the CM host's answers must chain to
  EVP_PKEY* officer_key = nullptr;   // signs every request (CMP protection)
  X509* officer_cert = nullptr;      // sent in extraCerts
  std::vector<X509*> officer_chain;  // further extraCerts (may be empty)
  bool implicit_confirm = false;     // ask the CM host to skip certConf
};

enum class CertRequestType { kIr, kCr, kP10cr, kKur };

struct CertRequest {
  CertRequestType type = CertRequestType::kIr;
  std::string procedure;           // empty: the CM host's default (/.well-known/cmp)
  std::string subject;             // "/CN=Alice/O=Example" (ir/cr/kur); empty for p10cr
  EVP_PKEY* key = nullptr;         // the new key pair (ir/cr/kur; private for proof of possession)
  X509_REQ* csr = nullptr;         // p10cr
  X509* old_cert = nullptr;        // kur: the certificate being updated
  // ir/cr/kur: have the CM host archive `key`'s private key (CRMF PKIArchiveOptions, an
  // EnvelopedData for this key-archive certificate, DIR/archive/archive.pem); null: no archiving.
  X509* archive_to = nullptr;
  std::string transaction_id;      // raw bytes (16 recommended); empty: random
};

struct Enrolled {
  X509Ptr cert;
  std::string serial_hex;
  std::string transaction_id;  // raw bytes
  std::vector<X509Ptr> ca_pubs;  // the CA certificates the CM host sent (caPubs of an ip)
};

struct InfoItem {
  std::string oid;    // dotted
  std::string value;  // the OCTET STRING's content (for persoflow's types: UTF-8 JSON)
};

// Refusal details of the last exchange, when the CM host answered with a rejection or an error.
struct CmpFailure {
  int pki_status = -1;     // OSSL_CMP_PKISTATUS_*, -1 when none was received
  int fail_info = 0;       // bits of OSSL_CMP_PKIFAILUREINFO_*
  std::string text;        // statusString / error details from the CM host
};

class CmpClient {
 public:
  explicit CmpClient(CmpClientOptions options);
  ~CmpClient();
  CmpClient(const CmpClient&) = delete;
  CmpClient& operator=(const CmpClient&) = delete;

  // A CM host answering 'waiting' (e-mail verification) ends the exchange without polling:
  // kUnavailable with last_failure().pki_status == OSSL_CMP_PKISTATUS_waiting and its reason in
  // last_failure().text; the caller asks again later (persoflowEmailVerification).
  Result<Enrolled> enroll(const CertRequest& request);
  // rr for the certificate, with a CRLReason code (RFC 5280 §5.3.1; -1: none given).
  Status revoke(X509* cert, int reason, const std::string& procedure = {});
  // With options.implicit_confirm the genm asks for implicit confirmation (the header's
  // implicitConfirm), so certificates a key generation or recovery makes are published at once;
  // otherwise they stay pending until confirm_certificates().
  Result<std::vector<InfoItem>> general_message(const std::vector<InfoItem>& items,
                                                const std::string& procedure = {});
  // Confirms (accept) or rejects the certificates made by the genm of transaction
  // transaction_id_hex (the genp's "transaction_id"): all of them, or those named by serial.
  // A persoflowCertConfirm genm; repeating it is harmless. Returns the serials it covered.
  Result<std::vector<std::string>> confirm_certificates(const std::string& transaction_id_hex,
                                                        const std::vector<std::string>& serials = {},
                                                        bool accept = true);

  // Sends DER bytes as they are to the CMP path and returns the answer's DER (no checks).
  Result<std::string> post_der(const std::string& der, const std::string& procedure = {});

  // The next exchange sends this request DER instead of a freshly built one (see above).
  void resend_next(std::string request_der);
  // Called with each request's DER before it is sent (to persist it first).
  void on_request_sent(std::function<void(const std::string&)> fn);
  const std::string& last_request_der() const;
  const std::string& last_response_der() const;
  const CmpFailure& last_failure() const;

  HttpsClient& https();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The path of a procedure: "/.well-known/cmp" or "/.well-known/cmp/p/<procedure>".
std::string cmp_path(const std::string& procedure);

}  // namespace persoflow::protocol
