// Simulated cards, readers, feeder and CM link (devices.hpp).
#include "persoflow/sim/devices.hpp"

#include <cstdio>

namespace persoflow::sim {

namespace dv = devices;

namespace {

Status removed(const std::string& serial) {
  return make_status(Errc::kUnavailable,
                     "card " + serial + " is not in its reader (CKR_DEVICE_REMOVED)");
}

// "SIMCERT serial=<hex> subject=<dn>" -> its serial and subject.
Result<std::pair<std::string, std::string>> parse_sim_certificate(std::string_view der) {
  constexpr std::string_view kSerial = "SIMCERT serial=";
  constexpr std::string_view kSubject = " subject=";
  const auto at = der.find(kSubject);
  if (der.rfind(kSerial, 0) != 0 || at == std::string_view::npos) {
    return make_status(Errc::kInvalidArgument, "not a simulated certificate");
  }
  return std::pair{std::string(der.substr(kSerial.size(), at - kSerial.size())),
                   std::string(der.substr(at + kSubject.size()))};
}

}  // namespace

SimCard::SimCard(std::string serial, std::string user_pin, int key_entries)
    : user_pin_(std::move(user_pin)), key_entries_(key_entries) {
  token_.label = "sim-" + serial;
  token_.serial = std::move(serial);
  token_.manufacturer = "persoflow simulation";
  token_.model = "SimCard";
  token_.initialized = true;
  token_.login_required = true;
  token_.has_rng = true;
  token_.pin.user_pin_initialized = true;
  random_state_ = std::hash<std::string>{}(token_.serial);
}

Status SimCard::present() const { return inserted_ ? Status::ok() : removed(token_.serial); }

Status SimCard::login(dv::UserType who, std::string_view pin) {
  PF_RETURN_IF_ERROR(present());
  if (who != dv::UserType::kUser || pin != user_pin_) {
    return make_status(Errc::kPermissionDenied,
                       "wrong user PIN for token '" + token_.label + "' (CKR_PIN_INCORRECT)");
  }
  logged_in_ = true;
  return Status::ok();
}

Status SimCard::logout() {
  logged_in_ = false;
  return Status::ok();
}

Result<dv::PinState> SimCard::pin_state() {
  PF_RETURN_IF_ERROR(present());
  return token_.pin;
}

Result<dv::CardContents> SimCard::read_contents(const dv::TransportCertificateRule& rule) {
  PF_RETURN_IF_ERROR(present());
  dv::CardContents contents;
  contents.token = token_;
  contents.logged_in = logged_in_;
  for (const auto& [id, key] : keys_) contents.keys.push_back(key);
  for (const auto& [id, cert] : certificates_) {
    contents.certificates.push_back(cert);
    contents.certificates.back().transport_certificate = rule.matches(cert);
  }
  return contents;
}

Status SimCard::check_keygen_supported(const dv::KeyAlgorithm& algorithm) {
  PF_RETURN_IF_ERROR(present());
  if (algorithm.family == dv::KeyFamily::kRsa && algorithm.bits == 2048) return Status::ok();
  if (algorithm.family == dv::KeyFamily::kEc && algorithm.curve == "secp256r1") return Status::ok();
  return make_status(
      Errc::kUnsupported,
      "the simulated card generates RSA:2048 and EC:secp256r1 only, not " + algorithm.to_string());
}

Result<dv::KeyInfo> SimCard::generate_key(const dv::KeyAlgorithm& algorithm,
                                          std::string_view idempotency_key,
                                          std::string_view label) {
  PF_RETURN_IF_ERROR(present());
  if (!logged_in_) return make_status(Errc::kPermissionDenied, "key generation needs a login");
  PF_RETURN_IF_ERROR(check_keygen_supported(algorithm));
  const auto id = dv::derive_key_id(idempotency_key);
  if (auto it = keys_.find(id); it != keys_.end()) {
    if (it->second.algorithm() != algorithm) {
      return make_status(Errc::kAlreadyExists,
                         "another key is stored under id " + it->second.id_hex);
    }
    return it->second;
  }
  if (static_cast<int>(keys_.size()) >= key_entries_) {
    return make_status(Errc::kUnavailable, "no free key entry (CKR_DEVICE_MEMORY)");
  }
  dv::KeyInfo key;
  key.id = id;
  key.id_hex = dv::to_hex(id);
  key.label = std::string(label);
  const bool rsa = algorithm.family == dv::KeyFamily::kRsa;
  key.type = rsa ? dv::KeyType::kRsa : dv::KeyType::kEc;
  key.bits = algorithm.bits;
  key.curve = algorithm.curve;
  key.has_private = key.has_public = true;
  key.usage = {"sign", "verify"};
  keys_.emplace(id, key);
  return key;
}

Result<std::optional<dv::KeyInfo>> SimCard::find_key_by_idempotency_key(
    std::string_view idempotency_key) {
  return find_key(dv::derive_key_id(idempotency_key));
}

Result<std::optional<dv::KeyInfo>> SimCard::find_key(const std::vector<unsigned char>& id) {
  PF_RETURN_IF_ERROR(present());
  auto it = keys_.find(id);
  if (it == keys_.end()) return std::optional<dv::KeyInfo>{};
  return std::optional<dv::KeyInfo>{it->second};
}

Status SimCard::store_certificate(std::string_view der, const std::vector<unsigned char>& id,
                                  std::string_view label) {
  PF_RETURN_IF_ERROR(present());
  PF_ASSIGN_OR_RETURN(auto parsed, parse_sim_certificate(der));
  if (auto it = certificates_.find(id); it != certificates_.end()) {
    if (it->second.der == der) return Status::ok();  // the same certificate: done
    return make_status(Errc::kAlreadyExists,
                       "another certificate is stored under id " + it->second.id_hex);
  }
  if (!keys_.count(id)) return make_status(Errc::kNotFound, "no key under id " + dv::to_hex(id));
  dv::CertificateInfo cert;
  cert.id = id;
  cert.id_hex = dv::to_hex(id);
  cert.label = std::string(label);
  cert.serial_hex = parsed.first;
  cert.subject = parsed.second;
  cert.issuer = "CN=persoflow simulated CA";
  cert.der = std::string(der);
  certificates_.emplace(id, std::move(cert));
  return Status::ok();
}

Status SimCard::delete_certificates(const std::vector<unsigned char>& id) {
  PF_RETURN_IF_ERROR(present());
  if (certificates_.erase(id) == 0) return make_status(Errc::kNotFound, "no certificate there");
  return Status::ok();
}

// One certificate per key here: the one under id, when its serial matches.
Status SimCard::delete_certificate(const std::vector<unsigned char> &id,
                                   std::string_view serial_hex) {
  PF_RETURN_IF_ERROR(present());
  auto it = certificates_.find(id);
  if (it == certificates_.end() || it->second.serial_hex != serial_hex)
    return make_status(Errc::kNotFound, "no certificate " + std::string(serial_hex) + " there");
  certificates_.erase(it);
  return Status::ok();
}

Status SimCard::delete_key(const std::vector<unsigned char> &id) {
  PF_RETURN_IF_ERROR(present());
  if (keys_.erase(id) == 0) return make_status(Errc::kNotFound, "no key there");
  return Status::ok();
}

Status SimCard::change_user_pin(std::string_view old_pin, std::string_view new_pin) {
  PF_RETURN_IF_ERROR(present());
  if (old_pin != user_pin_) {
    return make_status(Errc::kPermissionDenied, "wrong user PIN (CKR_PIN_INCORRECT)");
  }
  user_pin_ = std::string(new_pin);
  return Status::ok();
}

Status SimCard::unblock_user_pin(std::string_view, std::string_view new_user_pin) {
  PF_RETURN_IF_ERROR(present());
  user_pin_ = std::string(new_user_pin);
  return Status::ok();
}

// The simulated card keeps no SO PIN: any change is accepted.
Status SimCard::change_so_pin(std::string_view, std::string_view) { return present(); }

Result<std::vector<unsigned char>> SimCard::random_bytes(std::size_t n) {
  PF_RETURN_IF_ERROR(present());
  std::vector<unsigned char> out(n);
  for (auto& b : out) {
    random_state_ = random_state_ * 6364136223846793005ULL + 1442695040888963407ULL;
    b = static_cast<unsigned char>(random_state_ >> 56);
  }
  return out;
}

Result<std::string> SimCard::make_csr(const std::vector<unsigned char>&, std::string_view) {
  return make_status(Errc::kUnsupported, "a simulated card makes no PKCS#10 request");
}

Result<EVP_PKEY*> SimCard::private_key(const std::vector<unsigned char>&) {
  return make_status(Errc::kUnsupported, "a simulated card has no OpenSSL key");
}

void SimReader::insert(SimCard* card) {
  if (card_ != nullptr) std::abort();  // the feeder put a card into a full reader: a sim bug
  card_ = card;
  card_->set_inserted(true);
}

SimCard* SimReader::remove() {
  SimCard* card = card_;
  card_ = nullptr;
  if (card) card->set_inserted(false);
  return card;
}

SimFeeder::SimFeeder(std::size_t cards, const std::string& user_pin, int key_entries) {
  cards_.reserve(cards);
  for (std::size_t i = 0; i < cards; ++i) {
    char serial[32];
    std::snprintf(serial, sizeof serial, "SIM%08zu", i + 1);
    cards_.push_back(std::make_unique<SimCard>(serial, user_pin, key_entries));
  }
}

SimCard* SimFeeder::next() { return fed_ < cards_.size() ? cards_[fed_++].get() : nullptr; }

SimCmLink::Issued SimCmLink::enroll(const std::string& transaction_id, const std::string& subject) {
  if (auto it = issued_.find(transaction_id); it != issued_.end()) {
    ++repeats_;
    return it->second;
  }
  char serial[24];
  std::snprintf(serial, sizeof serial, "%llX", static_cast<unsigned long long>(next_serial_++));
  Issued issued{serial, std::string("SIMCERT serial=") + serial + " subject=" + subject};
  issued_.emplace(transaction_id, issued);
  return issued;
}

}  // namespace persoflow::sim
