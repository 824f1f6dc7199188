// `persoflow workflows list|show|resume|cancel` on a journal written by the runtime: readable
// output, --json, suspension and nondeterminism reasons, and the bad-input cases (unknown id,
// missing journal, read-only journal, a machine without executors in the program): one line on
// stderr, a non-zero exit, nothing written.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>

#include "order_machine.hpp"
#include "persoflow/actors/runtime.hpp"
#include "persoflow/storage/journal.hpp"
#include "test_support.hpp"

namespace persoflow::actors {
namespace {

using namespace std::chrono_literals;
using testing::run;

machines::Event placed(const std::string& item) { return {"OrderPlaced", {{"item", item}}}; }

class WorkflowsCliTest : public ::testing::Test {
 protected:
  // done-1: delivered; stuck-1: suspended (Charge failed 3 times); cut-1: interrupted while Ship
  // was outstanding; drift-1: stopped as nondeterministic.
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir("persoflow-workflows-cli");
    journal_ = dir_->file("journal.db");
    auto env = std::make_shared<test::OrderEnv>();
    env->effects = test::EffectsDb::open(dir_->file("effects.db"));
    env->policy = {.attempts = 3, .timeout = 5s, .initial_delay = 2ms, .max_delay = 10ms};
    auto open = [&](RuntimeOptions options = {}) {
      auto rt = Runtime::open(journal_, test::order_executors(env), options);
      EXPECT_TRUE(rt.is_ok()) << rt.status().to_string();
      return std::move(rt).value();
    };
    {
      auto rt = open();
      ASSERT_TRUE(rt->start("done-1", test::kOrderMachine, placed("book")).is_ok());
      rt->wait();
      env->faults.fail_first["Charge"] = 3;
      ASSERT_TRUE(rt->start("stuck-1", test::kOrderMachine, placed("lamp")).is_ok());
      rt->wait();
    }
    std::promise<void> lost;
    {
      std::lock_guard lock(env->faults.mutex);
      env->faults.fail_first.clear();
      env->faults.lose_answer_first["Ship"] = 1;
      env->faults.on_hang = [&lost](const std::string& key) {
        if (key == "cut-1/3/0") lost.set_value();
      };
    }
    {
      auto rt = open();
      ASSERT_TRUE(rt->start("cut-1", test::kOrderMachine, placed("desk")).is_ok());
      ASSERT_EQ(lost.get_future().wait_for(10s), std::future_status::ready);
    }
    std::promise<void> hung;
    {
      std::lock_guard lock(env->faults.mutex);
      env->faults.lose_answer_first["Ship"] = 0;
      env->faults.hang_first["Ship"] = 1;
      env->faults.on_hang = [&hung](const std::string& key) {
        if (key == "drift-1/3/0") hung.set_value();
      };
    }
    {
      auto rt = open();
      ASSERT_TRUE(rt->start("drift-1", test::kOrderMachine, placed("cup")).is_ok());
      // Charge answered, Ship hangs: the runtime goes away before its timeout.
      ASSERT_EQ(hung.get_future().wait_for(10s), std::future_status::ready);
    }
    RuntimeOptions altered;
    altered.find_machine = [](std::string_view) { return &test::altered_order_machine(); };
    auto rt = open(altered);
    ASSERT_TRUE(rt->resume("drift-1").is_ok());
    ASSERT_EQ(rt->wait().at(0).outcome, Outcome::kFailed);
  }
  static void TearDownTestSuite() { delete dir_; }

  static testing::RunResult wf(std::vector<std::string> args) {
    args.insert(args.begin(), {testing::persoflow_binary(), "workflows"});
    return run(args);
  }
  static std::size_t record_count() {
    auto j = storage::Journal::open(journal_, {.create_if_missing = false, .read_only = true});
    EXPECT_TRUE(j.is_ok()) << j.status().to_string();
    auto all = (*j)->all_records();
    EXPECT_TRUE(all.is_ok());
    return all->size();
  }
  static bool one_line(const std::string& s) {
    return !s.empty() && s.find('\n') == s.size() - 1;
  }

