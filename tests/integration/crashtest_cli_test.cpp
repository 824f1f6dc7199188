// persoflow-crashtest's command line: --help and --list answer, every bad input is one clear
// line on stderr and exit 2, before anything is started. (The crash test itself is the ctest
// crashtest.quick, labels crash;slow.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using persoflow::testing::binary_dir;
using persoflow::testing::run;

std::string crashtest() { return binary_dir() + "/persoflow-crashtest"; }

TEST(CrashtestCli, HelpAndListAnswer) {
  auto help = run({crashtest(), "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--max-per-point"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("--timed-kills"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("interleaved"), std::string::npos) << help.out;
  auto list = run({crashtest(), "--list"});
  EXPECT_EQ(list.exit_code, 0);
  for (const char* scenario : {"issue-card", "update-tc", "softtoken", "reissue-csr",
                               "reissue-card", "interleaved"}) {
    EXPECT_NE(list.out.find(scenario), std::string::npos) << list.out;
  }
  EXPECT_NE(list.out.find("7  sqlite.ioerr_on_commit"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("13 process.killed"), std::string::npos) << list.out;
}

TEST(CrashtestCli, BadInputsAreRefusedWithExit2) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--cards", "0"}, "--cards must be 1..32"},
      {{"--faults", "99"}, "no fault point '99'"},
      {{"--scenario", "nope"}, "no scenario 'nope'"},
      {{"--only", "bad"}, "--only wants"},
      {{"--max-per-point", "0"}, "--max-per-point must be >= 1"},
      {{"--timed-kills", "-1"}, "--timed-kills must be >= 0"},
      {{"--scenario", "reissue-nope"}, "no scenario 'reissue-nope'"},
      {{"--frobnicate"}, "unrecognised option"},
  };
  for (const auto& [args, message] : cases) {
    std::vector<std::string> argv = {crashtest()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run(argv);
    EXPECT_EQ(r.exit_code, 2) << args[0];
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;
  }
}

}  // namespace
