// What the crash-test scenarios share: setting up a trial's SoftHSM2 cards and station
// configuration, and looking from outside at what a trial left behind (pkcs11-tool on the cards,
// `persoflow cm certs list` and `cm keys recover` on the CM host, `openssl` on the files).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "scenario.hpp"

namespace persoflow::crashtest {

inline constexpr const char* kSoftHsmModule = "/usr/lib/softhsm/libsofthsm2.so";
inline constexpr const char* kCardPin = "123456";

std::string two_digits(int i);

Status write_text(const fs::path& path, const std::string& text);

// Makes <trial>/tokens/softhsm2.conf and one blank SoftHSM2 token per label (user PIN kCardPin).
Status make_cards(const Trial& t, const std::vector<std::string>& labels);
fs::path softhsm_conf(const Trial& t);

// Writes <trial>/station/station.conf (and the card PIN file) for the trial's cards; `extra`
// is merged over the defaults.
Status write_station_conf(const Trial& t, const nlohmann::json& extra = nlohmann::json::object());
fs::path station_conf(const Trial& t);
// The station journal of the configuration above.
fs::path station_journal(const Trial& t);

// Objects pkcs11-tool lists on a card.
struct CardObjects {
  bool login_ok = false;
  int private_keys = 0;
  int public_keys = 0;
  struct Certificate {
    std::string serial, id, label;
  };
  std::vector<Certificate> certificates;
  std::vector<std::string> private_key_ids;
  std::vector<std::string> public_key_ids;
  // Key objects without CKA_ID: SoftHSM2 creates a key object and then sets its attributes in
  // further writes of its file store, so a process killed inside C_GenerateKeyPair (on another
  // card's thread) can leave a half-made object no workflow ever saw.
  int half_made() const {
    return private_keys - static_cast<int>(private_key_ids.size()) + public_keys -
           static_cast<int>(public_key_ids.size());
  }
  // Drops the half-made key objects from the counts (a SoftHSM2 tear, counted apart).
  bool drop_half_made() {
    if (half_made() <= 0) return false;
    private_keys = static_cast<int>(private_key_ids.size());
    public_keys = static_cast<int>(public_key_ids.size());
    return true;
  }
};
CardObjects list_card(const Trial& t, const std::string& label, const std::string& pin);

// Cards of the trial whose token.object SoftHSM2 left empty (CheckResult::tears).
int count_torn_tokens(const Trial& t);

// "0A1B" and "A1B" are the same serial.
std::string normal_serial(std::string s);

// Every certificate the CM host holds whose subject contains `subject` (cm certs list --json),
// or nullopt when the listing fails.
std::optional<nlohmann::json> cm_certificates(const Trial& t, const std::string& subject);
// Of those, the ones whose subject has exactly this CN.
std::vector<nlohmann::json> with_common_name(const nlohmann::json& certs, const std::string& cn);

// The SubjectPublicKeyInfo (PEM) of a certificate or key file, read by openssl; empty on failure.
std::string public_key_of_certificate(const fs::path& cert, bool der);
std::string public_key_of_private_key(const fs::path& key, const std::string& password = "");

// Asks the CM host to recover the last key archived for the certificate `serial` (cm keys
// recover, enveloped for the run's recovery certificate), opens the envelope with openssl cms and
// returns the recovered key's public key (PEM), or an error naming what failed.
Result<std::string> recover_archived_public_key(const Trial& t, const std::string& serial);

}  // namespace persoflow::crashtest
