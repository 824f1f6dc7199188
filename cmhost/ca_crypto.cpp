// The CA's cryptography on OpenSSL 3 (ca_crypto.hpp): keys, certificates, CRLs, qcStatements,
// encrypted PEM and PKCS#12. Every OpenSSL failure becomes a Status here.
#include "ca_crypto.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/dsa.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <ctime>

#include "names.hpp"

namespace persoflow::cmhost::crypto {
namespace {

std::string join(const std::vector<std::string>& items, const std::string& sep = ",") {
  std::string out;
  for (const auto& i : items) {
    if (!out.empty()) out += sep;
    out += i;
  }
  return out;
}

Status add_ext(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str());
  if (!ext) return openssl_failure(std::string("building extension ") + OBJ_nid2sn(nid) + "=" + value);
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (!ok) return openssl_failure(std::string("adding extension ") + OBJ_nid2sn(nid));
  return Status::ok();
}

std::string der_length(std::size_t n) {
  std::string out;
  if (n < 0x80) {
    out.push_back(static_cast<char>(n));
    return out;
  }
  std::string bytes;
  while (n) {
    bytes.insert(bytes.begin(), static_cast<char>(n & 0xff));
    n >>= 8;
  }
  out.push_back(static_cast<char>(0x80 | bytes.size()));
  return out + bytes;
}

std::string tlv(unsigned char tag, const std::string& content) {
  return std::string(1, static_cast<char>(tag)) + der_length(content.size()) + content;
}

std::string seq(const std::string& content) { return tlv(0x30, content); }

Result<std::string> oid(const char* dotted) {
  ASN1_OBJECT* obj = OBJ_txt2obj(dotted, 1);
  if (!obj) return openssl_failure(std::string("bad OID ") + dotted);
  unsigned char* buf = nullptr;
  int len = i2d_ASN1_OBJECT(obj, &buf);
  ASN1_OBJECT_free(obj);
  if (len <= 0) return openssl_failure("encoding OID");
  std::string out(reinterpret_cast<char*>(buf), static_cast<std::size_t>(len));
  OPENSSL_free(buf);
  return out;
}

constexpr const char* kQcCompliance = "0.4.0.1862.1.1";
constexpr const char* kQcSscd = "0.4.0.1862.1.4";
constexpr const char* kQcPds = "0.4.0.1862.1.5";
constexpr const char* kQcType = "0.4.0.1862.1.6";

const char* qc_type_oid(const std::string& type) {
  if (type == "esign") return "0.4.0.1862.1.6.1";
  if (type == "eseal") return "0.4.0.1862.1.6.2";
  if (type == "web") return "0.4.0.1862.1.6.3";
  return nullptr;
}

Result<ASN1_INTEGER*> serial_from_hex(const std::string& hex) {
  BIGNUM* bn = nullptr;
  if (!BN_hex2bn(&bn, hex.c_str())) return openssl_failure("bad serial " + hex);
  ASN1_INTEGER* ai = BN_to_ASN1_INTEGER(bn, nullptr);
  BN_free(bn);
  if (!ai) return openssl_failure("encoding serial");
  return ai;
}

}  // namespace

const EVP_MD* digest_for(const EVP_PKEY* key) {
  int id = EVP_PKEY_get_base_id(key);
  if (id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448) return nullptr;
  if (id == EVP_PKEY_EC && EVP_PKEY_get_bits(key) > 256) return EVP_sha384();
  return EVP_sha256();
}

Result<std::string> qc_statements_der(const QcStatements& qc) {
  std::string statements;
  if (qc.compliance) {
    PF_ASSIGN_OR_RETURN(std::string id, oid(kQcCompliance));
    statements += seq(id);
  }
  if (qc.sscd) {
    PF_ASSIGN_OR_RETURN(std::string id, oid(kQcSscd));
    statements += seq(id);
  }
  if (!qc.types.empty()) {
    PF_ASSIGN_OR_RETURN(std::string id, oid(kQcType));
    std::string types;
    for (const auto& t : qc.types) {
      const char* o = qc_type_oid(t);
      if (!o) return make_status(Errc::kInvalidArgument, "unknown QC type '" + t + "'");
      PF_ASSIGN_OR_RETURN(std::string tid, oid(o));
      types += tid;
    }
    statements += seq(id + seq(types));
  }
  if (!qc.pds.empty()) {
    PF_ASSIGN_OR_RETURN(std::string id, oid(kQcPds));
    std::string locations;
    for (const auto& p : qc.pds) {
      if (p.language.size() != 2) {
        return make_status(Errc::kInvalidArgument,
                           "PDS language '" + p.language + "' is not a two-letter code");
      }
      locations += seq(tlv(0x16, p.url) + tlv(0x13, p.language));
    }
    statements += seq(id + seq(locations));
  }
  return seq(statements);
}

