// The issue-card machine: a scenario per path of the RA task (issue on a blank entry, certify a
// key the card holds, generate & archive, recover last / all with and without the request flag,
// TC card redirected, card removed and reinserted, another card refused, officer PIN wrong, CM
// unreachable and refusing, card full, algorithm unsupported, cancel with rollback, every PIN
// delivery mode, two PINs), then one test per transition row over the log of all scenarios,
// validate(), the diagram, and the no-clear-PIN field check.
#include "persoflow/machines/issue_card.hpp"

#include <gtest/gtest.h>

#include "workflow_harness.hpp"

namespace persoflow::machines {
namespace {

using harness::Driver;
using harness::Log;

const MachineDef& M() { return issue_card_machine(); }
constexpr const char* kWf = "wf-issue-0001";
constexpr const char* kCard = "TOKEN-A1";

// A pre-personalised card: `held` entries carrying a key, then `free` entries without one.
void insert(Driver& d, int free, int held = 0, int pins = 1) {
  d.on("CardInserted", {{"workflow_id", kWf}, {"token_serial", kCard}, {"reader", "r0"}});
  EXPECT_TRUE(d.issued("ReadCardContents"));
  Fields c{{"token_serial", kCard}, {"tc.present", "no"}, {"pin_count", std::to_string(pins)}};
  int i = 0;
  for (; i < held; ++i) {
    c[wf::item("key", i, "id")] = "0a0b0c0" + std::to_string(i);
    c[wf::item("key", i, "label")] = "held" + std::to_string(i);
  }
  for (; i < held + free; ++i) {
    c[wf::item("key", i, "id")] = "";
    c[wf::item("key", i, "label")] = "free" + std::to_string(i);
  }
  d.on("CardContentsRead", c);
  EXPECT_EQ(d.at(), "ContentsConfirmed");
}

Fields procedure(std::string delivery, Fields extra = {}) {
  Fields f{{"procedure", "smartcard-user"},
           {"pin_delivery", std::move(delivery)},
           {"key_algorithm", "EC:secp256r1"}};
  for (auto& [k, v] : extra) f[k] = v;
  return f;
}

Fields subject(Fields f) {
  f["subject.CN"] = "Ada Lovelace";
  f["subject.O"] = "Example";
  return f;
}

// Officer signs, CM issues `certs` certificates; ends in WriteRequested (or OperatorPinAwaited).
void sign_and_issue(Driver& d, int certs = 1, Fields extra = {}) {
  ASSERT_EQ(d.at(), "SignaturePinAwaited");
  EXPECT_EQ(d.arg("AskOperator", "ask"), "signature_pin");
  d.on("OfficerPinEntered", {{"pin_ref", "secret-store:officer-1"}});
  EXPECT_EQ(d.arg("SignWithOfficer", "pin_ref"), "secret-store:officer-1");
  d.on("OfficerSigned", {{"signer_ref", "officer-session-1"}});
  ASSERT_EQ(d.at(), "SubmittedToCm");
  EXPECT_EQ(d.arg("SubmitToCm", "transaction_id"), wf::transaction_id(kWf, "submit"));
  EXPECT_EQ(d.arg("SubmitToCm", "signer_ref"), "officer-session-1");
  Fields issued = std::move(extra);
  for (int k = 0; k < certs; ++k) {
    issued[wf::item("cert", k, "serial")] = "5E" + std::to_string(k);
    issued[wf::item("cert", k, "ref")] = "cert-store:5E" + std::to_string(k);
  }
  d.on("CertificatesIssued", issued);
}

void finish_generated_pin(Driver& d) {
  ASSERT_EQ(d.at(), "PinGenerationRequested");
  const std::string index = d.data("pin.current");
  d.on("PinGenerated", {{"pin_index", index}, {"pin_ref", "secret-store:pin-" + index}});
  EXPECT_EQ(d.arg("SetCardPin", "pin_ref"), "secret-store:pin-" + index);
  d.on("CardPinSet", {{"pin_index", index}});
  ASSERT_EQ(d.at(), "PinDeliveryRequested");
}

// ----- Scenarios -----

void issue_blank_entry(Driver& d) {
  insert(d, 2);
  d.on("ProcedureChosen", procedure("generated"));
  EXPECT_EQ(d.at(), "ProcedureConfirmed");
  d.on("ActionsChosen", subject({{"key.0.action", "add"}, {"key.1.action", "blank"}}));
  ASSERT_EQ(d.at(), "KeysRequested");
  ASSERT_EQ(d.count("GenerateKeyOnCard"), 1);
  const std::string key_id = wf::card_key_id(kWf, "entry/0");
  EXPECT_EQ(d.arg("GenerateKeyOnCard", "key_id"), key_id);
  EXPECT_EQ(d.arg("GenerateKeyOnCard", "algorithm"), "EC:secp256r1");
  EXPECT_EQ(d.data("object.0"), "key:" + key_id);
  d.on("KeyGenerated", {{"entry", "0"}, {"key_id", key_id}});
  sign_and_issue(d);
  ASSERT_EQ(d.at(), "WriteRequested");
  EXPECT_EQ(d.arg("WriteKeysAndCertificates", "object.0"), "cert:5E0");
  EXPECT_EQ(d.arg("WriteKeysAndCertificates", "token_serial"), kCard);
  d.on("CardWritten");
  finish_generated_pin(d);
  EXPECT_EQ(d.arg("ShowPinOnce", "pin_ref"), "secret-store:pin-0");
  d.on("PinDelivered", {{"pin_index", "0"}});
  EXPECT_EQ(d.at(), "Done");
  d.on("CardRemoved");
  EXPECT_EQ(d.at(), "Done");
  d.expect_replays();
}

void certify_held_key_with_entered_pins(Driver& d) {
  insert(d, 0, 1, 2);
  d.on("ProcedureChosen", procedure("entered"));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  ASSERT_EQ(d.at(), "SignaturePinAwaited");  // the card holds the key: nothing to generate
  sign_and_issue(d);
  d.on("CardWritten");
  ASSERT_EQ(d.at(), "PinEntryAwaited");
  EXPECT_EQ(d.arg("AskOperator", "warning"), std::string(wf::kPinPolicyWarning));
  d.on("PinEntered", {{"pin_index", "0"}, {"pin_ref", "secret-store:e0"}});
  d.on("CardPinSet", {{"pin_index", "0"}});
  ASSERT_EQ(d.at(), "PinEntryAwaited");  // the card has two PINs
  EXPECT_EQ(d.arg("AskOperator", "pin_index"), "1");
  // A cancelled entry falls back to a generated PIN, shown once.
  d.on("PinEntryCancelled");
  finish_generated_pin(d);
  EXPECT_TRUE(d.issued("ShowPinOnce"));
  d.on("PinDelivered", {{"pin_index", "1"}});
  EXPECT_EQ(d.at(), "Done");
  d.expect_replays();
}

void entered_pin_cancelled_then_second_entered(Driver& d) {
  insert(d, 0, 1, 2);
  d.on("ProcedureChosen", procedure("entered"));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  sign_and_issue(d);
  d.on("CardWritten");
  d.on("PinEntryCancelled");
  finish_generated_pin(d);
  d.on("PinDelivered", {{"pin_index", "0"}});
  ASSERT_EQ(d.at(), "PinEntryAwaited");
  d.on("PinEntered", {{"pin_index", "1"}, {"pin_ref", "secret-store:e1"}});
  d.on("CardPinSet", {{"pin_index", "1"}});
  EXPECT_EQ(d.at(), "Done");
}

void generate_and_archive_with_operator_pin_ca_and_mailer(Driver& d) {
  insert(d, 2, 0, 2);
  d.on("ProcedureChosen",
       procedure("mailer",
                 {{"key_archiving", "yes"}, {"operator_pin", "required"}, {"replace_ca", "yes"}}));
  EXPECT_EQ(d.arg("AskOperator", "key.0.mark"), "generate-archive");
  d.on("ActionsChosen", subject({{"key.0.action", "add"}, {"key.1.action", "add"}}));
  ASSERT_EQ(d.at(), "KeysRequested");
  ASSERT_EQ(d.count("RequestServerKeygenAndArchive"), 2);
  EXPECT_EQ(d.count("GenerateKeyOnCard"), 0);
  EXPECT_EQ(d.arg("RequestServerKeygenAndArchive", "transaction_id"),
            wf::transaction_id(kWf, "archive/0"));
  EXPECT_EQ(d.data("object.0"), "");  // nothing on the card yet
  d.on("ServerKeyArchived", {{"entry", "1"}, {"key_ref", "archive:k1"}});
  EXPECT_EQ(d.at(), "KeysRequested");
  EXPECT_TRUE(d.last().empty());
  d.on("ServerKeyArchived", {{"entry", "0"}, {"key_ref", "archive:k0"}});
  sign_and_issue(d, 2, {{"ca_cert.0.ref", "ca:root"}});
  ASSERT_EQ(d.at(), "OperatorPinAwaited");
  EXPECT_EQ(d.arg("AskOperator", "ask"), "operator_pin");
  d.on("OperatorPinEntered", {{"pin_ref", "secret-store:op"}});
  ASSERT_EQ(d.at(), "WriteRequested");
  EXPECT_EQ(d.arg("WriteKeysAndCertificates", "operator_pin_ref"), "secret-store:op");
  EXPECT_EQ(d.arg("WriteKeysAndCertificates", "key.0.key_ref"), "archive:k0");
  d.on("CardWritten");
  ASSERT_EQ(d.at(), "CaCertsReplaceRequested");
  EXPECT_EQ(d.arg("ReplaceCaCertificates", "ca_cert.0.ref"), "ca:root");
  d.on("CaCertificatesReplaced");
  ASSERT_EQ(d.at(), "PinMailerAddressAwaited");
  EXPECT_FALSE(d.refused("PinMailerAddressEntered", {{"address", "not-an-address"}}).empty());
  d.on("PinMailerAddressEntered", {{"address", "ada@example.org"}});
  ASSERT_EQ(d.at(), "PinGenerationRequested");
  d.on("PinGenerated", {{"pin_index", "0"}, {"pin_ref", "secret-store:pin-0"}});
  d.on("CardPinSet", {{"pin_index", "0"}});
  // One letter for both PINs: the PUK is generated and set before anything is mailed.
  ASSERT_EQ(d.at(), "PinGenerationRequested");
  EXPECT_FALSE(d.issued("QueuePinLetter"));
  EXPECT_EQ(d.data("pin.current"), "1");
  finish_generated_pin(d);
  EXPECT_EQ(d.arg("QueuePinLetter", "address"), "ada@example.org");
  EXPECT_EQ(d.arg("QueuePinLetter", "pin_ref"), "secret-store:pin-0");
  EXPECT_EQ(d.arg("QueuePinLetter", "puk_ref"), "secret-store:pin-1");
  d.on("PinDelivered", {{"pin_index", "1"}});
  EXPECT_EQ(d.at(), "Done");
  d.expect_replays();
}

// Generated: the PIN shown once, then the PUK shown once.
void generated_pin_and_puk(Driver& d) {
  insert(d, 1, 0, 2);
  d.on("ProcedureChosen", procedure("generated"));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  d.on("KeyGenerated", {{"entry", "0"}, {"key_id", wf::card_key_id(kWf, "entry/0")}});
  sign_and_issue(d);
  d.on("CardWritten");
  finish_generated_pin(d);
  EXPECT_EQ(d.arg("ShowPinOnce", "pin_index"), "0");
  d.on("PinDelivered", {{"pin_index", "0"}});
  finish_generated_pin(d);
  EXPECT_EQ(d.arg("ShowPinOnce", "pin_index"), "1");
  EXPECT_EQ(d.arg("ShowPinOnce", "pin_ref"), "secret-store:pin-1");
  d.on("PinDelivered", {{"pin_index", "1"}});
  EXPECT_EQ(d.at(), "Done");
  d.expect_replays();
}

void recover_last_default_request_with_letters(Driver& d) {
  insert(d, 1, 0, 2);
  d.on("ProcedureChosen", procedure("letter", {{"recovery.0.scope", "last"}}));
  d.on("ActionsChosen", subject({{"key.0.action", "recover"}}));
  ASSERT_EQ(d.at(), "KeysRequested");
  ASSERT_EQ(d.count("RequestKeyRecovery"), 1);  // one recovery procedure: sent by default
  EXPECT_EQ(d.arg("RequestKeyRecovery", "search"), "auto");
  EXPECT_EQ(d.arg("RequestKeyRecovery", "subject.CN"), "Ada Lovelace");
  EXPECT_EQ(d.arg("RequestKeyRecovery", "scope"), "last");
  EXPECT_FALSE(
      d.refused("KeyRecovered",
                {{"entry", "0"}, {"recovered.0.key_ref", "a"}, {"recovered.1.key_ref", "b"}})
          .empty());  // two keys for "last" is a CM bug, not accepted
  d.on("KeyRecovered", {{"entry", "0"}, {"recovered.0.key_ref", "recovered:r0"}});
  sign_and_issue(d);
  EXPECT_EQ(d.arg("WriteKeysAndCertificates", "key.0.recovered.0.key_ref"), "recovered:r0");
  d.on("CardWritten");
  ASSERT_EQ(d.at(), "PinLetterIdAwaited");
  d.on("PinLetterIdEntered", {{"letter_id", "L-100"}});
  EXPECT_EQ(d.arg("ResolvePinLetter", "letter_id"), "L-100");
  d.on("PinLetterResolved", {{"pin_index", "0"}, {"pin_ref", "letter:L-100/0"}});
  d.on("CardPinSet", {{"pin_index", "0"}});
  ASSERT_EQ(d.at(), "PinLetterIdAwaited");
  d.on("PinLetterIdEntered", {{"letter_id", "L-101"}});
  d.on("PinLetterResolved", {{"pin_index", "1"}, {"pin_ref", "letter:L-101/1"}});
  d.on("CardPinSet", {{"pin_index", "1"}});
  EXPECT_EQ(d.at(), "Done");
}

// A free entry's key generated on a card with `pins` PINs, certified and written: the PIN
// sub-flow of `delivery` begins.
void key_generated_and_written(Driver& d, const std::string& delivery, int pins) {
  insert(d, 1, 0, pins);
  d.on("ProcedureChosen", procedure(delivery));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  d.on("KeyGenerated", {{"entry", "0"}, {"key_id", wf::card_key_id(kWf, "entry/0")}});
  sign_and_issue(d);
  d.on("CardWritten");
}

// A card with two PINs and a pre-printed PIN/PUK letter: a PIN-only letter is refused by the CM
// host and another asked for (naming the refused one); the next letter gives the PIN and the PUK,
// both set without asking again.
void pin_and_puk_from_one_letter(Driver& d) {
  key_generated_and_written(d, "letter", 2);
  ASSERT_EQ(d.at(), "PinLetterIdAwaited");
  EXPECT_EQ(d.arg("AskOperator", "refused_letter_id"), "");
  d.on("PinLetterIdEntered", {{"letter_id", "PL-PINONLY"}});
  EXPECT_EQ(d.arg("ResolvePinLetter", "pin_count"), "2");
  d.on("PinLetterRefused", {{"pin_index", "0"}, {"reason", "PL-PINONLY carries a PIN only"}});
  ASSERT_EQ(d.at(), "PinLetterIdAwaited");
  EXPECT_EQ(d.arg("AskOperator", "ask"), "pin_letter_id");
  EXPECT_EQ(d.arg("AskOperator", "refused_letter_id"), "PL-PINONLY");
  EXPECT_EQ(d.arg("AskOperator", "reason"), "PL-PINONLY carries a PIN only");
  d.on("PinLetterIdEntered", {{"letter_id", "PL-PINPUK"}});
  EXPECT_EQ(d.arg("ResolvePinLetter", "letter_id"), "PL-PINPUK");
  EXPECT_EQ(d.data("pin.0.refused_letter_id"), "");
  d.on("PinLetterResolved",
       {{"pin_index", "0"}, {"pin_ref", "letter-pin"}, {"puk_ref", "letter-puk"}});
  ASSERT_EQ(d.at(), "PinSetRequested");
  EXPECT_EQ(d.arg("SetCardPin", "pin_ref"), "letter-pin");
  d.on("CardPinSet", {{"pin_index", "0"}});
  ASSERT_EQ(d.at(), "PinSetRequested");
  EXPECT_EQ(d.data("pin.current"), "1");
  EXPECT_EQ(d.arg("SetCardPin", "pin_index"), "1");
  EXPECT_EQ(d.arg("SetCardPin", "pin_ref"), "letter-puk");
  EXPECT_EQ(d.data("pin.1.letter_id"), "PL-PINPUK");
  d.on("CardPinSet", {{"pin_index", "1"}});
  EXPECT_EQ(d.at(), "Done");
  d.expect_replays();
}

// One PIN: a letter's PUK has nowhere to go, and the letter is not asked to carry one.
void one_pin_letter_without_puk(Driver& d) {
  key_generated_and_written(d, "letter", 1);
  d.on("PinLetterIdEntered", {{"letter_id", "PL-ONE"}});
  ASSERT_EQ(d.at(), "PinLetterResolutionRequested");
  EXPECT_EQ(d.arg("ResolvePinLetter", "pin_count"), "");
  EXPECT_FALSE(d.refused("PinLetterResolved",
                         {{"pin_index", "0"}, {"pin_ref", "p"}, {"puk_ref", "k"}})
                   .empty());
  d.on("PinLetterResolved", {{"pin_index", "0"}, {"pin_ref", "letter-pin"}});
  d.on("CardPinSet", {{"pin_index", "0"}});
  EXPECT_EQ(d.at(), "Done");
}

// Two recovery procedures: no request unless a key was selected or the flag set by hand.
void recover_with_several_procedures(Driver& d) {
  insert(d, 3);
  d.on("ProcedureChosen",
       procedure("generated", {{"recovery.0.scope", "last"}, {"recovery.1.scope", "all"}}));
  d.on("ActionsChosen", subject({{"key.0.action", "recover"}}));
  EXPECT_EQ(d.at(), "ProcedureConfirmed");  // auto search, default flag: nothing to send
  EXPECT_NE(d.arg("NotifyOperator", "reason").find("nothing to issue"), std::string::npos);
  d.on("ActionsChosen", subject({{"key.0.action", "recover"},
                                 {"key.0.search", "serial:1A2B"},
                                 {"key.1.action", "recover"},
                                 {"key.1.recovery", "1"},
                                 {"key.1.request", "yes"},
                                 {"key.2.action", "recover"},
                                 {"key.2.search", "id:4711"},
                                 {"key.2.request", "no"}}));
  ASSERT_EQ(d.at(), "KeysRequested");
  ASSERT_EQ(d.count("RequestKeyRecovery"), 2);
  EXPECT_EQ(d.data("key.0.request"), "yes");
  EXPECT_EQ(d.data("key.1.request"), "yes");
  EXPECT_EQ(d.data("key.2.request"), "no");
  EXPECT_EQ(d.last()[0].fields.at("search"), "serial:1A2B");
  EXPECT_EQ(d.last()[1].fields.at("scope"), "all");
  d.on("KeyRecovered", {{"entry", "1"},
                        {"recovered.0.key_ref", "rec:a"},
                        {"recovered.0.cert_serial", "0F"},
                        {"recovered.1.key_ref", "rec:b"}});
  EXPECT_EQ(d.at(), "KeysRequested");
  d.on("KeyRecovered", {{"entry", "0"}, {"recovered.0.key_ref", "rec:c"}});
  sign_and_issue(d, 3);
  EXPECT_EQ(d.at(), "WriteRequested");
}

void bad_actions_refused(Driver& d) {
  insert(d, 1, 1);
  d.on("ProcedureChosen", procedure("generated"));
  EXPECT_NE(d.refused("ActionsChosen", subject({{"key.0.action", "redo"}})).find("redo"),
            std::string::npos);
  EXPECT_FALSE(d.refused("ActionsChosen", subject({{"key.5.action", "add"}})).empty());
  d.on("ActionsChosen", subject({{"key.1.action", "recover"}}));  // no recovery procedure
  EXPECT_EQ(d.at(), "ProcedureConfirmed");
  EXPECT_NE(d.data("refusal").find("key recovery"), std::string::npos);
  d.on("ActionsChosen", {{"key.0.action", "add"}});  // no subject
  EXPECT_NE(d.data("refusal").find("subject"), std::string::npos);
}

void tc_card_redirected_to_update(Driver& d) {
  d.on("CardInserted", {{"workflow_id", kWf}, {"token_serial", kCard}, {"reader", "r0"}});
  d.on("CardContentsRead", {{"token_serial", kCard},
                            {"key.0.id", "01"},
                            {"key.0.cert_serial", "77"},
                            {"tc.present", "yes"},
                            {"tc.subject", "CN=Transport"}});
  EXPECT_EQ(d.at(), "RedirectedToUpdate");
  EXPECT_NE(d.arg("NotifyOperator", "reason").find("redo"), std::string::npos);
  d.on("CardRemoved");
  EXPECT_EQ(d.at(), "RedirectedToUpdate");
  EXPECT_FALSE(d.refused("ProcedureChosen", procedure("generated")).empty());
}

void card_removed_during_keygen_then_other_card_then_same(Driver& d) {
  insert(d, 1);
  d.on("ProcedureChosen", procedure("generated"));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  const Command keygen = d.command("GenerateKeyOnCard");
  d.on("CardRemoved", {{"reader", "r0"}});
  ASSERT_EQ(d.at(), "SuspendedAwaitingCard");
  EXPECT_EQ(d.data("resume_state"), "KeysRequested");
  EXPECT_EQ(d.arg("AskOperator", "token_serial"), kCard);
  EXPECT_FALSE(d.refused("KeyGenerated", {{"entry", "0"}, {"key_id", "x"}}).empty());
  d.on("CardInserted", {{"token_serial", "TOKEN-OTHER"}, {"reader", "r0"}});
  EXPECT_EQ(d.at(), "SuspendedAwaitingCard");
  ASSERT_EQ(d.last().size(), 1u);  // refused: nothing else, certainly no write
  EXPECT_EQ(d.last()[0].type, "RefuseCard");
  EXPECT_EQ(d.arg("RefuseCard", "token_serial"), "TOKEN-OTHER");
  d.on("CardInserted", {{"token_serial", kCard}, {"reader", "r1"}});
  ASSERT_EQ(d.at(), "KeysRequested");
  EXPECT_EQ(d.command("GenerateKeyOnCard"), keygen);  // same key id: the card finds its key
  d.on("KeyGenerated", {{"entry", "0"}, {"key_id", keygen.fields.at("key_id")}});
  sign_and_issue(d);
  EXPECT_EQ(d.arg("WriteKeysAndCertificates", "reader"), "r1");
  d.on("CardWritten");
  finish_generated_pin(d);
  d.on("PinDelivered", {{"pin_index", "0"}});
  EXPECT_EQ(d.at(), "Done");
  d.expect_replays();
}

void officer_pin_wrong_then_blocked(Driver& d) {
  insert(d, 1);
  d.on("ProcedureChosen", procedure("generated"));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  d.on("KeyGenerated", {{"entry", "0"}, {"key_id", wf::card_key_id(kWf, "entry/0")}});
  d.on("OfficerPinEntered", {{"pin_ref", "secret-store:o1"}});
  d.on("OfficerPinRejected", {{"tries_left", "2"}});
  ASSERT_EQ(d.at(), "SignaturePinAwaited");
  EXPECT_EQ(d.arg("AskOperator", "tries_left"), "2");
  d.on("OfficerPinEntered", {{"pin_ref", "secret-store:o2"}});
  EXPECT_EQ(d.arg("SignWithOfficer", "attempt"), "2");
  d.on("OfficerPinRejected", {{"tries_left", "0"}});
  ASSERT_EQ(d.at(), "RollbackRequested");  // a key is on the card: removed before failing
  EXPECT_EQ(d.arg("RollbackCard", "object.0"), "key:" + wf::card_key_id(kWf, "entry/0"));
  d.on("RollbackConfirmed");
  EXPECT_EQ(d.at(), "Failed");
  EXPECT_NE(d.data("reason").find("blocked"), std::string::npos);
}

void officer_blocked_nothing_on_card(Driver& d) {
  insert(d, 0, 1);
  d.on("ProcedureChosen", procedure("generated"));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  d.on("OfficerPinEntered", {{"pin_ref", "secret-store:o1"}});
  d.on("OfficerPinRejected",
       {{"tries_left", "0"}, {"reason", "the officer's credential refused the password"}});
  EXPECT_EQ(d.at(), "Failed");
  EXPECT_EQ(d.data("reason"), "the officer's credential refused the password");
}

void cm_unreachable_then_retry_same_transaction(Driver& d) {
  insert(d, 1, 0);
  d.on("ProcedureChosen", procedure("generated", {{"key_archiving", "yes"}}));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  const Command archive = d.command("RequestServerKeygenAndArchive");
  d.on("CmUnreachable", {{"reason", "connection refused"}});
  ASSERT_EQ(d.at(), "SuspendedAwaitingRetry");
  EXPECT_EQ(d.arg("AskOperator", "ask"), "retry");
  d.on("RetryRequested");
  ASSERT_EQ(d.at(), "KeysRequested");
  EXPECT_EQ(d.command("RequestServerKeygenAndArchive"), archive);
  d.on("ServerKeyArchived", {{"entry", "0"}, {"key_ref", "archive:k0"}});
  d.on("OfficerPinEntered", {{"pin_ref", "secret-store:o1"}});
  d.on("OfficerSigned", {{"signer_ref", "s1"}});
  const Command submit = d.command("SubmitToCm");
  d.on("CmUnreachable");
  // Card pulled while waiting: resumes at the submission when the card is back.
  d.on("CardRemoved");
  ASSERT_EQ(d.at(), "SuspendedAwaitingCard");
  EXPECT_EQ(d.data("resume_state"), "SubmittedToCm");
  d.on("CardInserted", {{"token_serial", kCard}});
  ASSERT_EQ(d.at(), "SubmittedToCm");
  EXPECT_EQ(d.command("SubmitToCm"), submit);
  d.on("CmUnreachable");
  d.on("RetryRequested");
  EXPECT_EQ(d.command("SubmitToCm"), submit);
  d.on("CertificatesIssued", {{"cert.0.serial", "AA"}, {"cert.0.ref", "c:AA"}});
  EXPECT_EQ(d.at(), "WriteRequested");
}

void cm_refuses_submission(Driver& d) {
  insert(d, 1);
  d.on("ProcedureChosen", procedure("generated"));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  d.on("KeyGenerated", {{"entry", "0"}, {"key_id", wf::card_key_id(kWf, "entry/0")}});
  d.on("OfficerPinEntered", {{"pin_ref", "r"}});
  d.on("OfficerSigned", {{"signer_ref", "s"}});
  d.on("CmRefused", {{"reason", "officer lacks role Issue certificate"}});
  ASSERT_EQ(d.at(), "RollbackRequested");
  d.on("RollbackConfirmed");
  EXPECT_EQ(d.at(), "Failed");
  EXPECT_NE(d.data("reason").find("Issue certificate"), std::string::npos);
}

void cm_refuses_with_nothing_on_card(Driver& d) {
  insert(d, 1);
  d.on("ProcedureChosen", procedure("generated", {{"recovery.0.scope", "all"}}));
  d.on("ActionsChosen", subject({{"key.0.action", "recover"}}));
  d.on("CmRefused", {{"reason", "no archived key matches"}});
  EXPECT_EQ(d.at(), "Failed");
  EXPECT_EQ(d.arg("NotifyOperator", "reason"),
            "the CM host refused the request: no archived key matches");
  d.on("CardRemoved");
  EXPECT_EQ(d.at(), "Failed");
}

void cm_refuses_after_certify(Driver& d) {
  insert(d, 0, 1);
  d.on("ProcedureChosen", procedure("generated"));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  d.on("OfficerPinEntered", {{"pin_ref", "r"}});
  d.on("OfficerSigned", {{"signer_ref", "s"}});
  d.on("CmRefused", {{"reason", "subject refused"}});
  EXPECT_EQ(d.at(), "Failed");
}

void card_full_during_keygen(Driver& d) {
  insert(d, 1);
  d.on("ProcedureChosen", procedure("generated"));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  d.on("CardFull", {{"reason", "CKR_DEVICE_MEMORY"}});
  ASSERT_EQ(d.at(), "RollbackRequested");
  d.on("RollbackConfirmed");
  EXPECT_EQ(d.at(), "Failed");
  EXPECT_NE(d.data("reason").find("full"), std::string::npos);
}

void card_full_at_write(Driver& d) {
  insert(d, 0, 1);
  d.on("ProcedureChosen", procedure("generated"));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  sign_and_issue(d);
  d.on("CardFull");
  ASSERT_EQ(d.at(), "RollbackRequested");
  EXPECT_EQ(d.arg("RollbackCard", "object.0"), "cert:5E0");
}

void algorithm_unsupported(Driver& d) {
  insert(d, 1);
  d.on("ProcedureChosen", procedure("generated"));
  d.on("ActionsChosen",
       subject({{"key.0.action", "add"}, {"key.0.algorithm", "EC:brainpoolP512r1"}}));
  EXPECT_EQ(d.arg("GenerateKeyOnCard", "algorithm"), "EC:brainpoolP512r1");
  d.on("AlgorithmUnsupported", {{"entry", "0"}, {"algorithm", "EC:brainpoolP512r1"}});
  ASSERT_EQ(d.at(), "RollbackRequested");
  d.on("RollbackConfirmed");
  EXPECT_EQ(d.at(), "Failed");
  EXPECT_NE(d.data("reason").find("brainpoolP512r1"), std::string::npos);
}

void cancel_after_write_rolls_back(Driver& d) {
  insert(d, 1);
  d.on("ProcedureChosen", procedure("entered"));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  d.on("KeyGenerated", {{"entry", "0"}, {"key_id", wf::card_key_id(kWf, "entry/0")}});
  sign_and_issue(d);
  d.on("CardWritten");
  ASSERT_EQ(d.at(), "PinEntryAwaited");
  d.on("CancelRequested", {{"reason", "wrong person"}});
  ASSERT_EQ(d.at(), "RollbackRequested");
  const Command rollback = d.command("RollbackCard");
  EXPECT_EQ(wf::get(rollback.fields, "object.0"), "key:" + wf::card_key_id(kWf, "entry/0"));
  EXPECT_EQ(wf::get(rollback.fields, "object.1"), "cert:5E0");
  EXPECT_EQ(wf::get(rollback.fields, "object.2"), "");
  EXPECT_EQ(d.arg("RevokeIssuedCertificates", "serial.0"), "5E0");
  d.on("CancelRequested");  // already rolling back
  EXPECT_EQ(d.at(), "RollbackRequested");
  d.on("CardRemoved");
  d.on("CardInserted", {{"token_serial", kCard}});
  ASSERT_EQ(d.at(), "RollbackRequested");
  EXPECT_EQ(d.command("RollbackCard"), rollback);
  d.on("RollbackConfirmed");
  EXPECT_EQ(d.at(), "Cancelled");
  EXPECT_NE(d.data("reason").find("wrong person"), std::string::npos);
  d.expect_replays();
}

void cancel_while_suspended(Driver& d) {
  insert(d, 1);
  d.on("ProcedureChosen", procedure("generated"));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  d.on("CardRemoved");
  d.on("CancelRequested");
  ASSERT_EQ(d.at(), "SuspendedAwaitingCard");  // the rollback needs the card
  EXPECT_EQ(d.data("resume_state"), "RollbackRequested");
  d.on("CardInserted", {{"token_serial", kCard}});
  ASSERT_EQ(d.at(), "RollbackRequested");
  d.on("RollbackConfirmed");
  EXPECT_EQ(d.at(), "Cancelled");
}

void cancel_early(Driver& d) {
  insert(d, 1);
  d.on("CancelRequested");
  EXPECT_EQ(d.at(), "Cancelled");
  EXPECT_TRUE(d.last().empty());
  d.on("CardRemoved");
  EXPECT_EQ(d.at(), "Cancelled");
}

void two_keys_on_card_mixed_with_archive_then_cm_refuses(Driver& d) {
  insert(d, 3);
  d.on("ProcedureChosen", procedure("generated", {{"key_archiving", "no"}}));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}, {"key.1.action", "add"}}));
  ASSERT_EQ(d.count("GenerateKeyOnCard"), 2);
  d.on("KeyGenerated", {{"entry", "1"}, {"key_id", wf::card_key_id(kWf, "entry/1")}});
  EXPECT_EQ(d.at(), "KeysRequested");
  EXPECT_FALSE(d.refused("KeyGenerated", {{"entry", "0"}, {"key_id", "ffff"}}).empty());
  EXPECT_FALSE(d.refused("ServerKeyArchived", {{"entry", "0"}, {"key_ref", "x"}}).empty());
  d.on("CmRefused", {{"reason", "procedure disabled"}});
  ASSERT_EQ(d.at(), "RollbackRequested");
  EXPECT_EQ(d.arg("RollbackCard", "object.1"), "key:" + wf::card_key_id(kWf, "entry/1"));
}

