// `persoflow update card` on SoftHSM2 cards against the real CM host, checked from outside:
// pkcs11-tool lists what each card holds, openssl verify accepts each certificate read back from
// its card, `persoflow cm certs list` counts the certificates the CM host issued. Cards with a
// transport certificate (TC) are made by `persoflow prepersonalise card` (a key on the card, its
// TC from the CM host's transport procedure).
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "station_fixture.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using persoflow::testing::ca_certificate_mismatch;
using persoflow::testing::card_certificate_problems;
using persoflow::testing::certificates_for;
using persoflow::testing::cm_address;
using persoflow::testing::CmServer;
using persoflow::testing::persoflow_binary;
using persoflow::testing::run;
using persoflow::testing::RunResult;
using persoflow::testing::serials_for;
using persoflow::testing::TempDir;
using persoflow::testing::write_old_ca_certificate;

constexpr const char* kModule = "/usr/lib/softhsm/libsofthsm2.so";
// How pkcs11-tool --list-objects shows the labels of the certificates the station writes.
constexpr const char* kCardholderCertificate = "label:      persoflow certificate";
constexpr const char* kCaCertificate = "label:      CA certificate";

// One demo folder (CM host, station.conf, SoftHSM2 store) for the whole suite, its CM host served
// with one more token procedure whose only trusted TC issuer is a foreign CA.
class UpdateCard : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir("persoflow-update");
    dir_ = tmp_->path() / "demo";
    auto demo = run({persoflow_binary(), "demo", "--dir", dir_.string(), "--cards", "1"});
    ASSERT_EQ(demo.exit_code, 0) << demo.out << demo.err;
    // A foreign TC issuer, trusted by token procedure smartcard-tc-foreign only.
    const fs::path cm = dir_ / "cm";
    ASSERT_EQ(
        run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-subj", "/CN=Foreign Transport CA", "-days", "30", "-keyout",
             (cm / "foreign-key.pem").string(), "-out", (cm / "foreign.pem").string()})
            .exit_code,
        0);
    std::ifstream in(cm / "cm.json");
    auto config = nlohmann::json::parse(in);
    for (auto tp : config.at("token_procedures")) {
      if (tp.value("name", "") != "smartcard-tc") continue;
      tp["name"] = "smartcard-tc-foreign";
      tp["tc_validation"]["trusted_issuers"] = {"foreign.pem"};
      config["token_procedures"].push_back(tp);
      break;
    }
    std::ofstream(cm / "cm.json") << config.dump(2);
    server_ = new CmServer(cm, cm_address(conf()));
    ASSERT_TRUE(server_->listening());
  }
  static void TearDownTestSuite() {
    delete server_;
    delete tmp_;
  }

  static std::string conf() { return (dir_ / "station" / "station.conf").string(); }
  static std::string softhsm() {
    return "SOFTHSM2_CONF=" + (dir_ / "tokens" / "softhsm2.conf").string();
  }

  // A fresh card with a key and its TC (CN=<label> Transport).
  static void tc_card(const std::string& label) {
    ASSERT_EQ(run({"/usr/bin/env", softhsm(), "softhsm2-util", "--init-token", "--free", "--label",
                   label, "--pin", "123456", "--so-pin", "12345678"})
                  .exit_code,
              0);
    auto made = run({persoflow_binary(), "prepersonalise", "card", "--config", conf(), "--token",
                     label, "--field", "CN=" + label + " Transport"});
    ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  }

  static RunResult update(const std::string& label, const std::string& cn,
                          std::vector<std::string> extra) {
    std::vector<std::string> argv = {persoflow_binary(), "update", "card",    "--config", conf(),
                                     "--token",          label,    "--field", "CN=" + cn, "--field",
                                     "O=Example"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run(argv);
  }

  static std::string objects(const std::string& label) {
    auto listed = run({"/usr/bin/env", softhsm(), "pkcs11-tool", "--module", kModule,
                       "--token-label", label, "--list-objects", "--login", "--pin", "123456"});
    EXPECT_EQ(listed.exit_code, 0) << listed.err;
    return listed.out;
  }

  // CKA_ID -> serial of each "persoflow certificate" on the card, as pkcs11-tool lists them.
  static std::map<std::string, std::string> cardholder_certificates(const std::string& label) {
    std::istringstream listed(objects(label));
    std::map<std::string, std::string> out;
    std::string line, serial;
    bool cardholder = false;
    auto value = [](const std::string& l) { return l.substr(l.find(':') + 1); };
    while (std::getline(listed, line)) {
      if (line.find("Object;") != std::string::npos) cardholder = false;
      if (line.find(kCardholderCertificate) != std::string::npos) cardholder = true;
      if (cardholder && line.find("serial:") != std::string::npos) serial = value(line);
      if (cardholder && line.find("ID:") != std::string::npos) out[value(line)] = serial;
    }
    return out;
  }

  static int count(const std::string& text, const std::string& what) {
    int n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  }

  // Reads the card's "persoflow certificate" and checks it with openssl verify against the CM
  // host's CA.
  static void verify_certificate(const std::string& label) {
    EXPECT_EQ(card_certificate_problems(softhsm(), label, dir_, *tmp_), "");
  }

  static TempDir* tmp_;
  static fs::path dir_;
  static CmServer* server_;
};

