// `persoflow machines list|show` as a user runs it: a real process, its output and exit code.
#include <gtest/gtest.h>

#include "test_support.hpp"

namespace persoflow {
namespace {

using testing::persoflow_binary;
using testing::run;

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
