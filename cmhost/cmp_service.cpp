// CMP service of the CM host; see cmp_service.hpp for what it guarantees.
#include "persoflow/cmhost/cmp_service.hpp"

#include <openssl/cmperr.h>
#include <openssl/objects.h>
#include <openssl/sha.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "persoflow/cmhost/reissue_cm.hpp"
#include "ca_crypto.hpp"
#include "persoflow/cmhost/pin_letters.hpp"
#include "persoflow/common/crash_point.hpp"
#include "persoflow/protocol/base64.hpp"
#include "persoflow/protocol/cm_info_types.hpp"
#include "persoflow/protocol/cmp_der.hpp"
#include "persoflow/protocol/crmf_archive.hpp"
#include "persoflow/protocol/ossl.hpp"

namespace persoflow::cmhost {
namespace {

namespace proto = persoflow::protocol;
using json = nlohmann::json;

// PKIBody choice numbers (RFC 4210 §5.1.2).
constexpr int kIr = 0, kIp = 1, kCr = 2, kCp = 3, kP10cr = 4, kKur = 7, kKup = 8, kRr = 11,
              kGenm = 21, kCertConf = 24, kError = 23;

bool is_cert_request(int body) {
  return body == kIr || body == kCr || body == kP10cr || body == kKur;
}
bool starts_transaction(int body) {
  return is_cert_request(body) || body == kRr || body == kGenm;
}
const char* body_name(int body) {
  switch (body) {
    case kIr: return "ir";
    case kCr: return "cr";
    case kP10cr: return "p10cr";
    case kKur: return "kur";
    case kRr: return "rr";
    case kGenm: return "genm";
    case kCertConf: return "certConf";
    case kError: return "error";
    case 25: return "pollReq";
    default: return "other";
  }
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
  std::string out = proto::hex(md, sizeof md);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string base64(std::string_view data) { return proto::base64_encode(data); }
Result<std::string> unbase64(const std::string& text) { return proto::base64_decode(text); }

OSSL_CMP_PKISI* rejection(int fail_bit, const std::string& text) {
  return OSSL_CMP_STATUSINFO_new(OSSL_CMP_PKISTATUS_rejection, 1 << fail_bit, text.c_str());
}

// Set when a CmHost call failed for a reason of its own (not a refusal of the request): the
// message's database transaction is rolled back.
thread_local bool t_internal_failure = false;

bool is_refusal(const Status& s) {
  for (Errc e : {Errc::kPermissionDenied, Errc::kRejected, Errc::kInvalidArgument,
                 Errc::kNotFound, Errc::kAlreadyExists, Errc::kUnsupported}) {
    if (s.code() == make_error_code(e)) return true;
  }
  if (s.code().category() == openssl_category()) return true;  // bad input OpenSSL refused
  return false;
}

int fail_bit_for(const Status& s) {
  if (!is_refusal(s)) t_internal_failure = true;
  if (s.code() == make_error_code(Errc::kPermissionDenied)) return OSSL_CMP_PKIFAILUREINFO_notAuthorized;
  if (s.code() == make_error_code(Errc::kRejected) ||
      s.code() == make_error_code(Errc::kInvalidArgument) ||
      s.code() == make_error_code(Errc::kNotFound)) {
    return OSSL_CMP_PKIFAILUREINFO_badCertTemplate;
  }
  return OSSL_CMP_PKIFAILUREINFO_systemFailure;
}

// Pushes text as the reason of an error the library turns into a CMP error message.
void raise_refusal(const std::string& text) {
  ERR_raise_data(ERR_LIB_CMP, CMP_R_REQUEST_REJECTED_BY_SERVER, "%s", text.c_str());
}

int pkisi_status(const OSSL_CMP_PKISI* si) {
  if (!si) return OSSL_CMP_PKISTATUS_accepted;
  unsigned char* der = nullptr;
  int len = i2d_OSSL_CMP_PKISI(si, &der);
  if (len <= 0) return -1;
  std::string bytes(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  auto top = proto::der_items(bytes);
  if (!top || top->size() != 1) return -1;
  auto fields = proto::der_items((*top)[0].content);
  if (!fields || fields->empty() || (*fields)[0].tag != V_ASN1_INTEGER) return -1;
  const auto& v = (*fields)[0].content;
  return v.size() == 1 ? static_cast<unsigned char>(v[0]) : -1;
}

int quiet_log(const char*, const char*, int, OSSL_CMP_severity, const char*) { return 1; }



}  // namespace

struct CmpService::Impl {
// One CMP transaction's server context and what the callbacks need of the current message.
struct Transaction {
  Impl* service = nullptr;
  std::mutex mu;
  proto::CmpSrvCtxPtr srv;
  std::string tid_hex;
  std::chrono::steady_clock::time_point last_used;
  // The message being processed.
  std::string procedure;
  std::string_view der;
  bool reached_callback = false;
  std::optional<std::string> refuse;
  // Writes of the current message, committed together with its stored answer.
  DeferredWrites deferred;
  // Across the transaction.
  std::string issued_serial;
  bool issued_now = false;
  // A certificate request answered 'waiting' (e-mail verification): the client polls with
  // pollReq (RFC 4210 5.3.22) in this context until it gets the certificate. Kept in memory
  // with the context: the request is run again once the code is confirmed.
  std::string waiting_request_der;
  int waiting_cert_req_id = 0;
  bool awaiting_poll = false;  // the current message's answer was 'waiting' or a pollRep
};

  CmHost& host;
  CmpServiceOptions options;
  proto::X509StorePtr trusted;
  mutable std::mutex map_mu;
  std::map<std::string, std::shared_ptr<Transaction>> open;
  std::atomic<unsigned> requests{0};
  std::mutex pin_letters_mu;
  std::unique_ptr<PinLetters> pin_letters;  // opened on the first PIN-letter genm

  Result<PinLetters*> letters() {
    std::lock_guard lock(pin_letters_mu);
    if (!pin_letters) {
      PF_ASSIGN_OR_RETURN(pin_letters, PinLetters::open(host));
    }
    return pin_letters.get();
  }

  Impl(CmHost& h, CmpServiceOptions o) : host(h), options(o) {
    proto::register_info_types();
    trusted.reset(X509_STORE_new());
    STACK_OF(X509)* chain = host.ca_chain();
    for (int i = 0; i < sk_X509_num(chain); ++i) X509_STORE_add_cert(trusted.get(), sk_X509_value(chain, i));
  }

  void audit(const std::string& actor, const std::string& action, const std::string& detail) {
    (void)host.audit(actor, action, detail);
  }

  Status setup(Transaction& t) {
    t.service = this;
    t.srv.reset(OSSL_CMP_SRV_CTX_new(nullptr, nullptr));
    if (!t.srv) return proto::openssl_failure("creating a CMP server context");
    OSSL_CMP_SRV_CTX_init(t.srv.get(), &t, &on_cert_request, &on_rr, &on_genm, &on_error,
                          &on_cert_conf, &on_poll_req);
    OSSL_CMP_SRV_CTX_set_grant_implicit_confirm(t.srv.get(), 1);
    OSSL_CMP_CTX* ctx = OSSL_CMP_SRV_CTX_get0_cmp_ctx(t.srv.get());
    if (!options.log_cmp_errors) OSSL_CMP_CTX_set_log_cb(ctx, &quiet_log);
    X509_STORE_up_ref(trusted.get());
    OSSL_CMP_CTX_set0_trustedStore(ctx, trusted.get());
    if (!OSSL_CMP_CTX_set1_cert(ctx, host.ca_certificate()) ||
        !OSSL_CMP_CTX_set1_pkey(ctx, host.ca_key())) {
      return proto::openssl_failure("setting the CA as CMP signer");
    }
    return Status::ok();
  }

  // The officer who signed the current message: the extraCert that verifies its protection and
  // that the CmHost knows as a current officer; then the roles.
  Result<Officer> authorize(std::string_view der, const OSSL_CMP_MSG* req,
                            const std::vector<std::string>& roles) {
    std::string why = "the request is not signed by an officer certificate of this CA";
    for (auto& cert : proto::cmp_extra_certs(der)) {
      proto::CmpCtxPtr probe(OSSL_CMP_CTX_new(nullptr, nullptr));
      OSSL_CMP_CTX_set_log_cb(probe.get(), &quiet_log);
      OSSL_CMP_CTX_set1_srvCert(probe.get(), cert.get());
      bool signer = OSSL_CMP_validate_msg(probe.get(), req) == 1;
      ERR_clear_error();
      if (!signer) continue;
      auto officer = host.officer_for(cert.get());
      if (!officer.is_ok()) {
        why = officer.status().message();
        continue;
      }
      for (const auto& role : roles) {
        if (!officer->has_role(role)) {
          return make_status(Errc::kPermissionDenied,
                             "officer '" + officer->name + "' lacks the role '" + role + "' (" +
                                 (role == kRoleIssue ? "Issue certificate" : role == kRoleRecover ? "Recover key" : role) +
                                 ")");
        }
      }
      return std::move(officer).value();
    }
    return make_status(Errc::kPermissionDenied, why);
  }

  void refused(Transaction& t, const std::string& actor, const std::string& what,
               const std::string& reason) {
    audit(actor.empty() ? "cmp" : actor, "refuse",
          what + " (transaction " + t.tid_hex + "): " + reason);
  }

  // ---- callbacks (run inside OSSL_CMP_SRV_process_request, after the library validated the
  // message's protection and its chain to the CA)

  static Transaction& tx(OSSL_CMP_SRV_CTX* srv) {
    return *static_cast<Transaction*>(OSSL_CMP_SRV_CTX_get0_custom_ctx(srv));
  }

  static OSSL_CMP_PKISI* on_cert_request(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* req,
                                         int cert_req_id, const OSSL_CRMF_MSG* crm,
                                         const X509_REQ* p10cr, X509** cert_out,
                                         STACK_OF(X509)** chain_out, STACK_OF(X509)** ca_pubs) {
    Transaction& t = tx(srv);
    return t.service->cert_request(t, req, cert_req_id, crm, p10cr, cert_out, chain_out, ca_pubs);
  }

  OSSL_CMP_PKISI* cert_request(Transaction& t, const OSSL_CMP_MSG* req, int cert_req_id,
                               const OSSL_CRMF_MSG* crm, const X509_REQ* p10cr, X509** cert_out,
                               STACK_OF(X509)** chain_out, STACK_OF(X509)** ca_pubs) {
    t.reached_callback = true;
    const int body = OSSL_CMP_MSG_get_bodytype(req);
    const std::string what = std::string(body_name(body));
    if (t.refuse) {
      refused(t, "", what, *t.refuse);
      return rejection(OSSL_CMP_PKIFAILUREINFO_badRequest, *t.refuse);
    }
    auto officer = authorize(t.der, req, {kRoleIssue});
    if (!officer.is_ok()) {
      refused(t, "", what, officer.status().message());
      return rejection(OSSL_CMP_PKIFAILUREINFO_notAuthorized, officer.status().message());
    }
    const std::string procedure_name =
        t.procedure.empty() ? host.config().default_procedure : t.procedure;
    const CertificateProcedure* procedure = host.procedure(procedure_name);
    if (!procedure) {
      std::string reason = "unknown certificate procedure '" + procedure_name + "'";
      refused(t, officer->name, what, reason);
      return rejection(OSSL_CMP_PKIFAILUREINFO_badCertTemplate, reason);
    }
    for (const auto& role : procedure->roles_required) {
      if (!officer->has_role(role)) {
        std::string reason = "officer '" + officer->name + "' lacks the role '" + role +
                             "' that procedure '" + procedure_name + "' requires";
        refused(t, officer->name, what, reason);
        return rejection(OSSL_CMP_PKIFAILUREINFO_notAuthorized, reason);
      }
    }
    IssueRequest request;
    request.procedure = procedure_name;
    request.requester = officer->name;
    request.transaction_id = t.tid_hex;
    request.idempotency_key = t.tid_hex + "/" + std::to_string(cert_req_id);
    request.confirmed = proto::cmp_asks_implicit_confirm(t.der);
    request.defer = &t.deferred;
    if (p10cr) {
      unsigned char* der = nullptr;
      int len = i2d_X509_REQ(p10cr, &der);
      std::string csr_der(reinterpret_cast<char*>(der), len > 0 ? static_cast<std::size_t>(len) : 0);
      OPENSSL_free(der);
      auto csr = host.validate_csr(csr_der);
      if (!csr.is_ok()) {
        refused(t, officer->name, what, csr.status().message());
        int bit = csr.status().message().find("signature") != std::string::npos
                      ? OSSL_CMP_PKIFAILUREINFO_badPOP
                      : OSSL_CMP_PKIFAILUREINFO_badDataFormat;
        return rejection(bit, csr.status().message());
      }
      request.subject = std::move(csr->subject);
      request.public_key = std::move(csr->public_key);
    } else {
      const OSSL_CRMF_CERTTEMPLATE* tmpl = OSSL_CRMF_MSG_get0_tmpl(crm);
      const X509_NAME* subject = tmpl ? OSSL_CRMF_CERTTEMPLATE_get0_subject(tmpl) : nullptr;
      proto::EvpPkeyPtr key = proto::crmf_template_public_key(crm);
      if (!subject || !key) {
        std::string reason = !subject ? "the certificate template has no subject"
                                      : "the certificate template has no usable public key";
        refused(t, officer->name, what, reason);
        return rejection(OSSL_CMP_PKIFAILUREINFO_badCertTemplate, reason);
      }
      request.subject.reset(X509_NAME_dup(subject));
      request.public_key.reset(key.release());
      auto envelope = proto::archive_envelope_of(crm);
      if (!envelope.is_ok()) {
        refused(t, officer->name, what, envelope.status().message());
        return rejection(OSSL_CMP_PKIFAILUREINFO_badRequest, envelope.status().message());
      }
      if (*envelope) request.archive_envelope = std::move(**envelope);
      if (body == kKur) {
        const OSSL_CRMF_CERTID* old_id = OSSL_CRMF_MSG_get0_regCtrl_oldCertID(crm);
        std::optional<storage::CertRecord> old;
        if (old_id) old = host.certificate(proto::serial_hex(OSSL_CRMF_CERTID_get0_serialNumber(old_id)));
        if (!old) {
          std::string reason = "kur: the certificate to update is not one this CA issued";
          refused(t, officer->name, what, reason);
          return rejection(OSSL_CMP_PKIFAILUREINFO_badCertId, reason);
        }
        auto old_cert = x509_from_der(old->der);
        if (old_cert.is_ok()) request.old_certificate = std::move(old_cert).value();
      }
    }
    // ---- reissue: e-mail verification before issuance (cmhost/email_verification.cpp)
    if (procedure->email_verification) {
      auto gate = gate_certificate_request(host, *procedure, t.tid_hex, request);
      if (!gate.is_ok()) {
        refused(t, officer->name, what, gate.status().message());
        return rejection(fail_bit_for(gate.status()), gate.status().message());
      }
      if (!gate->verified) {
        t.waiting_request_der = std::string(t.der);
        t.waiting_cert_req_id = cert_req_id;
        t.awaiting_poll = true;
        return OSSL_CMP_STATUSINFO_new(OSSL_CMP_PKISTATUS_waiting, 0, gate->text.c_str());
      }
    }
    // ---- end reissue
    auto issued = host.issue(std::move(request));
    if (!issued.is_ok()) {
      refused(t, officer->name, what, issued.status().message());
      return rejection(fail_bit_for(issued.status()), issued.status().message());
    }
    crash_point("cm.after_issue");
    t.issued_serial = issued->serial_hex;
    t.issued_now = true;
    X509_up_ref(issued->certificate.get());
    *cert_out = issued->certificate.get();
    STACK_OF(X509)* chain = sk_X509_new_null();
    STACK_OF(X509)* ca_chain = host.ca_chain();
    for (int i = 0; i < sk_X509_num(ca_chain); ++i) {
      X509_up_ref(sk_X509_value(ca_chain, i));
      sk_X509_push(chain, sk_X509_value(ca_chain, i));
    }
    *chain_out = chain;
    if (body == kIr) {
      STACK_OF(X509)* pubs = sk_X509_new_null();
      X509* root = sk_X509_value(ca_chain, sk_X509_num(ca_chain) - 1);
      X509_up_ref(root);
      sk_X509_push(pubs, root);
      *ca_pubs = pubs;
    }
    return OSSL_CMP_STATUSINFO_new(OSSL_CMP_PKISTATUS_accepted, 0, nullptr);
  }

  static OSSL_CMP_PKISI* on_rr(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* req,
                               const X509_NAME* issuer, const ASN1_INTEGER* serial) {
    Transaction& t = tx(srv);
    return t.service->rr(t, req, issuer, serial);
  }

  OSSL_CMP_PKISI* rr(Transaction& t, const OSSL_CMP_MSG* req, const X509_NAME* issuer,
                     const ASN1_INTEGER* serial) {
    t.reached_callback = true;
    if (t.refuse) {
      refused(t, "", "rr", *t.refuse);
      return rejection(OSSL_CMP_PKIFAILUREINFO_badRequest, *t.refuse);
    }
    auto officer = authorize(t.der, req, {kRoleIssue});
    if (!officer.is_ok()) {
      refused(t, "", "rr", officer.status().message());
      return rejection(OSSL_CMP_PKIFAILUREINFO_notAuthorized, officer.status().message());
    }
    if (!serial || !issuer || X509_NAME_cmp(issuer, X509_get_subject_name(host.ca_certificate())) != 0) {
      std::string reason = "rr: the certificate to revoke was not issued by this CA";
      refused(t, officer->name, "rr", reason);
      return rejection(OSSL_CMP_PKIFAILUREINFO_badCertId, reason);
    }
    int reason_code = proto::cmp_rr_reason(t.der).value_or(-1);
    if (reason_code < 0) reason_code = 0;  // unspecified
    std::string serial_text = proto::serial_hex(serial);
    auto normalized = normalize_serial_hex(serial_text);
    if (normalized.is_ok()) serial_text = *normalized;
    Status s = host.revoke(serial_text, reason_code, officer->name);
    if (!s.is_ok()) {
      if (!is_refusal(s)) t_internal_failure = true;
      refused(t, officer->name, "rr", s.message());
      int bit = s.code() == make_error_code(Errc::kAlreadyExists)
                    ? OSSL_CMP_PKIFAILUREINFO_certRevoked
                    : OSSL_CMP_PKIFAILUREINFO_badCertId;
      return rejection(bit, s.message());
    }
    return OSSL_CMP_STATUSINFO_new(OSSL_CMP_PKISTATUS_accepted, 0, nullptr);
  }

  static int on_poll_req(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* req, int cert_req_id,
                         OSSL_CMP_MSG** cert_req, int64_t* check_after) {
    Transaction& t = tx(srv);
    return t.service->poll_req(t, req, cert_req_id, cert_req, check_after);
  }

  // pollReq: a pollRep with checkAfter while the code is not confirmed; once it is (or once the
  // verification expired) the waiting request itself, which the library runs through
  // cert_request again: the gate lets it through to issuance (or refuses it as expired), and the
  // answer is the ip/cp/kup the client waits for.
  int poll_req(Transaction& t, const OSSL_CMP_MSG* req, int cert_req_id, OSSL_CMP_MSG** cert_req,
               int64_t* check_after) {
    t.reached_callback = true;
    *cert_req = nullptr;
    auto refuse = [&](const std::string& actor, const std::string& reason) {
      refused(t, actor, "pollReq", reason);
      raise_refusal(reason);
      return 0;
    };
    if (t.refuse) return refuse("", *t.refuse);
    auto officer = authorize(t.der, req, {kRoleIssue});
    if (!officer.is_ok()) return refuse("", officer.status().message());
    if (t.waiting_request_der.empty()) {
      return refuse(officer->name,
                    "pollReq: no certificate request of transaction " + t.tid_hex +
                        " is waiting here (none was answered 'waiting', or the CM host restarted "
                        "since: send the request again)");
    }
    if (cert_req_id != t.waiting_cert_req_id) {
      return refuse(officer->name, "pollReq: certReqId " + std::to_string(cert_req_id) +
                                       " is not the waiting request's (" +
                                       std::to_string(t.waiting_cert_req_id) + ")");
    }
    auto poll = poll_email_verification(host, t.tid_hex);
    if (!poll.is_ok()) return refuse(officer->name, poll.status().message());
    if (poll->state == VerificationPoll::State::kWaiting) {
      *check_after = poll->check_after;
      t.awaiting_poll = true;
      return 1;
    }
    *cert_req = proto::cmp_msg_from_der(t.waiting_request_der).release();
    if (!*cert_req) return refuse(officer->name, "pollReq: the waiting request is damaged");
    // The callbacks of the request run with the request's own bytes (its signer, its
    // implicitConfirm); the string outlives the processing of this message.
    t.der = t.waiting_request_der;
    return 1;
  }

  static int on_cert_conf(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* req, int cert_req_id,
                          const ASN1_OCTET_STRING* cert_hash, const OSSL_CMP_PKISI* si) {
    Transaction& t = tx(srv);
    return t.service->cert_conf(t, req, cert_req_id, cert_hash, si);
  }

  int cert_conf(Transaction& t, const OSSL_CMP_MSG* req, int, const ASN1_OCTET_STRING* cert_hash,
                const OSSL_CMP_PKISI* si) {
    t.reached_callback = true;
    if (t.refuse) {
      refused(t, "", "certConf", *t.refuse);
      raise_refusal(*t.refuse);
      return 0;
    }
    auto officer = authorize(t.der, req, {});
    if (!officer.is_ok()) {
      refused(t, "", "certConf", officer.status().message());
      raise_refusal(officer.status().message());
      return 0;
    }
    if (t.issued_serial.empty()) {
      raise_refusal("certConf: no certificate is waiting for confirmation in this transaction");
      return 0;
    }
    auto record = host.certificate(t.issued_serial);
    if (!record) {
      raise_refusal("certConf: the certificate of this transaction is unknown");
      return 0;
    }
    if (cert_hash) {
      auto cert = x509_from_der(record->der);
      int md_nid = NID_undef;
      if (cert.is_ok()) X509_get_signature_info(cert->get(), &md_nid, nullptr, nullptr, nullptr);
      const EVP_MD* md = EVP_get_digestbynid(md_nid == NID_undef ? NID_sha256 : md_nid);
      unsigned char digest[EVP_MAX_MD_SIZE];
      unsigned int len = 0;
      if (!cert.is_ok() || !md || !X509_digest(cert->get(), md, digest, &len) ||
          len != static_cast<unsigned>(ASN1_STRING_length(cert_hash)) ||
          std::memcmp(digest, ASN1_STRING_get0_data(cert_hash), len) != 0) {
        refused(t, officer->name, "certConf", "certHash does not match the issued certificate");
        ERR_raise_data(ERR_LIB_CMP, CMP_R_CERTHASH_UNMATCHED, "%s",
                       "certConf: certHash does not match the issued certificate");
        return 0;
      }
    }
    Status s = pkisi_status(si) == OSSL_CMP_PKISTATUS_accepted
                   ? host.confirm(t.issued_serial, officer->name)
                   : host.reject(t.issued_serial, officer->name);
    if (!s.is_ok()) {
      if (!is_refusal(s)) t_internal_failure = true;
      raise_refusal("certConf: " + s.message());
      return 0;
    }
    return 1;
  }

  static void on_error(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* req, const OSSL_CMP_PKISI*,
                       const ASN1_INTEGER*, const OSSL_CMP_PKIFREETEXT*) {
    Transaction& t = tx(srv);
    t.reached_callback = true;
    auto officer = t.service->authorize(t.der, req, {});
    if (!officer.is_ok() || t.issued_serial.empty()) return;
    // The requester gave up on the certificate: it is never published.
    (void)t.service->host.reject(t.issued_serial, officer->name);
  }

  static int on_genm(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* req,
                     const STACK_OF(OSSL_CMP_ITAV) * in, STACK_OF(OSSL_CMP_ITAV) * *out) {
    Transaction& t = tx(srv);
    return t.service->genm(t, req, in, out);
  }

  int genm(Transaction& t, const OSSL_CMP_MSG* req, const STACK_OF(OSSL_CMP_ITAV) * in,
           STACK_OF(OSSL_CMP_ITAV) * *out) {
    t.reached_callback = true;
    if (t.refuse) {
      refused(t, "", "genm", *t.refuse);
      raise_refusal(*t.refuse);
      return 0;
    }
    auto officer = authorize(t.der, req, {});
    if (!officer.is_ok()) {
      refused(t, "", "genm", officer.status().message());
      raise_refusal(officer.status().message());
      return 0;
    }
    *out = sk_OSSL_CMP_ITAV_new_null();
    for (int i = 0; i < sk_OSSL_CMP_ITAV_num(in); ++i) {
      OSSL_CMP_ITAV* itav = sk_OSSL_CMP_ITAV_value(in, i);
      char oid[128];
      OBJ_obj2txt(oid, sizeof oid, OSSL_CMP_ITAV_get0_type(itav), 1);
      ASN1_TYPE* value = OSSL_CMP_ITAV_get0_value(itav);
      std::string text;
      if (value && value->type == V_ASN1_OCTET_STRING) {
        text.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value->value.octet_string)),
                    static_cast<std::size_t>(ASN1_STRING_length(value->value.octet_string)));
      }
      auto answer = genm_item(t, *officer, oid, text);
      if (!answer.is_ok()) {
        if (!is_refusal(answer.status())) t_internal_failure = true;
        std::string reason = proto::info_type_name(oid) + ": " + answer.status().message();
        refused(t, officer->name, "genm", reason);
        raise_refusal(reason);
        sk_OSSL_CMP_ITAV_pop_free(*out, OSSL_CMP_ITAV_free);
        *out = nullptr;
        return 0;
      }
      ASN1_OCTET_STRING* os = ASN1_OCTET_STRING_new();
      ASN1_OCTET_STRING_set(os, reinterpret_cast<const unsigned char*>(answer->data()),
                            static_cast<int>(answer->size()));
      ASN1_TYPE* out_value = ASN1_TYPE_new();
      ASN1_TYPE_set(out_value, V_ASN1_OCTET_STRING, os);
      sk_OSSL_CMP_ITAV_push(*out, OSSL_CMP_ITAV_create(OBJ_txt2obj(oid, 1), out_value));
    }
    return 1;
  }