TempDir* UpdateCard::tmp_ = nullptr;
fs::path UpdateCard::dir_;
CmServer* UpdateCard::server_ = nullptr;

TEST_F(UpdateCard, RedoReplacesTheTransportCertificateThenAddAndIssue) {
  tc_card("card-70");
  ASSERT_NE(objects("card-70").find("Transport certificate"), std::string::npos);

  auto redo = update("card-70", "Uma Update", {"--action", "tc=redo", "--workflow-id", "uma-redo"});
  ASSERT_EQ(redo.exit_code, 0) << redo.out << redo.err;
  EXPECT_NE(redo.out.find("update-card"), std::string::npos) << redo.out;
  EXPECT_NE(redo.out.find("Done"), std::string::npos) << redo.out;
  std::string held = objects("card-70");
  EXPECT_EQ(held.find("Transport certificate"), std::string::npos) << "the TC is gone\n" << held;
  EXPECT_NE(held.find("CN=Uma Update"), std::string::npos) << held;
  EXPECT_EQ(count(held, kCardholderCertificate), 1) << held;
  // smartcard-tc replaces the CA certificates: the CM host's CA is on the card now.
  EXPECT_EQ(count(held, kCaCertificate), 1) << held;
  EXPECT_EQ(count(held, "Private Key Object"), 1) << held;
  verify_certificate("card-70");
  EXPECT_EQ(certificates_for(dir_, "Uma Update"), 1);

  // No TC any more: add puts a second certificate on the same key.
  auto add = update("card-70", "Uma Update", {"--action", "0=add", "--workflow-id", "uma-add"});
  ASSERT_EQ(add.exit_code, 0) << add.out << add.err;
  held = objects("card-70");
  EXPECT_EQ(count(held, kCardholderCertificate), 2) << held;
  EXPECT_EQ(count(held, "Private Key Object"), 1) << held;
  EXPECT_EQ(certificates_for(dir_, "Uma Update"), 2);

  // issue: the CM host issues a certificate that is not stored on the card.
  auto issue =
      update("card-70", "Uma Update", {"--action", "0=issue", "--workflow-id", "uma-issue"});
  ASSERT_EQ(issue.exit_code, 0) << issue.out << issue.err;
  EXPECT_EQ(count(objects("card-70"), kCardholderCertificate), 2);
  EXPECT_EQ(certificates_for(dir_, "Uma Update"), 3);
}

