// Seeded randomness and the latency model of simulated devices.
//
// Rng is SplitMix64 (the same numbers on every platform and standard library,
// unlike std::*_distribution), so a seed names one run everywhere. Each latency
// is a floor plus an exponential tail, redrawn while above its ceiling:
// bounded, skewed to the fast end, with the long tail of real cards (on-card
// RSA key generation searches for primes: mostly a few seconds, sometimes
// tens).
//
//   on-card RSA-2048 key generation  2 s .. 30 s    (floor 2 s, tail mean 4 s)
//   on-card EC key generation        30 .. 500 ms   (floor 30 ms, tail mean 90
//   ms) each card command (APDU round)   5 .. 150 ms    (floor 5 ms, tail mean
//   25 ms) CM host round trip (CMP ir)      20 .. 400 ms   (floor 20 ms, tail
//   mean 60 ms) printer/feeder puts a card in    1 .. 4 s       (floor 1 s,
//   tail mean 0.8 s)
//
// Not thread-safe: one Rng per simulation, used on its driving thread.
#pragma once

#include <chrono>
#include <cstdint>

namespace persoflow::sim {

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next();
  double uniform();                      // [0, 1)
  bool chance(double probability);       // true with this probability
  std::uint64_t below(std::uint64_t n);  // [0, n), n > 0

 private:
  std::uint64_t state_;
};

using Duration = std::chrono::nanoseconds;

// A floor plus an exponential tail, redrawn above the ceiling.
struct LatencyRange {
  Duration floor;
  Duration tail_mean;
  Duration ceiling;
  Duration sample(Rng& rng) const;
  Duration mean() const;  // of the truncated distribution, for the device-bound limit
};

struct LatencyModel {
  LatencyRange rsa2048_keygen{std::chrono::seconds(2), std::chrono::seconds(4),
                              std::chrono::seconds(30)};
  LatencyRange ec_keygen{std::chrono::milliseconds(30), std::chrono::milliseconds(90),
                         std::chrono::milliseconds(500)};
  LatencyRange card_command{std::chrono::milliseconds(5), std::chrono::milliseconds(25),
                            std::chrono::milliseconds(150)};
  LatencyRange cm_round_trip{std::chrono::milliseconds(20), std::chrono::milliseconds(60),
                             std::chrono::milliseconds(400)};
  LatencyRange feed{std::chrono::seconds(1), std::chrono::milliseconds(800),
                    std::chrono::seconds(4)};
};

}  // namespace persoflow::sim
