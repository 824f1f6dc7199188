// The reissue machine: CSR good (p10cr) and invalid (garbage, bad signature, RSA-1024, subject
// mismatch: each its own message), key generated on the card (cr / kur), e-mail verification
// (waiting, polling, issued; expired; polls exhausted; across a restart by replay), revocation
// of the previous certificate (done, refused, retried), card removed and another card refused,
// failures and cancel; then one test per transition row, validate(), the diagram and the
// no-clear-PIN check.
#include "persoflow/machines/reissue.hpp"

#include <gtest/gtest.h>

#include "workflow_harness.hpp"

namespace persoflow::machines {
namespace {

using harness::Driver;
using harness::Log;

const MachineDef& M() { return reissue_machine(); }
constexpr const char* kWf = "wf-reissue-0001";
constexpr const char* kCard = "TOKEN-R1";
constexpr const char* kSubject = "CN=Edsger Dijkstra,O=Example";

void start(Driver& d, Fields extra = {}) {
  Fields f{{"workflow_id", kWf},          {"procedure", "reissue-user"},
           {"search", "serial:0A1B2C"},   {"allowed_key.0", "RSA:2048"},
           {"allowed_key.1", "RSA:3072"}, {"allowed_key.2", "EC:secp256r1"}};
  for (auto& [k, v] : extra) f[k] = v;
  d.on("ReissueStarted", f);
  ASSERT_EQ(d.at(), "PreviousSearchRequested");
  EXPECT_EQ(d.arg("FindCertificate", "search"), wf::get(f, "search"));
}

void found(Driver& d, bool card, bool old_key_usable = false) {
  Fields f{{"serial", "0A1B2C"}, {"subject", kSubject}};
  if (card) f["token_serial"] = kCard;
  if (old_key_usable) {
    f["old_key_usable"] = "yes";
    f["old_key_id"] = "0ld";
  }
  d.on("PreviousCertificateFound", f);
  ASSERT_EQ(d.at(), "PreviousConfirmed");
  EXPECT_EQ(d.arg("AskOperator", "ask"), "key_method");
}

void good_csr(Driver& d) {
  d.on("KeyMethodChosen", {{"method", "csr"}, {"csr_ref", "csr-store:1"}});
  ASSERT_EQ(d.at(), "CsrValidationRequested");
  EXPECT_EQ(d.arg("ValidateCsr", "csr_ref"), "csr-store:1");
  d.on("CsrParsed", {{"key_algorithm", "RSA:3072"}, {"subject", kSubject}, {"signature", "valid"}});
  ASSERT_EQ(d.at(), "SignaturePinAwaited");
}

void card_key(Driver& d) {
  d.on("KeyMethodChosen", {{"method", "card"}, {"algorithm", "EC:secp256r1"}});
  ASSERT_EQ(d.at(), "CardKeyRequested");
  EXPECT_EQ(d.arg("GenerateKeyOnCard", "key_id"), wf::card_key_id(kWf, "reissue"));
  EXPECT_EQ(d.arg("GenerateKeyOnCard", "token_serial"), kCard);
  d.on("KeyGenerated", {{"key_id", wf::card_key_id(kWf, "reissue")}});
  ASSERT_EQ(d.at(), "CsrBuildRequested");
  EXPECT_EQ(d.arg("BuildCsrOnCard", "subject"), kSubject);
  d.on("CsrBuiltOnCard", {{"csr_ref", "csr-store:card"}});
  ASSERT_EQ(d.at(), "SignaturePinAwaited");
}

void sign(Driver& d) {
  d.on("OfficerPinEntered", {{"pin_ref", "secret-store:officer"}});
  d.on("OfficerSigned", {{"signer_ref", "officer-session"}});
  ASSERT_EQ(d.at(), "SubmittedToCm");
  EXPECT_EQ(d.arg("SubmitToCm", "transaction_id"), wf::transaction_id(kWf, "submit"));
}

const Fields kIssued{{"serial", "0D0E"}, {"ref", "cert:0D0E"}};

// ----- Scenarios -----

void csr_good_then_revoke_previous(Driver& d) {
  start(d, {{"revoke_previous", "yes"}});
  found(d, false);
  good_csr(d);
  sign(d);
  EXPECT_EQ(d.arg("SubmitToCm", "message"), "p10cr");
  EXPECT_EQ(d.arg("SubmitToCm", "csr_ref"), "csr-store:1");
  d.on("CertificateIssued", kIssued);
  ASSERT_EQ(d.at(), "RevocationRequested");
  EXPECT_EQ(d.arg("RevokeCertificate", "serial"), "0A1B2C");
  EXPECT_EQ(d.arg("RevokeCertificate", "reason"), "superseded");
  d.on("PreviousRevoked");
  EXPECT_EQ(d.at(), "Done");
  d.expect_replays();
}

void invalid_csrs_each_named(Driver& d) {
  start(d, {{"search", "id:4711"}});
  found(d, true);
  d.on("KeyMethodChosen", {{"method", "csr"}, {"csr_ref", "csr-store:garbage"}});
  d.on("CsrUnparseable", {{"reason", "no PEM header"}});
  ASSERT_EQ(d.at(), "CsrRejected");
  EXPECT_NE(d.data("csr_problem").find("does not parse"), std::string::npos);
  EXPECT_NE(d.arg("NotifyOperator", "reason").find("no PEM header"), std::string::npos);
  struct Bad {
    Fields parsed;
    const char* says;
  };
  const Bad bad[] = {
      {{{"key_algorithm", "RSA:3072"}, {"subject", kSubject}, {"signature", "invalid"}},
       "signature does not verify"},
      {{{"key_algorithm", "RSA:1024"}, {"subject", kSubject}, {"signature", "valid"}},
       "key RSA:1024 is not allowed"},
      {{{"key_algorithm", "RSA:2048"}, {"subject", "CN=Mallory"}, {"signature", "valid"}},
       "subject 'CN=Mallory' does not match the previous certificate's"},
  };
  for (const Bad& b : bad) {
    d.on("KeyMethodChosen", {{"method", "csr"}, {"csr_ref", "csr-store:bad"}});
    ASSERT_EQ(d.at(), "CsrValidationRequested");
    d.on("CsrParsed", b.parsed);
    ASSERT_EQ(d.at(), "CsrRejected");
    EXPECT_NE(d.data("csr_problem").find(b.says), std::string::npos) << d.data("csr_problem");
  }
  // Everything wrong at once: every problem named.
  d.on("KeyMethodChosen", {{"method", "csr"}, {"csr_ref", "csr-store:worst"}});
  d.on("CsrParsed", {{"key_algorithm", "RSA:1024"}, {"subject", "CN=M"}, {"signature", "invalid"}});
  const std::string all = d.data("csr_problem");
  EXPECT_EQ(std::count(all.begin(), all.end(), ';'), 2) << all;
  d.on("KeyMethodChosen", {{"method", "card"}, {"algorithm", "DSA:1024"}});
  ASSERT_EQ(d.at(), "CsrRejected");  // refused: not an allowed key
  EXPECT_NE(d.data("refusal").find("DSA:1024 is not allowed"), std::string::npos);
  d.on("KeyMethodChosen", {{"method", "card"}, {"algorithm", "RSA:2048"}});
  ASSERT_EQ(d.at(), "CardKeyRequested");
  EXPECT_FALSE(d.refused("KeyGenerated", {{"key_id", "other"}}).empty());
}

void csr_rejected_then_good(Driver& d) {
  start(d, {{"subject_rule", "procedure"}, {"procedure_subject", "CN=Role Account"}});
  found(d, false);
  d.on("KeyMethodChosen", {{"method", "csr"}, {"csr_ref", "csr-store:1"}});
  d.on("CsrParsed", {{"key_algorithm", "RSA:3072"}, {"subject", kSubject}, {"signature", "valid"}});
  ASSERT_EQ(d.at(), "CsrRejected");
  EXPECT_NE(d.data("csr_problem").find("the procedure's 'CN=Role Account'"), std::string::npos);
  d.on("KeyMethodChosen", {{"method", "csr"}, {"csr_ref", "csr-store:2"}});
  d.on("CsrParsed",
       {{"key_algorithm", "EC:secp256r1"}, {"subject", "CN=Role Account"}, {"signature", "valid"}});
  ASSERT_EQ(d.at(), "SignaturePinAwaited");
  sign(d);
  d.on("CertificateIssued", kIssued);
  EXPECT_EQ(d.at(), "Done");  // no revocation asked
}

void key_on_card_with_kur_and_install(Driver& d) {
  start(d, {{"revoke_previous", "yes"}});
  found(d, true, true);
  EXPECT_FALSE(d.refused("KeyMethodChosen", {{"method", "card"}}).empty());  // no algorithm
  d.on("KeyMethodChosen", {{"method", "card"}, {"algorithm", "RSA:1024"}});
  ASSERT_EQ(d.at(), "PreviousConfirmed");  // refused
  card_key(d);
  sign(d);
  EXPECT_EQ(d.arg("SubmitToCm", "message"), "kur");  // the old key on the card can sign
  EXPECT_EQ(d.arg("SubmitToCm", "old_key_id"), "0ld");
  d.on("CertificateIssued", kIssued);
  ASSERT_EQ(d.at(), "InstallRequested");
  EXPECT_EQ(d.arg("WriteCertificateToCard", "key_id"), wf::card_key_id(kWf, "reissue"));
  d.on("CertificateInstalled");
  ASSERT_EQ(d.at(), "RevocationRequested");
  d.on("CmUnreachable");
  ASSERT_EQ(d.at(), "SuspendedAwaitingRetry");
  d.on("RetryRequested");
  ASSERT_EQ(d.at(), "RevocationRequested");
  EXPECT_EQ(d.arg("RevokeCertificate", "transaction_id"), wf::transaction_id(kWf, "revoke"));
  d.on("PreviousRevoked");
  EXPECT_EQ(d.at(), "Done");
  d.on("CardRemoved");
  EXPECT_EQ(d.at(), "Done");
  d.expect_replays();
}

void key_on_card_with_cr(Driver& d) {
  start(d);
  found(d, true);
  card_key(d);
  sign(d);
  EXPECT_EQ(d.arg("SubmitToCm", "message"), "cr");
  d.on("CertificateIssued", kIssued);
  d.on("CertificateInstalled");
  EXPECT_EQ(d.at(), "Done");
}

// E-mail verification: waiting, polled, then issued; the waiting state survives a restart
// (rebuilt by folding the journaled events) and issues the same poll.
void email_verification_issued_after_restart(Driver& d) {
  start(d, {{"email_verification", "yes"}, {"max_polls", "10"}, {"revoke_previous", "yes"}});
  found(d, false);
  good_csr(d);
  sign(d);
  d.on("CmWaiting", {{"check_after", "30"}});
  ASSERT_EQ(d.at(), "AwaitingEmailVerification");
  EXPECT_EQ(d.arg("PollCm", "poll"), "1");
  EXPECT_EQ(d.arg("PollCm", "check_after"), "30");
  EXPECT_EQ(d.arg("PollCm", "transaction_id"), wf::transaction_id(kWf, "submit"));
  d.on("CmWaiting", {{"check_after", "30"}});
  EXPECT_EQ(d.arg("PollCm", "poll"), "2");
  auto restarted = fold(M(), d.events());
  ASSERT_TRUE(restarted.is_ok());
  EXPECT_EQ(restarted->name, "AwaitingEmailVerification");
  EXPECT_EQ(wf::get(restarted->data, "polls"), "2");
  d.on("CmUnreachable");
  d.on("RetryRequested");
  ASSERT_EQ(d.at(), "AwaitingEmailVerification");
  EXPECT_EQ(d.arg("PollCm", "poll"), "2");  // the same poll again
  d.on("CertificateIssued", kIssued);
  ASSERT_EQ(d.at(), "RevocationRequested");
  d.on("PreviousRevoked");
  EXPECT_EQ(d.at(), "Done");
}

void email_verification_on_card_installs(Driver& d) {
  start(d, {{"email_verification", "yes"}});
  found(d, true);
  card_key(d);
  sign(d);
  d.on("CmWaiting");
  d.on("CertificateIssued", kIssued);
  EXPECT_EQ(d.at(), "InstallRequested");
}

void email_verification_then_done(Driver& d) {
  start(d, {{"email_verification", "yes"}});
  found(d, false);
  good_csr(d);
  sign(d);
  d.on("CmWaiting");
  d.on("CertificateIssued", kIssued);
  EXPECT_EQ(d.at(), "Done");
}

void email_verification_expired(Driver& d) {
  start(d, {{"email_verification", "yes"}});
  found(d, false);
  good_csr(d);
  sign(d);
  d.on("CmWaiting");
  d.on("VerificationExpired");
  EXPECT_EQ(d.at(), "Failed");
  EXPECT_NE(d.data("reason").find("expired"), std::string::npos);
}

void email_verification_expired_on_card(Driver& d) {
  start(d, {{"email_verification", "yes"}});
  found(d, true);
  card_key(d);
  sign(d);
  d.on("CmWaiting");
  d.on("VerificationExpired");
  ASSERT_EQ(d.at(), "RollbackRequested");
  EXPECT_EQ(d.arg("RollbackCard", "object.0"), "key:" + wf::card_key_id(kWf, "reissue"));
  d.on("RollbackConfirmed");
  EXPECT_EQ(d.at(), "Failed");
}

void polls_exhausted(Driver& d) {
  start(d, {{"email_verification", "yes"}, {"max_polls", "2"}});
  found(d, false);
  good_csr(d);
  sign(d);
  d.on("CmWaiting");
  d.on("CmWaiting");
  ASSERT_EQ(d.at(), "AwaitingEmailVerification");
  d.on("CmWaiting");
  EXPECT_EQ(d.at(), "Failed");
  EXPECT_NE(d.data("reason").find("2 polls"), std::string::npos);
}

void polls_exhausted_on_card(Driver& d) {
  start(d, {{"email_verification", "yes"}, {"max_polls", "1"}});
  found(d, true);
  card_key(d);
  sign(d);
  d.on("CmWaiting");
  d.on("CmWaiting");
  EXPECT_EQ(d.at(), "RollbackRequested");
}

void cm_refuses_while_waiting(Driver& d) {
  start(d);
  found(d, false);
  good_csr(d);
  sign(d);
  d.on("CmWaiting");
  d.on("CmRefused", {{"reason", "verification code wrong too often"}});
  EXPECT_EQ(d.at(), "Failed");
}

void cm_refuses_while_waiting_on_card(Driver& d) {
  start(d);
  found(d, true);
  card_key(d);
  sign(d);
  d.on("CmWaiting");
  d.on("CmRefused");
  EXPECT_EQ(d.at(), "RollbackRequested");
}

void cm_refuses_submission(Driver& d) {
  start(d);
  found(d, false);
  good_csr(d);
  sign(d);
  d.on("CmUnreachable");
  d.on("RetryRequested");
  d.on("CmRefused", {{"reason", "previous certificate already revoked"}});
  EXPECT_EQ(d.at(), "Failed");
}

void cm_refuses_submission_on_card(Driver& d) {
  start(d);
  found(d, true);
  card_key(d);
  sign(d);
  d.on("CmRefused");
  EXPECT_EQ(d.at(), "RollbackRequested");
}

void revocation_refused_keeps_new_certificate(Driver& d) {
  start(d, {{"revoke_previous", "yes"}});
  found(d, false);
  good_csr(d);
  sign(d);
  d.on("CertificateIssued", kIssued);
  d.on("CmRefused", {{"reason", "already revoked"}});
  ASSERT_EQ(d.at(), "Failed");
  EXPECT_NE(d.data("reason").find("new certificate 0D0E is issued"), std::string::npos);
  EXPECT_NE(d.data("reason").find("revoke it by hand"), std::string::npos);
}

void search_rules_and_not_found(Driver& d) {
  EXPECT_FALSE(d.refused("ReissueStarted", {{"workflow_id", kWf},
                                            {"procedure", "p"},
                                            {"search", "subject:CN=x"},
                                            {"allowed_key.0", "RSA:2048"}})
                   .empty());
  EXPECT_NE(d.refused("ReissueStarted", {{"workflow_id", kWf},
                                         {"procedure", "p"},
                                         {"search", "serial:XYZ"},
                                         {"allowed_key.0", "RSA:2048"}})
                .find("hexadecimal"),
            std::string::npos);
  EXPECT_NE(d.refused("ReissueStarted", {{"workflow_id", kWf},
                                         {"procedure", "p"},
                                         {"search", "id:12a"},
                                         {"allowed_key.0", "RSA:2048"}})
                .find("decimal"),
            std::string::npos);
  start(d);
  d.on("CmUnreachable");
  d.on("RetryRequested");
  ASSERT_EQ(d.at(), "PreviousSearchRequested");
  d.on("PreviousCertificateNotFound");
  EXPECT_EQ(d.at(), "Failed");
  EXPECT_NE(d.data("reason").find("serial:0A1B2C"), std::string::npos);
}

void card_removed_during_keygen_other_card_refused(Driver& d) {
  start(d);
  found(d, true);
  d.on("KeyMethodChosen", {{"method", "card"}, {"algorithm", "RSA:3072"}});
  const Command keygen = d.command("GenerateKeyOnCard");
  d.on("CardRemoved");
  ASSERT_EQ(d.at(), "SuspendedAwaitingCard");
  d.on("CardInserted", {{"token_serial", "TOKEN-OTHER"}});
  EXPECT_EQ(d.last().at(0).type, "RefuseCard");
  d.on("CardInserted", {{"token_serial", kCard}});
  ASSERT_EQ(d.at(), "CardKeyRequested");
  EXPECT_EQ(d.command("GenerateKeyOnCard"), keygen);
}

void card_failures(Driver& d) {
  start(d);
  found(d, true);
  d.on("KeyMethodChosen", {{"method", "card"}, {"algorithm", "RSA:3072"}});
  d.on("AlgorithmUnsupported", {{"algorithm", "RSA:3072"}});
  ASSERT_EQ(d.at(), "RollbackRequested");
  d.on("RollbackConfirmed");
  EXPECT_NE(d.data("reason").find("RSA:3072"), std::string::npos);
  d.on("CardRemoved");
  EXPECT_EQ(d.at(), "Failed");
}

void card_full_at_keygen(Driver& d) {
  start(d);
  found(d, true);
  d.on("KeyMethodChosen", {{"method", "card"}, {"algorithm", "RSA:3072"}});
  d.on("CardFull");
  EXPECT_EQ(d.at(), "RollbackRequested");
}

void card_full_at_install(Driver& d) {
  start(d);
  found(d, true);
  card_key(d);
  sign(d);
  d.on("CertificateIssued", kIssued);
  d.on("CardFull");
  ASSERT_EQ(d.at(), "RollbackRequested");
  EXPECT_EQ(d.arg("RollbackCard", "object.1"), "cert:0D0E");
}

void officer_blocked(Driver& d) {
  start(d);
  found(d, false);
  good_csr(d);
  d.on("OfficerPinEntered", {{"pin_ref", "a"}});
  d.on("OfficerPinRejected", {{"tries_left", "1"}});
  ASSERT_EQ(d.at(), "SignaturePinAwaited");
  d.on("OfficerPinEntered", {{"pin_ref", "b"}});
  d.on("OfficerPinRejected", {{"tries_left", "0"}});
  EXPECT_EQ(d.at(), "Failed");
}

void officer_blocked_on_card(Driver& d) {
  start(d);
  found(d, true);
  card_key(d);
  d.on("OfficerPinEntered", {{"pin_ref", "a"}});
  d.on("OfficerPinRejected", {{"tries_left", "0"}});
  EXPECT_EQ(d.at(), "RollbackRequested");
}

void cancel_paths(Driver& d) {
  start(d);
  found(d, true);
  d.on("KeyMethodChosen", {{"method", "card"}, {"algorithm", "RSA:3072"}});
  d.on("CardRemoved");
  d.on("CancelRequested");
  ASSERT_EQ(d.at(), "SuspendedAwaitingCard");
  EXPECT_EQ(d.data("resume_state"), "RollbackRequested");
  d.on("CardInserted", {{"token_serial", kCard}});
  ASSERT_EQ(d.at(), "RollbackRequested");
  d.on("CancelRequested");
  EXPECT_EQ(d.at(), "RollbackRequested");
  d.on("RollbackConfirmed");
  EXPECT_EQ(d.at(), "Cancelled");
  d.on("CardRemoved");
  EXPECT_EQ(d.at(), "Cancelled");
}

// The executors acknowledge NotifyOperator with OperatorNotified and RevokeIssuedCertificates
// with IssuedCertificatesRevoked, in whatever state the workflow has reached by then.
void acknowledgements(Driver& d) {
  start(d);
  found(d, true);
  d.on("KeyMethodChosen", {{"method", "card"}, {"algorithm", "RSA:1024"}});
  ASSERT_EQ(d.at(), "PreviousConfirmed");
  d.on("OperatorNotified");
  ASSERT_EQ(d.at(), "PreviousConfirmed");
  d.on("KeyMethodChosen", {{"method", "csr"}, {"csr_ref", "csr-store:1"}});
  d.on("CsrUnparseable", {{"reason", "not PEM"}});
  ASSERT_EQ(d.at(), "CsrRejected");
  d.on("OperatorNotified");
  ASSERT_EQ(d.at(), "CsrRejected");
  d.on("KeyMethodChosen", {{"method", "csr"}, {"csr_ref", "csr-store:2"}});
  d.on("OperatorNotified");
  ASSERT_EQ(d.at(), "CsrValidationRequested");
  d.on("CsrUnparseable", {{"reason", "not PEM"}});
  d.on("KeyMethodChosen", {{"method", "card"}, {"algorithm", "RSA:3072"}});
  d.on("OperatorNotified");
  ASSERT_EQ(d.at(), "CardKeyRequested");
  d.on("KeyGenerated", {{"key_id", wf::card_key_id(kWf, "reissue")}});
  d.on("CsrBuiltOnCard", {{"csr_ref", "csr-store:card"}});
  sign(d);
  d.on("CertificateIssued", kIssued);
  ASSERT_EQ(d.at(), "InstallRequested");
  d.on("CancelRequested");
  ASSERT_EQ(d.at(), "RollbackRequested");
  EXPECT_EQ(d.arg("RevokeIssuedCertificates", "serial.0"), "0D0E");
  d.on("IssuedCertificatesRevoked");
  ASSERT_EQ(d.at(), "RollbackRequested");
  d.on("RollbackConfirmed");
  ASSERT_EQ(d.at(), "Cancelled");
  d.on("OperatorNotified");
  d.on("IssuedCertificatesRevoked");
  EXPECT_EQ(d.at(), "Cancelled");
}

void failed_acknowledges_notice(Driver& d) {
  start(d);
  d.on("PreviousCertificateNotFound");
  ASSERT_EQ(d.at(), "Failed");
  d.on("OperatorNotified");
  EXPECT_EQ(d.at(), "Failed");
}

constexpr harness::NamedScenario kScenarios[] = {
    {"Acknowledgements", acknowledgements},
    {"FailedAcknowledgesNotice", failed_acknowledges_notice},
    {"CsrGoodThenRevokePrevious", csr_good_then_revoke_previous},
    {"InvalidCsrsEachNamed", invalid_csrs_each_named},
    {"CsrRejectedThenGood", csr_rejected_then_good},
    {"KeyOnCardWithKurAndInstall", key_on_card_with_kur_and_install},
    {"KeyOnCardWithCr", key_on_card_with_cr},
    {"EmailVerificationIssuedAfterRestart", email_verification_issued_after_restart},
    {"EmailVerificationOnCardInstalls", email_verification_on_card_installs},
    {"EmailVerificationThenDone", email_verification_then_done},
    {"EmailVerificationExpired", email_verification_expired},
    {"EmailVerificationExpiredOnCard", email_verification_expired_on_card},
    {"PollsExhausted", polls_exhausted},
    {"PollsExhaustedOnCard", polls_exhausted_on_card},
    {"CmRefusesWhileWaiting", cm_refuses_while_waiting},
    {"CmRefusesWhileWaitingOnCard", cm_refuses_while_waiting_on_card},
    {"CmRefusesSubmission", cm_refuses_submission},
    {"CmRefusesSubmissionOnCard", cm_refuses_submission_on_card},
    {"RevocationRefusedKeepsNewCertificate", revocation_refused_keeps_new_certificate},
    {"SearchRulesAndNotFound", search_rules_and_not_found},
    {"CardRemovedDuringKeygenOtherCardRefused", card_removed_during_keygen_other_card_refused},
    {"AlgorithmUnsupportedOnCard", card_failures},
    {"CardFullAtKeygen", card_full_at_keygen},
    {"CardFullAtInstall", card_full_at_install},
    {"OfficerBlocked", officer_blocked},
    {"OfficerBlockedOnCard", officer_blocked_on_card},
    {"CancelPaths", cancel_paths},
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

class ReissueScenario : public ::testing::TestWithParam<harness::NamedScenario> {};
TEST_P(ReissueScenario, Runs) {
  Driver d(M());
  GetParam().run(d);
  EXPECT_FALSE(d.events().empty());
}
INSTANTIATE_TEST_SUITE_P(Paths, ReissueScenario, ::testing::ValuesIn(kScenarios),
                         [](const auto& info) { return std::string(info.param.name); });

class ReissueRow : public ::testing::TestWithParam<std::size_t> {};
TEST_P(ReissueRow, TakenAndDeterministic) {
  static const Log log = all_steps();
  EXPECT_NO_FATAL_FAILURE(harness::check_row(M(), log, GetParam()));
}
INSTANTIATE_TEST_SUITE_P(Rows, ReissueRow, ::testing::Range<std::size_t>(0, M().rows.size()),
                         [](const auto& info) { return harness::row_test_name(M(), info.param); });

TEST(Reissue, ValidAndRegistered) {
  auto report = validate(M());
  EXPECT_TRUE(report.ok) << (report.problems.empty() ? "" : report.problems.front());
  EXPECT_EQ(find_machine("reissue"), &M());
}

TEST(Reissue, EveryRowCovered) {
  EXPECT_EQ(harness::uncovered_rows(M(), all_steps()), "") << "rows never exercised";
}

TEST(Reissue, NoFieldCarriesAClearPin) {
  EXPECT_EQ(harness::clear_pin_fields(all_steps()), "") << "fields that would carry a clear PIN";
}

TEST(Reissue, DiagramMatchesGoldenAndHeader) {
  EXPECT_EQ(harness::golden_mismatch(M()), "");
  EXPECT_EQ(harness::header_diagram_mismatch(M(), "reissue.hpp"), "");
}

}  // namespace
}  // namespace persoflow::machines
