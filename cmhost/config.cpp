// The CM host's configuration: cm.json <-> CmConfig, its checks, and the default procedures that
// `cm init` writes (include/persoflow/cmhost/config.hpp).
#include "persoflow/cmhost/config.hpp"

#include <openssl/ec.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "names.hpp"

namespace persoflow::cmhost {

using nlohmann::json;

// ---------------------------------------------------------------- names

namespace names {

int key_usage_bit(const std::string& n) {
  if (n == "digitalSignature") return KU_DIGITAL_SIGNATURE;
  if (n == "nonRepudiation" || n == "contentCommitment") return KU_NON_REPUDIATION;
  if (n == "keyEncipherment") return KU_KEY_ENCIPHERMENT;
  if (n == "dataEncipherment") return KU_DATA_ENCIPHERMENT;
  if (n == "keyAgreement") return KU_KEY_AGREEMENT;
  if (n == "keyCertSign") return KU_KEY_CERT_SIGN;
  if (n == "cRLSign") return KU_CRL_SIGN;
  if (n == "encipherOnly") return KU_ENCIPHER_ONLY;
  if (n == "decipherOnly") return KU_DECIPHER_ONLY;
  return 0;
}

int eku_nid(const std::string& n) {
  if (n == "serverAuth") return NID_server_auth;
  if (n == "clientAuth") return NID_client_auth;
  if (n == "codeSigning") return NID_code_sign;
  if (n == "emailProtection") return NID_email_protect;
  if (n == "timeStamping") return NID_time_stamp;
  if (n == "OCSPSigning") return NID_OCSP_sign;
  if (n == "msSmartcardLogin") return NID_ms_smartcard_login;
  if (!n.empty() && std::isdigit(static_cast<unsigned char>(n[0]))) {
    int nid = OBJ_txt2nid(n.c_str());
    if (nid != NID_undef) return nid;
    ASN1_OBJECT* obj = OBJ_txt2obj(n.c_str(), 1);
    if (!obj) return NID_undef;
    ASN1_OBJECT_free(obj);
    return OBJ_create(n.c_str(), nullptr, nullptr);
  }
  return NID_undef;
}

int curve_nid(const std::string& n) {
  if (n == "secp256r1" || n == "P-256" || n == "prime256v1") return NID_X9_62_prime256v1;
  int nid = EC_curve_nist2nid(n.c_str());
  if (nid != NID_undef) return nid;
  nid = OBJ_sn2nid(n.c_str());
  if (nid == NID_undef) return NID_undef;
  // Only named curves count.
  EC_GROUP* g = EC_GROUP_new_by_curve_name(nid);
  if (!g) return NID_undef;
  EC_GROUP_free(g);
  return nid;
}

std::string curve_name(int nid) {
  if (nid == NID_X9_62_prime256v1) return "secp256r1";
  const char* sn = OBJ_nid2sn(nid);
  return sn ? sn : "unknown";
}

}  // namespace names

// ---------------------------------------------------------------- lookups

namespace {
template <typename T>
const T* find_named(const std::vector<T>& items, const std::string& name) {
  for (const auto& i : items) {
    if (i.name == name) return &i;
  }
  return nullptr;
}
}  // namespace

const CertificateProcedure* CmConfig::certificate_procedure(const std::string& name) const {
  return find_named(certificate_procedures, name);
}
const KeyProcedure* CmConfig::key_procedure(const std::string& name) const {
  return find_named(key_procedures, name);
}
const PinProcedure* CmConfig::pin_procedure(const std::string& name) const {
  return find_named(pin_procedures, name);
}
const TokenProcedure* CmConfig::token_procedure(const std::string& name) const {
  return find_named(token_procedures, name);
}

std::string RaKeyChoice::to_string() const { return algorithm + ":" + parameter; }

Result<std::vector<RaKeyChoice>> parse_ra_key_generation(const std::string& text) {
  // Line continuations ("\" then newline) are part of the syntax in cm.conf.
  std::string flat;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size() && (text[i + 1] == '\n' || text[i + 1] == '\r')) {
      continue;
    }
    flat.push_back(text[i] == '\n' || text[i] == '\r' || text[i] == '\t' ? ' ' : text[i]);
  }
  std::string s = flat;
  const std::string prefix = "client.ra-key-generation";
  if (s.find(prefix) != std::string::npos) {
    auto eq = s.find('=');
    if (eq == std::string::npos) {
      return make_status(Errc::kInvalidArgument, "ra-key-generation: '=' missing after the key");
    }
    s = s.substr(eq + 1);
  }
  std::vector<RaKeyChoice> out;
  std::stringstream ss(s);
  std::string item;
  int defaults = 0;
  while (std::getline(ss, item, ',')) {
    std::size_t a = item.find_first_not_of(' ');
    std::size_t b = item.find_last_not_of(' ');
    if (a == std::string::npos) {
      return make_status(Errc::kInvalidArgument, "ra-key-generation: empty entry in '" + text + "'");
    }
    item = item.substr(a, b - a + 1);
    RaKeyChoice c;
    if (item.back() == '*') {
      c.is_default = true;
      ++defaults;
      item.pop_back();
    }
    auto colon = item.find(':');
    if (colon == std::string::npos) {
      return make_status(Errc::kInvalidArgument,
                         "ra-key-generation: entry '" + item + "' is not ALGORITHM:PARAMETER");
    }
    c.algorithm = item.substr(0, colon);
    c.parameter = item.substr(colon + 1);
    if (c.algorithm == "RSA" || c.algorithm == "DSA") {
      if (c.parameter.empty() ||
          c.parameter.find_first_not_of("0123456789") != std::string::npos ||
          std::stoi(c.parameter) < 512 || std::stoi(c.parameter) > 16384) {
        return make_status(Errc::kInvalidArgument, "ra-key-generation: entry '" + item +
                                                       "' needs a key length in bits");
      }
    } else if (c.algorithm == "EC") {
      if (names::curve_nid(c.parameter) == 0) {
        return make_status(Errc::kInvalidArgument,
                           "ra-key-generation: unknown EC curve '" + c.parameter + "'");
      }
    } else {
      return make_status(Errc::kInvalidArgument, "ra-key-generation: unknown algorithm '" +
                                                     c.algorithm + "' (RSA, EC or DSA)");
    }
    out.push_back(c);
  }
  if (out.empty()) return make_status(Errc::kInvalidArgument, "ra-key-generation is empty");
  if (defaults > 1) {
    return make_status(Errc::kInvalidArgument, "ra-key-generation marks more than one default (*)");
  }
  if (defaults == 0) out.front().is_default = true;
  return out;
}

