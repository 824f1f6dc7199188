// The soft-token RA and the issue-soft-token executors on real parts (softtoken.hpp): keys made in
// this process (OpenSSL, RNG reseeded from the officer's card), keys archived or recovered by the
// CM host (genm, CMS envelopes for the officer), CMP ir over HTTPS, PKCS#12 and certificate files.
//
// Each executor is idempotent by construction: it first looks at what is already there (the key
// file under its id, the saved CMP request, the saved genp, the saved PIN) and only then acts, so
// a repeat after a timeout or a crash ends in the same place.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cm_genm.hpp"
#include "persoflow/actors/cm_link.hpp"
#include "persoflow/actors/softtoken.hpp"
#include "persoflow/actors/state_files.hpp"
#include "persoflow/devices/card.hpp"
#include "persoflow/devices/officer.hpp"
#include "persoflow/devices/pin_delivery.hpp"
#include "persoflow/devices/pkcs12.hpp"
#include "persoflow/machines/workflow_support.hpp"
#include "persoflow/protocol/base64.hpp"
#include "persoflow/protocol/cm_info_types.hpp"
#include "persoflow/protocol/cmp_client.hpp"
#include "persoflow/protocol/cmp_der.hpp"

namespace persoflow::actors {
namespace {

namespace fs = std::filesystem;
namespace dv = persoflow::devices;
namespace pr = persoflow::protocol;
using machines::Command;
using machines::Event;
using machines::Fields;
using machines::wf::item;
using nlohmann::json;

std::string field(const Command& c, const std::string& key) {
  auto it = c.fields.find(key);
  return it == c.fields.end() ? std::string() : it->second;
}

Event event(std::string type, Fields fields = {}) {
  return Event{std::move(type), std::move(fields)};
}

// A state file, replaced atomically (0600, fsync'ed).
Status write_state_file(const std::string& path, std::string_view data) {
  return dv::write_file_atomic(path, data, /*force=*/true);
}

bool safe_name(const std::string& name) { return safe_file_name(name); }

std::string resolve(const fs::path& base, const std::string& p) {
  if (p.empty()) return p;
  fs::path path(p);
  return path.is_absolute() ? p : (base / path).lexically_normal().string();
}

// "/CN=Alice/O=Example" from the subject.* fields of a command (sorted by name).
std::string subject_of(const Fields& fields) {
  std::string s;
  for (const auto& [k, v] : fields) {
    if (k.rfind("subject.", 0) == 0) s += "/" + k.substr(8) + "=" + v;
  }
  return s;
}

}  // namespace

// ----- Configuration and requests -----

Result<SoftTokenConfig> load_softtoken_config(const std::string& path) {
  auto text = read_file(path);
  if (!text) return make_status(Errc::kNotFound, "cannot read the configuration " + path);
  json j;
  try {
    j = json::parse(*text);
  } catch (const std::exception& e) {
    return make_status(Errc::kInvalidArgument, path + ": not JSON: " + e.what());
  }
  const fs::path base = fs::absolute(path).parent_path();
  SoftTokenConfig c;
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
    PF_RETURN_IF_ERROR(str("officer_p12", c.officer_p12, true, true));
    PF_RETURN_IF_ERROR(str("officer_password_file", c.officer_password_file, true, true));
    PF_RETURN_IF_ERROR(str("pkcs11_module", c.pkcs11_module, false, false));
    PF_RETURN_IF_ERROR(str("softhsm2_conf", c.softhsm2_conf, true, false));
    PF_RETURN_IF_ERROR(str("officer_card", c.officer_card, false, false));
    PF_RETURN_IF_ERROR(str("state_dir", c.state_dir, true, true));
    PF_RETURN_IF_ERROR(str("softtoken_journal", c.journal, true, false));
    if (j.contains("pkcs12_iterations")) c.pkcs12_iterations = j.at("pkcs12_iterations").get<int>();
  } catch (const std::exception& e) {
    return make_status(Errc::kInvalidArgument, path + ": " + e.what());
  }
  if (c.cm_url.rfind("https://", 0) != 0) {
    return make_status(Errc::kInvalidArgument,
                       path + ": cm_url must be https://HOST:PORT, not '" + c.cm_url + "'");
  }
  if (c.pkcs12_iterations < 1 || c.pkcs12_iterations > 10'000'000) {
    return make_status(Errc::kInvalidArgument, path + ": pkcs12_iterations must be 1..10000000");
  }
  if (c.journal.empty()) c.journal = (fs::path(c.state_dir) / "softtoken" / "journal.db").string();
  return c;
}

Result<SoftTokenRequest> softtoken_request_from_json(const std::string& text) {
  SoftTokenRequest r;
  try {
    json j = json::parse(text);
    r.workflow_id = j.value("workflow_id", "");
    r.token_procedure = j.value("token_procedure", "");
    if (j.contains("subject")) {
      for (auto& [k, v] : j.at("subject").items()) r.subject[k] = v.get<std::string>();
    }
    r.algorithm = j.value("algorithm", "");
    r.p12_file = j.value("p12_file", "");
    r.cert_file = j.value("cert_file", "");
    r.key_procedures = j.value("key_procedures", std::vector<std::string>{});
    r.key_searches = j.value("key_searches", std::vector<std::string>{});
    r.certificate_procedures = j.value("certificate_procedures", std::vector<std::string>{});
    r.pin_procedure = j.value("pin_procedure", "");
    r.pin_min_length = j.value("pin_min_length", 6);
    r.pin_max_length = j.value("pin_max_length", 8);
    r.pin_fd = j.value("pin_fd", -1);
    r.mail_to = j.value("mail_to", "");
    r.pin_letter_id = j.value("pin_letter_id", "");
  } catch (const std::exception& e) {
    return make_status(Errc::kInvalidArgument,
                       std::string("soft-token request is not valid JSON: ") + e.what());
  }
  if (!safe_name(r.workflow_id)) {
    return make_status(Errc::kInvalidArgument,
                       "workflow id must be letters, digits, '.', '_' or '-', not '" +
                           r.workflow_id + "'");
  }
  if (r.subject.empty()) {
    return make_status(Errc::kInvalidArgument, "the subject is empty (give --field CN=...)");
  }
  if (r.p12_file.empty() || r.cert_file.empty()) {
    return make_status(Errc::kInvalidArgument, "the request names no PKCS#12 or certificate file");
  }
  return r;
}

