// Crash test: crash_child runs 50 order workflows against a journal and an effects file and is
// killed with SIGKILL at 200+ different (crash point, k) pairs: after the k-th journal commit,
// inside the k-th group commit, between a commit and the k-th command, and after the k-th
// command's effect before its result is journaled. A first uninterrupted run counts how often
// each point is reached (PERSOFLOW_CRASH_COUNT) and gives the expected final states. After each
// kill the child is restarted without faults and must resume everything to the same final
// states; no command may run its effect twice for one idempotency key (the executors detect
// repeats in the effects file, and those are counted apart); the journal's hash chain must verify.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <thread>
#include <map>
#include <set>
#include <sstream>

#include "journal_meta.hpp"
#include "order_machine.hpp"
#include "persoflow/actors/replay.hpp"
#include "persoflow/storage/journal.hpp"
#include "test_support.hpp"

namespace persoflow::actors {
namespace {

constexpr int kWorkflows = 50;
constexpr int kPairs = 240;
// Small group commits, so the commit points are reached often enough to be killed at 100+ places.
constexpr int kBatch = 4;

struct Files {
  std::string journal, effects;
};

testing::RunResult run_child(const Files& f, const std::vector<std::string>& env) {
  std::vector<std::string> argv = {"/usr/bin/env"};
  argv.insert(argv.end(), env.begin(), env.end());
  argv.insert(argv.end(), {testing::binary_dir() + "/crash_child", "--journal", f.journal,
                           "--effects", f.effects, "--workflows", std::to_string(kWorkflows),
                           "--batch", std::to_string(kBatch)});
  return testing::run(argv);
}

// The final state bytes of every workflow, checking that each is done and replays cleanly and
// that the chain verifies (else `problem` says what is wrong). Collects the journaled command
// keys in `keys`. Thread-safe: no gtest assertions.
std::map<std::string, std::string> final_states(const Files& f, std::set<std::string>& keys,
                                                std::string& problem) {
  std::map<std::string, std::string> out;
  auto journal = storage::Journal::open(f.journal, {.create_if_missing = false, .read_only = true});
  if (!journal.is_ok()) {
    problem = journal.status().to_string();
    return out;
  }
  auto report = (*journal)->verify();
  if (!report.is_ok() || !report->intact) {
    problem = "journal verify: " + (report.is_ok() ? report->reason : report.status().to_string());
    return out;
  }
  // The child writes the workflows table every 16 records: verify checked it against them.
  if (std::stoll(testing::journal_meta_value(f.journal, "summary_seq").value_or("0")) < 16) {
    problem += "the workflows table was never written; ";
  }
  auto workflows = (*journal)->workflows();
  if (!workflows.is_ok()) {
    problem = workflows.status().to_string();
    return out;
  }
  for (const auto& w : *workflows) {
    if (w.status != storage::WorkflowStatus::kDone) problem += w.workflow_id + " is not done; ";
    auto records = (*journal)->records(w.workflow_id);
    if (!records.is_ok() || records->empty()) {
      problem += w.workflow_id + ": no records; ";
      continue;
    }
    auto replayed = replay(test::order_machine(), *records);
    if (!replayed.is_ok()) problem += replayed.status().to_string() + "; ";
    for (const auto& r : *records)
      for (const auto& c : r.body.commands) keys.insert(c.idempotency_key);
    out[w.workflow_id] = records->back().body.state;
  }
  return out;
}

struct PairResult {
  bool killed = false;
  int repeats = 0;
  int executed_twice = 0;
  std::string failure;  // empty when every check passed
};

// One run killed at (point, k), one restart without faults, then the checks. Thread-safe: no
// gtest assertions here, the caller reports `failure`.
PairResult kill_and_resume(const std::string& point, long k,
                           const std::map<std::string, std::string>& expected,
                           const std::set<std::string>& ref_keys) {
  PairResult res;
  testing::TempDir dir("persoflow-crash-run");
  Files f{dir.file("journal.db"), dir.file("effects.db")};
  auto crashed = run_child(f, {"PERSOFLOW_CRASH_AT=" + point + ":" + std::to_string(k)});
  res.killed = crashed.exit_code == 128 + 9;
  if (!res.killed && crashed.exit_code != 0) {
    res.failure = "the crashing run exited " + std::to_string(crashed.exit_code) + ": " + crashed.err;
    return res;
  }
  auto resumed = run_child(f, {});
  if (resumed.exit_code != 0) {
    res.failure = "the restart exited " + std::to_string(resumed.exit_code) + ": " + resumed.err;
    return res;
  }
  std::set<std::string> keys;
  std::string problem;
  auto got = final_states(f, keys, problem);
  if (!problem.empty()) {
    res.failure = problem;
    return res;
  }
  if (got != expected) {
    res.failure = "final states differ from the uninterrupted run";
    return res;
  }
  if (keys != ref_keys) {
    res.failure = "the journaled commands differ from the uninterrupted run";
    return res;
  }
  std::set<std::string> effect_keys;
  for (const auto& row : test::EffectsDb::open(f.effects)->rows()) {
    effect_keys.insert(row.key);
    res.repeats += row.repeats;
    if (row.executions != 1) {
      ++res.executed_twice;
      res.failure += row.key + " executed " + std::to_string(row.executions) + " times; ";
    }
  }
  if (effect_keys != keys) res.failure += "the effects do not match the journaled commands";
  return res;
}

TEST(CrashTest, KilledAtTwoHundredPointsEveryWorkflowResumesToTheSameEnd) {
  testing::TempDir base("persoflow-crash");
  // 1. Uninterrupted, counting the crash points.
  Files ref{base.file("ref-journal.db"), base.file("ref-effects.db")};
  std::string counts_file = base.file("counts");
  auto r = run_child(ref, {"PERSOFLOW_CRASH_COUNT=" + counts_file});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::map<std::string, long> counts;
  {
    std::ifstream in(counts_file);
    std::string name;
    long n;
    while (in >> name >> n) counts[name] = n;
  }
  const std::vector<std::string> points = {"journal.after_commit", "journal.group.before_commit",
                                           "actors.before_command", "actors.after_command"};
  for (const auto& p : points) ASSERT_GT(counts[p], 0) << p << " never reached";
  std::set<std::string> ref_keys;
  std::string problem;
  const auto expected = final_states(ref, ref_keys, problem);
  ASSERT_EQ(problem, "");
  ASSERT_EQ(expected.size(), static_cast<std::size_t>(kWorkflows));
  ASSERT_EQ(ref_keys.size(), 4u * kWorkflows);
  for (const auto& row : test::EffectsDb::open(ref.effects)->rows()) {
    ASSERT_EQ(row.executions, 1) << row.key;
    ASSERT_EQ(row.repeats, 0) << row.key << ": an uninterrupted run repeats nothing";
  }

  // 2. The (point, k) pairs: commit points are reached a varying number of times (batching
  // depends on timing), so their k stays within 90% of the counted run; the command points are
  // reached exactly once per command.
  std::vector<std::pair<std::string, long>> pairs;
  long commit_budget = 0;
  for (const auto& p : {points[0], points[1]}) {
    long max_k = std::max(1L, counts[p] * 9 / 10);
    for (long k = 1; k <= max_k; ++k) pairs.emplace_back(p, k);
    commit_budget += max_k;
  }
  const long per_command_point = (kPairs - commit_budget + 1) / 2;
  for (const auto& p : {points[2], points[3]}) {
    long n = counts[p];
    long take = std::min(n, per_command_point);
    for (long i = 0; i < take; ++i) pairs.emplace_back(p, 1 + i * n / take);
  }

  // 3. Kill, restart, check: three pairs at a time (the children mostly wait for fsync).
  std::vector<PairResult> results(pairs.size());
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t i; (i = next++) < pairs.size();) {
      results[i] = kill_and_resume(pairs[i].first, pairs[i].second, expected, ref_keys);
    }
  };
  std::vector<std::thread> workers;
  for (int t = 0; t < 3; ++t) workers.emplace_back(worker);
  for (auto& t : workers) t.join();

