// The station's internals shared by its executor files (actors/station.cpp: issue-card and the
// executors both machines share; actors/update_card_executors.cpp: update-card's own). Private
// to actors/: not a public header.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "persoflow/actors/cm_link.hpp"
#include "persoflow/actors/executor.hpp"
#include "persoflow/actors/state_files.hpp"
#include "persoflow/actors/station.hpp"
#include "persoflow/devices/card.hpp"
#include "persoflow/devices/officer.hpp"
#include "persoflow/machines/machine.hpp"
#include "persoflow/protocol/cmp_client.hpp"

namespace persoflow::actors {
namespace detail {

namespace fs = std::filesystem;
namespace dv = persoflow::devices;
namespace pr = persoflow::protocol;
using machines::Command;
using machines::Event;
using machines::Fields;

std::string field(const Command& c, const std::string& key);
using persoflow::actors::first_line;  // persoflow/actors/state_files.hpp
using persoflow::actors::read_file;
using persoflow::actors::write_durably;
// A workflow id or reference as a file name: only [A-Za-z0-9._-].
bool safe_name(const std::string& name);
Event event(std::string type, Fields fields = {});

}  // namespace detail

struct Station::Impl {
  StationConfig config;
  std::string card_pin;
  std::string card_puk;  // the cards' PUK before their workflow sets one (card_pin_count 2)

  // One Card per token serial, opened on first use; `mu` serialises an executor's sequence of
  // calls on that card (login state included).
  struct CardSlot {
    std::mutex mu;
    std::unique_ptr<devices::Card> card;
    bool logged_in = false;
    std::string current_pin;
  };
  std::mutex cards_mu;
  std::map<std::string, std::shared_ptr<CardSlot>> cards;

  std::mutex officer_mu;
  std::unique_ptr<devices::OfficerToken> officer;

  std::mutex display_mu;
  PinDisplay display;

  // Answers of the CM host about its configuration (the procedure list, a token procedure's
  // trusted TC issuers) by info type and request, kept for kConfigurationReuse: every card of a
  // batch asks the same, and one answer serves them all (configuration_genm).
  static constexpr std::chrono::seconds kConfigurationReuse{10};
  struct KeptAnswer {
    nlohmann::json answer;
    std::chrono::steady_clock::time_point fetched;
  };
  std::mutex kept_answers_mu;  // held while fetching: cards arriving meanwhile take that answer
  std::map<std::string, KeptAnswer> kept_answers;

  // References of the CA certificates this process has written to state_dir/certs (durably).
  std::mutex saved_ca_mu;
  std::set<std::string> saved_ca;

  // Every request to the CM host goes through this link, signed with the officer's credential.
  CmLinkOnFirstUse link;
  Result<CmLink*> cm_link() {
    return link.get(config.cm_url, config.cm_ca,
                    [this] { return officer_token("officer-password-file"); });
  }

  std::string dir(const char* sub) const {
    return (std::filesystem::path(config.state_dir) / sub).string();
  }

  std::shared_ptr<CardSlot> slot(const std::string& serial) {
    std::lock_guard lock(cards_mu);
    auto& s = cards[serial];
    if (!s) s = std::make_shared<CardSlot>();
    return s;
  }

  // Opens the card (only the one with this serial) unless the slot holds it already.
  Status opened(CardSlot& s, const std::string& serial) {
    if (s.card) return Status::ok();
    devices::TokenSelector sel;
    sel.serial = serial;
    PF_ASSIGN_OR_RETURN(s.card, devices::open_card(config.pkcs11_module, sel));
    return Status::ok();
  }

  // Opens the card (only the one with this serial) and logs in with the card's PIN.
  Status ready(CardSlot& s, const std::string& serial) {
    PF_RETURN_IF_ERROR(opened(s, serial));
    if (!s.logged_in) {
      Status in = s.card->login(devices::UserType::kUser, card_pin);
      // The same wrong PIN again only uses up the card's tries: no retry, the workflow waits for
      // the operator (the right card_pin_file, or the right card).
      if (devices::is_pin_refused(in)) return refusal(in.message());
      PF_RETURN_IF_ERROR(in);
      s.logged_in = true;
      s.current_pin = card_pin;
    }
    return Status::ok();
  }

