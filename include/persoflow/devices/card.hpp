// A smart card (or any PKCS#11 token) as persoflow uses it: find it, log in, read its keys and
// certificates, generate keys, store and delete objects, manage the user PIN, sign a CSR.
//
// The real implementation (devices/pkcs11_card.cpp) goes through libp11 and the module's own
// PKCS#11 functions; a simulated card (sim/) may implement the same Card interface.
//
// Threading: every call is a plain synchronous, blocking call (an RSA-4096 keygen takes seconds);
// actors run them on a pool and post the result back. One Card object serialises its own calls
// with an internal mutex, so it may be handed from thread to thread; different Card objects may
// be used in parallel. All Cards of one module path share one loaded module (a PKCS#11 module is
// initialised once per process; unloading it would end every other Card's sessions), which is
// unloaded when the last Card and token listing of that path is gone.
//
// Errors: Status / Result with pkcs11_category() codes (the CKR_* value) and a message naming the
// CKR constant, or Errc codes for what is not the token's answer (not found, unsupported, ...).
#pragma once

#include <openssl/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "persoflow/common/status.hpp"
#include "persoflow/devices/keygen_list.hpp"
#include "persoflow/devices/pkcs11_uri.hpp"

namespace persoflow::devices {

// OpenSC's module, for real cards.
inline constexpr const char* kDefaultPkcs11Module = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";

// "CKR_PIN_INCORRECT" for a CK_RV value; "CKR_0x..." for one it does not know.
std::string ckr_name(unsigned long rv);

// Whether a login was refused for its PIN (wrong, locked, expired, invalid): trying the same PIN
// again cannot help and uses up the card's tries.
bool is_pin_refused(const Status& status);
// Whether a card call failed because the card has no room left (CKR_DEVICE_MEMORY): the workflow
// rolls back what it wrote and fails, saying so, instead of trying again.
bool is_card_full(const Status& status);

// The user or SO PIN's state as the token reports it in CK_TOKEN_INFO.flags. Tokens need not
// report counts (SoftHSM2 reports none): all false then means "nothing reported".
struct PinState {
  bool user_pin_initialized = false;
  bool user_count_low = false;  // CKF_USER_PIN_COUNT_LOW: a wrong PIN was entered since
  bool user_final_try = false;  // CKF_USER_PIN_FINAL_TRY: one more wrong PIN locks it
  bool user_locked = false;     // CKF_USER_PIN_LOCKED
  bool user_to_be_changed = false;
  bool so_count_low = false;
  bool so_final_try = false;
  bool so_locked = false;
  bool so_to_be_changed = false;
  // "the user PIN is locked" / "one try left" / "fewer tries left" / "the token reports no
  // retry count"
  std::string describe_user() const;
  std::string describe_so() const;
};

struct TokenInfo {
  std::string label;
  std::string serial;
  std::string manufacturer;
  std::string model;
  std::string slot_description;  // with OpenSC: the PC/SC reader name
  std::string slot_manufacturer;
  bool initialized = false;  // CKF_TOKEN_INITIALIZED (a blank SoftHSM2 slot is not)
  bool login_required = false;
  bool protected_authentication_path = false;  // a PIN pad on the reader
  bool has_rng = false;
  PinState pin;
};

enum class KeyType { kRsa, kEc, kOther };
const char* key_type_name(KeyType t);  // "RSA", "EC", "other"

struct KeyInfo {
  std::vector<unsigned char> id;  // CKA_ID
  std::string id_hex;             // lower-case hex of id
  std::string label;
  KeyType type = KeyType::kOther;
  int bits = 0;              // RSA modulus size, EC field size
  std::string curve;         // EC: "secp256r1", "brainpoolP320r1", or the OID when unknown
  bool has_private = false;  // a private key object is visible (after login)
  bool has_public = false;
  // An object of the pair lacks its key material (EC parameters and point, RSA modulus): a
  // process killed inside C_GenerateKeyPair on SoftHSM2, which creates each object and sets its
  // key material in a further write. Such a key was never usable, so nothing was done with it.
  bool half_made = false;
  // Usage flags of the private key (sign, decrypt, unwrap, derive) and the public key (verify,
  // encrypt, wrap), as the token stores them.
  std::vector<std::string> usage;
  std::optional<KeyAlgorithm> algorithm() const;  // RSA:n or EC:curve, when it is one of ours
};

struct CertificateInfo {
  std::vector<unsigned char> id;  // CKA_ID: the key it belongs to
  std::string id_hex;
  std::string label;
  std::string subject;  // RFC 2253: "CN=Alice,O=Example"
  std::string issuer;
  std::string serial_hex;  // upper-case, no leading zeros ("0" for zero)
  std::string not_before;  // ISO 8601 UTC: "2026-11-22T02:20:00Z"
  std::string not_after;
  std::vector<std::string> policy_oids;  // certificatePolicies, dotted
  bool transport_certificate = false;    // by the TransportCertificateRule given to read
  std::string der;
};

// How to recognise a transport certificate (TC): any rule that matches marks it. A DN compares
// case-insensitively in RFC 2253 form ("CN=Transport CA,O=Example"); the OpenSSL one-line form
// ("/O=Example/CN=Transport CA") is accepted too. Label prefixes compare case-insensitively.
struct TransportCertificateRule {
  std::vector<std::string> issuer_dns;
  std::vector<std::string> policy_oids;
  std::vector<std::string> label_prefixes;
  // The documented default: a label starting with "Transport" (what the pre-personalisation
  // writes); issuer and policy rules are site-specific and empty by default.
  static TransportCertificateRule defaults();
  bool matches(const CertificateInfo& cert) const;
};

struct CardContents {
  TokenInfo token;
  bool logged_in = false;  // without login, private keys are not visible
  std::vector<KeyInfo> keys;
  std::vector<CertificateInfo> certificates;
};

// How to find a token. Exactly one of reader, serial, label, uri is normally given; given several,
// all must match. Never a slot number: slot ids change.
struct TokenSelector {
  std::string reader;  // the slot description (the PC/SC reader name with OpenSC)
  std::string serial;
  std::string label;
  std::optional<Pkcs11Uri> uri;
  std::string to_string() const;  // for messages
};

// CKA_ID of a key generated for an idempotency key: the first 20 bytes of
// SHA-256("persoflow-key-id\0" || idempotency_key). The same workflow step always derives the
// same id, so a resumed workflow asks the card whether its key exists before generating again.
std::vector<unsigned char> derive_key_id(std::string_view idempotency_key);

enum class UserType { kUser, kSecurityOfficer };

class Card {
 public:
  virtual ~Card() = default;

