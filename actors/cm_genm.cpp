// Shared genm helpers of the RA executors (cm_genm.hpp).
#include "cm_genm.hpp"

#include <openssl/cms.h>
#include <openssl/crypto.h>

#include <filesystem>

#include "persoflow/actors/state_files.hpp"
#include "persoflow/devices/pkcs12.hpp"
#include "persoflow/machines/workflow_support.hpp"
#include "persoflow/protocol/cm_info_types.hpp"
#include "persoflow/protocol/ossl.hpp"

namespace persoflow::actors::genm {
namespace {

namespace fs = std::filesystem;
namespace pr = persoflow::protocol;
using nlohmann::json;

// A state file, replaced atomically (0600, fsync'ed).
Status write_state_file(const std::string& path, std::string_view data) {
  return devices::write_file_atomic(path, data, /*force=*/true);
}

// JSON text that `what` names; kCorrupt instead of an exception when it is not JSON.
Result<json> parse_json(const std::string& text, const std::string& what) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return make_status(Errc::kCorrupt, what + " is not JSON");
  return j;
}

}  // namespace

Result<json> json_genm(CmLink& link, const char* oid, const json& body, std::string* refusal) {
  PF_ASSIGN_OR_RETURN(CmAnswer answer, link.general_message({{oid, body.dump()}}));
  if (answer.refused) {
    *refusal = answer.refusal_message;
    return json::object();
  }
  for (const auto& item : answer.items) {
    if (item.oid != oid) continue;
    try {
      return json::parse(item.value);
    } catch (const std::exception& e) {
      return make_status(Errc::kCorrupt, std::string("the CM host's ") + pr::info_type_name(oid) +
                                             " answer is not JSON: " + e.what());
    }
  }
  return make_status(Errc::kCorrupt,
                     std::string("the CM host's genp lacks ") + pr::info_type_name(oid));
}

std::string pin_letter_refusal(const std::string& letter_id, const std::string& why) {
  const auto named = why.find("PIN letter " + letter_id);
  return named == std::string::npos
             ? "the CM host refused PIN letter " + letter_id + ": " + why
             : "the CM host refused: " + why.substr(named);
}

Result<json> procedure_list(CmLink& link) {
  std::string refusal;
  PF_ASSIGN_OR_RETURN(json list, json_genm(link, protocol::kOidProcedureList, json::object(),
                                           &refusal));
  return procedure_list_answer(std::move(list), refusal);
}

Result<json> procedure_list_answer(json list, const std::string& refusal) {
  if (!refusal.empty()) {
    return make_status(Errc::kRejected, "the CM host refused to list its procedures: " + refusal);
  }
  return list;
}

Result<json> key_genm(CmLink& link, const std::string& request_file, const std::string& answer_file,
                      const char* oid, const json& body, const std::string& procedure,
                      bool* refused, std::string* why) {
  if (auto saved = read_file(answer_file)) {
    return parse_json(*saved, "the saved CM host answer " + answer_file);
  }
  PF_ASSIGN_OR_RETURN(CmAnswer answer,
                      link.general_message({{oid, body.dump()}}, procedure, request_file));
  if (answer.refused) {
    *refused = true;
    *why = answer.refusal_message;
    return json();
  }
  if (answer.items.empty()) return make_status(Errc::kCorrupt, "the CM host's genp is empty");
  PF_ASSIGN_OR_RETURN(json j, parse_json(answer.items.front().value,
                                         std::string("the CM host's ") + pr::info_type_name(oid) +
                                             " answer"));
  if (!j.contains("keys")) j = json{{"keys", json::array({j})}};
  PF_RETURN_IF_ERROR(write_state_file(answer_file, j.dump()));
  return j;
}

