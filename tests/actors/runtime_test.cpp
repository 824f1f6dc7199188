// The workflow runtime on a real SQLite journal, with the order machine whose executors record
// every execution in a separate SQLite effects file: happy path, timeout + retry + backoff,
// suspension after exhausted retries (and its reason after reopening), resume of an interrupted
// workflow (same idempotency key, a lost answer detected as a repeat), nondeterminism, cancel.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <regex>

#include "order_machine.hpp"
#include "persoflow/actors/replay.hpp"
#include "persoflow/actors/runtime.hpp"
#include "persoflow/machines/engine.hpp"
#include "persoflow/storage/journal.hpp"
#include "test_support.hpp"

namespace persoflow::actors {
namespace {

using namespace std::chrono_literals;
using storage::WorkflowStatus;

machines::Event placed(const std::string& item) { return {"OrderPlaced", {{"item", item}}}; }

class RuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_ = make_env();
  }

  std::shared_ptr<test::OrderEnv> make_env() {
    auto env = std::make_shared<test::OrderEnv>();
    env->effects = test::EffectsDb::open(dir_.file("effects.db"));
    env->policy.attempts = 3;
    env->policy.timeout = 5s;
    env->policy.initial_delay = 10ms;
    env->policy.max_delay = 100ms;
    return env;
  }

  std::unique_ptr<Runtime> open_runtime(std::shared_ptr<test::OrderEnv> env, RuntimeOptions options = {}) {
    options.io_threads = 2;
    options.blocking_threads = 2;
    auto rt = Runtime::open(journal_path(), test::order_executors(env), options);
    EXPECT_TRUE(rt.is_ok()) << rt.status().to_string();
    return std::move(rt).value();
  }

  std::string journal_path() const { return dir_.file("journal.db"); }

  std::vector<storage::JournalRecord> records(const std::string& id) {
    auto journal = storage::Journal::open(journal_path(), {.create_if_missing = false, .read_only = true});
    EXPECT_TRUE(journal.is_ok()) << journal.status().to_string();
    auto r = (*journal)->records(id);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return *r;
  }

  std::size_t records_of_all() {
    auto journal = storage::Journal::open(journal_path(), {.create_if_missing = false, .read_only = true});
    EXPECT_TRUE(journal.is_ok()) << journal.status().to_string();
    if (!journal.is_ok()) return 0;
    auto r = (*journal)->all_records();
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? r->size() : 0;
  }

  storage::VerifyReport verify() {
    auto journal = storage::Journal::open(journal_path(), {.create_if_missing = false, .read_only = true});
    EXPECT_TRUE(journal.is_ok());
    auto report = (*journal)->verify();
    EXPECT_TRUE(report.is_ok());
    return *report;
  }

  // A promise fulfilled with the key of the first attempt that hangs or loses its answer.
  std::future<std::string> await_hang(test::OrderEnv& env) {
    auto promise = std::make_shared<std::promise<std::string>>();
    auto fired = std::make_shared<std::atomic<bool>>(false);
    std::lock_guard lock(env.faults.mutex);
    env.faults.on_hang = [promise, fired](const std::string& key) {
      if (!fired->exchange(true)) promise->set_value(key);
    };
    return promise->get_future();
  }

  static std::string get(std::future<std::string>& f) {
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready) << "the awaited attempt never came";
    return f.get();
  }

  testing::TempDir dir_{"persoflow-actors"};
  std::shared_ptr<test::OrderEnv> env_;
};

TEST(RetryPolicyTest, BackoffDoublesUpToTheCap) {
  RetryPolicy p{.attempts = 6, .timeout = 1s, .initial_delay = 100ms, .max_delay = 500ms};
  EXPECT_EQ(p.backoff(2), 100ms);
  EXPECT_EQ(p.backoff(3), 200ms);
  EXPECT_EQ(p.backoff(4), 400ms);
  EXPECT_EQ(p.backoff(5), 500ms);
  EXPECT_EQ(p.backoff(6), 500ms);
}

TEST(ReplayKeysTest, IdempotencyKeyIsWorkflowStepIndex) {
  EXPECT_EQ(idempotency_key("order-7", 12, 3), "order-7/12/3");
  EXPECT_TRUE(is_engine_event(kWorkflowSuspended));
  EXPECT_FALSE(is_engine_event("Reserved"));
}