Result<X509Ptr> sign_certificate(const CertSpec& spec) {
  X509Ptr cert(X509_new());
  if (!cert || !X509_set_version(cert.get(), X509_VERSION_3)) return openssl_failure("X509_new");
  unsigned char buf[16];
  if (RAND_bytes(buf, sizeof buf) != 1) return openssl_failure("random serial");
  buf[0] = static_cast<unsigned char>((buf[0] & 0x7f) | 0x40);
  BIGNUM* bn = BN_bin2bn(buf, sizeof buf, nullptr);
  bool serial_ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  if (!serial_ok) return openssl_failure("setting serial");
  const X509_NAME* issuer_name = spec.issuer ? X509_get_subject_name(spec.issuer) : spec.subject;
  if (!X509_set_subject_name(cert.get(), spec.subject) ||
      !X509_set_issuer_name(cert.get(), issuer_name) ||
      !ASN1_TIME_set(X509_getm_notBefore(cert.get()), static_cast<time_t>(spec.not_before)) ||
      !ASN1_TIME_set(X509_getm_notAfter(cert.get()), static_cast<time_t>(spec.not_after)) ||
      !X509_set_pubkey(cert.get(), const_cast<EVP_PKEY*>(spec.public_key))) {
    return openssl_failure("filling the certificate");
  }
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, spec.issuer ? const_cast<X509*>(spec.issuer) : cert.get(), cert.get(),
                 nullptr, nullptr, 0);
  PF_RETURN_IF_ERROR(add_ext(cert.get(), &ctx, NID_basic_constraints,
                             spec.ca ? "critical,CA:TRUE" : "critical,CA:FALSE"));
  PF_RETURN_IF_ERROR(add_ext(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
  PF_RETURN_IF_ERROR(add_ext(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always"));
  if (!spec.key_usage.empty()) {
    std::vector<std::string> ku;
    for (const auto& k : spec.key_usage) ku.push_back(k == "contentCommitment" ? "nonRepudiation" : k);
    PF_RETURN_IF_ERROR(add_ext(cert.get(), &ctx, NID_key_usage, "critical," + join(ku)));
  }
  if (!spec.extended_key_usage.empty()) {
    std::vector<std::string> eku;
    for (const auto& e : spec.extended_key_usage) {
      int nid = names::eku_nid(e);
      if (nid == NID_undef) return make_status(Errc::kInvalidArgument, "unknown EKU '" + e + "'");
      char text[128];
      OBJ_obj2txt(text, sizeof text, OBJ_nid2obj(nid), 1);
      eku.push_back(text);
    }
    PF_RETURN_IF_ERROR(add_ext(cert.get(), &ctx, NID_ext_key_usage, join(eku)));
  }
  if (!spec.subject_alt_names.empty()) {
    PF_RETURN_IF_ERROR(add_ext(cert.get(), &ctx, NID_subject_alt_name, join(spec.subject_alt_names)));
  }
  if (!spec.crl_url.empty()) {
    PF_RETURN_IF_ERROR(add_ext(cert.get(), &ctx, NID_crl_distribution_points, "URI:" + spec.crl_url));
  }
  if (spec.qc) {
    PF_ASSIGN_OR_RETURN(std::string der, qc_statements_der(*spec.qc));
    ASN1_OCTET_STRING* os = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(os, reinterpret_cast<const unsigned char*>(der.data()),
                          static_cast<int>(der.size()));
    X509_EXTENSION* ext = X509_EXTENSION_create_by_NID(nullptr, NID_qcStatements, 0, os);
    ASN1_OCTET_STRING_free(os);
    if (!ext) return openssl_failure("building qcStatements");
    int ok = X509_add_ext(cert.get(), ext, -1);
    X509_EXTENSION_free(ext);
    if (!ok) return openssl_failure("adding qcStatements");
  }
  if (X509_sign(cert.get(), const_cast<EVP_PKEY*>(spec.signing_key), digest_for(spec.signing_key)) <= 0) {
    return openssl_failure("signing the certificate");
  }
  return cert;
}

Result<std::string> sign_crl(const X509* ca, const EVP_PKEY* ca_key,
                             const std::vector<RevokedEntry>& revoked, std::int64_t crl_number,
                             std::int64_t this_update, std::int64_t next_update) {
  X509CrlPtr crl(X509_CRL_new());
  if (!crl || !X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2) ||
      !X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca))) {
    return openssl_failure("building the CRL");
  }
  ASN1_TIME* last = ASN1_TIME_set(nullptr, static_cast<time_t>(this_update));
  ASN1_TIME* next = ASN1_TIME_set(nullptr, static_cast<time_t>(next_update));
  bool times_ok = last && next && X509_CRL_set1_lastUpdate(crl.get(), last) &&
                  X509_CRL_set1_nextUpdate(crl.get(), next);
  ASN1_TIME_free(last);
  ASN1_TIME_free(next);
  if (!times_ok) return openssl_failure("setting CRL times");
  for (const auto& r : revoked) {
    X509_REVOKED* entry = X509_REVOKED_new();
    auto serial = serial_from_hex(r.serial_hex);
    if (!serial.is_ok()) {
      X509_REVOKED_free(entry);
      return serial.status();
    }
    ASN1_TIME* when = ASN1_TIME_set(nullptr, static_cast<time_t>(r.revoked_at));
    bool ok = X509_REVOKED_set_serialNumber(entry, *serial) &&
              X509_REVOKED_set_revocationDate(entry, when);
    ASN1_INTEGER_free(*serial);
    ASN1_TIME_free(when);
    // RFC 5280 5.3.1: the reason code unspecified (0) should be absent rather than present.
    if (ok && r.reason > 0) {
      ASN1_ENUMERATED* e = ASN1_ENUMERATED_new();
      ok = ASN1_ENUMERATED_set(e, r.reason) &&
           X509_REVOKED_add1_ext_i2d(entry, NID_crl_reason, e, 0, 0) == 1;
      ASN1_ENUMERATED_free(e);
    }
    if (!ok || !X509_CRL_add0_revoked(crl.get(), entry)) {
      X509_REVOKED_free(entry);
      return openssl_failure("adding a revoked entry");
    }
  }
  X509_CRL_sort(crl.get());
  ASN1_INTEGER* number = ASN1_INTEGER_new();
  bool ok = ASN1_INTEGER_set_int64(number, crl_number) &&
            X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, number, 0, 0) == 1;
  ASN1_INTEGER_free(number);
  if (!ok) return openssl_failure("adding the CRL number");
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, const_cast<X509*>(ca), nullptr, nullptr, crl.get(), 0);
  X509_EXTENSION* aki = X509V3_EXT_conf_nid(nullptr, &ctx, NID_authority_key_identifier, "keyid:always");
  if (!aki) return openssl_failure("building the CRL's AKI");
  ok = X509_CRL_add_ext(crl.get(), aki, -1);
  X509_EXTENSION_free(aki);
  if (!ok) return openssl_failure("adding the CRL's AKI");
  if (X509_CRL_sign(crl.get(), const_cast<EVP_PKEY*>(ca_key), digest_for(ca_key)) <= 0) {
    return openssl_failure("signing the CRL");
  }
  unsigned char* buf = nullptr;
  int len = i2d_X509_CRL(crl.get(), &buf);
  if (len <= 0) return openssl_failure("encoding the CRL");
  std::string der(reinterpret_cast<char*>(buf), static_cast<std::size_t>(len));
  OPENSSL_free(buf);
  return der;
}

