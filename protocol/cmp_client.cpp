// CMP client over our HTTPS transfer; see cmp_client.hpp.
#include "persoflow/protocol/cmp_client.hpp"

#include <openssl/asn1.h>
#include <openssl/objects.h>

#include <nlohmann/json.hpp>

#include "persoflow/protocol/cm_info_types.hpp"
#include "persoflow/protocol/cmp_der.hpp"
#include "persoflow/protocol/crmf_archive.hpp"

namespace persoflow::protocol {

std::string cmp_path(const std::string& procedure) {
  return procedure.empty() ? std::string("/.well-known/cmp")
                           : "/.well-known/cmp/p/" + procedure;
}

namespace {

// "/CN=Alice/O=Example" -> X509_NAME (UTF-8 values; "\/" escapes a slash).
Result<X509NamePtr> parse_subject(const std::string& text) {
  X509NamePtr name(X509_NAME_new());
  if (text.empty() || text[0] != '/') {
    return make_status(Errc::kInvalidArgument,
                       "subject '" + text + "' must look like /CN=Name/O=Organisation");
  }
  std::size_t i = 1;
  while (i < text.size()) {
    std::string field;
    while (i < text.size() && text[i] != '/') {
      if (text[i] == '\\' && i + 1 < text.size()) ++i;
      field.push_back(text[i++]);
    }
    ++i;
    auto eq = field.find('=');
    if (eq == std::string::npos || eq == 0) {
      return make_status(Errc::kInvalidArgument,
                         "subject '" + text + "': '" + field + "' is not TYPE=value");
    }
    std::string type = field.substr(0, eq);
    std::string value = field.substr(eq + 1);
    if (!X509_NAME_add_entry_by_txt(name.get(), type.c_str(), MBSTRING_UTF8,
                                    reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                    0)) {
      return openssl_failure("subject '" + text + "': field " + type);
    }
  }
  return name;
}

Asn1OctetStringPtr octet_string(const std::string& bytes) {
  Asn1OctetStringPtr s(ASN1_OCTET_STRING_new());
  ASN1_OCTET_STRING_set(s.get(), reinterpret_cast<const unsigned char*>(bytes.data()),
                        static_cast<int>(bytes.size()));
  return s;
}

}  // namespace

struct CmpClient::Impl {
  explicit Impl(CmpClientOptions o) : options(std::move(o)), http(options.https) {}

  CmpClientOptions options;
  HttpsClient http;
  X509StorePtr trusted;
  Status setup;
  std::string path;
  std::optional<std::string> resend;
  std::function<void(const std::string&)> on_sent;
  std::string last_request;
  std::string last_response;
  CmpFailure failure;
  Status transfer_status;
  bool stopped_at_waiting = false;
  static constexpr int kPollReqBody = 25;

  static OSSL_CMP_MSG* transfer(OSSL_CMP_CTX* ctx, const OSSL_CMP_MSG* req) {
    auto* self = static_cast<Impl*>(OSSL_CMP_CTX_get_transfer_cb_arg(ctx));
    return self->do_transfer(ctx, req);
  }

