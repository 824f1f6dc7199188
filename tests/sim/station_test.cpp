// The simulated station: every card issued exactly once through the real
// runtime and journal, the same seed giving the same journal and trace, and
// cards pulled mid-workflow resumed.
#include "persoflow/sim/station.hpp"

#include <gtest/gtest.h>

#include "persoflow/storage/journal.hpp"
#include "test_support.hpp"

namespace persoflow::sim {
namespace {

void expect_every_card_once(const SimReport& r, std::size_t cards) {
  for (const auto& p : r.problems) ADD_FAILURE() << p;
  EXPECT_EQ(r.cards_done, cards);
  EXPECT_EQ(r.cards_not_done, 0u);
  EXPECT_EQ(r.certificates_issued, cards);
  EXPECT_FALSE(r.journal_head_hash.empty());
}

SimStationOptions small(const testing::TempDir& dir, const std::string& name, std::uint64_t seed) {
  SimStationOptions o;
  o.readers = 8;
  o.cards = 24;
  o.seed = seed;
  o.journal = dir.file(name);
  o.keep_trace = true;
  return o;
}

TEST(SimStation, IssuesEveryCardOnceThroughTheJournal) {
  testing::TempDir dir("persoflow-sim");
  auto r = run_simulated_station(small(dir, "journal.db", 1));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  expect_every_card_once(*r, 24);
  // Nothing charged: every reader's cycle is exactly its device time (the
  // limit).
  EXPECT_NEAR(r->cycle_seconds, r->device_seconds, 1e-6);
  EXPECT_GT(r->virtual_seconds, 1.0);

  auto journal = storage::Journal::open(dir.file("journal.db"), {.read_only = true});
  ASSERT_TRUE(journal.is_ok());
  auto flows = (*journal)->workflows();
  ASSERT_TRUE(flows.is_ok());
  ASSERT_EQ(flows->size(), 24u);
  for (const auto& w : *flows) {
    EXPECT_EQ(w.status, storage::WorkflowStatus::kDone) << w.workflow_id;
    EXPECT_EQ(w.state_name, "Done") << w.workflow_id;
  }
  // The journal is stamped with virtual time, which starts at the fixed virtual
  // epoch.
  auto records = (*journal)->all_records(1, 1);
  ASSERT_TRUE(records.is_ok());
  ASSERT_FALSE(records->empty());
  EXPECT_GE(records->front().recorded_at_ms, 1'800'000'000'000);
  EXPECT_LT(records->front().recorded_at_ms, 1'800'000'100'000);
}

TEST(SimStation, TheSameSeedGivesTheSameJournalAndTrace) {
  testing::TempDir dir("persoflow-sim");
  auto a = run_simulated_station(small(dir, "a.db", 7));
  auto b = run_simulated_station(small(dir, "b.db", 7));
  auto c = run_simulated_station(small(dir, "c.db", 8));
  ASSERT_TRUE(a.is_ok() && b.is_ok() && c.is_ok());
  expect_every_card_once(*a, 24);
  EXPECT_EQ(a->journal_head_hash, b->journal_head_hash);
  EXPECT_EQ(a->trace_digest, b->trace_digest);
  EXPECT_EQ(a->trace, b->trace);
  EXPECT_NE(a->journal_head_hash, c->journal_head_hash);
  EXPECT_NE(a->trace_digest, c->trace_digest);
}

TEST(SimStation, CardsPulledMidWorkflowAreResumedAndIssuedOnce) {
  testing::TempDir dir("persoflow-sim");
  SimStationOptions o = small(dir, "journal.db", 3);
  o.removal_share = 1.0;  // every card is pulled once, during a card command, for 1 to 6 s
  auto r = run_simulated_station(o);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  expect_every_card_once(*r, 24);
  EXPECT_GT(r->card_removals, 0u);
  EXPECT_EQ(r->resumes, r->suspensions);

  // Each pull is journaled as CardRemoved (the machine suspends awaiting the card) and answered
  // by CardInserted once the card is back; engine suspensions, if any, by their resumption.
  auto journal = storage::Journal::open(o.journal, {.read_only = true});
  ASSERT_TRUE(journal.is_ok());
  auto all = (*journal)->all_records();
  ASSERT_TRUE(all.is_ok());
  std::size_t removed = 0, reinserted = 0, awaiting = 0, suspended = 0, resumed = 0;
  for (const auto& rec : *all) {
    removed += rec.body.event_type == "CardRemoved";
    reinserted += rec.body.event_type == "CardInserted" && rec.body.step > 0;
    awaiting += rec.body.state_name == "SuspendedAwaitingCard";
    suspended += rec.body.event_type == "WorkflowSuspended";
    resumed += rec.body.event_type == "WorkflowResumed";
  }
  EXPECT_GT(removed, 0u);
  EXPECT_LE(removed, r->card_removals);  // a card pulled in a state that ignores it is not
  EXPECT_EQ(reinserted, removed);
  EXPECT_GE(awaiting, removed);
  EXPECT_EQ(suspended, r->suspensions);
  EXPECT_EQ(resumed, r->resumes);
}

TEST(SimStation, CmLinkFaultsAreRetriedAndEveryCardIssuedOnceReproducibly) {
  testing::TempDir dir("persoflow-sim");
  SimStationOptions o = small(dir, "a.db", 5);
  o.cm_fault_share = 0.4;  // refused, timed out, dropped after the request, late
  auto a = run_simulated_station(o);
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  expect_every_card_once(*a, 24);
  EXPECT_GT(a->cm_refused + a->cm_timeouts + a->cm_dropped + a->cm_late, 0u);
  // A request dropped after the CM acted on it is answered from the CM's store when retried.
  EXPECT_GE(a->cm_repeats, a->cm_dropped);
  o.journal = dir.file("b.db");
  auto b = run_simulated_station(o);
  ASSERT_TRUE(b.is_ok());
  EXPECT_EQ(a->trace_digest, b->trace_digest);
  EXPECT_EQ(a->journal_head_hash, b->journal_head_hash);
  // Without faults the same seed runs otherwise.
  o.cm_fault_share = 0;
  o.journal = dir.file("c.db");
  auto c = run_simulated_station(o);
  ASSERT_TRUE(c.is_ok());
  EXPECT_NE(a->trace_digest, c->trace_digest);
}

TEST(SimStation, ManyReadersShortRun) {
  testing::TempDir dir("persoflow-sim");
  SimStationOptions o;
  o.readers = 100;
  o.cards = 100;
  o.seed = 11;
  o.journal = dir.file("journal.db");
  auto r = run_simulated_station(o);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  expect_every_card_once(*r, 100);
}

TEST(SimStation, RefusesBadOptions) {
  SimStationOptions o;
  o.readers = 0;
  o.journal = "/nonexistent/x.db";
  EXPECT_FALSE(run_simulated_station(o).is_ok());
  o.readers = 1;
  EXPECT_FALSE(run_simulated_station(o).is_ok());  // a journal in a missing folder
}

}  // namespace
}  // namespace persoflow::sim