  static testing::TempDir* dir_;
  static std::string journal_;
};
testing::TempDir* WorkflowsCliTest::dir_ = nullptr;
std::string WorkflowsCliTest::journal_;

TEST_F(WorkflowsCliTest, ListShowsEveryWorkflowForPeopleAndScripts) {
  auto r = wf({"list", "--journal", journal_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ID"), std::string::npos);
  for (const char* s : {"done-1", "stuck-1", "cut-1", "drift-1", "actors-test-order", "Delivered",
                        "suspended", "running"}) {
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " missing in\n" << r.out;
  }
  r = wf({"list", "--journal", journal_, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 4u);
  std::map<std::string, nlohmann::json> by_id;
  for (const auto& w : j) by_id[w["id"]] = w;
  EXPECT_EQ(by_id["done-1"]["status"], "done");
  EXPECT_EQ(by_id["done-1"]["state"], "Delivered");
  EXPECT_EQ(by_id["done-1"]["steps"], 5);
  EXPECT_EQ(by_id["stuck-1"]["status"], "suspended");
  EXPECT_EQ(by_id["cut-1"]["status"], "running");
  EXPECT_EQ(by_id["cut-1"]["machine"], "actors-test-order");
  EXPECT_TRUE(by_id["cut-1"].contains("updated"));
}

TEST_F(WorkflowsCliTest, ShowGivesTheHistoryAndTheSuspensionReason) {
  auto r = wf({"show", "stuck-1", "--journal", journal_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("suspended: command Charge (stuck-1/2/0) failed after 3 attempt(s): Charge "
                       "backend unavailable"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("command stuck-1/0/0 Reserve {item=lamp}  => Reserved at step"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("command stuck-1/2/0 Charge"), std::string::npos);
  EXPECT_NE(r.out.find("no result yet"), std::string::npos);
  EXPECT_NE(r.out.find("WorkflowSuspended"), std::string::npos);
  // This program does not carry the test machine: it says so instead of pretending to check.
  EXPECT_NE(r.out.find("replay: not checked"), std::string::npos) << r.out;

  r = wf({"show", "stuck-1", "--journal", journal_, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["status"], "suspended");
  EXPECT_NE(j["suspension_reason"].get<std::string>().find("failed after 3 attempt(s)"), std::string::npos);
  ASSERT_EQ(j["history"].size(), 4u);
  EXPECT_EQ(j["history"][0]["commands"][0]["key"], "stuck-1/0/0");
  EXPECT_EQ(j["history"][0]["commands"][0]["fields"]["item"], "lamp");
  EXPECT_FALSE(j["history"][0]["commands"][0]["result"].is_null());
  EXPECT_TRUE(j["history"][2]["commands"][0]["result"].is_null());
}

TEST_F(WorkflowsCliTest, ShowNamesARecordedNondeterminism) {
  auto r = wf({"show", "drift-1", "--journal", journal_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("NONDETERMINISM recorded: workflow drift-1 step 2"), std::string::npos) << r.out;
  r = wf({"show", "drift-1", "--journal", journal_, "--json"});
  auto j = nlohmann::json::parse(r.out);
  EXPECT_NE(j["nondeterminism"].get<std::string>().find("replay differs"), std::string::npos);
}

TEST_F(WorkflowsCliTest, ResumeWithoutTheMachinesExecutorsSaysSoAndWritesNothing) {
  const auto before = record_count();
  for (auto args : {std::vector<std::string>{"resume", "--journal", journal_},
                    std::vector<std::string>{"resume", "cut-1", "--journal", journal_}}) {
    auto r = wf(args);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_TRUE(one_line(r.err)) << r.err;
    EXPECT_NE(r.err.find("actors-test-order"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("nothing was resumed"), std::string::npos) << r.err;
  }
  auto r = wf({"resume", "done-1", "--journal", journal_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is done; there is nothing to resume"), std::string::npos) << r.err;
  EXPECT_EQ(record_count(), before);
}

TEST_F(WorkflowsCliTest, BadInputGetsOneLineAndNothingIsWritten) {
  const auto before = record_count();
  auto r = wf({"show", "nope", "--journal", journal_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_line(r.err)) << r.err;
  EXPECT_NE(r.err.find("no workflow 'nope'"), std::string::npos);
  r = wf({"cancel", "nope", "--journal", journal_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_line(r.err)) << r.err;
  r = wf({"cancel", "done-1", "--journal", journal_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_line(r.err)) << r.err;
  EXPECT_NE(r.err.find("a done workflow cannot be cancelled"), std::string::npos) << r.err;
  EXPECT_EQ(record_count(), before);

  const std::string missing = dir_->file("missing.db");
  for (const char* sub : {"list", "resume"}) {
    r = wf({sub, "--journal", missing});
    EXPECT_EQ(r.exit_code, 1) << sub;
    EXPECT_TRUE(one_line(r.err)) << r.err;
    EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  }
  r = wf({"cancel", "x", "--journal", missing});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_FALSE(std::filesystem::exists(missing));

  r = wf({"show", "--journal", journal_});
  EXPECT_EQ(r.exit_code, 2);
  r = wf({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  r = wf({"list", "--no-such-option"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(one_line(r.err)) << r.err;
}

TEST_F(WorkflowsCliTest, EverySubcommandHasHelp) {
  for (const char* sub : {"list", "show", "resume", "cancel"}) {
    auto r = wf({sub, "--help"});
    EXPECT_EQ(r.exit_code, 0) << sub;
    EXPECT_NE(r.out.find("Usage: persoflow workflows"), std::string::npos) << sub;
    EXPECT_NE(r.out.find("--journal"), std::string::npos) << sub;
  }
  auto r = wf({"--help"});
  EXPECT_EQ(r.exit_code, 0);
}

// Last: it changes the journal.
TEST_F(WorkflowsCliTest, ZCancelRecordsTheReasonAndAReadOnlyJournalIsRefused) {
  auto copy = dir_->file("readonly.db");
  std::filesystem::copy_file(journal_, copy);
  ::chmod(copy.c_str(), 0444);
  auto r = wf({"cancel", "cut-1", "--journal", copy});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_line(r.err)) << r.err;
  r = wf({"show", "cut-1", "--journal", copy});  // reading a read-only journal is fine
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("cancelled:"), std::string::npos);

  const auto before = record_count();
  r = wf({"cancel", "stuck-1", "--reason", "card lost", "--journal", journal_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(record_count(), before + 1);
  r = wf({"show", "stuck-1", "--journal", journal_});
  EXPECT_NE(r.out.find("status cancelled"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("cancelled: card lost"), std::string::npos) << r.out;
  r = wf({"cancel", "stuck-1", "--journal", journal_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already cancelled"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace persoflow::actors
