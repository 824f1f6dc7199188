// CRMF PKIArchiveOptions with a CMS EnvelopedData; see crmf_archive.hpp.
#include "persoflow/protocol/crmf_archive.hpp"

#include <openssl/cms.h>
#include <openssl/objects.h>

#include "persoflow/protocol/cmp_der.hpp"

namespace persoflow::protocol {
namespace {

// DER of OBJECT IDENTIFIERs used here.
const std::string kOidPkiArchiveOptions("\x06\x09\x2B\x06\x01\x05\x05\x07\x05\x01\x04", 11);
const std::string kOidEnvelopedData("\x06\x09\x2A\x86\x48\x86\xF7\x0D\x01\x07\x03", 11);
constexpr const char* kEncKeyWithId = "1.2.840.113549.1.9.16.1.21";  // id-ct-encKeyWithID

Result<std::string> pkcs8_der(const EVP_PKEY* key) {
  PKCS8_PRIV_KEY_INFO* info = EVP_PKEY2PKCS8(key);
  if (!info) return openssl_failure("encoding the private key as PKCS#8");
  unsigned char* der = nullptr;
  int len = i2d_PKCS8_PRIV_KEY_INFO(info, &der);
  PKCS8_PRIV_KEY_INFO_free(info);
  if (len <= 0) return openssl_failure("encoding the private key as PKCS#8");
  std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_clear_free(der, static_cast<std::size_t>(len));
  return out;
}

Result<std::string> crmf_der(const OSSL_CRMF_MSG* crm) {
  unsigned char* der = nullptr;
  int len = i2d_OSSL_CRMF_MSG(crm, &der);
  if (len <= 0) return openssl_failure("encoding the CRMF request");
  std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

Status malformed(const std::string& what) {
  return make_status(Errc::kInvalidArgument, "PKIArchiveOptions: " + what);
}

}  // namespace

Result<std::string> archive_options_der(const EVP_PKEY* private_key, const X509* archive_cert) {
  if (!private_key || !archive_cert) {
    return make_status(Errc::kInvalidArgument, "archiving needs the key and the archive certificate");
  }
  PF_ASSIGN_OR_RETURN(std::string pkcs8, pkcs8_der(private_key));
  // EncKeyWithID ::= SEQUENCE { privateKey PrivateKeyInfo, identifier ... OPTIONAL }
  std::string content = der_tlv(0x30, pkcs8);
  OPENSSL_cleanse(pkcs8.data(), pkcs8.size());
  X509StackPtr recipients(sk_X509_new_null());
  X509_up_ref(const_cast<X509*>(archive_cert));
  sk_X509_push(recipients.get(), const_cast<X509*>(archive_cert));
  BioPtr in(BIO_new_mem_buf(content.data(), static_cast<int>(content.size())));
  CmsPtr cms(CMS_encrypt(recipients.get(), nullptr, EVP_aes_256_cbc(),
                         CMS_BINARY | CMS_PARTIAL));
  ASN1_OBJECT* type = OBJ_txt2obj(kEncKeyWithId, 1);
  bool ok = cms && type && CMS_set1_eContentType(cms.get(), type) == 1 &&
            CMS_final(cms.get(), in.get(), nullptr, CMS_BINARY) == 1;
  ASN1_OBJECT_free(type);
  OPENSSL_cleanse(content.data(), content.size());
  if (!ok) return openssl_failure("enveloping the key for the key-archive certificate");
  unsigned char* der = nullptr;
  int len = i2d_CMS_ContentInfo(cms.get(), &der);
  if (len <= 0) return openssl_failure("encoding the key envelope");
  std::string info(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  // ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT EnvelopedData }: keep EnvelopedData's
  // fields and tag them as encryptedPrivKey [0] (explicit: EncryptedKey is a CHOICE) holding
  // envelopedData [0] (implicit).
  auto top = der_items(info);
  auto parts = top && top->size() == 1 ? der_items((*top)[0].content) : std::nullopt;
  auto inner = parts && parts->size() == 2 ? der_items((*parts)[1].content) : std::nullopt;
  if (!inner || inner->size() != 1) {
    return make_status(Errc::kInternal, "unexpected CMS ContentInfo encoding");
  }
  return der_tlv(0xA0, der_tlv(0xA0, (*inner)[0].content));
}

Result<CrmfMsgPtr> with_archive_options(const OSSL_CRMF_MSG* crm, std::string_view options_der) {
  PF_ASSIGN_OR_RETURN(std::string der, crmf_der(crm));
  // CertReqMsg ::= SEQUENCE { certReq CertRequest, popo OPTIONAL, regInfo OPTIONAL }
  // CertRequest ::= SEQUENCE { certReqId, certTemplate, controls SEQUENCE OF ATAV OPTIONAL }
  auto msg = der_items(der);
  auto msg_fields = msg && msg->size() == 1 ? der_items((*msg)[0].content) : std::nullopt;
  auto req = msg_fields && !msg_fields->empty() ? der_items((*msg_fields)[0].content)
                                                : std::nullopt;
  if (!req || req->size() < 2) return make_status(Errc::kInternal, "unexpected CRMF encoding");
  const std::string control = der_tlv(0x30, kOidPkiArchiveOptions + std::string(options_der));
  std::string controls;
  if (req->size() >= 3) {
    controls = std::string((*req)[2].content);
    auto existing = der_items(controls);
    for (const auto& atav : existing.value_or(std::vector<DerItem>{})) {
      if (atav.content.substr(0, kOidPkiArchiveOptions.size()) == kOidPkiArchiveOptions) {
        return make_status(Errc::kAlreadyExists, "the request already has PKIArchiveOptions");
      }
    }
  }
  controls += control;
  std::string request = std::string((*req)[0].whole) + std::string((*req)[1].whole) +
                        der_tlv(0x30, controls);
  std::string out = der_tlv(0x30, request);
  for (std::size_t i = 1; i < msg_fields->size(); ++i) out += (*msg_fields)[i].whole;
  out = der_tlv(0x30, out);
  const auto* p = reinterpret_cast<const unsigned char*>(out.data());
  CrmfMsgPtr result(d2i_OSSL_CRMF_MSG(nullptr, &p, static_cast<long>(out.size())));
  if (!result) return openssl_failure("decoding the CRMF request with PKIArchiveOptions");
  return result;
}

Result<std::optional<std::string>> archive_envelope_of(const OSSL_CRMF_MSG* crm) {
  PF_ASSIGN_OR_RETURN(std::string der, crmf_der(crm));
  auto msg = der_items(der);
  auto msg_fields = msg && msg->size() == 1 ? der_items((*msg)[0].content) : std::nullopt;
  auto req = msg_fields && !msg_fields->empty() ? der_items((*msg_fields)[0].content)
                                                : std::nullopt;
  if (!req || req->size() < 2) return malformed("the CertRequest cannot be read");
  if (req->size() < 3) return std::optional<std::string>();
  auto controls = der_items((*req)[2].content);
  if (!controls) return malformed("the controls cannot be read");
  for (const auto& atav : *controls) {
    auto fields = der_items(atav.content);
    if (!fields || fields->size() != 2 || (*fields)[0].whole != kOidPkiArchiveOptions) continue;
    const DerItem& options = (*fields)[1];
    if (options.cls != V_ASN1_CONTEXT_SPECIFIC || options.tag != 0) {
      return make_status(Errc::kUnsupported,
                         "PKIArchiveOptions: only encryptedPrivKey is supported (the RA must send "
                         "the private key, enveloped for the key-archive certificate)");
    }
    auto key = der_items(options.content);
    if (!key || key->size() != 1) return malformed("encryptedPrivKey cannot be read");
    if ((*key)[0].cls != V_ASN1_CONTEXT_SPECIFIC || (*key)[0].tag != 0) {
      return make_status(Errc::kUnsupported,
                         "PKIArchiveOptions: EncryptedValue is not supported, use envelopedData");
    }
    std::string enveloped = der_tlv(0x30, (*key)[0].content);
    return std::optional<std::string>(
        der_tlv(0x30, kOidEnvelopedData + der_tlv(0xA0, enveloped)));
  }
  return std::optional<std::string>();
}

Result<std::string> private_key_info_of(std::string_view content) {
  auto top = der_items(content);
  auto fields = top && top->size() == 1 && (*top)[0].tag == V_ASN1_SEQUENCE
                    ? der_items((*top)[0].content)
                    : std::nullopt;
  if (!fields || fields->empty()) return malformed("the enveloped content is not a private key");
  // PrivateKeyInfo starts with its version (INTEGER); EncKeyWithID with a PrivateKeyInfo.
  if ((*fields)[0].tag == V_ASN1_INTEGER) return std::string(content);
  if ((*fields)[0].tag == V_ASN1_SEQUENCE) return std::string((*fields)[0].whole);
  return malformed("the enveloped content is not EncKeyWithID");
}

}  // namespace persoflow::protocol