  virtual const TokenInfo& token() const = 0;
  // Logs in. A wrong PIN: pkcs11_category CKR_PIN_INCORRECT with the retry state in the message
  // ("wrong user PIN for token 'X' (CKR_PIN_INCORRECT); the token reports one try left").
  virtual Status login(UserType who, std::string_view pin) = 0;
  virtual Status logout() = 0;
  // Fresh flags from the token (C_GetTokenInfo), not the state at open.
  virtual Result<PinState> pin_state() = 0;

  virtual Result<CardContents> read_contents(const TransportCertificateRule& rule) = 0;

  // Whether the token can generate this algorithm: the mechanism is there, the size within the
  // token's range. Errc::kUnsupported with the reason otherwise.
  virtual Status check_keygen_supported(const KeyAlgorithm& algorithm) = 0;
  // Generates a key pair on the card under CKA_ID = derive_key_id(idempotency_key), or returns
  // the key already there under that id (generated by an earlier, interrupted attempt). A pair
  // such an attempt left unfinished (KeyInfo::half_made, or its public half only) is removed and
  // generated whole. A key there of another algorithm is Errc::kAlreadyExists. Needs a user login.
  virtual Result<KeyInfo> generate_key(const KeyAlgorithm& algorithm,
                                       std::string_view idempotency_key,
                                       std::string_view label) = 0;
  // The key generated for this idempotency key, if the card holds it.
  virtual Result<std::optional<KeyInfo>> find_key_by_idempotency_key(
      std::string_view idempotency_key) = 0;
  // The key with this CKA_ID, if any.
  virtual Result<std::optional<KeyInfo>> find_key(const std::vector<unsigned char>& id) = 0;

