// Readers through a real pcscd (private, see pcscd_fixture.hpp) with the vpcd driver and our own
// card emulator: listing, insertion and removal with the ATR, stop(), and pcscd going away and
// coming back during a watch. Every wait is bounded and awaits an event.
#include "persoflow/devices/readers.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include "pcscd_fixture.hpp"
#include "persoflow/sim/card_emulator.hpp"
#include "reader_event_log.hpp"

namespace persoflow::devices {
namespace {

using persoflow::sim::CardEmulator;
using persoflow::sim::CardEmulatorOptions;
using persoflow::testing::PcscdFixture;
using persoflow::testing::ReaderEventLog;
using Kind = ReaderEvent::Kind;
using namespace std::chrono_literals;

const std::string kReader0 = PcscdFixture::reader_name(0);
const std::string kReader1 = PcscdFixture::reader_name(1);

CardEmulatorOptions emulator_options(const PcscdFixture& pcscd) {
  CardEmulatorOptions options;
  options.port = pcscd.port();
  return options;
}

// A T=1 ATR whose historical bytes read "PERSOFLOW<digit>", with its TCK: a different ATR per
// cycle, so a stale one would show.
std::string atr_for_cycle(int cycle) {
  std::vector<unsigned char> atr = {0x3B, 0x8A, 0x80, 0x01};
  for (char c : std::string("PERSOFLOW") + static_cast<char>('0' + cycle)) atr.push_back(c);
  unsigned char tck = 0;
  for (std::size_t i = 1; i < atr.size(); ++i) tck ^= atr[i];
  atr.push_back(tck);
  std::string hex;
  for (unsigned char b : atr) hex += fmt::format("{:02X}", b);
  return hex;
}

TEST(ReadersTest, ListShowsBothVpcdReadersWithoutCards) {
  PcscdFixture pcscd;
  pcscd.start();
  auto readers = list_readers();
  ASSERT_TRUE(readers.is_ok()) << readers.status().message() << "\n" << pcscd.log();
  ASSERT_EQ(readers->size(), 2u);
  EXPECT_EQ((*readers)[0].name, kReader0);
  EXPECT_EQ((*readers)[1].name, kReader1);
  for (const auto& r : *readers) {
    EXPECT_FALSE(r.card_present) << r.name;
    EXPECT_TRUE(r.atr_hex.empty()) << r.name;
  }
}

TEST(ReadersTest, ListShowsInsertedCardWithItsAtr) {
  PcscdFixture pcscd;
  pcscd.start();
  ReaderEventLog log;
  auto watcher = watch_readers(log.callback());
  CardEmulator card(emulator_options(pcscd));
  ASSERT_TRUE(card.insert().is_ok());
  ASSERT_TRUE(log.wait_for(Kind::kCardInserted, 0, kReader0)) << log.dump() << pcscd.log();

  auto readers = list_readers();
  ASSERT_TRUE(readers.is_ok()) << readers.status().message();
  ASSERT_EQ(readers->size(), 2u);
  EXPECT_TRUE((*readers)[0].card_present);
  EXPECT_EQ((*readers)[0].atr_hex, sim::kDefaultEmulatorAtr);
  EXPECT_FALSE((*readers)[1].card_present);
}

TEST(ReadersTest, ListWithoutPcscdIsUnavailable) {
  PcscdFixture::use_private_socket();  // no pcscd behind it
  auto readers = list_readers();
  ASSERT_FALSE(readers.is_ok());
  EXPECT_EQ(readers.status().code(), make_error_code(Errc::kUnavailable));
  EXPECT_EQ(readers.status().message(), "pcscd is not running (no PC/SC service)");
}

TEST(ReadersTest, WatcherReportsReadersThenInsertionsAndRemovalsWithTheAtr) {
  PcscdFixture pcscd;
  pcscd.start();
  ReaderEventLog log;
  auto watcher = watch_readers(log.callback());
  ASSERT_TRUE(log.wait_for(Kind::kReaderAdded, 0, kReader0)) << log.dump();
  ASSERT_TRUE(log.wait_for(Kind::kReaderAdded, 0, kReader1)) << log.dump();

  CardEmulator card(emulator_options(pcscd));
  std::size_t from = log.size();
  for (int cycle = 0; cycle < 5; ++cycle) {
    const std::string atr = atr_for_cycle(cycle);
    ASSERT_TRUE(card.insert(atr).is_ok()) << "cycle " << cycle;
    auto inserted = log.wait_for(Kind::kCardInserted, from, kReader0);
    ASSERT_TRUE(inserted) << "cycle " << cycle << "\n" << log.dump() << pcscd.log();
    EXPECT_EQ(log.at(*inserted).event.atr_hex, atr) << "cycle " << cycle;
    card.remove();
    auto removed = log.wait_for(Kind::kCardRemoved, *inserted + 1, kReader0);
    ASSERT_TRUE(removed) << "cycle " << cycle << "\n" << log.dump();
    from = *removed + 1;
  }
  EXPECT_EQ(log.count(Kind::kCardInserted), 5u) << log.dump();
  EXPECT_EQ(log.count(Kind::kCardRemoved), 5u) << log.dump();
  EXPECT_EQ(log.count(Kind::kServiceLost), 0u) << log.dump();
}

TEST(ReadersTest, CardPresentAtStartIsReported) {
  PcscdFixture pcscd;
  pcscd.start();
  CardEmulator card(emulator_options(pcscd));
  ASSERT_TRUE(card.insert().is_ok());
  {
    // Wait until pcscd has seen the card, through a first watcher.
    ReaderEventLog first;
    auto watcher = watch_readers(first.callback());
    ASSERT_TRUE(first.wait_for(Kind::kCardInserted, 0, kReader0)) << first.dump();
  }
  ReaderEventLog log;
  auto watcher = watch_readers(log.callback());
  auto inserted = log.wait_for(Kind::kCardInserted, 0, kReader0);
  ASSERT_TRUE(inserted) << log.dump();
  EXPECT_EQ(log.at(*inserted).event.atr_hex, sim::kDefaultEmulatorAtr);
  auto added = log.wait_for(Kind::kReaderAdded, 0, kReader0);
  ASSERT_TRUE(added);
  EXPECT_LT(*added, *inserted) << "a reader is announced before its card\n" << log.dump();
}

TEST(ReadersTest, StopReturnsPromptly) {
  PcscdFixture pcscd;
  pcscd.start();
  {
    // Stopped while blocked in SCardGetStatusChange.
    ReaderEventLog log;
    auto watcher = watch_readers(log.callback());
    ASSERT_TRUE(log.wait_for(Kind::kReaderAdded, 0, kReader1)) << log.dump();
    auto t0 = std::chrono::steady_clock::now();
    watcher->stop();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
    watcher->stop();  // a second stop is harmless
  }
  for (int i = 0; i < 5; ++i) {
    // Stopped at once, whatever the thread is doing (establishing, listing, about to wait).
    ReaderEventLog log;
    auto watcher = watch_readers(log.callback());
    auto t0 = std::chrono::steady_clock::now();
    watcher.reset();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms) << "round " << i;
  }
}

TEST(ReadersTest, StopReturnsPromptlyWhileWaitingForPcscd) {
  PcscdFixture::use_private_socket();  // no pcscd
  ReaderEventLog log;
  auto watcher = watch_readers(log.callback());
  ASSERT_TRUE(log.wait_for(Kind::kServiceLost)) << log.dump();
  auto t0 = std::chrono::steady_clock::now();
  watcher->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
  EXPECT_EQ(log.count(Kind::kServiceLost), 1u) << "reported once, not per retry\n" << log.dump();
}

TEST(ReadersTest, PcscdStoppedDuringWatchIsLostThenRestoredWithTheCard) {
  PcscdFixture pcscd;
  pcscd.start();
  CardEmulator card(emulator_options(pcscd));
  ASSERT_TRUE(card.insert().is_ok());
  ReaderEventLog log;
  auto watcher = watch_readers(log.callback());
  auto inserted = log.wait_for(Kind::kCardInserted, 0, kReader0);
  ASSERT_TRUE(inserted) << log.dump() << pcscd.log();

  pcscd.stop();
  auto lost = log.wait_for(Kind::kServiceLost, *inserted);
  ASSERT_TRUE(lost) << log.dump();
  EXPECT_FALSE(log.at(*lost).event.detail.empty());

  pcscd.start();  // the emulator reconnects to the new vpcd by itself
  auto restored = log.wait_for(Kind::kServiceRestored, *lost);
  ASSERT_TRUE(restored) << log.dump() << pcscd.log();
  auto again = log.wait_for(Kind::kCardInserted, *restored, kReader0);
  ASSERT_TRUE(again) << log.dump() << pcscd.log();
  EXPECT_EQ(log.at(*again).event.atr_hex, sim::kDefaultEmulatorAtr);
  EXPECT_EQ(log.count(Kind::kServiceLost), 1u) << log.dump();
  EXPECT_EQ(log.count(Kind::kServiceRestored), 1u) << log.dump();
  EXPECT_GE(card.connections(), 2);

  // And the watch goes on after the restart.
  card.remove();
  ASSERT_TRUE(log.wait_for(Kind::kCardRemoved, *again, kReader0)) << log.dump();
}

TEST(ReadersTest, WatcherStartedBeforePcscdFindsItWhenItStarts) {
  PcscdFixture pcscd;  // configured, not started
  ReaderEventLog log;
  auto watcher = watch_readers(log.callback());
  auto lost = log.wait_for(Kind::kServiceLost);
  ASSERT_TRUE(lost) << log.dump();
  EXPECT_EQ(log.at(*lost).event.detail, "pcscd is not running (no PC/SC service)");
  pcscd.start();
  auto restored = log.wait_for(Kind::kServiceRestored, *lost);
  ASSERT_TRUE(restored) << log.dump();
  ASSERT_TRUE(log.wait_for(Kind::kReaderAdded, *restored, kReader0)) << log.dump();
}

TEST(ReadersTest, SlotDescriptionMatchesItsReader) {
  std::string padded = kReader0 + std::string(64 - kReader0.size(), ' ');
  EXPECT_TRUE(reader_matches_slot(kReader0, padded));
  EXPECT_TRUE(reader_matches_slot(kReader0, kReader0));
  EXPECT_FALSE(reader_matches_slot(kReader1, padded));
  EXPECT_FALSE(reader_matches_slot(kReader0, ""));
  std::string long_name(70, 'R');
  EXPECT_TRUE(reader_matches_slot(long_name, long_name.substr(0, 64)));
  EXPECT_FALSE(reader_matches_slot(long_name.substr(0, 63), long_name.substr(0, 64)));
}

TEST(ReadersTest, ErrorTextNamesTheCode) {
  EXPECT_EQ(pcsc_error_text(static_cast<long>(0x8010001DL)).rfind("SCARD_E_NO_SERVICE (", 0), 0u)
      << pcsc_error_text(static_cast<long>(0x8010001DL));
  EXPECT_EQ(pcsc_error_text(static_cast<long>(0x80100002L)).rfind("SCARD_E_CANCELLED (", 0), 0u);
}

}  // namespace
}  // namespace persoflow::devices