  // Certificates made by a keygen or recovery genm are published at once only when the request
  // asks for implicit confirmation (the header's implicitConfirm, as for ir/cr, or
  // "implicit_confirm": true); otherwise they wait for a persoflowCertConfirm genm.
  static bool asks_implicit_confirm(const Transaction& t, const json& request) {
    return proto::cmp_asks_implicit_confirm(t.der) || request.value("implicit_confirm", false);
  }

  Status need_role(const Officer& officer, const char* role) {
    if (officer.has_role(role)) return Status::ok();
    return make_status(Errc::kPermissionDenied,
                       "officer '" + officer.name + "' lacks the role '" + role + "' (" +
                           (std::string(role) == kRoleIssue ? "Issue certificate" : "Recover key") +
                           ")");
  }

  // The recipient of returned private keys: a certificate of this CA given in the request, or
  // the officer's own.
  Result<X509Ptr> recipient_of(const json& request, const Officer& officer) {
    if (request.contains("recipient")) {
      PF_ASSIGN_OR_RETURN(std::string der, proto::base64_decode(request.at("recipient").get<std::string>()));
      PF_ASSIGN_OR_RETURN(X509Ptr cert, x509_from_der(der));
      auto record = host.certificate(serial_hex(cert.get()));
      if (!record || record->der != der || record->status != storage::CertStatus::kValid) {
        return make_status(Errc::kRejected,
                           "the recipient certificate is not a valid certificate of this CA");
      }
      return cert;
    }
    auto record = host.certificate(officer.cert_serial_hex);
    if (!record) return make_status(Errc::kNotFound, "the officer's certificate is unknown");
    return x509_from_der(record->der);
  }