TEST_F(RuntimeTest, HappyPathRunsEveryWorkflowToItsTerminalStateOnce) {
  {
    auto rt = open_runtime(env_);
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(rt->start("order-" + std::to_string(i), test::kOrderMachine, placed("book")).is_ok());
    }
    EXPECT_EQ(rt->start("order-0", test::kOrderMachine, placed("book")).code(),
              make_error_code(Errc::kAlreadyExists));
    auto outcomes = rt->wait();
    ASSERT_EQ(outcomes.size(), 5u);
    for (const auto& o : outcomes) {
      EXPECT_EQ(o.outcome, Outcome::kDone) << o.workflow_id << " " << o.error.to_string();
      EXPECT_EQ(o.state_name, "Delivered");
    }
    EXPECT_EQ(rt->start("order-0", test::kOrderMachine, placed("book")).code(),
              make_error_code(Errc::kAlreadyExists));
    EXPECT_EQ(rt->start("x", "no-such-machine", placed("book")).code(),
              make_error_code(Errc::kNotFound));
  }
  auto recs = records("order-3");
  ASSERT_EQ(recs.size(), 5u);  // placed, reserved, quoted (either order), charged, shipped
  EXPECT_EQ(recs.back().body.status, WorkflowStatus::kDone);
  EXPECT_EQ(recs[0].body.commands.size(), 2u);
  EXPECT_EQ(recs[0].body.commands[0].idempotency_key, "order-3/0/0");
  EXPECT_EQ(recs[0].body.commands[1].idempotency_key, "order-3/0/1");
  EXPECT_EQ(recs[2].body.commands.at(0).idempotency_key, "order-3/2/0");  // Charge
  auto replayed = replay(test::order_machine(), recs);
  ASSERT_TRUE(replayed.is_ok()) << replayed.status().to_string();
  EXPECT_EQ(replayed->state.name, "Delivered");
  EXPECT_TRUE(replayed->outstanding.empty());
  EXPECT_EQ(replayed->state.data.at("reservation"), "RSV-order-3/0/0");
  EXPECT_EQ(replayed->state.data.at("receipt"), "RCP-128-order-3/2/0");
  EXPECT_EQ(replayed->state.data.at("tracking"), "TRK-order-3/3/0");

  auto rows = env_->effects->rows();
  ASSERT_EQ(rows.size(), 20u);  // 4 commands x 5 workflows
  for (const auto& r : rows) {
    EXPECT_EQ(r.executions, 1) << r.key;
    EXPECT_EQ(r.repeats, 0) << r.key;
  }
  EXPECT_TRUE(verify().intact);
}

TEST_F(RuntimeTest, AFirstEventTheMachineRejectsStartsNothing) {
  auto rt = open_runtime(env_);
  ASSERT_TRUE(rt->start("bad", test::kOrderMachine, machines::Event{"OrderPlaced", {}}).is_ok());
  auto outcomes = rt->wait();
  ASSERT_EQ(outcomes.size(), 1u);
  EXPECT_EQ(outcomes[0].outcome, Outcome::kFailed);
  EXPECT_NE(outcomes[0].error.message().find("needs 'item'"), std::string::npos)
      << outcomes[0].error.message();
  EXPECT_TRUE(records("bad").empty());
  EXPECT_EQ(rt->resume("bad").code(), make_error_code(Errc::kNotFound));
}

TEST_F(RuntimeTest, TimedOutAndFailedAttemptsAreRetriedWithBackoff) {
  env_->policy.timeout = 150ms;
  env_->policy.initial_delay = 40ms;
  env_->policy.max_delay = 1s;
  env_->faults.hang_first["Charge"] = 1;  // times out once
  env_->faults.fail_first["Ship"] = 2;    // fails twice
  {
    auto rt = open_runtime(env_);
    ASSERT_TRUE(rt->start("slow", test::kOrderMachine, placed("pen")).is_ok());
    auto outcomes = rt->wait();
    ASSERT_EQ(outcomes.size(), 1u);
    EXPECT_EQ(outcomes[0].outcome, Outcome::kDone) << outcomes[0].error.to_string();
  }
  std::lock_guard lock(env_->faults.mutex);
  const auto& charge = env_->faults.attempts["slow/2/0"];
  ASSERT_EQ(charge.size(), 2u);
  // Attempts are stamped by the executor, after a hop to the blocking pool that the
  // timeout and backoff timers do not see, so a gap may come out a few ms short.
  constexpr auto kDispatchSlack = 15ms;
  EXPECT_GE(charge[1] - charge[0], 150ms + 40ms - kDispatchSlack);  // the timeout, then the first backoff
  const auto& ship = env_->faults.attempts["slow/3/0"];
  ASSERT_EQ(ship.size(), 3u);
  EXPECT_GE(ship[1] - ship[0], 40ms - kDispatchSlack);
  EXPECT_GE(ship[2] - ship[1], 80ms - kDispatchSlack);  // doubled
  for (const auto& r : env_->effects->rows()) EXPECT_EQ(r.executions, 1) << r.key;
  EXPECT_EQ(records("slow").back().body.state_name, "Delivered");
}

