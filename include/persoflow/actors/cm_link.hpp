// The RA's one link to the CM host: every request of the station's card workflows, the soft-token
// RA and reissue (enrolment, revocation, general messages) goes through a CmLink (CMP over HTTPS,
// protocol::CmpClient).
//
// - Made from the station's configuration (cm_url "https://HOST:PORT", cm_ca) and the officer's
//   credential, which signs every request; a bad cm_url is refused by open() with one line.
// - A few lanes, each a thread with its own CmpClient (a client is not thread-safe) kept open
//   across requests, so a request does not pay a TLS handshake.
// - The CMP transactionID is the idempotency key. An enrolment whose transactionID is already in
//   flight joins it (an engine retry after a timeout never sends a second request beside the
//   first); one that already got its answer in this process gets the same answer again.
// - A request given a `saved_request_path` is crash-safe: its DER is saved there (0600, fsync)
//   before it is sent, and a saved request (an earlier attempt, an earlier process) is resent as
//   those exact bytes, so the CM host answers from its store and never issues twice.
// - A transport failure (CM host unreachable, connection broken) is retried with backoff
//   (CmLinkOptions::transport_retry) on a fresh connection; an answer of the CM host (a
//   certificate, a genp or a refusal) is never retried. The engine's own retry policy comes on top.
//
// Thread-safe. The calls block the calling thread (an executor on the blocking pool) until the
// answer; never call them from inside a lane.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "persoflow/actors/executor.hpp"
#include "persoflow/common/status.hpp"
#include "persoflow/devices/officer.hpp"
#include "persoflow/protocol/cmp_client.hpp"

namespace persoflow::actors {

struct CmLinkOptions {
  // Requests sent at once: the CM host works on some (its database commits included) while the
  // link builds, signs and checks others; with 2, a full station's enrolments queued here.
  unsigned lanes = 4;
  RetryPolicy transport_retry{4, std::chrono::milliseconds(0), std::chrono::milliseconds(200),
                              std::chrono::milliseconds(2'000)};
  std::chrono::seconds timeout{20};  // per HTTPS exchange
};

// What the CM host answered.
struct CmAnswer {
  std::shared_ptr<protocol::Enrolled> enrolled;  // enroll(): the certificate
  std::vector<protocol::InfoItem> items;         // general_message(): the genp's items
  // The CM host refused (or answered 'waiting'; refusal.pki_status says which):
  bool refused = false;
  protocol::CmpFailure refusal;
  std::string refusal_message;  // the CM host's own sentence, for a person
  std::string refusal_detail;   // all its statusString / errorDetails texts, for the log
};

class CmLink {
 public:
  // Opened once; owned by the caller, which keeps the token valid while the link lives.
  using OfficerSource = std::function<Result<devices::OfficerToken*>()>;

  // `cm_url` "https://HOST:PORT"; `cm_ca` the PEM file the CM host's TLS certificate and CMP
  // answers must chain to. The officer is asked for when the first connection is made.
  static Result<std::unique_ptr<CmLink>> open(const std::string& cm_url, const std::string& cm_ca,
                                              OfficerSource officer, CmLinkOptions options = {});
  // Finishes the requests already queued, then stops the lanes.
  ~CmLink();
  CmLink(const CmLink&) = delete;
  CmLink& operator=(const CmLink&) = delete;

  // ir / cr / p10cr / kur, with `request.transaction_id` (16 bytes) as the idempotency key (empty:
  // a random one, never joined). `request.key` and the other pointers must stay valid until the
  // call returns.
  Result<CmAnswer> enroll(const protocol::CertRequest& request,
                          const std::string& saved_request_path);
  // A genm; with `saved_request_path` crash-safe as above (empty: built anew on each attempt,
  // for questions that change nothing or carry their own idempotency key).
  Result<CmAnswer> general_message(const std::vector<protocol::InfoItem>& items,
                                   const std::string& procedure = {},
                                   const std::string& saved_request_path = {});
  // An rr for `cert` with a CRLReason code (-1: none). A certificate revoked before is a refusal
  // whose refusal.fail_info has the certRevoked bit.
  Result<CmAnswer> revoke(X509* cert, int reason);

  // For tests and the bench: requests sent to the CM host (attempts included), and enrolments
  // answered by joining one in flight or from the answers of this process.
  struct Counters {
    std::uint64_t sent = 0;
    std::uint64_t joined = 0;
  };
  Counters counters() const;

  struct Impl;

 private:
  explicit CmLink(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The link of one station object (the station, the soft-token RA, reissue), opened when a request
// first needs it: a station that never talks to the CM host starts no lanes. Thread-safe.
class CmLinkOnFirstUse {
 public:
  // The link, opened with these arguments on the first call (a failed open is tried again on the
  // next call); later calls return the same link.
  Result<CmLink*> get(const std::string& cm_url, const std::string& cm_ca,
                      const CmLink::OfficerSource& officer);

 private:
  std::mutex mu_;
  std::unique_ptr<CmLink> link_;
};

// "https://HOST:PORT" as host and port; an error naming what is wrong otherwise.
Result<std::pair<std::string, std::uint16_t>> parse_cm_url(const std::string& cm_url);

}  // namespace persoflow::actors
