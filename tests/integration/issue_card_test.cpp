// `persoflow issue card` against the demo's CM host, and an interrupted one finished by
// `persoflow workflows resume` with PERSOFLOW_STATION_CONFIG: Done, the certificate on the card,
// exactly one certificate for it in the CM database; a wrong officer PIN and an unsupported
// algorithm end in Failed with nothing left on the card.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "station_fixture.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using persoflow::testing::persoflow_binary;
using persoflow::testing::run;
using persoflow::testing::TempDir;
using persoflow::testing::certificates_for;
using persoflow::testing::cm_address;
using persoflow::testing::CmServer;

// The demo (one card) in a temporary folder, its CM host served again from its folder, and blank
// cards made in its SoftHSM2 store.
struct ServedDemo {
  explicit ServedDemo(const std::string& prefix) : tmp(prefix) {}
  TempDir tmp;
  fs::path dir = tmp.path() / "demo";
  std::string conf = (dir / "station" / "station.conf").string();
  std::string softhsm = "SOFTHSM2_CONF=" + (dir / "tokens" / "softhsm2.conf").string();
  std::unique_ptr<CmServer> server;

  void start() {
    auto demo = run({persoflow_binary(), "demo", "--dir", dir.string(), "--cards", "1"});
    ASSERT_EQ(demo.exit_code, 0) << demo.out << demo.err;
    server = std::make_unique<CmServer>(dir / "cm", cm_address(conf));
    ASSERT_TRUE(server->listening());
  }
  void blank_card(const std::string& label) const {
    ASSERT_EQ(run({"/usr/bin/env", softhsm, "softhsm2-util", "--init-token", "--free", "--label",
                   label, "--pin", "123456", "--so-pin", "12345678"})
                  .exit_code,
              0);
  }
};