namespace persoflow::sim {
namespace {

// A real SIGKILL: `persoflow-bench resume --only inflight64` runs a child
// process with every workflow inside its key generation, kills it, resumes the
// journal in a new runtime and runs every card to the end (exit 1 otherwise).
TEST(SimStation, WorkflowsKilledInFlightResumeAndFinish) {
  testing::TempDir dir("persoflow-sim");
  auto r =
      testing::run({testing::binary_dir() + "/persoflow-bench", "resume", "--only", "inflight64",
                    "--inflight", "12", "--seed", "5", "--dir", dir.path().string()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("BENCH resume.inflight12.seconds "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("BENCH resume.inflight12.resumed 12 workflows"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("BENCH resume.inflight12.finished 12 workflows"), std::string::npos)
      << r.out;
}

// The figure with the CM link faulted: `persoflow-bench resume --only sim1000` runs the station
// again with a share of the CM requests refused, timing out, dropped or late, prints its
// fraction of the device-bound limit beside the unfaulted one, and still issues every card once.
std::string bench_value(const std::string& out, const std::string& name) {
  const std::string marker = "BENCH " + name + " ";
  const auto at = out.find(marker);
  if (at == std::string::npos) return {};
  const auto from = at + marker.size();
  return out.substr(from, out.find(' ', from) - from);
}

TEST(SimStation, BenchPrintsTheFigureWithTheCmLinkFaulted) {
  testing::TempDir dir("persoflow-sim");
  auto r = testing::run({testing::binary_dir() + "/persoflow-bench", "resume", "--only", "sim1000",
                         "--readers", "8", "--cards", "40", "--cm-fault-share", "0.5", "--seed",
                         "3", "--dir", dir.path().string()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(bench_value(r.out, "station.sim8.fraction_of_limit"), "") << r.out;
  const std::string faulted = bench_value(r.out, "station.sim8.cm_faults.fraction_of_limit");
  ASSERT_NE(faulted, "") << r.out;
  EXPECT_GT(std::stod(faulted), 0.0) << r.out;
  EXPECT_EQ(bench_value(r.out, "station.sim8.cm_faults.certificates_issued"), "40") << r.out;
  double met = 0;
  for (const char* kind : {"refused", "timeouts", "dropped", "late"}) {
    const std::string v = bench_value(r.out, std::string("station.sim8.cm_faults.") + kind);
    ASSERT_NE(v, "") << kind << "\n" << r.out;
    met += std::stod(v);
  }
  EXPECT_GT(met, 0) << r.out;
}

TEST(SimStation, BenchRefusesBadArguments) {
  const std::string bench = testing::binary_dir() + "/persoflow-bench";
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--readers", "0"}, {"--readers", "x"}, {"--only", "other"}, {"--seed"}, {"--bogus"},
           {"--cm-fault-share", "1.5"}, {"--cm-fault-share", "x"}}) {
    std::vector<std::string> argv{bench, "resume"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = testing::run(argv);
    EXPECT_EQ(r.exit_code, 2) << args[0];
    EXPECT_NE(r.err.find("persoflow-bench resume: "), std::string::npos) << r.err;
  }
  auto help = testing::run({bench, "resume", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("Usage: persoflow-bench resume"), std::string::npos);
}

}  // namespace
}  // namespace persoflow::sim
