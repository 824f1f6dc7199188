// The CM host's CMP service (RFC 4210 through OpenSSL 3's OSSL_CMP_SRV_CTX): ir / cr / p10cr /
// kur, rr, certConf, error and genm with persoflow's info types (docs/protocol.md).
//
// Guarantees:
// - Every request is protected by a signature of an officer certificate this CA issued and has
//   not revoked (the library checks the signature and the chain against the CA; we find the
//   signing certificate among the extraCerts by verifying the protection with it, then ask the
//   CmHost whether it is a current officer). Roles: "issue" for ir/cr/p10cr/kur/rr and server-side
//   key generation, "recover" for key search and recovery, plus the procedure's roles_required.
//   A refusal is a CMP answer (rejection status or error message) with a clear reason and an
//   audit record. Unprotected, MAC-protected, self-signed and foreign requests are refused by
//   the library before any callback runs.
// - One OSSL_CMP_SRV_CTX per open transaction, found by transactionID (a shared one is unsafe),
//   dropped when the transaction ends or after transaction_timeout of silence.
// - Exactly once: each message is recorded in the store's transactions table under its
//   transactionID (and body type, for certConf/error) with the SHA-256 of its DER and the answer.
//   The same message again gets the stored answer byte for byte, before the library sees it; the
//   same transactionID with other bytes is refused ("transactionID reused with a different
//   request"). Issuance passes "<transactionID>/<certReqId>" as the CmHost idempotency key, so
//   even a request whose answer was never stored (a crash) gets the same certificate again.
//   The answer is stored before it is sent (crash point cm.after_issue_before_answer lies
//   between the two).
// - A certificate is published only on certConf "accepted" or granted implicit confirmation;
//   a certConf with a failure status or an error message marks it rejected.
//
// Thread-safe: handle() runs on the HTTPS server's threads; messages of one transaction are
// serialised by that transaction's mutex.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "persoflow/cmhost/cm_host.hpp"
#include "persoflow/cmhost/http_server.hpp"

namespace persoflow::cmhost {

struct CmpServiceOptions {
  std::chrono::seconds transaction_timeout{600};
  bool log_cmp_errors = false;  // OpenSSL's own CMP log lines on stderr (debugging)
};

class CmpService {
 public:
  // host must outlive the service.
  explicit CmpService(CmHost& host, CmpServiceOptions options = {});
  ~CmpService();
  CmpService(const CmpService&) = delete;
  CmpService& operator=(const CmpService&) = delete;

  // One HTTP POST body (a PKIMessage, DER) for a procedure path ("" = the default procedure).
  // 200 with the answer (application/pkixcmp), 400 when the body is not a PKIMessage, 500 when
  // no CMP answer could be made at all.
  HttpReply handle(const std::string& procedure, const std::string& der);

  // Transactions with an open server context (waiting for certConf).
  std::size_t open_transactions() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// HTTP routes of a CM host: CMP through the service, /crl, /ca and /health from the host.
HttpRoutes cm_routes(CmHost& host, CmpService& service);

}  // namespace persoflow::cmhost
