// Shared genm helpers of the RA executors (cm_genm.hpp).
#include "cm_genm.hpp"

#include <openssl/cms.h>

#include <filesystem>

#include "persoflow/actors/state_files.hpp"
#include "persoflow/devices/pkcs12.hpp"
#include "persoflow/protocol/cm_info_types.hpp"
#include "persoflow/protocol/cmp_der.hpp"
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

// Every UTF8String inside a DER value (depth first), e.g. the statusString and errorDetails of a
// CMP error message.
void utf8_strings(std::string_view der, std::vector<std::string>& out, int depth = 0) {
  auto items = pr::der_items(der);
  if (!items || depth > 8) return;
  for (const auto& item : *items) {
    if (item.constructed) {
      utf8_strings(item.content, out, depth + 1);
    } else if (item.cls == V_ASN1_UNIVERSAL && item.tag == V_ASN1_UTF8STRING) {
      out.emplace_back(item.content);
    }
  }
}

}  // namespace

std::shared_ptr<Status> persist_requests(pr::CmpClient& client, const std::string& saved_path) {
  if (fs::exists(saved_path)) {
    if (auto der = read_file(saved_path)) client.resend_next(*der);
  }
  auto save_status = std::make_shared<Status>(Status::ok());
  client.on_request_sent([saved_path, save_status](const std::string& der) {
    if (!fs::exists(saved_path)) *save_status = write_state_file(saved_path, der);
  });
  return save_status;
}

// OpenSSL 3.0 has no getter for the errorDetails of a CMP error message: read them from the DER.
std::string refusal_text(const pr::CmpClient& client, const Status& status) {
  std::vector<std::string> texts;
  if (auto body = pr::cmp_body_content(client.last_response_der())) utf8_strings(*body, texts);
  std::string out;
  for (const auto& t : texts) out += (out.empty() ? "" : "; ") + t;
  if (out.empty()) out = client.last_failure().text;
  return out.empty() ? status.message() : out;
}

Result<json> key_genm(const ClientFactory& make_client, const std::string& request_file,
                      const std::string& answer_file, const char* oid, const json& body,
                      const std::string& procedure, bool* refused, std::string* why) {
  if (auto saved = read_file(answer_file)) return json::parse(*saved);
  PF_ASSIGN_OR_RETURN(auto client, make_client());
  auto save = persist_requests(*client, request_file);
  auto answer = client->general_message({{oid, body.dump()}}, procedure);
  PF_RETURN_IF_ERROR(*save);
  if (!answer) {
    if (client->last_failure().pki_status >= 0 || !client->last_response_der().empty()) {
      *refused = true;
      *why = refusal_text(*client, answer.status());
      return json();
    }
    return answer.status();  // unreachable: the engine retries
  }
  if (answer->empty()) return make_status(Errc::kCorrupt, "the CM host's genp is empty");
  json j = json::parse(answer->front().value);
  if (!j.contains("keys")) j = json{{"keys", json::array({j})}};
  PF_RETURN_IF_ERROR(write_state_file(answer_file, j.dump()));
  return j;
}

std::string QueuedPinLetter::notice_text() const {
  // The letter is what delivers the PIN; a notice the relay refused is worth a word, not a stop.
  if (notice == "mailed") return "; e-mail notice sent";
  if (!notice.empty()) return "; the e-mail notice was not sent: " + notice;
  return "";
}

Result<QueuedPinLetter> queue_pin_letter(pr::CmpClient& client, const std::string& holder,
                                         const std::string& address, const std::string& token,
                                         std::string pin, const std::string& idempotency_key,
                                         std::string puk) {
  json body = {{"holder", holder},
               {"address", address},
               {"token", token},
               {"pin", pin},
               {"idempotency_key", idempotency_key}};
  if (!puk.empty()) body["puk"] = puk;
  OPENSSL_cleanse(pin.data(), pin.size());
  OPENSSL_cleanse(puk.data(), puk.size());
  std::string text = body.dump();
  for (const char* secret : {"pin", "puk"}) {
    if (!body.contains(secret)) continue;
    std::string& sent = body[secret].get_ref<std::string&>();
    OPENSSL_cleanse(sent.data(), sent.size());
  }
  auto answer = client.general_message({{pr::kOidPinLetterQueue, text}});
  OPENSSL_cleanse(text.data(), text.size());
  if (!answer) {
    if (client.last_failure().pki_status >= 0 || !client.last_response_der().empty()) {
      return make_status(Errc::kRejected, "the CM host refused the PIN letter: " +
                                              refusal_text(client, answer.status()));
    }
    return answer.status();
  }
  try {
    const json queued = json::parse(answer->at(0).value);
    return QueuedPinLetter{queued.value("letter_id", ""), queued.value("notice", "")};
  } catch (const std::exception& e) {
    return make_status(Errc::kCorrupt, std::string("the CM host's answer: ") + e.what());
  }
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