TEST_F(RuntimeTest, ARefusalIsNotRetriedTheWorkflowWaitsAndAResumeAsksAgain) {
  env_->faults.refuse_first["Charge"] = 1;
  {
    auto rt = open_runtime(env_);
    ASSERT_TRUE(rt->start("refused", test::kOrderMachine, placed("lamp")).is_ok());
    auto outcomes = rt->wait();
    ASSERT_EQ(outcomes.size(), 1u);
    EXPECT_EQ(outcomes[0].outcome, Outcome::kSuspended);
    EXPECT_TRUE(is_refusal_reason(outcomes[0].reason)) << outcomes[0].reason;
    EXPECT_FALSE(is_retries_exhausted(outcomes[0].reason)) << outcomes[0].reason;
    EXPECT_NE(outcomes[0].reason.find("the card number is not accepted [Charge (refused/2/0)]"),
              std::string::npos)
        << outcomes[0].reason;
  }
  {
    std::lock_guard lock(env_->faults.mutex);
    EXPECT_EQ(env_->faults.seen["refused/2/0"], 1);  // asked once, not three times
  }
  EXPECT_EQ(records("refused").back().body.event_type, kWorkflowSuspended);
  // The operator corrected what was refused: a resume asks again under the same key.
  auto rt = open_runtime(env_);
  ASSERT_TRUE(rt->resume("refused").is_ok());
  auto outcomes = rt->wait();
  ASSERT_EQ(outcomes.size(), 1u);
  EXPECT_EQ(outcomes[0].outcome, Outcome::kDone) << outcomes[0].reason;
  std::lock_guard lock(env_->faults.mutex);
  EXPECT_EQ(env_->faults.seen["refused/2/0"], 2);
}

TEST_F(RuntimeTest, ExhaustedRetriesSuspendWithAReasonThatSurvivesReopening) {
  env_->policy.initial_delay = 5ms;
  env_->faults.fail_first["Charge"] = 3;  // every attempt of the first runtime fails
  {
    auto rt = open_runtime(env_);
    ASSERT_TRUE(rt->start("stuck", test::kOrderMachine, placed("lamp")).is_ok());
    auto outcomes = rt->wait();
    ASSERT_EQ(outcomes.size(), 1u);
    EXPECT_EQ(outcomes[0].outcome, Outcome::kSuspended);
    EXPECT_NE(outcomes[0].reason.find("Charge (stuck/2/0) failed after 3 attempt(s)"), std::string::npos)
        << outcomes[0].reason;
    EXPECT_TRUE(is_retries_exhausted(outcomes[0].reason)) << outcomes[0].reason;
    EXPECT_FALSE(is_refusal_reason(outcomes[0].reason)) << outcomes[0].reason;
  }
  auto recs = records("stuck");
  EXPECT_EQ(recs.back().body.status, WorkflowStatus::kSuspended);
  EXPECT_EQ(recs.back().body.event_type, kWorkflowSuspended);
  auto replayed = replay(test::order_machine(), recs);
  ASSERT_TRUE(replayed.is_ok()) << replayed.status().to_string();
  EXPECT_NE(replayed->suspension_reason.find("backend unavailable"), std::string::npos);
  ASSERT_EQ(replayed->outstanding.size(), 1u);
  EXPECT_EQ(replayed->outstanding[0].idempotency_key, "stuck/2/0");

  // The backend is back: resuming records the resumption and finishes with the same key.
  {
    auto rt = open_runtime(env_);
    auto ids = rt->resume_all(/*include_suspended=*/false);
    ASSERT_TRUE(ids.is_ok());
    EXPECT_TRUE(ids->empty());
    ASSERT_TRUE(rt->resume("stuck").is_ok());
    auto outcomes = rt->wait();
    ASSERT_EQ(outcomes.size(), 1u);
    EXPECT_EQ(outcomes[0].outcome, Outcome::kDone) << outcomes[0].error.to_string();
  }
  recs = records("stuck");
  EXPECT_EQ(recs[recs.size() - 3].body.event_type, kWorkflowResumed);
  EXPECT_EQ(recs[recs.size() - 2].body.result_of, "stuck/2/0");
  EXPECT_TRUE(replay(test::order_machine(), recs).is_ok());
  for (const auto& r : env_->effects->rows()) EXPECT_EQ(r.executions, 1) << r.key;
  EXPECT_TRUE(verify().intact);
}