  static Result<KeySearch> key_search_of(const json& j) {
    KeySearch search;
    if (j.contains("serial")) {
      PF_ASSIGN_OR_RETURN(std::string serial, normalize_serial_hex(j.at("serial").get<std::string>()));
      search.serial_hex = serial;
    } else if (j.contains("cert_id")) {
      search.cert_id = j.at("cert_id").is_string() ? std::stoll(j.at("cert_id").get<std::string>())
                                                   : j.at("cert_id").get<std::int64_t>();
    } else if (j.contains("subject")) {
      search.subject = j.at("subject").get<std::string>();
      search.subject_substring = j.value("substring", false);
    } else {
      return make_status(Errc::kInvalidArgument,
                         "a key search names one of serial (hex), cert_id (decimal) or subject");
    }
    return search;
  }

  // The key procedure a genm names ("key_procedure"), checked for its type and roles.
  Result<const KeyProcedure*> key_procedure_of(const json& request, const std::string& type,
                                               const Officer& officer) {
    if (!request.contains("key_procedure")) return static_cast<const KeyProcedure*>(nullptr);
    std::string name = request.at("key_procedure").get<std::string>();
    const KeyProcedure* kp = host.config().key_procedure(name);
    if (!kp) return make_status(Errc::kNotFound, "unknown key procedure '" + name + "'");
    if (kp->type != type) {
      return make_status(Errc::kRejected,
                         "key procedure '" + name + "' is of type " + kp->type + ", not " + type);
    }
    for (const auto& role : kp->roles_required) {
      if (!officer.has_role(role)) {
        return make_status(Errc::kPermissionDenied, "officer '" + officer.name +
                                                        "' lacks the role '" + role +
                                                        "' that key procedure '" + name +
                                                        "' requires");
      }
    }
    return kp;
  }

