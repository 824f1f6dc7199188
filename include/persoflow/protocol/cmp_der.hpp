// Reading fields of encoded CMP messages that OpenSSL 3.0 has no getter for (they arrived in
// 3.2-3.3): the senderNonce, whether implicitConfirm is asked, the extraCerts, the revocation
// reason of an rr, the public key of a CRMF certificate template. A small DER walker over
// ASN1_get_object; every function returns nothing for malformed input, never reads past it.
#pragma once

#include <openssl/crmf.h>
#include <openssl/x509.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "persoflow/protocol/ossl.hpp"

namespace persoflow::protocol {

struct DerItem {
  int cls = 0;  // V_ASN1_UNIVERSAL, V_ASN1_CONTEXT_SPECIFIC, ...
  int tag = 0;
  bool constructed = false;
  std::string_view whole;    // tag, length and content
  std::string_view content;  // content only
};

// The TLVs that make up `bytes` one after the other (definite lengths only).
std::optional<std::vector<DerItem>> der_items(std::string_view bytes);

// One DER TLV: the identifier octet (e.g. 0x30 SEQUENCE, 0xA3 [3] constructed) and content.
std::string der_tlv(unsigned char identifier, std::string_view content);

// Fields of a PKIMessage's DER.
std::optional<std::string> cmp_sender_nonce(std::string_view msg_der);
std::optional<std::string> cmp_transaction_id(std::string_view msg_der);
bool cmp_asks_implicit_confirm(std::string_view msg_der);
std::vector<X509Ptr> cmp_extra_certs(std::string_view msg_der);
// The body's choice number (0 ir, 2 cr, 4 p10cr, 7 kur, 11 rr, 21 genm, 24 certConf, ...).
std::optional<int> cmp_body_type(std::string_view msg_der);
// The DER of the body's content (e.g. the CertificationRequest of a p10cr).
std::optional<std::string_view> cmp_body_content(std::string_view msg_der);
// The CRLReason of the first RevDetails of an rr (-1 when none is given).
std::optional<int> cmp_rr_reason(std::string_view msg_der);
// The public key of a CRMF request's certificate template.
EvpPkeyPtr crmf_template_public_key(const OSSL_CRMF_MSG* crm);

}  // namespace persoflow::protocol
