// `persoflow issue card` with keys from the CM host, on SoftHSM2 cards against the real CM host:
// 'generate & archive' (the CM host generates the key, archives it, and the station writes key
// and certificate to the card) and 'recover' (the archived key recovered onto another card),
// checked from outside with pkcs11-tool and openssl; and each branch of the request-flag rule.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "station_fixture.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using persoflow::testing::ca_certificate_mismatch;
using persoflow::testing::certificates_for;
using persoflow::testing::cm_address;
using persoflow::testing::CmServer;
using persoflow::testing::persoflow_binary;
using persoflow::testing::run;
using persoflow::testing::RunResult;
using persoflow::testing::TempDir;
using persoflow::testing::write_old_ca_certificate;

constexpr const char* kModule = "/usr/lib/softhsm/libsofthsm2.so";

// One demo folder for the suite; its CM host has one more token procedure holding two recovery
// procedures, and a second station.conf gives blank cards two key entries.
class IssueCardKeys : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir("persoflow-card-keys");
    dir_ = tmp_->path() / "demo";
    auto demo = run({persoflow_binary(), "demo", "--dir", dir_.string(), "--cards", "1"});
    ASSERT_EQ(demo.exit_code, 0) << demo.out << demo.err;
    const fs::path cm = dir_ / "cm";
    std::ifstream in(cm / "cm.json");
    auto config = nlohmann::json::parse(in);
    nlohmann::json added = nlohmann::json::array();
    for (auto tp : config.at("token_procedures")) {
      if (tp.value("name", "") == "smartcard-recover") {
        tp["name"] = "smartcard-recover-two";
        tp["key_procedures"] = {"recover-last-new", "recover-all-new"};
        added.push_back(tp);
      }
      if (tp.value("name", "") == "smartcard-standard") {  // CA certificates on the card
        tp["name"] = "smartcard-operator";
        tp["operator_pin_required"] = true;
        added.push_back(tp);
      }
    }
    for (const auto& tp : added) config["token_procedures"].push_back(tp);
    std::ofstream(cm / "cm.json") << config.dump(2);
    std::ifstream conf_in(conf());
    auto station = nlohmann::json::parse(conf_in);
    station["key_entries"] = 2;
    std::ofstream(conf2()) << station.dump(2);
    station["key_entries"] = 1;
    station.erase("operator_pin_file");
    std::ofstream(conf_no_operator_pin()) << station.dump(2);
    station["operator_pin_file"] = "operator.pin";
    std::ofstream(dir_ / "station" / "operator.pin") << "12345678\n";
    std::ofstream(conf_operator()) << station.dump(2);
    // Cards with two PINs: the PIN and a PUK (SoftHSM2's SO PIN, 12345678 as made); the PINs of
    // entered queue lines from a file outside the demo folder, or from stdin.
    station.erase("operator_pin_file");
    station["card_pin_count"] = 2;
    station["card_puk_file"] = "card.puk";
    std::ofstream(dir_ / "station" / "card.puk") << "12345678\n";
    station["entered_pins"] = entered_pins_file();
    std::ofstream(conf_two_pins()) << station.dump(2);
    station["entered_pins"] = "fd:0";
    std::ofstream(conf_two_pins_stdin()) << station.dump(2);
    server_ = new CmServer(cm, cm_address(conf()));
    ASSERT_TRUE(server_->listening());
  }
  static void TearDownTestSuite() {
    delete server_;
    delete tmp_;
  }

  static std::string conf() { return (dir_ / "station" / "station.conf").string(); }
  static std::string conf2() { return (dir_ / "station" / "station-2.conf").string(); }
  static std::string conf_operator() {
    return (dir_ / "station" / "station-operator.conf").string();
  }
  static std::string conf_no_operator_pin() {
    return (dir_ / "station" / "station-no-operator.conf").string();
  }
  static std::string conf_two_pins() {
    return (dir_ / "station" / "station-two-pins.conf").string();
  }
  static std::string conf_two_pins_stdin() {
    return (dir_ / "station" / "station-two-pins-stdin.conf").string();
  }
  static std::string entered_pins_file() { return tmp_->file("entered-pins.txt"); }
  static std::string softhsm() {
    return "SOFTHSM2_CONF=" + (dir_ / "tokens" / "softhsm2.conf").string();
  }

  static void blank_card(const std::string& label) {
    ASSERT_EQ(run({"/usr/bin/env", softhsm(), "softhsm2-util", "--init-token", "--free", "--label",
                   label, "--pin", "123456", "--so-pin", "12345678"})
                  .exit_code,
              0);
  }

  static RunResult issue(const std::string& config, const std::string& label, const std::string& cn,
                         std::vector<std::string> extra) {
    std::vector<std::string> argv = {persoflow_binary(), "issue", "card",    "--config", config,
                                     "--token",          label,   "--field", "CN=" + cn, "--field",
                                     "O=Example"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run(argv);
  }

  static std::string list_objects(const std::string& label) {
    auto listed = run({"/usr/bin/env", softhsm(), "pkcs11-tool", "--module", kModule,
                       "--token-label", label, "--list-objects"});
    EXPECT_EQ(listed.exit_code, 0) << listed.err;
    return listed.out;
  }

  static int count(const std::string& text, const std::string& what) {
    int n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  }

  // The PEM public key of the card's object `label` of `type` (pubkey or cert), read with
  // pkcs11-tool and converted by openssl.
  static std::string public_key(const std::string& card, const std::string& type,
                                const std::string& label) {
    const std::string der = tmp_->file(card + "-" + type + ".der");
    auto read = run({"/usr/bin/env", softhsm(), "pkcs11-tool", "--module", kModule, "--token-label",
                     card, "--read-object", "--type", type, "--label", label, "-o", der});
    EXPECT_EQ(read.exit_code, 0) << read.err;
    if (type == "cert") {
      auto pem = run({"openssl", "x509", "-inform", "DER", "-in", der, "-noout", "-pubkey"});
      EXPECT_EQ(pem.exit_code, 0) << pem.err;
      auto ok = run({"openssl", "verify", "-CAfile", (dir_ / "cm" / "ca" / "ca.pem").string(),
                     pem_certificate(der)});
      EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
      return pem.out;
    }
    auto pem = run({"openssl", "pkey", "-pubin", "-inform", "DER", "-in", der});
    EXPECT_EQ(pem.exit_code, 0) << pem.err;
    return pem.out;
  }

  static std::string pem_certificate(const std::string& der) {
    const std::string pem = der + ".pem";
    EXPECT_EQ(run({"openssl", "x509", "-inform", "DER", "-in", der, "-out", pem}).exit_code, 0);
    return pem;
  }

  // A card whose one key the CM host generated and archived (token procedure smartcard-archive).
  static std::string archived_key_card(const std::string& label, const std::string& cn) {
    blank_card(label);
    auto archived =
        issue(conf(), label, cn,
              {"--token-procedure", "smartcard-archive", "--workflow-id", label + "-archive"});
    EXPECT_EQ(archived.exit_code, 0) << archived.out << archived.err;
    const std::string held = list_objects(label);
    EXPECT_EQ(count(held, "Public Key Object; RSA 2048"), 1) << held;
    EXPECT_EQ(count(held, "Certificate Object"), 1) << held;
    const std::string key = public_key(label, "pubkey", "persoflow key");
    EXPECT_EQ(public_key(label, "cert", "persoflow certificate"), key);
    return key;
  }


  // A pre-printed letter made by the CM host's command: a PIN letter, or a PIN/PUK letter.
  static std::string preprint_letter(bool with_puk) {
    std::vector<std::string> argv = {persoflow_binary(), "cm", "pin-letters", "preprint",
                                     "--count", "1", "--dir", (dir_ / "cm").string()};
    if (with_puk) argv.insert(argv.end(), {"--puk-length", "8"});
    auto made = run(argv);
    EXPECT_EQ(made.exit_code, 0) << made.err;
    return made.out.substr(0, made.out.find('\n'));
  }

  // The PIN and PUK printed on a letter (the PUK "" when it has none); prints it (once).
  static std::pair<std::string, std::string> printed_secrets(const std::string& id) {
    auto printed = run({persoflow_binary(), "cm", "pin-letters", "print", id, "--format", "text",
                        "--dir", (dir_ / "cm").string()});
    EXPECT_EQ(printed.exit_code, 0) << printed.err;
    auto line = [&](const std::string& label) {
      const auto at = printed.out.find(label);
      if (at == std::string::npos) return std::string();
      return printed.out.substr(at + label.size(),
                                printed.out.find('\n', at) - at - label.size());
    };
    return {line("Your PIN: "), line("Your PUK: ")};
  }

  // "<state> <secrets>" of a letter as `cm pin-letters list --json` shows it, e.g. "bound PIN/PUK".
  static std::string letter_listing(const std::string& id) {
    auto listed = run({persoflow_binary(), "cm", "pin-letters", "list", "--json", "--dir",
                       (dir_ / "cm").string()});
    EXPECT_EQ(listed.exit_code, 0) << listed.err;
    for (const auto& l : nlohmann::json::parse(listed.out)) {
      if (l.value("letter_id", "") == id) {
        return l.value("state", "") + " " + l.value("secrets", "");
      }
    }
    return "no letter " + id;
  }

  // Records of the CM host's audit log (`cm audit list`) holding both texts.
  static int audit_lines_with(const std::string& one, const std::string& other) {
    auto audit = run({persoflow_binary(), "cm", "audit", "list", "--dir", (dir_ / "cm").string()});
    EXPECT_EQ(audit.exit_code, 0) << audit.err;
    int n = 0;
    std::istringstream lines(audit.out);
    for (std::string l; std::getline(lines, l);) {
      n += l.find(one) != std::string::npos && l.find(other) != std::string::npos;
    }
    return n;
  }

  // The checks of persoflow::testing::two_pin_problems on this suite's demo folder.
  static std::string two_pin_problems(const std::string& card, const std::string& pin,
                                      const std::string& puk, const RunResult& printed,
                                      bool shown) {
    return persoflow::testing::two_pin_problems(dir_, card, pin, puk, printed.out + printed.err,
                                                shown);
  }

  static TempDir* tmp_;
  static fs::path dir_;
  static CmServer* server_;
};

