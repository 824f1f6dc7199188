// The 1,000-reader station (ctest sim.scale1000, labels sim;slow): 1,000
// simulated readers issue 1,000 cards (one each) through the real runtime and journal;
// every card is issued exactly once, the journal verifies, and a second run of
// the same seed gives the same journal; 2% of the cards are pulled mid-command and
// 2% of the CM submissions meet a simulated CM link fault (refused, timeout,
// dropped after the request, late).
#include <gtest/gtest.h>

#include "persoflow/sim/station.hpp"
#include "test_support.hpp"

namespace persoflow::sim {
namespace {

TEST(SimStationScale, AThousandReadersIssueEveryCardOnceReproducibly) {
  testing::TempDir dir("persoflow-sim-scale");
  SimStationOptions o;
  o.readers = 1000;
  o.cards = 1000;
  o.seed = 1;
  o.removal_share = 0.02;
  o.cm_fault_share = 0.02;
  o.journal = dir.file("a.db");
  auto a = run_simulated_station(o);
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  for (const auto& p : a->problems) ADD_FAILURE() << p;
  EXPECT_EQ(a->cards_done, 1000u);
  EXPECT_EQ(a->certificates_issued, 1000u);  // none twice, dropped answers included
  EXPECT_GT(a->cm_refused + a->cm_timeouts + a->cm_dropped + a->cm_late, 0u);
  EXPECT_GE(a->cm_repeats, a->cm_dropped);
  o.journal = dir.file("b.db");
  auto b = run_simulated_station(o);
  ASSERT_TRUE(b.is_ok());
  EXPECT_EQ(a->journal_head_hash, b->journal_head_hash) << "seed " << o.seed;
  EXPECT_EQ(a->trace_digest, b->trace_digest) << "seed " << o.seed;
}

}  // namespace
}  // namespace persoflow::sim