Result<machines::Event> queue_pin_letter(CmLink& link, const machines::Command& c,
                                         const CommandContext& ctx, const std::string& secrets_dir,
                                         const std::map<std::string, std::string>& holder,
                                         const std::string& token,
                                         const std::function<void(const std::string&)>& notify) {
  auto field = [&c](const char* key) {
    auto it = c.fields.find(key);
    return it == c.fields.end() ? std::string() : it->second;
  };
  const std::string ref = field("pin_ref");
  if (!safe_file_name(ref)) return make_status(Errc::kInvalidArgument, "bad PIN reference " + ref);
  const std::string pin_file = secrets_dir + "/" + ref;
  const std::string address = field("address");
  machines::Event delivered{"PinDelivered", {{"pin_index", field("pin_index")}}};
  auto pin = first_line(pin_file);
  if (!pin) return delivered;  // queued by an earlier attempt, then deleted
  // A card with two PINs: its PUK goes in the same letter.
  const std::string puk_ref = field("puk_ref");
  const std::string puk_file = secrets_dir + "/" + puk_ref;
  std::string puk;
  if (!puk_ref.empty()) {
    if (!safe_file_name(puk_ref)) return make_status(Errc::kInvalidArgument, "bad PUK reference");
    PF_ASSIGN_OR_RETURN(puk, first_line(puk_file));
  }
  std::string holder_text;
  for (const auto& [name, value] : holder) {
    holder_text += (holder_text.empty() ? "" : ",") + name + "=" + value;
  }
  json body = {{"holder", holder_text},
               {"address", address},
               {"token", token},
               {"pin", *pin},
               {"idempotency_key", machines::wf::derive_id(ctx.idempotency_key, "pin-letter")}};
  if (!puk.empty()) body["puk"] = puk;
  OPENSSL_cleanse(pin->data(), pin->size());
  OPENSSL_cleanse(puk.data(), puk.size());
  std::string text = body.dump();
  for (const char* secret : {"pin", "puk"}) {
    if (!body.contains(secret)) continue;
    std::string& sent = body[secret].get_ref<std::string&>();
    OPENSSL_cleanse(sent.data(), sent.size());
  }
  auto answer = link.general_message({{pr::kOidPinLetterQueue, text}});
  OPENSSL_cleanse(text.data(), text.size());
  if (!answer) return answer.status();
  if (answer->refused) {
    const std::string why = "the CM host refused the PIN letter: " + answer->refusal_message;
    notify(why);
    return make_status(Errc::kRejected, why);
  }
  std::string letter_id;
  std::string notice;
  try {
    const json queued = json::parse(answer->items.at(0).value);
    letter_id = queued.value("letter_id", "");
    notice = queued.value("notice", "");
  } catch (const std::exception& e) {
    return make_status(Errc::kCorrupt, std::string("the CM host's answer: ") + e.what());
  }
  // The letter is what delivers the PIN; a notice the relay refused is worth a word, not a stop.
  std::string notice_text;
  if (notice == "mailed") {
    notice_text = "; e-mail notice sent";
  } else if (!notice.empty()) {
    notice_text = "; the e-mail notice was not sent: " + notice;
  }
  notify((puk_ref.empty() ? "PIN letter " : "PIN/PUK letter ") + letter_id + " queued for " +
         address + notice_text);
  std::error_code ec;
  // The PIN's file goes last: its absence is a repeat's sign that the letter was queued.
  if (!puk_ref.empty()) std::filesystem::remove(puk_file, ec);
  std::filesystem::remove(pin_file, ec);
  delivered.fields["letter_id"] = letter_id;
  return delivered;
}

Result<std::string> open_for_officer(devices::OfficerToken& officer, std::string_view envelope) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(envelope.data());
  pr::CmsPtr cms(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(envelope.size())));
  if (!cms) return pr::openssl_failure("the CM host's envelope is not CMS");
  pr::BioPtr out(BIO_new(BIO_s_mem()));
  if (CMS_decrypt(cms.get(), officer.key(), officer.certificate(), nullptr, out.get(),
                  CMS_BINARY) != 1) {
    return pr::openssl_failure("opening the CM host's envelope with the officer's key");
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(out.get(), &data);
  std::string opened(data, static_cast<std::size_t>(len));
  OPENSSL_cleanse(data, static_cast<std::size_t>(len));
  return opened;
}

}  // namespace persoflow::actors::genm
