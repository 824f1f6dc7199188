// The CM client actor: every certificate request of the station's workflows to
// the CM host goes through it (CMP over HTTPS, protocol::CmpClient).
//
// - It owns a few lanes, each a thread with its own CmpClient (a client is not
// thread-safe), made
//   by the caller's factory (the station's CMP setup: CM host address, CA,
//   officer credential).
// - The CMP transactionID is the idempotency key. A request whose transactionID
// is already in
//   flight joins it (an engine retry after a timeout never sends a second
//   request beside the first); one that already got its certificate in this
//   process gets the same answer again.
// - Before a request is sent its DER is saved (`saved_request_path`, fsync); a
// request whose DER
//   is saved (an earlier attempt, an earlier process) resends those exact
//   bytes, so the CM host answers from its store and never issues twice.
// - A transport failure (CM host unreachable, connection broken) is retried
// with backoff
//   (RetryPolicy: attempts, initial_delay doubling up to max_delay) on a fresh
//   connection; a CMP answer (a certificate or a rejection) is never retried.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "persoflow/actors/executor.hpp"
#include "persoflow/common/status.hpp"
#include "persoflow/protocol/cmp_client.hpp"

namespace persoflow::actors {

struct CmEnrolment {
  // Set when the CM host answered with a certificate.
  std::shared_ptr<protocol::Enrolled> enrolled;
  // Set (pki_status >= 0) when the CM host refused the request.
  protocol::CmpFailure refusal;
  std::string refusal_message;
};

class CmClientActor {
public:
  using ClientFactory =
      std::function<Result<std::unique_ptr<protocol::CmpClient>>()>;
  struct Options {
    unsigned lanes = 2; // requests sent at once
    RetryPolicy transport_retry{4, std::chrono::milliseconds(0),
                                std::chrono::milliseconds(200),
                                std::chrono::milliseconds(2'000)};
  };

  CmClientActor(ClientFactory factory, Options options);
  // Finishes the requests already queued, then stops the lanes.
  ~CmClientActor();
  CmClientActor(const CmClientActor &) = delete;
  CmClientActor &operator=(const CmClientActor &) = delete;

  // Sends `request` (its transaction_id set, 16 bytes) and blocks until the CM
  // host answered or the transport attempts are exhausted (then the last
  // transport error). `request.key` and the other pointers must stay valid
  // until the call returns. Called from executor threads, never from a lane.
  Result<CmEnrolment> enroll(const protocol::CertRequest &request,
                             const std::string &saved_request_path);

  // For tests and the bench: requests sent to the CM host (attempts included),
  // and requests answered by joining one in flight or from the answers of this
  // process.
  struct Counters {
    std::uint64_t sent = 0;
    std::uint64_t joined = 0;
  };
  Counters counters() const;

  struct Impl;

private:
  std::unique_ptr<Impl> impl_;
};

} // namespace persoflow::actors
