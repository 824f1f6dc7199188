// The card PIN modes of the station (docs/station.md): entered at the RA (by reference: the PIN
// was saved in <state_dir>/secrets by the command that read it), generated and shown once, the
// PIN mailer (QueuePinLetter: a letter the CM host queues for secure printing), and the PIN/PUK
// letter ID (ResolvePinLetter: the letter's PIN, enveloped by the CM host for the officer).
//
// A PIN never enters the journal, the requests or the logs: it lives in <state_dir>/secrets/<ref>
// (0600) from its entry or generation until it is set on the card and delivered, then goes.
#include <openssl/crypto.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cm_genm.hpp"
#include "persoflow/devices/pin_input.hpp"
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

// A pre-printed letter bound to the card (genm persoflowPinLetterBind): its PIN and, on a card
// with two PINs (pin_count 2), its PUK, opened from the CM host's envelope for the officer and saved
// by reference. A letter the CM host refuses is PinLetterRefused: asking again gives the same
// answer, so the operator is asked for another letter.
Result<Event> resolve_pin_letter(Impl& st, const Command& c, const CommandContext& ctx) {
  // "letter-": SetCardPin deletes it once the PIN is on the card (nothing delivers it after).
  const std::string ref = "letter-" + machines::wf::derive_id(ctx.idempotency_key, "letter");
  const std::string puk_ref =
      "letter-" + machines::wf::derive_id(ctx.idempotency_key, "letter-puk");
  const bool with_puk = field(c, "pin_count") == "2";
  Fields done{{"pin_index", field(c, "pin_index")}, {"pin_ref", ref}};
  if (with_puk) done["puk_ref"] = puk_ref;
  // The PIN's file is written last: when it is there, so is the PUK's.
  if (fs::exists(secret_path(st, ref))) return event("PinLetterResolved", done);
  const std::string letter_id = field(c, "letter_id");
  const std::string tid = machines::wf::derive_id(ctx.idempotency_key, "pin-letter-bind");
  json body{{"letter_id", letter_id}};
  if (with_puk) body["puk"] = true;
  bool refused = false;
  std::string why;
  PF_ASSIGN_OR_RETURN(CmLink * link, st.cm_link());
  PF_ASSIGN_OR_RETURN(json answer, genm::key_genm(*link, st.dir("cmp") + "/" + tid + ".der",
                                                  st.dir("keys") + "/" + tid + ".json",
                                                  protocol::kOidPinLetterBind, body, {}, &refused,
                                                  &why));
  if (refused) {
    return event("PinLetterRefused", {{"pin_index", field(c, "pin_index")},
                                      {"reason", genm::pin_letter_refusal(letter_id, why)}});
  }
  PF_ASSIGN_OR_RETURN(std::string envelope,
                      protocol::base64_decode(answer["keys"][0].value("envelope", "")));
  PF_ASSIGN_OR_RETURN(dv::OfficerToken * officer, st.officer_token("officer-password-file"));
  PF_ASSIGN_OR_RETURN(std::string secrets, genm::open_for_officer(*officer, envelope));
  // A PIN/PUK letter's envelope holds "PIN\nPUK".
  const auto newline = secrets.find('\n');
  Status saved = Status::ok();
  if (with_puk != (newline != std::string::npos)) {
    saved = make_status(Errc::kCorrupt, "the CM host's answer for PIN letter " + letter_id +
                                            (with_puk ? " lacks the PUK" : " carries a PUK"));
  } else if (with_puk) {
    std::string puk = secrets.substr(newline + 1) + "\n";
    saved = write_durably(secret_path(st, puk_ref), puk, 0600);
    OPENSSL_cleanse(puk.data(), puk.size());
  }
  if (saved) {
    std::string pin = secrets.substr(0, newline) + "\n";
    saved = write_durably(secret_path(st, ref), pin, 0600);
    OPENSSL_cleanse(pin.data(), pin.size());
  }
  OPENSSL_cleanse(secrets.data(), secrets.size());
  PF_RETURN_IF_ERROR(saved);
  return event("PinLetterResolved", done);
}

}  // namespace

Status set_card_puk(Impl& st, const std::string& serial, const std::string& puk) {
  auto slot = st.slot(serial);
  std::lock_guard lock(slot->mu);
  PF_RETURN_IF_ERROR(st.opened(*slot, serial));
  if (slot->card->token().serial != serial) {
    return make_status(Errc::kRejected, "refusing to set the PUK of card " +
                                            slot->card->token().serial +
                                            ": the workflow's card is " + serial);
  }
  slot->logged_in = false;  // the SO login below ends the user's
  Status changed = slot->card->change_so_pin(st.card_puk, puk);
  if (changed || changed.message().find("CKR_PIN_INCORRECT") == std::string::npos) return changed;
  // The card's PUK is no longer the one it came with: set by an earlier attempt, if the new one
  // opens it.
  Status again = slot->card->change_so_pin(puk, puk);
  return again ? again : changed;
}