TempDir* IssueCardKeys::tmp_ = nullptr;
fs::path IssueCardKeys::dir_;
CmServer* IssueCardKeys::server_ = nullptr;

TEST_F(IssueCardKeys, ArchivedKeyRecoveredOntoASecondCardEqualsTheOriginal) {
  const std::string original = archived_key_card("keys-01", "Ann Archive");
  ASSERT_FALSE(original.empty());
  EXPECT_EQ(certificates_for(dir_, "Ann Archive"), 1);

  blank_card("keys-02");
  auto recovered = issue(conf(), "keys-02", "Ann Archive",
                         {"--token-procedure", "smartcard-recover", "--action", "0=recover",
                          "--workflow-id", "ann-recover"});
  ASSERT_EQ(recovered.exit_code, 0) << recovered.out << recovered.err;
  EXPECT_NE(recovered.out.find("Done"), std::string::npos) << recovered.out;
  EXPECT_EQ(public_key("keys-02", "pubkey", "persoflow key"), original);
  // recover-last-new: a new certificate for the recovered key.
  EXPECT_EQ(public_key("keys-02", "cert", "persoflow certificate"), original);
  EXPECT_EQ(certificates_for(dir_, "Ann Archive"), 2);
}

// The officer's search by subject text and by decimal certificate ID, for a holder whose name is
// not the new card's (so the automatic search by the subject fields would not find it): each
// recovers the archived key onto the card.
TEST_F(IssueCardKeys, SearchBySubjectOrCertificateIdRecoversTheArchivedKey) {
  const std::string original = archived_key_card("find-00", "Sam Search");
  ASSERT_FALSE(original.empty());
  auto listed = run({persoflow_binary(), "cm", "certs", "list", "--dir", (dir_ / "cm").string(),
                     "--json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  std::string cert_id;
  for (const auto& c : nlohmann::json::parse(listed.out)) {
    if (c.value("subject", "").find("CN=Sam Search") != std::string::npos) {
      cert_id = std::to_string(c.value("cert_id", 0));
    }
  }
  ASSERT_FALSE(cert_id.empty()) << listed.out;
  const std::pair<const char*, std::string> searches[] = {{"find-01", "0=subject:Sam Search"},
                                                          {"find-02", "0=id:" + cert_id}};
  for (const auto& [card, search] : searches) {
    SCOPED_TRACE(search);
    blank_card(card);
    auto recovered = issue(conf(), card, std::string("Holder Of ") + card,
                           {"--token-procedure", "smartcard-recover", "--action", "0=recover",
                            "--search", search});
    ASSERT_EQ(recovered.exit_code, 0) << recovered.out << recovered.err;
    EXPECT_NE(recovered.out.find("Done"), std::string::npos) << recovered.out;
    EXPECT_EQ(public_key(card, "pubkey", "persoflow key"), original);
    EXPECT_EQ(public_key(card, "cert", "persoflow certificate"), original);
  }
}

// Token procedure smartcard-recover-all (key procedure recover-all-new): every archived key of the
// holder is recovered onto the one entry, each with a new certificate.
TEST_F(IssueCardKeys, RecoverAllPutsEveryArchivedKeyOfTheHolderOnTheCard) {
  std::set<std::string> archived;
  for (const char* card : {"all-00", "all-01"}) {
    const std::string key = archived_key_card(card, "Al All");
    ASSERT_FALSE(key.empty());
    archived.insert(key);
  }
  ASSERT_EQ(archived.size(), 2u);
  blank_card("all-02");
  auto recovered = issue(conf(), "all-02", "Al All",
                         {"--token-procedure", "smartcard-recover-all", "--action", "0=recover"});
  ASSERT_EQ(recovered.exit_code, 0) << recovered.out << recovered.err;
  EXPECT_NE(recovered.out.find("Done"), std::string::npos) << recovered.out;
  const std::string held = list_objects("all-02");
  EXPECT_EQ(count(held, "Public Key Object; RSA 2048"), 2) << held;
  EXPECT_EQ(count(held, "Certificate Object"), 2) << held;
  // Each public key on the card, read by its CKA_ID with pkcs11-tool, is one of the archived.
  std::set<std::string> on_card;
  std::istringstream lines(held);
  std::string line;
  bool public_key_object = false;
  while (std::getline(lines, line)) {
    if (line.find("Object;") != std::string::npos) {
      public_key_object = line.find("Public Key Object") != std::string::npos;
    }
    const auto id = line.find("ID:");
    if (!public_key_object || id == std::string::npos) continue;
    const std::string hex = line.substr(line.find_first_not_of(' ', id + 3));
    const std::string der = tmp_->file("all-02-" + hex + ".der");
    ASSERT_EQ(run({"/usr/bin/env", softhsm(), "pkcs11-tool", "--module", kModule, "--token-label",
                   "all-02", "--read-object", "--type", "pubkey", "--id", hex, "-o", der})
                  .exit_code,
              0);
    on_card.insert(run({"openssl", "pkey", "-pubin", "-inform", "DER", "-in", der}).out);
  }
  EXPECT_EQ(on_card, archived);
  EXPECT_EQ(certificates_for(dir_, "Al All"), 4);  // two when archived, two when recovered
}

// Killed with SIGKILL right after the CM host generated and archived the key (command 4), and
// right after the key and certificate were written to the card (command 8), before the outcome
// was journaled: run again with the same workflow id, each finishes with one archived key and
// one certificate in the CM database, and one key on the card.
TEST_F(IssueCardKeys, KilledAfterArchiveOrWriteResumesWithOneKey) {
  for (const char* point : {"actors.after_command:4", "actors.after_command:8"}) {
    SCOPED_TRACE(point);
    const std::string card = std::string("crash-") + point[21];
    const std::string cn = std::string("Kim Crash ") + point[21];
    blank_card(card);
    std::vector<std::string> argv = {"/usr/bin/env",
                                     std::string("PERSOFLOW_CRASH_AT=") + point,
                                     persoflow_binary(),
                                     "issue",
                                     "card",
                                     "--config",
                                     conf(),
                                     "--token",
                                     card,
                                     "--field",
                                     "CN=" + cn,
                                     "--token-procedure",
                                     "smartcard-archive",
                                     "--workflow-id",
                                     card + "-wf"};
    auto killed = run(argv);
    EXPECT_EQ(killed.exit_code, 128 + 9) << killed.out << killed.err;
    auto resumed = issue(conf(), card, cn,
                         {"--token-procedure", "smartcard-archive", "--workflow-id", card + "-wf"});
    ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
    EXPECT_NE(resumed.out.find("Done"), std::string::npos) << resumed.out;
    EXPECT_EQ(certificates_for(dir_, cn), 1);
    const std::string held = list_objects(card);
    EXPECT_EQ(count(held, "Public Key Object; RSA 2048"), 1) << held;
    EXPECT_EQ(count(held, "Certificate Object"), 1) << held;
    EXPECT_EQ(public_key(card, "cert", "persoflow certificate"),
              public_key(card, "pubkey", "persoflow key"));
  }
}

// With fault points armed (here a counting run, PERSOFLOW_FAULT_COUNT) every card is wrapped by
// the fault-injecting card: a key the CM host generated and archived is still written (the
// wrapper forwards the import and counts it as a write).
TEST_F(IssueCardKeys, KeysFromTheCmHostAreWrittenWithFaultPointsArmed) {
  const std::string card = "faults-armed";
  const std::string counts = tmp_->file("fault-counts.txt");
  blank_card(card);
  auto r = run({"/usr/bin/env", "PERSOFLOW_FAULT_COUNT=" + counts, persoflow_binary(), "issue",
                "card", "--config", conf(), "--token", card, "--field", "CN=Fay Faults",
                "--token-procedure", "smartcard-archive", "--workflow-id", card + "-wf"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string held = list_objects(card);
  EXPECT_EQ(count(held, "Public Key Object; RSA 2048"), 1) << held;
  EXPECT_EQ(count(held, "Certificate Object"), 1) << held;
  std::ifstream in(counts);
  std::string number, name;
  long writes = 0;
  for (long n = 0; in >> number >> name >> n;) {
    if (name == "card.pulled_before_write") writes = n;
  }
  EXPECT_GE(writes, 3) << "key import, certificate store and PIN change counted as writes";
}

// By default a recovery request is sent; with several recovery procedures only where a key was
// selected (a search) or the request flag was set by hand. Entry 0 gets a key generated on the
// card every time, entry 1 asks for recovery.
TEST_F(IssueCardKeys, RequestFlagRule) {
  const std::string original = archived_key_card("flag-00", "Rita Flag");
  ASSERT_FALSE(original.empty());
  struct Case {
    std::string card, token_procedure;
    std::vector<std::string> options;
    bool recovered;
  };
  const std::string serial_search = [&] {
    auto x509 = run({"openssl", "x509", "-inform", "DER", "-in", tmp_->file("flag-00-cert.der"),
                     "-noout", "-serial"});
    return "1=serial:" +
           x509.out.substr(x509.out.find('=') + 1, x509.out.find('\n') - x509.out.find('=') - 1);
  }();
  const Case cases[] = {
      {"flag-01", "smartcard-recover-two", {}, false},  // several: not sent by default
      {"flag-02", "smartcard-recover-two", {"--request", "1=yes"}, true},
      {"flag-03", "smartcard-recover-two", {"--search", serial_search}, true},
      {"flag-04", "smartcard-recover", {}, true},  // one recovery procedure: sent by default
      {"flag-05", "smartcard-recover", {"--request", "1=no"}, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.card);
    blank_card(c.card);
    std::vector<std::string> options = {
        "--token-procedure", c.token_procedure, "--action",      "0=add",
        "--action",          "1=recover",       "--workflow-id", c.card + "-issue"};
    options.insert(options.end(), c.options.begin(), c.options.end());
    auto issued = issue(conf2(), c.card, "Rita Flag", options);
    ASSERT_EQ(issued.exit_code, 0) << issued.out << issued.err;
    const std::string held = list_objects(c.card);
    EXPECT_EQ(count(held, "Public Key Object"), c.recovered ? 2 : 1) << held;
    EXPECT_EQ(count(held, "Certificate Object"), c.recovered ? 2 : 1) << held;
    EXPECT_EQ(count(held, "Public Key Object; EC"), 1) << held;  // entry 0, made on the card
    if (c.recovered) {
      EXPECT_EQ(public_key(c.card, "pubkey", "persoflow key"), original);
    }
  }
}

// 'replace CA certificates': the CA certificate the CM host returns replaces the one the card
// came with (an old CA written by pkcs11-tool).
TEST_F(IssueCardKeys, CaCertificatesReplacedOnTheCard) {
  blank_card("ca-01");
  ASSERT_EQ(write_old_ca_certificate(softhsm(), "ca-01", *tmp_), "");
  ASSERT_NE(list_objects("ca-01").find("CN=Old Card CA"), std::string::npos);
  auto issued = issue(conf(), "ca-01", "Cora Ca", {"--token-procedure", "smartcard-standard"});
  ASSERT_EQ(issued.exit_code, 0) << issued.out << issued.err;
  const std::string held = list_objects("ca-01");
  EXPECT_EQ(held.find("CN=Old Card CA"), std::string::npos) << held;
  EXPECT_NE(held.find("CN=persoflow CA"), std::string::npos) << held;
  EXPECT_EQ(count(held, "label:      CA certificate"), 1) << held;
  // The CA certificate on the card is the CM host's: openssl compares it with ca.pem.
  EXPECT_EQ(ca_certificate_mismatch(softhsm(), "ca-01", dir_, *tmp_), "");
}

// A token procedure needing the operator PIN (the CM database holds none): without the
// station's operator_pin_file the workflow waits in OperatorPinAwaited, saying what to do;
// resumed with one, it finishes.
TEST_F(IssueCardKeys, OperatorPinAskedWhereTheProcedureNeedsOne) {
  blank_card("op-01");
  auto waiting = issue(conf_no_operator_pin(), "op-01", "Otto Operator",
                       {"--token-procedure", "smartcard-operator", "--workflow-id", "otto-1"});
  EXPECT_EQ(waiting.exit_code, 1) << waiting.out << waiting.err;
  EXPECT_NE(waiting.out.find("OperatorPinAwaited"), std::string::npos) << waiting.out;
  EXPECT_NE((waiting.out + waiting.err).find("set operator_pin_file"), std::string::npos)
      << waiting.out << waiting.err;
  EXPECT_EQ(list_objects("op-01").find("persoflow certificate"), std::string::npos)
      << "nothing written before the operator PIN";
  auto resumed = issue(conf_operator(), "op-01", "Otto Operator",
                       {"--token-procedure", "smartcard-operator", "--workflow-id", "otto-1"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  const std::string held = list_objects("op-01");
  EXPECT_NE(held.find("persoflow certificate"), std::string::npos) << held;
  EXPECT_NE(held.find("CN=persoflow CA"), std::string::npos) << held;
  EXPECT_EQ(certificates_for(dir_, "Otto Operator"), 1);
  auto journal = run(
      {"sh", "-c", "grep -c 12345678 " + (dir_ / "station" / "journal.db").string() + " || true"});
  EXPECT_EQ(journal.out, "0\n") << "the operator PIN is not in the journal";
}

// Every card PIN mode end to end: the new PIN opens the card (pkcs11-tool logs in with it), and
// no file under the demo folder (journal, CM database and audit log, logs, state) holds it.
TEST_F(IssueCardKeys, EveryPinModeSetsAPinThatOpensTheCardAndIsNowhereOnDisk) {
  std::vector<std::pair<std::string, std::string>> pins;  // card, PIN

  blank_card("pin-entered");
  auto entered =
      run({persoflow_binary(), "issue", "card", "--config", conf(), "--token", "pin-entered",
           "--field", "CN=Pia Entered", "--pin", "entered", "--pin-fd", "0"},
          "97531864\n97531864\n");
  ASSERT_EQ(entered.exit_code, 0) << entered.out << entered.err;
  EXPECT_NE(entered.err.find("not checked against the card's PIN policy"), std::string::npos)
      << entered.err;
  pins.emplace_back("pin-entered", "97531864");

  blank_card("pin-shown");
  auto shown = issue(conf(), "pin-shown", "Pia Shown", {"--pin", "generated"});
  ASSERT_EQ(shown.exit_code, 0) << shown.out << shown.err;
  const auto at = shown.out.find("shown once): ");
  ASSERT_NE(at, std::string::npos) << shown.out;
  pins.emplace_back("pin-shown", shown.out.substr(at + 13, 8));

  blank_card("pin-mailer");
  auto mailed = issue(conf(), "pin-mailer", "Pia Mailer",
                      {"--pin", "mailer", "--mail-to", "pia@example.org"});
  ASSERT_EQ(mailed.exit_code, 0) << mailed.out << mailed.err;
  EXPECT_EQ(mailed.out.find("shown once"), std::string::npos) << mailed.out;
  const auto queued = mailed.out.find("PIN letter PL-");
  ASSERT_NE(queued, std::string::npos) << mailed.out;
  const std::string mailer_id = mailed.out.substr(queued + 11, 13);

  // A pre-printed PIN/PUK letter, printed before it is bound (its PIN is then only on paper).
  auto made = run({persoflow_binary(), "cm", "pin-letters", "preprint", "--count", "1", "--dir",
                   (dir_ / "cm").string()});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const std::string letter_id = made.out.substr(0, made.out.find('\n'));
  auto letter_pin = [&](const std::string& id) {
    auto printed = run({persoflow_binary(), "cm", "pin-letters", "print", id, "--format", "text",
                        "--dir", (dir_ / "cm").string()});
    EXPECT_EQ(printed.exit_code, 0) << printed.err;
    const auto p = printed.out.find("Your PIN: ");
    if (p == std::string::npos) return std::string("?");
    return printed.out.substr(p + 10, printed.out.find('\n', p) - p - 10);
  };
  const std::string preprinted_pin = letter_pin(letter_id);
  blank_card("pin-letter");
  auto bound =
      issue(conf(), "pin-letter", "Pia Letter", {"--pin", "letter", "--pin-letter-id", letter_id});
  ASSERT_EQ(bound.exit_code, 0) << bound.out << bound.err;
  pins.emplace_back("pin-letter", preprinted_pin);
  pins.emplace_back("pin-mailer", letter_pin(mailer_id));

  for (const auto& [card, pin] : pins) {
    SCOPED_TRACE(card + " " + pin);
    auto login = run({"/usr/bin/env", softhsm(), "pkcs11-tool", "--module", kModule,
                      "--token-label", card, "--login", "--pin", pin, "--list-objects"});
    EXPECT_EQ(login.exit_code, 0) << login.out << login.err;
    EXPECT_NE(login.out.find("Private Key Object"), std::string::npos) << login.out;
    auto grep = run({"grep", "-rl", "--", pin, dir_.string()});
    EXPECT_EQ(grep.out, "") << "the PIN is on disk";
  }
}

TEST_F(IssueCardKeys, CardWithTwoPinsGetsPinAndPukGenerated) {
  blank_card("two-gen");
  auto shown = issue(conf_two_pins(), "two-gen", "Tess Two", {"--pin", "generated"});
  ASSERT_EQ(shown.exit_code, 0) << shown.out << shown.err;
  const auto pin_at = shown.out.find("PIN for card");
  const auto puk_at = shown.out.find("PUK for card");
  ASSERT_NE(pin_at, std::string::npos) << shown.out;
  ASSERT_NE(puk_at, std::string::npos) << shown.out;
  auto shown_value = [&](std::size_t from) {
    const auto at = shown.out.find("shown once): ", from);
    return at == std::string::npos ? std::string() : shown.out.substr(at + 13, 8);
  };
  const std::string pin = shown_value(pin_at), puk = shown_value(puk_at);
  EXPECT_NE(pin, puk);
  EXPECT_EQ(two_pin_problems("two-gen", pin, puk, shown, true), "");
}

// The PIN mailer: one letter carries both, as the CM host prints it.
TEST_F(IssueCardKeys, CardWithTwoPinsGetsPinAndPukInOneLetter) {
  blank_card("two-mail");
  auto mailed = issue(conf_two_pins(), "two-mail", "Tia Two",
                      {"--pin", "mailer", "--mail-to", "tia@example.org"});
  ASSERT_EQ(mailed.exit_code, 0) << mailed.out << mailed.err;
  const auto queued = mailed.out.find("PIN/PUK letter PL-");
  ASSERT_NE(queued, std::string::npos) << mailed.out;
  EXPECT_EQ(mailed.out.find("shown once"), std::string::npos) << mailed.out;
  const std::string letter_id = mailed.out.substr(queued + 15, 13);
  auto printed = run({persoflow_binary(), "cm", "pin-letters", "print", letter_id, "--format",
                      "text", "--dir", (dir_ / "cm").string()});
  ASSERT_EQ(printed.exit_code, 0) << printed.err;
  auto line = [&](const std::string& label) {
    const auto at = printed.out.find(label);
    if (at == std::string::npos) return std::string("?");
    return printed.out.substr(at + label.size(), printed.out.find('\n', at) - at - label.size());
  };
  const std::string pin = line("Your PIN: "), puk = line("Your PUK: ");
  EXPECT_EQ(two_pin_problems("two-mail", pin, puk, mailed, false), "") << printed.out;
}

TEST_F(IssueCardKeys, CardWithTwoPinsAsksForBothWhenEntered) {
  blank_card("two-ent");
  auto entered = run({persoflow_binary(), "issue", "card", "--config", conf_two_pins(), "--token",
                      "two-ent", "--field", "CN=Tom Two", "--pin", "entered", "--pin-fd", "0"},
                     "24681357\n24681357\n75318642\n75318642\n");
  ASSERT_EQ(entered.exit_code, 0) << entered.out << entered.err;
  EXPECT_EQ(two_pin_problems("two-ent", "24681357", "75318642", entered, false), "");
}

// A pre-printed PIN/PUK letter on a card with two PINs: the card's PIN and PUK (SO PIN) are the
// letter's, checked with pkcs11-tool; the letter is bound then, and binds once: another card's
// request for it is refused and waits for the operator, nothing set on that card.
TEST_F(IssueCardKeys, CardWithTwoPinsGetsPinAndPukFromOnePrePrintedLetter) {
  const std::string id = preprint_letter(true);
  EXPECT_EQ(letter_listing(id), "queued PIN/PUK");
  const auto [pin, puk] = printed_secrets(id);
  ASSERT_EQ(pin.size(), 8u);
  ASSERT_EQ(puk.size(), 8u);
  blank_card("two-letter");
  auto bound = issue(conf_two_pins(), "two-letter", "Lea Letter",
                     {"--pin", "letter", "--pin-letter-id", id});
  ASSERT_EQ(bound.exit_code, 0) << bound.out << bound.err;
  EXPECT_EQ(two_pin_problems("two-letter", pin, puk, bound, false), "");
  EXPECT_EQ(letter_listing(id), "bound PIN/PUK");

  blank_card("two-letter-b");
  auto again = issue(conf_two_pins(), "two-letter-b", "Lou Letter",
                     {"--pin", "letter", "--pin-letter-id", id, "--workflow-id", "two-letter-b-wf"});
  EXPECT_EQ(again.exit_code, 1) << again.out << again.err;
  EXPECT_NE((again.out + again.err).find("PIN letter " + id + " is bound to another token already"),
            std::string::npos)
      << again.out << again.err;
  auto unchanged = run({"/usr/bin/env", softhsm(), "pkcs11-tool", "--module", kModule,
                        "--token-label", "two-letter-b", "--login", "--pin", "123456",
                        "--list-objects"});
  EXPECT_EQ(unchanged.exit_code, 0) << "the card's PIN was changed: " << unchanged.err;
  // The operator ends it (its keys and certificate rolled back), so later runs have nothing left.
  auto cancel = run({persoflow_binary(), "workflows", "cancel", "two-letter-b-wf", "--config",
                     conf_two_pins()});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.out << cancel.err;

  auto too_short = run({persoflow_binary(), "cm", "pin-letters", "preprint", "--count", "1",
                        "--puk-length", "2", "--dir", (dir_ / "cm").string()});
  EXPECT_EQ(too_short.exit_code, 2);
  EXPECT_NE(too_short.err.find("--puk-length must be 4..64"), std::string::npos) << too_short.err;
}

// A queue line offering a PIN-only letter for a card with two PINs: refused by the CM host with
// the letter named, not retried; the workflow waits for the operator and the letter stays
// unbound. The corrected line (a PIN/PUK letter) finishes the same workflow.
TEST_F(IssueCardKeys, PinOnlyLetterForACardWithTwoPinsWaitsForACorrectedLine) {
  const std::string pin_only = preprint_letter(false);
  const std::string pin_puk = preprint_letter(true);
  const auto [pin, puk] = printed_secrets(pin_puk);
  blank_card("two-ql");
  const std::string queue = tmp_->file("letter-queue.jsonl");
  auto write_line = [&](const std::string& letter) {
    std::ofstream(queue)
        << R"({"workflow_id": "two-ql-issue", "token_label": "two-ql", "pin_delivery": "letter", )"
        << R"("pin_letter_id": ")" << letter << R"(", "subject": {"CN": "Lin Queue"}})" << "\n";
  };
  write_line(pin_only);
  auto refused = run({persoflow_binary(), "station", "run", "--config", conf_two_pins(),
                      "--queue", queue});
  EXPECT_EQ(refused.exit_code, 1) << refused.out << refused.err;
  const std::string said = refused.out + refused.err;
  EXPECT_NE(said.find(queue + ":1 (request two-ql-issue): the CM host refused: PIN letter " +
                      pin_only + " carries a PIN only; a card with two PINs (PIN and PUK) needs "
                      "a PIN/PUK letter"),
            std::string::npos)
      << said;
  EXPECT_EQ(audit_lines_with(pin_only, "carries a PIN only"), 1) << "asked the CM host again";
  EXPECT_EQ(letter_listing(pin_only), "queued PIN");

  write_line(pin_puk);
  auto corrected = run({persoflow_binary(), "station", "run", "--config", conf_two_pins(),
                        "--queue", queue});
  ASSERT_EQ(corrected.exit_code, 0) << corrected.out << corrected.err;
  EXPECT_EQ(two_pin_problems("two-ql", pin, puk, corrected, false), "");
  EXPECT_EQ(letter_listing(pin_puk), "bound PIN/PUK");
  EXPECT_EQ(letter_listing(pin_only), "queued PIN");
  EXPECT_EQ(certificates_for(dir_, "Lin Queue"), 1);
}

// Killed right after the letter was bound (ResolvePinLetter, command 10), before that was
// journaled, and the RA's copy of the answer lost too: the workflow run again sends the saved
// bind request again, and the CM host answers it from its stored answer (same transactionID),
// not with "bound to another token"; the letter is bound once.
TEST_F(IssueCardKeys, BindRepeatedAfterACrashGetsTheSameLetter) {
  const std::string id = preprint_letter(true);
  const auto [pin, puk] = printed_secrets(id);
  blank_card("two-crash");
  auto killed = run({"/usr/bin/env", "PERSOFLOW_CRASH_AT=actors.after_command:10",
                     persoflow_binary(), "issue", "card", "--config", conf_two_pins(), "--token",
                     "two-crash", "--field", "CN=Kai Crash", "--pin", "letter", "--pin-letter-id",
                     id, "--workflow-id", "two-crash-wf"});
  ASSERT_EQ(killed.exit_code, 128 + 9) << killed.out << killed.err;
  ASSERT_EQ(letter_listing(id), "bound PIN/PUK");
  int lost = 0;
  for (const char* folder : {"keys", "secrets"}) {
    for (const auto& f : fs::directory_iterator(dir_ / "station" / folder)) {
      const std::string name = f.path().filename().string();
      const bool answer = folder == std::string("keys") &&
                          !run({"grep", "-q", id, f.path().string()}).exit_code;
      if (answer || name.rfind("letter-", 0) == 0) lost += fs::remove(f.path());
    }
  }
  EXPECT_EQ(lost, 3) << "the bind's answer and the two secrets' files";
  auto resumed = issue(conf_two_pins(), "two-crash", "Kai Crash",
                       {"--pin", "letter", "--pin-letter-id", id, "--workflow-id", "two-crash-wf"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  EXPECT_EQ(two_pin_problems("two-crash", pin, puk, resumed, false), "");
  EXPECT_EQ(audit_lines_with("pin-letter-bind", id), 1);
  EXPECT_EQ(certificates_for(dir_, "Kai Crash"), 1);
}

// Queue lines carry the PIN mode only: an entered PIN (and PUK) comes from the station's
// entered_pins, a file here or stdin (fd:0), never from the line or the command line.
TEST_F(IssueCardKeys, QueueLinesTakeEnteredPinsFromTheStationsSource) {
  blank_card("two-q1");
  blank_card("two-q2");
  blank_card("two-q3");
  const std::string queue = tmp_->file("entered-queue.jsonl");
  std::ofstream(queue)
      << R"({"workflow_id": "two-q1-issue", "token_label": "two-q1", "pin_delivery": "entered", )"
      << R"("subject": {"CN": "Quin One"}})" << "\n"
      << R"({"workflow_id": "two-q2-issue", "token_label": "two-q2", "pin_delivery": "generated", )"
      << R"("subject": {"CN": "Quin Two"}})" << "\n"
      << R"({"workflow_id": "two-q3-issue", "token_label": "two-q3", "pin_delivery": "entered", )"
      << R"("subject": {"CN": "Quin Three"}})" << "\n";
  std::ofstream(entered_pins_file()) << "11223344\n55667788\n99887766\n44332211\n";
  auto ran = run({persoflow_binary(), "station", "run", "--config", conf_two_pins(), "--queue",
                  queue});
  ASSERT_EQ(ran.exit_code, 0) << ran.out << ran.err;
  EXPECT_EQ(two_pin_problems("two-q1", "11223344", "55667788", ran, false), "");
  EXPECT_EQ(two_pin_problems("two-q3", "99887766", "44332211", ran, false), "");

  blank_card("two-q4");
  const std::string stdin_queue = tmp_->file("stdin-queue.jsonl");
  std::ofstream(stdin_queue)
      << R"({"workflow_id": "two-q4-issue", "token_label": "two-q4", "pin_delivery": "entered", )"
      << R"("subject": {"CN": "Quin Four"}})" << "\n";
  auto from_stdin = run({persoflow_binary(), "station", "run", "--config", conf_two_pins_stdin(),
                         "--queue", stdin_queue},
                        "13572468\n86427531\n");
  ASSERT_EQ(from_stdin.exit_code, 0) << from_stdin.out << from_stdin.err;
  EXPECT_EQ(two_pin_problems("two-q4", "13572468", "86427531", from_stdin, false), "");

  // A PIN in the line itself, or an entered line the station has no source for: refused.
  const std::string clear = tmp_->file("clear-queue.jsonl");
  std::ofstream(clear)
      << R"({"workflow_id": "two-q5-issue", "token_label": "two-q5", "pin_delivery": "entered", )"
      << R"("pin": "12121212", "subject": {"CN": "Quin Five"}})" << "\n";
  auto refused = run({persoflow_binary(), "station", "run", "--config", conf_two_pins(), "--queue",
                      clear});
  EXPECT_EQ(refused.exit_code, 2) << refused.out << refused.err;
  EXPECT_NE(refused.err.find("a PIN never goes in a queue line"), std::string::npos)
      << refused.err;
  EXPECT_EQ(refused.err.find("12121212"), std::string::npos) << refused.err;
  const std::string no_source = tmp_->file("no-source-queue.jsonl");
  std::ofstream(no_source)
      << R"({"workflow_id": "two-q6-issue", "token_label": "two-q1", "pin_delivery": "entered", )"
      << R"("subject": {"CN": "Quin Six"}})" << "\n";
  auto unsourced = run({persoflow_binary(), "station", "run", "--config", conf(), "--queue",
                        no_source});
  EXPECT_EQ(unsourced.exit_code, 2) << unsourced.out << unsourced.err;
  EXPECT_NE(unsourced.err.find("entered_pins"), std::string::npos) << unsourced.err;
}

// The same through `station run`: a queue line with a token procedure, actions by entry and the
// PIN mailer.
TEST_F(IssueCardKeys, QueueLineWithKeysFromTheCmHostAndThePinMailer) {
  blank_card("queue-01");
  const std::string queue = tmp_->file("keys-queue.jsonl");
  std::ofstream(queue) << R"({"workflow_id": "queue-01-issue", "token_label": "queue-01", )"
                       << R"("token_procedure": "smartcard-archive", "actions": {"0": "add"}, )"
                       << R"("pin_delivery": "mailer", "mail_to": "quinn@example.org", )"
                       << R"("subject": {"CN": "Quinn Queue"}})"
                       << "\n";
  auto ran = run({persoflow_binary(), "station", "run", "--config", conf(), "--queue", queue});
  ASSERT_EQ(ran.exit_code, 0) << ran.out << ran.err;
  EXPECT_NE(ran.out.find("PIN letter PL-"), std::string::npos) << ran.out;
  const std::string held = list_objects("queue-01");
  EXPECT_EQ(count(held, "Public Key Object; RSA 2048"), 1) << held;
  EXPECT_EQ(certificates_for(dir_, "Quinn Queue"), 1);
}

TEST_F(IssueCardKeys, BadKeyOptionsAreRefused) {
  auto no_procedure = issue(conf(), "keys-01", "X", {"--action", "0=recover"});
  EXPECT_EQ(no_procedure.exit_code, 2);
  EXPECT_NE(no_procedure.err.find("recover needs a token procedure"), std::string::npos)
      << no_procedure.err;
  auto bad_action = issue(conf(), "keys-01", "X", {"--action", "0=redo"});
  EXPECT_EQ(bad_action.exit_code, 2);
  EXPECT_NE(bad_action.err.find("ENTRY=add|recover|blank"), std::string::npos) << bad_action.err;
  auto search_on_add = issue(
      conf(), "keys-01", "X",
      {"--token-procedure", "smartcard-recover", "--action", "0=add", "--search", "0=serial:01"});
  EXPECT_EQ(search_on_add.exit_code, 2);
  EXPECT_NE(search_on_add.err.find("entry whose action is recover"), std::string::npos)
      << search_on_add.err;
  auto bad_flag = issue(
      conf(), "keys-01", "X",
      {"--token-procedure", "smartcard-recover", "--action", "0=recover", "--request", "0=maybe"});
  EXPECT_EQ(bad_flag.exit_code, 2);
  EXPECT_NE(bad_flag.err.find("not default, yes or no"), std::string::npos) << bad_flag.err;
  auto bad_search = issue(conf(), "keys-01", "X",
                          {"--token-procedure", "smartcard-recover", "--action", "0=recover",
                           "--search", "0=colour:red"});
  EXPECT_EQ(bad_search.exit_code, 2);
  auto no_address = issue(conf(), "keys-01", "X", {"--pin", "mailer"});
  EXPECT_EQ(no_address.exit_code, 2);
  EXPECT_NE(no_address.err.find("mail_to"), std::string::npos) << no_address.err;
  auto no_letter = issue(conf(), "keys-01", "X", {"--pin", "letter"});
  EXPECT_EQ(no_letter.exit_code, 2);
  auto bad_mode = issue(conf(), "keys-01", "X", {"--pin", "1234"});
  EXPECT_EQ(bad_mode.exit_code, 2);
  EXPECT_NE(bad_mode.err.find("pin_delivery must be"), std::string::npos) << bad_mode.err;
  auto help = run({persoflow_binary(), "issue", "card", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--token-procedure"), std::string::npos) << help.out;
}

}  // namespace
