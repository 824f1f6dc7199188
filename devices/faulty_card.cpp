// FaultyCard (faulty_card.hpp): forwards every call to the real card, except where a devices
// fault point fires. Which calls count as what:
// - a write (1, 2): generate_key, import_key, store_certificate, delete_certificate(s),
//   delete_key, change_user_pin, unblock_user_pin, change_so_pin;
// - a login (4): login, change_user_pin, unblock_user_pin, change_so_pin;
// - any call (3, 5): every method but token();
// - a write that makes an object (14): generate_key, import_key, store_certificate.
// A pulled card (1, 2) and a blocked PIN (4) stay so for this object's life: the station keeps
// one Card per token, so the rest of the process sees the card gone, as a pulled card would be.
#include "persoflow/devices/faulty_card.hpp"

#include <p11-kit/pkcs11.h>

#include <atomic>

#include "persoflow/common/fault_points.hpp"

namespace persoflow::devices {
namespace {

Status ckr(unsigned long rv, const std::string& what) {
  return Status(std::error_code(static_cast<int>(rv), pkcs11_category()),
                what + ": " + ckr_name(rv) + " (injected fault)");
}

class FaultyCard final : public Card {
 public:
  explicit FaultyCard(std::unique_ptr<Card> card) : card_(std::move(card)) {}

  const TokenInfo& token() const override { return card_->token(); }

  Status login(UserType who, std::string_view pin) override {
    PF_RETURN_IF_ERROR(before_call("C_Login"));
    PF_RETURN_IF_ERROR(before_login("C_Login"));
    return card_->login(who, pin);
  }
  Status logout() override {
    PF_RETURN_IF_ERROR(before_call("C_Logout"));
    return card_->logout();
  }
  Result<PinState> pin_state() override {
    PF_RETURN_IF_ERROR(before_call("C_GetTokenInfo"));
    PF_ASSIGN_OR_RETURN(PinState state, card_->pin_state());
    if (pin_blocked_) state.user_locked = true;
    return state;
  }
  Result<CardContents> read_contents(const TransportCertificateRule& rule) override {
    PF_RETURN_IF_ERROR(before_call("reading the card"));
    return card_->read_contents(rule);
  }
  Status check_keygen_supported(const KeyAlgorithm& algorithm) override {
    PF_RETURN_IF_ERROR(before_call("C_GetMechanismInfo"));
    return card_->check_keygen_supported(algorithm);
  }
  Result<KeyInfo> generate_key(const KeyAlgorithm& algorithm, std::string_view idempotency_key,
                               std::string_view label) override {
    PF_RETURN_IF_ERROR(before_new_object("C_GenerateKeyPair"));
    return write<KeyInfo>("C_GenerateKeyPair",
                          [&] { return card_->generate_key(algorithm, idempotency_key, label); });
  }
  Result<std::optional<KeyInfo>> find_key_by_idempotency_key(
      std::string_view idempotency_key) override {
    PF_RETURN_IF_ERROR(before_call("C_FindObjects"));
    return card_->find_key_by_idempotency_key(idempotency_key);
  }
  Result<std::optional<KeyInfo>> find_key(const std::vector<unsigned char>& id) override {
    PF_RETURN_IF_ERROR(before_call("C_FindObjects"));
    return card_->find_key(id);
  }
  Status import_key(EVP_PKEY* key, const std::vector<unsigned char>& id,
                    std::string_view label) override {
    PF_RETURN_IF_ERROR(before_new_object("C_CreateObject"));
    return write_status("C_CreateObject", [&] { return card_->import_key(key, id, label); });
  }
  Status store_certificate(std::string_view der, const std::vector<unsigned char>& id,
                           std::string_view label) override {
    PF_RETURN_IF_ERROR(before_new_object("C_CreateObject"));
    return write_status("C_CreateObject",
                        [&] { return card_->store_certificate(der, id, label); });
  }
  Status delete_certificates(const std::vector<unsigned char>& id) override {
    return write_status("C_DestroyObject", [&] { return card_->delete_certificates(id); });
  }
  Status delete_certificate(const std::vector<unsigned char>& id,
                            std::string_view serial_hex) override {
    return write_status("C_DestroyObject",
                        [&] { return card_->delete_certificate(id, serial_hex); });
  }
  Status delete_key(const std::vector<unsigned char>& id) override {
    return write_status("C_DestroyObject", [&] { return card_->delete_key(id); });
  }
  Status change_user_pin(std::string_view old_pin, std::string_view new_pin) override {
    PF_RETURN_IF_ERROR(before_login("C_SetPIN"));
    return write_status("C_SetPIN", [&] { return card_->change_user_pin(old_pin, new_pin); });
  }
  Status unblock_user_pin(std::string_view so_pin, std::string_view new_user_pin) override {
    PF_RETURN_IF_ERROR(before_login("C_InitPIN"));
    return write_status("C_InitPIN",
                        [&] { return card_->unblock_user_pin(so_pin, new_user_pin); });
  }
  Status change_so_pin(std::string_view old_so_pin, std::string_view new_so_pin) override {
    PF_RETURN_IF_ERROR(before_login("C_SetPIN"));
    return write_status("C_SetPIN", [&] { return card_->change_so_pin(old_so_pin, new_so_pin); });
  }
  Result<std::vector<unsigned char>> random_bytes(std::size_t n) override {
    PF_RETURN_IF_ERROR(before_call("C_GenerateRandom"));
    return card_->random_bytes(n);
  }
  Result<std::string> make_csr(const std::vector<unsigned char>& id,
                               std::string_view subject) override {
    PF_RETURN_IF_ERROR(before_call("C_Sign"));
    return card_->make_csr(id, subject);
  }
  Result<EVP_PKEY*> private_key(const std::vector<unsigned char>& id) override {
    PF_RETURN_IF_ERROR(before_call("C_FindObjects"));
    return card_->private_key(id);
  }

