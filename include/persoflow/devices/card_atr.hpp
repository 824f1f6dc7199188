// An ATR that names the PKCS#11 token behind an emulated card, so a station recognises a card in
// a reader by its token serial (the card emulator presents it; the live station decodes it).
//
// Layout (ISO 7816-3, T=1): 3B, T0 = 0x80 | K, TD1 = 80, TD2 = 01, K historical bytes, TCK (the
// XOR of T0 .. the last historical byte). The historical bytes are "PFT" and the serial:
// - a serial of 16 hex digits (SoftHSM2's) is packed into 8 bytes after "PFT" (K = 11);
// - any other serial of 1 to 12 printable ASCII characters follows "PFA" as text (K <= 15).
// Pure: no PC/SC, no PKCS#11.
#pragma once

#include <optional>
#include <string>

#include "persoflow/common/status.hpp"

namespace persoflow::devices {

// The ATR (upper-case hex) for a token serial; kInvalidArgument for a serial that fits neither
// form.
Result<std::string> card_atr_for_token(const std::string& token_serial);

// The token serial an ATR carries; nullopt for any other card's ATR (or bad hex, bad TCK).
std::optional<std::string> token_serial_from_atr(const std::string& atr_hex);

}  // namespace persoflow::devices