  // Writes a key pair made elsewhere (generated and archived, or recovered, by the CM host) to
  // the card under CKA_ID `id`: the private key (sensitive, not extractable) and its public half.
  // RSA and EC. A private key already under that id counts as done (the id is derived from the
  // workflow, so it is this key written by an earlier attempt); a public half left alone is
  // replaced. Needs a user login. A card that cannot take keys from outside: Errc::kUnsupported.
  virtual Status import_key(EVP_PKEY* key, const std::vector<unsigned char>& id,
                            std::string_view label) {
    (void)key;
    (void)id;
    (void)label;
    return make_status(Errc::kUnsupported, "this card cannot take a key made outside it");
  }

  // Stores an X.509 certificate (DER) under the key id, with a label. The same certificate
  // already stored under that id counts as done.
  virtual Status store_certificate(std::string_view der, const std::vector<unsigned char>& id,
                                   std::string_view label) = 0;
  // Deletes every certificate under the id (a missing one is Errc::kNotFound).
  virtual Status delete_certificates(const std::vector<unsigned char>& id) = 0;
  // Deletes the one certificate under the id with this serial (hex, any case), leaving the
  // key's other certificates: how a certificate is replaced (redo). Errc::kNotFound when absent.
  virtual Status delete_certificate(const std::vector<unsigned char>& id,
                                    std::string_view serial_hex) = 0;
  // Deletes the private and public key objects under the id (Errc::kNotFound when none).
  virtual Status delete_key(const std::vector<unsigned char>& id) = 0;

  // C_SetPIN of the user logged in (or of the public session, as the token allows).
  virtual Status change_user_pin(std::string_view old_pin, std::string_view new_pin) = 0;
  // Logs in as SO, sets a new user PIN (C_InitPIN; this also unblocks a locked one) and logs out.
  // An SO login needs no read-only session of this process open on the token: the module's other
  // sessions on it are closed first, so the user login of this Card is gone afterwards.
  virtual Status unblock_user_pin(std::string_view so_pin, std::string_view new_user_pin) = 0;
  // Logs in as SO and changes the SO PIN (the PUK of a card whose second PIN it is), then logs
  // out. As unblock_user_pin, it ends every other session of this process on the token, the
  // user login included: log in again afterwards.
  virtual Status change_so_pin(std::string_view old_so_pin, std::string_view new_so_pin) = 0;

  virtual Result<std::vector<unsigned char>> random_bytes(std::size_t n) = 0;

  // A PKCS#10 request (DER) for the key under id, subject in RFC 2253 or OpenSSL one-line form,
  // signed by the card with SHA-256. Needs a user login.
  virtual Result<std::string> make_csr(const std::vector<unsigned char>& id,
                                       std::string_view subject) = 0;

  // The private key under id as an OpenSSL EVP_PKEY whose operations run on the card (libp11),
  // for CMP protection or any OpenSSL signing. The caller owns the reference
  // (EVP_PKEY_free); it is valid while this Card lives. Needs a user login.
  virtual Result<EVP_PKEY*> private_key(const std::vector<unsigned char>& id) = 0;
};

// Every token the module sees, with its slot's description (the reader name with OpenSC).
// A module path that does not load: Errc::kNotFound / kUnavailable with the path and dlerror.
Result<std::vector<TokenInfo>> list_tokens(const std::string& module_path);

// Loads the module (shared, see above) and opens the one token matching the selector. No match,
// or several: Errc::kNotFound with the tokens there are.
Result<std::unique_ptr<Card>> open_card(const std::string& module_path,
                                        const TokenSelector& selector);

// The module path to use: the URI's module-path when given, else `fallback`.
std::string module_path_for(const TokenSelector& selector, const std::string& fallback);

// Helpers shared with the software-token and officer code.
std::string to_hex(const std::vector<unsigned char>& bytes);  // lower-case
Result<std::vector<unsigned char>> from_hex(std::string_view hex);
// Fills the certificate fields (not id, label, transport flag) from DER.
Result<CertificateInfo> describe_certificate(std::string_view der);

}  // namespace persoflow::devices
