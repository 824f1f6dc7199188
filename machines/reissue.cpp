// The reissue machine (reissue.hpp): a new certificate with a new key pair for a previous one,
// the key from a validated CSR or generated on the card, e-mail verification by polling, the
// certificate installed on the card, the previous certificate revoked. Pure: the table is
// constexpr data, handlers are functions of (state, event) only.
#include "persoflow/machines/reissue.hpp"

#include <algorithm>
#include <array>

#include "persoflow/machines/engine.hpp"
#include "persoflow/machines/workflow_support.hpp"

namespace persoflow::machines {
namespace {

using wf::get;
using wf::has;
using wf::item;

std::vector<Command> pending(const State& s);
Result<Transition> no_pin_flow(const State& s) {
  PF_CHECK(false, "reissue has no PIN delivery");
  return Transition{s, {}};
}
constexpr wf::Kit kKit{pending, no_pin_flow, true};

std::string wf_id(const State& s) { return get(s.data, "workflow_id"); }
bool on_card(const State& s) { return get(s.data, "method") == "card"; }

// kur where the old key can sign the request, otherwise p10cr for a CSR and cr for a key made
// on the card.
std::string message_type(const State& s) {
  if (wf::is_yes(s.data, "previous.key_usable")) return "kur";
  return on_card(s) ? "cr" : "p10cr";
}

// ----- Commands of each state (on entry and on resume) -----

std::vector<Command> pending(const State& s) {
  const std::string& n = s.name;
  const Fields& d = s.data;
  if (n == "PreviousSearchRequested") {
    return {wf::command("FindCertificate", {{"search", get(d, "search")}})};
  }
  if (n == "PreviousConfirmed" || n == "CsrRejected") {
    Fields f{{"ask", "key_method"}};
    wf::copy_prefixed(d, "allowed_key.", f, "allowed_key.");
    if (has(d, "csr_problem")) f["csr_problem"] = get(d, "csr_problem");
    return {wf::command("AskOperator", std::move(f))};
  }
  if (n == "CsrValidationRequested") {
    return {wf::command("ValidateCsr", {{"csr_ref", get(d, "csr_ref")}})};
  }
  if (n == "CardKeyRequested") {
    return {wf::command("GenerateKeyOnCard", {{"token_serial", get(d, "token_serial")},
                                              {"key_id", get(d, "key_id")},
                                              {"algorithm", get(d, "algorithm")}})};
  }
  if (n == "CsrBuildRequested") {
    Fields f{{"token_serial", get(d, "token_serial")}, {"key_id", get(d, "key_id")}};
    f["subject"] = get(d, "previous.subject");
    return {wf::command("BuildCsrOnCard", std::move(f))};
  }
  if (n == "SubmittedToCm") {
    Fields f{{"transaction_id", wf::transaction_id(wf_id(s), "submit")},
             {"procedure", get(d, "procedure")},
             {"message", message_type(s)},
             {"signer_ref", get(d, "officer.signer_ref")},
             {"csr_ref", get(d, "csr_ref")},
             {"previous_serial", get(d, "previous.serial")}};
    if (on_card(s)) {
      f["token_serial"] = get(d, "token_serial");
      f["key_id"] = get(d, "key_id");
    }
    if (message_type(s) == "kur") f["old_key_id"] = get(d, "previous.key_id");
    return {wf::command("SubmitToCm", std::move(f))};
  }
  if (n == "AwaitingEmailVerification") {
    return {wf::command("PollCm", {{"transaction_id", wf::transaction_id(wf_id(s), "submit")},
                                   {"poll", get(d, "polls", "1")},
                                   {"check_after", get(d, "check_after", "60")}})};
  }
  if (n == "InstallRequested") {
    return {wf::command("WriteCertificateToCard", {{"token_serial", get(d, "token_serial")},
                                                   {"key_id", get(d, "key_id")},
                                                   {"cert_ref", get(d, "cert.ref")},
                                                   {"serial", get(d, "cert.serial")}})};
  }
  if (n == "RevocationRequested") {
    return {wf::command("RevokeCertificate",
                        {{"serial", get(d, "previous.serial")},
                         {"reason", "superseded"},
                         {"transaction_id", wf::transaction_id(wf_id(s), "revoke")},
                         {"signer_ref", get(d, "officer.signer_ref")}})};
  }
  return wf::common_pending(s);
}

// ----- Handlers -----

Transition refuse(const State& from, const std::string& reason) {
  State to = from;
  to.data["refusal"] = reason;
  return Transition{std::move(to), {wf::command("NotifyOperator", {{"reason", reason}})}};
}

Result<Transition> on_started(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(std::string id, wf::need(e, "workflow_id"));
  PF_ASSIGN_OR_RETURN(std::string procedure, wf::need(e, "procedure"));
  PF_ASSIGN_OR_RETURN(std::string search, wf::need(e, "search"));
  if (search.rfind("subject:", 0) == 0) {
    return wf::invalid(
        "ReissueStarted: the previous certificate is found by serial:<hex> or "
        "id:<decimal>, not by subject");
  }
  PF_RETURN_IF_ERROR(wf::check_search(search, false).with_context("ReissueStarted"));
  PF_ASSIGN_OR_RETURN(std::string rule,
                      wf::need_one_of(e, "subject_rule", {"previous", "procedure"}, "previous"));
  if (wf::list_size(e.fields, "allowed_key") == 0) {
    return wf::invalid("ReissueStarted lists no allowed key (allowed_key.0 = e.g. RSA:3072)");
  }
  if (rule == "procedure") PF_RETURN_IF_ERROR(wf::need(e, "procedure_subject").status());
  State to{"PreviousSearchRequested", from.data};
  to.data["workflow_id"] = id;
  to.data["procedure"] = procedure;
  to.data["search"] = search;
  to.data["subject_rule"] = rule;
  if (rule == "procedure") to.data["procedure_subject"] = get(e.fields, "procedure_subject");
  to.data["email_verification"] = get(e.fields, "email_verification", "no");
  to.data["max_polls"] = std::to_string(wf::get_int(e.fields, "max_polls", 48));
  to.data["revoke_previous"] = get(e.fields, "revoke_previous", "no");
  wf::copy_prefixed(e.fields, "allowed_key.", to.data, "allowed_key.");
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_previous_found(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(std::string serial, wf::need(e, "serial"));
  PF_ASSIGN_OR_RETURN(std::string subject, wf::need(e, "subject"));
  State to{"PreviousConfirmed", from.data};
  to.data["previous.serial"] = serial;
  to.data["previous.subject"] = subject;
  to.data["previous.key_usable"] = get(e.fields, "old_key_usable", "no");
  if (has(e.fields, "old_key_id")) to.data["previous.key_id"] = get(e.fields, "old_key_id");
  if (has(e.fields, "token_serial")) to.data["token_serial"] = get(e.fields, "token_serial");
  if (wf::is_yes(to.data, "previous.key_usable") && !has(to.data, "previous.key_id")) {
    return wf::invalid("PreviousCertificateFound: old_key_usable=yes needs old_key_id");
  }
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_previous_not_found(const State& from, const Event&) {
  return wf::fail(kKit, from,
                  "no certificate found for " + get(from.data, "search") +
                      ": check the serial number (hexadecimal) or certificate ID "
                      "(decimal)");
}

bool allowed(const State& s, const std::string& key) {
  const std::vector<std::string> list = wf::values(s.data, "allowed_key");
  return std::find(list.begin(), list.end(), key) != list.end();
}

std::string allowed_list(const State& s) {
  std::string out;
  for (const std::string& k : wf::values(s.data, "allowed_key"))
    out += (out.empty() ? "" : ", ") + k;
  return out;
}

Result<Transition> on_key_method_chosen(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(std::string method, wf::need_one_of(e, "method", {"csr", "card"}));
  State to{"", from.data};
  to.data.erase("refusal");
  to.data["method"] = method;
  if (method == "csr") {
    PF_ASSIGN_OR_RETURN(std::string csr, wf::need(e, "csr_ref"));
    to.data["csr_ref"] = csr;
    to.name = "CsrValidationRequested";
    return wf::enter(kKit, std::move(to));
  }
  PF_ASSIGN_OR_RETURN(std::string algorithm, wf::need(e, "algorithm"));
  if (!allowed(from, algorithm)) {
    return refuse(from, "key " + algorithm + " is not allowed by procedure " +
                            get(from.data, "procedure") + " (allowed: " + allowed_list(from) + ")");
  }
  const std::string token = get(e.fields, "token_serial", get(from.data, "token_serial"));
  if (token.empty()) return refuse(from, "generating the key on a card needs the card: insert it");
  to.data["token_serial"] = token;
  to.data["algorithm"] = algorithm;
  to.data["key_id"] = wf::card_key_id(wf_id(from), "reissue");
  to.data.erase("csr_ref");
  to.data.erase("csr_problem");
  wf::append_unique(to.data, "object", "key:" + to.data["key_id"]);
  to.name = "CardKeyRequested";
  return wf::enter(kKit, std::move(to));
}

Transition csr_rejected(const State& from, const std::string& problem) {
  State to{"CsrRejected", from.data};
  to.data["csr_problem"] = problem;
  Transition t = wf::enter(kKit, std::move(to));
  t.commands.insert(t.commands.begin(),
                    wf::command("NotifyOperator", {{"reason", "the CSR is refused: " + problem}}));
  return t;
}

Result<Transition> on_csr_parsed(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(std::string key, wf::need(e, "key_algorithm"));
  PF_ASSIGN_OR_RETURN(std::string subject, wf::need(e, "subject"));
  PF_ASSIGN_OR_RETURN(std::string signature, wf::need_one_of(e, "signature", {"valid", "invalid"}));
  std::vector<std::string> problems;
  if (signature != "valid") {
    problems.push_back(
        "its signature does not verify with its own public key (altered or not "
        "signed by the key it carries)");
  }
  if (!allowed(from, key)) {
    problems.push_back("its key " + key + " is not allowed by procedure " +
                       get(from.data, "procedure") + " (allowed: " + allowed_list(from) + ")");
  }
  const bool by_previous = get(from.data, "subject_rule") == "previous";
  const std::string expected =
      by_previous ? get(from.data, "previous.subject") : get(from.data, "procedure_subject");
  if (subject != expected) {
    problems.push_back("its subject '" + subject + "' does not match " +
                       (by_previous ? "the previous certificate's" : "the procedure's") + " '" +
                       expected + "'");
  }
  if (!problems.empty()) {
    std::string all;
    for (const std::string& p : problems) all += (all.empty() ? "" : "; ") + p;
    return csr_rejected(from, all);
  }
  State to{"SignaturePinAwaited", from.data};
  to.data.erase("csr_problem");
  to.data["csr.key_algorithm"] = key;
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_csr_unparseable(const State& from, const Event& e) {
  return csr_rejected(from, "it does not parse as a PKCS#10 request (" +
                                get(e.fields, "reason", "not PEM or DER") + ")");
}

Result<Transition> on_key_generated(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(std::string key_id, wf::need(e, "key_id"));
  if (key_id != get(from.data, "key_id")) {
    return wf::invalid("KeyGenerated: the card reports key id " + key_id + ", expected " +
                       get(from.data, "key_id"));
  }
  State to{"CsrBuildRequested", from.data};
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_csr_built(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(std::string csr, wf::need(e, "csr_ref"));
  State to{"SignaturePinAwaited", from.data};
  to.data["csr_ref"] = csr;
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_card_failure(const State& from, const Event& e) {
  if (e.type == "CardFull") {
    return wf::fail(kKit, from, "the card is full; free space on it or use a CSR");
  }
  return wf::fail(kKit, from,
                  "the card does not support the key " +
                      get(e.fields, "algorithm", get(from.data, "algorithm")) +
                      "; choose another algorithm");
}

Result<Transition> on_officer_signed(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(std::string ref, wf::need(e, "signer_ref"));
  State to{"SubmittedToCm", from.data};
  to.data["officer.signer_ref"] = ref;
  to.data.erase("officer.tries_left");
  return wf::enter(kKit, std::move(to));
}

Transition after_issued(State to) {
  if (on_card(to)) {
    to.name = "InstallRequested";
    return wf::enter(kKit, std::move(to));
  }
  if (wf::is_yes(to.data, "revoke_previous")) {
    to.name = "RevocationRequested";
    return wf::enter(kKit, std::move(to));
  }
  to.name = std::string(wf::kDone);
  return Transition{std::move(to), {}};
}

Result<Transition> on_certificate_issued(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(std::string serial, wf::need(e, "serial"));
  PF_ASSIGN_OR_RETURN(std::string ref, wf::need(e, "ref"));
  State to = from;
  to.data["cert.serial"] = serial;
  to.data["cert.ref"] = ref;
  wf::append_unique(to.data, "issued", serial);
  if (on_card(to)) wf::append_unique(to.data, "object", "cert:" + serial);
  return after_issued(std::move(to));
}

Result<Transition> on_cm_waiting(const State& from, const Event& e) {
  const int polls =
      from.name == "AwaitingEmailVerification" ? wf::get_int(from.data, "polls", 1) + 1 : 1;
  if (polls > wf::get_int(from.data, "max_polls", 48)) {
    return wf::fail(kKit, from,
                    "the e-mail address was not verified within the " +
                        get(from.data, "max_polls") +
                        " polls the procedure allows; start the reissue again");
  }
  State to{"AwaitingEmailVerification", from.data};
  to.data["polls"] = std::to_string(polls);
  to.data["check_after"] = get(e.fields, "check_after", "60");
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_verification_expired(const State& from, const Event&) {
  return wf::fail(kKit, from,
                  "the e-mail verification expired at the CM host; start the "
                  "reissue again");
}

Result<Transition> on_installed(const State& from, const Event&) {
  State to = from;
  to.data["installed"] = "yes";
  if (wf::is_yes(to.data, "revoke_previous")) {
    to.name = "RevocationRequested";
    return wf::enter(kKit, std::move(to));
  }
  to.name = std::string(wf::kDone);
  return Transition{std::move(to), {}};
}

Result<Transition> on_previous_revoked(const State& from, const Event&) {
  State to{std::string(wf::kDone), from.data};
  to.data["previous.revoked"] = "yes";
  return Transition{std::move(to), {}};
}

Result<Transition> on_revocation_refused(const State& from, const Event& e) {
  State to{std::string(wf::kFailed), from.data};
  const std::string reason = "the new certificate " + get(from.data, "cert.serial") + " is issued" +
                             (on_card(from) ? " and installed" : "") +
                             ", but the CM host refused to revoke the previous certificate " +
                             get(from.data, "previous.serial") + ": " +
                             get(e.fields, "reason", "no reason given") + "; revoke it by hand";
  to.data["reason"] = reason;
  return Transition{std::move(to), {wf::command("NotifyOperator", {{"reason", reason}})}};
}

using Common = wf::Bound<kKit>;

// ----- The table -----

constexpr std::string_view kSuspCard = wf::kSuspendedAwaitingCard;
constexpr std::string_view kSuspRetry = wf::kSuspendedAwaitingRetry;
constexpr std::string_view kRollback = wf::kRollbackRequested;

constexpr Row kBaseRows[] = {
    {"Idle", "ReissueStarted", "PreviousSearchRequested", on_started, "FindCertificate"},
    {"PreviousSearchRequested", "PreviousCertificateFound", "PreviousConfirmed", on_previous_found},
    {"PreviousSearchRequested", "PreviousCertificateNotFound", "Failed", on_previous_not_found},
    {"PreviousSearchRequested", "CmUnreachable", kSuspRetry, Common::cm_unreachable},
    {"PreviousConfirmed", "KeyMethodChosen", "CsrValidationRequested", on_key_method_chosen,
     "CSR / ValidateCsr"},
    {"PreviousConfirmed", "KeyMethodChosen", "CardKeyRequested", on_key_method_chosen,
     "key on card / GenerateKeyOnCard"},
    {"PreviousConfirmed", "KeyMethodChosen", "PreviousConfirmed", on_key_method_chosen,
     "refused: algorithm not allowed"},
    {"CsrValidationRequested", "CsrParsed", "SignaturePinAwaited", on_csr_parsed,
     "signature, key, subject good"},
    {"CsrValidationRequested", "CsrParsed", "CsrRejected", on_csr_parsed, "names what is wrong"},
    {"CsrValidationRequested", "CsrUnparseable", "CsrRejected", on_csr_unparseable},
    {"CsrRejected", "KeyMethodChosen", "CsrValidationRequested", on_key_method_chosen,
     "another CSR"},
    {"CsrRejected", "KeyMethodChosen", "CardKeyRequested", on_key_method_chosen},
    {"CsrRejected", "KeyMethodChosen", "CsrRejected", on_key_method_chosen,
     "refused: algorithm not allowed"},
    {"CardKeyRequested", "KeyGenerated", "CsrBuildRequested", on_key_generated, "BuildCsrOnCard"},
    {"CardKeyRequested", "AlgorithmUnsupported", kRollback, on_card_failure},
    {"CardKeyRequested", "CardFull", kRollback, on_card_failure},
    {"CsrBuildRequested", "CsrBuiltOnCard", "SignaturePinAwaited", on_csr_built},
    {"SignaturePinAwaited", "OfficerPinEntered", "SignatureRequested", Common::officer_pin_entered,
     "SignWithOfficer"},
    {"SignatureRequested", "OfficerSigned", "SubmittedToCm", on_officer_signed,
     "SubmitToCm kur / cr / p10cr"},
    {"SignatureRequested", "OfficerPinRejected", "SignaturePinAwaited",
     Common::officer_pin_rejected,
     "tries left"},
    {"SignatureRequested", "OfficerPinRejected", kRollback, Common::officer_pin_rejected,
     "blocked, key on card"},
    {"SignatureRequested", "OfficerPinRejected", "Failed",
     Common::officer_pin_rejected, "blocked, CSR"},
    {"SubmittedToCm", "CertificateIssued", "InstallRequested", on_certificate_issued,
     "key on card / WriteCertificateToCard"},
    {"SubmittedToCm", "CertificateIssued", "RevocationRequested", on_certificate_issued,
     "revoke previous"},
    {"SubmittedToCm", "CertificateIssued", "Done", on_certificate_issued},
    {"SubmittedToCm", "CmWaiting", "AwaitingEmailVerification", on_cm_waiting,
     "e-mail verification / PollCm"},
    {"SubmittedToCm", "CmRefused", kRollback, Common::cm_refused, "key on card"},
    {"SubmittedToCm", "CmRefused", "Failed", Common::cm_refused, "CSR"},
    {"SubmittedToCm", "CmUnreachable", kSuspRetry, Common::cm_unreachable},
    {"AwaitingEmailVerification", "CmWaiting", "AwaitingEmailVerification", on_cm_waiting,
     "PollCm again"},
    {"AwaitingEmailVerification", "CmWaiting", kRollback, on_cm_waiting,
     "polls exhausted, key on card"},
    {"AwaitingEmailVerification", "CmWaiting", "Failed", on_cm_waiting, "polls exhausted"},
    {"AwaitingEmailVerification", "CertificateIssued", "InstallRequested", on_certificate_issued},
    {"AwaitingEmailVerification", "CertificateIssued", "RevocationRequested",
     on_certificate_issued},
    {"AwaitingEmailVerification", "CertificateIssued", "Done", on_certificate_issued},
    {"AwaitingEmailVerification", "VerificationExpired", kRollback, on_verification_expired,
     "key on card"},
    {"AwaitingEmailVerification", "VerificationExpired", "Failed", on_verification_expired},
    {"AwaitingEmailVerification", "CmRefused", kRollback, Common::cm_refused, "key on card"},
    {"AwaitingEmailVerification", "CmRefused", "Failed", Common::cm_refused, "CSR"},
    {"AwaitingEmailVerification", "CmUnreachable", kSuspRetry, Common::cm_unreachable},
    {"InstallRequested", "CertificateInstalled", "RevocationRequested", on_installed},
    {"InstallRequested", "CertificateInstalled", "Done", on_installed},
    {"InstallRequested", "CardFull", kRollback, on_card_failure},
    {"RevocationRequested", "PreviousRevoked", "Done", on_previous_revoked, "reason superseded"},
    {"RevocationRequested", "CmRefused", "Failed", on_revocation_refused, "new certificate kept"},
    {"RevocationRequested", "CmUnreachable", kSuspRetry, Common::cm_unreachable},
    {kSuspRetry, "RetryRequested", "PreviousSearchRequested", Common::retry_requested},
    {kSuspRetry, "RetryRequested", "SubmittedToCm", Common::retry_requested, "same transactionID"},
    {kSuspRetry, "RetryRequested", "AwaitingEmailVerification",
     Common::retry_requested, "poll again"},
    {kSuspRetry, "RetryRequested", "RevocationRequested",
     Common::retry_requested, "same transactionID"},
    {kRollback, "RollbackConfirmed", "Cancelled", Common::rollback_confirmed},
    {kRollback, "RollbackConfirmed", "Failed", Common::rollback_confirmed},
    {kRollback, "CancelRequested", kRollback, nullptr, "already rolling back"},
    // Acknowledgements of commands that only inform (NotifyOperator) or clean up after a cancel
    // (RevokeIssuedCertificates): recorded, nothing changes.
    {"PreviousConfirmed", "OperatorNotified", "PreviousConfirmed", nullptr, "notice shown"},
    {"CsrRejected", "OperatorNotified", "CsrRejected", nullptr, "notice shown"},
    {"CsrValidationRequested", "OperatorNotified", "CsrValidationRequested", nullptr,
     "notice shown"},
    {"CardKeyRequested", "OperatorNotified", "CardKeyRequested", nullptr, "notice shown"},
    {"Failed", "OperatorNotified", "Failed", nullptr, "notice shown"},
    {"Cancelled", "OperatorNotified", "Cancelled", nullptr, "notice shown"},
    {kRollback, "IssuedCertificatesRevoked", kRollback, nullptr, "revoked"},
    {"Cancelled", "IssuedCertificatesRevoked", "Cancelled", nullptr, "revoked"},
    {"Done", "CardRemoved", "Done", nullptr, "terminal absorbs"},
    {"Failed", "CardRemoved", "Failed", nullptr, "terminal absorbs"},
    {"Cancelled", "CardRemoved", "Cancelled", nullptr, "terminal absorbs"},
};

// States whose commands need the card (key generated on it).
constexpr std::string_view kCardStates[] = {"CardKeyRequested", "CsrBuildRequested",
                                            "InstallRequested", kRollback};
constexpr std::string_view kCancelBefore[] = {"PreviousSearchRequested", "PreviousConfirmed",
                                              "CsrValidationRequested", "CsrRejected"};
constexpr std::string_view kCancelMaybe[] = {"SignaturePinAwaited", "SignatureRequested",
                                             "SubmittedToCm", "AwaitingEmailVerification",
                                             kSuspRetry};
constexpr std::string_view kCancelAfter[] = {"CardKeyRequested", "CsrBuildRequested",
                                             "InstallRequested"};

constexpr std::size_t kRowCount = std::size(kBaseRows) + 2 * std::size(kCardStates) + 1 +
                                  std::size(kCancelBefore) + 2 * std::size(kCancelMaybe) +
                                  std::size(kCancelAfter) + 1;

constexpr std::array<Row, kRowCount> kRows = [] {
  std::array<Row, kRowCount> rows{};
  std::size_t n = 0;
  for (const Row& r : kBaseRows) rows[n++] = r;
  for (std::string_view s : kCardStates) {
    rows[n++] = Row{s, "CardRemoved", kSuspCard, Common::card_removed, "resume_state recorded"};
  }
  for (std::string_view s : kCardStates) {
    rows[n++] = Row{kSuspCard, "CardInserted", s, Common::card_reinserted, "same card, resume"};
  }
  rows[n++] = Row{kSuspCard, "CardInserted", kSuspCard,
                  Common::card_reinserted, "other card, RefuseCard"};
  for (std::string_view s : kCancelBefore) {
    rows[n++] = Row{s, "CancelRequested", "Cancelled", Common::cancel_requested};
  }
  for (std::string_view s : kCancelMaybe) {
    rows[n++] = Row{s, "CancelRequested", "Cancelled", Common::cancel_requested, "CSR"};
    rows[n++] = Row{s, "CancelRequested", kRollback, Common::cancel_requested, "key on card"};
  }
  for (std::string_view s : kCancelAfter) {
    rows[n++] = Row{s, "CancelRequested", kRollback, Common::cancel_requested, "RollbackCard"};
  }
  rows[n++] = Row{kSuspCard, "CancelRequested", kSuspCard, Common::cancel_requested,
                  "rollback once the card is back"};
  if (n != kRowCount) throw "row count";
  return rows;
}();

constexpr std::string_view kTerminal[] = {"Done", "Cancelled", "Failed"};

constexpr MachineDef kReissue{
    "reissue",
    "reissue a certificate with a new key (CSR or generated on the card), revoke the previous",
    "Idle", kTerminal, kRows};

}  // namespace

const MachineDef& reissue_machine() { return kReissue; }

PF_REGISTER_MACHINE(reissue, kReissue);

}  // namespace persoflow::machines