std::string softtoken_request_to_json(const SoftTokenRequest& r) {
  json j = {{"workflow_id", r.workflow_id},
            {"token_procedure", r.token_procedure},
            {"subject", r.subject},
            {"algorithm", r.algorithm},
            {"p12_file", r.p12_file},
            {"cert_file", r.cert_file},
            {"key_procedures", r.key_procedures},
            {"key_searches", r.key_searches},
            {"certificate_procedures", r.certificate_procedures},
            {"pin_procedure", r.pin_procedure},
            {"pin_min_length", r.pin_min_length},
            {"pin_max_length", r.pin_max_length},
            {"pin_fd", r.pin_fd},
            {"mail_to", r.mail_to},
            {"pin_letter_id", r.pin_letter_id}};
  return j.dump(2) + "\n";
}

// ----- The RA -----

struct SoftTokenRa::Impl {
  SoftTokenConfig config;

  std::mutex officer_mu;
  std::unique_ptr<dv::OfficerToken> officer;

  std::mutex display_mu;
  PinDisplay display;
  Notice notice;

  std::string dir(const char* sub) const {
    return (fs::path(config.state_dir) / "softtoken" / sub).string();
  }

  // The officer's credential, opened once (the password stays in its file).
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

  void notify(const std::string& wf, const std::string& text) {
    std::lock_guard lock(display_mu);
    if (notice) notice(wf, text);
  }
};

SoftTokenRa::SoftTokenRa(SoftTokenConfig config, std::unique_ptr<Impl> impl)
    : config_(std::move(config)), impl_(std::move(impl)) {}
SoftTokenRa::~SoftTokenRa() = default;

Result<std::shared_ptr<SoftTokenRa>> SoftTokenRa::open(SoftTokenConfig config) {
  if (!config.softhsm2_conf.empty()) ::setenv("SOFTHSM2_CONF", config.softhsm2_conf.c_str(), 1);
  pr::register_info_types();
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  for (const char* sub : {"requests", "cmp", "certs", "secrets", "keys"}) {
    std::error_code ec;
    const fs::path p = fs::path(config.state_dir) / "softtoken" / sub;
    fs::create_directories(p, ec);
    if (ec) return make_status(Errc::kUnavailable, "cannot create " + p.string() + ": " + ec.message());
  }
  for (const char* sub : {"secrets", "keys"}) {
    fs::permissions(fs::path(config.state_dir) / "softtoken" / sub, fs::perms::owner_all,
                    fs::perm_options::replace);
  }
  impl->display = [](const std::string& wf, const std::string& pin) {
    std::cout << "PIN of the soft token " << wf << " (shown once): " << pin << std::endl;
  };
  impl->notice = [](const std::string& wf, const std::string& text) {
    std::cerr << wf << ": " << text << std::endl;
  };
  return std::shared_ptr<SoftTokenRa>(new SoftTokenRa(std::move(config), std::move(impl)));
}

Status SoftTokenRa::save_request(const SoftTokenRequest& request) {
  if (!safe_name(request.workflow_id)) {
    return make_status(Errc::kInvalidArgument, "bad workflow id '" + request.workflow_id + "'");
  }
  return write_state_file(impl_->dir("requests") + "/" + request.workflow_id + ".json",
                          softtoken_request_to_json(request));
}

Result<SoftTokenRequest> SoftTokenRa::load_request(const std::string& workflow_id) const {
  if (!safe_name(workflow_id)) {
    return make_status(Errc::kInvalidArgument, "bad workflow id '" + workflow_id + "'");
  }
  auto text = read_file(impl_->dir("requests") + "/" + workflow_id + ".json");
  if (!text) {
    return make_status(Errc::kNotFound, "no soft-token request saved for workflow " + workflow_id);
  }
  return softtoken_request_from_json(*text);
}

void SoftTokenRa::set_pin_display(PinDisplay display) {
  std::lock_guard lock(impl_->display_mu);
  impl_->display = std::move(display);
}

void SoftTokenRa::set_notice(Notice notice) {
  std::lock_guard lock(impl_->display_mu);
  impl_->notice = std::move(notice);
}

namespace {

std::string join(const json& list) {
  std::string out;
  for (const auto& v : list) out += (out.empty() ? "" : ",") + v.get<std::string>();
  return out;
}

const json* find_named(const json& list, const std::string& name) {
  for (const auto& item : list) {
    if (item.value("name", "") == name) return &item;
  }
  return nullptr;
}

}  // namespace

