// Simulated devices of a personalization station: cards, readers, a card
// printer/feeder and the CM host link. They hold state only; time is the
// simulation's (sim/station.hpp applies the latencies of latency.hpp on the
// virtual clock around each operation).
//
// - SimCard implements devices::Card over memory: keys under CKA_ID,
// certificates, a user PIN.
//   While it is out of its reader every operation fails with Errc::kUnavailable
//   ("CKR_DEVICE_REMOVED"), like a pulled card. Its "certificates" are the text
//   SimCmLink issues
//   ("SIMCERT serial=<hex> subject=<dn>"), not X.509: private_key() and
//   make_csr() are Errc::kUnsupported.
// - SimReader holds at most one card; SimFeeder hands out the cards of its
// hopper in order, each
//   exactly once.
// - SimCmLink is the CM host's issuance as the station sees it: one certificate
// per CMP
//   transactionID; a repeat gets the stored answer (DESIGN.md: the idempotency
//   key). It counts what it issued so a test can prove nothing was issued
//   twice. (The station's real link is protocol::CmpClient, a concrete class:
//   there is no CM link interface in include/ yet.)
//
// Thread safety: none; a simulation uses them from its one driving thread.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "persoflow/devices/card.hpp"

namespace persoflow::sim {

class SimCard final : public devices::Card {
 public:
  SimCard(std::string serial, std::string user_pin, int key_entries = 1);

  bool inserted() const { return inserted_; }
  void set_inserted(bool inserted) { inserted_ = inserted; }
  const std::string& user_pin() const { return user_pin_; }
  std::size_t certificate_count() const { return certificates_.size(); }
  std::size_t key_count() const { return keys_.size(); }
  int key_entries() const { return key_entries_; }

  const devices::TokenInfo& token() const override { return token_; }
  Status login(devices::UserType who, std::string_view pin) override;
  Status logout() override;
  Result<devices::PinState> pin_state() override;
  Result<devices::CardContents> read_contents(
      const devices::TransportCertificateRule& rule) override;
  Status check_keygen_supported(const devices::KeyAlgorithm& algorithm) override;
  Result<devices::KeyInfo> generate_key(const devices::KeyAlgorithm& algorithm,
                                        std::string_view idempotency_key,
                                        std::string_view label) override;
  Result<std::optional<devices::KeyInfo>> find_key_by_idempotency_key(
      std::string_view idempotency_key) override;
  Result<std::optional<devices::KeyInfo>> find_key(const std::vector<unsigned char>& id) override;
  Status store_certificate(std::string_view der, const std::vector<unsigned char>& id,
                           std::string_view label) override;
  Status delete_certificates(const std::vector<unsigned char>& id) override;
  Status delete_certificate(const std::vector<unsigned char>& id, std::string_view serial_hex) override;
  Status delete_key(const std::vector<unsigned char>& id) override;
  Status change_user_pin(std::string_view old_pin, std::string_view new_pin) override;
  Status unblock_user_pin(std::string_view so_pin, std::string_view new_user_pin) override;
  Status change_so_pin(std::string_view old_so_pin, std::string_view new_so_pin) override;
  Result<std::vector<unsigned char>> random_bytes(std::size_t n) override;
  Result<std::string> make_csr(const std::vector<unsigned char>& id,
                               std::string_view subject) override;
  Result<EVP_PKEY*> private_key(const std::vector<unsigned char>& id) override;

 private:
  Status present() const;

  devices::TokenInfo token_;
  std::string user_pin_;
  int key_entries_;
  bool inserted_ = false;
  bool logged_in_ = false;
  std::uint64_t random_state_;
  std::map<std::vector<unsigned char>, devices::KeyInfo> keys_;
  std::map<std::vector<unsigned char>, devices::CertificateInfo> certificates_;
};

class SimReader {
 public:
  explicit SimReader(std::string name) : name_(std::move(name)) {}
  const std::string& name() const { return name_; }
  SimCard* card() const { return card_; }
  // Puts a card in (precondition: the reader is empty) / takes it out.
  void insert(SimCard* card);
  SimCard* remove();

 private:
  std::string name_;
  SimCard* card_ = nullptr;
};

class SimFeeder {
 public:
  // `cards` blank cards in the hopper, serials "SIM" + 8 digits from
  // `first_number`.
  SimFeeder(std::size_t cards, const std::string& user_pin, int key_entries = 1);
  // The next card of the hopper, or nullptr when it is empty. Each card comes
  // out once.
  SimCard* next();
  std::size_t remaining() const { return cards_.size() - fed_; }
  std::vector<std::unique_ptr<SimCard>>& cards() { return cards_; }

 private:
  std::vector<std::unique_ptr<SimCard>> cards_;
  std::size_t fed_ = 0;
};

class SimCmLink {
 public:
  struct Issued {
    std::string serial_hex;
    std::string certificate;  // the SIMCERT text a SimCard stores
  };
  // Issues a certificate for the transaction, or returns the one issued before
  // for it.
  Issued enroll(const std::string& transaction_id, const std::string& subject);
  std::size_t certificates_issued() const { return issued_.size(); }
  std::size_t repeats_answered() const { return repeats_; }
  const std::map<std::string, Issued>& issued() const { return issued_; }

 private:
  std::map<std::string, Issued> issued_;  // transactionID -> answer
  std::uint64_t next_serial_ = 0x1000;
  std::size_t repeats_ = 0;
};

}  // namespace persoflow::sim
