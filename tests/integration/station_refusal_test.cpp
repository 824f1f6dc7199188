// Refusals and the CM retry policy of `persoflow station run`, on SoftHSM2 cards against the
// demo's CM host (served again from its folder):
// - a queue line naming a token procedure the CM host does not have, and an update naming a key
//   the card does not hold, are refused once (not retried), with the queue line in the message;
//   the other card of the queue is issued; running the queue again leaves them waiting (nothing
//   journaled); the corrected line is retried and issued; `workflows cancel` ends the other.
// - station.conf "cm_retry" {"attempts": 1}: with the CM host down the submission is tried once,
//   then the workflow is suspended; cancelled with the CM host back, its outstanding submission is
//   not sent again (no certificate in the CM database) and its key is removed from the card.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "persoflow/storage/journal.hpp"
#include "station_fixture.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using persoflow::testing::certificates_for;
using persoflow::testing::cm_address;
using persoflow::testing::CmServer;
using persoflow::testing::persoflow_binary;
using persoflow::testing::run;
using persoflow::testing::TempDir;

constexpr const char* kModule = "/usr/lib/softhsm/libsofthsm2.so";

// The demo with one card (its CM host stopped at the end) and fresh blank cards `labels`.
struct Station {
  TempDir tmp{"persoflow-refusal"};
  fs::path dir = tmp.path() / "demo";
  std::string conf, journal, softhsm;

  void make(const std::vector<std::string>& labels) {
    auto demo = run({persoflow_binary(), "demo", "--dir", dir.string(), "--cards", "1"});
    ASSERT_EQ(demo.exit_code, 0) << demo.out << demo.err;
    conf = (dir / "station" / "station.conf").string();
    journal = (dir / "station" / "journal.db").string();
    softhsm = "SOFTHSM2_CONF=" + (dir / "tokens" / "softhsm2.conf").string();
    for (const auto& label : labels) {
      ASSERT_EQ(run({"/usr/bin/env", softhsm, "softhsm2-util", "--init-token", "--free",
                     "--label", label, "--pin", "123456", "--so-pin", "12345678"})
                    .exit_code,
                0);
    }
  }

  // The card's objects, private ones included.
  std::string objects(const std::string& label) {
    return run({"/usr/bin/env", softhsm, "pkcs11-tool", "--module", kModule, "--token-label",
                label, "--list-objects", "--login", "--pin", "123456"})
        .out;
  }

  // Journal records of the workflow (-1 when the journal cannot be read).
  int records(const std::string& workflow_id) {
    auto j = persoflow::storage::Journal::open(journal, {.create_if_missing = false,
                                                         .read_only = true});
    if (!j) return -1;
    auto r = (*j)->records(workflow_id);
    return r ? static_cast<int>(r->size()) : -1;
  }

  // The reason of the workflow's suspension as `workflows show --json` reports it.
  std::string suspension(const std::string& workflow_id) {
    auto shown = run({persoflow_binary(), "workflows", "show", workflow_id, "--journal", journal,
                      "--json"});
    if (shown.exit_code != 0) return "show failed: " + shown.err;
    auto j = nlohmann::json::parse(shown.out);
    return j["suspension_reason"].is_string() ? j["suspension_reason"].get<std::string>() : "";
  }
};

std::string line(const std::string& id, const std::string& label, const std::string& cn,
                 const std::string& extra = "") {
  return "{\"workflow_id\": \"" + id + "\", \"token_label\": \"" + label +
         "\", \"subject\": {\"CN\": \"" + cn + "\"}" + extra + "}\n";
}