Result<EvpPkeyPtr> generate_key(const std::string& spec_in) {
  std::string spec = spec_in;
  auto bad = [&]() {
    return make_status(Errc::kInvalidArgument,
                       "unknown key algorithm '" + spec_in +
                           "' (RSA:BITS, EC:CURVE, DSA:BITS, Ed25519, or ec-p256, ec-p384, "
                           "ec-p521, rsa-2048, rsa-3072, rsa-4096)");
  };
  if (spec == "ec-p256") spec = "EC:secp256r1";
  if (spec == "ec-p384") spec = "EC:secp384r1";
  if (spec == "ec-p521") spec = "EC:secp521r1";
  if (spec.rfind("rsa-", 0) == 0) spec = "RSA:" + spec.substr(4);
  EVP_PKEY* key = nullptr;
  if (spec == "Ed25519" || spec == "ed25519") {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  } else {
    auto colon = spec.find(':');
    if (colon == std::string::npos) return bad();
    std::string alg = spec.substr(0, colon);
    std::string param = spec.substr(colon + 1);
    if (alg == "RSA" || alg == "DSA") {
      if (param.empty() || param.find_first_not_of("0123456789") != std::string::npos) return bad();
      int bits = std::stoi(param);
      if (bits < 1024 || bits > 16384) return bad();
      if (alg == "RSA") {
        key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(bits));
      } else {
        EVP_PKEY_CTX* pctx = EVP_PKEY_CTX_new_from_name(nullptr, "DSA", nullptr);
        EVP_PKEY* params = nullptr;
        if (pctx && EVP_PKEY_paramgen_init(pctx) > 0 &&
            EVP_PKEY_CTX_set_dsa_paramgen_bits(pctx, bits) > 0 &&
            EVP_PKEY_paramgen(pctx, &params) > 0) {
          EVP_PKEY_CTX* kctx = EVP_PKEY_CTX_new_from_pkey(nullptr, params, nullptr);
          if (kctx && EVP_PKEY_keygen_init(kctx) > 0) EVP_PKEY_keygen(kctx, &key);
          EVP_PKEY_CTX_free(kctx);
        }
        EVP_PKEY_free(params);
        EVP_PKEY_CTX_free(pctx);
      }
    } else if (alg == "EC") {
      int nid = names::curve_nid(param);
      if (nid == NID_undef) return bad();
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", OBJ_nid2sn(nid));
    } else {
      return bad();
    }
  }
  if (!key) return openssl_failure("generating a " + spec_in + " key");
  return EvpPkeyPtr(key);
}