TEST_F(RuntimeTest, InterruptedWorkflowResumesWithTheSameKeysAndDetectsTheRepeat) {
  // Ship runs its effect but its answer is lost; the runtime goes away before the answer is
  // journaled (as in a crash).
  env_->faults.lose_answer_first["Ship"] = 1;
  auto lost = await_hang(*env_);
  {
    auto rt = open_runtime(env_);
    ASSERT_TRUE(rt->start("cut", test::kOrderMachine, placed("desk")).is_ok());
    EXPECT_EQ(get(lost), "cut/3/0");
  }
  auto before = records("cut");
  ASSERT_EQ(before.size(), 4u);
  EXPECT_EQ(before.back().body.status, WorkflowStatus::kRunning);

  auto env2 = make_env();  // a fresh process: no faults
  {
    auto rt = open_runtime(env2);
    auto ids = rt->resume_all();
    ASSERT_TRUE(ids.is_ok()) << ids.status().to_string();
    EXPECT_EQ(*ids, std::vector<std::string>{"cut"});
    auto outcomes = rt->wait();
    ASSERT_EQ(outcomes.size(), 1u);
    EXPECT_EQ(outcomes[0].outcome, Outcome::kDone) << outcomes[0].error.to_string();
  }
  auto after = records("cut");
  ASSERT_EQ(after.size(), 5u);
  EXPECT_EQ(after.back().body.result_of, "cut/3/0");
  EXPECT_EQ(after.back().body.state_name, "Delivered");
  {
    std::lock_guard lock(env2->faults.mutex);
    EXPECT_EQ(env2->faults.seen.size(), 1u);  // only Ship was issued again
    EXPECT_EQ(env2->faults.seen["cut/3/0"], 1);
  }
  for (const auto& r : env2->effects->rows()) {
    EXPECT_EQ(r.executions, 1) << r.key;
    EXPECT_EQ(r.repeats, r.key == "cut/3/0" ? 1 : 0) << r.key;
  }
  EXPECT_TRUE(verify().intact);
}

TEST_F(RuntimeTest, JournalOfSchemaVersionOneMigratesAndResumes) {
  // Written by the schema-version-1 build's crash_child, killed after its 5th commit: orders 000
  // and 001 delivered, 002 charging, 003-005 shipping, their commands journaled but unanswered.
  const std::string golden = testing::source_dir() + "/tests/golden/journal/order_interrupted_v1";
  std::filesystem::copy_file(golden + ".db", journal_path());
  auto env = std::make_shared<test::OrderEnv>();
  std::filesystem::copy_file(golden + "_effects.db", dir_.file("effects-v1.db"));
  env->effects = test::EffectsDb::open(dir_.file("effects-v1.db"));
  env->policy = env_->policy;
  const std::size_t records_before = 25;  // a read-only open refuses the journal until migrated
  {
    auto rt = open_runtime(env);
    auto ids = rt->resume_all();
    ASSERT_TRUE(ids.is_ok()) << ids.status().to_string();
    std::sort(ids->begin(), ids->end());
    EXPECT_EQ(*ids, (std::vector<std::string>{"order-002", "order-003", "order-004", "order-005"}));
    auto outcomes = rt->wait();
    ASSERT_EQ(outcomes.size(), 4u);
    for (const auto& o : outcomes) {
      EXPECT_EQ(o.outcome, Outcome::kDone) << o.workflow_id << " " << o.error.to_string();
      EXPECT_EQ(o.state_name, "Delivered") << o.workflow_id;
    }
  }
  for (int i = 0; i < 6; ++i) {
    auto recs = records("order-00" + std::to_string(i));
    ASSERT_EQ(recs.size(), 5u) << i;
    EXPECT_EQ(recs.back().body.state_name, "Delivered");
    for (std::size_t step = 0; step < recs.size(); ++step) EXPECT_EQ(recs[step].body.step, step);
  }
  // 002 charges and ships, 003-005 ship: 5 more records; each effect ran once.
  EXPECT_EQ(records_of_all(), records_before + 5);
  for (const auto& r : env->effects->rows()) EXPECT_EQ(r.executions, 1) << r.key;
  auto report = verify();
  EXPECT_TRUE(report.intact) << report.reason;
  EXPECT_EQ(report.records_checked, records_before + 5);
}

