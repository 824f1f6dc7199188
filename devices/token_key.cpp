// A key in a PKCS#11 token as an EVP_PKEY; see token_key.hpp. Built on the Card of
// pkcs11_card.cpp (module loading, login, on-token key generation, libp11 EVP_PKEY).
#include "persoflow/devices/token_key.hpp"

#include <openssl/evp.h>

namespace persoflow::devices {

TokenKey::~TokenKey() {
  // The EVP_PKEY first: freeing it calls into libp11, which needs the module the card holds.
  EVP_PKEY_free(key_);
}

const TokenInfo& TokenKey::token() const { return card_->token(); }

Result<std::unique_ptr<TokenKey>> open_token_key(const TokenKeyOptions& options,
                                                 const std::string& generate_algorithm) {
  PF_ASSIGN_OR_RETURN(Pkcs11Uri uri, parse_pkcs11_uri(options.uri));
  if (!uri.names_token()) {
    return make_status(Errc::kInvalidArgument,
                       "the key URI names no token (add token=LABEL or serial=...): " +
                           options.uri);
  }
  if (!uri.object && !uri.id) {
    return make_status(Errc::kInvalidArgument,
                       "the key URI names no key (add object=LABEL or id=...): " + options.uri);
  }
  if (uri.type && *uri.type != "private") {
    return make_status(Errc::kInvalidArgument, "the key URI must name a private key, not type=" +
                                                   *uri.type);
  }
  std::optional<KeyAlgorithm> algorithm;
  if (!generate_algorithm.empty()) {
    PF_ASSIGN_OR_RETURN(algorithm, parse_key_algorithm(generate_algorithm));
    if (!uri.object) {
      return make_status(Errc::kInvalidArgument,
                         "generating a key needs its label in the URI (object=LABEL)");
    }
  }
  TokenSelector selector;
  selector.uri = uri;
  const std::string module = module_path_for(selector, options.module);
  std::unique_ptr<TokenKey> out(new TokenKey());
  PF_ASSIGN_OR_RETURN(out->card_, open_card(module, selector));
  Card& card = *out->card_;
  PF_RETURN_IF_ERROR(card.login(UserType::kUser, options.pin));
  PF_ASSIGN_OR_RETURN(CardContents contents, card.read_contents(TransportCertificateRule{}));
  std::vector<KeyInfo> matches;
  for (const auto& k : contents.keys) {
    if (!k.has_private) continue;
    if (uri.object && k.label != *uri.object) continue;
    if (uri.id && k.id != *uri.id) continue;
    matches.push_back(k);
  }
  const std::string where = "token '" + contents.token.label + "'";
  if (matches.size() > 1) {
    return make_status(Errc::kAlreadyExists, std::to_string(matches.size()) +
                                                 " private keys on " + where + " match " +
                                                 options.uri + ": name one by id=");
  }
  if (matches.empty()) {
    if (!algorithm) {
      return make_status(Errc::kNotFound, "no private key on " + where + " matches " + options.uri);
    }
    PF_RETURN_IF_ERROR(card.check_keygen_supported(*algorithm));
    PF_ASSIGN_OR_RETURN(KeyInfo generated,
                        card.generate_key(*algorithm, "persoflow-token-key:" + *uri.object,
                                          *uri.object));
    matches.push_back(std::move(generated));
  } else if (algorithm && matches.front().algorithm() != algorithm) {
    return make_status(Errc::kAlreadyExists,
                       "the key " + options.uri + " on " + where + " is " +
                           (matches.front().algorithm() ? matches.front().algorithm()->to_string()
                                                        : std::string("of another kind")) +
                           ", not " + algorithm->to_string());
  }
  out->info_ = matches.front();
  PF_ASSIGN_OR_RETURN(out->key_, card.private_key(out->info_.id));
  return out;
}

}  // namespace persoflow::devices