Result<Event> SoftTokenRa::procedure_chosen(SoftTokenRequest& request) {
  PF_ASSIGN_OR_RETURN(CmLink * link, impl_->cm_link());
  auto answer = genm::procedure_list(*link);
  if (!answer) return answer.status().with_context("asking the CM host for its procedures");
  json list = std::move(*answer);
  const json& tokens = list["token_procedures"];
  const json* tp = find_named(tokens, request.token_procedure);
  std::string offered;
  for (const auto& t : tokens) {
    if (t.value("media", "") != "smartcard") offered += (offered.empty() ? "" : ", ") +
                                                        t.value("name", "");
  }
  if (!tp || tp->value("media", "") == "smartcard") {
    return make_status(Errc::kInvalidArgument,
                       "'" + request.token_procedure +
                           "' is not a soft-token procedure of the CM host (there are: " +
                           offered + ")");
  }
  Fields f{{"workflow_id", request.workflow_id},
           {"procedure", request.token_procedure},
           {"ra_key_generation", list.value("ra_key_generation", "")}};
  if (f["ra_key_generation"].empty()) f.erase("ra_key_generation");
  const json& certs = list["certificate_procedures"];
  request.certificate_procedures.clear();
  int c = 0;
  for (const auto& name : tp->at("certificate_procedures")) {
    const json* cp = find_named(certs, name.get<std::string>());
    if (!cp) {
      return make_status(Errc::kPermissionDenied,
                         "certificate procedure '" + name.get<std::string>() +
                             "' is not available to this officer");
    }
    request.certificate_procedures.push_back(name.get<std::string>());
    f[item("cert_proc", c, "name")] = name.get<std::string>();
    f[item("cert_proc", c, "key_usage")] = join(cp->at("key_usage"));
    ++c;
  }
  request.key_procedures.clear();
  int k = 0;
  for (const auto& name : tp->at("key_procedures")) {
    const json* kp = find_named(list["key_procedures"], name.get<std::string>());
    if (!kp) {
      return make_status(Errc::kPermissionDenied, "key procedure '" + name.get<std::string>() +
                                                      "' is not available to this officer");
    }
    const json* cp = find_named(certs, kp->value("certificate_procedure", ""));
    request.key_procedures.push_back(name.get<std::string>());
    f[item("key_proc", k, "kind")] = kp->value("type", "");
    f[item("key_proc", k, "key_usage")] = cp ? join(cp->at("key_usage")) : std::string();
    f[item("key_proc", k, "scope")] = kp->value("scope", "last").empty()
                                          ? std::string("last")
                                          : kp->value("scope", "last");
    ++k;
  }
  request.key_searches.resize(request.key_procedures.size(), "auto");
  request.pin_procedure = tp->value("pin_procedure", "");
  std::string delivery = "generated";
  if (list.contains("pin_procedures")) {
    if (const json* pp = find_named(list["pin_procedures"], request.pin_procedure)) {
      delivery = pp->value("delivery", "shown");
      request.pin_min_length = pp->value("min_length", request.pin_min_length);
      request.pin_max_length = pp->value("max_length", request.pin_max_length);
    }
  } else {
    // A CM host that does not list its PIN procedures: the default names say the delivery.
    for (const char* d : {"entered", "mailer", "letter"}) {
      if (request.pin_procedure == std::string("pin-") + d) delivery = d;
    }
  }
  if (delivery == "shown") delivery = "generated";
  f["pin_delivery"] = delivery;
  f["officer"] = "no";
  for (const auto& name : request.certificate_procedures) {
    if (const json* cp = find_named(certs, name); cp && cp->at("key_usage").empty() &&
                                                  name == "officer") {
      f["officer"] = "yes";
    }
  }
  return event("ProcedureChosen", std::move(f));
}

machines::Event request_entered_event(const SoftTokenRequest& request) {
  Fields f{{"p12_file", request.p12_file}, {"cert_file", request.cert_file}};
  for (const auto& [name, value] : request.subject) f["subject." + name] = value;
  if (!request.algorithm.empty()) f["algorithm"] = request.algorithm;
  for (std::size_t k = 0; k < request.key_searches.size(); ++k) {
    f[item("key_proc", static_cast<int>(k), "search")] = request.key_searches[k];
  }
  return event("RequestEntered", std::move(f));
}

// ----- Executors -----

