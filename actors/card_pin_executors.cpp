// The card PIN modes of the station (docs/station.md): entered at the RA (by reference: the PIN
// was saved in <state_dir>/secrets by the command that read it), generated and shown once, the
// PIN mailer (QueuePinLetter: a letter the CM host queues for secure printing), and the PIN/PUK
// letter ID (ResolvePinLetter: the letter's PIN, enveloped by the CM host for the officer).
//
// A PIN never enters the journal, the requests or the logs: it lives in <state_dir>/secrets/<ref>
// (0600) from its entry or generation until it is set on the card and delivered, then goes.
#include <openssl/crypto.h>

#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cm_genm.hpp"
#include "persoflow/machines/workflow_support.hpp"
#include "persoflow/protocol/base64.hpp"
#include "persoflow/protocol/cm_info_types.hpp"
#include "station_impl.hpp"

namespace persoflow::actors::detail {
namespace {

using nlohmann::json;

std::string secret_path(Impl& st, const std::string& ref) { return st.dir("secrets") + "/" + ref; }

// PIN mailer (genm::queue_pin_letter): the letter's ID and how the e-mail notice went are
// printed for the operator.
Result<Event> queue_pin_letter(Station& station, const Command& c, const CommandContext& ctx) {
  Impl& st = station.impl();
  PF_ASSIGN_OR_RETURN(CardRequest req, station.load_request(ctx.workflow_id));
  PF_ASSIGN_OR_RETURN(CmLink * link, st.cm_link());
  return genm::queue_pin_letter(
      *link, c, ctx, st.dir("secrets"), req.subject,
      "smart card " + req.token_label + " (serial " + req.token_serial + ")",
      [&](const std::string& line) {
        std::cout << line << " (" << ctx.workflow_id << ")" << std::endl;
      });
}

Result<Event> resolve_pin_letter(Impl& st, const Command& c, const CommandContext& ctx) {
  // "letter-": SetCardPin deletes it once the PIN is on the card (nothing delivers it after).
  const std::string ref = "letter-" + machines::wf::derive_id(ctx.idempotency_key, "letter");
  const Fields done{{"pin_index", field(c, "pin_index")}, {"pin_ref", ref}};
  if (fs::exists(secret_path(st, ref))) return event("PinLetterResolved", done);
  const std::string tid = machines::wf::derive_id(ctx.idempotency_key, "pin-letter-bind");
  bool refused = false;
  std::string why;
  PF_ASSIGN_OR_RETURN(CmLink * link, st.cm_link());
  PF_ASSIGN_OR_RETURN(
      json answer,
      genm::key_genm(*link, st.dir("cmp") + "/" + tid + ".der", st.dir("keys") + "/" + tid + ".json",
                     protocol::kOidPinLetterBind, json{{"letter_id", field(c, "letter_id")}}, {},
                     &refused, &why));
  if (refused) {
    return make_status(Errc::kRejected, "PIN letter " + field(c, "letter_id") + ": " + why);
  }
  PF_ASSIGN_OR_RETURN(std::string envelope,
                      protocol::base64_decode(answer["keys"][0].value("envelope", "")));
  PF_ASSIGN_OR_RETURN(dv::OfficerToken * officer, st.officer_token("officer-password-file"));
  PF_ASSIGN_OR_RETURN(std::string pin, genm::open_for_officer(*officer, envelope));
  Status saved = write_durably(secret_path(st, ref), pin + "\n", 0600);
  OPENSSL_cleanse(pin.data(), pin.size());
  PF_RETURN_IF_ERROR(saved);
  return event("PinLetterResolved", done);
}

}  // namespace

Result<Event> card_pin_answer(Station& station, const CardRequest& req, const Command& c) {
  const std::string ask = field(c, "ask");
  const std::string index = field(c, "pin_index").empty() ? "0" : field(c, "pin_index");
  if (ask == "pin") {
    if (req.pin_ref.empty() || !fs::exists(secret_path(station.impl(), req.pin_ref))) {
      // No PIN entered (the officer left the entry empty): one is generated and shown instead.
      return event("PinEntryCancelled", {{"pin_index", index}});
    }
    std::cerr << "warning (" << req.workflow_id << "): " << field(c, "warning") << std::endl;
    return event("PinEntered", {{"pin_index", index}, {"pin_ref", req.pin_ref}});
  }
  if (ask == "pin_mailer_address") {
    return event("PinMailerAddressEntered", {{"address", req.mail_to}});
  }
  return event("PinLetterIdEntered", {{"pin_index", index}, {"letter_id", req.pin_letter_id}});
}

void install_card_pin_executors(ExecutorRegistry& registry, std::shared_ptr<Station> station) {
  RetryPolicy cm{6, std::chrono::milliseconds(30'000), std::chrono::milliseconds(200),
                 std::chrono::milliseconds(5'000)};
  auto s = station;
  registry.add("QueuePinLetter", blocking_executor(
                                     [s](const Command& c, const CommandContext& ctx) {
                                       return queue_pin_letter(*s, c, ctx);
                                     },
                                     cm));
  registry.add("ResolvePinLetter", blocking_executor(
                                       [s](const Command& c, const CommandContext& ctx) {
                                         return resolve_pin_letter(s->impl(), c, ctx);
                                       },
                                       cm));
}

}  // namespace persoflow::actors::detail