  static json key_json(const ArchivedKeyInfo& k) {
    return json{{"key_id", k.key_id},         {"cert_id", k.cert_id},
                {"serial", k.serial_hex},     {"subject", k.subject},
                {"not_before", k.not_before}, {"not_after", k.not_after},
                {"status", storage::to_string(k.cert_status)}, {"archived_at", k.archived_at}};
  }

  // persoflowTcValidation: without "certificate", the token procedure's trusted TC issuers (so
  // the RA refuses an untrusted TC before anything else); with it, whether that TC is authentic
  // (CmHost::validate_transport_certificate). An invalid TC is an answer, not a refusal.
  Result<std::string> tc_validation(const json& request) {
    if (!request.contains("token_procedure")) {
      return make_status(Errc::kInvalidArgument, "the request names no token_procedure");
    }
    const std::string name = request.at("token_procedure").get<std::string>();
    const TokenProcedure* tp = host.config().token_procedure(name);
    if (!tp) return make_status(Errc::kNotFound, "unknown token procedure '" + name + "'");
    if (!request.contains("certificate")) {
      json issuers = json::array();
      for (const auto& file : tp->tc_validation.trusted_issuers) {
        const std::string path =
            file.empty() || file[0] == '/' ? file : host.dir() + "/" + file;
        std::ifstream in(path, std::ios::binary);
        std::ostringstream pem;
        pem << in.rdbuf();
        if (!in) return make_status(Errc::kInternal, "cannot read trusted TC issuers " + path);
        PF_ASSIGN_OR_RETURN(auto certs, crypto::load_pem_chain(pem.str()));
        for (const auto& c : certs) {
          issuers.push_back({{"subject", name_to_string(X509_get_subject_name(c.get()))},
                             {"serial", serial_hex(c.get())}});
        }
      }
      return json{{"token_procedure", name},
                  {"required", tp->tc_validation.required},
                  {"trusted_issuers", issuers}}
          .dump();
    }
    PF_ASSIGN_OR_RETURN(std::string der, unbase64(request.at("certificate").get<std::string>()));
    PF_ASSIGN_OR_RETURN(X509Ptr tc, x509_from_der(der));
    Status valid = host.validate_transport_certificate(name, tc.get());
    if (!valid.is_ok() && valid.code() != make_error_code(Errc::kRejected)) return valid;
    json answer = {{"token_procedure", name},
                   {"serial", serial_hex(tc.get())},
                   {"subject", name_to_string(X509_get_subject_name(tc.get()))},
                   {"valid", valid.is_ok()}};
    if (!valid.is_ok()) answer["reason"] = valid.message();
    return answer.dump();
  }