  OSSL_CMP_MSG* do_transfer(OSSL_CMP_CTX* ctx, const OSSL_CMP_MSG* req) {
    std::string der;
    if (resend) {
      der = std::move(*resend);
      resend.reset();
      CmpMsgPtr saved = cmp_msg_from_der(der);
      auto nonce = cmp_sender_nonce(der);
      if (!saved || !nonce) {
        transfer_status = make_status(Errc::kCorrupt, "the saved CMP request is not a PKIMessage");
        return nullptr;
      }
      // The answer to the saved request carries its transactionID and its senderNonce as
      // recipNonce: make the context expect those.
      OSSL_CMP_CTX_set1_transactionID(
          ctx, OSSL_CMP_HDR_get0_transactionID(OSSL_CMP_MSG_get0_header(saved.get())));
      OSSL_CMP_CTX_set1_senderNonce(ctx, octet_string(*nonce).get());
    } else {
      auto encoded = cmp_msg_to_der(req);
      if (!encoded.is_ok()) {
        transfer_status = encoded.status();
        return nullptr;
      }
      der = std::move(encoded).value();
      if (cmp_body_type(der).value_or(-1) == kPollReqBody) {
        // The CM host answered 'waiting' (e-mail verification): OpenSSL would poll here,
        // sleeping in this thread and losing the state with the process. The caller polls
        // instead, from persisted state (docs/reissue.md).
        stopped_at_waiting = true;
        transfer_status = make_status(Errc::kUnavailable, "the CM host answered 'waiting'");
        return nullptr;
      }
    }
    last_request = der;
    if (on_sent) on_sent(der);
    auto res = http.post(path, "application/pkixcmp", der);
    if (!res.is_ok()) {
      transfer_status = res.status();
      return nullptr;
    }
    if (res->status != 200) {
      std::string body = res->body.substr(0, 200);
      while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
      transfer_status = make_status(Errc::kRejected, "CM host answered HTTP " +
                                                         std::to_string(res->status) + ": " + body);
      return nullptr;
    }
    last_response = res->body;
    CmpMsgPtr msg = cmp_msg_from_der(res->body);
    if (!msg) {
      transfer_status = make_status(Errc::kCorrupt, "the CM host's answer is not a PKIMessage");
      return nullptr;
    }
    return msg.release();
  }

  Result<CmpCtxPtr> new_ctx(const std::string& procedure) {
    PF_RETURN_IF_ERROR(setup);
    CmpCtxPtr ctx(OSSL_CMP_CTX_new(nullptr, nullptr));
    if (!ctx) return openssl_failure("creating a CMP context");
    path = cmp_path(procedure);
    transfer_status = Status::ok();
    stopped_at_waiting = false;
    failure = CmpFailure{};
    last_response.clear();  // a kept client: what is read after this exchange is its own answer
    OSSL_CMP_CTX_set_log_verbosity(ctx.get(), OSSL_CMP_LOG_ERR);
    OSSL_CMP_CTX_set_transfer_cb(ctx.get(), &Impl::transfer);
    OSSL_CMP_CTX_set_transfer_cb_arg(ctx.get(), this);
    X509_STORE_up_ref(trusted.get());
    OSSL_CMP_CTX_set0_trustedStore(ctx.get(), trusted.get());
    if (!OSSL_CMP_CTX_set1_cert(ctx.get(), options.officer_cert) ||
        !OSSL_CMP_CTX_set1_pkey(ctx.get(), options.officer_key)) {
      return openssl_failure("setting the officer's credentials");
    }
    if (!options.officer_chain.empty()) {
      X509StackPtr extra(sk_X509_new_null());
      for (X509* c : options.officer_chain) {
        X509_up_ref(c);
        sk_X509_push(extra.get(), c);
      }
      OSSL_CMP_CTX_set1_extraCertsOut(ctx.get(), extra.get());
    }
    if (options.implicit_confirm) {
      OSSL_CMP_CTX_set_option(ctx.get(), OSSL_CMP_OPT_IMPLICIT_CONFIRM, 1);
    }
    return ctx;
  }

  // The statusString of the last answer, lines joined with "; ".
  static std::string status_text(OSSL_CMP_CTX* ctx) {
    std::string text;
    if (OSSL_CMP_PKIFREETEXT* st = OSSL_CMP_CTX_get0_statusString(ctx)) {
      for (int i = 0; i < sk_ASN1_UTF8STRING_num(st); ++i) {
        ASN1_UTF8STRING* s = sk_ASN1_UTF8STRING_value(st, i);
        if (!text.empty()) text += "; ";
        text.append(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                    static_cast<std::size_t>(ASN1_STRING_length(s)));
      }
    }
    return text;
  }

