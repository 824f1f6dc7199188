// The update-card machine: redo on a TC card (TC validated before anything is written), add on a
// TC card refused, untrusted or forged TC refused before any write command, the per-key action
// rules, two card PINs and the operator PIN, CA certificates, card PIN wrong / blocked, card
// full, CM unreachable / refusing, card removed and another card refused, cancel with rollback;
// then one test per transition row, validate(), the diagram and the no-clear-PIN check.
#include "persoflow/machines/update_card.hpp"

#include <gtest/gtest.h>

#include "workflow_harness.hpp"

namespace persoflow::machines {
namespace {

using harness::Driver;
using harness::Log;

const MachineDef& M() { return update_card_machine(); }
constexpr const char* kWf = "wf-update-0001";
constexpr const char* kCard = "TOKEN-U1";
constexpr const char* kTcIssuer = "CN=Card Vendor TC CA";

// Key 0 carries the TC (when `tc`), key 1 a certificate, key 2 no certificate; `pins` PINs.
void insert(Driver& d, bool tc, int pins = 1, const char* issuer = kTcIssuer) {
  d.on("CardInserted", {{"workflow_id", kWf}, {"token_serial", kCard}, {"reader", "r0"}});
  Fields c{{"token_serial", kCard},
           {"pin_count", std::to_string(pins)},
           {"key.0.id", "a0"},
           {"key.1.id", "a1"},
           {"key.1.cert_serial", "11"},
           {"key.2.id", "a2"},
           {"tc.present", tc ? "yes" : "no"}};
  if (tc) {
    c["tc.key"] = "0";
    c["tc.serial"] = "7C";
    c["tc.subject"] = "CN=Transport";
    c["tc.issuer"] = issuer;
  } else {
    c["key.0.cert_serial"] = "10";
  }
  d.on("CardContentsRead", c);
  ASSERT_EQ(d.at(), "ContentsConfirmed");
}

Fields procedure(Fields extra = {}) {
  Fields f{{"procedure", "smartcard-update"},
           {"tc_trusted_issuer.0", "CN=Other"},
           {"tc_trusted_issuer.1", kTcIssuer}};
  for (auto& [k, v] : extra) f[k] = v;
  return f;
}

Fields subject(Fields f) {
  f["subject.CN"] = "Grace Hopper";
  return f;
}

bool is_write(const Command& c) {
  return c.type == "WriteKeysAndCertificates" || c.type == "ReplaceCaCertificates" ||
         c.type == "RollbackCard" || c.type == "SetCardPin";
}

void sign(Driver& d) {
  ASSERT_EQ(d.at(), "SignaturePinAwaited");
  d.on("OfficerPinEntered", {{"pin_ref", "secret-store:officer"}});
  d.on("OfficerSigned", {{"signer_ref", "officer-session"}});
  ASSERT_EQ(d.at(), "SubmittedToCm");
  EXPECT_EQ(d.arg("SubmitToCm", "transaction_id"), wf::transaction_id(kWf, "submit"));
}

// ----- Scenarios -----

void redo_on_tc_card(Driver& d) {
  insert(d, true);
  d.on("ProcedureChosen", procedure());
  d.on("ActionsChosen", subject({{"key.0.action", "redo"}, {"key.1.action", "issue"}}));
  ASSERT_EQ(d.at(), "TcValidationRequested");
  EXPECT_EQ(d.arg("ValidateTransportCertificate", "tc_serial"), "7C");
  EXPECT_EQ(d.arg("ValidateTransportCertificate", "trusted_issuer.1"), kTcIssuer);
  d.on("TcValidated");
  sign(d);
  EXPECT_EQ(d.arg("SubmitToCm", "request.0.kind"), "redo");
  EXPECT_EQ(d.arg("SubmitToCm", "request.0.replaces"), "7C");
  EXPECT_EQ(d.arg("SubmitToCm", "request.1.kind"), "issue");
  d.on("CertificatesIssued", {{"cert.0.serial", "C0"},
                              {"cert.0.ref", "c:C0"},
                              {"cert.0.entry", "0"},
                              {"cert.1.serial", "C1"},
                              {"cert.1.ref", "c:C1"},
                              {"cert.1.entry", "1"}});
  ASSERT_EQ(d.at(), "CardPinAwaited");
  EXPECT_EQ(d.arg("AskOperator", "ask"), "card_pin");
  d.on("CardPinEntered", {{"pin_index", "0"}, {"pin_ref", "secret-store:card-pin"}});
  ASSERT_EQ(d.at(), "WriteRequested");
  const Command w = d.command("WriteKeysAndCertificates");
  EXPECT_EQ(wf::get(w.fields, "object.0"), "cert:C0");
  EXPECT_EQ(wf::get(w.fields, "object.1"), "");         // the issue-only certificate is not stored
  EXPECT_EQ(wf::get(w.fields, "remove.0"), "cert:7C");  // the TC goes
  EXPECT_EQ(wf::get(w.fields, "card_pin.0.ref"), "secret-store:card-pin");
  d.on("CardWritten");
  EXPECT_EQ(d.at(), "Done");
  d.on("CardRemoved");
  EXPECT_EQ(d.at(), "Done");
  d.expect_replays();
}

void add_on_tc_card_refused(Driver& d) {
  insert(d, true);
  d.on("ProcedureChosen", procedure());
  d.on("ActionsChosen", subject({{"key.0.action", "redo"}, {"key.1.action", "add"}}));
  ASSERT_EQ(d.at(), "ProcedureConfirmed");
  const std::string reason = d.arg("NotifyOperator", "reason");
  EXPECT_NE(reason.find("add is refused on a card holding a transport certificate"),
            std::string::npos)
      << reason;
  EXPECT_NE(reason.find("redo on key 0"), std::string::npos) << reason;
  ASSERT_EQ(d.last().size(), 1u);  // nothing else, certainly nothing written
  d.on("ActionsChosen", subject({{"key.0.action", "issue"}}));
  EXPECT_NE(d.data("refusal").find("must be redo"), std::string::npos);
  d.on("ActionsChosen", subject({{"key.0.action", "redo"}}));
  EXPECT_EQ(d.at(), "TcValidationRequested");
}

void action_rules(Driver& d) {
  insert(d, false);
  d.on("ProcedureChosen", procedure());
  d.on("ActionsChosen", subject({{"key.2.action", "redo"}}));
  EXPECT_NE(d.data("refusal").find("no certificate to redo"), std::string::npos);
  d.on("ActionsChosen", subject({}));
  EXPECT_NE(d.data("refusal").find("nothing to update"), std::string::npos);
  d.on("ActionsChosen", {{"key.0.action", "add"}});
  EXPECT_NE(d.data("refusal").find("subject"), std::string::npos);
  EXPECT_NE(d.refused("ActionsChosen", subject({{"key.0.action", "recover"}})).find("recover"),
            std::string::npos);
  EXPECT_FALSE(d.refused("ActionsChosen", subject({{"key.3.action", "add"}})).empty());
}

void untrusted_tc_refused_before_any_write(Driver& d) {
  insert(d, true, 1, "CN=Unknown Vendor");
  d.on("ProcedureChosen", procedure());
  d.on("ActionsChosen", subject({{"key.0.action", "redo"}}));
  ASSERT_EQ(d.at(), "Failed");
  EXPECT_NE(d.data("reason").find("not trusted"), std::string::npos);
  EXPECT_EQ(d.data("object.0"), "");
  d.on("CardRemoved");
  EXPECT_EQ(d.at(), "Failed");
}

void forged_tc_refused_before_any_write(Driver& d) {
  insert(d, true);
  d.on("ProcedureChosen", procedure());
  d.on("ActionsChosen", subject({{"key.0.action", "redo"}}));
  d.on("TcRejected", {{"reason", "signature does not verify against " + std::string(kTcIssuer)}});
  ASSERT_EQ(d.at(), "Failed");
  EXPECT_NE(d.data("reason").find("not authentic"), std::string::npos);
}

void tc_card_needs_tc_controls(Driver& d) {
  insert(d, true);
  d.on("ProcedureChosen", {{"procedure", "plain"}});
  ASSERT_EQ(d.at(), "ContentsConfirmed");
  EXPECT_NE(d.data("refusal").find("transport-certificate controls"), std::string::npos);
  d.on("ProcedureChosen", procedure());
  EXPECT_EQ(d.at(), "ProcedureConfirmed");
  d.on("CardRemoved");
  d.on("CancelRequested");
  EXPECT_EQ(d.at(), "Cancelled");  // nothing on the card: no need to wait for it
}

void add_with_two_pins_operator_pin_and_ca(Driver& d) {
  insert(d, false, 2);
  d.on("ProcedureChosen", procedure({{"operator_pin", "required"}, {"replace_ca", "yes"}}));
  d.on("ActionsChosen", subject({{"key.1.action", "add"}}));
  sign(d);
  d.on("CertificatesIssued", {{"cert.0.serial", "D1"},
                              {"cert.0.ref", "c:D1"},
                              {"cert.0.entry", "1"},
                              {"ca_cert.0.ref", "ca:new-root"}});
  ASSERT_EQ(d.at(), "CardPinAwaited");
  d.on("CardPinEntered", {{"pin_index", "0"}, {"pin_ref", "secret-store:p0"}});
  ASSERT_EQ(d.at(), "CardPinAwaited");
  EXPECT_EQ(d.arg("AskOperator", "pin_index"), "1");
  EXPECT_FALSE(d.refused("CardPinEntered", {{"pin_index", "0"}, {"pin_ref", "x"}}).empty());
  d.on("CardPinEntered", {{"pin_index", "1"}, {"pin_ref", "secret-store:p1"}});
  ASSERT_EQ(d.at(), "OperatorPinAwaited");
  d.on("OperatorPinEntered", {{"pin_ref", "secret-store:op"}});
  ASSERT_EQ(d.at(), "WriteRequested");
  EXPECT_EQ(d.arg("WriteKeysAndCertificates", "card_pin.1.ref"), "secret-store:p1");
  EXPECT_EQ(d.arg("WriteKeysAndCertificates", "remove.0"), "");  // add removes nothing
  d.on("CardWritten");
  ASSERT_EQ(d.at(), "CaCertsReplaceRequested");
  EXPECT_EQ(d.arg("ReplaceCaCertificates", "operator_pin_ref"), "secret-store:op");
  d.on("CaCertificatesReplaced");
  EXPECT_EQ(d.at(), "Done");
  d.expect_replays();
}

void issue_only_writes_nothing(Driver& d) {
  insert(d, false);
  d.on("ProcedureChosen", procedure());
  d.on("ActionsChosen", subject({{"key.2.action", "issue"}}));
  sign(d);
  d.on("CertificatesIssued",
       {{"cert.0.serial", "E2"}, {"cert.0.ref", "c:E2"}, {"cert.0.entry", "2"}});
  EXPECT_EQ(d.at(), "Done");
  EXPECT_TRUE(d.last().empty());
}

// issue keeps the certificate off the card: with 'replace CA certificates' the CA certificates
// are the only write, after the card's PIN (and the operator PIN where the procedure needs it).
void issue_only_with_ca_under(Driver& d, Fields rules) {
  insert(d, false);
  d.on("ProcedureChosen", procedure(std::move(rules)));
  d.on("ActionsChosen", subject({{"key.2.action", "issue"}}));
  sign(d);
  d.on("CertificatesIssued", {{"cert.0.serial", "E3"},
                              {"cert.0.ref", "c:E3"},
                              {"cert.0.entry", "2"},
                              {"ca_cert.0.ref", "ca:new-root"}});
  ASSERT_EQ(d.at(), "CardPinAwaited");
  d.on("CardPinEntered", {{"pin_index", "0"}, {"pin_ref", "secret-store:p0"}});
  if (d.at() == "OperatorPinAwaited") d.on("OperatorPinEntered", {{"pin_ref", "secret-store:op"}});
  ASSERT_EQ(d.at(), "CaCertsReplaceRequested");
  EXPECT_FALSE(d.issued("WriteKeysAndCertificates"));
  EXPECT_EQ(d.arg("ReplaceCaCertificates", "ca_cert.0.ref"), "ca:new-root");
  EXPECT_EQ(d.data("object.0"), "cacert:ca:new-root");  // what a rollback would remove
  d.on("CaCertificatesReplaced");
  EXPECT_EQ(d.at(), "Done");
  d.expect_replays();
}
void issue_only_with_ca(Driver& d) { issue_only_with_ca_under(d, {{"replace_ca", "yes"}}); }
void issue_only_with_ca_and_operator_pin(Driver& d) {
  issue_only_with_ca_under(d, {{"replace_ca", "yes"}, {"operator_pin", "required"}});
}

void card_pin_wrong_then_blocked(Driver& d) {
  insert(d, false);
  d.on("ProcedureChosen", procedure());
  d.on("ActionsChosen", subject({{"key.0.action", "redo"}}));
  sign(d);
  d.on("CertificatesIssued",
       {{"cert.0.serial", "F0"}, {"cert.0.ref", "c:F0"}, {"cert.0.entry", "0"}});
  d.on("CardPinEntered", {{"pin_index", "0"}, {"pin_ref", "secret-store:wrong"}});
  d.on("CardPinRejected", {{"tries_left", "2"}});
  ASSERT_EQ(d.at(), "CardPinAwaited");
  d.on("CardPinEntered", {{"pin_index", "0"}, {"pin_ref", "secret-store:wrong2"}});
  d.on("CardPinRejected", {{"tries_left", "0"}});
  ASSERT_EQ(d.at(), "RollbackRequested");
  d.on("RollbackConfirmed");
  EXPECT_EQ(d.at(), "Failed");
  EXPECT_NE(d.data("reason").find("blocked"), std::string::npos);
}

void card_full(Driver& d) {
  insert(d, false);
  d.on("ProcedureChosen", procedure());
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  sign(d);
  d.on("CertificatesIssued",
       {{"cert.0.serial", "F1"}, {"cert.0.ref", "c:F1"}, {"cert.0.entry", "0"}});
  d.on("CardPinEntered", {{"pin_index", "0"}, {"pin_ref", "secret-store:p"}});
  d.on("CardFull");
  ASSERT_EQ(d.at(), "RollbackRequested");
  EXPECT_EQ(d.arg("RollbackCard", "object.0"), "cert:F1");
}

void cm_unreachable_then_refusing(Driver& d) {
  insert(d, false);
  d.on("ProcedureChosen", procedure());
  d.on("ActionsChosen", subject({{"key.0.action", "redo"}}));
  sign(d);
  const Command submit = d.command("SubmitToCm");
  d.on("CmUnreachable");
  ASSERT_EQ(d.at(), "SuspendedAwaitingRetry");
  d.on("RetryRequested");
  EXPECT_EQ(d.command("SubmitToCm"), submit);
  d.on("CmRefused", {{"reason", "certificate procedure closed"}});
  EXPECT_EQ(d.at(), "Failed");
}

void officer_pin_wrong_then_blocked(Driver& d) {
  insert(d, false);
  d.on("ProcedureChosen", procedure());
  d.on("ActionsChosen", subject({{"key.0.action", "redo"}}));
  d.on("OfficerPinEntered", {{"pin_ref", "a"}});
  d.on("OfficerPinRejected", {{"tries_left", "1"}});
  ASSERT_EQ(d.at(), "SignaturePinAwaited");
  d.on("OfficerPinEntered", {{"pin_ref", "b"}});
  d.on("OfficerPinRejected", {{"tries_left", "0"}});
  EXPECT_EQ(d.at(), "Failed");
}

void card_removed_at_write_other_card_refused(Driver& d) {
  insert(d, true);
  d.on("ProcedureChosen", procedure());
  d.on("ActionsChosen", subject({{"key.0.action", "redo"}}));
  d.on("TcValidated");
  sign(d);
  d.on("CertificatesIssued",
       {{"cert.0.serial", "C0"}, {"cert.0.ref", "c:C0"}, {"cert.0.entry", "0"}});
  d.on("CardPinEntered", {{"pin_index", "0"}, {"pin_ref", "secret-store:p"}});
  const Command write = d.command("WriteKeysAndCertificates");
  d.on("CardRemoved");
  d.on("CardInserted", {{"token_serial", "TOKEN-X"}});
  ASSERT_EQ(d.last().size(), 1u);
  EXPECT_EQ(d.last()[0].type, "RefuseCard");
  d.on("CardInserted", {{"token_serial", kCard}, {"reader", "r0"}});
  ASSERT_EQ(d.at(), "WriteRequested");
  EXPECT_EQ(d.command("WriteKeysAndCertificates"), write);
  d.on("CardWritten");
  EXPECT_EQ(d.at(), "Done");
}

void cancel_at_write_rolls_back(Driver& d) {
  insert(d, false);
  d.on("ProcedureChosen", procedure({{"replace_ca", "yes"}}));
  d.on("ActionsChosen", subject({{"key.0.action", "redo"}}));
  sign(d);
  d.on("CertificatesIssued", {{"cert.0.serial", "C9"},
                              {"cert.0.ref", "c:C9"},
                              {"cert.0.entry", "0"},
                              {"ca_cert.0.ref", "ca:r"}});
  d.on("CardPinEntered", {{"pin_index", "0"}, {"pin_ref", "secret-store:p"}});
  d.on("CancelRequested");
  ASSERT_EQ(d.at(), "RollbackRequested");
  EXPECT_EQ(d.arg("RollbackCard", "object.0"), "cert:C9");
  EXPECT_EQ(d.arg("RollbackCard", "object.1"), "cacert:ca:r");
  EXPECT_EQ(d.arg("RevokeIssuedCertificates", "serial.0"), "C9");
  d.on("RollbackConfirmed");
  EXPECT_EQ(d.at(), "Cancelled");
}

void cancel_before_write(Driver& d) {
  insert(d, true);
  d.on("ProcedureChosen", procedure());
  d.on("ActionsChosen", subject({{"key.0.action", "redo"}}));
  d.on("CancelRequested");
  EXPECT_EQ(d.at(), "Cancelled");
  EXPECT_TRUE(d.last().empty());
  d.on("CardRemoved");
  EXPECT_EQ(d.at(), "Cancelled");
}

constexpr harness::NamedScenario kScenarios[] = {
    {"RedoOnTcCard", redo_on_tc_card},
    {"AddOnTcCardRefused", add_on_tc_card_refused},
    {"ActionRules", action_rules},
    {"UntrustedTcRefusedBeforeAnyWrite", untrusted_tc_refused_before_any_write},
    {"ForgedTcRefusedBeforeAnyWrite", forged_tc_refused_before_any_write},
    {"TcCardNeedsTcControls", tc_card_needs_tc_controls},
    {"AddWithTwoPinsOperatorPinAndCa", add_with_two_pins_operator_pin_and_ca},
    {"IssueOnlyWritesNothing", issue_only_writes_nothing},
    {"IssueOnlyWithCaCertificates", issue_only_with_ca},
    {"IssueOnlyWithCaCertificatesAndOperatorPin", issue_only_with_ca_and_operator_pin},
    {"CardPinWrongThenBlocked", card_pin_wrong_then_blocked},
    {"CardFull", card_full},
    {"CmUnreachableThenRefusing", cm_unreachable_then_refusing},
    {"OfficerPinWrongThenBlocked", officer_pin_wrong_then_blocked},
    {"CardRemovedAtWriteOtherCardRefused", card_removed_at_write_other_card_refused},
    {"CancelAtWriteRollsBack", cancel_at_write_rolls_back},
    {"CancelBeforeWrite", cancel_before_write},
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

class UpdateCardScenario : public ::testing::TestWithParam<harness::NamedScenario> {};
TEST_P(UpdateCardScenario, Runs) {
  Driver d(M());
  GetParam().run(d);
  EXPECT_FALSE(d.events().empty());
}
INSTANTIATE_TEST_SUITE_P(Paths, UpdateCardScenario, ::testing::ValuesIn(kScenarios),
                         [](const auto& info) { return std::string(info.param.name); });

class UpdateCardRow : public ::testing::TestWithParam<std::size_t> {};
TEST_P(UpdateCardRow, TakenAndDeterministic) {
  static const Log log = all_steps();
  EXPECT_NO_FATAL_FAILURE(harness::check_row(M(), log, GetParam()));
}
INSTANTIATE_TEST_SUITE_P(Rows, UpdateCardRow, ::testing::Range<std::size_t>(0, M().rows.size()),
                         [](const auto& info) { return harness::row_test_name(M(), info.param); });

// The TC rules hold on every path: no write command is ever issued on a TC card before the TC
// was validated, and none at all on a workflow whose TC was refused.
TEST(UpdateCard, NoWriteBeforeTcValidated) {
  for (const auto& s : kScenarios) {
    Log log;
    Driver d(M(), &log);
    s.run(d);
    bool validated = false, refused = false;
    for (const harness::Taken& t : log) {
      validated |= t.event.type == "TcValidated";
      refused |= t.event.type == "TcRejected" ||
                 (t.to.state.name == "Failed" && t.from.name == "ProcedureConfirmed");
      const bool tc = wf::is_yes(t.to.state.data, "tc.present");
      for (const Command& c : t.to.commands) {
        if (tc && is_write(c) && c.type != "RollbackCard") {
          EXPECT_TRUE(validated) << s.name << ": " << c.type << " before the TC was validated";
        }
        if (refused) {
          EXPECT_FALSE(is_write(c)) << s.name << ": " << c.type;
        }
      }
    }
  }
}

TEST(UpdateCard, ValidAndRegistered) {
  auto report = validate(M());
  EXPECT_TRUE(report.ok) << (report.problems.empty() ? "" : report.problems.front());
  EXPECT_EQ(find_machine("update-card"), &M());
}

TEST(UpdateCard, EveryRowCovered) {
  EXPECT_EQ(harness::uncovered_rows(M(), all_steps()), "") << "rows never exercised";
}

TEST(UpdateCard, NoFieldCarriesAClearPin) {
  EXPECT_EQ(harness::clear_pin_fields(all_steps()), "") << "fields that would carry a clear PIN";
}

TEST(UpdateCard, DiagramMatchesGoldenAndHeader) {
  EXPECT_EQ(harness::golden_mismatch(M()), "");
  EXPECT_EQ(harness::header_diagram_mismatch(M(), "update_card.hpp"), "");
}

}  // namespace
}  // namespace persoflow::machines