namespace {

using Impl = SoftTokenRa::Impl;

std::string key_file(Impl& ra, const std::string& key_id) {
  return ra.dir("keys") + "/" + key_id + ".pem";
}

std::string secret_file(Impl& ra, const std::string& ref) { return ra.dir("secrets") + "/" + ref; }

Result<Event> ask_operator(SoftTokenRa& ra, const Command& c, const CommandContext& ctx) {
  const std::string ask = field(c, "ask");
  PF_ASSIGN_OR_RETURN(SoftTokenRequest req, ra.load_request(ctx.workflow_id));
  if (ask == "soft_token_request") return request_entered_event(req);
  if (ask == "signature_pin") {
    // The officer's PKCS#12 password stays in its file; the journal holds this reference only.
    return event("OfficerPinEntered", {{"pin_ref", "officer-password-file"}});
  }
  if (ask == "pin") {
    // Asked twice without echo; an empty entry (the officer cancels) falls back to a generated
    // PIN, shown once.
    // "pin-entered-": no delivery step follows, so WritePkcs12 deletes it (pin_after_pkcs12).
    const std::string ref =
        "pin-entered-" + machines::wf::derive_id(ctx.idempotency_key, "entered");
    if (fs::exists(secret_file(ra.impl(), ref))) {
      return event("PinEntered", {{"pin_index", field(c, "pin_index")}, {"pin_ref", ref}});
    }
    auto entered = dv::read_pin_twice(req.pin_fd, "PIN of the soft token");
    if (!entered) {
      ra.impl().notify(ctx.workflow_id, entered.status().message());
      return entered.status();
    }
    if (!entered->has_value()) {
      return event("PinEntryCancelled", {{"pin_index", field(c, "pin_index")}});
    }
    const dv::Secret& first = **entered;
    if (static_cast<int>(first.size()) < req.pin_min_length) {
      ra.impl().notify(ctx.workflow_id, "warning: the PIN is shorter than the procedure's " +
                                            std::to_string(req.pin_min_length) + " characters");
    }
    PF_RETURN_IF_ERROR(write_state_file(secret_file(ra.impl(), ref), first.view()));
    return event("PinEntered", {{"pin_index", field(c, "pin_index")}, {"pin_ref", ref}});
  }
  if (ask == "pin_mailer_address" && !req.mail_to.empty()) {
    return event("PinMailerAddressEntered", {{"address", req.mail_to}});
  }
  if (ask == "pin_letter_id" && !req.pin_letter_id.empty()) {
    return event("PinLetterIdEntered",
                 {{"pin_index", field(c, "pin_index")}, {"letter_id", req.pin_letter_id}});
  }
  return make_status(Errc::kUnsupported, "the operator question '" + ask +
                                             "' has no answer in the request" +
                                             (field(c, "reason").empty()
                                                  ? std::string()
                                                  : " (" + field(c, "reason") + ")"));
}

// A refusal the machine recorded: shown to the operator; the workflow waits (suspended) for a
// new answer, so the command fails once and for all.
Result<Event> notify_operator(Impl& ra, const Command& c, const CommandContext& ctx) {
  const std::string reason = field(c, "reason");
  ra.notify(ctx.workflow_id, "refused: " + reason);
  return make_status(Errc::kRejected, "refused: " + reason);
}

// 'Initialize key generation': OpenSSL's RNG reseeded with entropy from the officer's card
// (C_GenerateRandom) and the operating system.
Result<Event> initialize_key_generation(Impl& ra) {
  std::string sources = "os";
  if (!ra.config.officer_card.empty()) {
    dv::TokenSelector sel;
    sel.label = ra.config.officer_card;
    PF_ASSIGN_OR_RETURN(auto card, dv::open_card(ra.config.pkcs11_module, sel));
    PF_ASSIGN_OR_RETURN(auto bytes, card->random_bytes(48));
    RAND_seed(bytes.data(), static_cast<int>(bytes.size()));
    OPENSSL_cleanse(bytes.data(), bytes.size());
    sources = "officer-card:" + card->token().serial + ",os";
  }
  if (RAND_poll() != 1) return pr::openssl_failure("reseeding from the operating system");
  return event("KeyGenerationInitialized", {{"seed_ref", sources}});
}

Result<Event> generate_key_locally(Impl& ra, const Command& c) {
  const std::string key_id = field(c, "key_id");
  if (!safe_name(key_id)) return make_status(Errc::kInvalidArgument, "bad key_id " + key_id);
  const std::string path = key_file(ra, key_id);
  const Fields done{{"cert_proc", field(c, "cert_proc")}, {"key_ref", "local:" + key_id}};
  if (fs::exists(path)) return event("LocalKeyGenerated", done);  // made by an earlier attempt
  auto alg = dv::parse_key_algorithm(field(c, "algorithm"));
  if (!alg) {
    return event("AlgorithmUnsupported",
                 {{"algorithm", field(c, "algorithm")}, {"reason", alg.status().message()}});
  }
  auto key = dv::generate_software_key(*alg);
  if (!key) {
    return event("AlgorithmUnsupported",
                 {{"algorithm", field(c, "algorithm")}, {"reason", key.status().message()}});
  }
  pr::EvpPkeyPtr owner(*key);
  pr::BioPtr bio(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_PrivateKey(bio.get(), owner.get(), nullptr, nullptr, 0, nullptr, nullptr) !=
      1) {
    return pr::openssl_failure("encoding the new key");
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  std::string pem(data, static_cast<std::size_t>(len));
  Status saved = write_state_file(path, pem);
  OPENSSL_cleanse(pem.data(), pem.size());
  PF_RETURN_IF_ERROR(saved);
  return event("LocalKeyGenerated", done);
}

Result<SoftTokenRequest> request_of(SoftTokenRa& ra, const CommandContext& ctx) {
  return ra.load_request(ctx.workflow_id);
}

// A genm to the CM host, saved before it is sent; its genp's JSON is kept in
// <state>/keys/<tid>.json (keys in it are enveloped for the officer).
Result<json> key_genm(Impl& ra, const std::string& tid_hex, const char* oid, const json& body,
                      const std::string& procedure, bool* refused, std::string* why) {
  if (!safe_name(tid_hex)) return make_status(Errc::kInvalidArgument, "bad transaction_id");
  PF_ASSIGN_OR_RETURN(CmLink * link, ra.cm_link());
  return genm::key_genm(*link, ra.dir("cmp") + "/" + tid_hex + ".der",
                        ra.dir("keys") + "/" + tid_hex + ".json", oid, body, procedure, refused,
                        why);
}

Result<Event> request_server_keygen(SoftTokenRa& ra, const Command& c, const CommandContext& ctx) {
  PF_ASSIGN_OR_RETURN(auto req, request_of(ra, ctx));
  const int k = std::stoi(field(c, "key_proc"));
  if (k < 0 || k >= static_cast<int>(req.key_procedures.size())) {
    return make_status(Errc::kInvalidArgument, "key procedure " + std::to_string(k) + " unknown");
  }
  const std::string tid = field(c, "transaction_id");
  json body = {{"key_procedure", req.key_procedures[k]}, {"subject", subject_of(c.fields)}};
  bool refused = false;
  std::string why;
  PF_ASSIGN_OR_RETURN(json answer, key_genm(ra.impl(), tid, pr::kOidServerKeygen, body, {},
                                            &refused, &why));
  if (refused) return event("CmRefused", {{"reason", why}});
  return event("ServerKeyArchived", {{"key_proc", std::to_string(k)}, {"key_ref",
                                                                       "cm:" + tid + ":0"}});
}

Result<Event> request_key_recovery(SoftTokenRa& ra, const Command& c, const CommandContext& ctx) {
  PF_ASSIGN_OR_RETURN(auto req, request_of(ra, ctx));
  const int k = std::stoi(field(c, "key_proc"));
  if (k < 0 || k >= static_cast<int>(req.key_procedures.size())) {
    return make_status(Errc::kInvalidArgument, "key procedure " + std::to_string(k) + " unknown");
  }
  const std::string search = field(c, "search");
  json criterion;
  if (search.rfind("serial:", 0) == 0) {
    criterion = {{"serial", search.substr(7)}};
  } else if (search.rfind("id:", 0) == 0) {
    criterion = {{"cert_id", std::stoll(search.substr(3))}};
  } else if (search.rfind("subject:", 0) == 0) {
    criterion = {{"subject", search.substr(8)}, {"substring", true}};
  } else {
    // auto: the holder's keys, found by the common name entered.
    auto cn = c.fields.find("subject.CN");
    if (cn == c.fields.end()) {
      return event("CmRefused", {{"reason", "no CN entered to search the archived keys by"}});
    }
    criterion = {{"subject", cn->second}, {"substring", true}};
  }
  json body = {{"search", criterion}, {"key_procedure", req.key_procedures[k]},
               {"scope", field(c, "scope")}};
  const std::string tid = field(c, "transaction_id");
  bool refused = false;
  std::string why;
  PF_ASSIGN_OR_RETURN(json answer, key_genm(ra.impl(), tid, pr::kOidKeyRecovery, body, {},
                                            &refused, &why));
  if (refused) return event("CmRefused", {{"reason", why}});
  if (answer["keys"].empty()) {
    return event("CmRefused", {{"reason", "no archived key matches " + search}});
  }
  Fields f{{"key_proc", std::to_string(k)}};
  int j = 0;
  for (const auto& key : answer["keys"]) {
    f[item("recovered", j, "key_ref")] = "cm:" + tid + ":" + std::to_string(j);
    f[item("recovered", j, "cert_serial")] = key.value("certificate_serial", "");
    ++j;
  }
  return event("KeyRecovered", std::move(f));
}

Result<Event> sign_with_officer(Impl& ra) {
  auto token = ra.officer_token();
  if (!token) {
    if (token.status().code() == make_error_code(Errc::kPermissionDenied)) {
      return officer_password_refused(token.status());
    }
    return token.status();
  }
  return event("OfficerSigned", {{"signer_ref", "officer-p12:" + pr::serial_hex(
                                                    X509_get0_serialNumber(
                                                        (*token)->certificate()))}});
}

// The certificate the CM host made with a key it generated or recovered (key_ref cm:<tid>:<j>).
Result<std::pair<std::string, std::string>> cm_key_entry(Impl& ra, const std::string& key_ref,
                                                         const char* what) {
  const auto second = key_ref.find(':', 3);
  if (key_ref.rfind("cm:", 0) != 0 || second == std::string::npos) {
    return make_status(Errc::kInvalidArgument, "bad key reference " + key_ref);
  }
  const std::string tid = key_ref.substr(3, second - 3);
  const std::size_t j = std::stoul(key_ref.substr(second + 1));
  if (!safe_name(tid)) return make_status(Errc::kInvalidArgument, "bad key reference " + key_ref);
  PF_ASSIGN_OR_RETURN(std::string text, read_file(ra.dir("keys") + "/" + tid + ".json"));
  json answer = json::parse(text);
  if (j >= answer["keys"].size()) return make_status(Errc::kNotFound, "no key " + key_ref);
  return std::make_pair(answer["keys"][j].value("certificate", ""),
                        answer["keys"][j].value(what, ""));
}

Result<std::string> save_certificate(Impl& ra, X509* cert) {
  PF_ASSIGN_OR_RETURN(std::string der, pr::x509_to_der(cert));
  const std::string serial = pr::serial_hex(X509_get0_serialNumber(cert));
  PF_RETURN_IF_ERROR(write_state_file(ra.dir("certs") + "/" + serial + ".der", der));
  return serial;
}

Result<Event> submit_to_cm(SoftTokenRa& ra, const Command& c, const CommandContext& ctx) {
  Impl& st = ra.impl();
  PF_ASSIGN_OR_RETURN(auto req, request_of(ra, ctx));
  const std::string tid_hex = field(c, "transaction_id");
  if (tid_hex.size() != 32 || !safe_name(tid_hex)) {
    return make_status(Errc::kInvalidArgument, "bad transaction_id");
  }
  Fields out{{"chain.0.ref", "cm_ca"}};
  int n = 0;
  for (int r = 0; c.fields.count(item("request", r, "cert_proc")) ||
                  c.fields.count(item("request", r, "key_proc"));
       ++r) {
    if (c.fields.count(item("request", r, "key_proc"))) {
      // Keys from the CM host come with their certificates already.
      for (int j = 0; c.fields.count(item("request", r, "key." + std::to_string(j) + ".key_ref"));
           ++j) {
        const std::string ref = field(c, item("request", r, "key." + std::to_string(j) + ".key_ref"));
        PF_ASSIGN_OR_RETURN(auto entry, cm_key_entry(st, ref, "envelope"));
        PF_ASSIGN_OR_RETURN(std::string der, pr::base64_decode(entry.first));
        PF_ASSIGN_OR_RETURN(pr::X509Ptr cert, pr::x509_from_der(der));
        PF_ASSIGN_OR_RETURN(std::string serial, save_certificate(st, cert.get()));
        out[item("cert", n, "serial")] = serial;
        out[item("cert", n, "ref")] = serial + "@" + ref;
        ++n;
      }
      continue;
    }
    // A key the RA generated: an ir, one transaction per key (the first uses the machine's
    // transactionID, the others ids derived from it).
    const int cp = std::stoi(field(c, item("request", r, "cert_proc")));
    if (cp < 0 || cp >= static_cast<int>(req.certificate_procedures.size())) {
      return make_status(Errc::kInvalidArgument, "certificate procedure " + std::to_string(cp));
    }
    const std::string key_ref = field(c, item("request", r, "key_ref"));
    if (key_ref.rfind("local:", 0) != 0 || !safe_name(key_ref.substr(6))) {
      return make_status(Errc::kInvalidArgument, "bad key reference " + key_ref);
    }
    const std::string tid =
        r == 0 ? tid_hex : machines::wf::derive_id(tid_hex, "request/" + std::to_string(r));
    PF_ASSIGN_OR_RETURN(pr::EvpPkeyPtr key, pr::read_pem_key(key_file(st, key_ref.substr(6))));
    PF_ASSIGN_OR_RETURN(CmLink * link, st.cm_link());
    pr::CertRequest cr;
    cr.type = pr::CertRequestType::kIr;
    cr.procedure = req.certificate_procedures[cp];
    cr.subject = subject_of(c.fields);
    cr.key = key.get();
    PF_ASSIGN_OR_RETURN(auto raw_tid, dv::from_hex(tid));
    cr.transaction_id.assign(raw_tid.begin(), raw_tid.end());
    // Unreachable after the link's retries: an error status, and the engine retries.
    PF_ASSIGN_OR_RETURN(CmAnswer enrolled, link->enroll(cr, st.dir("cmp") + "/" + tid + ".der"));
    if (enrolled.refused) {
      return event("CmRefused",
                   {{"reason", enrolled.refusal_message}, {"detail", enrolled.refusal_detail}});
    }
    PF_ASSIGN_OR_RETURN(std::string serial, save_certificate(st, enrolled.enrolled->cert.get()));
    out[item("cert", n, "serial")] = serial;
    out[item("cert", n, "ref")] = serial + "@" + key_ref;
    ++n;
  }
  if (n == 0) return make_status(Errc::kInvalidArgument, "SubmitToCm lists no request");
  return event("CertificatesIssued", std::move(out));
}

std::string pin_ref_for(const CommandContext& ctx) {
  return "pin-" + machines::wf::derive_id(ctx.idempotency_key, "soft-token-pin");
}

Result<Event> generate_pin(SoftTokenRa& ra, const Command& c, const CommandContext& ctx) {
  PF_ASSIGN_OR_RETURN(auto req, request_of(ra, ctx));
  const std::string ref = pin_ref_for(ctx);
  const std::string path = secret_file(ra.impl(), ref);
  if (!fs::exists(path)) {  // a repeat keeps the PIN generated the first time
    // The PIN procedure's longest length, digits (what any PIN pad can enter).
    dv::PinRules rules;
    rules.length = std::max(req.pin_max_length, 4);
    PF_ASSIGN_OR_RETURN(dv::Secret pin, dv::generate_pin(rules));
    PF_RETURN_IF_ERROR(write_state_file(path, pin.view()));
  }
  return event("PinGenerated", {{"pin_index", field(c, "pin_index")}, {"pin_ref", ref}});
}

Result<std::string> secret(Impl& ra, const std::string& ref) {
  if (!safe_name(ref)) return make_status(Errc::kInvalidArgument, "bad PIN reference " + ref);
  return read_file(secret_file(ra, ref));
}

// What the CM host enveloped for the officer (CMS EnvelopedData), opened in memory.
Result<std::string> open_for_officer(Impl& ra, const std::string& envelope) {
  PF_ASSIGN_OR_RETURN(dv::OfficerToken * officer, ra.officer_token());
  return genm::open_for_officer(*officer, envelope);
}

// The private key of a certificate reference "<serial>@<key ref>".
Result<pr::EvpPkeyPtr> key_of(Impl& ra, const std::string& key_ref) {
  if (key_ref.rfind("local:", 0) == 0) {
    if (!safe_name(key_ref.substr(6))) return make_status(Errc::kInvalidArgument, key_ref);
    return pr::read_pem_key(key_file(ra, key_ref.substr(6)));
  }
  PF_ASSIGN_OR_RETURN(auto entry, cm_key_entry(ra, key_ref, "envelope"));
  PF_ASSIGN_OR_RETURN(std::string envelope, pr::base64_decode(entry.second));
  PF_ASSIGN_OR_RETURN(std::string pkcs8, open_for_officer(ra, envelope));
  const unsigned char* q = reinterpret_cast<const unsigned char*>(pkcs8.data());
  pr::EvpPkeyPtr key(d2i_AutoPrivateKey(nullptr, &q, static_cast<long>(pkcs8.size())));
  OPENSSL_cleanse(pkcs8.data(), pkcs8.size());
  if (!key) return pr::openssl_failure("the enveloped key is not a PKCS#8 private key");
  return key;
}

Result<pr::X509Ptr> cert_of(Impl& ra, const std::string& cert_ref, std::string* key_ref) {
  const auto at = cert_ref.find('@');
  if (at == std::string::npos || !safe_name(cert_ref.substr(0, at))) {
    return make_status(Errc::kInvalidArgument, "bad certificate reference " + cert_ref);
  }
  if (key_ref) *key_ref = cert_ref.substr(at + 1);
  PF_ASSIGN_OR_RETURN(std::string der,
                      read_file(ra.dir("certs") + "/" + cert_ref.substr(0, at) + ".der"));
  return pr::x509_from_der(der);
}

// The n-th PKCS#12 file of a token: the path itself for the first key, "<stem>-<n+1><ext>" for
// further keys (a PKCS#12 written here holds one key and its certificate).
std::string p12_path(const std::string& path, int n) {
  if (n == 0) return path;
  fs::path p(path);
  return (p.parent_path() / (p.stem().string() + "-" + std::to_string(n + 1) +
                             p.extension().string()))
      .string();
}

// An entered PIN and a PIN letter's PIN have no delivery step after the PKCS#12 is written: the
// RA's copy must go with it, or the token's PIN stays in clear on the station's disk (found by
// persoflow-crashtest, softtoken). A generated PIN stays for ShowPinOnce / QueuePinLetter.
bool pin_after_pkcs12_is_unused(const std::string& ref) {
  return ref.rfind("pin-entered-", 0) == 0 || ref.rfind("pin-letter-", 0) == 0;
}

Result<Event> write_pkcs12(Impl& ra, const Command& c) {
  const std::string pin_ref = field(c, "pin_ref");
  if (pin_after_pkcs12_is_unused(pin_ref) && !fs::exists(secret_file(ra, pin_ref))) {
    // An earlier attempt wrote every file and deleted the PIN after them.
    bool all_written = true;
    for (int k = 0; c.fields.count(item("cert", k, "ref")); ++k) {
      all_written = all_written && fs::exists(p12_path(field(c, "path"), k));
    }
    if (all_written) return event("Pkcs12Written");
  }
  PF_ASSIGN_OR_RETURN(std::string pin, secret(ra, pin_ref));
  PF_ASSIGN_OR_RETURN(auto chain_owned, pr::read_pem_certs(ra.config.cm_ca));
  std::vector<X509*> chain;
  for (auto& ca : chain_owned) chain.push_back(ca.get());
  dv::Pkcs12Options options;
  options.iterations = ra.config.pkcs12_iterations;
  options.force = true;  // a repeat replaces the file the earlier attempt wrote
  Status written = Status::ok();
  for (int k = 0; c.fields.count(item("cert", k, "ref")); ++k) {
    std::string key_ref;
    PF_ASSIGN_OR_RETURN(pr::X509Ptr cert, cert_of(ra, field(c, item("cert", k, "ref")), &key_ref));
    auto key = key_of(ra, key_ref);
    if (!key && key_ref.rfind("local:", 0) == 0 && fs::exists(p12_path(field(c, "path"), k))) {
      // An earlier attempt wrote this file and deleted the RA's copy of the key after it.
      continue;
    }
    if (!key) return key.status();
    char cn[256] = "persoflow soft token";
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, cn, sizeof cn);
    options.friendly_name = cn;
    written = dv::write_pkcs12(p12_path(field(c, "path"), k), key->get(), cert.get(), chain, pin,
                               options);
    if (!written) break;
  }
  OPENSSL_cleanse(pin.data(), pin.size());
  if (!written) return event("FileWriteFailed", {{"path", field(c, "path")},
                                                 {"reason", written.message()}});
  // The PKCS#12 files hold the keys now: the RA's copies go.
  for (int k = 0; c.fields.count(item("key", k, "key_ref")); ++k) {
    const std::string ref = field(c, item("key", k, "key_ref"));
    if (ref.rfind("local:", 0) == 0 && safe_name(ref.substr(6))) {
      std::error_code ec;
      fs::remove(key_file(ra, ref.substr(6)), ec);
    }
  }
  if (pin_after_pkcs12_is_unused(pin_ref)) {
    std::error_code ec;
    fs::remove(secret_file(ra, pin_ref), ec);
  }
  return event("Pkcs12Written");
}

Result<Event> write_certificate_file(Impl& ra, const Command& c) {
  PF_ASSIGN_OR_RETURN(pr::X509Ptr cert, cert_of(ra, field(c, "cert_ref"), nullptr));
  Status s = dv::write_certificate_file(field(c, "path"), cert.get(), /*force=*/true);
  if (!s) return event("FileWriteFailed", {{"path", field(c, "path")}, {"reason", s.message()}});
  return event("CertificateFileWritten");
}

Result<Event> show_pin_once(Impl& ra, const Command& c, const CommandContext& ctx) {
  const std::string ref = field(c, "pin_ref");
  if (auto pin = secret(ra, ref)) {
    {
      std::lock_guard lock(ra.display_mu);
      if (ra.display) ra.display(ctx.workflow_id, *pin);
    }
    OPENSSL_cleanse(pin->data(), pin->size());
    std::error_code ec;
    fs::remove(secret_file(ra, ref), ec);
  }
  // No saved PIN: it was shown by an earlier attempt and deleted then.
  return event("PinDelivered", {{"pin_index", field(c, "pin_index")}});
}

// PIN mailer: the CM host queues a PIN letter for the holder's address (genm::queue_pin_letter).
Result<Event> queue_pin_letter(SoftTokenRa& ra, const Command& c, const CommandContext& ctx) {
  Impl& st = ra.impl();
  PF_ASSIGN_OR_RETURN(auto req, request_of(ra, ctx));
  PF_ASSIGN_OR_RETURN(CmLink * link, st.cm_link());
  return genm::queue_pin_letter(
      *link, c, ctx, st.dir("secrets"), req.subject,
      "PKCS#12 software token " + fs::path(req.p12_file).filename().string(),
      [&](const std::string& line) { st.notify(ctx.workflow_id, line); });
}

// A pre-printed PIN/PUK letter: its PIN, enveloped by the CM host for the officer, becomes the
// token's PIN.
Result<Event> resolve_pin_letter(SoftTokenRa& ra, const Command& c, const CommandContext& ctx) {
  Impl& st = ra.impl();
  // "pin-letter-": no delivery step follows, so WritePkcs12 deletes it (pin_after_pkcs12).
  const std::string ref = "pin-letter-" + machines::wf::derive_id(ctx.idempotency_key, "letter");
  const Fields done{{"pin_index", field(c, "pin_index")}, {"pin_ref", ref}};
  if (fs::exists(secret_file(st, ref))) return event("PinLetterResolved", done);
  const std::string tid = machines::wf::derive_id(ctx.idempotency_key, "pin-letter-bind");
  bool refused = false;
  std::string why;
  PF_ASSIGN_OR_RETURN(json answer, key_genm(st, tid, pr::kOidPinLetterBind,
                                            {{"letter_id", field(c, "letter_id")}}, {}, &refused,
                                            &why));
  if (refused) {
    // Asking again with the same letter cannot succeed: the workflow waits for the operator.
    const std::string reason = genm::pin_letter_refusal(field(c, "letter_id"), why);
    st.notify(ctx.workflow_id, reason);
    return refusal(reason);
  }
  PF_ASSIGN_OR_RETURN(std::string envelope,
                      pr::base64_decode(answer["keys"][0].value("envelope", "")));
  PF_ASSIGN_OR_RETURN(std::string pin, open_for_officer(st, envelope));
  Status saved = write_state_file(secret_file(st, ref), pin);
  OPENSSL_cleanse(pin.data(), pin.size());
  PF_RETURN_IF_ERROR(saved);
  return event("PinLetterResolved", done);
}

Result<Event> remove_files(const Command& c) {
  for (int n = 0; c.fields.count(item("object", n)); ++n) {
    const std::string object = field(c, item("object", n));
    if (object.rfind("file:", 0) != 0) continue;
    std::error_code ec;
    fs::remove(object.substr(5), ec);
    if (ec) return make_status(Errc::kUnavailable, "cannot remove " + object.substr(5));
  }
  return event("RollbackConfirmed");
}

}  // namespace