  // After a failed exchange: the transfer's own failure, or what the CM host said.
  Status fail(OSSL_CMP_CTX* ctx, const std::string& what) {
    if (stopped_at_waiting) {
      failure.pki_status = OSSL_CMP_PKISTATUS_waiting;
      failure.text = status_text(ctx);
      drain_openssl_errors();
      return make_status(Errc::kUnavailable, "the CM host answered 'waiting': " + failure.text);
    }
    if (!transfer_status.is_ok()) {
      drain_openssl_errors();
      return transfer_status.with_context(what);
    }
    failure.pki_status = OSSL_CMP_CTX_get_status(ctx);
    failure.fail_info = OSSL_CMP_CTX_get_failInfoCode(ctx);
    std::string text = status_text(ctx);
    std::string queue = drain_openssl_errors();
    if (text.empty()) text = queue;
    failure.text = text;
    std::string message = what;
    if (failure.pki_status >= 0) {
      char buf[OSSL_CMP_PKISI_BUFLEN];
      if (OSSL_CMP_CTX_snprint_PKIStatus(ctx, buf, sizeof buf)) message += ": " + std::string(buf);
      else if (!text.empty()) message += ": " + text;
      // An error message's errorDetails (the CM host's reason) arrive on the error queue.
      if (!queue.empty() && queue != text) message += " (" + queue + ")";
    } else if (!text.empty()) {
      message += ": " + text;
    }
    return make_status(Errc::kRejected, message);
  }
};

CmpClient::CmpClient(CmpClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {
  register_info_types();
  Impl& m = *impl_;
  if (!m.options.officer_key || !m.options.officer_cert) {
    m.setup = make_status(Errc::kInvalidArgument, "CMP client: no officer key and certificate");
    return;
  }
  EVP_PKEY_up_ref(m.options.officer_key);
  X509_up_ref(m.options.officer_cert);
  for (X509* c : m.options.officer_chain) X509_up_ref(c);
  m.trusted.reset(X509_STORE_new());
  auto certs = read_pem_certs(m.options.cmp_trusted_pem);
  if (!certs.is_ok()) {
    m.setup = certs.status().with_context("CMP trusted CA");
    return;
  }
  for (auto& c : *certs) X509_STORE_add_cert(m.trusted.get(), c.get());
}

CmpClient::~CmpClient() {
  Impl& m = *impl_;
  if (m.options.officer_key && m.options.officer_cert) {
    EVP_PKEY_free(m.options.officer_key);
    X509_free(m.options.officer_cert);
    for (X509* c : m.options.officer_chain) X509_free(c);
  }
}

Result<Enrolled> CmpClient::enroll(const CertRequest& request) {
  Impl& m = *impl_;
  PF_ASSIGN_OR_RETURN(CmpCtxPtr ctx, m.new_ctx(request.procedure));
  if (!request.transaction_id.empty()) {
    OSSL_CMP_CTX_set1_transactionID(ctx.get(), octet_string(request.transaction_id).get());
  }
  int type = OSSL_CMP_IR;
  switch (request.type) {
    case CertRequestType::kIr: type = OSSL_CMP_IR; break;
    case CertRequestType::kCr: type = OSSL_CMP_CR; break;
    case CertRequestType::kP10cr: type = OSSL_CMP_P10CR; break;
    case CertRequestType::kKur: type = OSSL_CMP_KUR; break;
  }
  if (type == OSSL_CMP_P10CR) {
    if (!request.csr) return make_status(Errc::kInvalidArgument, "p10cr needs a CSR");
    OSSL_CMP_CTX_set1_p10CSR(ctx.get(), request.csr);
  } else {
    if (!request.key) return make_status(Errc::kInvalidArgument, "the request needs a key pair");
    EVP_PKEY_up_ref(request.key);
    OSSL_CMP_CTX_set0_newPkey(ctx.get(), 1, request.key);
    if (!request.subject.empty()) {
      PF_ASSIGN_OR_RETURN(X509NamePtr name, parse_subject(request.subject));
      OSSL_CMP_CTX_set1_subjectName(ctx.get(), name.get());
    }
    if (type == OSSL_CMP_KUR) {
      if (!request.old_cert) {
        return make_status(Errc::kInvalidArgument, "kur needs the certificate to update");
      }
      OSSL_CMP_CTX_set1_oldCert(ctx.get(), request.old_cert);
    }
  }
  CrmfMsgPtr crm;
  if (request.archive_to) {
    if (type == OSSL_CMP_P10CR) {
      return make_status(Errc::kInvalidArgument, "a p10cr cannot carry a key to archive");
    }
    // The library builds no archive control: build the request here, add it, then sign the
    // proof of possession over the whole CertRequest.
    CrmfMsgPtr plain(OSSL_CMP_CTX_setup_CRM(ctx.get(), type == OSSL_CMP_KUR, 0));
    if (!plain) return openssl_failure("building the certificate request");
    PF_ASSIGN_OR_RETURN(std::string options, archive_options_der(request.key, request.archive_to));
    PF_ASSIGN_OR_RETURN(crm, with_archive_options(plain.get(), options));
    OPENSSL_cleanse(options.data(), options.size());
    const int base = EVP_PKEY_get_base_id(request.key);
    const EVP_MD* md = base == EVP_PKEY_ED25519 || base == EVP_PKEY_ED448 ? nullptr : EVP_sha256();
    if (!OSSL_CRMF_MSG_create_popo(OSSL_CRMF_POPO_SIGNATURE, crm.get(), request.key, md, nullptr,
                                   nullptr)) {
      return openssl_failure("signing the proof of possession");
    }
  }
  X509* cert = OSSL_CMP_exec_certreq(ctx.get(), type, crm.get());
  if (!cert) return m.fail(ctx.get(), "certificate request refused");
  Enrolled out;
  X509_up_ref(cert);
  out.cert.reset(cert);
  out.serial_hex = serial_hex(X509_get0_serialNumber(cert));
  if (STACK_OF(X509)* pubs = OSSL_CMP_CTX_get1_caPubs(ctx.get())) {
    for (int i = 0; i < sk_X509_num(pubs); ++i) out.ca_pubs.emplace_back(sk_X509_value(pubs, i));
    sk_X509_free(pubs);  // the references moved into ca_pubs
  }
  CmpMsgPtr sent = cmp_msg_from_der(m.last_request);
  if (sent) {
    const ASN1_OCTET_STRING* tid =
        OSSL_CMP_HDR_get0_transactionID(OSSL_CMP_MSG_get0_header(sent.get()));
    if (tid) {
      out.transaction_id.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(tid)),
                                static_cast<std::size_t>(ASN1_STRING_length(tid)));
    }
  }
  return out;
}