 private:
  // Points 5 (pcscd gone), then the pulled state, then 3 (one device error).
  Status before_call(const std::string& what) {
    PF_RETURN_IF_ERROR(reader_service_fault(what.c_str()));
    if (pulled_) return ckr(CKR_DEVICE_REMOVED, what + " on a pulled card");
    if (fault_fires(FaultPoint::kCardDeviceError)) return ckr(CKR_DEVICE_ERROR, what);
    return Status::ok();
  }
  // Point 14: a write that would make an object finds no room (a pulled card says so instead).
  Status before_new_object(const std::string& what) {
    if (!pulled_ && fault_fires(FaultPoint::kCardFull)) {
      return ckr(CKR_DEVICE_MEMORY, what + ": token '" + card_->token().label + "' is full");
    }
    return Status::ok();
  }
  Status before_login(const std::string& what) {
    if (pin_blocked_ || fault_fires(FaultPoint::kCardPinBlocked)) {
      pin_blocked_ = true;
      return ckr(CKR_PIN_LOCKED, what + ": the user PIN of token '" + card_->token().label +
                                     "' is blocked");
    }
    return Status::ok();
  }
  template <typename T, typename F>
  Result<T> write(const std::string& what, F&& call) {
    PF_RETURN_IF_ERROR(before_call(what));
    if (fault_fires(FaultPoint::kCardPulledBeforeWrite)) {
      pulled_ = true;
      return ckr(CKR_DEVICE_REMOVED, what + ": card pulled before the write");
    }
    const bool pull_after = fault_fires(FaultPoint::kCardPulledAfterWrite);
    Result<T> result = call();
    if (pull_after) {
      pulled_ = true;
      return ckr(CKR_DEVICE_REMOVED, what + ": card pulled after the write");
    }
    return result;
  }
  template <typename F>
  Status write_status(const std::string& what, F&& call) {
    auto result = write<bool>(what, [&]() -> Result<bool> {
      PF_RETURN_IF_ERROR(call());
      return true;
    });
    return result.status();
  }

  std::unique_ptr<Card> card_;
  // Atomic: the Card may be handed between pool threads (card.hpp).
  std::atomic<bool> pulled_{false};
  std::atomic<bool> pin_blocked_{false};
};

}  // namespace

Status reader_service_fault(const char* what) {
  if (fault_fires(FaultPoint::kPcscdGone)) {
    return ckr(CKR_DEVICE_ERROR, std::string(what) +
                                     ": the reader service is gone (SCARD_E_NO_SERVICE)");
  }
  return Status::ok();
}

std::unique_ptr<Card> wrap_card_with_faults(std::unique_ptr<Card> card) {
  if (!fault_detail::active.load(std::memory_order_relaxed)) return card;
  return std::make_unique<FaultyCard>(std::move(card));
}

}  // namespace persoflow::devices
