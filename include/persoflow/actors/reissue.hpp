// The executors of the reissue machine (machines/reissue.hpp) on real parts: the CM host over
// CMP/HTTPS (certificate search, p10cr / cr / kur, the e-mail verification status, rr), the
// PKCS#11 card through devices::Card (key generated on the card, CSR built and signed on it,
// certificate installed), and the officer's PKCS#12. docs/reissue.md describes the workflow.
//
// Guarantees (the persistence contract of DESIGN.md):
// - The request (which certificate, which key method, the CSR) is saved in the state directory
//   before the workflow starts (<state_dir>/reissue/<workflow id>.json and .csr), so a restarted
//   process answers the operator questions the same way.
// - Every CMP certificate request's DER is written (fsync, rename) to
//   <state_dir>/cmp/<transactionID>.der before it is sent and resent byte for byte on a repeat:
//   the CM host answers from its store, never a second certificate.
// - A workflow waiting for e-mail verification polls the CM host (persoflowEmailVerification)
//   from its journaled state; a killed process resumes polling where it stopped.
// - The key generated on the card has CKA_ID devices::derive_key_id(<the machine's key id>); the
//   certificate is installed under the same id, a present one counting as installed.
// - The previous certificate is revoked with reason superseded; one already revoked counts as
//   revoked.
// Executors are blocking (they run on the runtime's pool); all may be called from any thread.
#pragma once

#include <memory>
#include <string>

#include "persoflow/actors/executor.hpp"
#include "persoflow/actors/station.hpp"
#include "persoflow/common/status.hpp"
#include "persoflow/machines/machine.hpp"

namespace persoflow::actors {

struct ReissueRequest {
  std::string workflow_id;                    // [A-Za-z0-9._-]
  std::string search;                         // serial:<hex> | id:<decimal>
  std::string procedure = "reissue-verified";  // CM certificate procedure of the new certificate
  std::string method;                         // csr | card
  std::string csr_pem;                        // method csr: the CSR as given (PEM or DER bytes)
  std::string token_label;                    // method card
  std::string token_serial;                   // method card; filled from the label
  std::string key_algorithm;                  // method card: e.g. EC:secp256r1, RSA:3072
  bool revoke_previous = true;
};

class ReissueStation {
 public:
  // Opens the station configuration's parts (the officer, the PKCS#11 module path, the state
  // directory; SOFTHSM2_CONF exported before the module is loaded).
  static Result<std::shared_ptr<ReissueStation>> open(StationConfig config);
  ~ReissueStation();
  const StationConfig& config() const;

  // Validates the request (kInvalidArgument naming the field), resolves the card's serial from
  // its label, and saves it durably with the CSR.
  Status save_request(ReissueRequest& request);
  Result<ReissueRequest> load_request(const std::string& workflow_id) const;

  // The first event of the workflow: the procedure's allowed keys and e-mail verification
  // settings asked from the CM host (persoflowProcedureList).
  Result<machines::Event> start_event(const ReissueRequest& request);

  // persoflowCertificateSearch at the CM host, signed by the station's officer: the query
  // {"serial"} | {"cert_id"} | {"subject"[, "substring"]} as JSON text; the answer's JSON text.
  // A refusal by the CM host: kRejected with its reason.
  Result<std::string> search_certificates(const std::string& query_json);

  // Where the operator answers what the request cannot: after a refused CSR, the file name of a
  // corrected CSR (one line; an empty line or the end of the input cancels the workflow). -1
  // (the default): nobody to ask, a refused CSR cancels the workflow with its reason.
  void set_operator_input(int fd);

  // Where a finished workflow's new certificate is (DER), by serial.
  std::string certificate_path(const std::string& serial_hex) const;

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  explicit ReissueStation(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// FindCertificate, AskOperator, ValidateCsr, GenerateKeyOnCard, BuildCsrOnCard, SignWithOfficer,
// SubmitToCm, PollCm, WriteCertificateToCard, RevokeCertificate, RevokeIssuedCertificates,
// RollbackCard, NotifyOperator (printed on stderr). `retry_when_asked`: the operator asked for
// this run (a resume), so a workflow suspended because the CM host was unreachable is retried
// (AskOperator{retry} answered RetryRequested); otherwise that question suspends the workflow.
void install_reissue_executors(ExecutorRegistry& registry, std::shared_ptr<ReissueStation> station,
                               bool retry_when_asked = false);

// The station of $PERSOFLOW_STATION_CONFIG, opened once (for `persoflow workflows resume`).
Result<std::shared_ptr<ReissueStation>> reissue_station_from_environment();

}  // namespace persoflow::actors
