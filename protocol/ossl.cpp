// OpenSSL handle helpers and error translation; see ossl.hpp.
#include "persoflow/protocol/ossl.hpp"

#include <openssl/pem.h>

#include <cstdio>

namespace persoflow::protocol {

std::string drain_openssl_errors() {
  std::string out;
  unsigned long code;
  const char* data = nullptr;
  int flags = 0;
  while ((code = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) != 0) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    // The reason string alone reads better than the whole "error:...:lib::reason" form.
    const char* reason = ERR_reason_error_string(code);
    out += reason ? reason : buf;
    if (data && (flags & ERR_TXT_STRING) && *data) {
      out += " (";
      out += data;
      out += ")";
    }
  }
  return out;
}

Status openssl_failure(const std::string& what) {
  std::string detail = drain_openssl_errors();
  return make_status(std::error_code(1, openssl_category()),
                     detail.empty() ? what : what + ": " + detail);
}

Result<std::string> cmp_msg_to_der(const OSSL_CMP_MSG* msg) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || i2d_OSSL_CMP_MSG_bio(bio.get(), msg) <= 0) {
    return openssl_failure("encoding a CMP message");
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

CmpMsgPtr cmp_msg_from_der(const std::string& der) {
  BioPtr bio(BIO_new_mem_buf(der.data(), static_cast<int>(der.size())));
  if (!bio) return nullptr;
  CmpMsgPtr msg(d2i_OSSL_CMP_MSG_bio(bio.get(), nullptr));
  return msg;
}

Result<std::string> x509_to_der(const X509* cert) {
  unsigned char* out = nullptr;
  int len = i2d_X509(cert, &out);
  if (len <= 0) return openssl_failure("encoding a certificate");
  std::string der(reinterpret_cast<char*>(out), static_cast<std::size_t>(len));
  OPENSSL_free(out);
  return der;
}

Result<X509Ptr> x509_from_der(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) return openssl_failure("decoding a certificate");
  return cert;
}

std::string x509_to_pem(const X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

std::string hex(const unsigned char* data, std::size_t len) {
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  out.reserve(len * 2);
  for (std::size_t i = 0; i < len; ++i) {
    out.push_back(digits[data[i] >> 4]);
    out.push_back(digits[data[i] & 15]);
  }
  return out;
}

std::string serial_hex(const ASN1_INTEGER* serial) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
  if (!bn) return {};
  char* text = BN_bn2hex(bn);
  std::string out = text ? text : "";
  OPENSSL_free(text);
  BN_free(bn);
  return out;
}

Result<std::vector<X509Ptr>> read_pem_certs(const std::string& path) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return openssl_failure("opening " + path);
  std::vector<X509Ptr> out;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    out.emplace_back(cert);
  }
  ERR_clear_error();  // the end of the file reads as an error
  if (out.empty()) {
    return make_status(Errc::kInvalidArgument, path + " holds no PEM certificate");
  }
  return out;
}

Result<EvpPkeyPtr> read_pem_key(const std::string& path, const std::string& password) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return openssl_failure("opening " + path);
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr,
                                         const_cast<char*>(password.c_str())));
  if (!key) return openssl_failure("reading the private key in " + path);
  return key;
}

Result<Credentials> load_pkcs12(const std::string& path, const std::string& password) {
  BioPtr bio(BIO_new_file(path.c_str(), "rb"));
  if (!bio) return openssl_failure("opening " + path);
  std::unique_ptr<PKCS12, OsslDeleter<PKCS12_free>> p12(d2i_PKCS12_bio(bio.get(), nullptr));
  if (!p12) return openssl_failure(path + " is not a PKCS#12 file");
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
  STACK_OF(X509)* ca = nullptr;
  if (!PKCS12_parse(p12.get(), password.c_str(), &key, &cert, &ca)) {
    return openssl_failure("opening " + path + " (wrong password?)");
  }
  Credentials out;
  out.key.reset(key);
  out.cert.reset(cert);
  for (int i = 0; ca && i < sk_X509_num(ca); ++i) out.chain.emplace_back(sk_X509_value(ca, i));
  sk_X509_free(ca);
  if (!out.key || !out.cert) {
    return make_status(Errc::kInvalidArgument, path + " holds no key and certificate");
  }
  return out;
}

}  // namespace persoflow::protocol