TEST(IssueCard, OneCardThenAnInterruptedOneResumedByWorkflowsResume) {
  ServedDemo served("persoflow-issue");
  ASSERT_NO_FATAL_FAILURE(served.start());
  const fs::path& dir = served.dir;
  const std::string &conf = served.conf, &softhsm = served.softhsm;
  for (const char* label : {"card-50", "card-51"}) {
    ASSERT_NO_FATAL_FAILURE(served.blank_card(label));
  }
  auto one = run({persoflow_binary(), "issue", "card", "--config", conf, "--token", "card-50",
                  "--field", "CN=Alice Issue", "--field", "O=Example"});
  ASSERT_EQ(one.exit_code, 0) << one.out << one.err;
  EXPECT_NE(one.out.find("Done"), std::string::npos) << one.out;
  EXPECT_NE(one.out.find("shown once"), std::string::npos) << one.out;
  EXPECT_EQ(certificates_for(dir, "Alice Issue"), 1);

  // Killed after the CMP request went out, before its answer was journaled.
  auto killed = run({"/usr/bin/env", "PERSOFLOW_CRASH_AT=actors.after_command:7",
                     persoflow_binary(), "issue", "card", "--config", conf, "--token", "card-51",
                     "--field", "CN=Bob Resumed", "--workflow-id", "bob-1"});
  EXPECT_EQ(killed.exit_code, 128 + SIGKILL) << killed.out << killed.err;
  auto resumed = run({"/usr/bin/env", "PERSOFLOW_STATION_CONFIG=" + conf, persoflow_binary(),
                      "workflows", "resume", "--journal",
                      (dir / "station" / "journal.db").string()});
  EXPECT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  EXPECT_NE(resumed.out.find("bob-1: done"), std::string::npos) << resumed.out;
  EXPECT_EQ(certificates_for(dir, "Bob Resumed"), 1);
  auto objects = run({"/usr/bin/env", softhsm, "pkcs11-tool", "--module",
                      "/usr/lib/softhsm/libsofthsm2.so", "--token-label", "card-51",
                      "--list-objects"});
  EXPECT_NE(objects.out.find("CN=Bob Resumed"), std::string::npos) << objects.out;

  auto bad = run({persoflow_binary(), "issue", "card", "--config", conf, "--token", "card-50"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--field"), std::string::npos) << bad.err;
}

// Two definitive failures on real parts: the officer's Signature PIN wrong (a password file that
// does not open the officer's PKCS#12) and a key algorithm the card does not support (DSA on
// SoftHSM2). Each ends in Failed with a reason the operator can act on, and the card is left as
// it came: no object on it (the key generated before the signature was rolled back), no
// certificate in the CM database.
TEST(IssueCard, OfficerPinWrongAndAlgorithmUnsupportedFailWithNothingLeftOnTheCard) {
  ServedDemo served("persoflow-issue-failed");
  ASSERT_NO_FATAL_FAILURE(served.start());
  const fs::path& dir = served.dir;
  const std::string& conf = served.conf;
  const std::string wrong_password = served.tmp.file("wrong.password");
  std::ofstream(wrong_password) << "not the officer's password\n";

  struct Case {
    const char* label;
    const char* cn;
    const char* setting;
    std::string value;
    const char* reason;
  };
  for (const Case& c :
       {Case{"card-54", "Otto Officer", "officer_password_file", wrong_password,
             "the officer's credential refused the password in its file"},
        Case{"card-55", "Dora Dsa", "key_algorithm", "DSA:1024",
             "the card does not support the key algorithm DSA:1024"}}) {
    SCOPED_TRACE(c.label);
    ASSERT_NO_FATAL_FAILURE(served.blank_card(c.label));
    std::ifstream in(conf);
    auto changed = nlohmann::json::parse(in);
    changed[c.setting] = c.value;
    const std::string changed_conf = served.tmp.file(std::string(c.label) + ".conf");
    std::ofstream(changed_conf) << changed.dump(2);
    auto failed = run({persoflow_binary(), "issue", "card", "--config", changed_conf, "--token",
                       c.label, "--field", std::string("CN=") + c.cn});
    EXPECT_EQ(failed.exit_code, 1) << failed.out << failed.err;
    EXPECT_NE(failed.out.find("Failed"), std::string::npos) << failed.out;
    EXPECT_NE(failed.out.find(c.reason), std::string::npos) << failed.out;
    auto objects = run({"/usr/bin/env", served.softhsm, "pkcs11-tool", "--module",
                        "/usr/lib/softhsm/libsofthsm2.so", "--token-label", c.label, "--login",
                        "--pin", "123456", "--list-objects"});
    EXPECT_EQ(objects.exit_code, 0) << objects.err;
    EXPECT_EQ(objects.out, "") << "left on the card";
    EXPECT_EQ(certificates_for(dir, c.cn), 0);
  }
}

// A card with no room left (fault point 14, card.full: SoftHSM2 never reports a full card) at
// the key generation and at the certificate store after it: Failed saying the card is full,
// and what the workflow wrote (the key) removed again.
TEST(IssueCard, AFullCardFailsSayingSoWithWhatWasWrittenRemoved) {
  ServedDemo served("persoflow-issue-full");
  ASSERT_NO_FATAL_FAILURE(served.start());
  for (const char* fault : {"card.full:1", "card.full:2"}) {
    SCOPED_TRACE(fault);
    const std::string label = std::string("card-6") + fault[10];
    ASSERT_NO_FATAL_FAILURE(served.blank_card(label));
    auto full = run({"/usr/bin/env", std::string("PERSOFLOW_FAULT=") + fault, persoflow_binary(),
                     "issue", "card", "--config", served.conf, "--token", label, "--field",
                     "CN=Fiona Full " + std::string(1, fault[10])});
    EXPECT_EQ(full.exit_code, 1) << full.out << full.err;
    EXPECT_NE(full.out.find("Failed"), std::string::npos) << full.out;
    EXPECT_NE(full.out.find("the card is full"), std::string::npos) << full.out;
    EXPECT_NE(full.out.find("CKR_DEVICE_MEMORY"), std::string::npos) << full.out;
    auto objects = run({"/usr/bin/env", served.softhsm, "pkcs11-tool", "--module",
                        "/usr/lib/softhsm/libsofthsm2.so", "--token-label", label, "--login",
                        "--pin", "123456", "--list-objects"});
    EXPECT_EQ(objects.exit_code, 0) << objects.err;
    EXPECT_EQ(objects.out, "") << "left on the card";
  }
}

}  // namespace

namespace {

TEST(StationRun, ABadQueueLineIsRefusedWithItsLineNumber) {
  TempDir tmp("persoflow-station-queue");
  std::ofstream(tmp.file("queue.jsonl"))
      << "{\"workflow_id\": \"a-1\", \"token_label\": \"card-01\", \"subject\": {\"CN\": \"A\"}}\n"
      << "{\"workflow_id\": \"a 2\", \"token_label\": \"card-02\", \"subject\": {\"CN\": \"B\"}}\n";
  auto r = run({persoflow_binary(), "station", "run", "--config", tmp.file("station.conf"),
                "--queue", tmp.file("queue.jsonl")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("queue.jsonl:2: request: workflow_id"), std::string::npos) << r.err;

  std::ofstream(tmp.file("empty-subject.jsonl"))
      << "{\"workflow_id\": \"a-1\", \"token_label\": \"card-01\"}\n";
  r = run({persoflow_binary(), "station", "run", "--config", tmp.file("station.conf"), "--queue",
           tmp.file("empty-subject.jsonl")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("subject is empty"), std::string::npos) << r.err;

  auto missing = run({persoflow_binary(), "station", "run", "--config", tmp.file("none.conf")});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("cannot read the station configuration"), std::string::npos)
      << missing.err;
}

}  // namespace
