// `persoflow card list` with a real private pcscd and the project's card emulator in vpcd's
// first reader: the readers, card presence and ATR, next to the module's tokens.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "pcscd_fixture.hpp"
#include "persoflow/devices/readers.hpp"
#include "persoflow/sim/card_emulator.hpp"
#include "reader_event_log.hpp"
#include "softhsm_fixture.hpp"
#include "test_support.hpp"

namespace persoflow::devices {
namespace {

namespace pt = persoflow::testing;

TEST(CardListReaders, ShowsReadersCardPresenceAndAtr) {
  pt::PcscdFixture pcscd;
  pcscd.start();
  pt::SoftHsm hsm;
  auto token = hsm.create_token("Beside Readers");
  sim::CardEmulatorOptions options;
  options.port = pcscd.port();
  sim::CardEmulator card(options);
  pt::ReaderEventLog log;
  {
    auto watcher = watch_readers(log.callback());
    ASSERT_TRUE(card.insert().is_ok());
    // Wait for pcscd to see the card (an event, bounded), then take the snapshot.
    ASSERT_TRUE(log.wait_for(ReaderEvent::Kind::kCardInserted, 0, pt::PcscdFixture::reader_name(0)))
        << log.dump() << pcscd.log();
    watcher->stop();
  }
  auto r =
      pt::run({pt::persoflow_binary(), "card", "list", "--module", pt::SoftHsm::kModule, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j["readers"].is_array()) << r.out;
  bool seen0 = false, seen1 = false;
  for (const auto& reader : j["readers"]) {
    if (reader["name"] == pt::PcscdFixture::reader_name(0)) {
      seen0 = true;
      EXPECT_TRUE(reader["card_present"].get<bool>());
      EXPECT_EQ(reader["atr_hex"], sim::kDefaultEmulatorAtr);
    }
    if (reader["name"] == pt::PcscdFixture::reader_name(1)) {
      seen1 = true;
      EXPECT_FALSE(reader["card_present"].get<bool>());
    }
  }
  EXPECT_TRUE(seen0 && seen1) << r.out;
  bool token_seen = false;
  for (const auto& t : j["tokens"]) token_seen |= t["serial"] == token.serial;
  EXPECT_TRUE(token_seen) << r.out;

  auto text = pt::run({pt::persoflow_binary(), "card", "list", "--module", pt::SoftHsm::kModule});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find(std::string("card present  ATR ") + sim::kDefaultEmulatorAtr),
            std::string::npos)
      << text.out;
}

}  // namespace
}  // namespace persoflow::devices
