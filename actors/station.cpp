// The station and the issue-card executors on real parts (station.hpp): PKCS#11 cards through
// devices::Card, the officer's PKCS#12, CMP over HTTPS through the CM link (cm_link.hpp).
//
// Each executor is idempotent by construction: it first looks at what is already there (the key
// under its derived CKA_ID, the certificate on the card, the saved CMP request, the saved PIN)
// and only then acts, so a repeat after a timeout or a crash ends in the same place.
#include "persoflow/actors/station.hpp"

#include "station_impl.hpp"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "cm_genm.hpp"
#include "persoflow/actors/state_files.hpp"
#include "persoflow/devices/card.hpp"
#include "persoflow/devices/officer.hpp"
#include "persoflow/devices/pin_delivery.hpp"
#include "persoflow/machines/workflow_support.hpp"
#include "persoflow/protocol/cmp_client.hpp"

namespace persoflow::actors {
namespace detail {

std::string field(const Command& c, const std::string& key) {
  auto it = c.fields.find(key);
  return it == c.fields.end() ? std::string() : it->second;
}

// read_file, first_line, write_durably: persoflow/actors/state_files.hpp.
bool safe_name(const std::string& name) { return safe_file_name(name); }

std::string resolve(const fs::path& base, const std::string& p) {
  if (p.empty()) return p;
  fs::path path(p);
  return path.is_absolute() ? p : (base / path).lexically_normal().string();
}

Event event(std::string type, Fields fields) { return Event{std::move(type), std::move(fields)}; }

}  // namespace detail

using namespace detail;
using nlohmann::json;

// ----- Configuration and requests -----

namespace {

// "cm_retry": {"attempts": 1..100, "initial_delay_ms": 0..600000, "max_delay_ms": >= initial};
// a key left out keeps its default.
Status cm_retry_from_json(const json& j, RetryPolicy& policy) {
  if (!j.is_object()) {
    return make_status(Errc::kInvalidArgument,
                       "cm_retry must be {\"attempts\": N, \"initial_delay_ms\": MS, "
                       "\"max_delay_ms\": MS}");
  }
  auto number = [&](const char* key, long long low, long long high,
                    long long& out) -> Status {
    if (!j.contains(key)) return Status::ok();
    const json& v = j.at(key);
    if (!v.is_number_integer() || v.get<long long>() < low || v.get<long long>() > high) {
      return make_status(Errc::kInvalidArgument, std::string("cm_retry.") + key +
                                                     " must be a whole number in " +
                                                     std::to_string(low) + ".." +
                                                     std::to_string(high) + ", not " + v.dump());
    }
    out = v.get<long long>();
    return Status::ok();
  };
  for (const auto& [key, value] : j.items()) {
    if (key != "attempts" && key != "initial_delay_ms" && key != "max_delay_ms") {
      return make_status(Errc::kInvalidArgument, "cm_retry has no setting '" + key +
                                                     "' (attempts, initial_delay_ms, "
                                                     "max_delay_ms)");
    }
  }
  long long attempts = policy.attempts;
  long long initial = policy.initial_delay.count();
  long long max = policy.max_delay.count();
  PF_RETURN_IF_ERROR(number("attempts", 1, 100, attempts));
  PF_RETURN_IF_ERROR(number("initial_delay_ms", 0, 600'000, initial));
  PF_RETURN_IF_ERROR(number("max_delay_ms", 0, 600'000, max));
  if (max < initial) {
    return make_status(Errc::kInvalidArgument,
                       "cm_retry.max_delay_ms (" + std::to_string(max) +
                           ") is below initial_delay_ms (" + std::to_string(initial) + ")");
  }
  policy.attempts = static_cast<std::uint32_t>(attempts);
  policy.initial_delay = std::chrono::milliseconds(initial);
  policy.max_delay = std::chrono::milliseconds(max);
  return Status::ok();
}

}  // namespace

Result<StationConfig> load_station_config(const std::string& path) {
  auto text = read_file(path);
  if (!text) {
    return make_status(Errc::kNotFound, "cannot read the station configuration " + path);
  }
  json j;
  try {
    j = json::parse(*text);
  } catch (const std::exception& e) {
    return make_status(Errc::kInvalidArgument, path + ": not JSON: " + e.what());
  }
  const fs::path base = fs::absolute(path).parent_path();
  StationConfig c;
  try {
    auto str = [&](const char* key, std::string& out, bool is_path, bool required) -> Status {
      if (!j.contains(key)) {
        if (required) {
          return make_status(Errc::kInvalidArgument, path + ": missing \"" + key + "\"");
        }
        return Status::ok();
      }
      out = j.at(key).get<std::string>();
      if (is_path) out = resolve(base, out);
      return Status::ok();
    };
    PF_RETURN_IF_ERROR(str("cm_url", c.cm_url, false, true));
    PF_RETURN_IF_ERROR(str("cm_ca", c.cm_ca, true, true));
    PF_RETURN_IF_ERROR(str("pkcs11_module", c.pkcs11_module, false, false));
    PF_RETURN_IF_ERROR(str("softhsm2_conf", c.softhsm2_conf, true, false));
    PF_RETURN_IF_ERROR(str("officer_p12", c.officer_p12, true, true));
    PF_RETURN_IF_ERROR(str("officer_password_file", c.officer_password_file, true, true));
    PF_RETURN_IF_ERROR(str("card_pin_file", c.card_pin_file, true, true));
    PF_RETURN_IF_ERROR(str("operator_pin_file", c.operator_pin_file, true, false));
    PF_RETURN_IF_ERROR(str("journal", c.journal, true, true));
    PF_RETURN_IF_ERROR(str("state_dir", c.state_dir, true, true));
    PF_RETURN_IF_ERROR(str("procedure", c.procedure, false, false));
    PF_RETURN_IF_ERROR(str("key_algorithm", c.key_algorithm, false, false));
    PF_RETURN_IF_ERROR(str("token_procedure", c.token_procedure, false, false));
    PF_RETURN_IF_ERROR(str("card_puk_file", c.card_puk_file, true, false));
    PF_RETURN_IF_ERROR(str("entered_pins", c.entered_pins, false, false));
    if (c.entered_pins.rfind("fd:", 0) != 0) c.entered_pins = resolve(base, c.entered_pins);
    if (j.contains("key_entries")) c.key_entries = j.at("key_entries").get<int>();
    if (j.contains("cm_retry")) {
      if (Status s = cm_retry_from_json(j.at("cm_retry"), c.cm_retry); !s) {
        return make_status(Errc::kInvalidArgument, path + ": " + s.message());
      }
    }
    if (j.contains("card_pin_count")) c.card_pin_count = j.at("card_pin_count").get<int>();
  } catch (const std::exception& e) {
    return make_status(Errc::kInvalidArgument, path + ": " + e.what());
  }
  if (c.cm_url.rfind("https://", 0) != 0) {
    return make_status(Errc::kInvalidArgument,
                       path + ": cm_url must be https://HOST:PORT, not '" + c.cm_url + "'");
  }
  if (c.key_entries < 1 || c.key_entries > 16) {
    return make_status(Errc::kInvalidArgument, path + ": key_entries must be 1..16");
  }
  if (c.card_pin_count < 1 || c.card_pin_count > 2) {
    return make_status(Errc::kInvalidArgument,
                       path + ": card_pin_count must be 1 (a PIN) or 2 (a PIN and a PUK)");
  }
  if (c.card_pin_count == 2 && c.card_puk_file.empty()) {
    return make_status(Errc::kInvalidArgument,
                       path + ": card_pin_count 2 needs card_puk_file (the cards' current PUK; "
                              "SoftHSM2's SO PIN)");
  }
  return c;
}

Status save_station_config(const StationConfig& c, const std::string& path) {
  json j = {{"cm_url", c.cm_url},
            {"cm_ca", c.cm_ca},
            {"pkcs11_module", c.pkcs11_module},
            {"softhsm2_conf", c.softhsm2_conf},
            {"officer_p12", c.officer_p12},
            {"officer_password_file", c.officer_password_file},
            {"card_pin_file", c.card_pin_file},
            {"journal", c.journal},
            {"state_dir", c.state_dir},
            {"procedure", c.procedure},
            {"key_algorithm", c.key_algorithm},
            {"key_entries", c.key_entries},
            {"token_procedure", c.token_procedure},
            {"cm_retry",
             {{"attempts", c.cm_retry.attempts},
              {"initial_delay_ms", c.cm_retry.initial_delay.count()},
              {"max_delay_ms", c.cm_retry.max_delay.count()}}}};
  if (!c.operator_pin_file.empty()) j["operator_pin_file"] = c.operator_pin_file;
  if (c.card_pin_count != 1) j["card_pin_count"] = c.card_pin_count;
  if (!c.card_puk_file.empty()) j["card_puk_file"] = c.card_puk_file;
  if (!c.entered_pins.empty()) j["entered_pins"] = c.entered_pins;
  return write_durably(path, j.dump(2) + "\n");
}

namespace {

bool is_entry_number(const std::string& key) {
  return !key.empty() && key.size() <= 2 &&
         std::all_of(key.begin(), key.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

// issue: KEY=add|recover|blank by entry number; search and request flags only on recover.
Status check_issue_actions(const CardRequest& r) {
  const std::string who = "request " + r.workflow_id + ": ";
  if (r.workflow != "issue") {
    if (!r.searches.empty() || !r.request_flags.empty()) {
      return make_status(Errc::kInvalidArgument, who + "search and request are for issue");
    }
    return Status::ok();
  }
  for (const auto& [key, action] : r.actions) {
    if (!is_entry_number(key) || (action != "add" && action != "recover" && action != "blank")) {
      return make_status(Errc::kInvalidArgument,
                         who + "action " + key + "=" + action +
                             " is not ENTRY=add|recover|blank (ENTRY = 0, 1, ...)");
    }
    if (action == "recover" && r.token_procedure.empty()) {
      return make_status(Errc::kInvalidArgument,
                         who + "recover needs a token procedure with key recovery "
                               "(token_procedure)");
    }
  }
  auto recovering = [&](const std::string& key) {
    auto it = r.actions.find(key);
    return it != r.actions.end() && it->second == "recover";
  };
  for (const auto& [key, search] : r.searches) {
    if (!recovering(key)) {
      return make_status(Errc::kInvalidArgument,
                         who + "search " + key + "=... is for an entry whose action is recover");
    }
    if (Status ok = machines::wf::check_search(search, true); !ok) {
      return make_status(Errc::kInvalidArgument, who + "search " + key + ": " + ok.message());
    }
  }
  for (const auto& [key, flag] : r.request_flags) {
    if (!recovering(key)) {
      return make_status(Errc::kInvalidArgument,
                         who + "request " + key + "=... is for an entry whose action is recover");
    }
    if (flag != "default" && flag != "yes" && flag != "no") {
      return make_status(Errc::kInvalidArgument,
                         who + "request " + key + "=" + flag + " is not default, yes or no");
    }
  }
  return Status::ok();
}

}  // namespace

Result<CardRequest> card_request_from_json(const std::string& line) {
  CardRequest r;
  try {
    json j = json::parse(line);
    r.workflow_id = j.value("workflow_id", "");
    r.token_label = j.value("token_label", "");
    r.token_serial = j.value("token_serial", "");
    r.procedure = j.value("procedure", "");
    r.pin_delivery = j.value("pin_delivery", "generated");
    r.pin_ref = j.value("pin_ref", "");
    r.puk_ref = j.value("puk_ref", "");
    for (const char* clear : {"pin", "puk", "so_pin"}) {
      if (j.contains(clear)) {
        return make_status(Errc::kInvalidArgument,
                           std::string("request: a PIN never goes in a queue line (\"") + clear +
                               "\"); with pin_delivery entered the station reads it from its "
                               "entered_pins (a file or fd:N)");
      }
    }
    r.mail_to = j.value("mail_to", "");
    r.pin_letter_id = j.value("pin_letter_id", "");
    r.workflow = j.value("workflow", "issue");
    r.token_procedure = j.value("token_procedure", "");
    r.source = j.value("source", "");
    if (j.contains("subject")) {
      for (auto& [k, v] : j.at("subject").items()) r.subject[k] = v.get<std::string>();
    }
    if (j.contains("actions")) {
      for (auto& [k, v] : j.at("actions").items()) r.actions[k] = v.get<std::string>();
    }
    if (j.contains("search")) {
      for (auto& [k, v] : j.at("search").items()) r.searches[k] = v.get<std::string>();
    }
    if (j.contains("request")) {
      for (auto& [k, v] : j.at("request").items()) r.request_flags[k] = v.get<std::string>();
    }
  } catch (const std::exception& e) {
    return make_status(Errc::kInvalidArgument, std::string("request is not valid JSON: ") + e.what());
  }
  if (!safe_name(r.workflow_id)) {
    return make_status(Errc::kInvalidArgument,
                       "request: workflow_id must be letters, digits, '.', '_' or '-', not '" +
                           r.workflow_id + "'");
  }
  if (r.token_label.empty() && r.token_serial.empty()) {
    return make_status(Errc::kInvalidArgument,
                       "request " + r.workflow_id + ": give token_label or token_serial");
  }
  if (r.subject.empty()) {
    return make_status(Errc::kInvalidArgument,
                       "request " + r.workflow_id + ": subject is empty (e.g. {\"CN\": \"Alice\"})");
  }
  if (r.workflow != "issue" && r.workflow != "update") {
    return make_status(Errc::kInvalidArgument, "request " + r.workflow_id + ": workflow must be "
                                               "issue or update, not '" + r.workflow + "'");
  }
  if (r.workflow == "update" && r.actions.empty()) {
    return make_status(Errc::kInvalidArgument,
                       "request " + r.workflow_id + ": an update names its actions, e.g. "
                       "{\"actions\": {\"tc\": \"redo\"}} (KEY = entry, CKA_ID, label or tc)");
  }
  PF_RETURN_IF_ERROR(check_issue_actions(r));
  for (const auto& [key, action] : r.actions) {
    if (r.workflow == "issue") break;
    if (key.empty() || (action != "blank" && action != "issue" && action != "redo" &&
                        action != "add")) {
      return make_status(Errc::kInvalidArgument,
                         "request " + r.workflow_id + ": action " + key + "=" + action +
                             " is not KEY=blank|issue|redo|add");
    }
  }
  const std::string who = "request " + r.workflow_id + ": ";
  if (r.pin_delivery != "generated" && r.pin_delivery != "entered" &&
      r.pin_delivery != "mailer" && r.pin_delivery != "letter") {
    return make_status(Errc::kInvalidArgument, who + "pin_delivery must be generated, entered, "
                                                     "mailer or letter, not '" +
                                                     r.pin_delivery + "'");
  }
  // An entered PIN without a reference yet is taken from the station's entered_pins
  // (take_entered_pins); a reference names a file in the station's secrets folder.
  for (const std::string* ref : {&r.pin_ref, &r.puk_ref}) {
    if (!ref->empty() && (r.pin_delivery != "entered" || !safe_name(*ref))) {
      return make_status(Errc::kInvalidArgument,
                         who + "pin_ref / puk_ref name an entered PIN the station saved; an "
                               "entered PIN is read by `persoflow issue card --pin-fd N` or from "
                               "the station's entered_pins, never given in a request");
    }
  }
  if (r.pin_delivery == "mailer" && r.mail_to.find('@') == std::string::npos) {
    return make_status(Errc::kInvalidArgument,
                       who + "the PIN mailer needs the holder's address (mail_to)");
  }
  if (r.pin_delivery == "letter" && r.pin_letter_id.rfind("PL-", 0) != 0) {
    return make_status(Errc::kInvalidArgument,
                       who + "a PIN/PUK letter is named by its ID (pin_letter_id PL-...)");
  }
  return r;
}

std::string card_request_to_json(const CardRequest& r) {
  json j = {{"workflow_id", r.workflow_id},   {"token_label", r.token_label},
            {"token_serial", r.token_serial}, {"procedure", r.procedure},
            {"pin_delivery", r.pin_delivery}, {"subject", r.subject}};
  if (!r.pin_ref.empty()) j["pin_ref"] = r.pin_ref;
  if (!r.puk_ref.empty()) j["puk_ref"] = r.puk_ref;
  if (!r.mail_to.empty()) j["mail_to"] = r.mail_to;
  if (!r.pin_letter_id.empty()) j["pin_letter_id"] = r.pin_letter_id;
  if (r.workflow != "issue") j["workflow"] = r.workflow;
  if (!r.token_procedure.empty()) j["token_procedure"] = r.token_procedure;
  if (!r.actions.empty()) j["actions"] = r.actions;
  if (!r.searches.empty()) j["search"] = r.searches;
  if (!r.request_flags.empty()) j["request"] = r.request_flags;
  if (!r.source.empty()) j["source"] = r.source;
  return j.dump();
}

std::string new_workflow_id(const std::string& label, const std::string& kind) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch())
                      .count() % 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char stamp[40];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", &utc);
  unsigned char random[3] = {};
  PF_CHECK(RAND_bytes(random, sizeof random) == 1, "the OpenSSL RNG failed");
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, ".%03dZ-%02x%02x%02x", static_cast<int>(ms), random[0],
                random[1], random[2]);
  std::string id = label + "-" + kind + "-" + stamp + suffix;
  // A label may hold characters a file name must not: they become '_'.
  for (char& ch : id) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '_' && ch != '-') {
      ch = '_';
    }
  }
  return id;
}

// ----- The station -----


Station::Station(StationConfig config, std::unique_ptr<Impl> impl)
    : config_(std::move(config)), impl_(std::move(impl)) {}
Station::~Station() = default;

Result<std::shared_ptr<Station>> Station::open(StationConfig config) {
  if (!config.softhsm2_conf.empty()) ::setenv("SOFTHSM2_CONF", config.softhsm2_conf.c_str(), 1);
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  PF_ASSIGN_OR_RETURN(impl->card_pin, first_line(config.card_pin_file));
  if (config.card_pin_count == 2) {
    PF_ASSIGN_OR_RETURN(impl->card_puk, first_line(config.card_puk_file));
  }
  for (const char* sub : {"requests", "cmp", "certs", "secrets", "keys"}) {
    std::error_code ec;
    fs::create_directories(fs::path(config.state_dir) / sub, ec);
    if (ec) {
      return make_status(Errc::kUnavailable, "cannot create " + config.state_dir + "/" + sub +
                                                 ": " + ec.message());
    }
  }
  fs::permissions(fs::path(config.state_dir) / "secrets", fs::perms::owner_all,
                  fs::perm_options::replace);
  impl->display = [](const std::string& wf, const std::string& serial, const std::string& what,
                      const std::string& pin) {
    std::cout << what << " for card " << serial << " (" << wf << ", shown once): " << pin
              << std::endl;
  };
  return std::shared_ptr<Station>(new Station(std::move(config), std::move(impl)));
}

Status Station::save_request(const CardRequest& request) {
  if (!safe_name(request.workflow_id)) {
    return make_status(Errc::kInvalidArgument, "bad workflow id '" + request.workflow_id + "'");
  }
  return write_durably(impl_->dir("requests") + "/" + request.workflow_id + ".json",
                       card_request_to_json(request) + "\n");
}

Result<CardRequest> Station::load_request(const std::string& workflow_id) const {
  if (!safe_name(workflow_id)) {
    return make_status(Errc::kInvalidArgument, "bad workflow id '" + workflow_id + "'");
  }
  auto text = read_file(impl_->dir("requests") + "/" + workflow_id + ".json");
  if (!text) {
    return make_status(Errc::kNotFound, "no request saved for workflow " + workflow_id + " in " +
                                            impl_->dir("requests"));
  }
  return card_request_from_json(*text);
}

Result<std::map<std::string, std::string>> Station::token_serials() {
  PF_ASSIGN_OR_RETURN(auto tokens, dv::list_tokens(config_.pkcs11_module));
  std::map<std::string, std::string> out;
  for (const auto& t : tokens) out.emplace(t.label, t.serial);
  return out;
}

Result<std::string> Station::token_serial(const std::string& label,
                                          const std::map<std::string, std::string>& serials) const {
  if (auto it = serials.find(label); it != serials.end()) return it->second;
  return make_status(Errc::kNotFound, "no token labelled '" + label + "' in " +
                                          config_.pkcs11_module);
}

Result<std::string> Station::token_serial(const std::string& label) {
  PF_ASSIGN_OR_RETURN(auto serials, token_serials());
  return token_serial(label, serials);
}

Status Station::prepare_card(const std::string& token_serial) {
  auto slot = impl_->slot(token_serial);
  std::lock_guard lock(slot->mu);
  return impl_->ready(*slot, token_serial);
}

void Station::set_pin_display(PinDisplay display) {
  std::lock_guard lock(impl_->display_mu);
  impl_->display = std::move(display);
}

// ----- Executors -----

namespace {

// The CKA_ID on the card of the key the machine calls `key_id`: generated keys are stored under
// derive_key_id(key_id) (devices::Card::generate_key); a key the card already held keeps its id.
Result<std::vector<unsigned char>> card_key_id(const std::string& kind, const std::string& key_id) {
  if (kind == "generate") return dv::derive_key_id(key_id);
  return dv::from_hex(key_id);
}

}  // namespace

Result<dv::CardContents> detail::workflow_card_contents(Impl& st, Impl::CardSlot& slot,
                                                       const std::string& serial) {
  PF_RETURN_IF_ERROR(st.ready(slot, serial));
  PF_ASSIGN_OR_RETURN(dv::CardContents contents,
                      slot.card->read_contents(dv::TransportCertificateRule::defaults()));
  if (contents.token.serial != serial) {
    return make_status(Errc::kRejected, "the card in use is " + contents.token.serial +
                                            ", not the workflow's card " + serial);
  }
  return contents;
}

Result<json> detail::configuration_genm(Impl& st, const char* oid, const json& body,
                                        std::string* refusal) {
  const std::string key = std::string(oid) + " " + body.dump();
  std::lock_guard lock(st.kept_answers_mu);
  const auto now = std::chrono::steady_clock::now();
  // A live station runs for days and most questions are a card's own: drop what has expired.
  std::erase_if(st.kept_answers, [&](const auto& kept) {
    return now - kept.second.fetched >= Impl::kConfigurationReuse;
  });
  if (auto it = st.kept_answers.find(key);
      it != st.kept_answers.end() && now - it->second.fetched < Impl::kConfigurationReuse) {
    return it->second.answer;
  }
  PF_ASSIGN_OR_RETURN(CmLink * link, st.cm_link());
  PF_ASSIGN_OR_RETURN(json answer, genm::json_genm(*link, oid, body, refusal));
  if (refusal->empty()) st.kept_answers[key] = Impl::KeptAnswer{answer, now};
  return answer;
}

Result<Fields> detail::card_contents_fields(Impl& st, Impl::CardSlot& slot,
                                            const std::string& serial) {
  PF_ASSIGN_OR_RETURN(dv::CardContents contents, workflow_card_contents(st, slot, serial));
  Fields f{{"token_serial", serial},
           {"pin_count", std::to_string(st.config.card_pin_count)},
           {"tc.present", "no"}};
  int i = 0;
  for (const dv::KeyInfo& k : contents.keys) {
    f[machines::wf::item("key", i, "id")] = k.id_hex;
    f[machines::wf::item("key", i, "label")] = k.label;
    for (const dv::CertificateInfo& cert : contents.certificates) {
      if (cert.id_hex != k.id_hex) continue;
      // With several certificates on the key, the TC is the one an update replaces.
      const std::string at = machines::wf::item("key", i, "cert_serial");
      if (!f.count(at) || cert.transport_certificate) f[at] = cert.serial_hex;
      if (cert.transport_certificate) f["tc.key"] = std::to_string(i);
    }
    ++i;
  }
  for (; i < st.config.key_entries; ++i) f[machines::wf::item("key", i, "id")] = "";
  for (const dv::CertificateInfo& cert : contents.certificates) {
    if (!cert.transport_certificate) continue;
    f["tc.present"] = "yes";
    f["tc.subject"] = cert.subject;
    f["tc.issuer"] = cert.issuer;
    f["tc.serial"] = cert.serial_hex;
  }
  return f;
}

namespace {

Result<Event> read_card_contents(Impl& st, const Command& c) {
  const std::string serial = field(c, "token_serial");
  auto slot = st.slot(serial);
  std::lock_guard lock(slot->mu);
  PF_ASSIGN_OR_RETURN(Fields f, card_contents_fields(st, *slot, serial));
  return event("CardContentsRead", std::move(f));
}

Result<Event> answer_from_request(Station& station, const CardRequest& req, const Command& c) {
  const std::string ask = field(c, "ask");
  if (ask == "operator_pin") return operator_pin_entered(station);
  if (ask == "pin" || ask == "pin_mailer_address" || ask == "pin_letter_id") {
    return card_pin_answer(station, req, c);
  }
  if (req.workflow == "update") return ask_operator_update(station, req, c);
  if (ask == "procedure" && !req.token_procedure.empty()) {
    return procedure_chosen_from_token_procedure(station, req);
  }
  if (ask == "procedure") {
    return event("ProcedureChosen",
                 {{"procedure", req.procedure.empty() ? station.config().procedure : req.procedure},
                  {"pin_delivery", req.pin_delivery},
                  {"key_algorithm", station.config().key_algorithm},
                  {"key_archiving", "no"},
                  {"replace_ca", "no"},
                  {"operator_pin", "none"}});
  }
  if (ask == "key_actions") {
    Fields f;
    for (const auto& [entry, action] : req.actions) f["key." + entry + ".action"] = action;
    for (const auto& [entry, search] : req.searches) f["key." + entry + ".search"] = search;
    for (const auto& [entry, flag] : req.request_flags) f["key." + entry + ".request"] = flag;
    if (req.actions.empty()) f["key.0.action"] = "add";
    for (const auto& [name, value] : req.subject) f["subject." + name] = value;
    return event("ActionsChosen", std::move(f));
  }
  if (ask == "signature_pin") {
    // The officer's PKCS#12 password stays in its file; the journal holds this reference only.
    return event("OfficerPinEntered", {{"pin_ref", "officer-password-file"}});
  }
  return make_status(Errc::kUnsupported,
                     "the station cannot answer the operator question '" + ask +
                         "' unattended; answer it at an operator terminal");
}

// The operator's answers come from the saved request. One the request cannot give (an unknown
// token procedure, a key action naming no key, a role missing) is a refusal: asking again gives
// the same answer, so the workflow waits for the operator instead of being retried.
Result<Event> ask_operator(Station& station, const Command& c, const CommandContext& ctx) {
  PF_ASSIGN_OR_RETURN(CardRequest req, station.load_request(ctx.workflow_id));
  Result<Event> answer = answer_from_request(station, req, c);
  if (answer.is_ok()) return answer;
  const std::error_code code = answer.status().code();
  const bool for_the_operator =
      is_refusal(answer.status()) || code == make_error_code(Errc::kInvalidArgument) ||
      code == make_error_code(Errc::kNotFound) ||
      code == make_error_code(Errc::kPermissionDenied) ||
      code == make_error_code(Errc::kUnsupported);
  if (!for_the_operator) return answer;  // a transport failure: retried
  const std::string where = req.source.empty() ? "request " + req.workflow_id
                                               : req.source + " (request " + req.workflow_id + ")";
  return refusal(where + ": " + answer.status().message() +
                 "; correct the request and run it again, or cancel it: persoflow workflows "
                 "cancel " + req.workflow_id);
}

Result<Event> generate_key(Impl& st, const Command& c, const CommandContext& ctx) {
  const std::string serial = field(c, "token_serial");
  const std::string key_id = field(c, "key_id");
  PF_ASSIGN_OR_RETURN(dv::KeyAlgorithm alg, dv::parse_key_algorithm(field(c, "algorithm")));
  auto slot = st.slot(serial);
  std::lock_guard lock(slot->mu);
  PF_RETURN_IF_ERROR(st.ready(*slot, serial));
  if (Status s = slot->card->check_keygen_supported(alg); !s) {
    if (s.code() == make_error_code(Errc::kUnsupported)) {
      return event("AlgorithmUnsupported",
                   {{"entry", field(c, "entry")}, {"algorithm", field(c, "algorithm")}});
    }
    return s;
  }
  // generate_key returns the key already there under this id (an interrupted earlier attempt),
  // or generates whole a pair such an attempt left unfinished.
  auto key = slot->card->generate_key(alg, key_id, "persoflow " + ctx.workflow_id);
  if (!key && dv::is_card_full(key.status())) {
    return event("CardFull", {{"entry", field(c, "entry")}, {"reason", key.status().message()}});
  }
  if (!key) return key.status();
  return event("KeyGenerated", {{"entry", field(c, "entry")}, {"key_id", key_id}});
}

Result<Event> sign_with_officer(Impl& st, const Command& c) {
  auto token = st.officer_token(field(c, "pin_ref"));
  if (!token) {
    if (token.status().code() == make_error_code(Errc::kPermissionDenied)) {
      return officer_password_refused(token.status());
    }
    return token.status();
  }
  X509* cert = (*token)->certificate();
  return event("OfficerSigned", {{"signer_ref", "officer-p12:" + pr::serial_hex(
                                                    X509_get0_serialNumber(cert))}});
}

// A CA certificate the CM host returned, saved as state_dir/certs/ca-<serial>.der; returns its
// reference "ca-<serial>".
Result<std::string> save_ca_certificate(Impl& st, X509* ca) {
  const std::string ref = "ca-" + pr::serial_hex(X509_get0_serialNumber(ca));
  {
    // Every enrolment returns the same CA certificates: saved durably once per process.
    std::lock_guard lock(st.saved_ca_mu);
    if (st.saved_ca.count(ref)) return ref;
  }
  PF_ASSIGN_OR_RETURN(std::string der, pr::x509_to_der(ca));
  PF_RETURN_IF_ERROR(write_durably(st.dir("certs") + "/" + ref + ".der", der));
  std::lock_guard lock(st.saved_ca_mu);
  st.saved_ca.insert(ref);
  return ref;
}

// One CMP ir (cr for update-card) for a key the card holds, transactionID `tid_hex`, through the
// CM link: the request DER is saved before it is sent and resent as it is on a repeat.
// Answers "Enrolled{serial}" with the certificate saved in state_dir/certs, or CmRefused.
Result<Event> enroll_card_key(Impl& st, const Command& c, const std::string& tid_hex,
                              const std::vector<unsigned char>& cka) {
  const std::string serial = field(c, "token_serial");
  // Through the CM link (transactionID = idempotency key, the request saved before it is sent
  // and resent as saved, transport failures retried with backoff).
  PF_ASSIGN_OR_RETURN(CmLink * link, st.cm_link());
  const std::string saved = st.dir("cmp") + "/" + tid_hex + ".der";
  pr::CertRequest req;
  req.type = field(c, "message") == "cr" ? pr::CertRequestType::kCr : pr::CertRequestType::kIr;
  req.procedure = field(c, "procedure");
  for (const auto& [k, v] : c.fields) {
    if (k.rfind("subject.", 0) == 0) req.subject += "/" + k.substr(8) + "=" + v;
  }
  PF_ASSIGN_OR_RETURN(auto tid, dv::from_hex(tid_hex));
  req.transaction_id.assign(tid.begin(), tid.end());

  auto slot = st.slot(serial);
  std::unique_lock lock(slot->mu);
  PF_RETURN_IF_ERROR(st.ready(*slot, serial));
  PF_ASSIGN_OR_RETURN(EVP_PKEY * key, slot->card->private_key(cka));
  pr::EvpPkeyPtr key_owner(key);
  req.key = key;
  PF_ASSIGN_OR_RETURN(CmAnswer answer, link->enroll(req, saved));
  lock.unlock();
  if (answer.refused) {
    return event("CmRefused",
                 {{"reason", answer.refusal_message}, {"detail", answer.refusal_detail}});
  }
  const pr::Enrolled* enrolled = answer.enrolled.get();
  PF_ASSIGN_OR_RETURN(std::string der, pr::x509_to_der(enrolled->cert.get()));
  PF_RETURN_IF_ERROR(write_durably(st.dir("certs") + "/" + enrolled->serial_hex + ".der", der));
  Fields out{{"serial", enrolled->serial_hex}};
  int m = 0;
  for (const auto& ca : enrolled->ca_pubs) {
    PF_ASSIGN_OR_RETURN(out[machines::wf::item("ca", m++)], save_ca_certificate(st, ca.get()));
  }
  return event("Enrolled", std::move(out));
}

// The certificate the CM host issued with a key it generated or recovered (in its saved genp),
// saved in state_dir/certs; returns its serial.
Result<std::string> save_cm_key_certificate(Impl& st, const std::string& key_ref) {
  PF_ASSIGN_OR_RETURN(CmKey key, cm_key(st, key_ref));
  PF_ASSIGN_OR_RETURN(pr::X509Ptr cert, pr::x509_from_der(key.certificate_der));
  const std::string serial = pr::serial_hex(X509_get0_serialNumber(cert.get()));
  PF_RETURN_IF_ERROR(write_durably(st.dir("certs") + "/" + serial + ".der", key.certificate_der));
  return serial;
}

// Every request.<r> of the command: keys the card holds are enrolled (the first under the
// machine's transactionID, the others under ids derived from it); keys from the CM host came
// with their certificates. cert.<k>.ref is "<serial>@<CKA_ID hex>" or "<serial>@<key ref>".
Result<Event> submit_to_cm(Impl& st, const Command& c) {
  using machines::wf::item;
  const std::string tid_hex = field(c, "transaction_id");
  if (tid_hex.size() != 32) return make_status(Errc::kInvalidArgument, "bad transaction_id");
  Fields out;
  int n = 0;
  int enrolments = 0;
  std::vector<std::string> ca_refs;  // the CA certificates the CM host returned
  for (int r = 0; c.fields.count(item("request", r, "entry")); ++r) {
    const std::string kind = field(c, item("request", r, "kind"));
    const std::string entry = field(c, item("request", r, "entry"));
    if (kind == "archive" || kind == "recover") {
      std::vector<std::string> refs;
      if (kind == "archive") refs.push_back(field(c, item("request", r, "key_ref")));
      const std::string recovered = item("request", r, "recovered");
      for (int j = 0; kind == "recover" && c.fields.count(item(recovered, j, "key_ref")); ++j) {
        refs.push_back(field(c, item(recovered, j, "key_ref")));
      }
      for (const std::string& ref : refs) {
        PF_ASSIGN_OR_RETURN(std::string cert_serial, save_cm_key_certificate(st, ref));
        out[item("cert", n, "serial")] = cert_serial;
        out[item("cert", n, "ref")] = cert_serial + "@" + ref;
        out[item("cert", n, "entry")] = entry;
        ++n;
      }
      continue;
    }
    // issue-card: generate | certify; update-card (a key the card holds): issue | redo | add.
    if (kind != "generate" && kind != "certify" && kind != "issue" && kind != "redo" &&
        kind != "add") {
      return make_status(Errc::kInvalidArgument, "unknown request kind '" + kind + "'");
    }
    PF_ASSIGN_OR_RETURN(auto cka, card_key_id(kind, field(c, item("request", r, "key_id"))));
    const std::string tid =
        enrolments++ == 0 ? tid_hex
                          : machines::wf::derive_id(tid_hex, "request/" + std::to_string(r));
    PF_ASSIGN_OR_RETURN(Event enrolled, enroll_card_key(st, c, tid, cka));
    if (enrolled.type != "Enrolled") return enrolled;
    for (const std::string& ref : machines::wf::values(enrolled.fields, "ca")) {
      if (std::find(ca_refs.begin(), ca_refs.end(), ref) == ca_refs.end()) ca_refs.push_back(ref);
    }
    const std::string cert_serial = enrolled.fields["serial"];
    // ref: the saved certificate and the CKA_ID it belongs under.
    out[item("cert", n, "serial")] = cert_serial;
    out[item("cert", n, "ref")] = cert_serial + "@" + dv::to_hex(cka);
    out[item("cert", n, "entry")] = entry;
    ++n;
  }
  if (n == 0) return make_status(Errc::kInvalidArgument, "SubmitToCm lists no request");
  if (ca_refs.empty()) {
    // Only keys from the CM host (no ip with caPubs): the CA certificates the station trusts the
    // CM host by, which its answers were checked against.
    PF_ASSIGN_OR_RETURN(auto chain, pr::read_pem_certs(st.config.cm_ca));
    for (const auto& ca : chain) {
      PF_ASSIGN_OR_RETURN(std::string ref, save_ca_certificate(st, ca.get()));
      ca_refs.push_back(ref);
    }
  }
  for (std::size_t m = 0; m < ca_refs.size(); ++m) {
    out[machines::wf::item("ca_cert", static_cast<int>(m), "ref")] = ca_refs[m];
  }
  return event("CertificatesIssued", std::move(out));
}

// The machine key id of a key from the CM host (key.<i>.key_ref or key.<i>.recovered.<j>.key_ref
// of WriteKeysAndCertificates): its CKA_ID on the card is derive_key_id(<that id>).
Result<std::string> machine_key_id_of(const Command& c, const std::string& key_ref) {
  for (const auto& [k, v] : c.fields) {
    if (v != key_ref || k.size() < 8 || k.compare(k.size() - 8, 8, ".key_ref") != 0) continue;
    auto id = c.fields.find(k.substr(0, k.size() - 8) + ".key_id");
    if (id != c.fields.end()) return id->second;
  }
  return make_status(Errc::kInvalidArgument, "no key id for the CM host's key " + key_ref);
}

Result<Event> write_keys_and_certificates(Impl& st, const Command& c) {
  const std::string serial = field(c, "token_serial");
  auto slot = st.slot(serial);
  std::lock_guard lock(slot->mu);
  PF_RETURN_IF_ERROR(st.ready(*slot, serial));
  if (slot->card->token().serial != serial) {
    return make_status(Errc::kRejected, "refusing to write to card " + slot->card->token().serial +
                                            ": the workflow's card is " + serial);
  }
  // Re-read the card first: a certificate already there counts as written.
  PF_ASSIGN_OR_RETURN(dv::CardContents contents,
                      slot->card->read_contents(dv::TransportCertificateRule::defaults()));
  // object.<n> names what this write may create ("cert:<serial>"): a certificate the CM host
  // issued for a key that keeps it off the card (update-card's issue) is not among them.
  const std::vector<std::string> objects = machines::wf::values(c.fields, "object");
  auto listed = [&](const std::string& object) {
    return objects.empty() || std::find(objects.begin(), objects.end(), object) != objects.end();
  };
  for (int k = 0; c.fields.count(machines::wf::item("cert", k, "ref")); ++k) {
    const std::string ref = field(c, machines::wf::item("cert", k, "ref"));
    const auto at = ref.find('@');
    if (at == std::string::npos) return make_status(Errc::kInvalidArgument, "bad cert ref " + ref);
    const std::string cert_serial = ref.substr(0, at);
    if (!listed("cert:" + cert_serial)) continue;
    bool present = false;
    for (const auto& cert : contents.certificates) {
      if (cert.serial_hex == cert_serial) present = true;
    }
    if (present) continue;
    std::vector<unsigned char> id;
    const std::string owner = ref.substr(at + 1);
    if (owner.rfind("cm:", 0) == 0) {
      // A key from the CM host: the key first, under the CKA_ID the machine derived for it.
      PF_ASSIGN_OR_RETURN(std::string key_id, machine_key_id_of(c, owner));
      id = dv::derive_key_id(key_id);
      if (!listed("key:" + key_id)) {
        return make_status(Errc::kInvalidArgument, "the write does not list the key " + key_id);
      }
      Status s = write_cm_key(st, *slot->card, owner, id, "persoflow key");
      if (!s) {
        if (dv::is_card_full(s)) {
          return event("CardFull", {{"reason", s.message()}});
        }
        return s;
      }
    } else {
      PF_ASSIGN_OR_RETURN(id, dv::from_hex(owner));
    }
    PF_ASSIGN_OR_RETURN(std::string der, read_file(st.dir("certs") + "/" + cert_serial + ".der"));
    Status s = slot->card->store_certificate(der, id, "persoflow certificate");
    if (!s) {
      if (dv::is_card_full(s)) {
        return event("CardFull", {{"reason", s.message()}});
      }
      return s;
    }
  }
  // Then the certificates this write replaces (redo; the TC): after the new ones are stored, so
  // an interruption never leaves the key without a certificate. One already gone is done.
  for (const std::string& object : machines::wf::values(c.fields, "remove")) {
    if (object.rfind("cert:", 0) != 0) {
      return make_status(Errc::kInvalidArgument, "cannot remove '" + object + "' from a card");
    }
    const std::string old_serial = object.substr(5);
    for (const auto& cert : contents.certificates) {
      if (cert.serial_hex != old_serial) continue;
      Status s = slot->card->delete_certificate(cert.id, old_serial);
      if (!s && s.code() != make_error_code(Errc::kNotFound)) return s;
    }
  }
  return event("CardWritten");
}

// Undoes what the workflow may have written (the machine lists it as object.<n> before the
// command that could create it): "cert:<serial>" removes that certificate, "key:<machine key id>"
// the key generated under its derived CKA_ID with the certificates under it, "cacert:ca-<serial>"
// a CA certificate ReplaceCaCertificates wrote (the ones it replaced are not put back). What is
// not (or no longer) there counts as removed.
Result<Event> rollback_card(Impl& st, const Command& c) {
  const std::string serial = field(c, "token_serial");
  auto slot = st.slot(serial);
  std::lock_guard lock(slot->mu);
  PF_ASSIGN_OR_RETURN(dv::CardContents contents, workflow_card_contents(st, *slot, serial));
  auto gone = [](const Status& s) {
    return s.is_ok() || s.code() == make_error_code(Errc::kNotFound);
  };
  int removed = 0;
  const std::vector<std::string> objects = machines::wf::values(c.fields, "object");
  for (const std::string& object : objects) {
    if (object.rfind("cert:", 0) != 0) continue;
    for (const auto& cert : contents.certificates) {
      if (cert.serial_hex != object.substr(5)) continue;
      Status s = slot->card->delete_certificate(cert.id, cert.serial_hex);
      if (!gone(s)) return s;
      ++removed;
    }
  }
  for (const std::string& object : objects) {
    if (object.rfind("cacert:ca-", 0) != 0) continue;
    for (const auto& cert : contents.certificates) {
      if (cert.serial_hex != object.substr(10) || cert.label != kCaCertificateLabel) continue;
      Status s = slot->card->delete_certificate(cert.id, cert.serial_hex);
      if (!gone(s)) return s;
      ++removed;
    }
  }
  for (const std::string& object : objects) {
    if (object.rfind("key:", 0) != 0) continue;
    const std::vector<unsigned char> id = dv::derive_key_id(object.substr(4));
    if (Status s = slot->card->delete_certificates(id); !gone(s)) return s;
    Status s = slot->card->delete_key(id);
    if (!gone(s)) return s;
    if (s.is_ok()) ++removed;
  }
  return event("RollbackConfirmed", {{"removed", std::to_string(removed)}});
}

std::string pin_ref_for(const CommandContext& ctx) {
  return "pin-" + machines::wf::derive_id(ctx.idempotency_key, "card-pin");
}

Result<Event> generate_pin(Impl& st, const Command& c, const CommandContext& ctx) {
  const std::string ref = pin_ref_for(ctx);
  const std::string path = st.dir("secrets") + "/" + ref;
  if (!fs::exists(path)) {  // a repeat keeps the PIN generated the first time
    PF_ASSIGN_OR_RETURN(dv::Secret pin, dv::generate_pin(dv::PinRules{}));  // 8 digits
    PF_RETURN_IF_ERROR(write_durably(path, std::string(pin.view()) + "\n", 0600));
  }
  return event("PinGenerated", {{"pin_index", field(c, "pin_index")}, {"pin_ref", ref}});
}

Result<std::string> secret(Impl& st, const std::string& ref) {
  if (!safe_name(ref)) return make_status(Errc::kInvalidArgument, "bad PIN reference " + ref);
  return first_line(st.dir("secrets") + "/" + ref);
}

// A PIN that nothing delivers after it is set (entered at the RA, from a PIN/PUK letter): its
// secret file goes once the PIN is on the card, so a missing one means it was set.
bool deleted_once_set(const std::string& pin_ref) {
  return pin_ref.rfind("entered-", 0) == 0 || pin_ref.rfind("letter-", 0) == 0;
}

Result<Event> set_card_pin(Impl& st, const Command& c) {
  const std::string serial = field(c, "token_serial");
  const std::string ref = field(c, "pin_ref");
  auto saved = secret(st, ref);
  if (!saved && deleted_once_set(ref) && safe_name(ref) &&
      !fs::exists(st.dir("secrets") + "/" + ref)) {
    return event("CardPinSet", {{"pin_index", field(c, "pin_index")}});
  }
  PF_ASSIGN_OR_RETURN(std::string pin, std::move(saved));
  if (field(c, "pin_index") == "1") {  // the second PIN of a card with two: its PUK
    PF_RETURN_IF_ERROR(set_card_puk(st, serial, pin));
    if (deleted_once_set(ref)) {
      std::error_code ec;
      fs::remove(st.dir("secrets") + "/" + ref, ec);
    }
    return event("CardPinSet", {{"pin_index", "1"}});
  }
  auto slot = st.slot(serial);
  std::lock_guard lock(slot->mu);
  PF_RETURN_IF_ERROR(st.opened(*slot, serial));
  if (!slot->logged_in) {
    // A repeat after the PIN was changed: the new PIN already opens the card.
    if (slot->card->login(dv::UserType::kUser, pin)) {
      slot->logged_in = true;
      slot->current_pin = pin;
    } else {
      PF_RETURN_IF_ERROR(st.ready(*slot, serial));
    }
  }
  if (slot->current_pin != pin) {
    PF_RETURN_IF_ERROR(slot->card->change_user_pin(slot->current_pin, pin));
    slot->current_pin = pin;
  }
  if (deleted_once_set(ref)) {
    std::error_code ec;
    fs::remove(st.dir("secrets") + "/" + ref, ec);
  }
  return event("CardPinSet", {{"pin_index", field(c, "pin_index")}});
}

Result<Event> show_pin_once(Impl& st, const Command& c, const CommandContext& ctx,
                            const std::string& token_serial) {
  const std::string ref = field(c, "pin_ref");
  auto pin = secret(st, ref);
  if (pin) {
    {
      std::lock_guard lock(st.display_mu);
      const char* what = field(c, "pin_index") == "1" ? "PUK" : "PIN";
      if (st.display) st.display(ctx.workflow_id, token_serial, what, *pin);
    }
    std::error_code ec;
    fs::remove(st.dir("secrets") + "/" + ref, ec);
  }
  // No saved PIN: it was shown by an earlier attempt and deleted then.
  return event("PinDelivered", {{"pin_index", field(c, "pin_index")}});
}

}  // namespace

void install_issue_card_executors(ExecutorRegistry& registry, std::shared_ptr<Station> station) {
  RetryPolicy card{3, std::chrono::milliseconds(60'000), std::chrono::milliseconds(200),
                   std::chrono::milliseconds(2'000)};
  const RetryPolicy cm = station->config().cm_retry;  // station.conf "cm_retry"
  RetryPolicy quick{3, std::chrono::milliseconds(10'000), std::chrono::milliseconds(100),
                    std::chrono::milliseconds(1'000)};
  auto s = station;
  registry.add("ReadCardContents",
               blocking_executor([s](const Command& c, const CommandContext&) {
                 return read_card_contents(s->impl(), c);
               }, card));
  registry.add("AskOperator", blocking_executor([s](const Command& c, const CommandContext& ctx) {
                 return ask_operator(*s, c, ctx);
               }, quick));
  registry.add("GenerateKeyOnCard",
               blocking_executor([s](const Command& c, const CommandContext& ctx) {
                 return generate_key(s->impl(), c, ctx);
               }, card));
  registry.add("SignWithOfficer", blocking_executor([s](const Command& c, const CommandContext&) {
                 return sign_with_officer(s->impl(), c);
               }, quick));
  registry.add("SubmitToCm", blocking_executor([s](const Command& c, const CommandContext&) {
                 return submit_to_cm(s->impl(), c);
               }, cm));
  registry.add("WriteKeysAndCertificates",
               blocking_executor([s](const Command& c, const CommandContext&) {
                 return write_keys_and_certificates(s->impl(), c);
               }, card));
  registry.add("RollbackCard", blocking_executor([s](const Command& c, const CommandContext&) {
                 return rollback_card(s->impl(), c);
               }, card));
  registry.add("GeneratePin", blocking_executor([s](const Command& c, const CommandContext& ctx) {
                 return generate_pin(s->impl(), c, ctx);
               }, quick));
  registry.add("SetCardPin", blocking_executor([s](const Command& c, const CommandContext&) {
                 return set_card_pin(s->impl(), c);
               }, card));
  registry.add("ShowPinOnce",
               blocking_executor([s](const Command& c, const CommandContext& ctx) -> Result<Event> {
                 PF_ASSIGN_OR_RETURN(CardRequest req, s->load_request(ctx.workflow_id));
                 return show_pin_once(s->impl(), c, ctx, req.token_serial);
               }, quick));
  install_card_pin_executors(registry, station);
  install_update_card_executors(registry, station);
  install_card_key_executors(registry, station);
}

unsigned station_blocking_threads(std::size_t cards) {
  return static_cast<unsigned>(std::clamp<std::size_t>(cards, 4, 64));
}

Result<std::shared_ptr<Station>> station_from_environment() {
  // Never destroyed: the cards it holds use the PKCS#11 module, whose own static state may be
  // gone by the time static destructors run.
  static std::mutex mu;
  static auto* holder = new std::shared_ptr<Station>();
  std::shared_ptr<Station>& station = *holder;
  std::lock_guard lock(mu);
  if (station) return station;
  const char* path = std::getenv("PERSOFLOW_STATION_CONFIG");
  if (!path || !*path) {
    return make_status(Errc::kNotFound,
                       "set PERSOFLOW_STATION_CONFIG to the station configuration (station.conf)");
  }
  PF_ASSIGN_OR_RETURN(StationConfig config, load_station_config(path));
  PF_ASSIGN_OR_RETURN(station, Station::open(std::move(config)));
  return station;
}

namespace {

// For `persoflow workflows resume`: executors over the station of $PERSOFLOW_STATION_CONFIG.
// Without it every command fails with that message (and the workflow is suspended, not lost).
void install_from_environment(ExecutorRegistry& registry) {
  // One set serves both machines: `workflows resume` installs it once for either.
  if (registry.find("ReadCardContents")) return;
  auto station = station_from_environment();
  if (station) {
    install_issue_card_executors(registry, *station);
    return;
  }
  const Status why = station.status();
  for (const char* type : {"ReadCardContents", "AskOperator", "GenerateKeyOnCard",
                           "SignWithOfficer", "SubmitToCm", "WriteKeysAndCertificates",
                           "GeneratePin", "SetCardPin", "ShowPinOnce",
                           "ValidateTransportCertificate", "NotifyOperator", "RollbackCard",
                           "RevokeIssuedCertificates", "RequestServerKeygenAndArchive",
                           "RequestKeyRecovery", "ReplaceCaCertificates", "QueuePinLetter",
                           "ResolvePinLetter"}) {
    registry.add(type, blocking_executor([why](const Command&, const CommandContext&)
                                             -> Result<Event> { return why; },
                                         RetryPolicy{1}));
  }
}

}  // namespace

PF_REGISTER_EXECUTORS(issue_card, "issue-card", install_from_environment);
PF_REGISTER_EXECUTORS(update_card, "update-card", install_from_environment);

}  // namespace persoflow::actors
