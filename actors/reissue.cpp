// The reissue executors on real parts (reissue.hpp): the CM host through the CM link (cm_link.hpp),
// cards through devices::Card, the officer's PKCS#12 through devices::OfficerToken.
//
// Each executor first looks at what is already there (the saved CMP request, the key under its
// derived CKA_ID, the certificate on the card, a certificate already revoked) and only then acts,
// so a repeat after a timeout or a crash ends in the same place.
#include "persoflow/actors/reissue.hpp"

#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "cm_genm.hpp"
#include "persoflow/actors/cm_link.hpp"
#include "persoflow/actors/operator_input.hpp"
#include "persoflow/actors/state_files.hpp"
#include "persoflow/devices/card.hpp"
#include "persoflow/devices/officer.hpp"
#include "persoflow/machines/workflow_support.hpp"
#include "persoflow/protocol/base64.hpp"
#include "persoflow/protocol/cm_info_types.hpp"
#include "persoflow/protocol/cmp_client.hpp"

namespace persoflow::actors {
namespace {

namespace fs = std::filesystem;
namespace dv = persoflow::devices;
namespace pr = persoflow::protocol;
using machines::Command;
using machines::Event;
using machines::Fields;
using nlohmann::json;

constexpr int kReasonSuperseded = 4;             // CRLReason (RFC 5280 5.3.1)
constexpr int kReasonCessationOfOperation = 5;
constexpr int kMaxCheckAfterSeconds = 3600;      // a poll never sleeps longer than this

std::string field(const Command& c, const std::string& key) {
  auto it = c.fields.find(key);
  return it == c.fields.end() ? std::string() : it->second;
}

Event event(std::string type, Fields fields = {}) {
  return Event{std::move(type), std::move(fields)};
}

// "CN=Alice,O=Example": RFC 2253, the form the machine compares subjects in.
std::string name_text(const X509_NAME* name) {
  pr::BioPtr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

// "/O=Example/CN=Alice": OpenSSL's one-line form, in the certificate's own order (what the CMP
// client and the card's CSR builder take).
std::string name_one_line(const X509_NAME* name) {
  std::string out;
  for (int i = 0; i < X509_NAME_entry_count(name); ++i) {
    const X509_NAME_ENTRY* e = X509_NAME_get_entry(name, i);
    const int nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(e));
    const ASN1_STRING* v = X509_NAME_ENTRY_get_data(e);
    unsigned char* utf8 = nullptr;
    int len = ASN1_STRING_to_UTF8(&utf8, v);
    std::string value = len > 0 ? std::string(reinterpret_cast<char*>(utf8), len) : "";
    OPENSSL_free(utf8);
    std::string escaped;
    for (char c : value) {
      if (c == '/' || c == '\\') escaped += '\\';
      escaped += c;
    }
    out += "/" + std::string(OBJ_nid2sn(nid)) + "=" + escaped;
  }
  return out;
}

// OpenSSL's curve names as the procedures and the key-generation list spell them.
std::string canonical_curve(std::string name) {
  if (name == "prime256v1" || name == "P-256") return "secp256r1";
  if (name == "P-384") return "secp384r1";
  if (name == "P-521") return "secp521r1";
  return name;
}

// "RSA:2048", "EC:secp256r1", "DSA:1024", "Ed25519".
std::string key_algorithm_text(const EVP_PKEY* key) {
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA: return "RSA:" + std::to_string(EVP_PKEY_get_bits(key));
    case EVP_PKEY_DSA: return "DSA:" + std::to_string(EVP_PKEY_get_bits(key));
    case EVP_PKEY_ED25519: return "Ed25519";
    case EVP_PKEY_ED448: return "Ed448";
    case EVP_PKEY_EC: {
      char group[80] = {};
      std::size_t len = 0;
      if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                         &len) != 1) {
        return "EC:unknown";
      }
      return "EC:" + canonical_curve(group);
    }
    default: return "unknown";
  }
}

// The keys a procedure allows, as the machine's allowed_key list (exact strings).
std::vector<std::string> allowed_keys(const json& rules) {
  static const std::vector<std::string> kAllCurves = {
      "secp256r1",       "secp384r1",       "secp521r1",      "brainpoolP256r1",
      "brainpoolP320r1", "brainpoolP384r1", "brainpoolP512r1"};
  std::vector<std::string> out;
  auto sizes = [&](const std::string& alg, std::initializer_list<int> candidates, const json& r) {
    const int min = r.value("min_bits", 0);
    const int max = r.value("max_bits", 0);
    for (int bits : candidates) {
      if (bits >= min && (max == 0 || bits <= max)) out.push_back(alg + ":" + std::to_string(bits));
    }
  };
  for (const auto& r : rules) {
    const std::string alg = r.value("algorithm", "");
    if (alg == "RSA") sizes("RSA", {1024, 2048, 3072, 4096, 8192}, r);
    if (alg == "DSA") sizes("DSA", {1024, 2048, 3072}, r);
    if (alg == "Ed25519" || alg == "Ed448") out.push_back(alg);
    if (alg == "EC") {
      auto curves = r.value("curves", std::vector<std::string>{});
      if (curves.empty()) curves = kAllCurves;
      for (const auto& c : curves) out.push_back("EC:" + canonical_curve(c));
    }
  }
  return out;
}

