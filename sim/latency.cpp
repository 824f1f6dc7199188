// Rng and LatencyRange (latency.hpp).
#include "persoflow/sim/latency.hpp"

#include <cmath>

namespace persoflow::sim {

std::uint64_t Rng::next() {
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

bool Rng::chance(double probability) { return uniform() < probability; }

std::uint64_t Rng::below(std::uint64_t n) { return next() % n; }

Duration LatencyRange::sample(Rng& rng) const {
  const double mean_ns = static_cast<double>(tail_mean.count());
  for (;;) {
    const double tail = -mean_ns * std::log1p(-rng.uniform());
    const Duration d = floor + Duration(static_cast<Duration::rep>(tail));
    if (d <= ceiling) return d;
  }
}

Duration LatencyRange::mean() const {
  // Exponential with mean m truncated at c: m - c * e^(-c/m) / (1 - e^(-c/m)).
  const double m = static_cast<double>(tail_mean.count());
  const double c = static_cast<double>((ceiling - floor).count());
  const double e = std::exp(-c / m);
  return floor + Duration(static_cast<Duration::rep>(m - c * e / (1 - e)));
}

}  // namespace persoflow::sim