  Result<devices::OfficerToken*> officer_token(const std::string& pin_ref) {
    std::lock_guard lock(officer_mu);
    if (officer) return officer.get();
    if (pin_ref != "officer-password-file") {
      return make_status(Errc::kNotFound, "unknown officer PIN reference '" + pin_ref + "'");
    }
    PF_ASSIGN_OR_RETURN(std::string password, first_line(config.officer_password_file));
    PF_ASSIGN_OR_RETURN(officer, devices::open_officer_pkcs12(config.officer_p12, password));
    return officer.get();
  }
};

namespace detail {

using Impl = Station::Impl;

// What the card `serial` holds, after logging in; kRejected when the card in the slot is another
// one (a workflow never acts on a card but its own). The caller holds the slot's mutex.
Result<devices::CardContents> workflow_card_contents(Impl& st, Impl::CardSlot& slot,
                                                     const std::string& serial);

// A genm about the CM host's configuration (info type `oid`, JSON `body`): the answer kept from
// an identical request made less than Impl::kConfigurationReuse ago, else asked now. A refusal
// (`refusal` set, an empty object returned) or a failure is never kept.
Result<nlohmann::json> configuration_genm(Impl& st, const char* oid, const nlohmann::json& body,
                                          std::string* refusal);

// The card's keys, certificates and transport certificate as CardContentsRead fields (key.<i>.id,
// key.<i>.label, key.<i>.cert_serial, tc.*, tc.key), after checking it is the card `serial`.
// The caller holds the slot's mutex.
Result<Fields> card_contents_fields(Impl& st, Impl::CardSlot& slot, const std::string& serial);

// update-card (actors/update_card_executors.cpp): the AskOperator answers of an update request,
// and the executors of ValidateTransportCertificate and NotifyOperator.
Result<Event> ask_operator_update(Station& station, const CardRequest& request, const Command& c);
void install_update_card_executors(ExecutorRegistry& registry, std::shared_ptr<Station> station);

// ----- Keys from the CM host (actors/card_key_executors.cpp) -----

// ProcedureChosen for an issue request naming a token procedure: from the CM host's procedure
// list, key_archiving where it has an archive key procedure, recovery.<r>.* per recovery one.
Result<Event> procedure_chosen_from_token_procedure(Station& station, const CardRequest& request);

// replace_ca (yes|no) and operator_pin (none|required) of ProcedureChosen, as the CM host's token
// procedure `name` has them: issue-card and update-card write CA certificates and ask the
// operator PIN by the same rules.
Result<Fields> card_rules_of_token_procedure(Station& station, const std::string& name);

// A key the CM host generated or recovered ("cm:<transactionID>:<j>"), from its saved genp: the
// certificate (DER) and the private key enveloped for the officer (CMS DER).
struct CmKey {
  std::string certificate_der;
  std::string envelope;
};
Result<CmKey> cm_key(Impl& st, const std::string& key_ref);

// Writes that key to the card under CKA_ID `cka` (opened in memory with the officer's key); a
// key already there counts as written. The caller holds the card slot's mutex, logged in.
Status write_cm_key(Impl& st, devices::Card& card, const std::string& key_ref,
                    const std::vector<unsigned char>& cka, const std::string& label);

// The label of the CA certificates ReplaceCaCertificates writes (what it replaces).
inline constexpr const char* kCaCertificateLabel = "CA certificate";

// OperatorPinEntered{pin_ref=operator-pin-file}: the PIN stays in the station's
// operator_pin_file; without one, an error the operator can act on.
Result<Event> operator_pin_entered(Station& station);

// RequestServerKeygenAndArchive, RequestKeyRecovery (genm to the CM host) and
// ReplaceCaCertificates.
void install_card_key_executors(ExecutorRegistry& registry, std::shared_ptr<Station> station);

// ----- Card PINs (actors/card_pin_executors.cpp) -----

// The AskOperator answers of the card PIN modes: pin (the entered PIN by reference, with the
// warning that it is not checked against the card's PIN policy), pin_mailer_address,
// pin_letter_id.
Result<Event> card_pin_answer(Station& station, const CardRequest& request, const Command& c);

// Sets the card's PUK (its second PIN; SoftHSM2's SO PIN) to `puk`, from the station's
// card_puk_file: in a session of its own with the token's other sessions of this process closed
// (an SO login refuses read-only ones), so the slot's user login is gone afterwards. A repeat
// after the change finds `puk` already set.
Status set_card_puk(Impl& st, const std::string& serial, const std::string& puk);

// QueuePinLetter (genm persoflowPinLetterQueue) and ResolvePinLetter (persoflowPinLetterBind).
void install_card_pin_executors(ExecutorRegistry& registry, std::shared_ptr<Station> station);

}  // namespace detail
}  // namespace persoflow::actors