// ---------------------------------------------------------------- defaults

namespace {

std::vector<KeyAlgorithmRule> strong_keys() {
  return {{"RSA", 2048, 8192, {}},
          {"EC",
           0,
           0,
           {"secp256r1", "secp384r1", "secp521r1", "brainpoolP256r1", "brainpoolP320r1",
            "brainpoolP384r1", "brainpoolP512r1"}}};
}

CertificateProcedure cert_proc(std::string name, std::string description,
                               std::vector<std::string> ku, std::vector<std::string> eku,
                               int days) {
  CertificateProcedure p;
  p.name = std::move(name);
  p.description = std::move(description);
  p.subject.required = {"CN"};
  p.subject.optional = {"O", "OU", "C", "L", "ST", "emailAddress", "serialNumber", "GN", "SN"};
  p.key_usage = std::move(ku);
  p.extended_key_usage = std::move(eku);
  p.validity_days = days;
  p.key_algorithms = strong_keys();
  return p;
}

}  // namespace

CmConfig default_config() {
  CmConfig c;
  c.ra_key_generation =
      "RSA:2048*, RSA:3072, RSA:4096, RSA:8192, EC:brainpoolP256r1, EC:brainpoolP320r1, "
      "EC:brainpoolP384r1, EC:brainpoolP512r1, EC:secp256r1, EC:secp384r1, EC:secp521r1, "
      "DSA:1024";

  c.certificate_procedures.push_back(cert_proc(
      "smartcard-auth", "smart card logon and TLS client authentication", {"digitalSignature"},
      {"clientAuth", "msSmartcardLogin"}, 730));
  c.certificate_procedures.push_back(cert_proc("smartcard-sign", "smart card signature key",
                                               {"digitalSignature", "nonRepudiation"},
                                               {"emailProtection"}, 730));
  {
    auto p = cert_proc("smartcard-encrypt", "encryption key (archived by the CM host)",
                       {"keyEncipherment", "dataEncipherment"}, {"emailProtection"}, 730);
    p.key_algorithms = {{"RSA", 2048, 4096, {}}};
    c.certificate_procedures.push_back(p);
  }
  {
    auto p = cert_proc("softtoken", "PKCS#12 software token (keys from client.ra-key-generation)",
                       {"digitalSignature"}, {"clientAuth", "emailProtection"}, 365);
    p.key_algorithms = strong_keys();
    p.key_algorithms.push_back({"DSA", 1024, 3072, {}});
    c.certificate_procedures.push_back(p);
  }
  {
    auto p = cert_proc("officer", "RA officer credential (no key usage)", {}, {}, 730);
    p.subject.optional = {"O", "OU", "C", "emailAddress"};
    p.officer = true;
    c.certificate_procedures.push_back(p);
  }
  c.certificate_procedures.push_back(cert_proc(
      "reissue", "reissue with a new key pair (from a CSR or generated on the card)",
      {"digitalSignature", "keyEncipherment"}, {"clientAuth"}, 365));
  {
    auto p = cert_proc("reissue-verified",
                       "reissue after the subject's e-mail address is verified with a code",
                       {"digitalSignature", "keyEncipherment"}, {"clientAuth"}, 365);
    p.subject.required = {"CN", "emailAddress"};
    p.subject.optional = {"O", "OU", "C", "L", "ST", "serialNumber", "GN", "SN"};
    p.email_verification = true;
    p.verification_minutes = 60;
    p.verification_check_after = 30;
    c.certificate_procedures.push_back(p);
  }
  {
    auto p = cert_proc("transport", "transport certificate (TC) of a pre-personalized card",
                       {"digitalSignature"}, {}, 90);
    p.transport = true;
    c.certificate_procedures.push_back(p);
  }
  {
    auto p = cert_proc("qualified", "qualified certificate for electronic signatures (QSCD)",
                       {"nonRepudiation"}, {}, 730);
    p.subject.required = {"CN", "C"};
    p.subject.optional = {"GN", "SN", "serialNumber", "O", "OU", "emailAddress"};
    QcStatements qc;
    qc.compliance = true;
    qc.sscd = true;
    qc.types = {"esign"};
    qc.pds = {{"https://127.0.0.1:8443/pds/en", "en"}};
    qc.ra_may_enter = {"types", "pds"};
    qc.allowed_types = {"esign", "eseal"};
    qc.allowed_pds = {{"https://127.0.0.1:8443/pds/en", "en"},
                      {"https://127.0.0.1:8443/pds/de", "de"},
                      {"https://127.0.0.1:8443/pds/sv", "sv"}};
    p.qc_statements = qc;
    c.certificate_procedures.push_back(p);
  }

  auto key_proc = [](std::string name, std::string type, std::string scope, std::string cert,
                     std::vector<std::string> roles, std::string description) {
    KeyProcedure k;
    k.name = std::move(name);
    k.type = std::move(type);
    k.certificate_procedure = "smartcard-encrypt";
    k.key_algorithm = k.type == "archive" ? "RSA:2048" : "";
    k.scope = std::move(scope);
    k.certificate = std::move(cert);
    k.roles_required = std::move(roles);
    k.description = std::move(description);
    return k;
  };
  c.key_procedures.push_back(key_proc("archive-encryption", "archive", "last", "new", {"issue"},
                                      "CM host generates the encryption key and archives it"));
  c.key_procedures.push_back(key_proc("recover-last-new", "recover", "last", "new",
                                      {"recover", "issue"},
                                      "recover the user's last key with a new certificate"));
  c.key_procedures.push_back(key_proc("recover-all-new", "recover", "all", "new",
                                      {"recover", "issue"},
                                      "recover all the user's keys, each with a new certificate"));
  c.key_procedures.push_back(key_proc("recover-last-reuse", "recover", "last", "reuse",
                                      {"recover"},
                                      "recover the user's last key with its old certificate"));
  c.key_procedures.push_back(key_proc("recover-all-reuse", "recover", "all", "reuse", {"recover"},
                                      "recover all the user's keys with their old certificates"));

  c.pin_procedures = {
      {"pin-entered", "entered", 6, 8, true,
       "entered at the RA (not checked against the card's PIN policy: warn)"},
      {"pin-shown", "shown", 6, 8, true, "generated and shown once at the RA"},
      {"pin-mailer", "mailer", 6, 8, true, "generated and queued as a PIN letter for printing"},
      {"pin-letter", "letter", 6, 8, true, "bound to a pre-printed PIN/PUK letter ID"},
  };

  auto token = [](std::string name, std::string media, std::vector<std::string> certs,
                  std::vector<std::string> keys, std::string pin, std::string description) {
    TokenProcedure t;
    t.name = std::move(name);
    t.media = std::move(media);
    t.certificate_procedures = std::move(certs);
    t.key_procedures = std::move(keys);
    t.pin_procedure = std::move(pin);
    t.description = std::move(description);
    return t;
  };
  c.token_procedures.push_back(token("smartcard-standard", "smartcard",
                                     {"smartcard-auth", "smartcard-sign"}, {}, "pin-shown",
                                     "authentication and signature keys generated on the card"));
  c.token_procedures.back().ca_certificates_on_card = true;
  c.token_procedures.push_back(token("smartcard-archive", "smartcard",
                                     {"smartcard-auth", "smartcard-sign", "smartcard-encrypt"},
                                     {"archive-encryption"}, "pin-entered",
                                     "as standard, plus an encryption key generated and archived "
                                     "by the CM host"));
  c.token_procedures.push_back(token("smartcard-recover", "smartcard", {"smartcard-auth"},
                                     {"recover-last-new"}, "pin-mailer",
                                     "new authentication key; the last encryption key recovered "
                                     "with a new certificate"));
  c.token_procedures.push_back(token("smartcard-recover-all", "smartcard", {"smartcard-auth"},
                                     {"recover-all-new"}, "pin-mailer",
                                     "all encryption keys recovered, each with a new certificate"));
  c.token_procedures.push_back(token("smartcard-recover-only", "smartcard", {},
                                     {"recover-all-reuse"}, "pin-shown",
                                     "recovery only: all keys with their old certificates (needs "
                                     "only the recover role)"));
  {
    auto t = token("smartcard-tc", "smartcard", {"smartcard-auth", "smartcard-sign"}, {},
                   "pin-letter",
                   "update a card holding a transport certificate: the TC is validated, then "
                   "replaced (redo)");
    t.tc_validation.required = true;
    t.tc_validation.trusted_issuers = {"ca/ca.pem"};
    t.ca_certificates_on_card = true;
    t.operator_pin_required = true;
    c.token_procedures.push_back(t);
  }
  c.token_procedures.push_back(token("smartcard-qualified", "smartcard", {"qualified"}, {},
                                     "pin-letter", "qualified signature certificate on a QSCD"));
  c.token_procedures.push_back(token("softtoken-standard", "softtoken", {"softtoken"}, {},
                                     "pin-shown", "PKCS#12 with a key generated by the RA"));
  c.token_procedures.push_back(token("softtoken-archive", "softtoken",
                                     {"softtoken", "smartcard-encrypt"}, {"archive-encryption"},
                                     "pin-entered",
                                     "PKCS#12: signature key by the RA, encryption key generated "
                                     "and archived by the CM host"));
  c.token_procedures.push_back(token("softtoken-recover", "softtoken", {}, {"recover-last-reuse"},
                                     "pin-shown",
                                     "PKCS#12 holding the user's last archived key and its old "
                                     "certificate"));
  c.token_procedures.push_back(token("officer-softtoken", "softtoken", {"officer"}, {},
                                     "pin-shown", "an officer's software credential (warned "
                                                  "against: prefer a smart card)"));
  c.token_procedures.push_back(token("reissue", "any", {"reissue"}, {}, "pin-shown",
                                     "reissue from a CSR or a key generated on the card; the "
                                     "previous certificate may then be revoked"));
  c.default_procedure = "softtoken";
  return c;
}

