// persoflow-bench station: issue-card on many SoftHSM2 cards at once against the real CM host
// on loopback, through the station's runtime and executors. Runs `persoflow demo --cards N`
// (default 64) in a temporary folder and reports its first batch: N cards personalised at once
// (EC P-256 keys generated on the cards, CMP ir over HTTPS, certificate written, PIN set).
//
//   BENCH station.softhsm<N>.cards_per_min   cards per minute, all at once
//   BENCH station.softhsm<N>.batch_seconds   wall time of the batch
//   BENCH station.softhsm<N>.resumed_seconds the second batch's restart after SIGKILL
//   BENCH station.softhsm<N>.script_{serial,parallel}_cards_per_min  bench/station_baseline.sh
//   BENCH station.softhsm<N>.vs_script       persoflow's cards/min over the better script run
//   BENCH station.softhsm<N>.engine_cpu_share   CPU time of the persoflow process (engine,
//         journal, actors, executors: getrusage RUSAGE_SELF, all its threads, no child process)
//         over the batch, as a share of the machine's CPU time (wall time x online cores)
//   BENCH station.softhsm<N>.cm_host_cpu_share  the same for the CM host's process
//   BENCH station.softhsm<N>.machine_busy_share the whole machine's busy share meanwhile
//         (/proc/stat): what else ran (other work on a shared machine included)
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <string>

#include "bench_registry.hpp"
#include "test_support.hpp"

namespace {

int run_station(int argc, char** argv) {
  int cards = 64;
  if (argc > 1 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    std::cout << "Usage: persoflow-bench station [CARDS]\n"
                 "Personalises CARDS (1..64, default 64) SoftHSM2 cards at once through "
                 "`persoflow demo`\nand the shell-script baseline, serial and parallel; a "
                 "quick run under load: 16.\n";
    return 0;
  }
  if (argc > 1) cards = std::atoi(argv[1]);
  if (cards < 1 || cards > 64) {
    std::cerr << "persoflow-bench station [CARDS]: CARDS must be 1..64\n";
    return 2;
  }
  persoflow::testing::TempDir tmp("persoflow-bench-station");
  const std::string dir = (tmp.path() / "demo").string();
  auto r = persoflow::testing::run({persoflow::testing::persoflow_binary(), "demo", "--dir", dir,
                                    "--cards", std::to_string(cards)});
  if (r.exit_code != 0) {
    std::cerr << "persoflow demo failed (" << r.exit_code << "):\n" << r.out << r.err;
    return 1;
  }
  // "<N> cards in <seconds> s" (batch 1) and "... workflow(s) in <seconds> s, all done" (the
  // restarted batch 2).
  auto number_after = [&](const std::string& marker) -> double {
    const auto at = r.out.find(marker);
    return at == std::string::npos ? -1 : std::atof(r.out.c_str() + at + marker.size());
  };
  const double seconds = number_after(std::to_string(cards) + " cards in ");
  if (seconds <= 0) {
    std::cerr << "cannot find the batch time in the demo's output:\n" << r.out;
    return 1;
  }
  const std::string prefix = "station.softhsm" + std::to_string(cards);
  persoflow::bench::report(prefix + ".cards_per_min", cards * 60.0 / seconds, "cards/min");
  persoflow::bench::report(prefix + ".batch_seconds", seconds, "s");
  // "Batch 1 CPU: ... engine_cpu_share F, cm_host_cpu_share F, machine_busy_share F"
  for (const char* share : {"engine_cpu_share", "cm_host_cpu_share", "machine_busy_share"}) {
    const double value = number_after(std::string(share) + " ");
    if (value < 0) {
      std::cerr << "cannot find " << share << " in the demo's output:\n" << r.out;
      return 1;
    }
    persoflow::bench::report(prefix + "." + share, value, "ratio");
  }
  if (double resumed = number_after("workflow(s) in "); resumed > 0) {
    persoflow::bench::report(prefix + ".resumed_seconds", resumed, "s");
  }

  // The shell-script baseline (bench/station_baseline.sh), one card at a time and in parallel.
  const std::string script = persoflow::testing::source_dir() + "/bench/station_baseline.sh";
  double best = 0;
  for (const char* mode : {"serial", "parallel"}) {
    auto b = persoflow::testing::run({script, (tmp.path() / mode).string(),
                                      std::to_string(cards), mode});
    if (b.exit_code != 0) {
      std::cerr << "station_baseline.sh " << mode << " failed:\n" << b.out << b.err;
      return 1;
    }
    const double cpm = cards * 60.0 / std::stod(b.out);
    persoflow::bench::report(prefix + ".script_" + mode + "_cards_per_min", cpm, "cards/min");
    best = std::max(best, cpm);
  }
  persoflow::bench::report(prefix + ".vs_script", cards * 60.0 / seconds / best, "x");
  return 0;
}

}  // namespace

PF_REGISTER_BENCH_SUITE(station, "station",
                        "issue-card on 64 SoftHSM2 cards at once against the real CM host",
                        run_station);