TEST_F(RuntimeTest, ReplayThatDiffersStopsLoudlyAsNondeterminism) {
  env_->faults.hang_first["Ship"] = 1;
  auto hung = await_hang(*env_);
  {
    auto rt = open_runtime(env_);
    ASSERT_TRUE(rt->start("drift", test::kOrderMachine, placed("cup")).is_ok());
    get(hung);
  }
  const auto journaled = records("drift").size();
  RuntimeOptions altered;
  altered.find_machine = [](std::string_view) { return &test::altered_order_machine(); };
  for (int round = 0; round < 2; ++round) {
    auto rt = open_runtime(make_env(), altered);
    ASSERT_TRUE(rt->resume("drift").is_ok());
    auto outcomes = rt->wait();
    ASSERT_EQ(outcomes.size(), 1u);
    EXPECT_EQ(outcomes[0].outcome, Outcome::kFailed);
    EXPECT_EQ(outcomes[0].error.code(), make_error_code(Errc::kNondeterminism));
    EXPECT_NE(outcomes[0].error.message().find("step 2"), std::string::npos)
        << outcomes[0].error.message();
  }
  auto recs = records("drift");
  ASSERT_EQ(recs.size(), journaled + 1);  // recorded once, not again on the second attempt
  EXPECT_EQ(recs.back().body.event_type, kWorkflowNondeterministic);
  EXPECT_EQ(recs.back().body.status, WorkflowStatus::kSuspended);
  auto again = replay(test::altered_order_machine(), recs);
  EXPECT_EQ(again.status().code(), make_error_code(Errc::kNondeterminism));

  // The machine as journaled resumes it.
  auto rt = open_runtime(make_env());
  ASSERT_TRUE(rt->resume("drift").is_ok());
  auto outcomes = rt->wait();
  ASSERT_EQ(outcomes.size(), 1u);
  EXPECT_EQ(outcomes[0].outcome, Outcome::kDone) << outcomes[0].error.to_string();
}

TEST_F(RuntimeTest, ReplayRejectsTamperedAndContradictoryRecords) {
  {
    auto rt = open_runtime(env_);
    ASSERT_TRUE(rt->start("t", test::kOrderMachine, placed("ink")).is_ok());
    rt->wait();
  }
  const auto recs = records("t");
  ASSERT_TRUE(replay(test::order_machine(), recs).is_ok());

  auto changed_command = recs;
  auto command = machines::decode_command(changed_command[2].body.commands.at(0).payload);
  ASSERT_TRUE(command.is_ok());
  command->fields["amount"] = "1";
  changed_command[2].body.commands[0].payload = machines::encode(*command);
  EXPECT_EQ(replay(test::order_machine(), changed_command).status().code(),
            make_error_code(Errc::kNondeterminism));

  auto changed_state = recs;
  changed_state[1].body.state_name = "Charging";
  EXPECT_EQ(replay(test::order_machine(), changed_state).status().code(),
            make_error_code(Errc::kNondeterminism));

  auto foreign_result = recs;
  foreign_result[3].body.result_of = "t/9/9";
  EXPECT_EQ(replay(test::order_machine(), foreign_result).status().code(),
            make_error_code(Errc::kCorrupt));

  auto unanswered_done = recs;  // done, yet Ship (step 3) has no result
  unanswered_done.pop_back();
  unanswered_done.back().body.status = WorkflowStatus::kDone;
  EXPECT_EQ(replay(test::order_machine(), unanswered_done).status().code(),
            make_error_code(Errc::kCorrupt));
}