// ---------------------------------------------------------------- JSON

namespace {

json rules_to_json(const std::vector<KeyAlgorithmRule>& rules) {
  json a = json::array();
  for (const auto& r : rules) {
    json j = {{"algorithm", r.algorithm}};
    if (r.min_bits) j["min_bits"] = r.min_bits;
    if (r.max_bits) j["max_bits"] = r.max_bits;
    if (!r.curves.empty()) j["curves"] = r.curves;
    a.push_back(j);
  }
  return a;
}

json pds_to_json(const std::vector<PdsLocation>& pds) {
  json a = json::array();
  for (const auto& p : pds) a.push_back({{"url", p.url}, {"language", p.language}});
  return a;
}

std::vector<PdsLocation> pds_from_json(const json& a) {
  std::vector<PdsLocation> out;
  for (const auto& p : a) out.push_back({p.at("url").get<std::string>(), p.at("language").get<std::string>()});
  return out;
}

template <typename T>
T opt(const json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return it->get<T>();
}

}  // namespace

std::string config_to_json(const CmConfig& c, int indent) {
  json j;
  j["version"] = c.version;
  j["ca"] = {{"chain", c.ca_chain}, {"key", c.ca_key}, {"key_passphrase_file", c.ca_key_passphrase_file}};
  if (c.ca_key_in_token()) {
    j["ca"]["pkcs11_module"] = c.ca_pkcs11_module;
    j["ca"]["pin_file"] = c.ca_pin_file;
  }
  j["key_archive"] = {{"certificate", c.archive_certificate},
                      {"key", c.archive_key},
                      {"key_passphrase_file", c.archive_key_passphrase_file}};
  j["tls"] = {{"certificate", c.tls_certificate}, {"key", c.tls_key}};
  j["database"] = c.database;
  j["public_base_url"] = c.public_base_url;
  j["listen"] = c.listen;
  j["crl_validity_hours"] = c.crl_validity_hours;
  j["smtp"] = {{"host", c.smtp.host},
               {"port", c.smtp.port},
               {"from", c.smtp.from},
               {"timeout_seconds", c.smtp.timeout_seconds}};
  j["default_procedure"] = c.default_procedure;
  j["client.ra-key-generation"] = c.ra_key_generation;
  json cps = json::array();
  for (const auto& p : c.certificate_procedures) {
    json cp = {{"name", p.name},
               {"description", p.description},
               {"subject", {{"required", p.subject.required}, {"optional", p.subject.optional}}},
               {"key_usage", p.key_usage},
               {"extended_key_usage", p.extended_key_usage},
               {"validity_days", p.validity_days},
               {"key_algorithms", rules_to_json(p.key_algorithms)},
               {"roles_required", p.roles_required}};
    if (p.officer) cp["officer"] = true;
    if (p.transport) cp["transport"] = true;
    if (p.email_verification) {
      cp["email_verification"] = true;
      cp["verification_minutes"] = p.verification_minutes;
      cp["verification_check_after"] = p.verification_check_after;
    }
    if (p.qc_statements) {
      const auto& q = *p.qc_statements;
      cp["qc_statements"] = {{"compliance", q.compliance},
                             {"sscd", q.sscd},
                             {"types", q.types},
                             {"pds", pds_to_json(q.pds)},
                             {"ra_may_enter", q.ra_may_enter},
                             {"allowed_types", q.allowed_types},
                             {"allowed_pds", pds_to_json(q.allowed_pds)}};
    }
    cps.push_back(cp);
  }
  j["certificate_procedures"] = cps;
  json kps = json::array();
  for (const auto& k : c.key_procedures) {
    json kp = {{"name", k.name},
               {"description", k.description},
               {"type", k.type},
               {"certificate_procedure", k.certificate_procedure},
               {"roles_required", k.roles_required}};
    if (k.type == "archive") {
      kp["key_algorithm"] = k.key_algorithm;
    } else {
      kp["scope"] = k.scope;
      kp["certificate"] = k.certificate;
    }
    kps.push_back(kp);
  }
  j["key_procedures"] = kps;
  json pps = json::array();
  for (const auto& p : c.pin_procedures) {
    pps.push_back({{"name", p.name},
                   {"delivery", p.delivery},
                   {"min_length", p.min_length},
                   {"max_length", p.max_length},
                   {"puk", p.puk},
                   {"description", p.description}});
  }
  j["pin_procedures"] = pps;
  json tps = json::array();
  for (const auto& t : c.token_procedures) {
    tps.push_back({{"name", t.name},
                   {"description", t.description},
                   {"media", t.media},
                   {"certificate_procedures", t.certificate_procedures},
                   {"key_procedures", t.key_procedures},
                   {"pin_procedure", t.pin_procedure},
                   {"tc_validation",
                    {{"required", t.tc_validation.required},
                     {"trusted_issuers", t.tc_validation.trusted_issuers}}},
                   {"ca_certificates_on_card", t.ca_certificates_on_card},
                   {"operator_pin_required", t.operator_pin_required}});
  }
  j["token_procedures"] = tps;
  return j.dump(indent);
}