std::string strip_zeros(const std::string& hex) {
  std::size_t i = 0;
  while (i + 1 < hex.size() && hex[i] == '0') ++i;
  std::string out = hex.substr(i);
  std::transform(out.begin(), out.end(), out.begin(), ::toupper);
  return out;
}

// A PKCS#10 request from PEM or DER bytes; nullptr (and the reason) when it is neither.
pr::X509ReqPtr parse_csr(const std::string& bytes, std::string* why) {
  X509_REQ* raw = nullptr;
  if (bytes.find("-----BEGIN") != std::string::npos) {
    pr::BioPtr bio(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
    raw = PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr);
    if (!raw) *why = "PEM that holds no PKCS#10 request";
  } else {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    raw = d2i_X509_REQ(nullptr, &p, static_cast<long>(bytes.size()));
    if (raw && p != reinterpret_cast<const unsigned char*>(bytes.data()) + bytes.size()) {
      X509_REQ_free(raw);
      raw = nullptr;
    }
    if (!raw) *why = "neither PEM nor DER of a PKCS#10 request";
  }
  pr::drain_openssl_errors();
  return pr::X509ReqPtr(raw);
}

}  // namespace

// ----- The station's parts -----

struct ReissueStation::Impl {
  StationConfig config;
  std::string card_pin;
  int operator_fd = -1;  // set_operator_input

  struct CardSlot {
    std::mutex mu;
    std::unique_ptr<dv::Card> card;
    bool logged_in = false;
  };
  std::mutex cards_mu;
  std::map<std::string, std::shared_ptr<CardSlot>> cards;

  std::mutex officer_mu;
  std::unique_ptr<dv::OfficerToken> officer;

  std::string dir(const char* sub) const { return (fs::path(config.state_dir) / sub).string(); }
  std::string request_file(const std::string& wf, const char* suffix) const {
    return dir("reissue") + "/" + wf + suffix;
  }

  std::shared_ptr<CardSlot> slot(const std::string& serial) {
    std::lock_guard lock(cards_mu);
    auto& s = cards[serial];
    if (!s) s = std::make_shared<CardSlot>();
    return s;
  }

  // Opens the card with this serial and logs in with the cards' PIN. Caller holds s.mu.
  Status ready(CardSlot& s, const std::string& serial) {
    if (!s.card) {
      dv::TokenSelector sel;
      sel.serial = serial;
      PF_ASSIGN_OR_RETURN(s.card, dv::open_card(config.pkcs11_module, sel));
    }
    if (!s.logged_in) {
      PF_RETURN_IF_ERROR(s.card->login(dv::UserType::kUser, card_pin));
      s.logged_in = true;
    }
    return Status::ok();
  }

  Result<dv::OfficerToken*> officer_token() {
    std::lock_guard lock(officer_mu);
    if (officer) return officer.get();
    PF_ASSIGN_OR_RETURN(std::string password, first_line(config.officer_password_file));
    PF_ASSIGN_OR_RETURN(officer, dv::open_officer_pkcs12(config.officer_p12, password));
    return officer.get();
  }

  CmLinkOnFirstUse link;
  Result<CmLink*> cm_link() {
    return link.get(config.cm_url, config.cm_ca, [this] { return officer_token(); });
  }

  // One genm item (genm::json_genm); `refusal` gets the CM host's reason when it refused (then
  // the result is an empty object), transport failures are the returned Status.
  Result<json> genm(const char* oid, const json& request, std::string* refusal) {
    PF_ASSIGN_OR_RETURN(CmLink * to_cm, cm_link());
    return genm::json_genm(*to_cm, oid, request, refusal);
  }

  Result<pr::X509Ptr> previous_certificate(const std::string& wf) {
    PF_ASSIGN_OR_RETURN(std::string der, read_file(request_file(wf, ".previous.der")));
    return pr::x509_from_der(der);
  }

  // The new certificate (from a CMP answer or a genp) saved before the event says it is issued.
  Result<Event> issued(const std::string& serial, const std::string& der) {
    PF_RETURN_IF_ERROR(write_durably(dir("certs") + "/" + serial + ".der", der));
    return event("CertificateIssued", {{"serial", serial}, {"ref", serial}});
  }
};

