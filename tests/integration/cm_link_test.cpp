// The CM link (persoflow/actors/cm_link.hpp) against a real CM host (`persoflow cm serve` on
// 127.0.0.1): a bad cm_url refused with its reason; one certificate per transactionID whether the
// enrolment is repeated, joined while in flight, or resent from its saved request by another
// link; a refusal answered once, not retried, shown as the CM host's own sentence; an unreachable CM host tried as often as the
// retry policy says, then an error; a certificate revoked twice is a refusal saying so.
#include "persoflow/actors/cm_link.hpp"

#include <gtest/gtest.h>
#include <openssl/cmp.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <memory>
#include <string>
#include <vector>

#include "../../actors/cm_genm.hpp"  // the genm helpers are private to actors/
#include "cm_server.hpp"
#include "persoflow/devices/officer.hpp"
#include "persoflow/protocol/cm_info_types.hpp"
#include "station_fixture.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
namespace ac = persoflow::actors;
namespace pr = persoflow::protocol;
using persoflow::testing::CmServer;
using persoflow::testing::persoflow_binary;
using persoflow::testing::run;
using persoflow::testing::TempDir;

class CmLinkTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir("persoflow-cm-link");
    const fs::path dir = tmp_->path();
    std::ofstream(dir / "officer.pw") << "link officer password\n";
    auto init = run({persoflow_binary(), "cm", "init", "--dir", (dir / "cm").string(), "--officer",
                     "officer", "--password-file", (dir / "officer.pw").string()});
    ASSERT_EQ(init.exit_code, 0) << init.out << init.err;
    server_ = new CmServer(dir / "cm");
    ASSERT_TRUE(server_->listening());
    auto officer = persoflow::devices::open_officer_pkcs12(
        (dir / "cm" / "officers" / "officer.p12").string(), "link officer password");
    ASSERT_TRUE(officer.is_ok()) << officer.status().message();
    officer_ = officer->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete officer_;
    delete tmp_;
  }

  static std::string ca() { return (tmp_->path() / "cm" / "ca" / "ca.pem").string(); }
  static std::string url(const std::string& port) { return "https://127.0.0.1:" + port; }

  static std::unique_ptr<ac::CmLink> link(ac::CmLinkOptions options = {},
                                          const std::string& port = server_->port()) {
    auto opened = ac::CmLink::open(
        url(port), ca(), [] { return officer_; }, options);
    EXPECT_TRUE(opened.is_ok()) << opened.status().message();
    return opened.is_ok() ? std::move(*opened) : nullptr;
  }

  static int certificates_for(const std::string& cn) {
    return persoflow::testing::certificates_for(tmp_->path(), cn);
  }

  static TempDir* tmp_;
  static CmServer* server_;
  static persoflow::devices::OfficerToken* officer_;
};

TempDir* CmLinkTest::tmp_ = nullptr;
CmServer* CmLinkTest::server_ = nullptr;
persoflow::devices::OfficerToken* CmLinkTest::officer_ = nullptr;

// An ir for `cn` with a fresh EC key, transactionID = `tid` (16 bytes).
struct Enrolment {
  pr::EvpPkeyPtr key{EVP_EC_gen("P-256")};
  pr::CertRequest request;
  Enrolment(const std::string& cn, const std::string& tid) {
    request.subject = "/CN=" + cn;
    request.key = key.get();
    request.transaction_id = tid;
  }
};

// Why open() refused `cm_url`, or "" when it did not.
// A file that stands for the CA certificate: opening a link reads only its name.
std::string some_ca_file() {
  const fs::path path = fs::temp_directory_path() / "persoflow-cm-link-test-ca.pem";
  std::ofstream(path) << "not read when the link opens\n";
  return path.string();
}

std::string refusal_of_url(const std::string& cm_url, const std::string& cm_ca = some_ca_file()) {
  auto opened = ac::CmLink::open(
      cm_url, cm_ca, []() -> persoflow::Result<persoflow::devices::OfficerToken*> {
        return persoflow::make_status(persoflow::Errc::kInternal, "not asked");
      });
  return opened.is_ok() ? std::string() : opened.status().message();
}

