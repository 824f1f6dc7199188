// Readers through a real pcscd (private, see pcscd_fixture.hpp) with the vpcd driver and our own
// card emulator: listing, insertion and removal with the ATR, stop(), and pcscd going away and
// coming back during a watch. Every wait is bounded and awaits an event.
#include "persoflow/devices/readers.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <future>
#include <sstream>
#include <thread>
#include <utility>
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

// libpcsclite fixes its socket path at the first PC/SC call of the process: point it at the
// private pcscd before any test of this binary runs (tests never use the machine's pcscd).
const bool kPrivatePcscd = (PcscdFixture::use_private_socket(), true);

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

TEST(ReadersTest, PcscdKilledDuringWatchIsLostThenRestored) {
  PcscdFixture pcscd;
  pcscd.start();
  CardEmulator card(emulator_options(pcscd));
  ASSERT_TRUE(card.insert().is_ok());
  ReaderEventLog log;
  auto watcher = watch_readers(log.callback());
  auto inserted = log.wait_for(Kind::kCardInserted, 0, kReader0);
  ASSERT_TRUE(inserted) << log.dump();

  pcscd.kill_hard();  // leaves a stale pcscd.comm, which start() removes
  auto lost = log.wait_for(Kind::kServiceLost, *inserted);
  ASSERT_TRUE(lost) << log.dump();
  EXPECT_EQ(log.at(*lost).event.detail.rfind("pcscd went away", 0), 0u) << log.dump();
  pcscd.start();
  auto restored = log.wait_for(Kind::kServiceRestored, *lost);
  ASSERT_TRUE(restored) << log.dump() << pcscd.log();
  auto again = log.wait_for(Kind::kCardInserted, *restored, kReader0);
  ASSERT_TRUE(again) << log.dump();
  EXPECT_EQ(log.at(*again).event.atr_hex, sim::kDefaultEmulatorAtr);
  EXPECT_EQ(log.count(Kind::kServiceLost), 1u) << log.dump();
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

// The intended use: the callback only posts to the owner's strand; the io_context thread never
// waits on PC/SC and stays free for other work meanwhile.
TEST(ReadersTest, CallbackPostsToAStrand) {
  PcscdFixture pcscd;
  pcscd.start();
  namespace asio = boost::asio;
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  auto strand = asio::make_strand(io);
  std::thread io_thread([&] { io.run(); });

  std::vector<ReaderEvent> seen;  // touched on the strand only
  std::promise<std::string> inserted_atr;
  bool inserted = false;
  auto watcher = watch_readers([&](const ReaderEvent& e) {
    asio::post(strand, [&, e] {
      seen.push_back(e);
      if (e.kind == Kind::kCardInserted && !std::exchange(inserted, true)) {
        inserted_atr.set_value(e.atr_hex);
      }
    });
  });
  CardEmulator card(emulator_options(pcscd));
  ASSERT_TRUE(card.insert().is_ok());
  auto atr = inserted_atr.get_future();
  ASSERT_EQ(atr.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(atr.get(), sim::kDefaultEmulatorAtr);

  // Meanwhile the io_context answers at once: nothing blocks it.
  std::promise<void> ping;
  auto t0 = std::chrono::steady_clock::now();
  asio::post(io, [&] { ping.set_value(); });
  ASSERT_EQ(ping.get_future().wait_for(1s), std::future_status::ready);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 100ms);

  watcher->stop();  // no callback after this: the last posts are already queued
  work.reset();
  io_thread.join();
  ASSERT_GE(seen.size(), 3u);
  EXPECT_EQ(seen[0].kind, Kind::kReaderAdded);
}

// OpenSC's PKCS#11 module, through the same private pcscd, names one slot after each reader:
// reader_matches_slot() maps every reader to exactly one of them.
TEST(ReadersTest, OpenScSlotsMapToReaders) {
  PcscdFixture pcscd;
  pcscd.start();
  CardEmulator card(emulator_options(pcscd));
  ASSERT_TRUE(card.insert().is_ok());
  auto readers = list_readers();
  ASSERT_TRUE(readers.is_ok()) << readers.status().message();
  ASSERT_EQ(readers->size(), 2u);

  const std::string module = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";
  auto listed = persoflow::testing::run({"pkcs11-tool", "--module", module, "--list-slots"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  std::vector<std::string> descriptions;  // "Slot 0 (0x0): Virtual PCD 00 00"
  std::istringstream lines(listed.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("Slot ", 0) == 0 && line.find("): ") != std::string::npos) {
      descriptions.push_back(line.substr(line.find("): ") + 3));
    }
  }
  ASSERT_EQ(descriptions.size(), 2u) << listed.out;
  for (const auto& reader : *readers) {
    int matches = 0;
    for (const auto& d : descriptions) matches += reader_matches_slot(reader.name, d);
    EXPECT_EQ(matches, 1) << reader.name << "\n" << listed.out;
  }
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