Result<Event> card_pin_answer(Station& station, const CardRequest& req, const Command& c) {
  const std::string ask = field(c, "ask");
  const std::string index = field(c, "pin_index").empty() ? "0" : field(c, "pin_index");
  if (ask == "pin") {
    const std::string& ref = index == "1" ? req.puk_ref : req.pin_ref;
    if (ref.empty() || !fs::exists(secret_path(station.impl(), ref))) {
      // No PIN entered (the officer left the entry empty): one is generated and shown instead.
      return event("PinEntryCancelled", {{"pin_index", index}});
    }
    std::cerr << "warning (" << req.workflow_id << "): " << field(c, "warning") << std::endl;
    return event("PinEntered", {{"pin_index", index}, {"pin_ref", ref}});
  }
  if (ask == "pin_mailer_address") {
    return event("PinMailerAddressEntered", {{"address", req.mail_to}});
  }
  if (!field(c, "refused_letter_id").empty() && field(c, "refused_letter_id") == req.pin_letter_id) {
    // The request still names the letter the CM host refused: only a corrected request helps.
    return refusal(field(c, "reason") + "; name another letter (pin_letter_id)");
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

namespace persoflow::actors {

namespace {

namespace fs = std::filesystem;

// The station's entered_pins as a descriptor to read PINs from, a line each
// (devices::read_secret_from_fd): "fd:N" as it is, a file opened (and closed with the source).
class EnteredPinSource {
 public:
  explicit EnteredPinSource(std::string source) : source_(std::move(source)) {}
  EnteredPinSource(const EnteredPinSource&) = delete;
  EnteredPinSource& operator=(const EnteredPinSource&) = delete;
  ~EnteredPinSource() {
    if (owned_) ::close(fd_);
  }

  Result<devices::Secret> next() {
    if (fd_ < 0) PF_RETURN_IF_ERROR(open());
    return devices::read_secret_from_fd(fd_);
  }

 private:
  Status open() {
    if (source_.rfind("fd:", 0) == 0) {
      try {
        fd_ = std::stoi(source_.substr(3));
      } catch (const std::exception&) {
      }
      if (fd_ < 0) {
        return make_status(Errc::kInvalidArgument,
                           "entered_pins '" + source_ + "' is not fd:N with a descriptor number");
      }
      return Status::ok();
    }
    fd_ = ::open(source_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      return make_status(Errc::kNotFound, "cannot read the entered PINs file " + source_ +
                                              " (entered_pins of the station configuration): " +
                                              std::strerror(errno));
    }
    owned_ = true;
    return Status::ok();
  }

  std::string source_;
  int fd_ = -1;
  bool owned_ = false;
};

}  // namespace

Status take_entered_pins(const StationConfig& config, std::vector<CardRequest>& requests) {
  EnteredPinSource source(config.entered_pins);
  std::size_t taken = 0;
  const fs::path secrets = fs::path(config.state_dir) / "secrets";
  Status status = Status::ok();
  for (CardRequest& r : requests) {
    if (r.pin_delivery != "entered" || !r.pin_ref.empty()) continue;
    const std::string who = "request " + r.workflow_id + ": ";
    // Saved by an earlier run: the PINs it took then (and maybe set on the card since).
    auto saved = read_file((fs::path(config.state_dir) / "requests" / (r.workflow_id + ".json"))
                               .string());
    if (saved) {
      if (auto earlier = card_request_from_json(*saved)) {
        r.pin_ref = earlier->pin_ref;
        r.puk_ref = earlier->puk_ref;
      }
      if (!r.pin_ref.empty()) continue;
    }
    if (config.entered_pins.empty()) {
      status = make_status(Errc::kInvalidArgument,
                           who + "pin_delivery entered takes the PIN from the station's "
                                 "entered_pins (a file, or fd:N), which its configuration does "
                                 "not name; a PIN never goes in a queue line");
      break;
    }
    std::error_code ec;
    fs::create_directories(secrets, ec);
    const std::pair<std::string*, std::string> wanted[] = {
        {&r.pin_ref, "entered-" + r.workflow_id}, {&r.puk_ref, "entered-puk-" + r.workflow_id}};
    for (int i = 0; i < config.card_pin_count; ++i) {
      const char* what = i == 0 ? "PIN" : "PUK";
      auto pin = source.next();
      if (!pin) {
        status = make_status(Errc::kInvalidArgument,
                             who + "entered_pins " + config.entered_pins + " has no " + what +
                                 " for it (line " + std::to_string(taken + 1) +
                                 "; one line per PIN, in queue order): " + pin.status().message());
        break;
      }
      std::string line(pin->view());
      line += '\n';
      status = write_durably((secrets / wanted[i].second).string(), line, 0600);
      OPENSSL_cleanse(line.data(), line.size());
      if (!status) break;
      *wanted[i].first = wanted[i].second;
      ++taken;
    }
    if (!status) break;
  }
  return status;
}

}  // namespace persoflow::actors