TEST_F(RuntimeTest, CancelStopsARunningWorkflowAndRefusesADoneOne) {
  env_->faults.hang_first["Charge"] = 1;
  auto hung = await_hang(*env_);
  auto rt = open_runtime(env_);
  ASSERT_TRUE(rt->start("c1", test::kOrderMachine, placed("hat")).is_ok());
  EXPECT_EQ(get(hung), "c1/2/0");
  ASSERT_TRUE(rt->cancel("c1", "customer withdrew").is_ok());
  auto outcomes = rt->wait();
  ASSERT_EQ(outcomes.size(), 1u);
  EXPECT_EQ(outcomes[0].outcome, Outcome::kCancelled);
  EXPECT_EQ(outcomes[0].reason, "customer withdrew");
  auto recs = records("c1");
  EXPECT_EQ(recs.back().body.event_type, kWorkflowCancelled);
  EXPECT_EQ(recs.back().body.status, WorkflowStatus::kCancelled);
  EXPECT_EQ(rt->resume("c1").code(), make_error_code(Errc::kRejected));
  EXPECT_EQ(rt->cancel("c1", "again").code(), make_error_code(Errc::kRejected));

  {
    std::lock_guard lock(env_->faults.mutex);
    env_->faults.hang_first.clear();
  }
  ASSERT_TRUE(rt->start("c2", test::kOrderMachine, placed("cap")).is_ok());
  ASSERT_EQ(rt->wait().at(0).outcome, Outcome::kDone);
  auto refused = rt->cancel("c2", "too late");
  EXPECT_EQ(refused.code(), make_error_code(Errc::kRejected));
  EXPECT_NE(refused.message().find("cannot be cancelled"), std::string::npos) << refused.message();
  EXPECT_EQ(records("c2").back().body.status, WorkflowStatus::kDone);
  EXPECT_EQ(rt->cancel("nobody", "x").code(), make_error_code(Errc::kNotFound));
}


// ----- Outside events -----

machines::Event event(std::string type, machines::Fields fields = {}) {
  return machines::Event{std::move(type), std::move(fields)};
}

TEST_F(RuntimeTest, AnOutsideEventThatLeavesTheStateDropsItsCommandsAndTheirLateAnswers) {
  std::promise<void> open_gate;
  env_->faults.gates["Reserve"] = open_gate.get_future().share();
  auto running = await_hang(*env_);
  auto rt = open_runtime(env_);
  ASSERT_TRUE(rt->start("h1", test::kOrderMachine, placed("vase")).is_ok());
  EXPECT_EQ(get(running), "h1/0/0");  // Reserve has run its effect; its answer waits

  ASSERT_TRUE(rt->post_event_and_wait("h1", event("OrderHeld")).is_ok());
  // OnHold has nothing outstanding: the workflow waits (suspended) for the next outside event.
  auto outcomes = rt->wait();
  ASSERT_EQ(outcomes.size(), 1u);
  EXPECT_EQ(outcomes[0].outcome, Outcome::kSuspended);
  EXPECT_EQ(outcomes[0].state_name, "OnHold");
  open_gate.set_value();  // the dropped Reserve answers late: ignored

  // Not accepted in OnHold: refused with the machine's reason, nothing journaled.
  const auto before = records("h1").size();
  auto refused = rt->post_event_and_wait("h1", event("AddressChanged", {{"address", "x"}}));
  EXPECT_EQ(refused.code(), make_error_code(Errc::kRejected));
  EXPECT_NE(refused.message().find("OnHold"), std::string::npos) << refused.message();
  rt->wait();
  for (const auto& r : records("h1")) EXPECT_NE(r.body.event_type, "AddressChanged");

  // The release resumes the suspended workflow and asks again for what is missing.
  ASSERT_TRUE(rt->post_event_and_wait("h1", event("OrderReleased")).is_ok());
  outcomes = rt->wait();
  ASSERT_EQ(outcomes.size(), 1u);
  EXPECT_EQ(outcomes[0].outcome, Outcome::kDone) << outcomes[0].error.to_string();
  EXPECT_EQ(outcomes[0].state_name, "Delivered");

  const auto recs = records("h1");
  ASSERT_GT(recs.size(), before);
  std::vector<std::string> types;
  for (const auto& r : recs) {
    EXPECT_NE(r.body.result_of, "h1/0/0") << "the dropped Reserve's answer was journaled";
    if (r.body.result_of.empty()) types.push_back(r.body.event_type);
  }
  EXPECT_NE(std::find(types.begin(), types.end(), "OrderHeld"), types.end());
  EXPECT_NE(std::find(types.begin(), types.end(), "OrderReleased"), types.end());
  auto replayed = replay(test::order_machine(), recs);
  ASSERT_TRUE(replayed.is_ok()) << replayed.status().to_string();
  EXPECT_EQ(replayed->state.name, "Delivered");
  EXPECT_TRUE(replayed->outstanding.empty());
  ASSERT_FALSE(replayed->dropped.empty());
  EXPECT_EQ(replayed->dropped.front(), "h1/0/0");
  EXPECT_NE(replayed->state.data.at("reservation"), "RSV-h1/0/0");  // from the Reserve asked again
  EXPECT_TRUE(verify().intact);
}

