// ATRs that carry a token serial: both forms round-trip, other cards' ATRs and damaged ATRs name
// no token, and the ATR is one a PC/SC stack accepts (T=1 with a correct TCK).
#include <gtest/gtest.h>

#include "persoflow/devices/card_atr.hpp"

namespace persoflow::devices {
namespace {

TEST(CardAtrTest, SoftHsmSerialRoundTripsPacked) {
  auto atr = card_atr_for_token("3e5a1b1c9f7d12a4");
  ASSERT_TRUE(atr.is_ok()) << atr.status().to_string();
  // 3B, T0 = 8B (11 historical bytes), TD1 80, TD2 01, "PFT", 8 bytes, TCK.
  EXPECT_EQ(atr->substr(0, 14), "3B8B8001504654");
  EXPECT_EQ(atr->size(), 2u * (4 + 11 + 1));
  EXPECT_EQ(token_serial_from_atr(*atr), "3e5a1b1c9f7d12a4");
  EXPECT_EQ(token_serial_from_atr("3b 8b 80 01 " + atr->substr(8)), "3e5a1b1c9f7d12a4");
}

TEST(CardAtrTest, ShortTextSerialRoundTrips) {
  auto atr = card_atr_for_token("CARD-07");
  ASSERT_TRUE(atr.is_ok());
  EXPECT_EQ(token_serial_from_atr(*atr), "CARD-07");
}

TEST(CardAtrTest, SerialsThatFitNoAtrAreRefused) {
  EXPECT_EQ(card_atr_for_token("").status().code(), make_error_code(Errc::kInvalidArgument));
  EXPECT_EQ(card_atr_for_token("a serial far too long").status().code(),
            make_error_code(Errc::kInvalidArgument));
  EXPECT_EQ(card_atr_for_token("two words").status().code(),
            make_error_code(Errc::kInvalidArgument));
}

TEST(CardAtrTest, OtherAndDamagedAtrsNameNoToken) {
  EXPECT_EQ(token_serial_from_atr("3B8A8001504552534F464C4F573173"), std::nullopt);  // emulator default
  EXPECT_EQ(token_serial_from_atr("3BFF1300008131FE4580318065B0"), std::nullopt);
  EXPECT_EQ(token_serial_from_atr("zz"), std::nullopt);
  EXPECT_EQ(token_serial_from_atr(""), std::nullopt);
  std::string atr = *card_atr_for_token("3e5a1b1c9f7d12a4");
  std::string bad_tck = atr;
  bad_tck.back() = bad_tck.back() == '0' ? '1' : '0';
  EXPECT_EQ(token_serial_from_atr(bad_tck), std::nullopt);
  EXPECT_EQ(token_serial_from_atr(atr.substr(0, atr.size() - 2)), std::nullopt);  // no TCK
}

}  // namespace
}  // namespace persoflow::devices