Result<std::string> encrypted_key_pem(const EVP_PKEY* key, const std::string& passphrase) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PKCS8PrivateKey(bio.get(), const_cast<EVP_PKEY*>(key), EVP_aes_256_cbc(),
                                     passphrase.data(), static_cast<int>(passphrase.size()),
                                     nullptr, nullptr)) {
    return openssl_failure("encrypting the private key");
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

Result<EvpPkeyPtr> load_key_pem(const std::string& pem, const std::string& passphrase) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr,
                                          const_cast<char*>(passphrase.c_str()));
  if (!key) return openssl_failure("cannot read the private key (wrong passphrase?)");
  return EvpPkeyPtr(key);
}

std::string key_pem_unencrypted(const EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), const_cast<EVP_PKEY*>(key), nullptr, nullptr, 0, nullptr,
                           nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

bool has_private_part(const EVP_PKEY* key) {
  OSSL_PARAM* params = nullptr;
  if (EVP_PKEY_todata(key, EVP_PKEY_KEYPAIR, &params) != 1) {
    ERR_clear_error();
    return false;
  }
  bool has = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_PRIV_KEY) != nullptr ||
             OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_RSA_D) != nullptr;
  OSSL_PARAM_free(params);
  return has;
}

Result<std::string> private_key_pkcs8_der(const EVP_PKEY* key) {
  if (!has_private_part(key)) {
    return make_status(Errc::kInvalidArgument, "the key has no private part");
  }
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!i2d_PKCS8PrivateKeyInfo_bio(bio.get(), const_cast<EVP_PKEY*>(key))) {
    return openssl_failure("encoding the private key (is it a private key?)");
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

Result<EvpPkeyPtr> private_key_from_pkcs8_der(const std::string& der) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
  EVP_PKEY* key = d2i_AutoPrivateKey(nullptr, &p, static_cast<long>(der.size()));
  if (!key) return openssl_failure("decoding a PKCS#8 private key");
  return EvpPkeyPtr(key);
}

Result<std::string> pkcs12(const std::string& friendly_name, const EVP_PKEY* key, const X509* cert,
                           const std::vector<const X509*>& chain, const std::string& password) {
  X509StackPtr ca(sk_X509_new_null());
  for (const X509* c : chain) {
    X509_up_ref(const_cast<X509*>(c));
    sk_X509_push(ca.get(), const_cast<X509*>(c));
  }
  PKCS12* p12 = PKCS12_create(password.c_str(), friendly_name.c_str(), const_cast<EVP_PKEY*>(key),
                              const_cast<X509*>(cert), ca.get(), 0, 0, PKCS12_DEFAULT_ITER,
                              PKCS12_DEFAULT_ITER, 0);
  if (!p12) return openssl_failure("building the PKCS#12 file");
  unsigned char* buf = nullptr;
  int len = i2d_PKCS12(p12, &buf);
  PKCS12_free(p12);
  if (len <= 0) return openssl_failure("encoding the PKCS#12 file");
  std::string out(reinterpret_cast<char*>(buf), static_cast<std::size_t>(len));
  OPENSSL_free(buf);
  return out;
}

Result<std::vector<X509Ptr>> load_pem_chain(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  std::vector<X509Ptr> out;
  while (X509* c = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(c);
  ERR_clear_error();  // the end of the file reads as an error
  if (out.empty()) return make_status(Errc::kCorrupt, "no PEM certificate found");
  return out;
}

std::int64_t asn1_time_to_unix(const ASN1_TIME* t) {
  struct tm tm {};
  if (!ASN1_TIME_to_tm(t, &tm)) return 0;
  return static_cast<std::int64_t>(timegm(&tm));
}

std::string random_password(std::size_t length) {
  // No look-alike characters: the password is read off a screen and typed.
  static const char kAlphabet[] = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  const std::size_t n = sizeof kAlphabet - 1;
  std::string out;
  while (out.size() < length) {
    unsigned char b;
    PF_CHECK(RAND_bytes(&b, 1) == 1, "RAND_bytes failed");
    if (b >= 256 - (256 % n)) continue;  // no modulo bias
    out.push_back(kAlphabet[b % n]);
  }
  return out;
}

}  // namespace persoflow::cmhost::crypto
