// `persoflow journal verify|show` as a user runs them: real processes on real journal files. Bad
// input gets one line on stderr, a non-zero exit, and nothing written.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "journal_support.hpp"
#include "persoflow/storage/journal.hpp"
#include "test_support.hpp"

namespace persoflow::storage {
namespace {

using test::request;
using test::snapshot;
using testing::persoflow_binary;
using testing::run;
using testing::TempDir;

class JournalCli : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("journal.db");
    auto j = Journal::open(path_, {});
    ASSERT_TRUE(j.is_ok()) << j.status().message();
    ASSERT_TRUE((*j)->append(request("card-1", 0, 2)).is_ok());
    ASSERT_TRUE((*j)->append(request("card-2", 0, 0)).is_ok());
    AppendRequest last = request("card-1", 1, 1);
    last.status = WorkflowStatus::kDone;
    ASSERT_TRUE((*j)->append(last).is_ok());
  }

  bool one_line(const std::string& s) { return !s.empty() && s.find('\n') == s.size() - 1; }

  TempDir dir_;
  std::string path_;
};

TEST_F(JournalCli, ShowListsRecordsReadably) {
  auto r = run({persoflow_binary(), "journal", "show", "--journal", path_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("seq 1  "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("workflow card-1  step 0  machine ticket"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  event     Opened {n=0, payload=x}"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  state     Step1 [done] {title=card-1}"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  command 1 DoThing key card-1/0/1 {i=1}"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  answers   card-1/0/0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("seq 3  "), std::string::npos);
}

TEST_F(JournalCli, ShowOneWorkflowAsJson) {
  auto r = run({persoflow_binary(), "journal", "show", "--journal", path_, "--workflow", "card-1",
                "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto json = nlohmann::json::parse(r.out);
  ASSERT_EQ(json.size(), 2u);
  EXPECT_EQ(json[0]["seq"], 1);
  EXPECT_EQ(json[1]["seq"], 3);
  EXPECT_EQ(json[1]["state"]["name"], "Step1");
  EXPECT_EQ(json[1]["status"], "done");
  EXPECT_EQ(json[0]["commands"][1]["idempotency_key"], "card-1/0/1");
  EXPECT_EQ(json[0]["event"]["fields"]["payload"], "x");
  EXPECT_EQ(json[1]["prev_hash"].get<std::string>().size(), 64u);
}

TEST_F(JournalCli, VerifyJson) {
  auto r = run({persoflow_binary(), "journal", "verify", "--journal", path_, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json["intact"], true);
  EXPECT_EQ(json["records_checked"], 3);
}

TEST_F(JournalCli, UnknownWorkflowIsAOneLineError) {
  auto before = snapshot(path_);
  auto r = run({persoflow_binary(), "journal", "show", "--journal", path_, "--workflow", "nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty());
  EXPECT_EQ(r.err, "persoflow journal show: no workflow 'nope' in journal " + path_ + "\n");
  EXPECT_EQ(snapshot(path_), before);
}

TEST_F(JournalCli, MissingFileAndMissingDirectory) {
  for (std::string sub : {"verify", "show"}) {
    std::string missing = dir_.file("absent.db");
    auto r = run({persoflow_binary(), "journal", sub, "--journal", missing});
    EXPECT_EQ(r.exit_code, 1) << sub;
    EXPECT_EQ(r.err, "persoflow journal " + sub + ": no journal at " + missing + "\n");
    EXPECT_FALSE(std::filesystem::exists(missing));
    std::string in_missing_dir = dir_.file("nodir/journal.db");
    r = run({persoflow_binary(), "journal", sub, "--journal", in_missing_dir});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_TRUE(one_line(r.err)) << r.err;
    EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir_.file("nodir")));
  }
}

TEST_F(JournalCli, ReadOnlyJournalIsReadAndNotWritten) {
  ASSERT_EQ(::chmod(path_.c_str(), 0444), 0);
  auto before = snapshot(path_);
  auto v = run({persoflow_binary(), "journal", "verify", "--journal", path_});
  EXPECT_EQ(v.exit_code, 0) << v.err;
  EXPECT_EQ(v.out.rfind("journal intact: 3 records", 0), 0u);
  auto s = run({persoflow_binary(), "journal", "show", "--journal", path_});
  EXPECT_EQ(s.exit_code, 0) << s.err;
  EXPECT_EQ(snapshot(path_), before);
}

TEST_F(JournalCli, NotAJournalIsAOneLineError) {
  std::string notes = dir_.file("notes.txt");
  { std::ofstream(notes) << "hello\n"; }
  auto before = snapshot(notes);
  auto r = run({persoflow_binary(), "journal", "verify", "--journal", notes});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_line(r.err)) << r.err;
  EXPECT_NE(r.err.find("is not a persoflow journal"), std::string::npos) << r.err;
  EXPECT_EQ(snapshot(notes), before);
}

TEST_F(JournalCli, DefaultJournalComesFromTheEnvironmentOrStation) {
  auto help = run({persoflow_binary(), "journal", "verify", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("station/journal.db"), std::string::npos);
  auto env = run({"env", "PERSOFLOW_JOURNAL=" + path_, persoflow_binary(), "journal", "verify"});
  EXPECT_EQ(env.exit_code, 0) << env.err;
  EXPECT_EQ(env.out.rfind("journal intact: 3 records", 0), 0u);
}

TEST_F(JournalCli, BadUsage) {
  EXPECT_EQ(run({persoflow_binary(), "journal"}).exit_code, 2);
  EXPECT_EQ(run({persoflow_binary(), "journal", "rewrite"}).exit_code, 2);
  auto r = run({persoflow_binary(), "journal", "show", "--limit", "many", "--journal", path_});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(one_line(r.err)) << r.err;
  EXPECT_EQ(run({persoflow_binary(), "journal", "--help"}).exit_code, 0);
  EXPECT_EQ(run({persoflow_binary(), "journal", "show", "--help"}).exit_code, 0);
}

}  // namespace
}  // namespace persoflow::storage
