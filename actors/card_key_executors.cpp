// Keys from the CM host on cards (issue-card's 'generate & archive' and 'recover' entries): the
// token procedure read from the CM host's procedure list, RequestServerKeygenAndArchive and
// RequestKeyRecovery as genm messages, and writing a returned key and certificate to the card.
//
// Each step is idempotent: the genm request is saved before it is sent and resent byte for byte
// (the CM host answers from its store: never a second archived key); its genp (keys enveloped
// for the officer, never in clear) is kept in <state_dir>/keys/<transactionID>.json and answers
// a repeat; a key already on the card under its CKA_ID counts as written.
#include <openssl/crypto.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cm_genm.hpp"
#include "persoflow/machines/workflow_support.hpp"
#include "persoflow/protocol/base64.hpp"
#include "persoflow/protocol/cm_info_types.hpp"
#include "persoflow/protocol/ossl.hpp"
#include "station_impl.hpp"

namespace persoflow::actors::detail {
namespace {

using machines::wf::item;
using nlohmann::json;

// "/CN=Alice/O=Example" from the subject.* fields of a command.
std::string subject_of(const Fields& fields) {
  std::string s;
  for (const auto& [k, v] : fields) {
    if (k.rfind("subject.", 0) == 0) s += "/" + k.substr(8) + "=" + v;
  }
  return s;
}

struct TokenProcedureInfo {
  json token;                 // the token procedure as the CM host lists it
  std::vector<json> archive;  // its key procedures of type archive, in order
  std::vector<json> recover;  // ... of type recover (the machine's recovery.<r>)
  std::string pin_delivery;   // its PIN procedure's delivery (entered|shown|mailer|letter)
};

// The token procedure `name` from the CM host's procedure list (genm persoflowProcedureList).
Result<TokenProcedureInfo> token_procedure(Impl& st, const std::string& name) {
  std::string refusal;
  PF_ASSIGN_OR_RETURN(json asked, configuration_genm(st, protocol::kOidProcedureList,
                                                     json::object(), &refusal));
  PF_ASSIGN_OR_RETURN(json list, genm::procedure_list_answer(std::move(asked), refusal));
  TokenProcedureInfo out;
  std::vector<std::string> names;
  for (const auto& tp : list.value("token_procedures", json::array())) {
    names.push_back(tp.value("name", ""));
    if (tp.value("name", "") == name) out.token = tp;
  }
  if (out.token.is_null()) {
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    return make_status(Errc::kNotFound,
                       "the CM host has no token procedure '" + name + "' (it has " + known + ")");
  }
  if (out.token.value("media", "") != "smartcard") {
    return make_status(Errc::kInvalidArgument, "token procedure '" + name + "' is for " +
                                                   out.token.value("media", "?") +
                                                   ", not for smart cards");
  }
  for (const auto& kp_name : out.token.value("key_procedures", json::array())) {
    bool found = false;
    for (const auto& kp : list.value("key_procedures", json::array())) {
      if (kp.value("name", "") != kp_name.get<std::string>()) continue;
      found = true;
      (kp.value("type", "") == "archive" ? out.archive : out.recover).push_back(kp);
    }
    if (!found) {
      return make_status(Errc::kPermissionDenied,
                         "key procedure '" + kp_name.get<std::string>() + "' of token procedure '" +
                             name + "' is not offered to this officer (a role is missing)");
    }
  }
  for (const auto& pp : list.value("pin_procedures", json::array())) {
    if (pp.value("name", "") == out.token.value("pin_procedure", "")) {
      out.pin_delivery = pp.value("delivery", "");
    }
  }
  return out;
}

Result<CardRequest> request_of(Station& station, const CommandContext& ctx) {
  return station.load_request(ctx.workflow_id);
}

std::string keys_file(Impl& st, const std::string& tid) {
  return st.dir("keys") + "/" + tid + ".json";
}

Result<json> cm_key_genm(Impl& st, const std::string& tid, const char* oid, const json& body,
                         bool* refused, std::string* why) {
  if (tid.size() != 32 || !safe_name(tid)) {
    return make_status(Errc::kInvalidArgument, "bad transaction_id '" + tid + "'");
  }
  PF_ASSIGN_OR_RETURN(CmLink * link, st.cm_link());
  return genm::key_genm(*link, st.dir("cmp") + "/" + tid + ".der", keys_file(st, tid), oid, body,
                        {}, refused, why);
}

Result<Event> request_server_keygen(Station& station, const Command& c, const CommandContext& ctx) {
  PF_ASSIGN_OR_RETURN(CardRequest req, request_of(station, ctx));
  PF_ASSIGN_OR_RETURN(TokenProcedureInfo tp, token_procedure(station.impl(), req.token_procedure));
  if (tp.archive.empty()) {
    return event("CmRefused", {{"reason", "token procedure '" + req.token_procedure +
                                              "' has no key procedure for archiving"}});
  }
  const std::string tid = field(c, "transaction_id");
  json body = {{"key_procedure", tp.archive.front().value("name", "")},
               {"subject", subject_of(c.fields)}};
  bool refused = false;
  std::string why;
  PF_ASSIGN_OR_RETURN(json answer, cm_key_genm(station.impl(), tid, protocol::kOidServerKeygen,
                                               body, &refused, &why));
  if (refused) return event("CmRefused", {{"reason", why}});
  return event("ServerKeyArchived",
               {{"entry", field(c, "entry")}, {"key_ref", "cm:" + tid + ":0"}});
}

// The search criterion of a recovery: serial:<hex>, id:<decimal>, subject:<text>, or auto (the
// common name entered).
Result<json> search_criterion(const Command& c) {
  const std::string search = field(c, "search");
  if (search.rfind("serial:", 0) == 0) return json{{"serial", search.substr(7)}};
  if (search.rfind("id:", 0) == 0) {
    try {
      return json{{"cert_id", std::stoll(search.substr(3))}};
    } catch (const std::exception&) {
      return make_status(Errc::kInvalidArgument, "bad certificate ID in " + search);
    }
  }
  if (search.rfind("subject:", 0) == 0) {
    return json{{"subject", search.substr(8)}, {"substring", true}};
  }
  auto cn = c.fields.find("subject.CN");
  if (cn == c.fields.end()) {
    return make_status(Errc::kInvalidArgument, "no CN entered to search the archived keys by");
  }
  return json{{"subject", cn->second}, {"substring", true}};
}

Result<Event> request_key_recovery(Station& station, const Command& c, const CommandContext& ctx) {
  PF_ASSIGN_OR_RETURN(CardRequest req, request_of(station, ctx));
  PF_ASSIGN_OR_RETURN(TokenProcedureInfo tp, token_procedure(station.impl(), req.token_procedure));
  const std::size_t r = std::stoul(field(c, "recovery"));
  if (r >= tp.recover.size()) {
    return make_status(Errc::kInvalidArgument, "recovery procedure " + std::to_string(r) +
                                                   " of token procedure '" + req.token_procedure +
                                                   "' is not there");
  }
  auto criterion = search_criterion(c);
  if (!criterion) return event("CmRefused", {{"reason", criterion.status().message()}});
  json body = {{"search", *criterion},
               {"key_procedure", tp.recover[r].value("name", "")},
               {"scope", field(c, "scope")}};
  const std::string tid = field(c, "transaction_id");
  bool refused = false;
  std::string why;
  PF_ASSIGN_OR_RETURN(json answer, cm_key_genm(station.impl(), tid, protocol::kOidKeyRecovery, body,
                                               &refused, &why));
  if (refused) return event("CmRefused", {{"reason", why}});
  if (answer["keys"].empty()) {
    return event("CmRefused", {{"reason", "no archived key matches " + field(c, "search")}});
  }
  Fields f{{"entry", field(c, "entry")}};
  int j = 0;
  for (const auto& key : answer["keys"]) {
    f[item("recovered", j, "key_ref")] = "cm:" + tid + ":" + std::to_string(j);
    if (field(c, "reuse_certificate") == "yes") {
      f[item("recovered", j, "cert_serial")] = key.value("certificate_serial", "");
    }
    ++j;
  }
  return event("KeyRecovered", std::move(f));
}

// The j-th key of a saved genp answer, from its reference "cm:<tid>:<j>".
Result<json> cm_key_entry(Impl& st, const std::string& key_ref) {
  const auto second = key_ref.find(':', 3);
  if (key_ref.rfind("cm:", 0) != 0 || second == std::string::npos) {
    return make_status(Errc::kInvalidArgument, "bad key reference " + key_ref);
  }
  const std::string tid = key_ref.substr(3, second - 3);
  if (!safe_name(tid)) return make_status(Errc::kInvalidArgument, "bad key reference " + key_ref);
  std::size_t j = 0;
  try {
    j = std::stoul(key_ref.substr(second + 1));
  } catch (const std::exception&) {
    return make_status(Errc::kInvalidArgument, "bad key reference " + key_ref);
  }
  PF_ASSIGN_OR_RETURN(std::string text, read_file(keys_file(st, tid)));
  json answer = json::parse(text);
  if (j >= answer["keys"].size()) return make_status(Errc::kNotFound, "no key " + key_ref);
  return answer["keys"][j];
}

// The operator PIN the write needs, from the station's operator_pin_file. It is read (a missing
// or empty file is an error the operator can act on) but not verified by a login as security
// officer: libp11 keeps read-only sessions open on the card, and SoftHSM2 then refuses an SO
// login (CKR_SESSION_READ_ONLY_EXISTS); a card with an operator role checks it on its own write.
Status check_operator_pin(Impl& st, const std::string& pin_ref) {
  if (pin_ref != "operator-pin-file" || st.config.operator_pin_file.empty()) {
    return make_status(Errc::kNotFound, "unknown operator PIN reference '" + pin_ref + "'");
  }
  PF_ASSIGN_OR_RETURN(std::string pin, first_line(st.config.operator_pin_file));
  OPENSSL_cleanse(pin.data(), pin.size());
  return Status::ok();
}

// The CA certificates the CM host returned (ca_cert.<m>.ref) replace those on the card: the new
// ones are stored first, then every other "CA certificate" goes.
Result<Event> replace_ca_certificates(Impl& st, const Command& c) {
  const std::string serial = field(c, "token_serial");
  std::vector<std::pair<std::string, std::string>> wanted;  // serial, DER
  for (int m = 0; c.fields.count(item("ca_cert", m, "ref")); ++m) {
    const std::string ref = field(c, item("ca_cert", m, "ref"));
    if (ref.rfind("ca-", 0) != 0 || !safe_name(ref)) {
      return make_status(Errc::kInvalidArgument, "bad CA certificate reference " + ref);
    }
    PF_ASSIGN_OR_RETURN(std::string der, read_file(st.dir("certs") + "/" + ref + ".der"));
    wanted.emplace_back(ref.substr(3), std::move(der));
  }
  auto slot = st.slot(serial);
  std::lock_guard lock(slot->mu);
  PF_ASSIGN_OR_RETURN(dv::CardContents contents, workflow_card_contents(st, *slot, serial));
  if (!field(c, "operator_pin_ref").empty()) {
    PF_RETURN_IF_ERROR(check_operator_pin(st, field(c, "operator_pin_ref")));
  }
  for (const auto& [ca_serial, der] : wanted) {
    PF_RETURN_IF_ERROR(slot->card->store_certificate(der, dv::derive_key_id("ca/" + ca_serial),
                                                     kCaCertificateLabel));
  }
  int removed = 0;
  for (const dv::CertificateInfo& cert : contents.certificates) {
    if (cert.label != kCaCertificateLabel) continue;
    bool keep = false;
    for (const auto& w : wanted) keep = keep || w.first == cert.serial_hex;
    if (keep) continue;
    Status s = slot->card->delete_certificate(cert.id, cert.serial_hex);
    if (!s && s.code() != make_error_code(Errc::kNotFound)) return s;
    ++removed;
  }
  return event("CaCertificatesReplaced",
               {{"written", std::to_string(wanted.size())}, {"removed", std::to_string(removed)}});
}

}  // namespace

Result<Event> operator_pin_entered(Station& station) {
  if (station.config().operator_pin_file.empty()) {
    return make_status(Errc::kUnavailable,
                       "the token procedure needs the card's operator PIN and the CM database "
                       "does not hold it: set operator_pin_file in the station configuration "
                       "(a file only the station can read), then resume the workflow");
  }
  return event("OperatorPinEntered", {{"pin_ref", "operator-pin-file"}});
}

namespace {

// What a token procedure says about the card after the write, in ProcedureChosen's terms.
void add_card_rules(const TokenProcedureInfo& tp, Fields& f) {
  f["replace_ca"] = tp.token.value("ca_certificates_on_card", false) ? "yes" : "no";
  f["operator_pin"] = tp.token.value("operator_pin_required", false) ? "required" : "none";
}

}  // namespace

Result<Fields> card_rules_of_token_procedure(Station& station, const std::string& name) {
  PF_ASSIGN_OR_RETURN(TokenProcedureInfo tp, token_procedure(station.impl(), name));
  Fields f;
  add_card_rules(tp, f);
  return f;
}

Result<Event> procedure_chosen_from_token_procedure(Station& station, const CardRequest& req) {
  PF_ASSIGN_OR_RETURN(TokenProcedureInfo tp, token_procedure(station.impl(), req.token_procedure));
  std::string procedure = req.procedure;
  if (procedure.empty()) {
    const json& certs = tp.token.value("certificate_procedures", json::array());
    procedure = certs.empty() ? station.config().procedure : certs.front().get<std::string>();
  }
  Fields f{{"procedure", procedure},
           {"pin_delivery", req.pin_delivery},
           {"key_algorithm", station.config().key_algorithm},
           {"key_archiving", tp.archive.empty() ? "no" : "yes"}};
  add_card_rules(tp, f);
  for (std::size_t r = 0; r < tp.recover.size(); ++r) {
    const int i = static_cast<int>(r);
    f[item("recovery", i, "scope")] = tp.recover[r].value("scope", "last");
    f[item("recovery", i, "reuse_certificate")] =
        tp.recover[r].value("certificate", "new") == "reuse" ? "yes" : "no";
  }
  return event("ProcedureChosen", std::move(f));
}

Result<CmKey> cm_key(Impl& st, const std::string& key_ref) {
  PF_ASSIGN_OR_RETURN(json entry, cm_key_entry(st, key_ref));
  CmKey out;
  PF_ASSIGN_OR_RETURN(out.certificate_der, protocol::base64_decode(entry.value("certificate", "")));
  PF_ASSIGN_OR_RETURN(out.envelope, protocol::base64_decode(entry.value("envelope", "")));
  return out;
}

Status write_cm_key(Impl& st, devices::Card& card, const std::string& key_ref,
                    const std::vector<unsigned char>& cka, const std::string& label) {
  PF_ASSIGN_OR_RETURN(auto present, card.find_key(cka));
  if (present && present->has_private && present->has_public) return Status::ok();
  PF_ASSIGN_OR_RETURN(CmKey key, cm_key(st, key_ref));
  PF_ASSIGN_OR_RETURN(dv::OfficerToken * officer, st.officer_token("officer-password-file"));
  PF_ASSIGN_OR_RETURN(std::string pkcs8, genm::open_for_officer(*officer, key.envelope));
  const unsigned char* q = reinterpret_cast<const unsigned char*>(pkcs8.data());
  pr::EvpPkeyPtr pkey(d2i_AutoPrivateKey(nullptr, &q, static_cast<long>(pkcs8.size())));
  OPENSSL_cleanse(pkcs8.data(), pkcs8.size());
  if (!pkey) return pr::openssl_failure("the enveloped key is not a PKCS#8 private key");
  return card.import_key(pkey.get(), cka, label);
}

void install_card_key_executors(ExecutorRegistry& registry, std::shared_ptr<Station> station) {
  RetryPolicy cm{6, std::chrono::milliseconds(30'000), std::chrono::milliseconds(200),
                 std::chrono::milliseconds(5'000)};
  auto s = station;
  registry.add("RequestServerKeygenAndArchive",
               blocking_executor(
                   [s](const Command& c, const CommandContext& ctx) {
                     return request_server_keygen(*s, c, ctx);
                   },
                   cm));
  registry.add("RequestKeyRecovery", blocking_executor(
                                         [s](const Command& c, const CommandContext& ctx) {
                                           return request_key_recovery(*s, c, ctx);
                                         },
                                         cm));
  RetryPolicy card{3, std::chrono::milliseconds(60'000), std::chrono::milliseconds(200),
                   std::chrono::milliseconds(2'000)};
  registry.add("ReplaceCaCertificates", blocking_executor(
                                            [s](const Command& c, const CommandContext&) {
                                              return replace_ca_certificates(s->impl(), c);
                                            },
                                            card));
}

}  // namespace persoflow::actors::detail
