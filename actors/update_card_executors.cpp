// The update-card machine's own executors on real parts (station.hpp): the operator's answers of
// an update request, the transport certificate (TC) validated by the CM host before anything is
// written, and policy refusals. The commands update-card shares with issue-card (ReadCardContents,
// SignWithOfficer, SubmitToCm as a cr for a key the card holds, WriteKeysAndCertificates with
// its remove.<n> list) are carried out by actors/station.cpp.
//
// Every executor here only reads the card and asks the CM host: a repeat after a crash asks
// again and gets the same answer.
#include <openssl/cmp.h>
#include <openssl/evp.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "cm_genm.hpp"
#include "persoflow/actors/replay.hpp"
#include "persoflow/machines/workflow_support.hpp"
#include "persoflow/protocol/base64.hpp"
#include "persoflow/protocol/cm_info_types.hpp"
#include "station_impl.hpp"

namespace persoflow::actors {
namespace detail {
namespace {

using nlohmann::json;
namespace wf = machines::wf;

// One persoflowTcValidation exchange (docs/protocol.md). A refusal by the CM host is
// Errc::kRejected with `refused` set; a transport failure is any other Status (retried).
// `configuration`: a request without a certificate (the token procedure's trusted TC issuers),
// whose answer may be one kept from the last few seconds (configuration_genm).
Result<json> tc_validation_genm(Impl& st, const json& request, bool* refused,
                                bool configuration = false) {
  std::string refusal;
  Result<json> asked = json::object();
  if (configuration) {
    asked = configuration_genm(st, protocol::kOidTcValidation, request, &refusal);
  } else {
    PF_ASSIGN_OR_RETURN(CmLink * link, st.cm_link());
    asked = genm::json_genm(*link, protocol::kOidTcValidation, request, &refusal);
  }
  PF_ASSIGN_OR_RETURN(json answer, std::move(asked));
  *refused = !refusal.empty();
  if (*refused) return make_status(Errc::kRejected, refusal);
  return answer;
}

std::string token_procedure_of(const Station& station, const CardRequest& request) {
  return request.token_procedure.empty() ? station.config().token_procedure
                                         : request.token_procedure;
}

// The entry a request's KEY names on the card: its number, CKA_ID (hex), label, or "tc".
Result<int> entry_of(const Fields& card, const std::string& key, const std::string& workflow_id) {
  const int n = wf::list_size(card, "key");
  if (key == "tc") {
    if (!wf::is_yes(card, "tc.present")) {
      return make_status(Errc::kInvalidArgument, "request " + workflow_id +
                                                     ": the card holds no transport certificate "
                                                     "(action tc=...)");
    }
    return wf::get_int(card, "tc.key", 0);
  }
  if (!key.empty() && key.find_first_not_of("0123456789") == std::string::npos && key.size() < 3) {
    const int i = std::stoi(key);
    if (i < n) return i;
  }
  for (int i = 0; i < n; ++i) {
    const std::string id = wf::get(card, wf::item("key", i, "id"));
    if (!id.empty() && (id == key || wf::get(card, wf::item("key", i, "label")) == key)) return i;
  }
  return make_status(Errc::kInvalidArgument, "request " + workflow_id + ": the card has no key '" +
                                                 key + "' (entries 0.." + std::to_string(n - 1) +
                                                 ", a CKA_ID, a label or tc)");
}

Result<Event> validate_transport_certificate(Station& station, const Command& c,
                                             const CommandContext& ctx) {
  Impl& st = station.impl();
  PF_ASSIGN_OR_RETURN(CardRequest request, station.load_request(ctx.workflow_id));
  const std::string serial = field(c, "token_serial");
  const std::string tc_serial = field(c, "tc_serial");
  std::string der;
  {
    auto slot = st.slot(serial);
    std::lock_guard lock(slot->mu);
    PF_ASSIGN_OR_RETURN(dv::CardContents contents, workflow_card_contents(st, *slot, serial));
    for (const dv::CertificateInfo& cert : contents.certificates) {
      if (cert.serial_hex == tc_serial) der = cert.der;
    }
  }
  if (der.empty()) {
    return event("TcRejected",
                 {{"reason", "the card no longer holds transport certificate " + tc_serial}});
  }
  bool refused = false;
  auto answer = tc_validation_genm(st,
                                   json{{"token_procedure", token_procedure_of(station, request)},
                                        {"certificate", pr::base64_encode(der)}},
                                   &refused);
  if (!answer) {
    if (refused) return event("TcRejected", {{"reason", answer.status().message()}});
    return answer.status();
  }
  if (answer->value("valid", false)) return event("TcValidated");
  return event("TcRejected",
               {{"reason", answer->value("reason", "the CM host did not accept it")}});
}

// The certificates a cancelled workflow will not deliver, revoked with cessationOfOperation
// (CMP rr for each serial.<i>, the certificate from <state_dir>/certs). One already revoked
// counts as done. Acknowledged: no machine event answers it.
Result<Event> revoke_issued_certificates(Impl& st, const Command& c) {
  constexpr int kCessationOfOperation = 5;
  for (const std::string& serial : wf::values(c.fields, "serial")) {
    PF_ASSIGN_OR_RETURN(std::string der, read_file(st.dir("certs") + "/" + serial + ".der"));
    PF_ASSIGN_OR_RETURN(pr::X509Ptr cert, pr::x509_from_der(der));
    PF_ASSIGN_OR_RETURN(CmLink * link, st.cm_link());
    PF_ASSIGN_OR_RETURN(CmAnswer answer, link->revoke(cert.get(), kCessationOfOperation));
    const bool already = answer.refusal.fail_info & (1 << OSSL_CMP_PKIFAILUREINFO_certRevoked);
    if (answer.refused && !already) {
      return make_status(Errc::kRejected, "revoking " + serial + " refused: " +
                                              answer.refusal_message);
    }
  }
  return command_acknowledged();
}

}  // namespace

Result<Event> ask_operator_update(Station& station, const CardRequest& request, const Command& c) {
  Impl& st = station.impl();
  const std::string ask = field(c, "ask");
  if (ask == "procedure") {
    // The token procedure's trusted TC issuers, as the CM host has them: the machine refuses a
    // TC from any other issuer before anything is written.
    const std::string token_procedure = token_procedure_of(station, request);
    bool refused = false;
    auto rules = tc_validation_genm(st, json{{"token_procedure", token_procedure}}, &refused,
                                    /*configuration=*/true);
    if (!rules && refused) {
      return refusal("the CM host refused token procedure '" + token_procedure +
                     "': " + rules.status().message());
    }
    if (!rules) return rules.status();
    // CA certificates and the operator PIN: as for issue-card, what the token procedure says.
    PF_ASSIGN_OR_RETURN(Fields f, card_rules_of_token_procedure(station, token_procedure));
    f["procedure"] = request.procedure.empty() ? station.config().procedure : request.procedure;
    f["token_procedure"] = token_procedure;
    int n = 0;
    for (const json& issuer : rules->value("trusted_issuers", json::array())) {
      f["tc_trusted_issuer." + std::to_string(n++)] = issuer.value("subject", "");
    }
    return event("ProcedureChosen", std::move(f));
  }
  if (ask == "key_actions") {
    Fields card;
    {
      auto slot = st.slot(request.token_serial);
      std::lock_guard lock(slot->mu);
      PF_ASSIGN_OR_RETURN(card, card_contents_fields(st, *slot, request.token_serial));
    }
    Fields f;
    for (int i = 0; i < wf::list_size(card, "key"); ++i) f[wf::item("key", i, "action")] = "blank";
    for (const auto& [key, action] : request.actions) {
      PF_ASSIGN_OR_RETURN(int i, entry_of(card, key, request.workflow_id));
      f[wf::item("key", i, "action")] = action;
    }
    for (const auto& [name, value] : request.subject) f["subject." + name] = value;
    return event("ActionsChosen", std::move(f));
  }
  if (ask == "signature_pin") {
    // The officer's PKCS#12 password stays in its file; the journal holds this reference only.
    return event("OfficerPinEntered", {{"pin_ref", "officer-password-file"}});
  }
  if (ask == "card_pin") {
    // The card's PIN stays in the station's card_pin_file; the journal holds this reference.
    return event("CardPinEntered",
                 {{"pin_index", field(c, "pin_index").empty() ? "0" : field(c, "pin_index")},
                  {"pin_ref", "card-pin-file"}});
  }
  return make_status(Errc::kUnsupported, "the station cannot answer the operator question '" + ask +
                                             "' unattended; answer it at an operator terminal");
}

void install_update_card_executors(ExecutorRegistry& registry, std::shared_ptr<Station> station) {
  RetryPolicy cm{6, std::chrono::milliseconds(30'000), std::chrono::milliseconds(200),
                 std::chrono::milliseconds(5'000)};
  auto s = station;
  registry.add("ValidateTransportCertificate",
               blocking_executor(
                   [s](const Command& c, const CommandContext& ctx) {
                     return validate_transport_certificate(*s, c, ctx);
                   },
                   cm));
  registry.add("RevokeIssuedCertificates", blocking_executor(
                                               [s](const Command& c, const CommandContext&) {
                                                 return revoke_issued_certificates(s->impl(), c);
                                               },
                                               cm));
  // Tells the operator (stderr; the reason is journaled with the command) and acknowledges the
  // command without an event for the machine. After a policy refusal (add on a TC card, nothing
  // to update, no TC controls) the workflow then waits, suspended, for an operator's decision
  // (another choice as an outside event, or `persoflow workflows cancel`): nothing was written.
  registry.add("NotifyOperator", blocking_executor(
                                     [](const Command& c, const CommandContext& ctx) {
                                       std::cerr << "workflow " << ctx.workflow_id << ": "
                                                 << field(c, "reason") << "\n";
                                       return Result<Event>(command_acknowledged());
                                     },
                                     RetryPolicy{1}));
}

}  // namespace detail

Result<std::string> write_transport_certificate(Station& station, const std::string& token_serial,
                                                const std::string& subject,
                                                const std::string& procedure) {
  using namespace detail;
  Impl& st = station.impl();
  auto slot = st.slot(token_serial);
  std::lock_guard lock(slot->mu);
  PF_ASSIGN_OR_RETURN(dv::CardContents contents, workflow_card_contents(st, *slot, token_serial));
  for (const dv::CertificateInfo& cert : contents.certificates) {
    if (cert.transport_certificate) return cert.serial_hex;
  }
  PF_ASSIGN_OR_RETURN(dv::KeyAlgorithm algorithm, dv::parse_key_algorithm(st.config.key_algorithm));
  const std::string key_name = "transport/" + token_serial;
  PF_ASSIGN_OR_RETURN(dv::KeyInfo key, slot->card->generate_key(algorithm, key_name, "Card key"));
  PF_ASSIGN_OR_RETURN(EVP_PKEY * private_key, slot->card->private_key(key.id));
  pr::EvpPkeyPtr key_owner(private_key);
  PF_ASSIGN_OR_RETURN(CmLink * link, st.cm_link());
  pr::CertRequest request;
  request.type = pr::CertRequestType::kIr;
  request.procedure = procedure;
  request.subject = subject;
  request.key = private_key;
  PF_ASSIGN_OR_RETURN(CmAnswer answer, link->enroll(request, /*saved_request_path=*/{}));
  if (answer.refused) {
    return make_status(Errc::kRejected,
                       "the CM host refused the transport certificate: " + answer.refusal_message);
  }
  PF_ASSIGN_OR_RETURN(std::string der, pr::x509_to_der(answer.enrolled->cert.get()));
  PF_RETURN_IF_ERROR(slot->card->store_certificate(der, key.id, "Transport certificate"));
  return answer.enrolled->serial_hex;
}

}  // namespace persoflow::actors
