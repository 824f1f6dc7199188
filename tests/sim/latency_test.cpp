// The latency model: every sample inside its documented bounds, skewed to the
// fast end with a long tail, and the same numbers for the same seed.
#include "persoflow/sim/latency.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace persoflow::sim {
namespace {

using namespace std::chrono_literals;

struct Bounds {
  const char* name;
  LatencyRange range;
  Duration low;
  Duration high;
};

TEST(Latency, SamplesStayInTheirBoundsWithALongTail) {
  const LatencyModel m;
  for (const Bounds& b :
       {Bounds{"rsa2048_keygen", m.rsa2048_keygen, 2s, 30s},
        Bounds{"ec_keygen", m.ec_keygen, 30ms, 500ms},
        Bounds{"card_command", m.card_command, 5ms, 150ms},
        Bounds{"cm_round_trip", m.cm_round_trip, 20ms, 400ms}, Bounds{"feed", m.feed, 1s, 4s}}) {
    SCOPED_TRACE(b.name);
    Rng rng(7);
    std::vector<Duration> samples;
    for (int i = 0; i < 20'000; ++i) samples.push_back(b.range.sample(rng));
    std::sort(samples.begin(), samples.end());
    EXPECT_GE(samples.front(), b.low);
    EXPECT_LE(samples.back(), b.high);
    const Duration median = samples[samples.size() / 2];
    const Duration p999 = samples[samples.size() * 999 / 1000];
    // Skewed: the median in the lower third of the range, the tail reaching its
    // upper half.
    EXPECT_LT(median, b.low + (b.high - b.low) / 3);
    EXPECT_GT(p999, b.low + (b.high - b.low) / 2);
    // mean() is the truncated distribution's mean: within 3% of the sample
    // mean.
    Duration sum{0};
    for (Duration d : samples) sum += d;
    const double sample_mean = static_cast<double>((sum / samples.size()).count());
    EXPECT_NEAR(static_cast<double>(b.range.mean().count()), sample_mean, 0.03 * sample_mean);
  }
}

TEST(Latency, TheSameSeedGivesTheSameNumbers) {
  Rng a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const auto x = a.next();
    EXPECT_EQ(x, b.next());
    differs |= x != c.next();
  }
  EXPECT_TRUE(differs);
  // Pinned: the generator must not change under the simulation's feet (seeds in
  // bug reports).
  Rng pinned(1);
  EXPECT_EQ(pinned.next(), 0x910a2dec89025cc1ULL);
}

}  // namespace
}  // namespace persoflow::sim