namespace {

Status check_config(const CmConfig& c) {
  auto bad = [](const std::string& msg) { return make_status(Errc::kInvalidArgument, msg); };
  std::set<std::string> seen;
  for (const auto& p : c.certificate_procedures) {
    std::string where = "certificate procedure '" + p.name + "'";
    if (p.name.empty()) return bad("a certificate procedure has no name");
    if (!seen.insert(p.name).second) return bad(where + " is defined twice");
    for (const auto& ku : p.key_usage) {
      if (!names::key_usage_bit(ku)) return bad(where + ": unknown key usage '" + ku + "'");
    }
    for (const auto& e : p.extended_key_usage) {
      if (names::eku_nid(e) == NID_undef) {
        return bad(where + ": unknown extended key usage '" + e + "'");
      }
    }
    if (p.validity_days <= 0 || p.validity_days > 36500) {
      return bad(where + ": validity_days must be between 1 and 36500");
    }
    for (const auto& f : p.subject.required) {
      if (OBJ_txt2nid(f.c_str()) == NID_undef) {
        return bad(where + ": unknown subject field '" + f + "'");
      }
    }
    for (const auto& f : p.subject.optional) {
      if (OBJ_txt2nid(f.c_str()) == NID_undef) {
        return bad(where + ": unknown subject field '" + f + "'");
      }
    }
    for (const auto& r : p.key_algorithms) {
      if (r.algorithm != "RSA" && r.algorithm != "EC" && r.algorithm != "DSA" &&
          r.algorithm != "Ed25519" && r.algorithm != "Ed448") {
        return bad(where + ": unknown key algorithm '" + r.algorithm +
                   "' (RSA, EC, DSA, Ed25519, Ed448)");
      }
      if (r.max_bits && r.min_bits > r.max_bits) {
        return bad(where + ": " + r.algorithm + " min_bits is above max_bits");
      }
      for (const auto& curve : r.curves) {
        if (names::curve_nid(curve) == NID_undef) {
          return bad(where + ": unknown EC curve '" + curve + "'");
        }
      }
    }
    if (p.verification_minutes <= 0 || p.verification_check_after <= 0) {
      return bad(where + ": verification_minutes and verification_check_after must be positive");
    }
    for (const auto& role : p.roles_required) {
      if (role != "issue" && role != "recover") {
        return bad(where + ": unknown role '" + role + "' (issue, recover)");
      }
    }
    if (p.qc_statements) {
      for (const auto& t : p.qc_statements->types) {
        if (t != "esign" && t != "eseal" && t != "web") {
          return bad(where + ": unknown QC type '" + t + "' (esign, eseal, web)");
        }
      }
      for (const auto& t : p.qc_statements->allowed_types) {
        if (t != "esign" && t != "eseal" && t != "web") {
          return bad(where + ": unknown QC type '" + t + "' (esign, eseal, web)");
        }
      }
      for (const auto& e : p.qc_statements->ra_may_enter) {
        if (e != "types" && e != "pds" && e != "sscd") {
          return bad(where + ": ra_may_enter '" + e + "' is not one of types, pds, sscd");
        }
      }
    }
  }
  seen.clear();
  for (const auto& k : c.key_procedures) {
    std::string where = "key procedure '" + k.name + "'";
    if (!seen.insert(k.name).second) return bad(where + " is defined twice");
    if (k.type != "archive" && k.type != "recover") {
      return bad(where + ": type must be archive or recover, not '" + k.type + "'");
    }
    if (!c.certificate_procedure(k.certificate_procedure)) {
      return bad(where + ": unknown certificate procedure '" + k.certificate_procedure + "'");
    }
    if (k.type == "archive") {
      auto parsed = parse_ra_key_generation(k.key_algorithm);
      if (!parsed.is_ok()) return bad(where + ": key_algorithm: " + parsed.status().message());
    } else {
      if (k.scope != "last" && k.scope != "all") return bad(where + ": scope must be last or all");
      if (k.certificate != "new" && k.certificate != "reuse") {
        return bad(where + ": certificate must be new or reuse");
      }
    }
  }
  seen.clear();
  for (const auto& p : c.pin_procedures) {
    std::string where = "PIN procedure '" + p.name + "'";
    if (!seen.insert(p.name).second) return bad(where + " is defined twice");
    if (p.delivery != "entered" && p.delivery != "shown" && p.delivery != "mailer" &&
        p.delivery != "letter") {
      return bad(where + ": delivery must be entered, shown, mailer or letter");
    }
    if (p.min_length < 4 || p.max_length < p.min_length) {
      return bad(where + ": min_length must be at least 4 and at most max_length");
    }
  }
  seen.clear();
  for (const auto& t : c.token_procedures) {
    std::string where = "token procedure '" + t.name + "'";
    if (!seen.insert(t.name).second) return bad(where + " is defined twice");
    if (t.media != "smartcard" && t.media != "softtoken" && t.media != "any") {
      return bad(where + ": media must be smartcard, softtoken or any");
    }
    for (const auto& n : t.certificate_procedures) {
      if (!c.certificate_procedure(n)) return bad(where + ": unknown certificate procedure '" + n + "'");
    }
    for (const auto& n : t.key_procedures) {
      if (!c.key_procedure(n)) return bad(where + ": unknown key procedure '" + n + "'");
    }
    if (!t.pin_procedure.empty() && !c.pin_procedure(t.pin_procedure)) {
      return bad(where + ": unknown PIN procedure '" + t.pin_procedure + "'");
    }
  }
  if (!c.certificate_procedure(c.default_procedure)) {
    return bad("default_procedure '" + c.default_procedure + "' is not a certificate procedure");
  }
  auto ra = parse_ra_key_generation(c.ra_key_generation);
  if (!ra.is_ok()) return ra.status();
  if (c.crl_validity_hours <= 0) return bad("crl_validity_hours must be positive");
  if (c.smtp.port <= 0 || c.smtp.port > 65535) return bad("smtp.port must be 1..65535");
  if (c.smtp.timeout_seconds <= 0) return bad("smtp.timeout_seconds must be positive");
  if (!c.smtp.host.empty() && c.smtp.from.find('@') == std::string::npos) {
    return bad("smtp.from '" + c.smtp.from + "' is not an e-mail address");
  }
  if (c.public_base_url.rfind("http://", 0) != 0 && c.public_base_url.rfind("https://", 0) != 0) {
    return bad("public_base_url must start with http:// or https://");
  }
  return Status::ok();
}

}  // namespace