  int kills = 0, repeats_detected = 0, executed_twice = 0;
  std::set<std::pair<std::string, long>> killed_at;
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    const auto& res = results[i];
    EXPECT_TRUE(res.failure.empty()) << pairs[i].first << ":" << pairs[i].second << ": " << res.failure;
    if (res.killed) killed_at.insert(pairs[i]);
    kills += res.killed;
    repeats_detected += res.repeats;
    executed_twice += res.executed_twice;
  }
  // The command-line verifier, when this build has it, agrees on a journal that went through a
  // kill inside a group commit.
  {
    testing::TempDir dir("persoflow-crash-verify");
    Files f{dir.file("journal.db"), dir.file("effects.db")};
    EXPECT_EQ(run_child(f, {"PERSOFLOW_CRASH_AT=journal.group.before_commit:5"}).exit_code, 128 + 9);
    EXPECT_EQ(run_child(f, {}).exit_code, 0);
    auto verify = testing::run({testing::persoflow_binary(), "journal", "verify", "--journal", f.journal});
    if (verify.err.find("unknown command") == std::string::npos) {
      EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
    }
  }
  std::map<std::string, int> per_point;
  for (const auto& [p, k] : killed_at) ++per_point[p];
  std::ostringstream summary;
  for (const auto& [p, n] : per_point) summary << " " << p << "=" << n;
  std::printf("crash test: %zu pairs tried, %d kills at %zu distinct points (%s), repeats detected %d, "
              "executed twice %d\n",
              pairs.size(), kills, killed_at.size(), summary.str().c_str(), repeats_detected,
              executed_twice);
  EXPECT_GE(killed_at.size(), 200u);
  EXPECT_EQ(executed_twice, 0);
  EXPECT_GT(repeats_detected, 0) << "no kill fell between an effect and its journaled result";
}

}  // namespace
}  // namespace persoflow::actors
