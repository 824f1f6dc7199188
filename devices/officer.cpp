// Officer tokens on a card (through Card and libp11) or in a PKCS#12 file.
#include "persoflow/devices/officer.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <iterator>

namespace persoflow::devices {
namespace {

class CardOfficer final : public OfficerToken {
 public:
  CardOfficer(std::unique_ptr<Card> card, EVP_PKEY* key, X509* cert, std::string id_hex)
      : card_(std::move(card)), key_(key), cert_(cert), id_hex_(std::move(id_hex)) {}
  ~CardOfficer() override {
    EVP_PKEY_free(key_);
    X509_free(cert_);
  }
  EVP_PKEY* key() const override { return key_; }
  X509* certificate() const override { return cert_; }
  const std::vector<X509*>& chain() const override { return chain_; }
  bool is_software() const override { return false; }
  const std::vector<std::string>& warnings() const override { return warnings_; }
  std::string describe() const override {
    return "card '" + card_->token().label + "' (serial " + card_->token().serial + "), key id " +
           id_hex_;
  }

 private:
  std::unique_ptr<Card> card_;  // outlives key_: libp11 signs through the card's module
  EVP_PKEY* key_;
  X509* cert_;
  std::string id_hex_;
  std::vector<X509*> chain_;
  std::vector<std::string> warnings_;
};

class SoftwareOfficer final : public OfficerToken {
 public:
  SoftwareOfficer(std::string path, EVP_PKEY* key, X509* cert, std::vector<X509*> chain,
                  std::vector<std::string> warnings)
      : path_(std::move(path)),
        key_(key),
        cert_(cert),
        chain_(std::move(chain)),
        warnings_(std::move(warnings)) {}
  ~SoftwareOfficer() override {
    EVP_PKEY_free(key_);
    X509_free(cert_);
    for (X509* c : chain_) X509_free(c);
  }
  EVP_PKEY* key() const override { return key_; }
  X509* certificate() const override { return cert_; }
  const std::vector<X509*>& chain() const override { return chain_; }
  bool is_software() const override { return true; }
  const std::vector<std::string>& warnings() const override { return warnings_; }
  std::string describe() const override { return "software token " + path_; }

 private:
  std::string path_;
  EVP_PKEY* key_;
  X509* cert_;
  std::vector<X509*> chain_;
  std::vector<std::string> warnings_;
};

}  // namespace

Result<std::string> OfficerToken::sign(std::string_view data) const {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  ERR_clear_error();
  std::size_t len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(data.data()),
                     data.size()) != 1) {
    return make_status(std::error_code(1, openssl_category()),
                       "signing with the officer's key failed");
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1) {
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
    return make_status(std::error_code(1, openssl_category()),
                       std::string("signing with the officer's key failed: ") + buf);
  }
  sig.resize(len);
  return sig;
}