TEST_F(RuntimeTest, AnOutsideEventThatKeepsTheStateKeepsItsCommands) {
  std::promise<void> open_gate;
  env_->faults.gates["Ship"] = open_gate.get_future().share();
  auto running = await_hang(*env_);
  auto rt = open_runtime(env_);
  ASSERT_TRUE(rt->start("a1", test::kOrderMachine, placed("rug")).is_ok());
  EXPECT_EQ(get(running), "a1/3/0");
  ASSERT_TRUE(rt->post_event_and_wait("a1", event("AddressChanged", {{"address", "Elm St"}})).is_ok());
  open_gate.set_value();
  auto outcomes = rt->wait();
  ASSERT_EQ(outcomes.size(), 1u);
  EXPECT_EQ(outcomes[0].outcome, Outcome::kDone) << outcomes[0].error.to_string();
  const auto recs = records("a1");
  EXPECT_EQ(recs.back().body.result_of, "a1/3/0");  // Ship's answer, after the outside event
  auto replayed = replay(test::order_machine(), recs);
  ASSERT_TRUE(replayed.is_ok()) << replayed.status().to_string();
  EXPECT_EQ(replayed->state.data.at("address"), "Elm St");
  EXPECT_TRUE(replayed->dropped.empty());
}

TEST_F(RuntimeTest, AnAcknowledgedNotifyOperatorEndsATerminalWorkflow) {
  std::promise<void> open_gate;
  env_->faults.gates["Charge"] = open_gate.get_future().share();
  auto running = await_hang(*env_);
  auto rt = open_runtime(env_);
  ASSERT_TRUE(rt->start("w1", test::kOrderMachine, placed("pot")).is_ok());
  EXPECT_EQ(get(running), "w1/2/0");
  ASSERT_TRUE(rt->post_event_and_wait("w1", event("OrderWithdrawn", {{"reason", "changed mind"}}))
                  .is_ok());
  {
    std::lock_guard lock(env_->faults.mutex);
    env_->faults.gates.clear();
  }
  open_gate.set_value();
  auto outcomes = rt->wait();
  ASSERT_EQ(outcomes.size(), 1u);
  EXPECT_EQ(outcomes[0].outcome, Outcome::kDone) << outcomes[0].reason;
  EXPECT_EQ(outcomes[0].state_name, "Withdrawn");
  const auto recs = records("w1");
  EXPECT_EQ(recs.back().body.event_type, kCommandAcknowledged);
  EXPECT_EQ(recs.back().body.result_of, "w1/3/0");
  EXPECT_EQ(recs.back().body.status, WorkflowStatus::kDone);
  EXPECT_EQ(recs.back().body.state, recs[recs.size() - 2].body.state);
  auto replayed = replay(test::order_machine(), recs);
  ASSERT_TRUE(replayed.is_ok()) << replayed.status().to_string();
  EXPECT_EQ(replayed->dropped, std::vector<std::string>{"w1/2/0"});

  // An acknowledgement of a command that is not outstanding is a contradiction.
  auto forged = recs;
  forged.back().body.result_of = "w1/2/0";
  EXPECT_EQ(replay(test::order_machine(), forged).status().code(), make_error_code(Errc::kCorrupt));
}