// After replacing CA certificates, each PIN mode starts where it should.
void ca_replaced_then(Driver& d, const std::string& delivery, const std::string& expect) {
  insert(d, 0, 1);
  d.on("ProcedureChosen", procedure(delivery, {{"replace_ca", "yes"}}));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  sign_and_issue(d, 1, {{"ca_cert.0.ref", "ca:root"}, {"ca_cert.1.ref", "ca:sub"}});
  d.on("CardWritten");
  ASSERT_EQ(d.at(), "CaCertsReplaceRequested");
  EXPECT_EQ(d.arg("ReplaceCaCertificates", "ca_cert.1.ref"), "ca:sub");
  d.on("CaCertificatesReplaced");
  EXPECT_EQ(d.at(), expect);
}
void ca_then_entered(Driver& d) { ca_replaced_then(d, "entered", "PinEntryAwaited"); }
void ca_then_generated(Driver& d) { ca_replaced_then(d, "generated", "PinGenerationRequested"); }
void ca_then_letter(Driver& d) { ca_replaced_then(d, "letter", "PinLetterIdAwaited"); }

void mailer_without_ca(Driver& d) {
  insert(d, 0, 1);
  d.on("ProcedureChosen", procedure("mailer", {{"operator_pin", "required"}}));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  // The CM database holds the operator PIN: not asked.
  sign_and_issue(d, 1, {{"operator_pin_ref", "cm:op-pin"}});
  ASSERT_EQ(d.at(), "WriteRequested");
  d.on("CardWritten");
  EXPECT_EQ(d.at(), "PinMailerAddressAwaited");
}