TEST(CmLinkUrl, EachBadCmUrlIsRefusedWithItsReason) {
  EXPECT_NE(refusal_of_url("http://127.0.0.1:8443").find("the scheme is https"), std::string::npos);
  EXPECT_NE(refusal_of_url("https://127.0.0.1").find("no port"), std::string::npos);
  EXPECT_NE(refusal_of_url("https://:8443").find("no host"), std::string::npos);
  EXPECT_NE(refusal_of_url("https://127.0.0.1:99999").find("1..65535"), std::string::npos);
  EXPECT_NE(refusal_of_url("https://127.0.0.1:84x3").find("1..65535"), std::string::npos);
  EXPECT_EQ(refusal_of_url("https://127.0.0.1:8443"), "");
  EXPECT_EQ(refusal_of_url("https://[::1]:8443/"), "");
  EXPECT_NE(refusal_of_url("https://127.0.0.1:8443", "/nonexistent/ca.pem")
                .find("cm_ca '/nonexistent/ca.pem' is not a file"),
            std::string::npos);
  auto parsed = ac::parse_cm_url("https://[::1]:8443");
  ASSERT_TRUE(parsed.is_ok());
  EXPECT_EQ(parsed->first, "::1");
  EXPECT_EQ(parsed->second, 8443);
}

TEST_F(CmLinkTest, OneTransactionIdIsOneCertificateRepeatedOrJoined) {
  auto to_cm = link();
  ASSERT_TRUE(to_cm);
  Enrolment e("Link Joined", std::string(16, 'j'));
  // Four callers at once with the same transactionID, then one more after the answer.
  std::vector<std::future<persoflow::Result<ac::CmAnswer>>> calls;
  for (int i = 0; i < 4; ++i) {
    calls.push_back(std::async(std::launch::async, [&] { return to_cm->enroll(e.request, ""); }));
  }
  std::string serial;
  for (auto& call : calls) {
    auto answer = call.get();
    ASSERT_TRUE(answer.is_ok()) << answer.status().message();
    ASSERT_TRUE(answer->enrolled) << answer->refusal_message;
    if (serial.empty()) serial = answer->enrolled->serial_hex;
    EXPECT_EQ(answer->enrolled->serial_hex, serial);
  }
  auto again = to_cm->enroll(e.request, "");
  ASSERT_TRUE(again.is_ok() && again->enrolled);
  EXPECT_EQ(again->enrolled->serial_hex, serial);
  EXPECT_EQ(to_cm->counters().sent, 1u);
  EXPECT_EQ(to_cm->counters().joined, 4u);
  EXPECT_EQ(certificates_for("Link Joined"), 1);
}