  Result<std::string> genm_item(Transaction& t, const Officer& officer, const std::string& oid,
                                const std::string& text) {
    json request;
    try {
      request = text.empty() ? json::object() : json::parse(text);
      if (!request.is_object()) throw std::runtime_error("not a JSON object");
    } catch (const std::exception& e) {
      return make_status(Errc::kInvalidArgument,
                         std::string("the value is not a JSON object: ") + e.what());
    }
    // ---- reissue: persoflowCertificateSearch, persoflowEmailVerification (certificate_search.cpp)
    if (auto answer = reissue_genm_item(host, officer, oid, text)) return std::move(*answer);
    try {
      if (oid == proto::kOidProcedureList) {
        json procedures = json::array();
        for (const auto& name : host.procedures_for(officer)) {
          const CertificateProcedure* p = host.procedure(name);
          if (!p) continue;
          json algs = json::array();
          for (const auto& r : p->key_algorithms) {
            algs.push_back({{"algorithm", r.algorithm}, {"min_bits", r.min_bits},
                            {"max_bits", r.max_bits}, {"curves", r.curves}});
          }
          procedures.push_back({{"name", p->name},
                                {"description", p->description},
                                {"subject_required", p->subject.required},
                                {"subject_optional", p->subject.optional},
                                {"key_usage", p->key_usage},
                                {"extended_key_usage", p->extended_key_usage},
                                {"validity_days", p->validity_days},
                                {"key_algorithms", algs},
                                {"roles_required", p->roles_required},
                                // reissue: e-mail verification (docs/reissue.md)
                                {"email_verification", p->email_verification},
                                {"verification_minutes", p->verification_minutes},
                                {"verification_check_after", p->verification_check_after}});
        }
        json key_procedures = json::array();
        for (const auto& k : host.config().key_procedures) {
          bool allowed = true;
          for (const auto& role : k.roles_required) allowed = allowed && officer.has_role(role);
          if (!allowed) continue;
          key_procedures.push_back({{"name", k.name}, {"type", k.type},
                                    {"certificate_procedure", k.certificate_procedure},
                                    {"key_algorithm", k.key_algorithm}, {"scope", k.scope},
                                    {"certificate", k.certificate}});
        }
        json token_procedures = json::array();
        for (const auto& tp : host.config().token_procedures) {
          token_procedures.push_back({{"name", tp.name}, {"media", tp.media},
                                      {"certificate_procedures", tp.certificate_procedures},
                                      {"key_procedures", tp.key_procedures},
                                      {"pin_procedure", tp.pin_procedure},
                                      {"ca_certificates_on_card", tp.ca_certificates_on_card},
                                      {"operator_pin_required", tp.operator_pin_required}});
        }
        json pin_procedures = json::array();
        for (const auto& pp : host.config().pin_procedures) {
          pin_procedures.push_back({{"name", pp.name}, {"delivery", pp.delivery},
                                    {"min_length", pp.min_length},
                                    {"max_length", pp.max_length}});
        }
        json answer = {{"officer", officer.name},
                       {"roles", officer.roles},
                       {"default", host.config().default_procedure},
                       {"ra_key_generation", host.config().ra_key_generation},
                       {"certificate_procedures", procedures},
                       {"key_procedures", key_procedures},
                       {"token_procedures", token_procedures},
                       {"pin_procedures", pin_procedures}};
        return answer.dump();
      }
      if (oid == proto::kOidKeySearch) {
        PF_RETURN_IF_ERROR(need_role(officer, kRoleRecover));
        PF_ASSIGN_OR_RETURN(KeySearch search, key_search_of(request));
        PF_ASSIGN_OR_RETURN(auto keys, host.search_keys(search));
        json list = json::array();
        for (const auto& k : keys) list.push_back(key_json(k));
        return json{{"keys", list}}.dump();
      }
      if (oid == proto::kOidKeyRecovery) {
        PF_RETURN_IF_ERROR(need_role(officer, kRoleRecover));
        RecoverRequest r;
        PF_ASSIGN_OR_RETURN(r.search, key_search_of(request.value("search", json::object())));
        PF_ASSIGN_OR_RETURN(const KeyProcedure* kp, key_procedure_of(request, "recover", officer));
        r.scope = request.value("scope", kp ? kp->scope : std::string("last"));
        r.certificate = request.value("certificate", kp ? kp->certificate : std::string("new"));
        r.procedure = request.value("procedure", kp ? kp->certificate_procedure : t.procedure);
        r.requester = officer.name;
        PF_ASSIGN_OR_RETURN(r.recipient, recipient_of(request, officer));
        r.transaction_id = t.tid_hex;
        r.idempotency_key = t.tid_hex + "/recover";
        r.confirmed = asks_implicit_confirm(t, request);
        PF_ASSIGN_OR_RETURN(auto recovered, host.recover(std::move(r)));
        json list = json::array();
        for (const auto& k : recovered) {
          json item = key_json(k.key);
          item["certificate"] = proto::base64_encode(k.certificate.der);
          item["certificate_serial"] = k.certificate.serial_hex;
          item["certificate_id"] = k.certificate.cert_id;
          item["certificate_status"] = storage::to_string(k.certificate.status);
          item["envelope"] = proto::base64_encode(k.envelope_der);
          list.push_back(item);
        }
        audit(officer.name, "cmp-recover",
              "transaction " + t.tid_hex + ": " + std::to_string(recovered.size()) + " key(s)");
        return json{{"keys", list}, {"transaction_id", t.tid_hex}}.dump();
      }
      if (oid == proto::kOidPinLetterQueue) {
        PF_RETURN_IF_ERROR(need_role(officer, kRoleIssue));
        PF_ASSIGN_OR_RETURN(PinLetters * l, letters());
        std::string pin = request.at("pin").get<std::string>();
        if (request.contains("puk")) {  // a card's second PIN: its own line of the same letter
          std::string puk = request.at("puk").get<std::string>();
          pin += "\n" + puk;
          OPENSSL_cleanse(puk.data(), puk.size());
        }
        // The RA's own idempotency key: it does not keep this request (the PIN is in it), so a
        // resend is a new message with the same key.
        const std::string key = request.contains("idempotency_key")
                                    ? officer.name + "/" + request.at("idempotency_key").get<std::string>()
                                    : t.tid_hex + "/pin-letter";
        auto letter = l->queue(request.value("holder", ""), request.at("address"),
                               request.value("token", ""), pin, key, officer.name);
        OPENSSL_cleanse(pin.data(), pin.size());
        if (!letter) return letter.status();
        json answer = {{"letter_id", letter->letter.letter_id}, {"state", letter->letter.state}};
        if (!letter->replayed) {
          answer["notice"] = letter->notice.is_ok() ? "mailed" : letter->notice.message();
        }
        return answer.dump();
      }
      if (oid == proto::kOidPinLetterBind) {
        PF_RETURN_IF_ERROR(need_role(officer, kRoleIssue));
        PF_ASSIGN_OR_RETURN(PinLetters * l, letters());
        PF_ASSIGN_OR_RETURN(X509Ptr recipient, recipient_of(request, officer));
        const std::string id = request.at("letter_id");
        // "puk": the token has two PINs, so the letter must carry a PUK too. The binding is
        // committed with this answer: a resent request gets the stored answer, never a refusal
        // of a letter it bound itself.
        PF_ASSIGN_OR_RETURN(std::string envelope,
                            l->bind(id, recipient.get(), request.value("puk", false),
                                    t.tid_hex + "/pin-letter", officer.name, &t.deferred));
        return json{{"letter_id", id}, {"envelope", base64(envelope)}}.dump();
      }
      if (oid == proto::kOidServerKeygen) {
        PF_RETURN_IF_ERROR(need_role(officer, kRoleIssue));
        PF_ASSIGN_OR_RETURN(const KeyProcedure* kp, key_procedure_of(request, "archive", officer));
        GenerateArchiveRequest g;
        g.procedure = request.value("procedure", kp ? kp->certificate_procedure : t.procedure);
        if (g.procedure.empty()) g.procedure = host.config().default_procedure;
        g.key_algorithm = request.value("key_algorithm", kp ? kp->key_algorithm : std::string());
        if (!request.contains("subject")) {
          return make_status(Errc::kInvalidArgument, "the request names no subject");
        }
        PF_ASSIGN_OR_RETURN(g.subject, parse_name(request.at("subject").get<std::string>()));
        g.requester = officer.name;
        PF_ASSIGN_OR_RETURN(g.recipient, recipient_of(request, officer));
        g.transaction_id = t.tid_hex;
        g.idempotency_key = t.tid_hex + "/keygen";
        g.confirmed = asks_implicit_confirm(t, request);
        PF_ASSIGN_OR_RETURN(GeneratedKey k, host.generate_and_archive(std::move(g)));
        return json{{"key_id", k.key_id},
                    {"cert_id", k.certificate.cert_id},
                    {"serial", k.certificate.serial_hex},
                    {"certificate", proto::base64_encode(k.certificate.der)},
                    {"envelope", proto::base64_encode(k.envelope_der)},
                    {"status", storage::to_string(k.certificate.status)},
                    {"transaction_id", t.tid_hex},
                    {"replayed", k.certificate.replayed}}
            .dump();
      }
      if (oid == proto::kOidTcValidation) {
        PF_RETURN_IF_ERROR(need_role(officer, kRoleIssue));
        return tc_validation(request);
      }
      if (oid == proto::kOidCertConfirm) {
        if (!request.contains("transaction_id")) {
          return make_status(Errc::kInvalidArgument, "the request names no transaction_id");
        }
        std::vector<std::string> serials;
        for (const auto& s : request.value("serials", json::array())) {
          serials.push_back(s.get<std::string>());
        }
        const bool accept = request.value("accept", true);
        PF_ASSIGN_OR_RETURN(auto done,
                            host.confirm_transaction(request.at("transaction_id").get<std::string>(),
                                                     serials, accept, officer.name));
        return json{{"transaction_id", request.at("transaction_id")},
                    {accept ? "confirmed" : "rejected", done}}
            .dump();
      }
    } catch (const json::exception& e) {
      return make_status(Errc::kInvalidArgument, std::string("bad request field: ") + e.what());
    } catch (const std::invalid_argument& e) {
      return make_status(Errc::kInvalidArgument, std::string("bad request field: ") + e.what());
    } catch (const std::out_of_range& e) {
      return make_status(Errc::kInvalidArgument, std::string("bad request field: ") + e.what());
    }
    return make_status(Errc::kUnsupported, "unsupported info type " + oid);
  }