TEST_F(RuntimeTest, PostEventRefusesWhatItCannotDeliver) {
  auto rt = open_runtime(env_);
  EXPECT_EQ(rt->post_event("nobody", event("OrderHeld")).code(), make_error_code(Errc::kNotFound));
  ASSERT_TRUE(rt->start("d1", test::kOrderMachine, placed("mug")).is_ok());
  ASSERT_EQ(rt->wait().at(0).outcome, Outcome::kDone);
  EXPECT_EQ(rt->post_event("d1", event("OrderHeld")).code(), make_error_code(Errc::kRejected));
  EXPECT_EQ(rt->post_event_and_wait("d1", event("OrderHeld")).code(),
            make_error_code(Errc::kRejected));
  for (std::string_view engine : {kWorkflowSuspended, kWorkflowCancelled, kCommandAcknowledged}) {
    EXPECT_EQ(rt->post_event("d1", event(std::string(engine))).code(),
              make_error_code(Errc::kInvalidArgument))
        << engine;
  }
  EXPECT_EQ(rt->post_event("d1", event("")).code(), make_error_code(Errc::kInvalidArgument));
}

// crash_child --outside: every order is held, then released, while its commands run; the child is
// killed (SIGKILL) at several points with outside events and dropped commands in the journal,
// restarted, and must finish every order; each replay drops the same commands.
TEST_F(RuntimeTest, AKilledRunWithOutsideEventsInTheJournalResumesToTheSameEnd) {
  auto run = [&](const std::string& crash_at) {
    std::vector<std::string> argv = {"/usr/bin/env"};
    if (!crash_at.empty()) argv.push_back("PERSOFLOW_CRASH_AT=" + crash_at);
    argv.insert(argv.end(), {testing::binary_dir() + "/crash_child", "--journal", journal_path(),
                             "--effects", dir_.file("effects.db"), "--workflows", "12", "--outside"});
    return testing::run(argv);
  };
  int killed = 0;
  for (const char* point : {"actors.before_command:9", "actors.after_command:14",
                            "journal.after_commit:30", "actors.before_command:40"}) {
    auto crashed = run(point);
    if (crashed.exit_code == 128 + 9) ++killed;
    else EXPECT_EQ(crashed.exit_code, 0) << point << ": " << crashed.err << crashed.out;
  }
  EXPECT_GE(killed, 2);
  auto last = run("");
  ASSERT_EQ(last.exit_code, 0) << last.err;

  auto journal = storage::Journal::open(journal_path(), {.create_if_missing = false, .read_only = true});
  ASSERT_TRUE(journal.is_ok());
  auto workflows = (*journal)->workflows();
  ASSERT_TRUE(workflows.is_ok());
  ASSERT_EQ(workflows->size(), 12u);
  int held = 0;
  for (const auto& w : *workflows) {
    EXPECT_EQ(w.status, WorkflowStatus::kDone) << w.workflow_id;
    auto recs = (*journal)->records(w.workflow_id);
    ASSERT_TRUE(recs.is_ok());
    auto replayed = replay(test::order_machine(), *recs);
    ASSERT_TRUE(replayed.is_ok()) << replayed.status().to_string();
    EXPECT_EQ(replayed->state.name, "Delivered");
    for (const auto& r : *recs) {
      if (r.body.event_type == "OrderHeld") ++held;
      for (const auto& k : replayed->dropped) EXPECT_NE(r.body.result_of, k) << w.workflow_id;
    }
  }
  EXPECT_GT(held, 0);
  EXPECT_TRUE(verify().intact);
}

}  // namespace
}  // namespace persoflow::actors

namespace persoflow::actors {
namespace {

void install_probe(ExecutorRegistry& registry) {
  registry.add("Probe", blocking_executor([](const machines::Command&, const CommandContext& c) {
                 return Result<machines::Event>(machines::Event{"Probed", {{"key", c.idempotency_key}}});
               }));
}
PF_REGISTER_EXECUTORS(probe, "executor-set-probe", install_probe);

TEST(ExecutorSetsTest, AMachinesExecutorsAreFoundByItsName) {
  EXPECT_EQ(find_executor_set("no-such-machine"), nullptr);
  ExecutorInstaller install = find_executor_set("executor-set-probe");
  ASSERT_NE(install, nullptr);
  ExecutorRegistry registry;
  install(registry);
  ASSERT_NE(registry.find("Probe"), nullptr);
  EXPECT_TRUE(registry.find("Probe")->blocking);
  EXPECT_EQ(registry.find("Other"), nullptr);
  auto names = machines_with_executors();
  EXPECT_NE(std::find(names.begin(), names.end(), "executor-set-probe"), names.end());
}

}  // namespace
}  // namespace persoflow::actors