TEST_F(CmLinkTest, ASavedRequestIsResentAsSavedByAnotherLink) {
  const std::string saved = (tmp_->path() / "resent.der").string();
  Enrolment e("Link Resent", std::string(16, 'r'));
  std::string serial;
  {
    auto first = link();
    ASSERT_TRUE(first);
    auto answer = first->enroll(e.request, saved);
    ASSERT_TRUE(answer.is_ok() && answer->enrolled) << answer.status().message();
    serial = answer->enrolled->serial_hex;
  }
  ASSERT_TRUE(fs::exists(saved));
  struct stat st {};
  ASSERT_EQ(::stat(saved.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Another process builds the request again (new senderNonce, new signature, another subject
  // even): the saved bytes go instead, and the CM host answers from its store.
  e.request.subject = "/CN=Link Resent Rebuilt";
  auto second = link();
  ASSERT_TRUE(second);
  auto answer = second->enroll(e.request, saved);
  ASSERT_TRUE(answer.is_ok()) << answer.status().message();
  ASSERT_TRUE(answer->enrolled) << answer->refusal_message;
  EXPECT_EQ(answer->enrolled->serial_hex, serial);
  EXPECT_EQ(certificates_for("Link Resent"), 1);  // one for "Link Resent Rebuilt" would count
}

TEST_F(CmLinkTest, ARefusalIsAnAnswerAndIsNotRetried) {
  auto to_cm = link();
  ASSERT_TRUE(to_cm);
  auto answer = to_cm->general_message({{pr::kOidKeyRecovery, "not JSON"}});
  ASSERT_TRUE(answer.is_ok()) << answer.status().message();
  EXPECT_TRUE(answer->refused);
  EXPECT_FALSE(answer->refusal_message.empty());
  EXPECT_EQ(to_cm->counters().sent, 1u);
}

// The reasons of the refusals in the CM host's audit log ("refuse" records: "<what> (transaction
// <id>): <reason>"), read with `persoflow cm audit list --json`.
std::vector<std::string> audited_refusals(const fs::path& cm_dir) {
  auto listed = run({persoflow_binary(), "cm", "audit", "list", "--json", "--dir", cm_dir.string()});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  std::vector<std::string> reasons;
  for (const auto& record : nlohmann::json::parse(listed.out)) {
    const std::string detail = record.value("detail", "");
    const auto colon = detail.find("): ");
    if (record.value("action", "") == "refuse" && colon != std::string::npos) {
      reasons.push_back(detail.substr(colon + 3));
    }
  }
  return reasons;
}

// What a person is shown of a refusal is the CM host's own sentence, exactly the reason its audit
// log records, without OpenSSL's texts before it ("request rejected by server; CMP routines;
// ..."), which the detail keeps: a genm, an ir and an rr refused.
TEST_F(CmLinkTest, ARefusalShowsTheCmHostsOwnSentenceAndKeepsTheFullTextAsDetail) {
  auto to_cm = link();
  ASSERT_TRUE(to_cm);
  std::vector<ac::CmAnswer> refusals;
  auto genm = to_cm->general_message({{pr::kOidKeyRecovery, "not JSON"}});
  ASSERT_TRUE(genm.is_ok()) << genm.status().message();
  refusals.push_back(*genm);
  Enrolment unknown("Link Unknown Procedure", "");
  unknown.request.procedure = "no-such-procedure";
  auto ir = to_cm->enroll(unknown.request, "");
  ASSERT_TRUE(ir.is_ok()) << ir.status().message();
  refusals.push_back(*ir);
  Enrolment revoked("Link Revoked Twice", std::string(16, 'w'));
  auto enrolled = to_cm->enroll(revoked.request, "");
  ASSERT_TRUE(enrolled.is_ok() && enrolled->enrolled) << enrolled.status().message();
  ASSERT_TRUE(to_cm->revoke(enrolled->enrolled->cert.get(), 4).is_ok());
  auto rr = to_cm->revoke(enrolled->enrolled->cert.get(), 4);
  ASSERT_TRUE(rr.is_ok()) << rr.status().message();
  refusals.push_back(*rr);

  const std::vector<std::string> audited = audited_refusals(tmp_->path() / "cm");
  for (const ac::CmAnswer& refusal : refusals) {
    EXPECT_TRUE(refusal.refused);
    EXPECT_NE(std::find(audited.begin(), audited.end(), refusal.refusal_message), audited.end())
        << "'" << refusal.refusal_message << "' is not a reason of the CM host's audit log";
    EXPECT_EQ(refusal.refusal_message.find("rejected by server"), std::string::npos);
    const std::string& detail = refusal.refusal_detail;
    ASSERT_GE(detail.size(), refusal.refusal_message.size());
    EXPECT_EQ(detail.substr(detail.size() - refusal.refusal_message.size()),
              refusal.refusal_message);
  }
  EXPECT_EQ(refusals[0].refusal_message.rfind("persoflowKeyRecovery: the value is not a JSON", 0),
            0u)
      << refusals[0].refusal_message;
  EXPECT_NE(refusals[0].refusal_detail.find("CMP routines"), std::string::npos)
      << refusals[0].refusal_detail;
  EXPECT_EQ(refusals[1].refusal_message, "unknown certificate procedure 'no-such-procedure'");
  EXPECT_NE(refusals[2].refusal_message.find("is already revoked"), std::string::npos);
}

TEST_F(CmLinkTest, AGenmAnswersWithTheGenpItems) {
  auto to_cm = link();
  ASSERT_TRUE(to_cm);
  auto answer = to_cm->general_message({{pr::kOidProcedureList, "{}"}});
  ASSERT_TRUE(answer.is_ok()) << answer.status().message();
  EXPECT_FALSE(answer->refused) << answer->refusal_message;
  ASSERT_EQ(answer->items.size(), 1u);
  EXPECT_EQ(answer->items[0].oid, pr::kOidProcedureList);
  EXPECT_NE(answer->items[0].value.find("certificate_procedures"), std::string::npos);
}

TEST_F(CmLinkTest, TheProcedureListNamesTokenCertificateAndKeyProcedures) {
  auto to_cm = link();
  ASSERT_TRUE(to_cm);
  auto list = ac::genm::procedure_list(*to_cm);
  ASSERT_TRUE(list.is_ok()) << list.status().message();
  for (const char* kind : {"token_procedures", "certificate_procedures", "key_procedures"}) {
    EXPECT_TRUE(list->contains(kind)) << kind << " missing in " << list->dump();
  }
}

// An answer kept by an earlier attempt is read instead of asking again; one that is not JSON
// (damaged outside persoflow) is a corrupt-state error naming the file, not an exception.
TEST_F(CmLinkTest, ASavedKeyAnswerThatIsNotJsonIsACorruptStateError) {
  auto to_cm = link();
  ASSERT_TRUE(to_cm);
  const fs::path answer = tmp_->path() / "key-answer.json";
  std::ofstream(answer) << "{\"keys\": [";
  bool refused = false;
  std::string why;
  auto read = ac::genm::key_genm(*to_cm, (tmp_->path() / "key-request.der").string(),
                                 answer.string(), pr::kOidProcedureList, {}, "", &refused, &why);
  ASSERT_FALSE(read.is_ok());
  EXPECT_EQ(read.status().code(), persoflow::make_error_code(persoflow::Errc::kCorrupt));
  EXPECT_NE(read.status().message().find(answer.string()), std::string::npos)
      << read.status().message();
  EXPECT_FALSE(fs::exists(tmp_->path() / "key-request.der"));  // nothing was sent

  std::ofstream(answer, std::ios::trunc) << R"({"keys": [{"key_id": "k1"}]})";
  auto kept = ac::genm::key_genm(*to_cm, (tmp_->path() / "key-request.der").string(),
                                 answer.string(), pr::kOidProcedureList, {}, "", &refused, &why);
  ASSERT_TRUE(kept.is_ok()) << kept.status().message();
  EXPECT_EQ(kept->at("keys").at(0).value("key_id", ""), "k1");
  EXPECT_FALSE(refused);
}

TEST_F(CmLinkTest, AnUnreachableCmHostIsTriedAsTheRetryPolicySaysThenAnError) {
  std::string closed_port;
  {
    // A port where nothing listens any more: a CM host started and stopped.
    CmServer gone(tmp_->path() / "cm");
    ASSERT_TRUE(gone.listening());
    closed_port = gone.port();
  }
  ac::CmLinkOptions options;
  options.transport_retry = {3, std::chrono::milliseconds(0), std::chrono::milliseconds(10),
                             std::chrono::milliseconds(20)};
  auto to_cm = link(options, closed_port);
  ASSERT_TRUE(to_cm);
  Enrolment e("Link Unreachable", std::string(16, 'u'));
  auto answer = to_cm->enroll(e.request, (tmp_->path() / "unreachable.der").string());
  EXPECT_FALSE(answer.is_ok());
  EXPECT_EQ(to_cm->counters().sent, 3u);
  // Not an answer: the same transactionID is sent again on the next call.
  auto retried = to_cm->enroll(e.request, (tmp_->path() / "unreachable.der").string());
  EXPECT_FALSE(retried.is_ok());
  EXPECT_EQ(to_cm->counters().sent, 6u);
  EXPECT_EQ(to_cm->counters().joined, 0u);
}

TEST_F(CmLinkTest, RevokingTwiceIsARefusalThatSaysCertRevoked) {
  auto to_cm = link();
  ASSERT_TRUE(to_cm);
  Enrolment e("Link Revoked", std::string(16, 'v'));
  auto enrolled = to_cm->enroll(e.request, "");
  ASSERT_TRUE(enrolled.is_ok() && enrolled->enrolled) << enrolled.status().message();
  X509* cert = enrolled->enrolled->cert.get();
  auto first = to_cm->revoke(cert, 4);
  ASSERT_TRUE(first.is_ok()) << first.status().message();
  EXPECT_FALSE(first->refused) << first->refusal_message;
  auto second = to_cm->revoke(cert, 4);
  ASSERT_TRUE(second.is_ok()) << second.status().message();
  EXPECT_TRUE(second->refused);
  EXPECT_TRUE(second->refusal.fail_info & (1 << OSSL_CMP_PKIFAILUREINFO_certRevoked))
      << second->refusal_message;
}

}  // namespace