// Token procedure smartcard-tc replaces the CA certificates and needs the operator PIN, which the
// CM database does not hold: without the station's operator_pin_file the update waits in
// OperatorPinAwaited with nothing written and says what to do; resumed with one, the TC is
// replaced, and the CA certificate the card came with gives way to the CM host's.
TEST_F(UpdateCard, CaCertificatesReplacedAndOperatorPinAskedWhereTheProcedureSaysSo) {
  tc_card("card-73");
  ASSERT_EQ(write_old_ca_certificate(softhsm(), "card-73", *tmp_), "");
  const std::string before = objects("card-73");
  ASSERT_NE(before.find("CN=Old Card CA"), std::string::npos) << before;

  std::ifstream in(conf());
  auto station = nlohmann::json::parse(in);
  station.erase("operator_pin_file");
  const std::string no_operator_pin = (dir_ / "station" / "station-no-operator.conf").string();
  std::ofstream(no_operator_pin) << station.dump(2);
  auto waiting = run({persoflow_binary(), "update", "card", "--config", no_operator_pin, "--token",
                      "card-73", "--field", "CN=Cleo Ca", "--action", "tc=redo", "--workflow-id",
                      "cleo-1"});
  EXPECT_EQ(waiting.exit_code, 1) << waiting.out << waiting.err;
  EXPECT_NE(waiting.out.find("OperatorPinAwaited"), std::string::npos) << waiting.out;
  EXPECT_NE((waiting.out + waiting.err).find("set operator_pin_file"), std::string::npos)
      << waiting.out << waiting.err;
  EXPECT_EQ(objects("card-73"), before) << "nothing written before the operator PIN";

  auto resumed = update("card-73", "Cleo Ca", {"--action", "tc=redo", "--workflow-id", "cleo-1"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  EXPECT_NE(resumed.out.find("Done"), std::string::npos) << resumed.out;
  const std::string held = objects("card-73");
  EXPECT_EQ(held.find("Transport certificate"), std::string::npos) << held;
  EXPECT_EQ(held.find("CN=Old Card CA"), std::string::npos) << held;
  EXPECT_EQ(count(held, kCaCertificate), 1) << held;
  EXPECT_EQ(count(held, kCardholderCertificate), 1) << held;
  verify_certificate("card-73");
  EXPECT_EQ(certificates_for(dir_, "Cleo Ca"), 1);
  // The CA certificate on the card is the CM host's: openssl compares it with ca.pem.
  EXPECT_EQ(ca_certificate_mismatch(softhsm(), "card-73", dir_, *tmp_), "");
  auto journal = run(
      {"sh", "-c", "grep -c 12345678 " + (dir_ / "station" / "journal.db").string() + " || true"});
  EXPECT_EQ(journal.out, "0\n") << "the operator PIN is not in the journal";
}

// blank leaves an entry alone: a card with two keys, each certified by issue-card (PIN entered as
// the 123456 the station's card_pin_file holds), updated with 0=blank 1=redo: one key keeps its
// certificate, the other's is replaced on the same key.
TEST_F(UpdateCard, BlankLeavesItsKeysCertificateAloneWhileRedoReplacesTheOther) {
  std::ifstream in(conf());
  auto station = nlohmann::json::parse(in);
  station["key_entries"] = 2;
  const std::string two_entries = (dir_ / "station" / "station-two-entries.conf").string();
  std::ofstream(two_entries) << station.dump(2);
  ASSERT_EQ(run({"/usr/bin/env", softhsm(), "softhsm2-util", "--init-token", "--free", "--label",
                 "card-74", "--pin", "123456", "--so-pin", "12345678"})
                .exit_code,
            0);
  auto issued = run({persoflow_binary(), "issue", "card", "--config", two_entries, "--token",
                     "card-74", "--field", "CN=Bea Blank", "--action", "0=add", "--action",
                     "1=add", "--pin", "entered", "--pin-fd", "0"},
                    "123456\n123456\n");
  ASSERT_EQ(issued.exit_code, 0) << issued.out << issued.err;
  const std::map<std::string, std::string> before = cardholder_certificates("card-74");
  ASSERT_EQ(before.size(), 2u) << objects("card-74");

  auto update = run({persoflow_binary(), "update", "card", "--config", two_entries, "--token",
                     "card-74", "--field", "CN=Bea Blank", "--action", "0=blank", "--action",
                     "1=redo"});
  ASSERT_EQ(update.exit_code, 0) << update.out << update.err;
  EXPECT_NE(update.out.find("Done"), std::string::npos) << update.out;
  const std::map<std::string, std::string> after = cardholder_certificates("card-74");
  ASSERT_EQ(after.size(), 2u) << objects("card-74");
  int kept = 0, replaced = 0;
  for (const auto& [id, serial] : before) {
    ASSERT_EQ(after.count(id), 1u) << "key " << id << " lost its certificate";
    if (after.at(id) == serial) ++kept;
    else ++replaced;
  }
  EXPECT_EQ(kept, 1);
  EXPECT_EQ(replaced, 1);
  EXPECT_EQ(certificates_for(dir_, "Bea Blank"), 3);
}

TEST_F(UpdateCard, AddOnATcCardIsRefusedAndNothingIsWritten) {
  tc_card("card-71");
  const std::string before = objects("card-71");
  auto add = update("card-71", "Abe Add", {"--action", "tc=add", "--workflow-id", "abe-1"});
  EXPECT_EQ(add.exit_code, 1) << add.out << add.err;
  EXPECT_NE(add.out.find("add is refused on a card holding a transport certificate"),
            std::string::npos)
      << add.out << add.err;
  EXPECT_NE(add.out.find("waiting for an operator"), std::string::npos) << add.out;
  EXPECT_EQ(objects("card-71"), before);
  EXPECT_EQ(certificates_for(dir_, "Abe Add"), 0);
  // The operator's decision: cancel it (nothing was written, nothing to roll back).
  auto cancel = run({persoflow_binary(), "workflows", "cancel", "abe-1", "--config", conf()});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.out << cancel.err;
  EXPECT_NE(cancel.out.find("Cancelled"), std::string::npos) << cancel.out;
  EXPECT_EQ(objects("card-71"), before);
}

// A card whose PIN is not the station's card_pin_file: the login is refused once, not retried
// (each try would use up one of the card's), and the workflow waits for the operator with
// nothing written; the operator cancels it.
TEST_F(UpdateCard, AWrongCardPinIsTriedOnceAndWaitsForTheOperator) {
  ASSERT_EQ(run({"/usr/bin/env", softhsm(), "softhsm2-util", "--init-token", "--free", "--label",
                 "card-75", "--pin", "654321", "--so-pin", "12345678"})
                .exit_code,
            0);
  auto listed = [] {
    return run({"/usr/bin/env", softhsm(), "pkcs11-tool", "--module", kModule, "--token-label",
                "card-75", "--list-objects", "--login", "--pin", "654321"})
        .out;
  };
  const std::string before = listed();
  auto refused = update("card-75", "Pia Pin", {"--action", "0=redo", "--workflow-id", "pia-1"});
  EXPECT_EQ(refused.exit_code, 1) << refused.out << refused.err;
  EXPECT_NE(refused.out.find("refused: wrong user PIN for token 'card-75' (CKR_PIN_INCORRECT)"),
            std::string::npos)
      << refused.out;
  EXPECT_EQ(refused.out.find("attempt(s)"), std::string::npos) << "retried:\n" << refused.out;
  EXPECT_EQ(listed(), before);
  auto cancel = run({persoflow_binary(), "workflows", "cancel", "pia-1", "--config", conf()});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.out << cancel.err;
  EXPECT_NE(cancel.out.find("Cancelled"), std::string::npos) << cancel.out;
}

TEST_F(UpdateCard, AnUntrustedTcIsRefusedBeforeAnythingIsWritten) {
  tc_card("card-72");
  const std::string before = objects("card-72");
  auto redo = update("card-72", "Una Trusted",
                     {"--action", "tc=redo", "--token-procedure", "smartcard-tc-foreign"});
  EXPECT_EQ(redo.exit_code, 1) << redo.out << redo.err;
  EXPECT_NE(redo.out.find("is not trusted by procedure"), std::string::npos) << redo.out;
  EXPECT_NE(redo.out.find("nothing was written"), std::string::npos) << redo.out;
  EXPECT_NE(redo.out.find("Failed"), std::string::npos) << redo.out;
  EXPECT_EQ(objects("card-72"), before);
  EXPECT_EQ(certificates_for(dir_, "Una Trusted"), 0);
}

// The CM host killed (SIGKILL) during the submission — before its transaction commits
// (cm.after_issue) and after the commit, before the answer leaves (cm.after_issue_before_answer)
// — and restarted: the station's retries resend the saved request and the card gets the
// certificate; the CM database holds exactly one for it, the one on the card. For update-card
// (cr, a TC card redone) and issue-card (ir, a blank card).
TEST_F(UpdateCard, CmHostKilledDuringTheSubmissionStillOneCertificatePerCard) {
  const std::string address = cm_address(conf());
  int n = 0;
  for (const char* point : {"cm.after_issue", "cm.after_issue_before_answer"}) {
    for (const bool issue : {false, true}) {
      SCOPED_TRACE(std::string(point) + (issue ? " issue-card" : " update-card"));
      const std::string label = "card-8" + std::to_string(n);
      const std::string cn = "Kim Killed " + std::to_string(n++);
      if (issue) {
        ASSERT_EQ(run({"/usr/bin/env", softhsm(), "softhsm2-util", "--init-token", "--free",
                       "--label", label, "--pin", "123456", "--so-pin", "12345678"})
                      .exit_code,
                  0);
      } else {
        tc_card(label);
      }
      delete server_;
      server_ =
          new CmServer(dir_ / "cm", address, {std::string("PERSOFLOW_CRASH_AT=") + point + ":1"});
      ASSERT_TRUE(server_->listening());
      RunResult result;
      std::thread station([&] {
        result = issue ? run({persoflow_binary(), "issue", "card", "--config", conf(), "--token",
                              label, "--field", "CN=" + cn})
                       : update(label, cn, {"--action", "tc=redo"});
      });
      EXPECT_EQ(server_->wait_exit(), 128 + SIGKILL);
      delete server_;
      server_ = new CmServer(dir_ / "cm", address);
      station.join();
      ASSERT_TRUE(server_->listening());
      EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
      EXPECT_NE(result.out.find("Done"), std::string::npos) << result.out;
      // The one certificate the CM database holds for the card is the one on the card.
      const std::vector<std::string> issued = serials_for(dir_, cn);
      EXPECT_EQ(issued.size(), 1u);
      std::string on_card;
      EXPECT_EQ(card_certificate_problems(softhsm(), label, dir_, *tmp_, &on_card), "");
      EXPECT_EQ(issued, std::vector<std::string>{on_card});
      if (!issue) {
        const std::string held = objects(label);
        EXPECT_NE(held.find("CN=" + cn), std::string::npos) << held;
        EXPECT_EQ(held.find("Transport certificate"), std::string::npos) << held;
      }
    }
  }
}

TEST_F(UpdateCard, BadCommandLinesAreRefusedWithOneLine) {
  auto no_action = run({persoflow_binary(), "update", "card", "--config", conf(), "--token",
                        "card-01", "--field", "CN=X"});
  EXPECT_EQ(no_action.exit_code, 2);
  EXPECT_NE(no_action.err.find("--action is required"), std::string::npos) << no_action.err;
  auto bad_action = update("card-01", "X", {"--action", "0=replace"});
  EXPECT_EQ(bad_action.exit_code, 2);
  EXPECT_NE(bad_action.err.find("0=replace is not KEY=blank|issue|redo|add"), std::string::npos)
      << bad_action.err;
  auto both = update("card-01", "X", {"--action", "0=redo", "--reader", "r"});
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_NE(both.err.find("one of them"), std::string::npos) << both.err;
  auto help = run({persoflow_binary(), "update", "card", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--action"), std::string::npos);
}

}  // namespace
