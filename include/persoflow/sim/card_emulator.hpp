// A contact card of our own making for the vpcd virtual reader (Debian vsmartcard-vpcd): it
// connects to vpcd's TCP port and speaks vpcd's socket protocol, so pcscd sees a real card
// insertion. vpcd treats a connected emulator as a card present: insert() = connect,
// remove() = disconnect.
//
// Protocol (vpcd's): every message is a 2-byte big-endian length and a payload. A 1-byte payload
// is a control message (0 power off, 1 power on, 2 reset: no answer; 4 get ATR: answered with the
// ATR); a longer one is a command APDU, answered with a response APDU. The socket has
// TCP_NODELAY and TCP_QUICKACK, or every exchange waits for a delayed ACK.
//
// The card answers a minimal ISO 7816-4 set: SELECT (any target) 9000; GET DATA 9F7F the card
// serial + 9000, other GET DATA 6A88; any other instruction 6D00; a short APDU 6700.
//
// Thread safety: insert()/remove() from one controlling thread; the connection is served on the
// emulator's own thread. Connects to 127.0.0.1 only.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "persoflow/common/status.hpp"

namespace persoflow::sim {

// ATR of a T=1 card whose historical bytes read "PERSOFLOW1" (with its TCK).
inline constexpr const char* kDefaultEmulatorAtr = "3B8A8001504552534F464C4F573173";

struct CardEmulatorOptions {
  std::uint16_t port = 35963;  // vpcd's port for the reader ("Virtual PCD 00 00")
  std::string atr_hex = kDefaultEmulatorAtr;
  std::string serial_hex = "5046000000000001";  // answered to GET DATA 9F7F
};

class CardEmulator {
 public:
  explicit CardEmulator(CardEmulatorOptions options);
  ~CardEmulator();  // removes the card
  CardEmulator(const CardEmulator&) = delete;
  CardEmulator& operator=(const CardEmulator&) = delete;

  // Inserts the card: connects to vpcd, retrying for up to `timeout` while vpcd is not listening
  // (pcscd starting). When it returns OK the TCP connection is established. Afterwards, if vpcd
  // drops the connection (pcscd stopped), the emulator reconnects by itself (backoff 20 ms to
  // 500 ms) until remove(): a card stays in its reader across pcscd restarts.
  // atr_hex, when not empty, replaces the ATR for this and later insertions.
  // Errors: kInvalidArgument (bad ATR hex), kAlreadyExists (inserted), kUnavailable (no vpcd).
  Status insert(const std::string& atr_hex = {},
                std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Removes the card: closes the connection and joins the thread. No-op when not inserted.
  void remove();

  bool inserted() const { return thread_.joinable(); }
  // How many times the emulator got connected to vpcd, and APDUs answered (for tests).
  int connections() const;
  int apdus_answered() const;

  // The answer to one command APDU (exposed for tests).
  std::vector<std::uint8_t> respond(const std::vector<std::uint8_t>& apdu) const;

 private:
  int connect_once() const;  // a connected socket, or -1
  void run(int fd);
  bool serve(int fd);  // until the connection ends; false on a protocol error

  CardEmulatorOptions options_;
  std::vector<std::uint8_t> atr_;
  std::vector<std::uint8_t> serial_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool removing_ = false;
  int fd_ = -1;
  int connections_ = 0;
  int apdus_ = 0;
  std::thread thread_;
};

// Parses hex ("3B 8A 80", "3b8a80", "3B:8A:80"); spaces and colons are ignored.
Result<std::vector<std::uint8_t>> parse_hex(const std::string& text);

}  // namespace persoflow::sim
