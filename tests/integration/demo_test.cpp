// The demo end to end, checked from outside: `persoflow demo` in a temporary folder, then
// pkcs11-tool (keys and certificates on each card), openssl verify (each certificate read back
// from its card against the CA), `persoflow cm certs list --json` (exactly one certificate per
// card in the CM database) and `persoflow journal verify`; cards 2, 5, 8, ... came with a
// transport certificate, which update-card replaced (redo). The crash-resume test kills the
// second batch's station at several crash points and checks the same.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using persoflow::testing::persoflow_binary;
using persoflow::testing::run;
using persoflow::testing::TempDir;

constexpr const char* kModule = "/usr/lib/softhsm/libsofthsm2.so";

std::string label(int i) {
  std::ostringstream s;
  s << "card-" << std::setw(2) << std::setfill('0') << i;
  return s.str();
}

// Whether a subject (any order, RFC 2253 or OpenSSL's form) holds the CN of demo card i.
bool names_card(const std::string& subject, int i) {
  const std::string cn = "CN=Demo Cardholder " + std::to_string(i);
  for (auto at = subject.find(cn); at != std::string::npos; at = subject.find(cn, at + 1)) {
    const auto end = at + cn.size();
    if (end == subject.size() || subject[end] == ',' || subject[end] == '\n' ||
        subject[end] == '/') {
      return true;
    }
  }
  return false;
}

// Checks every card of the demo from outside; `cards` = all cards of both batches.
void check_cards(const fs::path& dir, int cards) {
  const std::string conf = "SOFTHSM2_CONF=" + (dir / "tokens" / "softhsm2.conf").string();
  const std::string ca = (dir / "cm" / "ca" / "ca.pem").string();
  auto listed = run({persoflow_binary(), "cm", "certs", "list", "--dir", (dir / "cm").string(),
                     "--json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  auto certs = nlohmann::json::parse(listed.out);
  std::map<std::string, int> per_subject;
  for (const auto& c : certs) per_subject[c.value("subject", "")]++;

  for (int i = 1; i <= cards; ++i) {
    SCOPED_TRACE(label(i));
    auto objects = run({"/usr/bin/env", conf, "pkcs11-tool", "--module", kModule, "--token-label",
                        label(i), "--list-objects"});
    ASSERT_EQ(objects.exit_code, 0) << objects.err;
    EXPECT_NE(objects.out.find("Certificate Object"), std::string::npos) << objects.out;
    EXPECT_NE(objects.out.find("Public Key Object; EC"), std::string::npos) << objects.out;
    if (i % 3 == 2) {
      // A card that came with a transport certificate: update-card redid it, the TC is gone and
      // the card's one certificate is the cardholder's, beside the CM host's CA certificate
      // (token procedure smartcard-tc replaces the CA certificates).
      EXPECT_EQ(objects.out.find("Transport certificate"), std::string::npos) << objects.out;
      std::size_t certificates = 0;
      for (auto at = objects.out.find("Certificate Object"); at != std::string::npos;
           at = objects.out.find("Certificate Object", at + 1)) {
        ++certificates;
      }
      EXPECT_EQ(certificates, 2u) << objects.out;
      EXPECT_NE(objects.out.find("label:      CA certificate"), std::string::npos) << objects.out;
    }

    const std::string der = (dir / (label(i) + ".der")).string();
    const std::string pem = (dir / (label(i) + ".pem")).string();
    auto read = run({"/usr/bin/env", conf, "pkcs11-tool", "--module", kModule, "--token-label",
                     label(i), "--read-object", "--type", "cert", "--label",
                     "persoflow certificate", "-o", der});
    ASSERT_EQ(read.exit_code, 0) << read.err;
    ASSERT_EQ(run({"openssl", "x509", "-inform", "DER", "-in", der, "-out", pem}).exit_code, 0);
    auto verified = run({"openssl", "verify", "-CAfile", ca, pem});
    EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
    auto subject = run({"openssl", "x509", "-in", pem, "-noout", "-subject", "-nameopt", "RFC2253"});
    EXPECT_TRUE(names_card(subject.out, i)) << subject.out;
    int in_db = 0;
    for (const auto& [s, n] : per_subject) {
      if (names_card(s, i)) in_db += n;
    }
    EXPECT_EQ(in_db, 1) << "certificates in the CM database for card " << i << ":\n" << listed.out;
  }
  auto verify = run({persoflow_binary(), "journal", "verify", "--journal",
                     (dir / "station" / "journal.db").string()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
}

TEST(Demo, RunsEndToEndAndEveryCardHoldsItsCertificate) {
  TempDir tmp("persoflow-demo");
  const fs::path dir = tmp.path() / "demo";
  auto r = run({persoflow_binary(), "demo", "--dir", dir.string(), "--cards", "4"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("was killed (SIGKILL)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("resum"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Demo finished"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("update-card"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("card-02-update-1"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(dir / "station" / "station.conf"));
  check_cards(dir, 4 + 2);
}

TEST(Demo, RefusesANonEmptyDirectoryWithoutForce) {
  TempDir tmp("persoflow-demo");
  std::ofstream(tmp.file("something")) << "x";
  auto r = run({persoflow_binary(), "demo", "--dir", tmp.path().string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(tmp.file("something")));
}

// The second batch's station killed at a crash point, restarted: every card finished, one
// certificate per card.
class DemoCrash : public ::testing::TestWithParam<const char*> {};

TEST_P(DemoCrash, ResumedWorkflowsFinishWithOneCertificatePerCard) {
  TempDir tmp("persoflow-demo-crash");
  const fs::path dir = tmp.path() / "demo";
  auto r = run({persoflow_binary(), "demo", "--dir", dir.string(), "--cards", "1", "--crash-at",
                GetParam()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("was killed (SIGKILL)"), std::string::npos) << r.out;
  check_cards(dir, 1 + 2);
}

INSTANTIATE_TEST_SUITE_P(Points, DemoCrash,
                         ::testing::Values("journal.after_commit:2", "journal.after_commit:9",
                                           "actors.before_command:4",
                                           "actors.before_command:12",
                                           "actors.after_command:7"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return n;
                         });

}  // namespace