TEST(StationRefusal, ARefusedRequestWaitsForTheOperatorWhileTheOtherCardsGoOn) {
  Station st;
  ASSERT_NO_FATAL_FAILURE(st.make({"card-70", "card-71", "card-72"}));
  CmServer server(st.dir / "cm", cm_address(st.conf));
  ASSERT_TRUE(server.listening());

  const std::string queue = st.tmp.file("queue.jsonl");
  const std::string good = line("good-1", "card-70", "Good One");
  const std::string bad_procedure_line = line("tp-1", "card-71", "Procedure Fixed",
                                              ", \"token_procedure\": \"no-such-procedure\"");
  const std::string bad_key_line =
      line("key-1", "card-72", "Key Missing", ", \"workflow\": \"update\", \"actions\": {\"5\": "
                                              "\"redo\"}");
  std::ofstream(queue) << good << bad_procedure_line << bad_key_line;
  auto first = run({persoflow_binary(), "station", "run", "--config", st.conf, "--queue", queue});
  EXPECT_EQ(first.exit_code, 1) << first.out << first.err;
  EXPECT_EQ(certificates_for(st.dir, "Good One"), 1) << first.out;

  // Each refusal names its queue line and what is wrong, and was asked once: not retried.
  const std::string tp_reason = st.suspension("tp-1");
  EXPECT_EQ(tp_reason.rfind("refused: " + queue + ":2 (request tp-1): ", 0), 0u) << tp_reason;
  EXPECT_NE(tp_reason.find("no token procedure 'no-such-procedure'"), std::string::npos)
      << tp_reason;
  EXPECT_EQ(tp_reason.find("failed after"), std::string::npos) << tp_reason;
  const std::string key_reason = st.suspension("key-1");
  EXPECT_EQ(key_reason.rfind("refused: " + queue + ":3 (request key-1): ", 0), 0u) << key_reason;
  EXPECT_NE(key_reason.find("the card has no key '5'"), std::string::npos) << key_reason;
  EXPECT_NE(first.out.find("no token procedure 'no-such-procedure'"), std::string::npos)
      << first.out;
  EXPECT_NE(first.out.find("the card has no key '5'"), std::string::npos) << first.out;

  // The same queue again: the refused workflows wait for the operator, nothing is journaled.
  const int tp_records = st.records("tp-1");
  const int key_records = st.records("key-1");
  ASSERT_GT(tp_records, 0);
  auto again = run({persoflow_binary(), "station", "run", "--config", st.conf, "--queue", queue});
  EXPECT_EQ(again.exit_code, 1) << again.out << again.err;
  EXPECT_EQ(st.records("tp-1"), tp_records);
  EXPECT_EQ(st.records("key-1"), key_records);
  EXPECT_NE(again.out.find("refused: " + queue + ":2"), std::string::npos) << again.out;

  // The corrected line is retried in the same workflow and issued; the other stays refused.
  std::ofstream(queue) << good << line("tp-1", "card-71", "Procedure Fixed") << bad_key_line;
  auto corrected =
      run({persoflow_binary(), "station", "run", "--config", st.conf, "--queue", queue});
  EXPECT_EQ(corrected.exit_code, 1) << corrected.out << corrected.err;
  EXPECT_EQ(certificates_for(st.dir, "Procedure Fixed"), 1) << corrected.out;
  EXPECT_EQ(st.records("key-1"), key_records);
  auto list = run({persoflow_binary(), "workflows", "list", "--journal", st.journal, "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  for (const auto& w : nlohmann::json::parse(list.out)) {
    if (w["id"] == "tp-1") {
      EXPECT_EQ(w["state"], "Done") << list.out;
    }
  }

  // The operator cancels the other: nothing was ever written to its card.
  auto cancel = run({persoflow_binary(), "workflows", "cancel", "key-1", "--config", st.conf});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.out << cancel.err;
  EXPECT_NE(cancel.out.find("Cancelled"), std::string::npos) << cancel.out;
  EXPECT_EQ(st.objects("card-72"), "");
  EXPECT_EQ(certificates_for(st.dir, "Key Missing"), 0);
  auto verify = run({persoflow_binary(), "journal", "verify", "--journal", st.journal});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
}

TEST(StationRefusal, CmRetryFromTheConfigAndACancelThatDoesNotSendTheSubmissionAgain) {
  Station st;
  ASSERT_NO_FATAL_FAILURE(st.make({"card-80"}));
  {
    std::ifstream in(st.conf);
    nlohmann::json conf = nlohmann::json::parse(in);
    conf["cm_retry"] = {{"attempts", 1}, {"initial_delay_ms", 50}, {"max_delay_ms", 100}};
    std::ofstream(st.conf) << conf.dump(2) << "\n";
  }
  // The demo stopped its CM host: the key is generated on the card, the submission is tried
  // once (its one attempt being the CM client's sends) and the workflow is suspended.
  auto issue = run({persoflow_binary(), "issue", "card", "--config", st.conf, "--token",
                    "card-80", "--field", "CN=Dora Down", "--workflow-id", "dora-1"});
  EXPECT_EQ(issue.exit_code, 1) << issue.out << issue.err;
  const std::string reason = st.suspension("dora-1");
  EXPECT_NE(reason.find("SubmitToCm"), std::string::npos) << reason;
  EXPECT_NE(reason.find("failed after 1 attempt(s)"), std::string::npos) << reason;
  ASSERT_NE(st.objects("card-80").find("Private Key Object"), std::string::npos);

  // With the CM host back, a submission sent again would be answered with a certificate.
  CmServer server(st.dir / "cm", cm_address(st.conf));
  ASSERT_TRUE(server.listening());
  auto cancel = run({persoflow_binary(), "workflows", "cancel", "dora-1", "--config", st.conf});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.out << cancel.err;
  EXPECT_NE(cancel.out.find("Cancelled"), std::string::npos) << cancel.out;
  EXPECT_EQ(certificates_for(st.dir, "Dora Down"), 0);
  EXPECT_EQ(st.objects("card-80").find("Private Key Object"), std::string::npos)
      << st.objects("card-80");
  auto show = run({persoflow_binary(), "workflows", "show", "dora-1", "--journal", st.journal});
  EXPECT_EQ(show.exit_code, 0) << show.err;
  EXPECT_NE(show.out.find("RollbackConfirmed"), std::string::npos) << show.out;
}

}  // namespace