  // ---- the request path

  std::shared_ptr<Transaction> find(const std::string& tid_hex) {
    std::lock_guard lock(map_mu);
    auto it = open.find(tid_hex);
    return it == open.end() ? nullptr : it->second;
  }

  Result<std::shared_ptr<Transaction>> find_or_create(const std::string& tid_hex, bool* created) {
    std::lock_guard lock(map_mu);
    auto it = open.find(tid_hex);
    *created = false;
    if (it != open.end()) return it->second;
    auto t = std::make_shared<Transaction>();
    PF_RETURN_IF_ERROR(setup(*t));
    t->tid_hex = tid_hex;
    open.emplace(tid_hex, t);
    *created = true;
    return t;
  }

  void drop(const std::string& tid_hex, const Transaction* t) {
    std::lock_guard lock(map_mu);
    auto it = open.find(tid_hex);
    if (it != open.end() && it->second.get() == t) open.erase(it);
  }

  void sweep() {
    if (++requests % 256 != 0) return;
    auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(map_mu);
    for (auto it = open.begin(); it != open.end();) {
      std::unique_lock tl(it->second->mu, std::try_to_lock);
      if (tl.owns_lock() && now - it->second->last_used > options.transaction_timeout) {
        tl.unlock();
        it = open.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Runs one message through a transaction's context; returns the answer's DER.
  Result<std::string> process(Transaction& t, const OSSL_CMP_MSG* msg, const std::string& procedure,
                              std::string_view der, std::optional<std::string> refuse) {
    t.procedure = procedure;
    t.der = der;
    t.reached_callback = false;
    t.issued_now = false;
    t.awaiting_poll = false;
    t.refuse = std::move(refuse);
    t.deferred.writes.clear();
    t.last_used = std::chrono::steady_clock::now();
    ERR_clear_error();
    proto::CmpMsgPtr rsp(OSSL_CMP_SRV_process_request(t.srv.get(), msg));
    ERR_clear_error();
    t.der = {};
    if (!rsp) return make_status(Errc::kInternal, "no CMP answer could be made");
    return proto::cmp_msg_to_der(rsp.get());
  }

  // The answer to a certificate request with its PKIStatusInfo replaced by a rejection with our
  // reason, protected again with the CA key (the same protectionAlg as the library chose).
  Result<std::string> with_status(const std::string& answer, int fail_bit, const std::string& text) {
    using proto::der_items;
    using proto::der_tlv;
    auto top = der_items(answer);
    if (!top || top->size() != 1) return make_status(Errc::kInternal, "bad answer");
    auto parts = der_items((*top)[0].content);
    if (!parts || parts->size() < 3) return make_status(Errc::kInternal, "bad answer");
    const auto& header = (*parts)[0];
    const auto& body = (*parts)[1];
    auto rep = der_items(body.content);  // [n] EXPLICIT CertRepMessage
    if (!rep || rep->size() != 1) return make_status(Errc::kInternal, "bad answer body");
    auto rep_fields = der_items((*rep)[0].content);
    if (!rep_fields || rep_fields->empty()) return make_status(Errc::kInternal, "bad answer body");
    const auto& responses = rep_fields->back();
    auto list = der_items(responses.content);
    if (!list || list->size() != 1) return make_status(Errc::kInternal, "bad answer body");
    auto response = der_items((*list)[0].content);
    if (!response || response->size() < 2) return make_status(Errc::kInternal, "bad answer body");
    OSSL_CMP_PKISI* si = rejection(fail_bit, text);
    unsigned char* si_der = nullptr;
    int si_len = i2d_OSSL_CMP_PKISI(si, &si_der);
    OSSL_CMP_PKISI_free(si);
    if (si_len <= 0) return proto::openssl_failure("encoding a PKIStatusInfo");
    std::string new_response((*response)[0].whole);
    new_response.append(reinterpret_cast<char*>(si_der), static_cast<std::size_t>(si_len));
    OPENSSL_free(si_der);
    for (std::size_t i = 2; i < response->size(); ++i) new_response.append((*response)[i].whole);
    std::string new_rep;
    for (std::size_t i = 0; i + 1 < rep_fields->size(); ++i) new_rep.append((*rep_fields)[i].whole);
    new_rep += der_tlv(0x30, der_tlv(0x30, new_response));
    std::string new_body = der_tlv(static_cast<unsigned char>(body.whole[0]), der_tlv(0x30, new_rep));
    std::string protected_part = der_tlv(0x30, std::string(header.whole) + new_body);
    // The protectionAlg ([1] in the header) names the digest.
    auto header_fields = der_items(header.content);
    const X509_ALGOR* alg = nullptr;
    X509_ALGOR* parsed = nullptr;
    for (std::size_t i = 3; header_fields && i < header_fields->size(); ++i) {
      const auto& f = (*header_fields)[i];
      if (f.cls == V_ASN1_CONTEXT_SPECIFIC && f.tag == 1) {
        const auto* p = reinterpret_cast<const unsigned char*>(f.content.data());
        parsed = d2i_X509_ALGOR(nullptr, &p, static_cast<long>(f.content.size()));
        alg = parsed;
      }
    }
    if (!alg) return make_status(Errc::kInternal, "answer without protectionAlg");
    int md_nid = NID_undef;
    int pk_nid = NID_undef;
    OBJ_find_sigid_algs(OBJ_obj2nid(alg->algorithm), &md_nid, &pk_nid);
    X509_ALGOR_free(parsed);
    const EVP_MD* md = md_nid == NID_undef ? nullptr : EVP_get_digestbynid(md_nid);
    EVP_MD_CTX* mctx = EVP_MD_CTX_new();
    std::size_t sig_len = 0;
    std::string sig;
    bool ok = EVP_DigestSignInit(mctx, nullptr, md, nullptr, host.ca_key()) == 1 &&
              EVP_DigestSign(mctx, nullptr, &sig_len,
                             reinterpret_cast<const unsigned char*>(protected_part.data()),
                             protected_part.size()) == 1;
    if (ok) {
      sig.resize(sig_len);
      ok = EVP_DigestSign(mctx, reinterpret_cast<unsigned char*>(sig.data()), &sig_len,
                          reinterpret_cast<const unsigned char*>(protected_part.data()),
                          protected_part.size()) == 1;
      sig.resize(sig_len);
    }
    EVP_MD_CTX_free(mctx);
    if (!ok) return proto::openssl_failure("signing the answer");
    std::string message = std::string(header.whole) + new_body +
                          der_tlv(0xA0, der_tlv(0x03, std::string(1, '\0') + sig));
    for (std::size_t i = 2; i < parts->size(); ++i) {
      const auto& part = (*parts)[i];
      if (part.cls == V_ASN1_CONTEXT_SPECIFIC && part.tag == 1) message.append(part.whole);
    }
    return der_tlv(0x30, message);
  }

  // A one-message context that is never kept: requests without a transactionID and refusals of a
  // reused transactionID.
  HttpReply process_once(const OSSL_CMP_MSG* msg, const std::string& procedure,
                         const std::string& der, std::optional<std::string> refuse,
                         const std::string& tid_hex) {
    Transaction t;
    Status s = setup(t);
    if (!s.is_ok()) return HttpReply{500, "text/plain", s.message() + "\n"};
    t.tid_hex = tid_hex;
    auto rsp = process(t, msg, procedure, der, std::move(refuse));
    if (!rsp.is_ok()) return HttpReply{500, "text/plain", rsp.status().message() + "\n"};
    return HttpReply{200, "application/pkixcmp", std::move(rsp).value()};
  }

  // After a restart, a stored certificate response is replayed to a client that will send a
  // certConf: rebuild the server context that expects it (issuance is idempotent, so running
  // the request again makes no second certificate) and make it expect the stored answer's nonce.
  void prime(const std::string& tid_hex, const OSSL_CMP_MSG* msg, const std::string& procedure,
             const std::string& der, const std::string& stored) {
    auto body = proto::cmp_body_type(stored);
    if (!body || (*body != kIp && *body != kCp && *body != kKup) ||
        proto::cmp_asks_implicit_confirm(stored)) {
      return;
    }
    bool created = false;
    auto t = find_or_create(tid_hex, &created);
    if (!t.is_ok() || !created) return;
    std::lock_guard lock((*t)->mu);
    auto rsp = process(**t, msg, procedure, der, std::nullopt);
    (*t)->deferred.writes.clear();  // the certificate is stored already: issuance replayed it
    auto nonce = proto::cmp_sender_nonce(stored);
    if (!rsp.is_ok() || !nonce || (*t)->issued_serial.empty()) {
      drop(tid_hex, t->get());
      return;
    }
    proto::Asn1OctetStringPtr os(ASN1_OCTET_STRING_new());
    ASN1_OCTET_STRING_set(os.get(), reinterpret_cast<const unsigned char*>(nonce->data()),
                          static_cast<int>(nonce->size()));
    OSSL_CMP_CTX_set1_senderNonce(OSSL_CMP_SRV_CTX_get0_cmp_ctx((*t)->srv.get()), os.get());
  }

  HttpReply handle(const std::string& procedure, const std::string& der) {
    sweep();
    ERR_clear_error();
    proto::CmpMsgPtr msg = proto::cmp_msg_from_der(der);
    auto body = proto::cmp_body_type(der);
    if (!msg || !body) {
      ERR_clear_error();
      return HttpReply{400, "text/plain; charset=utf-8", "bad request: not a CMP PKIMessage\n"};
    }
    // No database transaction spans the message: verifying, signing and answering run in
    // parallel on the server's threads, and only the writes take the store's lock, each briefly.
    // A certificate is committed in one short transaction together with the answer that carries
    // it (handle_message).
    bool issued = false;
    t_internal_failure = false;
    HttpReply reply = handle_message(procedure, der, msg.get(), *body, &issued);
    if (issued) crash_point("cm.after_issue_before_answer");
    return reply;
  }

  // Stores the answer of a message under its transaction key, in one database transaction with
  // the writes the message held back (its certificate). A concurrent duplicate that answered
  // first wins: its answer replaces ours and our writes are not made.
  Status store_answer(Transaction& t, const std::string& key, const std::string& request_digest,
                      bool initial, std::string* answer) {
    storage::TransactionRecord record;
    record.transaction_id = key;
    record.request_digest = request_digest;
    record.state = "answered";
    record.response_der = *answer;
    std::string prior_answer;
    Status st = host.store().atomically([&]() -> Status {
      PF_ASSIGN_OR_RETURN(auto prior, host.store().begin_transaction(record));
      if (prior) {
        if (prior->request_digest == request_digest && !prior->response_der.empty()) {
          prior_answer = prior->response_der;
          return Status::ok();
        }
        if (prior->request_digest == request_digest || !initial) {
          PF_RETURN_IF_ERROR(host.store().update_transaction(key, "answered", *answer));
        }
      }
      for (const auto& write : t.deferred.writes) PF_RETURN_IF_ERROR(write());
      return Status::ok();
    });
    t.deferred.writes.clear();
    if (st.is_ok() && !prior_answer.empty()) *answer = std::move(prior_answer);
    return st;
  }

  HttpReply handle_message(const std::string& procedure, const std::string& der,
                           const OSSL_CMP_MSG* msg, int body_type, bool* issued) {
    const int* body = &body_type;
    auto tid = proto::cmp_transaction_id(der);
    if (!tid || tid->empty()) return process_once(msg, procedure, der, std::nullopt, "");
    const std::string tid_hex = proto::hex(reinterpret_cast<const unsigned char*>(tid->data()), tid->size());
    const bool initial = starts_transaction(*body);
    const std::string key = initial ? tid_hex : tid_hex + "/" + body_name(*body);
    const std::string digest = sha256_hex(der);
    // The path is part of the request: the same bytes sent to another procedure are another
    // request.
    const std::string request_digest = sha256_hex(digest + "|" + procedure);

    auto existing = host.store().transaction(key);
    if (!existing.is_ok()) {
      return HttpReply{503, "text/plain", "CM store unavailable: " + existing.status().message() + "\n"};
    }
    if (existing->has_value()) {
      const auto& rec = **existing;
      // A certConf or error with other bytes (a client that rebuilt it after a lost answer) goes
      // to the transaction's context again: confirming a certificate twice is harmless. A new
      // request under a used transactionID is refused.
      if (rec.request_digest != request_digest && initial) {
        return process_once(msg, procedure, der,
                            "transactionID " + tid_hex + " reused with a different request",
                            tid_hex);
      }
      if (rec.request_digest == request_digest && !rec.response_der.empty()) {
        if (is_cert_request(*body) && !find(tid_hex)) prime(tid_hex, msg, procedure, der, rec.response_der);
        return HttpReply{200, "application/pkixcmp", rec.response_der};
      }
    }

    // OpenSSL checks a p10cr's CSR signature before our callback: check the CSR first, so that
    // an officer's bad CSR is refused with our reason.
    std::optional<std::pair<int, std::string>> csr_refusal;
    if (*body == kP10cr) {
      auto csr_der = proto::cmp_body_content(der);
      auto csr = csr_der ? host.validate_csr(*csr_der)
                         : Result<Csr>(make_status(Errc::kInvalidArgument, "CSR is malformed"));
      if (!csr.is_ok()) {
        auto officer = authorize(der, msg, {});
        if (officer.is_ok()) {
          int bit = csr.status().message().find("signature") != std::string::npos
                        ? OSSL_CMP_PKIFAILUREINFO_badPOP
                        : OSSL_CMP_PKIFAILUREINFO_badDataFormat;
          csr_refusal.emplace(bit, csr.status().message());
          audit(officer->name, "refuse",
                "p10cr (transaction " + tid_hex + "): " + csr.status().message());
        }
      }
    }
    bool created = false;
    auto found = find_or_create(tid_hex, &created);
    if (!found.is_ok()) return HttpReply{500, "text/plain", found.status().message() + "\n"};
    std::shared_ptr<Transaction> t = std::move(found).value();
    std::unique_lock lock(t->mu);
    auto rsp = process(*t, msg, procedure, der, std::nullopt);
    if (rsp.is_ok() && csr_refusal) {
      // OpenSSL refused the CSR's proof of possession itself, with its own terse reason; put ours
      // into the answer and sign it again.
      auto rewritten = with_status(*rsp, csr_refusal->first, csr_refusal->second);
      if (rewritten.is_ok()) rsp = std::move(rewritten).value();
    }
    if (!rsp.is_ok()) {
      lock.unlock();
      drop(tid_hex, t.get());
      return HttpReply{500, "text/plain", rsp.status().message() + "\n"};
    }
    std::string answer = std::move(rsp).value();
    if (t->reached_callback) {
      // Store the answer before sending it: a retry of these bytes gets these bytes. Not when the
      // CM host failed inside: nothing of it is committed, and the client sends the request again.
      Status stored = t_internal_failure
                          ? make_status(Errc::kUnavailable, "the CM host failed while answering")
                          : store_answer(*t, key, request_digest, initial, &answer);
      if (!stored.is_ok()) {
        t->deferred.writes.clear();
        lock.unlock();
        drop(tid_hex, t.get());
        return HttpReply{503, "text/plain; charset=utf-8",
                         "CM host unavailable: " + stored.message() +
                             "; send the same request again\n"};
      }
      *issued = t->issued_now;
    }
    // Keep the context only while the transaction waits for certConf.
    auto answer_body = proto::cmp_body_type(answer).value_or(kError);
    bool waiting = ((answer_body == kIp || answer_body == kCp || answer_body == kKup) &&
                    t->issued_now && !proto::cmp_asks_implicit_confirm(answer)) ||
                   t->awaiting_poll;
    lock.unlock();
    if (!waiting && (t->reached_callback || created || !initial)) drop(tid_hex, t.get());
    return HttpReply{200, "application/pkixcmp", std::move(answer)};
  }
};

CmpService::CmpService(CmHost& host, CmpServiceOptions options)
    : impl_(std::make_unique<Impl>(host, options)) {}

CmpService::~CmpService() = default;

HttpReply CmpService::handle(const std::string& procedure, const std::string& der) {
  return impl_->handle(procedure, der);
}

std::size_t CmpService::open_transactions() const {
  std::lock_guard lock(impl_->map_mu);
  return impl_->open.size();
}

HttpRoutes cm_routes(CmHost& host, CmpService& service) {
  HttpRoutes routes;
  routes.cmp = [&service](const std::string& procedure, const std::string& body) {
    return service.handle(procedure, body);
  };
  routes.crl = [&host]() {
    auto crl = host.crl_der();
    if (!crl.is_ok()) return HttpReply{503, "text/plain", crl.status().message() + "\n"};
    return HttpReply{200, "application/pkix-crl", std::move(crl).value()};
  };
  routes.ca = [&host]() {
    return HttpReply{200, "application/pem-certificate-chain", host.ca_chain_pem()};
  };
  routes.health = []() { return HttpReply{200, "text/plain; charset=utf-8", "ok\n"}; };
  return routes;
}

}  // namespace persoflow::cmhost
