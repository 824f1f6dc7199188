// The issue-soft-token machine: the local versus server key-generation rule (both branches),
// key generation initialised (and re-initialised when interrupted), recovery always requested,
// the key-generation list (every default algorithm accepted, others refused with the list), the
// officer P12 rule, the certificate file format, every PIN mode, failures and cancel with file
// removal; then one test per transition row, validate(), the diagram and the no-clear-PIN check.
#include "persoflow/machines/issue_soft_token.hpp"

#include <gtest/gtest.h>

#include "workflow_harness.hpp"

namespace persoflow::machines {
namespace {

using harness::Driver;
using harness::Log;

const MachineDef& M() { return issue_soft_token_machine(); }
constexpr const char* kWf = "wf-soft-0001";

// cert_proc 0 signs (no archiving key procedure covers it: local key); cert_proc 1 encrypts,
// covered by the archiving key procedure 0 (server key).
Fields mixed_procedure(std::string delivery, Fields extra = {}) {
  Fields f{{"workflow_id", kWf},
           {"procedure", "p12-user"},
           {"pin_delivery", std::move(delivery)},
           {"cert_proc.0.name", "signature"},
           {"cert_proc.0.key_usage", "digitalSignature,nonRepudiation"},
           {"cert_proc.1.name", "encryption"},
           {"cert_proc.1.key_usage", "keyEncipherment, dataEncipherment"},
           {"key_proc.0.kind", "archive"},
           {"key_proc.0.key_usage", "dataEncipherment,keyEncipherment"}};
  for (auto& [k, v] : extra) f[k] = v;
  return f;
}

// Every certificate procedure covered: archive for encryption, recovery for an old key.
Fields server_procedure(std::string delivery, Fields extra = {}) {
  Fields f{{"workflow_id", kWf},
           {"procedure", "p12-archived"},
           {"pin_delivery", std::move(delivery)},
           {"cert_proc.0.key_usage", "keyEncipherment"},
           {"key_proc.0.kind", "archive"},
           {"key_proc.0.key_usage", "keyEncipherment"},
           {"key_proc.1.kind", "recover"},
           {"key_proc.1.key_usage", "keyEncipherment"},
           {"key_proc.1.scope", "all"}};
  for (auto& [k, v] : extra) f[k] = v;
  return f;
}

Fields request(Fields extra = {}) {
  Fields f{{"subject.CN", "Alan Turing"},
           {"p12_file", "/tokens/alan.p12"},
           {"cert_file", "/tokens/alan.der"}};
  for (auto& [k, v] : extra) f[k] = v;
  return f;
}

void sign_and_issue(Driver& d, int certs) {
  ASSERT_EQ(d.at(), "SignaturePinAwaited");
  d.on("OfficerPinEntered", {{"pin_ref", "secret-store:officer"}});
  d.on("OfficerSigned", {{"signer_ref", "officer-session"}});
  ASSERT_EQ(d.at(), "SubmittedToCm");
  EXPECT_EQ(d.arg("SubmitToCm", "transaction_id"), wf::transaction_id(kWf, "submit"));
  Fields f{{"chain.0.ref", "ca:sub"}, {"chain.1.ref", "ca:root"}};
  for (int k = 0; k < certs; ++k) {
    f[wf::item("cert", k, "serial")] = "B" + std::to_string(k);
    f[wf::item("cert", k, "ref")] = "cert:B" + std::to_string(k);
  }
  d.on("CertificatesIssued", f);
}

// ----- Scenarios -----

void local_and_server_keys(Driver& d) {
  d.on("ProcedureChosen", mixed_procedure("generated"));
  ASSERT_EQ(d.at(), "ProcedureConfirmed");
  EXPECT_EQ(d.data("cert_proc.0.key"), "local");
  EXPECT_EQ(d.data("cert_proc.1.key"), "server");  // same usage set, other order: covered
  EXPECT_EQ(d.arg("AskOperator", "algorithm_default"), "RSA:2048");
  d.on("RequestEntered", request());
  ASSERT_EQ(d.at(), "SeedRequested");
  EXPECT_EQ(d.arg("InitializeKeyGeneration", "sources"), "officer-card,os");
  d.on("SeedInterrupted");
  ASSERT_EQ(d.at(), "SeedRequested");
  EXPECT_EQ(d.arg("InitializeKeyGeneration", "attempt"), "2");
  d.on("KeyGenerationInitialized", {{"seed_ref", "seed:1"}});
  ASSERT_EQ(d.at(), "KeysRequested");
  ASSERT_EQ(d.count("GenerateKeyLocally"), 1);
  EXPECT_EQ(d.arg("GenerateKeyLocally", "cert_proc"), "0");
  EXPECT_EQ(d.arg("GenerateKeyLocally", "algorithm"), "RSA:2048");
  EXPECT_EQ(d.count("RequestServerKeygenAndArchive"), 1);
  EXPECT_FALSE(d.refused("LocalKeyGenerated", {{"cert_proc", "1"}, {"key_ref", "x"}}).empty());
  d.on("LocalKeyGenerated", {{"cert_proc", "0"}, {"key_ref", "ra-key:0"}});
  EXPECT_EQ(d.at(), "KeysRequested");
  d.on("ServerKeyArchived", {{"key_proc", "0"}, {"key_ref", "archive:0"}});
  sign_and_issue(d, 2);
  ASSERT_EQ(d.at(), "PinGenerationRequested");
  d.on("PinGenerated", {{"pin_index", "0"}, {"pin_ref", "secret-store:p12-pin"}});
  ASSERT_EQ(d.at(), "Pkcs12WriteRequested");
  EXPECT_EQ(d.arg("WritePkcs12", "pin_ref"), "secret-store:p12-pin");
  EXPECT_EQ(d.arg("WritePkcs12", "chain.1.ref"), "ca:root");
  EXPECT_EQ(d.arg("WritePkcs12", "key.0.key_ref"), "ra-key:0");
  EXPECT_EQ(d.arg("WritePkcs12", "server_key.0.0.key_ref"), "archive:0");
  EXPECT_EQ(d.arg("WriteCertificateFile", "format"), "der");
  d.on("Pkcs12Written");
  EXPECT_EQ(d.at(), "Pkcs12WriteRequested");
  d.on("CertificateFileWritten");
  ASSERT_EQ(d.at(), "PinDeliveryRequested");
  EXPECT_EQ(d.arg("ShowPinOnce", "pin_ref"), "secret-store:p12-pin");
  d.on("PinDelivered");
  EXPECT_EQ(d.at(), "Done");
  d.expect_replays();
}

void all_keys_from_cm(Driver& d) {
  d.on("ProcedureChosen", server_procedure("entered"));
  EXPECT_EQ(d.data("local_keys"), "0");
  // The algorithm only matters for RA keys: with none, any choice passes.
  d.on("RequestEntered", request({{"cert_file", "/tokens/alan.pem"}, {"algorithm", "EC:x"}}));
  ASSERT_EQ(d.at(), "KeysRequested");  // no seeding, no local key
  EXPECT_EQ(d.count("GenerateKeyLocally"), 0);
  EXPECT_EQ(d.count("InitializeKeyGeneration"), 0);
  EXPECT_EQ(d.count("RequestServerKeygenAndArchive"), 1);
  ASSERT_EQ(d.count("RequestKeyRecovery"), 1);  // always sent for a soft token
  EXPECT_EQ(d.arg("RequestKeyRecovery", "search"), "auto");
  EXPECT_EQ(d.arg("RequestKeyRecovery", "scope"), "all");
  EXPECT_EQ(d.arg("RequestKeyRecovery", "transaction_id"), wf::transaction_id(kWf, "recover/1"));
  EXPECT_FALSE(d.refused("ServerKeyArchived", {{"key_proc", "1"}, {"key_ref", "x"}}).empty());
  d.on("KeyRecovered", {{"key_proc", "1"},
                        {"recovered.0.key_ref", "rec:0"},
                        {"recovered.1.key_ref", "rec:1"},
                        {"recovered.1.cert_serial", "0C"}});
  EXPECT_EQ(d.at(), "KeysRequested");
  d.on("ServerKeyArchived", {{"key_proc", "0"}, {"key_ref", "archive:0"}});
  sign_and_issue(d, 1);
  ASSERT_EQ(d.at(), "PinEntryAwaited");
  EXPECT_EQ(d.arg("AskOperator", "warning"), "");  // no card PIN policy for a soft token
  d.on("PinEntered", {{"pin_index", "0"}, {"pin_ref", "secret-store:entered"}});
  ASSERT_EQ(d.at(), "Pkcs12WriteRequested");
  EXPECT_EQ(d.arg("WriteCertificateFile", "format"), "pem");
  d.on("CertificateFileWritten");
  EXPECT_EQ(d.at(), "Pkcs12WriteRequested");
  ASSERT_EQ(d.last().size(), 0u);
  d.on("Pkcs12Written");
  EXPECT_EQ(d.at(), "Done");  // an entered PIN needs no delivery
  d.expect_replays();
}

void every_default_algorithm_accepted_others_refused(Driver& d) {
  d.on("ProcedureChosen", mixed_procedure("generated"));
  auto list = parse_key_generation_list(kDefaultKeyGenerationList);
  ASSERT_TRUE(list.is_ok());
  ASSERT_EQ(list->entries.size(), 12u);
  for (const std::string& alg : list->entries) {
    Driver each(M());
    each.on("ProcedureChosen", mixed_procedure("generated"));
    each.on("RequestEntered", request({{"algorithm", alg}}));
    ASSERT_EQ(each.at(), "SeedRequested") << alg;
    each.on("KeyGenerationInitialized", {{"seed_ref", "s"}});
    EXPECT_EQ(each.arg("GenerateKeyLocally", "algorithm"), alg);
  }
  d.on("RequestEntered", request({{"algorithm", "EC:secp192r1"}}));
  ASSERT_EQ(d.at(), "ProcedureConfirmed");
  const std::string reason = d.arg("NotifyOperator", "reason");
  EXPECT_NE(reason.find("EC:secp192r1 is not in the RA's key-generation list"), std::string::npos)
      << reason;
  EXPECT_NE(reason.find("DSA:1024"), std::string::npos);
  d.on("RequestEntered", request({{"p12_file", "/x"}, {"cert_file", "/x"}}));
  EXPECT_NE(d.data("refusal").find("same"), std::string::npos);
  d.on("RequestEntered", {{"p12_file", "/a"}, {"cert_file", "/b"}});
  EXPECT_NE(d.data("refusal").find("subject"), std::string::npos);
  EXPECT_FALSE(d.refused("RequestEntered", {{"subject.CN", "x"}}).empty());  // no file names
}

void custom_list_and_officer_rules(Driver& d) {
  EXPECT_FALSE(parse_key_generation_list("RSA2048*").is_ok());
  EXPECT_FALSE(parse_key_generation_list("RSA:2048*, EC:secp256r1*").is_ok());
  EXPECT_FALSE(parse_key_generation_list("ED:25519").is_ok());
  EXPECT_FALSE(parse_key_generation_list("RSA:2048, RSA:2048").is_ok());
  EXPECT_EQ(parse_key_generation_list("EC:secp384r1, EC:secp256r1*")->default_entry,
            "EC:secp256r1");
  EXPECT_EQ(parse_key_generation_list("RSA:3072, RSA:4096")->default_entry, "RSA:3072");
  EXPECT_FALSE(
      d.refused("ProcedureChosen", mixed_procedure("generated", {{"ra_key_generation", "bad"}}))
          .empty());
  // An officer's P12: certificate procedures must have no key usage.
  d.on("ProcedureChosen", mixed_procedure("generated", {{"officer", "yes"}}));
  ASSERT_EQ(d.at(), "Idle");
  EXPECT_NE(d.data("refusal").find("officer"), std::string::npos);
  d.on("ProcedureChosen", {{"workflow_id", kWf},
                           {"procedure", "officer-p12"},
                           {"pin_delivery", "entered"},
                           {"officer", "yes"},
                           {"cert_proc.0.name", "officer"},
                           {"ra_key_generation", "EC:secp384r1, EC:secp256r1*"}});
  ASSERT_EQ(d.at(), "ProcedureConfirmed");
  EXPECT_EQ(d.data("cert_proc.0.key"), "local");
  d.on("RequestEntered", request());
  d.on("KeyGenerationInitialized", {{"seed_ref", "s"}});
  EXPECT_EQ(d.arg("GenerateKeyLocally", "algorithm"), "EC:secp256r1");
}

void mailer_pin(Driver& d) {
  d.on("ProcedureChosen", mixed_procedure("mailer"));
  d.on("RequestEntered", request());
  d.on("KeyGenerationInitialized", {{"seed_ref", "s"}});
  d.on("ServerKeyArchived", {{"key_proc", "0"}, {"key_ref", "archive:0"}});
  d.on("LocalKeyGenerated", {{"cert_proc", "0"}, {"key_ref", "ra-key:0"}});
  sign_and_issue(d, 2);
  ASSERT_EQ(d.at(), "PinMailerAddressAwaited");
  d.on("PinMailerAddressEntered", {{"address", "alan@example.org"}});
  d.on("PinGenerated", {{"pin_index", "0"}, {"pin_ref", "secret-store:m"}});
  d.on("Pkcs12Written");
  d.on("CertificateFileWritten");
  ASSERT_EQ(d.at(), "PinDeliveryRequested");
  EXPECT_EQ(d.arg("QueuePinLetter", "address"), "alan@example.org");
  EXPECT_EQ(d.arg("QueuePinLetter", "pin_ref"), "secret-store:m");
  d.on("CancelRequested");  // the files are written: removed
  ASSERT_EQ(d.at(), "RollbackRequested");
  EXPECT_EQ(d.arg("RemoveFiles", "object.0"), "file:/tokens/alan.p12");
  EXPECT_EQ(d.arg("RemoveFiles", "object.1"), "file:/tokens/alan.der");
  EXPECT_EQ(d.arg("RevokeIssuedCertificates", "serial.1"), "B1");
  d.on("CancelRequested");
  EXPECT_EQ(d.at(), "RollbackRequested");
  d.on("RollbackConfirmed");
  EXPECT_EQ(d.at(), "Cancelled");
}

void letter_pin_and_entry_cancelled(Driver& d) {
  d.on("ProcedureChosen", server_procedure("letter"));
  d.on("RequestEntered", request({{"key_proc.1.search", "id:12345"}}));
  EXPECT_EQ(d.arg("RequestKeyRecovery", "search"), "id:12345");
  d.on("ServerKeyArchived", {{"key_proc", "0"}, {"key_ref", "a"}});
  d.on("KeyRecovered", {{"key_proc", "1"}, {"recovered.0.key_ref", "r"}});
  sign_and_issue(d, 1);
  ASSERT_EQ(d.at(), "PinLetterIdAwaited");
  d.on("PinLetterIdEntered", {{"letter_id", "L-7"}});
  ASSERT_EQ(d.at(), "PinLetterResolutionRequested");
  d.on("PinLetterResolved", {{"pin_index", "0"}, {"pin_ref", "letter:L-7"}});
  ASSERT_EQ(d.at(), "Pkcs12WriteRequested");
  EXPECT_EQ(d.arg("WritePkcs12", "pin_ref"), "letter:L-7");
}

void entry_cancelled_shows_generated(Driver& d) {
  d.on("ProcedureChosen", server_procedure("entered"));
  d.on("RequestEntered", request());
  d.on("ServerKeyArchived", {{"key_proc", "0"}, {"key_ref", "a"}});
  d.on("KeyRecovered", {{"key_proc", "1"}, {"recovered.0.key_ref", "r"}});
  sign_and_issue(d, 1);
  d.on("PinEntryCancelled");
  ASSERT_EQ(d.at(), "PinGenerationRequested");
  d.on("PinGenerated", {{"pin_ref", "secret-store:g"}});
  d.on("CertificateFileWritten");
  d.on("Pkcs12Written");
  ASSERT_EQ(d.at(), "PinDeliveryRequested");
  EXPECT_TRUE(d.issued("ShowPinOnce"));
}

void file_write_failed(Driver& d) {
  d.on("ProcedureChosen", server_procedure("entered"));
  d.on("RequestEntered", request());
  d.on("ServerKeyArchived", {{"key_proc", "0"}, {"key_ref", "a"}});
  d.on("KeyRecovered", {{"key_proc", "1"}, {"recovered.0.key_ref", "r"}});
  sign_and_issue(d, 1);
  d.on("PinEntered", {{"pin_ref", "secret-store:e"}});
  d.on("Pkcs12Written");
  d.on("FileWriteFailed", {{"path", "/tokens/alan.der"}, {"reason", "permission denied"}});
  ASSERT_EQ(d.at(), "RollbackRequested");
  EXPECT_TRUE(d.issued("RemoveFiles"));
  d.on("RollbackConfirmed");
  EXPECT_EQ(d.at(), "Failed");
  EXPECT_NE(d.data("reason").find("permission denied"), std::string::npos);
}

void failures_and_retries(Driver& d) {
  d.on("ProcedureChosen", mixed_procedure("generated"));
  d.on("RequestEntered", request());
  d.on("KeyGenerationInitialized", {{"seed_ref", "s"}});
  const std::vector<Command> keys = d.last();
  d.on("CmUnreachable");
  ASSERT_EQ(d.at(), "SuspendedAwaitingRetry");
  d.on("RetryRequested");
  ASSERT_EQ(d.at(), "KeysRequested");
  EXPECT_EQ(d.last(), keys);
  d.on("LocalKeyGenerated", {{"cert_proc", "0"}, {"key_ref", "k"}});
  d.on("ServerKeyArchived", {{"key_proc", "0"}, {"key_ref", "a"}});
  d.on("OfficerPinEntered", {{"pin_ref", "o1"}});
  d.on("OfficerPinRejected", {{"tries_left", "1"}});
  ASSERT_EQ(d.at(), "SignaturePinAwaited");
  d.on("OfficerPinEntered", {{"pin_ref", "o2"}});
  d.on("OfficerSigned", {{"signer_ref", "s"}});
  const Command submit = d.command("SubmitToCm");
  d.on("CmUnreachable");
  d.on("RetryRequested");
  EXPECT_EQ(d.command("SubmitToCm"), submit);
  d.on("CmRefused", {{"reason", "officer lacks role Recover key"}});
  EXPECT_EQ(d.at(), "Failed");
}

void keys_refused_or_unsupported(Driver& d) {
  d.on("ProcedureChosen", mixed_procedure("generated"));
  d.on("RequestEntered", request({{"algorithm", "DSA:1024"}}));
  d.on("KeyGenerationInitialized", {{"seed_ref", "s"}});
  d.on("AlgorithmUnsupported", {{"algorithm", "DSA:1024"}, {"reason", "disabled by policy"}});
  EXPECT_EQ(d.at(), "Failed");
  EXPECT_NE(d.data("reason").find("DSA:1024"), std::string::npos);
}

void recovery_refused(Driver& d) {
  d.on("ProcedureChosen", server_procedure("generated"));
  d.on("RequestEntered", request({{"key_proc.1.search", "serial:0A1B"}}));
  EXPECT_FALSE(d.refused("RequestEntered", request()).empty());
  d.on("CmRefused", {{"reason", "no archived key for this subject"}});
  EXPECT_EQ(d.at(), "Failed");
  EXPECT_NE(d.data("reason").find("no archived key"), std::string::npos);
}

void officer_blocked(Driver& d) {
  d.on("ProcedureChosen", server_procedure("generated"));
  d.on("RequestEntered", request());
  d.on("ServerKeyArchived", {{"key_proc", "0"}, {"key_ref", "a"}});
  d.on("KeyRecovered", {{"key_proc", "1"}, {"recovered.0.key_ref", "r"}});
  d.on("OfficerPinEntered", {{"pin_ref", "o"}});
  d.on("OfficerPinRejected", {{"tries_left", "0"}});
  EXPECT_EQ(d.at(), "Failed");
  EXPECT_NE(d.data("reason").find("blocked"), std::string::npos);
}

void p12_first_then_certificate_file(Driver& d) {
  d.on("ProcedureChosen", server_procedure("entered"));
  d.on("RequestEntered", request());
  d.on("ServerKeyArchived", {{"key_proc", "0"}, {"key_ref", "a"}});
  d.on("KeyRecovered", {{"key_proc", "1"}, {"recovered.0.key_ref", "r"}});
  sign_and_issue(d, 1);
  d.on("PinEntered", {{"pin_ref", "secret-store:e"}});
  d.on("Pkcs12Written");
  ASSERT_EQ(d.at(), "Pkcs12WriteRequested");
  d.on("CertificateFileWritten");
  EXPECT_EQ(d.at(), "Done");
}

constexpr harness::NamedScenario kScenarios[] = {
    {"LocalAndServerKeys", local_and_server_keys},
    {"AllKeysFromCm", all_keys_from_cm},
    {"EveryDefaultAlgorithmAcceptedOthersRefused", every_default_algorithm_accepted_others_refused},
    {"CustomListAndOfficerRules", custom_list_and_officer_rules},
    {"MailerPinThenCancelRemovesFiles", mailer_pin},
    {"LetterPin", letter_pin_and_entry_cancelled},
    {"EntryCancelledShowsGenerated", entry_cancelled_shows_generated},
    {"FileWriteFailed", file_write_failed},
    {"FailuresAndRetries", failures_and_retries},
    {"AlgorithmUnsupported", keys_refused_or_unsupported},
    {"RecoveryRefused", recovery_refused},
    {"OfficerBlocked", officer_blocked},
    {"Pkcs12FirstThenCertificateFile", p12_first_then_certificate_file},
};

Log all_steps() {
  Log log;
  for (const auto& s : kScenarios) {
    Driver d(M(), &log);
    s.run(d);
  }
  harness::exercise_common_rows(M(), log);
  return log;
}

class SoftTokenScenario : public ::testing::TestWithParam<harness::NamedScenario> {};
TEST_P(SoftTokenScenario, Runs) {
  Driver d(M());
  GetParam().run(d);
  EXPECT_FALSE(d.events().empty());
}
INSTANTIATE_TEST_SUITE_P(Paths, SoftTokenScenario, ::testing::ValuesIn(kScenarios),
                         [](const auto& info) { return std::string(info.param.name); });

class SoftTokenRow : public ::testing::TestWithParam<std::size_t> {};
TEST_P(SoftTokenRow, TakenAndDeterministic) {
  static const Log log = all_steps();
  EXPECT_NO_FATAL_FAILURE(harness::check_row(M(), log, GetParam()));
}
INSTANTIATE_TEST_SUITE_P(Rows, SoftTokenRow, ::testing::Range<std::size_t>(0, M().rows.size()),
                         [](const auto& info) { return harness::row_test_name(M(), info.param); });

TEST(IssueSoftToken, ValidAndRegistered) {
  auto report = validate(M());
  EXPECT_TRUE(report.ok) << (report.problems.empty() ? "" : report.problems.front());
  EXPECT_EQ(find_machine("issue-soft-token"), &M());
}

TEST(IssueSoftToken, EveryRowCovered) {
  EXPECT_EQ(harness::uncovered_rows(M(), all_steps()), "") << "rows never exercised";
}

TEST(IssueSoftToken, NoFieldCarriesAClearPin) {
  EXPECT_EQ(harness::clear_pin_fields(all_steps()), "") << "fields that would carry a clear PIN";
}

TEST(IssueSoftToken, DiagramMatchesGoldenAndHeader) {
  EXPECT_EQ(harness::golden_mismatch(M()), "");
  EXPECT_EQ(harness::header_diagram_mismatch(M(), "issue_soft_token.hpp"), "");
}

}  // namespace
}  // namespace persoflow::machines
