// What the RA executors share for the CM host's general messages (genm), all sent through the
// CM link (persoflow/actors/cm_link.hpp): a question answered in JSON, a crash-safe exchange
// whose request is saved before it is sent and whose answer is kept, queueing a PIN letter, and
// opening what the CM host enveloped for the officer (archived keys, PIN letters). Used by the
// soft-token executors, reissue and the station's card executors. Private to actors/.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "persoflow/actors/cm_link.hpp"
#include "persoflow/actors/executor.hpp"
#include "persoflow/common/status.hpp"
#include "persoflow/devices/officer.hpp"
#include "persoflow/machines/machine.hpp"

namespace persoflow::actors::genm {

// A genm with one info item `oid` carrying `body`, not saved (a question that changes nothing on
// the CM host); the genp's item of that type as JSON. A refusal by the CM host sets *refusal and
// returns an empty object; a CM host still unreachable after the link's retries is the Status.
Result<nlohmann::json> json_genm(CmLink& link, const char* oid, const nlohmann::json& body,
                                 std::string* refusal);

// The CM host's procedures as it lists them for the officer (genm persoflowProcedureList): token,
// certificate and key procedures. A refusal is Errc::kRejected with the CM host's reason.
Result<nlohmann::json> procedure_list(CmLink& link);
// A procedure-list answer however it was asked (json_genm's `list` and `refusal`): the list, or
// the refusal as procedure_list gives it.
Result<nlohmann::json> procedure_list_answer(nlohmann::json list, const std::string& refusal);

// A genm with one info item `oid` carrying `body`, saved at `request_file` before it is sent; the
// genp's JSON is kept at `answer_file` (a repeat answers from it without asking), a single
// object wrapped as {"keys": [object]}. A refusal by the CM host sets *refused and *why and
// returns an empty JSON; an unreachable CM host is an error status (the engine retries).
Result<nlohmann::json> key_genm(CmLink& link, const std::string& request_file,
                                const std::string& answer_file, const char* oid,
                                const nlohmann::json& body, const std::string& procedure,
                                bool* refused, std::string* why);

// The PIN mailer's step (QueuePinLetter{pin_ref, pin_index, address}) of the card and soft-token
// workflows: the CM host queues a PIN letter (genm persoflowPinLetterQueue) for the holder at
// `address`, carrying the PIN saved at <secrets_dir>/<pin_ref> (and, for a card with two PINs,
// the PUK at <secrets_dir>/<puk_ref> in the same letter), deleted once the letter is queued (no
// PIN file: an earlier attempt queued it). The request carries the PIN, so it is not
// kept: an idempotency key derived from the command's makes a resend queue nothing new.
// `holder` is the subject ("CN=Alice,O=Example" on the letter), `token` what the PIN is for.
// `notify` gets the line for the operator (the letter ID and how the holder's e-mail notice
// went, or the CM host's refusal). Returns PinDelivered{pin_index, letter_id}; a refusal is
// Errc::kRejected with the CM host's reason.
Result<machines::Event> queue_pin_letter(CmLink& link, const machines::Command& c,
                                         const CommandContext& ctx, const std::string& secrets_dir,
                                         const std::map<std::string, std::string>& holder,
                                         const std::string& token,
                                         const std::function<void(const std::string&)>& notify);

// The operator's line for a PIN letter the CM host refused to bind: its own sentence, which
// names the letter (the CMP status texts before it say nothing), or `why` whole.
std::string pin_letter_refusal(const std::string& letter_id, const std::string& why);

// Opens (in memory) a CMS EnvelopedData the CM host made for the officer's certificate.
Result<std::string> open_for_officer(devices::OfficerToken& officer, std::string_view envelope);

}  // namespace persoflow::actors::genm
