// The parts of card.hpp that need no PKCS#11: hex, certificate description with OpenSSL, the
// transport-certificate rule, key-id derivation, PIN-state wording.
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <memory>

#include "persoflow/devices/card.hpp"

namespace persoflow::devices {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string name_rfc2253(const X509_NAME* name) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

std::string iso_time(const ASN1_TIME* t) {
  std::tm tm{};
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return "";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// A DN for comparison: RFC 2253 order and separators, lower case, no blanks around ',' and '='.
// "/O=Example/CN=TC" (OpenSSL one-line, most significant first) becomes "cn=tc,o=example".
std::string normalise_dn(std::string_view dn) {
  std::vector<std::string> parts;
  std::string s(dn);
  if (!s.empty() && s[0] == '/') {
    std::string cur;
    for (std::size_t i = 1; i <= s.size(); ++i) {
      if (i == s.size() || s[i] == '/') {
        parts.push_back(cur);
        cur.clear();
      } else {
        cur += s[i];
      }
    }
    std::reverse(parts.begin(), parts.end());
  } else {
    std::string cur;
    for (std::size_t i = 0; i <= s.size(); ++i) {
      if (i == s.size() || (s[i] == ',' && (i == 0 || s[i - 1] != '\\'))) {
        parts.push_back(cur);
        cur.clear();
      } else {
        cur += s[i];
      }
    }
  }
  std::string out;
  for (auto& p : parts) {
    auto eq = p.find('=');
    auto trim = [](std::string v) {
      while (!v.empty() && std::isspace(static_cast<unsigned char>(v.front()))) v.erase(v.begin());
      while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.pop_back();
      return v;
    };
    std::string norm =
        eq == std::string::npos ? trim(p) : trim(p.substr(0, eq)) + "=" + trim(p.substr(eq + 1));
    if (!out.empty()) out += ',';
    out += lower(norm);
  }
  return out;
}

}  // namespace

std::string to_hex(const std::vector<unsigned char>& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

Result<std::vector<unsigned char>> from_hex(std::string_view hex) {
  std::string clean;
  for (char c : hex) {
    if (c == ':' || c == ' ') continue;
    clean += c;
  }
  if (clean.size() % 2 != 0) {
    return make_status(Errc::kInvalidArgument,
                       "odd number of hex digits in '" + std::string(hex) + "'");
  }
  std::vector<unsigned char> out;
  for (std::size_t i = 0; i < clean.size(); i += 2) {
    auto v = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    int hi = v(clean[i]), lo = v(clean[i + 1]);
    if (hi < 0 || lo < 0) {
      return make_status(Errc::kInvalidArgument, "not hexadecimal: '" + std::string(hex) + "'");
    }
    out.push_back(static_cast<unsigned char>(hi * 16 + lo));
  }
  return out;
}

Result<CertificateInfo> describe_certificate(std::string_view der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  std::unique_ptr<X509, decltype(&X509_free)> x509(
      d2i_X509(nullptr, &p, static_cast<long>(der.size())), X509_free);
  if (!x509) return make_status(Errc::kCorrupt, "not a DER X.509 certificate");
  CertificateInfo info;
  info.der = std::string(der);
  info.subject = name_rfc2253(X509_get_subject_name(x509.get()));
  info.issuer = name_rfc2253(X509_get_issuer_name(x509.get()));
  std::unique_ptr<BIGNUM, decltype(&BN_free)> bn(
      ASN1_INTEGER_to_BN(X509_get0_serialNumber(x509.get()), nullptr), BN_free);
  if (bn) {
    char* hex = BN_bn2hex(bn.get());
    info.serial_hex = hex;
    OPENSSL_free(hex);
  }
  info.not_before = iso_time(X509_get0_notBefore(x509.get()));
  info.not_after = iso_time(X509_get0_notAfter(x509.get()));
  auto* policies = static_cast<CERTIFICATEPOLICIES*>(
      X509_get_ext_d2i(x509.get(), NID_certificate_policies, nullptr, nullptr));
  if (policies) {
    for (int i = 0; i < sk_POLICYINFO_num(policies); ++i) {
      char oid[128];
      OBJ_obj2txt(oid, sizeof oid, sk_POLICYINFO_value(policies, i)->policyid, 1);
      info.policy_oids.push_back(oid);
    }
    CERTIFICATEPOLICIES_free(policies);
  }
  return info;
}

TransportCertificateRule TransportCertificateRule::defaults() {
  TransportCertificateRule r;
  r.label_prefixes = {"Transport"};
  return r;
}

bool TransportCertificateRule::matches(const CertificateInfo& cert) const {
  const std::string issuer = normalise_dn(cert.issuer);
  for (const auto& dn : issuer_dns) {
    if (normalise_dn(dn) == issuer) return true;
  }
  for (const auto& oid : policy_oids) {
    if (std::find(cert.policy_oids.begin(), cert.policy_oids.end(), oid) !=
        cert.policy_oids.end()) {
      return true;
    }
  }
  const std::string label = lower(cert.label);
  for (const auto& prefix : label_prefixes) {
    if (!prefix.empty() && label.rfind(lower(prefix), 0) == 0) return true;
  }
  return false;
}

std::vector<unsigned char> derive_key_id(std::string_view idempotency_key) {
  static constexpr char kDomain[] = "persoflow-key-id";  // with its NUL: a domain separator
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  PF_CHECK(ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1 &&
               EVP_DigestUpdate(ctx.get(), kDomain, sizeof kDomain) == 1 &&
               EVP_DigestUpdate(ctx.get(), idempotency_key.data(), idempotency_key.size()) == 1 &&
               EVP_DigestFinal_ex(ctx.get(), digest, &len) == 1,
           "SHA-256 failed");
  return std::vector<unsigned char>(digest, digest + 20);
}

const char* key_type_name(KeyType t) {
  switch (t) {
    case KeyType::kRsa:
      return "RSA";
    case KeyType::kEc:
      return "EC";
    case KeyType::kOther:
      return "other";
  }
  return "other";
}

std::optional<KeyAlgorithm> KeyInfo::algorithm() const {
  if (type == KeyType::kRsa && bits > 0) return KeyAlgorithm{KeyFamily::kRsa, bits, ""};
  if (type == KeyType::kEc) {
    const auto& known = known_ec_curves();
    if (std::find(known.begin(), known.end(), curve) != known.end()) {
      return KeyAlgorithm{KeyFamily::kEc, bits, curve};
    }
  }
  return std::nullopt;
}

namespace {
std::string describe_pin(bool initialized, bool locked, bool final_try, bool count_low,
                         const char* who) {
  if (!initialized) return std::string("the ") + who + " PIN is not set";
  if (locked) return std::string("the ") + who + " PIN is locked";
  if (final_try) return "one try left before the " + std::string(who) + " PIN locks";
  if (count_low)
    return "fewer tries left (a wrong " + std::string(who) + " PIN was entered before)";
  return "no wrong " + std::string(who) +
         " PIN reported since the last login (or the token does not count them)";
}
}  // namespace

std::string PinState::describe_user() const {
  return describe_pin(user_pin_initialized, user_locked, user_final_try, user_count_low, "user");
}

std::string PinState::describe_so() const {
  return describe_pin(true, so_locked, so_final_try, so_count_low, "SO");
}

std::string TokenSelector::to_string() const {
  std::string s;
  auto add = [&](const char* what, const std::string& v) {
    if (v.empty()) return;
    if (!s.empty()) s += ", ";
    s += std::string(what) + " '" + v + "'";
  };
  add("reader", reader);
  add("serial", serial);
  add("label", label);
  if (uri) {
    if (!s.empty()) s += ", ";
    s += "a PKCS#11 URI";
    if (uri->token)
      s += " with token '" + *uri->token + "'";
    else if (uri->serial)
      s += " with serial '" + *uri->serial + "'";
  }
  return s.empty() ? "any token" : s;
}

std::string module_path_for(const TokenSelector& selector, const std::string& fallback) {
  if (selector.uri && selector.uri->module_path) return *selector.uri->module_path;
  return fallback;
}

}  // namespace persoflow::devices