Result<CmConfig> config_from_json(const std::string& text) {
  CmConfig c;
  try {
    json j = json::parse(text);
    c.version = opt(j, "version", 1);
    if (c.version != 1) {
      return make_status(Errc::kUnsupported,
                         "configuration version " + std::to_string(c.version) + " is not supported");
    }
    const json& ca = j.at("ca");
    c.ca_chain = ca.at("chain").get<std::string>();
    c.ca_key = ca.at("key").get<std::string>();
    c.ca_key_passphrase_file = opt<std::string>(ca, "key_passphrase_file", "");
    c.ca_pkcs11_module = opt<std::string>(ca, "pkcs11_module", "");
    c.ca_pin_file = opt<std::string>(ca, "pin_file", "");
    const json& ka = j.at("key_archive");
    c.archive_certificate = ka.at("certificate").get<std::string>();
    c.archive_key = ka.at("key").get<std::string>();
    c.archive_key_passphrase_file = opt<std::string>(ka, "key_passphrase_file", "");
    const json& tls = j.at("tls");
    c.tls_certificate = tls.at("certificate").get<std::string>();
    c.tls_key = tls.at("key").get<std::string>();
    c.database = opt<std::string>(j, "database", "cm.db");
    c.public_base_url = opt<std::string>(j, "public_base_url", c.public_base_url);
    c.listen = opt<std::string>(j, "listen", c.listen);
    c.crl_validity_hours = opt(j, "crl_validity_hours", 24);
    if (j.contains("smtp")) {
      const json& smtp = j.at("smtp");
      c.smtp.host = opt<std::string>(smtp, "host", c.smtp.host);
      c.smtp.port = opt(smtp, "port", c.smtp.port);
      c.smtp.from = opt<std::string>(smtp, "from", c.smtp.from);
      c.smtp.timeout_seconds = opt(smtp, "timeout_seconds", c.smtp.timeout_seconds);
    }
    c.default_procedure = j.at("default_procedure").get<std::string>();
    c.ra_key_generation = j.at("client.ra-key-generation").get<std::string>();
    for (const auto& cp : j.at("certificate_procedures")) {
      CertificateProcedure p;
      p.name = cp.at("name").get<std::string>();
      p.description = opt<std::string>(cp, "description", "");
      if (cp.contains("subject")) {
        p.subject.required = opt<std::vector<std::string>>(cp["subject"], "required", {});
        p.subject.optional = opt<std::vector<std::string>>(cp["subject"], "optional", {});
      }
      p.key_usage = opt<std::vector<std::string>>(cp, "key_usage", {});
      p.extended_key_usage = opt<std::vector<std::string>>(cp, "extended_key_usage", {});
      p.validity_days = opt(cp, "validity_days", 365);
      for (const auto& r : opt<json>(cp, "key_algorithms", json::array())) {
        KeyAlgorithmRule rule;
        rule.algorithm = r.at("algorithm").get<std::string>();
        rule.min_bits = opt(r, "min_bits", 0);
        rule.max_bits = opt(r, "max_bits", 0);
        rule.curves = opt<std::vector<std::string>>(r, "curves", {});
        p.key_algorithms.push_back(rule);
      }
      p.officer = opt(cp, "officer", false);
      p.transport = opt(cp, "transport", false);
      p.email_verification = opt(cp, "email_verification", false);
      p.verification_minutes = opt(cp, "verification_minutes", p.verification_minutes);
      p.verification_check_after =
          opt(cp, "verification_check_after", p.verification_check_after);
      p.roles_required = opt<std::vector<std::string>>(cp, "roles_required", {"issue"});
      if (cp.contains("qc_statements") && !cp["qc_statements"].is_null()) {
        const json& q = cp["qc_statements"];
        QcStatements qc;
        qc.compliance = opt(q, "compliance", false);
        qc.sscd = opt(q, "sscd", false);
        qc.types = opt<std::vector<std::string>>(q, "types", {});
        qc.pds = pds_from_json(opt<json>(q, "pds", json::array()));
        qc.ra_may_enter = opt<std::vector<std::string>>(q, "ra_may_enter", {});
        qc.allowed_types = opt<std::vector<std::string>>(q, "allowed_types", {});
        qc.allowed_pds = pds_from_json(opt<json>(q, "allowed_pds", json::array()));
        p.qc_statements = qc;
      }
      c.certificate_procedures.push_back(p);
    }
    for (const auto& kp : opt<json>(j, "key_procedures", json::array())) {
      KeyProcedure k;
      k.name = kp.at("name").get<std::string>();
      k.description = opt<std::string>(kp, "description", "");
      k.type = kp.at("type").get<std::string>();
      k.certificate_procedure = kp.at("certificate_procedure").get<std::string>();
      k.key_algorithm = opt<std::string>(kp, "key_algorithm", "RSA:2048");
      k.scope = opt<std::string>(kp, "scope", "last");
      k.certificate = opt<std::string>(kp, "certificate", "new");
      k.roles_required = opt<std::vector<std::string>>(kp, "roles_required", {});
      c.key_procedures.push_back(k);
    }
    for (const auto& pp : opt<json>(j, "pin_procedures", json::array())) {
      PinProcedure p;
      p.name = pp.at("name").get<std::string>();
      p.delivery = pp.at("delivery").get<std::string>();
      p.min_length = opt(pp, "min_length", 6);
      p.max_length = opt(pp, "max_length", 8);
      p.puk = opt(pp, "puk", true);
      p.description = opt<std::string>(pp, "description", "");
      c.pin_procedures.push_back(p);
    }
    for (const auto& tp : opt<json>(j, "token_procedures", json::array())) {
      TokenProcedure t;
      t.name = tp.at("name").get<std::string>();
      t.description = opt<std::string>(tp, "description", "");
      t.media = tp.at("media").get<std::string>();
      t.certificate_procedures = opt<std::vector<std::string>>(tp, "certificate_procedures", {});
      t.key_procedures = opt<std::vector<std::string>>(tp, "key_procedures", {});
      t.pin_procedure = opt<std::string>(tp, "pin_procedure", "");
      if (tp.contains("tc_validation")) {
        t.tc_validation.required = opt(tp["tc_validation"], "required", false);
        t.tc_validation.trusted_issuers =
            opt<std::vector<std::string>>(tp["tc_validation"], "trusted_issuers", {});
      }
      t.ca_certificates_on_card = opt(tp, "ca_certificates_on_card", false);
      t.operator_pin_required = opt(tp, "operator_pin_required", false);
      c.token_procedures.push_back(t);
    }
  } catch (const json::exception& e) {
    return make_status(Errc::kInvalidArgument, std::string("configuration: ") + e.what());
  }
  PF_RETURN_IF_ERROR(check_config(c).with_context("configuration"));
  return c;
}

Result<CmConfig> load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return make_status(Errc::kNotFound, "cannot read " + path +
                                            " (is this a CM directory? create one with "
                                            "'persoflow cm init --dir DIR')");
  }
  std::stringstream ss;
  ss << in.rdbuf();
  auto r = config_from_json(ss.str());
  if (!r.is_ok()) return r.status().with_context(path);
  return r;
}

Status save_config(const CmConfig& config, const std::string& path) {
  PF_RETURN_IF_ERROR(check_config(config).with_context("configuration"));
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return make_status(Errc::kPermissionDenied, "cannot write " + path);
  out << config_to_json(config) << "\n";
  out.close();
  if (!out) return make_status(Errc::kInternal, "writing " + path + " failed");
  return Status::ok();
}

}  // namespace persoflow::cmhost