Status CmpClient::revoke(X509* cert, int reason, const std::string& procedure) {
  Impl& m = *impl_;
  PF_ASSIGN_OR_RETURN(CmpCtxPtr ctx, m.new_ctx(procedure));
  OSSL_CMP_CTX_set1_oldCert(ctx.get(), cert);
  OSSL_CMP_CTX_set_option(ctx.get(), OSSL_CMP_OPT_REVOCATION_REASON, reason);
  if (OSSL_CMP_exec_RR_ses(ctx.get()) != 1) return m.fail(ctx.get(), "revocation refused");
  return Status::ok();
}

Result<std::vector<InfoItem>> CmpClient::general_message(const std::vector<InfoItem>& items,
                                                         const std::string& procedure) {
  Impl& m = *impl_;
  PF_ASSIGN_OR_RETURN(CmpCtxPtr ctx, m.new_ctx(procedure));
  for (const auto& item : items) {
    ASN1_OBJECT* type = OBJ_txt2obj(item.oid.c_str(), 1);
    if (!type) return make_status(Errc::kInvalidArgument, "bad info-type OID " + item.oid);
    ASN1_TYPE* value = ASN1_TYPE_new();
    ASN1_TYPE_set(value, V_ASN1_OCTET_STRING, octet_string(item.value).release());
    OSSL_CMP_ITAV* itav = OSSL_CMP_ITAV_create(type, value);
    OSSL_CMP_CTX_push0_genm_ITAV(ctx.get(), itav);
  }
  if (m.options.implicit_confirm) {
    // OpenSSL sets implicitConfirm only on certificate requests; the CM host reads it on a genm
    // too (certificates from key generation and recovery).
    ASN1_TYPE* null_value = ASN1_TYPE_new();
    ASN1_TYPE_set(null_value, V_ASN1_NULL, nullptr);
    OSSL_CMP_ITAV* itav =
        OSSL_CMP_ITAV_create(OBJ_dup(OBJ_nid2obj(NID_id_it_implicitConfirm)), null_value);
    OSSL_CMP_CTX_push0_geninfo_ITAV(ctx.get(), itav);
  }
  STACK_OF(OSSL_CMP_ITAV)* out = OSSL_CMP_exec_GENM_ses(ctx.get());
  if (!out) {
    if (OSSL_CMP_CTX_get_status(ctx.get()) == OSSL_CMP_PKISTATUS_accepted &&
        m.transfer_status.is_ok()) {
      drain_openssl_errors();
      return std::vector<InfoItem>{};  // an empty genp
    }
    return m.fail(ctx.get(), "general message refused");
  }
  std::vector<InfoItem> result;
  for (int i = 0; i < sk_OSSL_CMP_ITAV_num(out); ++i) {
    OSSL_CMP_ITAV* itav = sk_OSSL_CMP_ITAV_value(out, i);
    char oid[128];
    OBJ_obj2txt(oid, sizeof oid, OSSL_CMP_ITAV_get0_type(itav), 1);
    InfoItem item;
    item.oid = oid;
    ASN1_TYPE* value = OSSL_CMP_ITAV_get0_value(itav);
    if (value && value->type == V_ASN1_OCTET_STRING) {
      item.value.assign(
          reinterpret_cast<const char*>(ASN1_STRING_get0_data(value->value.octet_string)),
          static_cast<std::size_t>(ASN1_STRING_length(value->value.octet_string)));
    }
    result.push_back(std::move(item));
  }
  sk_OSSL_CMP_ITAV_pop_free(out, OSSL_CMP_ITAV_free);
  return result;
}

