// What the RA executors share for the CM host's general messages (genm): a crash-safe exchange
// whose request is saved before it is sent and whose answer is kept, the CM host's reason for a
// refusal, and opening what the CM host enveloped for the officer (archived keys, PIN letters).
// Used by the soft-token executors and the station's card executors. Private to actors/.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "persoflow/common/status.hpp"
#include "persoflow/devices/officer.hpp"
#include "persoflow/protocol/cmp_client.hpp"

namespace persoflow::actors::genm {

using ClientFactory = std::function<Result<std::unique_ptr<protocol::CmpClient>>()>;

// Prepares a client for a crash-safe exchange: the request saved at `saved_path` is resent as it
// is; a new one is saved there (0600, fsync) before it goes out. Returns the status of that save.
std::shared_ptr<Status> persist_requests(protocol::CmpClient& client,
                                         const std::string& saved_path);

// Why the CM host refused the last request: its statusString or errorDetails, else what the
// client knows.
std::string refusal_text(const protocol::CmpClient& client, const Status& status);

// A genm with one info item `oid` carrying `body`, saved at `request_file` before it is sent; the
// genp's JSON is kept at `answer_file` (a repeat answers from it without asking), a single
// object wrapped as {"keys": [object]}. A refusal by the CM host sets *refused and *why and
// returns an empty JSON; an unreachable CM host is an error status (the engine retries).
Result<nlohmann::json> key_genm(const ClientFactory& make_client, const std::string& request_file,
                                const std::string& answer_file, const char* oid,
                                const nlohmann::json& body, const std::string& procedure,
                                bool* refused, std::string* why);

// PIN mailer: asks the CM host to queue a PIN letter (genm persoflowPinLetterQueue) for
// `holder` at `address`, for `token`, carrying `pin` and, for a card with two PINs, `puk` in the
// same letter (both cleansed from the request after sending; the request is not kept, so
// `idempotency_key` inside it makes a resend queue nothing new).
// Returns the letter ID and how the holder's e-mail notice went; a refusal is Errc::kRejected
// with the CM host's reason.
struct QueuedPinLetter {
  std::string letter_id;
  std::string notice;  // "mailed", a reason it was not sent, or empty when no relay is set
  // "; e-mail notice sent" / "; the e-mail notice was not sent: WHY" / "" for messages.
  std::string notice_text() const;
};
Result<QueuedPinLetter> queue_pin_letter(protocol::CmpClient& client, const std::string& holder,
                                         const std::string& address, const std::string& token,
                                         std::string pin, const std::string& idempotency_key,
                                         std::string puk = {});

// Opens (in memory) a CMS EnvelopedData the CM host made for the officer's certificate.
Result<std::string> open_for_officer(devices::OfficerToken& officer, std::string_view envelope);

}  // namespace persoflow::actors::genm
