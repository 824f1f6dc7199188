// persoflow-bench devices (PC/SC part): how long a card insertion and a removal take to reach the
// reader watcher, through a private pcscd with the vpcd driver and our card emulator (the same
// fixture as the tests). Insertion: from the emulator's TCP connection to vpcd being established
// to the watcher's kCardInserted; removal: from closing it to kCardRemoved. Both are dominated by
// pcscd polling the vpcd reader every 400 ms. Each insertion and removal is made after a random
// pause of 0-400 ms (fixed seed), so that it falls at a uniformly spread phase of that poll:
// back-to-back cycles would lock onto the poll and always measure its full period.
//
//   persoflow-bench devices [--pcsc-cycles N]   (N >= 10, default 12)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_registry.hpp"
#include "pcscd_fixture.hpp"
#include "persoflow/devices/readers.hpp"
#include "persoflow/sim/card_emulator.hpp"
#include "reader_event_log.hpp"

namespace persoflow::bench {
namespace {

using devices::ReaderEvent;
using Kind = ReaderEvent::Kind;

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  const std::size_t index =
      static_cast<std::size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

int run_pcsc(int argc, char** argv) {
  int cycles = 12;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--pcsc-cycles") == 0 && i + 1 < argc) {
      cycles = std::atoi(argv[++i]);
      if (cycles < 10) {
        std::fprintf(stderr, "persoflow-bench devices: --pcsc-cycles must be at least 10\n");
        return 2;
      }
    }
  }
  try {
    testing::PcscdFixture pcscd;
    pcscd.start();
    testing::ReaderEventLog log;
    auto watcher = devices::watch_readers(log.callback());
    const std::string reader = testing::PcscdFixture::reader_name(0);
    if (!log.wait_for(Kind::kReaderAdded, 0, reader)) {
      std::fprintf(stderr, "persoflow-bench devices: the watcher did not see %s\n%s",
                   reader.c_str(), log.dump().c_str());
      return 1;
    }
    sim::CardEmulatorOptions options;
    options.port = pcscd.port();
    sim::CardEmulator card(options);
    std::vector<double> insert_ms, remove_ms;
    std::size_t from = log.size();
    std::mt19937 rng(20261122);
    std::uniform_int_distribution<int> phase_ms(0, 400);
    auto random_phase = [&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(phase_ms(rng)));
    };
    for (int i = 0; i < cycles; ++i) {
      random_phase();
      if (Status s = card.insert(); !s.is_ok()) {
        std::fprintf(stderr, "persoflow-bench devices: %s\n", s.message().c_str());
        return 1;
      }
      const auto connected = std::chrono::steady_clock::now();
      auto inserted = log.wait_for(Kind::kCardInserted, from, reader);
      if (!inserted) {
        std::fprintf(stderr, "persoflow-bench devices: no insertion event\n%s", log.dump().c_str());
        return 1;
      }
      insert_ms.push_back(
          std::chrono::duration<double, std::milli>(log.at(*inserted).at - connected).count());
      random_phase();
      const auto closed = std::chrono::steady_clock::now();
      card.remove();
      auto removed = log.wait_for(Kind::kCardRemoved, *inserted + 1, reader);
      if (!removed) {
        std::fprintf(stderr, "persoflow-bench devices: no removal event\n%s", log.dump().c_str());
        return 1;
      }
      remove_ms.push_back(
          std::chrono::duration<double, std::milli>(log.at(*removed).at - closed).count());
      from = *removed + 1;
    }
    report("devices.pcsc.insert_to_event_ms", percentile(insert_ms, 0.5), "ms");
    report("devices.pcsc.insert_to_event_p90_ms", percentile(insert_ms, 0.9), "ms");
    report("devices.pcsc.remove_to_event_ms", percentile(remove_ms, 0.5), "ms");
    report("devices.pcsc.remove_to_event_p90_ms", percentile(remove_ms, 0.9), "ms");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "persoflow-bench devices: cannot start a private pcscd: %s\n", e.what());
    return 1;
  }
}

}  // namespace

PF_REGISTER_BENCH_SUITE(devices_pcsc, "devices",
                        "card insertion/removal to reader-watcher event through pcscd + vpcd",
                        run_pcsc);

}  // namespace persoflow::bench
