// `persoflow machines list|show` as a user runs it: a real process, its output and exit code.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "test_support.hpp"

namespace persoflow {
namespace {

using testing::persoflow_binary;
using testing::run;

// The rows of `machines show NAME --format table` that `mermaid` (the same machine drawn) lacks,
// one per line; empty when every row is drawn.
std::string rows_missing_from_drawing(const std::string& table, const std::string& mermaid) {
  std::istringstream in(table);
  std::string line, missing;
  bool rows = false;
  while (std::getline(in, line)) {
    if (line.rfind("from ", 0) == 0) {
      rows = true;
      continue;
    }
    if (!rows || line.empty()) continue;
    std::istringstream cells(line);
    std::string from, event, to;
    cells >> from >> event >> to;
    if (mermaid.find("    " + from + " --> " + to + " : " + event) == std::string::npos) {
      missing += line + "\n";
    }
  }
  return rows ? missing : "no rows in the table:\n" + table;
}

TEST(MachinesCli, ListSaysWhatIsRegistered) {
  auto r = run({persoflow_binary(), "machines", "list"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(r.out.empty());
  EXPECT_TRUE(r.err.empty()) << r.err;
  auto json = run({persoflow_binary(), "machines", "list", "--json"});
  EXPECT_EQ(json.exit_code, 0);
  EXPECT_EQ(json.out.front(), '[');
}

TEST(MachinesCli, UnknownMachineIsAOneLineErrorAndExit1) {
  auto r = run({persoflow_binary(), "machines", "show", "no-such-machine", "--format", "dot"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty());
  EXPECT_EQ(r.err,
            "persoflow machines show: unknown machine 'no-such-machine' (see 'persoflow machines "
            "list')\n");
}

TEST(MachinesCli, BadUsageIsRefused) {
  EXPECT_EQ(run({persoflow_binary(), "machines", "show"}).exit_code, 2);
  EXPECT_EQ(run({persoflow_binary(), "machines", "frobnicate"}).exit_code, 2);
  auto bad = run({persoflow_binary(), "machines", "show", "x", "--colour"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("colour"), std::string::npos);
}

// What a user draws with `persoflow machines show issue-card --format mermaid` is the committed
// diagram (tests/golden/machines, checked against the table by the machine tests), and it draws
// every row the table command lists.
TEST(MachinesCli, ShowMermaidDrawsEveryRowOfTheCardMachines) {
  for (const char* name : {"issue-card", "update-card"}) {
    SCOPED_TRACE(name);
    auto drawn = run({persoflow_binary(), "machines", "show", name, "--format", "mermaid"});
    ASSERT_EQ(drawn.exit_code, 0) << drawn.err;
    EXPECT_TRUE(drawn.err.empty()) << drawn.err;
    EXPECT_EQ(drawn.out.rfind("stateDiagram-v2\n", 0), 0u) << drawn.out;
    std::ifstream golden(testing::source_dir() + "/tests/golden/machines/" + name + ".mmd");
    std::stringstream committed;
    committed << golden.rdbuf();
    EXPECT_EQ(drawn.out, committed.str());
    auto table = run({persoflow_binary(), "machines", "show", name, "--format", "table"});
    ASSERT_EQ(table.exit_code, 0) << table.err;
    EXPECT_EQ(rows_missing_from_drawing(table.out, drawn.out), "");
  }
}

TEST(MachinesCli, HelpOnEveryCommand) {
  for (auto sub : {"--help", "list", "show"}) {
    std::vector<std::string> argv = {persoflow_binary(), "machines", sub};
    if (std::string(sub) != "--help") argv.push_back("--help");
    auto r = run(argv);
    EXPECT_EQ(r.exit_code, 0) << sub;
    EXPECT_NE(r.out.find("Usage: persoflow machines"), std::string::npos) << sub;
  }
}

}  // namespace
}  // namespace persoflow
