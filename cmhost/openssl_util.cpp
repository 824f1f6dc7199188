// Conversions between bytes and OpenSSL objects, serial-number and name formatting
// (include/persoflow/cmhost/openssl_ptr.hpp). OpenSSL errors are turned into Status once, here.
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cctype>
#include <vector>

#include "persoflow/cmhost/openssl_ptr.hpp"

namespace persoflow::cmhost {

X509Ptr share(X509* cert) {
  if (cert) X509_up_ref(cert);
  return X509Ptr(cert);
}

EvpPkeyPtr share(EVP_PKEY* key) {
  if (key) EVP_PKEY_up_ref(key);
  return EvpPkeyPtr(key);
}

std::string openssl_errors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

Status openssl_failure(const std::string& what) {
  unsigned long first = ERR_peek_error();
  std::string errors = openssl_errors();
  return Status(std::error_code(static_cast<int>(ERR_GET_REASON(first)), openssl_category()),
                errors.empty() ? what : what + ": " + errors);
}

Result<std::string> to_der(const X509* cert) {
  unsigned char* buf = nullptr;
  int len = i2d_X509(cert, &buf);
  if (len <= 0) return openssl_failure("encoding certificate");
  std::string out(reinterpret_cast<char*>(buf), static_cast<std::size_t>(len));
  OPENSSL_free(buf);
  return out;
}

Result<X509Ptr> x509_from_der(std::string_view der) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) return openssl_failure("not a DER certificate");
  return cert;
}

Result<X509Ptr> x509_from_bytes(std::string_view bytes) {
  if (bytes.find("-----BEGIN") != std::string_view::npos) {
    BioPtr bio(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) return openssl_failure("not a PEM certificate");
    return cert;
  }
  return x509_from_der(bytes);
}

std::string to_pem(const X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), const_cast<X509*>(cert));
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

Result<std::string> public_key_der(const EVP_PKEY* key) {
  unsigned char* buf = nullptr;
  int len = i2d_PUBKEY(const_cast<EVP_PKEY*>(key), &buf);
  if (len <= 0) return openssl_failure("encoding public key");
  std::string out(reinterpret_cast<char*>(buf), static_cast<std::size_t>(len));
  OPENSSL_free(buf);
  return out;
}

std::string serial_hex(const X509* cert) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
  char* hex = BN_bn2hex(bn);
  std::string out = hex ? hex : "";
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

Result<std::string> normalize_serial_hex(std::string_view text) {
  std::string digits;
  std::string_view t = text;
  if (t.size() >= 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) t.remove_prefix(2);
  for (char c : t) {
    if (c == ':' || c == ' ') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) {
      return make_status(Errc::kInvalidArgument,
                         "serial number '" + std::string(text) + "' is not hexadecimal");
    }
    digits.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  std::size_t nz = digits.find_first_not_of('0');
  digits = nz == std::string::npos ? std::string() : digits.substr(nz);
  if (digits.empty()) {
    return make_status(Errc::kInvalidArgument,
                       "serial number '" + std::string(text) + "' is empty or zero");
  }
  if (digits.size() % 2) digits.insert(digits.begin(), '0');
  return digits;
}

std::string name_to_string(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

namespace {

std::string trim(std::string_view s) {
  std::size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return std::string(s.substr(a, b - a));
}

}  // namespace

Result<X509NamePtr> parse_name(std::string_view text) {
  // Split on unescaped separators: '/' form when it starts with '/', else ','. RFC 2253 lists
  // the most significant RDN last, so a comma-separated name is reversed.
  bool slash = !text.empty() && text.front() == '/';
  char sep = slash ? '/' : ',';
  std::vector<std::string> parts;
  std::string cur;
  for (std::size_t i = slash ? 1 : 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\\' && i + 1 < text.size()) {
      cur.push_back(text[++i]);
      continue;
    }
    if (c == sep) {
      parts.push_back(cur);
      cur.clear();
      continue;
    }
    cur.push_back(c);
  }
  parts.push_back(cur);
  if (!slash) std::reverse(parts.begin(), parts.end());
  X509NamePtr name(X509_NAME_new());
  for (const auto& raw : parts) {
    std::string part = trim(raw);
    if (part.empty()) {
      return make_status(Errc::kInvalidArgument,
                         "subject '" + std::string(text) + "' has an empty component");
    }
    auto eq = part.find('=');
    if (eq == std::string::npos || eq == 0) {
      return make_status(Errc::kInvalidArgument, "subject component '" + part +
                                                     "' is not of the form NAME=value");
    }
    std::string field = trim(part.substr(0, eq));
    std::string value = trim(part.substr(eq + 1));
    if (value.empty()) {
      return make_status(Errc::kInvalidArgument, "subject field '" + field + "' has no value");
    }
    if (OBJ_txt2nid(field.c_str()) == NID_undef) {
      return make_status(Errc::kInvalidArgument, "unknown subject field '" + field + "'");
    }
    if (!X509_NAME_add_entry_by_txt(name.get(), field.c_str(), MBSTRING_UTF8,
                                    reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                    0)) {
      openssl_errors();
      return make_status(Errc::kInvalidArgument,
                         "subject field '" + field + "' cannot hold '" + value + "'");
    }
  }
  return name;
}

}  // namespace persoflow::cmhost
