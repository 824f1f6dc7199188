// The CM host's side of reissue (docs/reissue.md): the certificate search and the e-mail
// verification of certificate requests, with their genm info types persoflowCertificateSearch
// (1.3.6.1.4.1.55555.1.6) and persoflowEmailVerification (…1.7).
//
// E-mail verification. A certificate request (ir, cr, p10cr, kur) under a procedure with
// email_verification is not issued at once: gate_certificate_request() records it (subject,
// public key, the certificate it replaces) under its CMP transactionID, mails a one-time code
// to the subject's emailAddress through the configured SMTP relay, and the CMP answer says
// 'waiting'. `persoflow cm verify --code C` (confirm_email_code) marks it confirmed; the next
// persoflowEmailVerification status query of the client issues the certificate (idempotency key
// "<transactionID>/<certReqId>", as the request itself would have) and returns it. A request not
// confirmed within the procedure's verification_minutes expires. The code is never stored or
// logged in clear: only SHA-256(transactionID ":" code) is kept.
//
// All functions may be called from any thread (they go through CmHost and its store). Those
// called while a CMP message is processed run inside that message's database transaction.
#pragma once

#include <optional>
#include <string>

#include "persoflow/cmhost/cm_host.hpp"
#include "persoflow/common/status.hpp"

namespace persoflow::cmhost {

struct VerificationGate {
  bool verified = false;  // true: issue now; false: answer 'waiting' with `text`
  std::string text;       // for the PKIStatusInfo's statusString
};

// For a certificate request under `procedure` (which has email_verification), about to be
// issued with `request` in CMP transaction `transaction_id` (hex). The first time: records it,
// mails the code and answers waiting. Later: verified once confirmed. Refusals (no e-mail address
// in the subject, expired): kRejected naming why.
Result<VerificationGate> gate_certificate_request(CmHost& host,
                                                  const CertificateProcedure& procedure,
                                                  const std::string& transaction_id,
                                                  const IssueRequest& request);

// Where a request waiting for e-mail verification stands, for a client that polls (CMP pollReq
// or the persoflowEmailVerification genm). A code whose first mail failed is mailed again here.
struct VerificationPoll {
  enum class State { kWaiting, kConfirmed, kExpired };
  State state = State::kWaiting;
  int check_after = 30;  // seconds, the procedure's verification_check_after
  storage::EmailVerificationRecord record;
};

// No request of `transaction_id` (upper-case hex) waits for verification: kNotFound.
Result<VerificationPoll> poll_email_verification(CmHost& host, const std::string& transaction_id);

struct ConfirmedVerification {
  std::string transaction_id;
  std::string email;
  std::string procedure;
};

// `persoflow cm verify`: the open request whose code this is (optionally only the one of
// `transaction_id`) is confirmed. No open request with this code: kNotFound; too many wrong codes
// for the named transaction: kPermissionDenied.
Result<ConfirmedVerification> confirm_email_code(CmHost& host, const std::string& code,
                                                 const std::string& actor,
                                                 const std::optional<std::string>& transaction_id);

// The genm items of reissue: the answer's JSON text, or nullopt when `oid` is not one of them.
// Called with the officer already authenticated; each checks its role.
std::optional<Result<std::string>> reissue_genm_item(CmHost& host, const Officer& officer,
                                                     const std::string& oid,
                                                     const std::string& request_json);

// "c****l@example.org": enough for a person to recognise the address, not to harvest it.
std::string mask_email(const std::string& email);

}  // namespace persoflow::cmhost