void install_softtoken_executors(ExecutorRegistry& registry, std::shared_ptr<SoftTokenRa> ra) {
  RetryPolicy local{3, std::chrono::milliseconds(120'000), std::chrono::milliseconds(100),
                    std::chrono::milliseconds(1'000)};
  RetryPolicy cm{6, std::chrono::milliseconds(30'000), std::chrono::milliseconds(200),
                 std::chrono::milliseconds(5'000)};
  RetryPolicy once{1, std::chrono::milliseconds(0), std::chrono::milliseconds(0),
                   std::chrono::milliseconds(0)};
  auto add = [&](const char* type, RetryPolicy policy,
                 std::function<Result<Event>(SoftTokenRa&, const Command&, const CommandContext&)>
                     fn) {
    registry.add(type, blocking_executor(
                           [ra, fn](const Command& c, const CommandContext& ctx) {
                             return fn(*ra, c, ctx);
                           },
                           policy));
  };
  // The operator answers from the saved request (a PIN at the terminal): no retry.
  add("AskOperator", once, ask_operator);
  add("NotifyOperator", once, [](SoftTokenRa& r, const Command& c, const CommandContext& ctx) {
    return notify_operator(r.impl(), c, ctx);
  });
  add("InitializeKeyGeneration", local, [](SoftTokenRa& r, const Command&, const CommandContext&) {
    return initialize_key_generation(r.impl());
  });
  add("GenerateKeyLocally", local, [](SoftTokenRa& r, const Command& c, const CommandContext&) {
    return generate_key_locally(r.impl(), c);
  });
  add("RequestServerKeygenAndArchive", cm, request_server_keygen);
  add("RequestKeyRecovery", cm, request_key_recovery);
  add("SignWithOfficer", local, [](SoftTokenRa& r, const Command&, const CommandContext&) {
    return sign_with_officer(r.impl());
  });
  add("SubmitToCm", cm, submit_to_cm);
  add("GeneratePin", local, generate_pin);
  add("WritePkcs12", local, [](SoftTokenRa& r, const Command& c, const CommandContext&) {
    return write_pkcs12(r.impl(), c);
  });
  add("WriteCertificateFile", local, [](SoftTokenRa& r, const Command& c, const CommandContext&) {
    return write_certificate_file(r.impl(), c);
  });
  add("ShowPinOnce", local, [](SoftTokenRa& r, const Command& c, const CommandContext& ctx) {
    return show_pin_once(r.impl(), c, ctx);
  });
  // A refused letter does not get better by asking again.
  add("QueuePinLetter", once, queue_pin_letter);
  add("ResolvePinLetter", once, resolve_pin_letter);
  add("RemoveFiles", local,
      [](SoftTokenRa&, const Command& c, const CommandContext&) { return remove_files(c); });
}

namespace {

// For `persoflow workflows resume`: executors over the configuration in
// $PERSOFLOW_SOFTTOKEN_CONFIG. Without it every command fails with that message (and the
// workflow is suspended, not lost).
void install_from_environment(ExecutorRegistry& registry) {
  static std::mutex mu;
  static auto* holder = new std::shared_ptr<SoftTokenRa>();
  std::lock_guard lock(mu);
  Status why = Status::ok();
  if (!*holder) {
    const char* path = std::getenv("PERSOFLOW_SOFTTOKEN_CONFIG");
    if (!path || !*path) {
      why = make_status(Errc::kNotFound,
                        "set PERSOFLOW_SOFTTOKEN_CONFIG to the configuration (station.conf)");
    } else if (auto config = load_softtoken_config(path); !config) {
      why = config.status();
    } else if (auto ra = SoftTokenRa::open(*config); !ra) {
      why = ra.status();
    } else {
      *holder = *ra;
    }
  }
  if (*holder) return install_softtoken_executors(registry, *holder);
  for (const char* type :
       {"AskOperator", "NotifyOperator", "InitializeKeyGeneration", "GenerateKeyLocally",
        "RequestServerKeygenAndArchive", "RequestKeyRecovery", "SignWithOfficer", "SubmitToCm",
        "GeneratePin", "WritePkcs12", "WriteCertificateFile", "ShowPinOnce", "QueuePinLetter",
        "ResolvePinLetter", "RemoveFiles"}) {
    registry.add(type, blocking_executor([why](const Command&, const CommandContext&)
                                             -> Result<Event> { return why; },
                                         RetryPolicy{1}));
  }
}

}  // namespace

PF_REGISTER_EXECUTORS(issue_soft_token, "issue-soft-token", install_from_environment);

}  // namespace persoflow::actors
