// The station: what the issue-card executors need to carry out the machine's commands on real
// parts — the PKCS#11 module and its cards, the officer's credential, the CM host over CMP/HTTPS,
// and a small state directory for what must outlive a crash without entering the journal.
//
// Guarantees (docs/station.md):
// - A key is generated on the card under CKA_ID = devices::derive_key_id(<the machine's key id>),
//   which the machine derives from the workflow id: a resumed workflow finds its key there.
// - Every CMP request's DER is written (fsync, rename) to <state_dir>/cmp/<transactionID>.der
//   before it is sent; a repeated SubmitToCm resends those exact bytes, so the CM host answers
//   from its store and never issues a second certificate.
// - A generated card PIN is kept only in <state_dir>/secrets/<ref> (mode 0600) between its
//   generation and its single showing, then deleted; the journal holds the reference only.
// - The certificate is written only to the card whose serial the workflow names; a present
//   certificate counts as written.
//
// The operator's answers (procedure, subject fields, PIN delivery) come from the card's request,
// saved as <state_dir>/requests/<workflow id>.json before the workflow starts, so a restarted
// station answers the same way.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "persoflow/actors/executor.hpp"
#include "persoflow/common/status.hpp"

namespace persoflow::actors {

struct StationConfig {
  std::string cm_url;                 // "https://127.0.0.1:PORT"
  std::string cm_ca;                  // CA certificate(s) (PEM): the CM host's TLS and CMP trust
  std::string pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so";
  std::string softhsm2_conf;          // exported as SOFTHSM2_CONF when non-empty
  std::string officer_p12;            // the officer's PKCS#12
  std::string officer_password_file;  // its password (first line)
  std::string card_pin_file;          // the pre-personalised cards' user PIN (first line)
  // The cards' operator PIN (first line; 0600), asked where the token procedure needs one and
  // the CM database does not hold it; empty: such workflows wait for an operator.
  std::string operator_pin_file;
  std::string journal;                // the station journal
  std::string state_dir;              // requests/, cmp/, certs/, secrets/
  std::string procedure = "smartcard-auth";  // the CM certificate procedure (CMP path)
  std::string key_algorithm = "EC:secp256r1";
  int key_entries = 1;  // key entries of a blank pre-personalised card
  // The cards' PINs: 1, or 2 where a card has a second PIN (a PUK; on SoftHSM2 the SO PIN plays
  // it), which issue-card then sets and delivers beside the PIN. card_puk_file holds the
  // pre-personalised cards' PUK (first line), needed with two.
  int card_pin_count = 1;
  std::string card_puk_file;
  // Where queue lines with pin_delivery "entered" take their PINs from (never from the line):
  // "fd:N", a descriptor the station inherits, or a file; one line per PIN, in queue order (the
  // PIN, then the PUK for a card with two). Empty: such lines are refused.
  std::string entered_pins;
  // The CM token procedure of updates (its trusted TC issuers validate a card's TC) when a
  // request names none.
  std::string token_procedure = "smartcard-tc";
  // How SubmitToCm is retried when the CM host cannot be reached (station.conf "cm_retry":
  // {"attempts", "initial_delay_ms", "max_delay_ms"}): attempts, the wait before the second
  // (doubled for each later one, capped at the max). Each attempt is itself up to 4 sends by the
  // CM link (CmLinkOptions::transport_retry). Then the workflow is suspended.
  RetryPolicy cm_retry{6, std::chrono::milliseconds(30'000), std::chrono::milliseconds(200),
                       std::chrono::milliseconds(5'000)};
};

// Reads a station configuration (JSON); relative paths are relative to the file's folder.
Result<StationConfig> load_station_config(const std::string& path);
Status save_station_config(const StationConfig& config, const std::string& path);

// One card's request (a line of a queue file): issue-card, or update-card with an action per key.
struct CardRequest {
  std::string workflow_id;
  std::string workflow = "issue";  // issue | update (the machine issue-card | update-card)
  std::string token_label;
  std::string token_serial;  // filled from the token when empty
  std::string procedure;     // CM certificate procedure; empty: the station's
  // update: CM token procedure (trusted TC issuers); empty: the station's. issue: the token
  // procedure whose key procedures (generate & archive, recovery) apply; empty: keys generated
  // on the card only.
  std::string token_procedure;
  // The card PIN: generated (shown once) | entered (at the RA: the PIN is in
  // <state_dir>/secrets/<pin_ref>, saved there by the command that read it, never in the
  // request) | mailer (generated, queued as a PIN letter to mail_to) | letter (the PIN of the
  // pre-printed PIN/PUK letter pin_letter_id).
  std::string pin_delivery = "generated";
  std::string pin_ref;
  std::string puk_ref;  // entered: the second PIN (PUK) of a card with two, by reference too
  std::string mail_to;
  std::string pin_letter_id;
  std::map<std::string, std::string> subject;  // "CN" -> "Card 01"
  // update: KEY -> blank | issue | redo | add, where KEY is the key's entry number on the card
  // (0, 1, ...), its CKA_ID in hex, its label, or "tc" (the key holding the transport
  // certificate). Keys not named are left blank.
  std::map<std::string, std::string> actions;
  // issue: KEY is the entry number; ACTION add | recover | blank. A recover entry searches the
  // CM host's archive by `searches[KEY]` (serial:<hex> | subject:<text> | id:<decimal>; default
  // auto, the subject entered), and `request_flags[KEY]` (default | yes | no) sets its request
  // flag by hand. Keys from the CM host need `token_procedure` (its key procedures).
  std::map<std::string, std::string> searches;
  std::map<std::string, std::string> request_flags;
  // Where the request came from ("queue.jsonl:3"), named in its refusals; empty for a command line.
  std::string source;
  const char* machine() const { return workflow == "update" ? "update-card" : "issue-card"; }
};
Result<CardRequest> card_request_from_json(const std::string& line);
std::string card_request_to_json(const CardRequest& request);

// A new workflow id "<label>-<kind>-<UTC time to the millisecond>-<6 random hex digits>", e.g.
// "card-01-issue-20261203T072444.123Z-3fa9c1": two requests started in the same millisecond
// still get different ids (the random suffix), and it is a safe file name.
std::string new_workflow_id(const std::string& label, const std::string& kind);

// The entered PINs of queue lines (pin_delivery "entered", no pin_ref): each request takes the
// next line of config.entered_pins as its PIN, and the one after as its PUK where the cards have
// two PINs; saved in <state_dir>/secrets (0600) and named by reference (pin_ref, puk_ref). A
// request saved by an earlier run keeps the PINs it took then and reads none.
Status take_entered_pins(const StationConfig& config, std::vector<CardRequest>& requests);

class Station {
 public:
  // Exports SOFTHSM2_CONF (before the module is loaded) and creates the state folders.
  static Result<std::shared_ptr<Station>> open(StationConfig config);
  ~Station();

  const StationConfig& config() const { return config_; }

  // Saves the request (fsync) so any later process answers for the workflow.
  Status save_request(const CardRequest& request);
  Result<CardRequest> load_request(const std::string& workflow_id) const;
  // The serial of the token with this label (the module's view).
  Result<std::string> token_serial(const std::string& label);
  // Label -> serial of every token (the first token of a label): one listing for a whole queue,
  // where a listing per request reads every token's files each time.
  Result<std::map<std::string, std::string>> token_serials();
  // The serial of the token with this label in such a listing.
  Result<std::string> token_serial(const std::string& label,
                                   const std::map<std::string, std::string>& serials) const;

  // Opens the card and logs in with the card's PIN now, so the workflows that follow do not log
  // in (SoftHSM2 rewrites token.object in place at every login: a process killed during one can
  // leave the emulated card unreadable). Best effort: a card whose PIN was already changed by
  // its workflow is left to SetCardPin.
  Status prepare_card(const std::string& token_serial);

  // Where a PIN generated for a card is shown, once. `what` is "PIN", or "PUK" for the second
  // PIN of a card with two. Default: printed on stdout.
  using PinDisplay =
      std::function<void(const std::string& workflow_id, const std::string& token_serial,
                         const std::string& what, const std::string& pin)>;
  void set_pin_display(PinDisplay display);

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  Station(StationConfig config, std::unique_ptr<Impl> impl);
  StationConfig config_;
  std::unique_ptr<Impl> impl_;
};

// The executors of the issue-card machine on real parts: ReadCardContents, AskOperator (answered
// from the saved request), GenerateKeyOnCard, SignWithOfficer, SubmitToCm, WriteKeysAndCertificates,
// GeneratePin, SetCardPin, ShowPinOnce. All are blocking (they run on the runtime's pool).
// With them, the update-card machine's own: ValidateTransportCertificate (genm
// persoflowTcValidation to the CM host), NotifyOperator (printed and acknowledged: after a
// policy refusal the workflow waits, suspended, for an operator's decision), and the
// update answers of AskOperator (actions, token procedure, the card's PIN by reference). One
// registry carries both machines, so a station runs issue and update workflows at once.
void install_issue_card_executors(ExecutorRegistry& registry, std::shared_ptr<Station> station);

// The runtime's blocking threads for a station working on `cards` cards at once: one per card
// (4 to 64). A card command holds its thread for as long as the card takes (seconds for an RSA
// key on a real card; SoftHSM2 waits on its token files), and a card's commands never overlap, so
// fewer threads than cards leave cards waiting for a thread while the machine idles.
unsigned station_blocking_threads(std::size_t cards);

// Pre-personalisation, as a card bureau does it before a card reaches the RA: a key generated on
// the card (the station's key_algorithm, CKA_ID derived from "transport/<serial>"), its
// transport certificate issued by the CM host under the certificate procedure `procedure`
// (a transport procedure) for `subject` ("/CN=..."), stored on the card with the label
// "Transport certificate" (what devices::TransportCertificateRule::defaults() recognises).
// A card already holding a TC is left as it is. Returns the TC's serial (hex).
Result<std::string> write_transport_certificate(Station& station, const std::string& token_serial,
                                                const std::string& subject,
                                                const std::string& procedure = "transport");

// The station of $PERSOFLOW_STATION_CONFIG (for `persoflow workflows resume`), opened once.
Result<std::shared_ptr<Station>> station_from_environment();

}  // namespace persoflow::actors
