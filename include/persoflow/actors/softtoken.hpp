// The soft-token RA: what the issue-soft-token executors need to carry out the machine's commands
// on real parts — the officer's credential (PKCS#12) and, for entropy, the officer's card
// (PKCS#11), the CM host over CMP/HTTPS, and a state directory for what must outlive a crash
// without entering the journal (docs/softtoken.md).
//
// Guarantees:
// - A key the RA generates is written (mode 0600) to <state>/keys/<key id>.pem before its event
//   is journaled; a repeated GenerateKeyLocally finds it there and never makes a second one. It
//   is deleted once the PKCS#12 holding it is written.
// - Every CMP request's DER (ir, and the genm of server key generation and recovery) is written
//   (fsync, rename) to <state>/cmp/<transactionID>.der before it is sent; a repeat resends those
//   exact bytes, so the CM host answers from its store: never a second certificate or key.
// - PINs (the PKCS#12 password) live only in <state>/secrets/<ref> (0600) between their
//   generation or entry and their use; the journal holds the reference only.
// - Keys archived or recovered by the CM host arrive as CMS EnvelopedData for the officer and are
//   opened only in memory when the PKCS#12 is written.
//
// The operator's answers (subject fields, algorithm, files, PIN options) are saved as
// <state>/requests/<workflow id>.json before the workflow starts, so a resumed workflow answers
// the same way.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "persoflow/actors/executor.hpp"
#include "persoflow/common/status.hpp"
#include "persoflow/machines/machine.hpp"

namespace persoflow::actors {

struct SoftTokenConfig {
  std::string cm_url;                 // "https://127.0.0.1:PORT"
  std::string cm_ca;                  // CA certificate(s) (PEM): TLS and CMP trust, the chain
  std::string officer_p12;            // the officer's PKCS#12 (signs requests, opens envelopes)
  std::string officer_password_file;  // its password (first line)
  std::string pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so";
  std::string softhsm2_conf;          // exported as SOFTHSM2_CONF when non-empty
  std::string officer_card;           // token label of the officer's card (entropy); empty: none
  std::string state_dir;              // <state_dir>/softtoken/{requests,keys,cmp,certs,secrets}
  std::string journal;                // the soft-token journal (default <state>/journal.db)
  int pkcs12_iterations = 600000;     // PBKDF2 iterations of the PKCS#12 files
};

// Reads the station configuration file (JSON; station.hpp) and the soft-token keys in it:
// "officer_card", "pkcs12_iterations", "softtoken_journal". Relative paths are relative to the
// file's folder.
Result<SoftTokenConfig> load_softtoken_config(const std::string& path);

// One soft token's request: the answers the operator gave.
struct SoftTokenRequest {
  std::string workflow_id;
  std::string token_procedure;                 // e.g. "softtoken-standard"
  std::map<std::string, std::string> subject;  // "CN" -> "Alice"
  std::string algorithm;                       // empty: the list's default
  std::string p12_file;
  std::string cert_file;
  // Per key procedure of the token procedure (in its order): its name and search criterion.
  std::vector<std::string> key_procedures;
  std::vector<std::string> key_searches;  // "auto" | "serial:<hex>" | "subject:<t>" | "id:<d>"
  std::vector<std::string> certificate_procedures;
  // PIN: how the procedure delivers it and its length.
  std::string pin_procedure;
  int pin_min_length = 6;
  int pin_max_length = 8;
  int pin_fd = -1;              // PIN entered at the RA: read from this descriptor (else tty)
  std::string mail_to;          // PIN mailer: the holder's e-mail address
  std::string pin_letter_id;    // pre-printed PIN/PUK letter
};
Result<SoftTokenRequest> softtoken_request_from_json(const std::string& text);
std::string softtoken_request_to_json(const SoftTokenRequest& request);

class SoftTokenRa {
 public:
  // Exports SOFTHSM2_CONF, creates the state folders (secrets and keys 0700).
  static Result<std::shared_ptr<SoftTokenRa>> open(SoftTokenConfig config);
  ~SoftTokenRa();

  const SoftTokenConfig& config() const { return config_; }

  Status save_request(const SoftTokenRequest& request);
  Result<SoftTokenRequest> load_request(const std::string& workflow_id) const;

  // The first event of the workflow (ProcedureChosen), built from the CM host's procedure list
  // (genm persoflowProcedureList) for the request's token procedure; fills the request's
  // certificate and key procedure names and PIN settings. Unknown procedure, a procedure for
  // smart cards only: kInvalidArgument naming the ones there are.
  Result<machines::Event> procedure_chosen(SoftTokenRequest& request);

  // Where a PIN is shown, once. Default: printed on stdout.
  using PinDisplay = std::function<void(const std::string& workflow_id, const std::string& pin)>;
  void set_pin_display(PinDisplay display);
  // Where refusals and warnings for the operator go. Default: stderr.
  using Notice = std::function<void(const std::string& workflow_id, const std::string& text)>;
  void set_notice(Notice notice);

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  SoftTokenRa(SoftTokenConfig config, std::unique_ptr<Impl> impl);
  SoftTokenConfig config_;
  std::unique_ptr<Impl> impl_;
};

// The operator's answer to the request question (RequestEntered): subject fields, algorithm,
// file names and key searches of `request`. Also how a corrected request is handed to a workflow
// whose request was refused (Runtime::post_event).
machines::Event request_entered_event(const SoftTokenRequest& request);

// The executors of the issue-soft-token machine: AskOperator (answered from the saved request),
// NotifyOperator, InitializeKeyGeneration, GenerateKeyLocally, RequestServerKeygenAndArchive,
// RequestKeyRecovery, SignWithOfficer, SubmitToCm, GeneratePin, ResolvePinLetter, WritePkcs12,
// WriteCertificateFile, ShowPinOnce, QueuePinLetter, RemoveFiles. All blocking.
void install_softtoken_executors(ExecutorRegistry& registry, std::shared_ptr<SoftTokenRa> ra);

}  // namespace persoflow::actors