Result<std::unique_ptr<OfficerToken>> open_officer_card(const OfficerCardOptions& options,
                                                        std::string_view pin) {
  const std::string module = module_path_for(options.token, options.module_path);
  PF_ASSIGN_OR_RETURN(auto card, open_card(module, options.token));
  PF_RETURN_IF_ERROR(card->login(UserType::kUser, pin));
  PF_ASSIGN_OR_RETURN(CardContents contents, card->read_contents(TransportCertificateRule{}));
  const std::string where = "officer card '" + card->token().label + "'";
  auto cert_for = [&](const std::vector<unsigned char>& id) -> const CertificateInfo* {
    for (const auto& c : contents.certificates) {
      if (c.id == id) return &c;
    }
    return nullptr;
  };
  std::vector<const KeyInfo*> candidates;
  const auto* uri = options.token.uri ? &*options.token.uri : nullptr;
  for (const auto& k : contents.keys) {
    if (!k.has_private) continue;
    if (options.key_id && k.id != *options.key_id) continue;
    if (!options.key_id && uri && uri->id && k.id != *uri->id) continue;
    if (!options.key_id && uri && uri->object && k.label != *uri->object) continue;
    if (std::find(k.usage.begin(), k.usage.end(), "sign") == k.usage.end()) continue;
    if (!cert_for(k.id)) continue;
    candidates.push_back(&k);
  }
  if (candidates.empty()) {
    return make_status(Errc::kNotFound,
                       where + " holds no signing key with a certificate" +
                           std::string(options.key_id ? " under the id given" : ""));
  }
  if (candidates.size() > 1) {
    std::string ids;
    for (const auto* k : candidates) ids += " " + k->id_hex + " ('" + k->label + "')";
    return make_status(
        Errc::kInvalidArgument,
        where + " holds several signing keys with certificates; name one by id:" + ids);
  }
  const KeyInfo& key = *candidates.front();
  const CertificateInfo* cert_info = cert_for(key.id);
  const auto* p = reinterpret_cast<const unsigned char*>(cert_info->der.data());
  X509* cert = d2i_X509(nullptr, &p, static_cast<long>(cert_info->der.size()));
  if (!cert) return make_status(Errc::kCorrupt, where + ": the officer certificate does not parse");
  auto pkey = card->private_key(key.id);
  if (!pkey.is_ok()) {
    X509_free(cert);
    return pkey.status();
  }
  // 0 is a definite mismatch; a negative answer means "cannot compare" (a card key without its
  // public half in libp11), which the CM host will catch when it checks the signature.
  if (EVP_PKEY_eq(X509_get0_pubkey(cert), *pkey) == 0) {
    X509_free(cert);
    EVP_PKEY_free(*pkey);
    return make_status(Errc::kCorrupt, where + ": the certificate under key id " + key.id_hex +
                                           " is not the key's");
  }
  ERR_clear_error();
  const std::string id_hex = key.id_hex;
  return std::unique_ptr<OfficerToken>(new CardOfficer(std::move(card), *pkey, cert, id_hex));
}

Result<std::unique_ptr<OfficerToken>> open_officer_pkcs12(const std::string& path,
                                                          std::string_view password) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return make_status(Errc::kNotFound, "officer software token '" + path + "' cannot be opened");
  }
  std::string der((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  std::unique_ptr<PKCS12, decltype(&PKCS12_free)> p12(
      d2i_PKCS12(nullptr, &p, static_cast<long>(der.size())), PKCS12_free);
  if (!p12) return make_status(Errc::kCorrupt, "'" + path + "' is not a PKCS#12 file");
  std::string pass(password);
  ERR_clear_error();
  if (PKCS12_verify_mac(p12.get(), pass.c_str(), static_cast<int>(pass.size())) != 1) {
    OPENSSL_cleanse(pass.data(), pass.size());
    ERR_clear_error();
    return make_status(Errc::kPermissionDenied,
                       "wrong password for officer software token '" + path + "'");
  }
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
  STACK_OF(X509)* ca = nullptr;
  int ok = PKCS12_parse(p12.get(), pass.c_str(), &key, &cert, &ca);
  OPENSSL_cleanse(pass.data(), pass.size());
  if (ok != 1 || !key || !cert) {
    EVP_PKEY_free(key);
    X509_free(cert);
    sk_X509_pop_free(ca, X509_free);
    ERR_clear_error();
    return make_status(Errc::kCorrupt, "'" + path + "' holds no key with its certificate");
  }
  std::vector<X509*> chain;
  for (int i = 0; ca && i < sk_X509_num(ca); ++i) chain.push_back(sk_X509_value(ca, i));
  sk_X509_free(ca);  // the certificates now belong to `chain`
  std::vector<std::string> warnings{kSoftwareOfficerWarning};
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    warnings.push_back(
        "'" + path + "' is readable by other users (mode " + std::to_string((st.st_mode >> 6) & 7) +
        std::to_string((st.st_mode >> 3) & 7) + std::to_string(st.st_mode & 7) + "): make it 0600");
  }
  return std::unique_ptr<OfficerToken>(
      new SoftwareOfficer(path, key, cert, std::move(chain), std::move(warnings)));
}

}  // namespace persoflow::devices