Result<std::vector<std::string>> CmpClient::confirm_certificates(
    const std::string& transaction_id_hex, const std::vector<std::string>& serials, bool accept) {
  const nlohmann::json request = {
      {"transaction_id", transaction_id_hex}, {"serials", serials}, {"accept", accept}};
  PF_ASSIGN_OR_RETURN(auto items, general_message({{kOidCertConfirm, request.dump()}}));
  if (items.size() != 1) return make_status(Errc::kCorrupt, "the CM host's genp has no answer");
  try {
    return nlohmann::json::parse(items.front().value)
        .at(accept ? "confirmed" : "rejected")
        .get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    return make_status(Errc::kCorrupt, std::string("unexpected persoflowCertConfirm answer: ") +
                                           e.what());
  }
}

Result<std::string> CmpClient::post_der(const std::string& der, const std::string& procedure) {
  auto res = impl_->http.post(cmp_path(procedure), "application/pkixcmp", der);
  if (!res.is_ok()) return res.status();
  if (res->status != 200) {
    return make_status(Errc::kRejected,
                       "CM host answered HTTP " + std::to_string(res->status) + ": " + res->body);
  }
  return std::move(res->body);
}

void CmpClient::resend_next(std::string request_der) { impl_->resend = std::move(request_der); }
void CmpClient::on_request_sent(std::function<void(const std::string&)> fn) {
  impl_->on_sent = std::move(fn);
}
const std::string& CmpClient::last_request_der() const { return impl_->last_request; }
const std::string& CmpClient::last_response_der() const { return impl_->last_response; }
const CmpFailure& CmpClient::last_failure() const { return impl_->failure; }
HttpsClient& CmpClient::https() { return impl_->http; }

}  // namespace persoflow::protocol