ReissueStation::ReissueStation(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ReissueStation::~ReissueStation() = default;
const StationConfig& ReissueStation::config() const { return impl_->config; }

Result<std::shared_ptr<ReissueStation>> ReissueStation::open(StationConfig config) {
  if (!config.softhsm2_conf.empty()) ::setenv("SOFTHSM2_CONF", config.softhsm2_conf.c_str(), 1);
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  PF_ASSIGN_OR_RETURN(impl->card_pin, first_line(config.card_pin_file));
  for (const char* sub : {"reissue", "cmp", "certs"}) {
    std::error_code ec;
    fs::create_directories(fs::path(config.state_dir) / sub, ec);
    if (ec) {
      return make_status(Errc::kUnavailable, "cannot create " + config.state_dir + "/" + sub +
                                                 ": " + ec.message());
    }
  }
  return std::shared_ptr<ReissueStation>(new ReissueStation(std::move(impl)));
}

Result<std::string> ReissueStation::search_certificates(const std::string& query_json) {
  json query;
  try {
    query = json::parse(query_json);
  } catch (const std::exception& e) {
    return make_status(Errc::kInvalidArgument, std::string("the query is not JSON: ") + e.what());
  }
  std::string refusal;
  PF_ASSIGN_OR_RETURN(json answer, impl_->genm(pr::kOidCertificateSearch, query, &refusal));
  if (!refusal.empty()) return make_status(Errc::kRejected, "the CM host refused: " + refusal);
  return answer.dump();
}

void ReissueStation::set_operator_input(int fd) { impl_->operator_fd = fd; }

std::string ReissueStation::certificate_path(const std::string& serial_hex) const {
  return impl_->dir("certs") + "/" + serial_hex + ".der";
}

Status ReissueStation::save_request(ReissueRequest& r) {
  auto bad = [](const std::string& m) { return make_status(Errc::kInvalidArgument, m); };
  if (!safe_file_name(r.workflow_id)) {
    return bad("workflow id must be letters, digits, '.', '_' or '-', not '" + r.workflow_id + "'");
  }
  PF_RETURN_IF_ERROR(machines::wf::check_search(r.search, false));
  if (r.search.rfind("subject:", 0) == 0) {
    return bad("the previous certificate is found by --serial HEX or --id DEC, not by subject");
  }
  if (r.method == "csr") {
    if (r.csr_pem.empty()) return bad("the CSR is empty");
    PF_RETURN_IF_ERROR(write_durably(impl_->request_file(r.workflow_id, ".csr"), r.csr_pem));
  } else if (r.method == "card") {
    if (r.token_label.empty() && r.token_serial.empty()) return bad("name the card's token");
    PF_RETURN_IF_ERROR(dv::parse_key_algorithm(r.key_algorithm).status());
    if (r.token_serial.empty()) {
      PF_ASSIGN_OR_RETURN(auto tokens, dv::list_tokens(impl_->config.pkcs11_module));
      for (const auto& t : tokens) {
        if (t.label == r.token_label) r.token_serial = t.serial;
      }
      if (r.token_serial.empty()) {
        return make_status(Errc::kNotFound, "no token labelled '" + r.token_label + "' in " +
                                                impl_->config.pkcs11_module);
      }
    }
  } else {
    return bad("key method must be csr or card, not '" + r.method + "'");
  }
  json j = {{"workflow_id", r.workflow_id},   {"search", r.search},
            {"procedure", r.procedure},       {"method", r.method},
            {"token_label", r.token_label},   {"token_serial", r.token_serial},
            {"key_algorithm", r.key_algorithm}, {"revoke_previous", r.revoke_previous}};
  return write_durably(impl_->request_file(r.workflow_id, ".json"), j.dump() + "\n");
}

Result<ReissueRequest> ReissueStation::load_request(const std::string& wf) const {
  if (!safe_file_name(wf)) return make_status(Errc::kInvalidArgument, "bad workflow id " + wf);
  auto text = read_file(impl_->request_file(wf, ".json"));
  if (!text) {
    return make_status(Errc::kNotFound, "no reissue request saved for workflow " + wf + " in " +
                                            impl_->dir("reissue"));
  }
  ReissueRequest r;
  try {
    json j = json::parse(*text);
    r.workflow_id = j.at("workflow_id").get<std::string>();
    r.search = j.at("search").get<std::string>();
    r.procedure = j.at("procedure").get<std::string>();
    r.method = j.at("method").get<std::string>();
    r.token_label = j.value("token_label", "");
    r.token_serial = j.value("token_serial", "");
    r.key_algorithm = j.value("key_algorithm", "");
    r.revoke_previous = j.value("revoke_previous", true);
  } catch (const std::exception& e) {
    return make_status(Errc::kCorrupt, "the saved reissue request of " + wf + ": " + e.what());
  }
  return r;
}

Result<Event> ReissueStation::start_event(const ReissueRequest& r) {
  std::string refusal;
  PF_ASSIGN_OR_RETURN(json list, impl_->genm(pr::kOidProcedureList, json::object(), &refusal));
  if (!refusal.empty()) return make_status(Errc::kRejected, "the CM host refused: " + refusal);
  const json procedures = list.value("certificate_procedures", json::array());
  const json* procedure = nullptr;
  for (const auto& p : procedures) {
    if (p.value("name", "") == r.procedure) procedure = &p;
  }
  if (!procedure) {
    return make_status(Errc::kNotFound, "the CM host offers this officer no certificate "
                                        "procedure '" + r.procedure + "'");
  }
  Fields f{{"workflow_id", r.workflow_id},
           {"procedure", r.procedure},
           {"search", r.search},
           {"subject_rule", "previous"},
           {"revoke_previous", r.revoke_previous ? "yes" : "no"}};
  const auto keys = allowed_keys(procedure->value("key_algorithms", json::array()));
  for (std::size_t i = 0; i < keys.size(); ++i) {
    f[machines::wf::item("allowed_key", static_cast<int>(i))] = keys[i];
  }
  if (r.method == "card" && std::find(keys.begin(), keys.end(), r.key_algorithm) == keys.end()) {
    std::string all;
    for (const auto& k : keys) all += (all.empty() ? "" : ", ") + k;
    return make_status(Errc::kInvalidArgument, "key " + r.key_algorithm +
                                                   " is not allowed by procedure " + r.procedure +
                                                   " (allowed: " + all + ")");
  }
  const bool verify = procedure->value("email_verification", false);
  f["email_verification"] = verify ? "yes" : "no";
  if (verify) {
    // Poll for as long as the procedure lets the code live, and a little longer.
    const int minutes = procedure->value("verification_minutes", 60);
    const int check_after = std::max(1, procedure->value("verification_check_after", 30));
    f["max_polls"] = std::to_string(minutes * 60 / check_after + 2);
  }
  return event("ReissueStarted", std::move(f));
}

// ----- Executors -----

namespace {

using Impl = ReissueStation::Impl;

Result<Event> find_certificate(Impl& st, const Command& c, const CommandContext& ctx,
                               const ReissueRequest& req) {
  const std::string search = field(c, "search");
  json query;
  if (search.rfind("serial:", 0) == 0) {
    query["serial"] = search.substr(7);
  } else if (search.rfind("id:", 0) == 0) {
    query["cert_id"] = std::stoll(search.substr(3));
  } else {
    return make_status(Errc::kInvalidArgument, "search " + search + " is not serial: or id:");
  }
  std::string refusal;
  PF_ASSIGN_OR_RETURN(json answer, st.genm(pr::kOidCertificateSearch, query, &refusal));
  if (!refusal.empty()) return make_status(Errc::kRejected, "certificate search: " + refusal);
  const json list = answer.value("certificates", json::array());
  if (list.empty()) return event("PreviousCertificateNotFound", {{"search", search}});
  const json& found = list.at(0);
  PF_ASSIGN_OR_RETURN(std::string der,
                      pr::base64_decode(found.at("certificate").get<std::string>()));
  PF_ASSIGN_OR_RETURN(pr::X509Ptr cert, pr::x509_from_der(der));
  PF_RETURN_IF_ERROR(write_durably(st.request_file(ctx.workflow_id, ".previous.der"), der));
  const std::string serial = found.at("serial").get<std::string>();
  Fields f{{"serial", serial}, {"subject", name_text(X509_get_subject_name(cert.get()))}};
  if (req.method == "card") {
    f["token_serial"] = req.token_serial;
    // kur where the card holds the previous certificate's key: the old key is there to sign.
    auto slot = st.slot(req.token_serial);
    std::lock_guard lock(slot->mu);
    PF_RETURN_IF_ERROR(st.ready(*slot, req.token_serial));
    PF_ASSIGN_OR_RETURN(dv::CardContents contents,
                        slot->card->read_contents(dv::TransportCertificateRule::defaults()));
    for (const auto& on_card : contents.certificates) {
      if (strip_zeros(on_card.serial_hex) != strip_zeros(serial)) continue;
      for (const auto& key : contents.keys) {
        if (key.id_hex == on_card.id_hex && key.has_private) {
          f["old_key_usable"] = "yes";
          f["old_key_id"] = key.id_hex;
        }
      }
    }
  }
  return event("PreviousCertificateFound", std::move(f));
}

// After a refused CSR: the operator names a corrected CSR file, validated next in the same
// workflow. Each attempt is kept as <workflow>.csr-N (the journal names it). Nobody to ask, an
// empty answer or the end of the input: the refusal ends the workflow.
Result<Event> ask_for_another_csr(ReissueStation& station, const Command& c,
                                  const CommandContext& ctx) {
  const std::string refusal = "the CSR is refused: " + field(c, "csr_problem");
  Impl& st = station.impl();
  const Event cancel = event("CancelRequested", {{"reason", refusal}});
  if (st.operator_fd < 0) return cancel;
  for (;;) {
    PF_ASSIGN_OR_RETURN(auto answer,
                        ask_operator_line(st.operator_fd, ctx.workflow_id + ": " + refusal +
                                                              "\nanother CSR (a file name; "
                                                              "empty: cancel):"));
    if (!answer || answer->empty()) return cancel;
    auto bytes = read_file(*answer);
    if (!bytes || bytes->empty()) {
      std::cerr << ctx.workflow_id << ": cannot read a CSR from " << *answer << std::endl;
      continue;
    }
    int attempt = 2;
    while (fs::exists(st.request_file(ctx.workflow_id, (".csr-" + std::to_string(attempt)).c_str()))) {
      ++attempt;
    }
    const std::string suffix = ".csr-" + std::to_string(attempt);
    PF_RETURN_IF_ERROR(write_durably(st.request_file(ctx.workflow_id, suffix.c_str()), *bytes));
    return event("KeyMethodChosen", {{"method", "csr"}, {"csr_ref", ctx.workflow_id + suffix}});
  }
}

Result<Event> ask_operator(ReissueStation& station, const Command& c, const CommandContext& ctx,
                           bool retry_when_asked) {
  const std::string ask = field(c, "ask");
  if (ask == "retry" && retry_when_asked) return event("RetryRequested");
  PF_ASSIGN_OR_RETURN(ReissueRequest req, station.load_request(ctx.workflow_id));
  if (ask == "key_method") {
    if (c.fields.count("csr_problem")) return ask_for_another_csr(station, c, ctx);
    if (req.method == "csr") {
      return event("KeyMethodChosen", {{"method", "csr"}, {"csr_ref", ctx.workflow_id + ".csr"}});
    }
    return event("KeyMethodChosen", {{"method", "card"},
                                     {"algorithm", req.key_algorithm},
                                     {"token_serial", req.token_serial}});
  }
  if (ask == "signature_pin") {
    // The officer's PKCS#12 password stays in its file; the journal holds this reference only.
    return event("OfficerPinEntered", {{"pin_ref", "officer-password-file"}});
  }
  return make_status(Errc::kUnsupported, "the reissue command cannot answer the operator "
                                         "question '" + ask + "' unattended (" +
                                             field(c, "reason") + ")");
}

Result<Event> validate_csr(Impl& st, const Command& c) {
  const std::string ref = field(c, "csr_ref");
  if (!safe_file_name(ref)) return make_status(Errc::kInvalidArgument, "bad csr_ref " + ref);
  PF_ASSIGN_OR_RETURN(std::string bytes, read_file(st.dir("reissue") + "/" + ref));
  std::string why;
  pr::X509ReqPtr csr = parse_csr(bytes, &why);
  if (!csr) return event("CsrUnparseable", {{"reason", why}});
  EVP_PKEY* key = X509_REQ_get0_pubkey(csr.get());
  if (!key) {
    pr::drain_openssl_errors();
    return event("CsrUnparseable", {{"reason", "its public key cannot be decoded"}});
  }
  const bool signature_ok = X509_REQ_verify(csr.get(), key) == 1;
  pr::drain_openssl_errors();
  return event("CsrParsed", {{"key_algorithm", key_algorithm_text(key)},
                             {"subject", name_text(X509_REQ_get_subject_name(csr.get()))},
                             {"signature", signature_ok ? "valid" : "invalid"}});
}

Result<Event> generate_key_on_card(Impl& st, const Command& c, const CommandContext& ctx) {
  const std::string serial = field(c, "token_serial");
  const std::string key_id = field(c, "key_id");
  PF_ASSIGN_OR_RETURN(dv::KeyAlgorithm alg, dv::parse_key_algorithm(field(c, "algorithm")));
  auto slot = st.slot(serial);
  std::lock_guard lock(slot->mu);
  PF_RETURN_IF_ERROR(st.ready(*slot, serial));
  if (Status s = slot->card->check_keygen_supported(alg); !s) {
    if (s.code() == make_error_code(Errc::kUnsupported)) {
      return event("AlgorithmUnsupported", {{"algorithm", field(c, "algorithm")}});
    }
    return s;
  }
  // generate_key returns the key already there under this id (an interrupted earlier attempt),
  // or generates whole a pair such an attempt left unfinished.
  auto key = slot->card->generate_key(alg, key_id, "persoflow reissue " + ctx.workflow_id);
  if (!key) {
    if (dv::is_card_full(key.status())) {
      return event("CardFull", {{"reason", key.status().message()}});
    }
    return key.status();
  }
  return event("KeyGenerated", {{"key_id", key_id}});
}

Result<Event> build_csr_on_card(Impl& st, const Command& c, const CommandContext& ctx) {
  const std::string serial = field(c, "token_serial");
  PF_ASSIGN_OR_RETURN(pr::X509Ptr previous, st.previous_certificate(ctx.workflow_id));
  const std::string subject = name_one_line(X509_get_subject_name(previous.get()));
  auto slot = st.slot(serial);
  std::lock_guard lock(slot->mu);
  PF_RETURN_IF_ERROR(st.ready(*slot, serial));
  PF_ASSIGN_OR_RETURN(std::string der,
                      slot->card->make_csr(dv::derive_key_id(field(c, "key_id")), subject));
  const std::string ref = ctx.workflow_id + ".card.csr";
  PF_RETURN_IF_ERROR(write_durably(st.dir("reissue") + "/" + ref, der));
  return event("CsrBuiltOnCard", {{"csr_ref", ref}});
}

Result<Event> sign_with_officer(Impl& st) {
  auto token = st.officer_token();
  if (!token) {
    if (token.status().code() == make_error_code(Errc::kPermissionDenied)) {
      return officer_password_refused(token.status());
    }
    return token.status();
  }
  return event("OfficerSigned", {{"signer_ref", "officer-p12:" + pr::serial_hex(X509_get0_serialNumber(
                                                                     (*token)->certificate()))}});
}

// The CM host's answer to a status query of a waiting request, as the machine's event.
Result<Event> verification_event(Impl& st, const std::string& tid_hex) {
  std::string refusal;
  PF_ASSIGN_OR_RETURN(json answer, st.genm(pr::kOidEmailVerification,
                                           json{{"transaction_id", tid_hex}}, &refusal));
  if (!refusal.empty()) return event("CmRefused", {{"reason", refusal}});
  const std::string status = answer.value("status", "");
  if (status == "issued") {
    PF_ASSIGN_OR_RETURN(std::string der,
                        pr::base64_decode(answer.at("certificate").get<std::string>()));
    return st.issued(answer.at("serial").get<std::string>(), der);
  }
  if (status == "expired") return event("VerificationExpired");
  if (status == "waiting") {
    return event("CmWaiting", {{"check_after", std::to_string(answer.value("check_after", 30))}});
  }
  return make_status(Errc::kCorrupt, "the CM host answered the verification status '" + status +
                                         "'");
}

Result<Event> submit_to_cm(Impl& st, const Command& c, const CommandContext& ctx) {
  const std::string tid_hex = field(c, "transaction_id");
  const std::string message = field(c, "message");
  PF_ASSIGN_OR_RETURN(auto tid, dv::from_hex(tid_hex));
  PF_ASSIGN_OR_RETURN(CmLink * link, st.cm_link());
  PF_ASSIGN_OR_RETURN(pr::X509Ptr previous, st.previous_certificate(ctx.workflow_id));
  pr::CertRequest req;
  req.procedure = field(c, "procedure");
  req.transaction_id.assign(tid.begin(), tid.end());
  pr::X509ReqPtr csr;
  pr::EvpPkeyPtr key;
  std::shared_ptr<Impl::CardSlot> slot;
  std::unique_lock<std::mutex> card_lock;
  if (message == "p10cr") {
    const std::string ref = field(c, "csr_ref");
    if (!safe_file_name(ref)) return make_status(Errc::kInvalidArgument, "bad csr_ref " + ref);
    PF_ASSIGN_OR_RETURN(std::string bytes, read_file(st.dir("reissue") + "/" + ref));
    std::string why;
    csr = parse_csr(bytes, &why);
    if (!csr) return make_status(Errc::kCorrupt, "the validated CSR " + ref + " is " + why);
    req.type = pr::CertRequestType::kP10cr;
    req.csr = csr.get();
  } else if (message == "cr" || message == "kur") {
    const std::string serial = field(c, "token_serial");
    slot = st.slot(serial);
    card_lock = std::unique_lock<std::mutex>(slot->mu);
    PF_RETURN_IF_ERROR(st.ready(*slot, serial));
    PF_ASSIGN_OR_RETURN(EVP_PKEY * raw, slot->card->private_key(dv::derive_key_id(field(c, "key_id"))));
    key.reset(raw);
    req.type = message == "kur" ? pr::CertRequestType::kKur : pr::CertRequestType::kCr;
    req.key = key.get();
    req.subject = name_one_line(X509_get_subject_name(previous.get()));
    if (message == "kur") req.old_cert = previous.get();
  } else {
    return make_status(Errc::kInvalidArgument, "SubmitToCm message '" + message + "'");
  }
  // Saved before it is sent and resent as saved: the CM host answers a repeat from its store.
  // Unreachable after the link's retries: an error status, and the runtime retries.
  auto answer = link->enroll(req, st.dir("cmp") + "/" + tid_hex + ".der");
  if (card_lock.owns_lock()) card_lock.unlock();
  if (!answer) return answer.status();
  if (answer->refused) {
    if (answer->refusal.pki_status == OSSL_CMP_PKISTATUS_waiting) {
      return verification_event(st, tid_hex);
    }
    return event("CmRefused",
                 {{"reason", answer->refusal_message}, {"detail", answer->refusal_detail}});
  }
  PF_ASSIGN_OR_RETURN(std::string der, pr::x509_to_der(answer->enrolled->cert.get()));
  return st.issued(answer->enrolled->serial_hex, der);
}

Result<Event> poll_cm(Impl& st, const Command& c) {
  int check_after = machines::wf::get_int(c.fields, "check_after", 30);
  check_after = std::clamp(check_after, 0, kMaxCheckAfterSeconds);
  std::this_thread::sleep_for(std::chrono::seconds(check_after));
  return verification_event(st, field(c, "transaction_id"));
}

Result<Event> write_certificate_to_card(Impl& st, const Command& c) {
  const std::string serial = field(c, "token_serial");
  const std::string cert_serial = field(c, "serial");
  auto slot = st.slot(serial);
  std::lock_guard lock(slot->mu);
  PF_RETURN_IF_ERROR(st.ready(*slot, serial));
  if (slot->card->token().serial != serial) {
    return make_status(Errc::kRejected, "refusing to write to card " + slot->card->token().serial +
                                            ": the workflow's card is " + serial);
  }
  // Re-read the card first: the certificate already there counts as installed.
  PF_ASSIGN_OR_RETURN(dv::CardContents contents,
                      slot->card->read_contents(dv::TransportCertificateRule::defaults()));
  for (const auto& cert : contents.certificates) {
    if (strip_zeros(cert.serial_hex) == strip_zeros(cert_serial)) {
      return event("CertificateInstalled");
    }
  }
  PF_ASSIGN_OR_RETURN(std::string der, read_file(st.dir("certs") + "/" + field(c, "cert_ref") +
                                                 ".der"));
  Status s = slot->card->store_certificate(der, dv::derive_key_id(field(c, "key_id")),
                                           "persoflow reissue");
  if (!s) {
    if (dv::is_card_full(s)) {
      return event("CardFull", {{"reason", s.message()}});
    }
    return s;
  }
  return event("CertificateInstalled");
}

// rr for a certificate; true when revoked now or before, false with `refusal` set otherwise.
Result<bool> revoke(Impl& st, X509* cert, int reason, std::string* refusal) {
  PF_ASSIGN_OR_RETURN(CmLink * link, st.cm_link());
  // Unreachable after the link's retries: an error status, and the runtime retries.
  PF_ASSIGN_OR_RETURN(CmAnswer answer, link->revoke(cert, reason));
  if (!answer.refused) return true;
  // Revoked by an earlier attempt whose answer was lost: done.
  if (answer.refusal.fail_info & (1 << OSSL_CMP_PKIFAILUREINFO_certRevoked)) return true;
  *refusal = answer.refusal_message;
  return false;
}

Result<Event> revoke_previous(Impl& st, const CommandContext& ctx) {
  PF_ASSIGN_OR_RETURN(pr::X509Ptr previous, st.previous_certificate(ctx.workflow_id));
  std::string refusal;
  PF_ASSIGN_OR_RETURN(bool revoked, revoke(st, previous.get(), kReasonSuperseded, &refusal));
  if (!revoked) return event("CmRefused", {{"reason", refusal}});
  return event("PreviousRevoked", {{"reason", "superseded"}});
}

Result<Event> revoke_issued(Impl& st, const Command& c) {
  for (int i = 0; c.fields.count(machines::wf::item("serial", i)); ++i) {
    const std::string serial = field(c, machines::wf::item("serial", i));
    PF_ASSIGN_OR_RETURN(std::string der, read_file(st.dir("certs") + "/" + serial + ".der"));
    PF_ASSIGN_OR_RETURN(pr::X509Ptr cert, pr::x509_from_der(der));
    std::string refusal;
    PF_ASSIGN_OR_RETURN(bool revoked, revoke(st, cert.get(), kReasonCessationOfOperation,
                                             &refusal));
    if (!revoked) {
      return make_status(Errc::kRejected, "revoking " + serial + " refused: " + refusal);
    }
  }
  return event("IssuedCertificatesRevoked");
}

Result<Event> rollback_card(Impl& st, const Command& c) {
  const std::string serial = field(c, "token_serial");
  auto slot = st.slot(serial);
  std::lock_guard lock(slot->mu);
  PF_RETURN_IF_ERROR(st.ready(*slot, serial));
  for (int i = 0; c.fields.count(machines::wf::item("object", i)); ++i) {
    const std::string object = field(c, machines::wf::item("object", i));
    if (object.rfind("key:", 0) != 0) continue;  // certificates go with their key's id
    const auto id = dv::derive_key_id(object.substr(4));
    PF_RETURN_IF_ERROR(slot->card->delete_certificates(id));
    PF_RETURN_IF_ERROR(slot->card->delete_key(id));
  }
  return event("RollbackConfirmed");
}

}  // namespace

void install_reissue_executors(ExecutorRegistry& registry,
                               std::shared_ptr<ReissueStation> station, bool retry_when_asked) {
  const RetryPolicy card{3, std::chrono::milliseconds(60'000), std::chrono::milliseconds(200),
                         std::chrono::milliseconds(2'000)};
  const RetryPolicy cm{6, std::chrono::milliseconds(30'000), std::chrono::milliseconds(200),
                       std::chrono::milliseconds(5'000)};
  // A poll sleeps check_after seconds first.
  const RetryPolicy poll{6, std::chrono::milliseconds((kMaxCheckAfterSeconds + 60) * 1000LL),
                         std::chrono::milliseconds(1'000), std::chrono::milliseconds(30'000)};
  const RetryPolicy quick{3, std::chrono::milliseconds(10'000), std::chrono::milliseconds(100),
                          std::chrono::milliseconds(1'000)};
  // The operator may take a while to find a corrected CSR; asked once, not again on a timeout.
  const RetryPolicy operator_answer{1, std::chrono::milliseconds(3'600'000),
                                    std::chrono::milliseconds(100), std::chrono::milliseconds(100)};
  auto s = station;
  auto add = [&](const char* type, RetryPolicy policy,
                 std::function<Result<Event>(Impl&, const Command&, const CommandContext&)> fn) {
    registry.add(type, blocking_executor(
                           [s, fn](const Command& c, const CommandContext& ctx) {
                             return fn(s->impl(), c, ctx);
                           },
                           policy));
  };
  add("FindCertificate", cm, [s](Impl& st, const Command& c, const CommandContext& ctx)
                                 -> Result<Event> {
    PF_ASSIGN_OR_RETURN(ReissueRequest req, s->load_request(ctx.workflow_id));
    return find_certificate(st, c, ctx, req);
  });
  add("AskOperator", operator_answer, [s, retry_when_asked](Impl&, const Command& c,
                                                   const CommandContext& ctx) {
    return ask_operator(*s, c, ctx, retry_when_asked);
  });
  add("ValidateCsr", quick,
      [](Impl& st, const Command& c, const CommandContext&) { return validate_csr(st, c); });
  add("GenerateKeyOnCard", card, generate_key_on_card);
  add("BuildCsrOnCard", card, build_csr_on_card);
  add("SignWithOfficer", quick,
      [](Impl& st, const Command&, const CommandContext&) { return sign_with_officer(st); });
  add("SubmitToCm", cm, submit_to_cm);
  add("PollCm", poll, [](Impl& st, const Command& c, const CommandContext&) {
    return poll_cm(st, c);
  });
  add("WriteCertificateToCard", card, [](Impl& st, const Command& c, const CommandContext&) {
    return write_certificate_to_card(st, c);
  });
  add("RevokeCertificate", cm, [](Impl& st, const Command&, const CommandContext& ctx) {
    return revoke_previous(st, ctx);
  });
  add("RevokeIssuedCertificates", cm,
      [](Impl& st, const Command& c, const CommandContext&) { return revoke_issued(st, c); });
  add("RollbackCard", card,
      [](Impl& st, const Command& c, const CommandContext&) { return rollback_card(st, c); });
  add("NotifyOperator", quick,
      [](Impl&, const Command& c, const CommandContext& ctx) -> Result<Event> {
        std::cerr << "reissue " << ctx.workflow_id << ": " << field(c, "reason") << std::endl;
        return event("OperatorNotified");
      });
}

Result<std::shared_ptr<ReissueStation>> reissue_station_from_environment() {
  // Never destroyed: the cards it holds use the PKCS#11 module, whose own static state may be
  // gone by the time static destructors run.
  static std::mutex mu;
  static auto* holder = new std::shared_ptr<ReissueStation>();
  std::lock_guard lock(mu);
  if (*holder) return *holder;
  const char* path = std::getenv("PERSOFLOW_STATION_CONFIG");
  if (!path || !*path) {
    return make_status(Errc::kNotFound,
                       "set PERSOFLOW_STATION_CONFIG to the station configuration (station.conf)");
  }
  PF_ASSIGN_OR_RETURN(StationConfig config, load_station_config(path));
  PF_ASSIGN_OR_RETURN(*holder, ReissueStation::open(std::move(config)));
  return *holder;
}

namespace {

// For `persoflow workflows resume`: the executors over $PERSOFLOW_STATION_CONFIG; without it every
// command fails with that message (the workflow is suspended, not lost).
void install_from_environment(ExecutorRegistry& registry) {
  auto station = reissue_station_from_environment();
  if (station) {
    install_reissue_executors(registry, *station, /*retry_when_asked=*/true);
    return;
  }
  const Status why = station.status();
  for (const char* type :
       {"FindCertificate", "AskOperator", "ValidateCsr", "GenerateKeyOnCard", "BuildCsrOnCard",
        "SignWithOfficer", "SubmitToCm", "PollCm", "WriteCertificateToCard", "RevokeCertificate",
        "RevokeIssuedCertificates", "RollbackCard", "NotifyOperator"}) {
    registry.add(type, blocking_executor([why](const Command&, const CommandContext&)
                                             -> Result<Event> { return why; },
                                         RetryPolicy{1}));
  }
}

}  // namespace

PF_REGISTER_EXECUTORS(reissue, "reissue", install_from_environment);

}  // namespace persoflow::actors
