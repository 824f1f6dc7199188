// `persoflow workflows cancel ID --config station.conf` on a workflow that already wrote to its
// card: the cancellation goes through the machine, the key it generated is removed from the card
// (checked with pkcs11-tool) and the rollback is in the journal (`workflows show`, `journal
// verify`).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using persoflow::testing::persoflow_binary;
using persoflow::testing::run;
using persoflow::testing::TempDir;

TEST(CancelWithRollback, TheKeyAWorkflowGeneratedIsRemovedFromItsCard) {
  TempDir tmp("persoflow-cancel");
  const fs::path dir = tmp.path() / "demo";
  auto demo = run({persoflow_binary(), "demo", "--dir", dir.string(), "--cards", "1"});
  ASSERT_EQ(demo.exit_code, 0) << demo.out << demo.err;
  const std::string conf = (dir / "station" / "station.conf").string();
  const std::string journal = (dir / "station" / "journal.db").string();
  const std::string softhsm = "SOFTHSM2_CONF=" + (dir / "tokens" / "softhsm2.conf").string();
  ASSERT_EQ(run({"/usr/bin/env", softhsm, "softhsm2-util", "--init-token", "--free", "--label",
                 "card-90", "--pin", "123456", "--so-pin", "12345678"})
                .exit_code,
            0);
  auto objects = [&] {
    return run({"/usr/bin/env", softhsm, "pkcs11-tool", "--module",
                "/usr/lib/softhsm/libsofthsm2.so", "--token-label", "card-90", "--list-objects",
                "--login", "--pin", "123456"})
        .out;
  };

  // The demo stopped its CM host: the key is generated on the card, the submission cannot get
  // through, and after its retries the workflow is suspended with the key on the card.
  auto issue = run({persoflow_binary(), "issue", "card", "--config", conf, "--token", "card-90",
                    "--field", "CN=Carl Cancel", "--workflow-id", "carl-1"});
  EXPECT_EQ(issue.exit_code, 1) << issue.out << issue.err;
  ASSERT_NE(objects().find("Private Key Object"), std::string::npos) << objects();

  auto cancel = run({persoflow_binary(), "workflows", "cancel", "carl-1", "--config", conf,
                     "--reason", "card lost"});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.out << cancel.err;
  EXPECT_NE(cancel.out.find("Cancelled"), std::string::npos) << cancel.out;
  EXPECT_NE(cancel.out.find("removed from the card: key:"), std::string::npos) << cancel.out;
  const std::string after = objects();
  EXPECT_EQ(after.find("Private Key Object"), std::string::npos) << after;
  EXPECT_EQ(after.find("Public Key Object"), std::string::npos) << after;

  auto show = run({persoflow_binary(), "workflows", "show", "carl-1", "--journal", journal});
  EXPECT_EQ(show.exit_code, 0) << show.err;
  EXPECT_NE(show.out.find("RollbackCard"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("RollbackConfirmed"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("card lost"), std::string::npos) << show.out;
  auto verify = run({persoflow_binary(), "journal", "verify", "--journal", journal});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;

  auto again = run({persoflow_binary(), "workflows", "cancel", "carl-1", "--config", conf});
  EXPECT_EQ(again.exit_code, 1);
}

}  // namespace