void cm_unreachable_with_key_on_card(Driver& d) {
  insert(d, 1);
  d.on("ProcedureChosen", procedure("generated"));
  d.on("ActionsChosen", subject({{"key.0.action", "add"}}));
  d.on("KeyGenerated", {{"entry", "0"}, {"key_id", wf::card_key_id(kWf, "entry/0")}});
  d.on("OfficerPinEntered", {{"pin_ref", "r"}});
  d.on("OfficerSigned", {{"signer_ref", "s"}});
  d.on("CmUnreachable");
  ASSERT_EQ(d.at(), "SuspendedAwaitingRetry");
  d.on("CancelRequested");
  EXPECT_EQ(d.at(), "RollbackRequested");
}

constexpr harness::NamedScenario kScenarios[] = {
    {"TwoKeysOnCardThenCmRefuses", two_keys_on_card_mixed_with_archive_then_cm_refuses},
    {"CaReplacedThenEnteredPin", ca_then_entered},
    {"CaReplacedThenGeneratedPin", ca_then_generated},
    {"CaReplacedThenLetterPin", ca_then_letter},
    {"MailerWithOperatorPinFromCm", mailer_without_ca},
    {"CmUnreachableWithKeyOnCardCancelled", cm_unreachable_with_key_on_card},
    {"IssueBlankEntry", issue_blank_entry},
    {"CertifyHeldKeyWithEnteredPins", certify_held_key_with_entered_pins},
    {"EnteredPinCancelledThenSecondEntered", entered_pin_cancelled_then_second_entered},
    {"GenerateAndArchive", generate_and_archive_with_operator_pin_ca_and_mailer},
    {"GeneratedPinAndPuk", generated_pin_and_puk},
    {"RecoverLastDefaultRequest", recover_last_default_request_with_letters},
    {"PinAndPukFromOneLetter", pin_and_puk_from_one_letter},
    {"OnePinLetterWithoutPuk", one_pin_letter_without_puk},
    {"RecoverWithSeveralProcedures", recover_with_several_procedures},
    {"BadActionsRefused", bad_actions_refused},
    {"TcCardRedirectedToUpdate", tc_card_redirected_to_update},
    {"CardRemovedDuringKeygen", card_removed_during_keygen_then_other_card_then_same},
    {"OfficerPinWrongThenBlocked", officer_pin_wrong_then_blocked},
    {"OfficerBlockedNothingOnCard", officer_blocked_nothing_on_card},
    {"CmUnreachableThenRetry", cm_unreachable_then_retry_same_transaction},
    {"CmRefusesSubmission", cm_refuses_submission},
    {"CmRefusesWithNothingOnCard", cm_refuses_with_nothing_on_card},
    {"CmRefusesAfterCertify", cm_refuses_after_certify},
    {"CardFullDuringKeygen", card_full_during_keygen},
    {"CardFullAtWrite", card_full_at_write},
    {"AlgorithmUnsupported", algorithm_unsupported},
    {"CancelAfterWriteRollsBack", cancel_after_write_rolls_back},
    {"CancelWhileSuspended", cancel_while_suspended},
    {"CancelEarly", cancel_early},
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

class IssueCardScenario : public ::testing::TestWithParam<harness::NamedScenario> {};
TEST_P(IssueCardScenario, Runs) {
  Driver d(M());
  GetParam().run(d);
  EXPECT_FALSE(d.events().empty());
}
INSTANTIATE_TEST_SUITE_P(Paths, IssueCardScenario, ::testing::ValuesIn(kScenarios),
                         [](const auto& info) { return std::string(info.param.name); });

class IssueCardRow : public ::testing::TestWithParam<std::size_t> {};
TEST_P(IssueCardRow, TakenAndDeterministic) {
  static const Log log = all_steps();
  EXPECT_NO_FATAL_FAILURE(harness::check_row(M(), log, GetParam()));
}
INSTANTIATE_TEST_SUITE_P(Rows, IssueCardRow, ::testing::Range<std::size_t>(0, M().rows.size()),
                         [](const auto& info) { return harness::row_test_name(M(), info.param); });

TEST(IssueCard, ValidAndRegistered) {
  auto report = validate(M());
  EXPECT_TRUE(report.ok) << (report.problems.empty() ? "" : report.problems.front());
  EXPECT_EQ(find_machine("issue-card"), &M());
}

TEST(IssueCard, EveryRowCovered) {
  EXPECT_EQ(harness::uncovered_rows(M(), all_steps()), "") << "rows never exercised";
}

TEST(IssueCard, NoFieldCarriesAClearPin) {
  EXPECT_EQ(harness::clear_pin_fields(all_steps()), "") << "fields that would carry a clear PIN";
}

TEST(IssueCard, DiagramMatchesGoldenAndHeader) {
  EXPECT_EQ(harness::golden_mismatch(M()), "");
  EXPECT_EQ(harness::header_diagram_mismatch(M(), "issue_card.hpp"), "");
}

TEST(IssueCard, DerivedIdsAreStableAndDistinct) {
  EXPECT_EQ(wf::transaction_id(kWf, "submit"), wf::transaction_id(kWf, "submit"));
  EXPECT_NE(wf::transaction_id(kWf, "submit"), wf::transaction_id("wf-issue-0002", "submit"));
  EXPECT_NE(wf::card_key_id(kWf, "entry/0"), wf::card_key_id(kWf, "entry/1"));
  EXPECT_EQ(wf::transaction_id(kWf, "submit").size(), 32u);
}

}  // namespace
}  // namespace persoflow::machines
