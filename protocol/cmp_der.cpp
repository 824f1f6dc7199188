// DER walking for CMP fields OpenSSL 3.0 does not expose; see cmp_der.hpp.
#include "persoflow/protocol/cmp_der.hpp"

#include <openssl/asn1.h>
#include <openssl/x509v3.h>

namespace persoflow::protocol {

std::optional<std::vector<DerItem>> der_items(std::string_view bytes) {
  std::vector<DerItem> out;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const unsigned char* end = p + bytes.size();
  while (p < end) {
    const unsigned char* start = p;
    long len = 0;
    int tag = 0;
    int cls = 0;
    int r = ASN1_get_object(&p, &len, &tag, &cls, end - p);
    if ((r & 0x80) || r == 0x21 || len < 0 || len > end - p) return std::nullopt;
    DerItem item;
    item.cls = cls;
    item.tag = tag;
    item.constructed = (r & V_ASN1_CONSTRUCTED) != 0;
    item.content = std::string_view(reinterpret_cast<const char*>(p), static_cast<std::size_t>(len));
    p += len;
    item.whole = std::string_view(reinterpret_cast<const char*>(start),
                                  static_cast<std::size_t>(p - start));
    out.push_back(item);
  }
  return out;
}

std::string der_tlv(unsigned char identifier, std::string_view content) {
  std::string out(1, static_cast<char>(identifier));
  std::size_t n = content.size();
  if (n < 0x80) {
    out.push_back(static_cast<char>(n));
  } else {
    std::string len;
    while (n > 0) {
      len.insert(len.begin(), static_cast<char>(n & 0xff));
      n >>= 8;
    }
    out.push_back(static_cast<char>(0x80 | len.size()));
    out += len;
  }
  out.append(content);
  return out;
}

namespace {

// The children of the PKIMessage SEQUENCE: header, body, [0] protection, [1] extraCerts.
std::optional<std::vector<DerItem>> message_parts(std::string_view msg_der) {
  auto top = der_items(msg_der);
  if (!top || top->size() != 1 || (*top)[0].tag != V_ASN1_SEQUENCE) return std::nullopt;
  auto parts = der_items((*top)[0].content);
  if (!parts || parts->size() < 2 || (*parts)[0].tag != V_ASN1_SEQUENCE) return std::nullopt;
  return parts;
}

std::optional<DerItem> header_field(std::string_view msg_der, int context_tag) {
  auto parts = message_parts(msg_der);
  if (!parts) return std::nullopt;
  auto fields = der_items((*parts)[0].content);
  if (!fields) return std::nullopt;
  // pvno, sender and recipient come first; sender and recipient are GeneralNames, whose own
  // context tags ([4] directoryName) must not be taken for header fields.
  for (std::size_t i = 3; i < fields->size(); ++i) {
    const auto& f = (*fields)[i];
    if (f.cls == V_ASN1_CONTEXT_SPECIFIC && f.tag == context_tag) return f;
  }
  return std::nullopt;
}

std::optional<std::string> explicit_octet_string(const DerItem& item) {
  auto inner = der_items(item.content);
  if (!inner || inner->size() != 1 || (*inner)[0].tag != V_ASN1_OCTET_STRING) return std::nullopt;
  return std::string((*inner)[0].content);
}

}  // namespace

std::optional<std::string> cmp_sender_nonce(std::string_view msg_der) {
  auto f = header_field(msg_der, 5);
  if (!f) return std::nullopt;
  return explicit_octet_string(*f);
}

std::optional<std::string> cmp_transaction_id(std::string_view msg_der) {
  auto f = header_field(msg_der, 4);
  if (!f) return std::nullopt;
  return explicit_octet_string(*f);
}

bool cmp_asks_implicit_confirm(std::string_view msg_der) {
  auto f = header_field(msg_der, 8);
  if (!f) return false;
  auto seq = der_items(f->content);  // [8] EXPLICIT SEQUENCE OF InfoTypeAndValue
  if (!seq || seq->size() != 1) return false;
  auto itavs = der_items((*seq)[0].content);
  if (!itavs) return false;
  for (const auto& itav : *itavs) {
    auto fields = der_items(itav.content);
    if (!fields || fields->empty() || (*fields)[0].tag != V_ASN1_OBJECT) continue;
    const auto* p = reinterpret_cast<const unsigned char*>((*fields)[0].whole.data());
    ASN1_OBJECT* obj = d2i_ASN1_OBJECT(nullptr, &p, static_cast<long>((*fields)[0].whole.size()));
    if (!obj) continue;
    int nid = OBJ_obj2nid(obj);
    ASN1_OBJECT_free(obj);
    if (nid == NID_id_it_implicitConfirm) return true;
  }
  return false;
}

std::vector<X509Ptr> cmp_extra_certs(std::string_view msg_der) {
  std::vector<X509Ptr> out;
  auto parts = message_parts(msg_der);
  if (!parts) return out;
  for (std::size_t i = 2; i < parts->size(); ++i) {
    const auto& part = (*parts)[i];
    if (part.cls != V_ASN1_CONTEXT_SPECIFIC || part.tag != 1) continue;
    auto seq = der_items(part.content);
    if (!seq || seq->size() != 1) return out;
    auto certs = der_items((*seq)[0].content);
    if (!certs) return out;
    for (const auto& c : *certs) {
      const auto* p = reinterpret_cast<const unsigned char*>(c.whole.data());
      X509* cert = d2i_X509(nullptr, &p, static_cast<long>(c.whole.size()));
      if (cert) out.emplace_back(cert);
    }
  }
  return out;
}

std::optional<int> cmp_body_type(std::string_view msg_der) {
  auto parts = message_parts(msg_der);
  if (!parts || (*parts)[1].cls != V_ASN1_CONTEXT_SPECIFIC) return std::nullopt;
  return (*parts)[1].tag;
}

std::optional<std::string_view> cmp_body_content(std::string_view msg_der) {
  auto parts = message_parts(msg_der);
  if (!parts || (*parts)[1].cls != V_ASN1_CONTEXT_SPECIFIC) return std::nullopt;
  auto inner = der_items((*parts)[1].content);  // PKIBody choices are EXPLICIT
  if (!inner || inner->size() != 1) return std::nullopt;
  return (*inner)[0].whole;
}

std::optional<int> cmp_rr_reason(std::string_view msg_der) {
  auto parts = message_parts(msg_der);
  if (!parts || (*parts)[1].cls != V_ASN1_CONTEXT_SPECIFIC || (*parts)[1].tag != 11) {
    return std::nullopt;
  }
  auto content = der_items((*parts)[1].content);  // [11] EXPLICIT RevReqContent
  if (!content || content->size() != 1) return std::nullopt;
  auto details = der_items((*content)[0].content);  // SEQUENCE OF RevDetails
  if (!details || details->empty()) return std::nullopt;
  auto fields = der_items((*details)[0].content);  // certDetails, crlEntryDetails OPTIONAL
  if (!fields || fields->empty()) return std::nullopt;
  if (fields->size() < 2) return -1;
  const auto& ext_der = (*fields)[1].whole;
  const auto* p = reinterpret_cast<const unsigned char*>(ext_der.data());
  X509_EXTENSIONS* exts = d2i_X509_EXTENSIONS(nullptr, &p, static_cast<long>(ext_der.size()));
  if (!exts) return std::nullopt;
  int crit = 0;
  auto* reason =
      static_cast<ASN1_ENUMERATED*>(X509V3_get_d2i(exts, NID_crl_reason, &crit, nullptr));
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  if (!reason) return -1;
  long value = ASN1_ENUMERATED_get(reason);
  ASN1_ENUMERATED_free(reason);
  return static_cast<int>(value);
}

EvpPkeyPtr crmf_template_public_key(const OSSL_CRMF_MSG* crm) {
  OSSL_CRMF_CERTTEMPLATE* tmpl = OSSL_CRMF_MSG_get0_tmpl(crm);
  if (!tmpl) return nullptr;
  unsigned char* der = nullptr;
  int len = i2d_OSSL_CRMF_CERTTEMPLATE(tmpl, &der);
  if (len <= 0) return nullptr;
  std::string bytes(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  auto top = der_items(bytes);
  if (!top || top->size() != 1) return nullptr;
  auto fields = der_items((*top)[0].content);
  if (!fields) return nullptr;
  for (const auto& f : *fields) {
    if (f.cls == V_ASN1_CONTEXT_SPECIFIC && f.tag == 6 && f.constructed) {
      // [6] IMPLICIT SubjectPublicKeyInfo: the same bytes with the SEQUENCE tag.
      std::string spki(f.whole);
      spki[0] = 0x30;
      const auto* p = reinterpret_cast<const unsigned char*>(spki.data());
      return EvpPkeyPtr(d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size())));
    }
  }
  return nullptr;
}

}  // namespace persoflow::protocol
