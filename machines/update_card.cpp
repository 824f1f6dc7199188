// The update-card machine (update_card.hpp): new certificates for the keys a personalised card
// holds, the transport-certificate (TC) rules, CA certificates and the operator PIN.
// Pure: the table is constexpr data, the handlers are functions of (state, event) only.
#include "persoflow/machines/update_card.hpp"

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
  PF_CHECK(false, "update-card has no PIN delivery");
  return Transition{s, {}};
}
constexpr wf::Kit kKit{pending, no_pin_flow, true};

std::string wf_id(const State& s) { return get(s.data, "workflow_id"); }
int entries(const State& s) { return wf::list_size(s.data, "key"); }
std::string action(const State& s, int i) { return get(s.data, item("key", i, "action"), "blank"); }
bool tc_present(const State& s) { return wf::is_yes(s.data, "tc.present"); }

// ----- Commands of each state (on entry and on resume) -----

std::vector<Command> pending(const State& s) {
  const std::string& n = s.name;
  const Fields& d = s.data;
  if (n == "ContentsReadRequested") {
    return {wf::command("ReadCardContents",
                        {{"reader", get(d, "reader")}, {"token_serial", get(d, "token_serial")}})};
  }
  if (n == "ContentsConfirmed") return {wf::command("AskOperator", {{"ask", "procedure"}})};
  if (n == "ProcedureConfirmed") {
    Fields f{{"ask", "key_actions"}};
    if (tc_present(s)) {
      f["note"] = "the card holds a transport certificate: redo its key; add is refused";
    }
    return {wf::command("AskOperator", std::move(f))};
  }
  if (n == "TcValidationRequested") {
    Fields f{{"token_serial", get(d, "token_serial")},
             {"tc_serial", get(d, "tc.serial")},
             {"tc_issuer", get(d, "tc.issuer")}};
    wf::copy_prefixed(d, "tc_trusted_issuer.", f, "trusted_issuer.");
    return {wf::command("ValidateTransportCertificate", std::move(f))};
  }
  if (n == "SubmittedToCm") {
    Fields f;
    wf::copy_prefixed(d, "subject.", f, "subject.");
    f["transaction_id"] = wf::transaction_id(wf_id(s), "submit");
    f["procedure"] = get(d, "procedure");
    f["message"] = "cr";
    f["signer_ref"] = get(d, "officer.signer_ref");
    f["token_serial"] = get(d, "token_serial");
    int r = 0;
    for (int i = 0; i < entries(s); ++i) {
      const std::string a = action(s, i);
      if (a == "blank") continue;
      f[item("request", r, "entry")] = std::to_string(i);
      f[item("request", r, "kind")] = a;
      f[item("request", r, "key_id")] = get(d, item("key", i, "id"));
      if (a == "redo") f[item("request", r, "replaces")] = get(d, item("key", i, "cert_serial"));
      ++r;
    }
    return {wf::command("SubmitToCm", std::move(f))};
  }
  if (n == "CardPinAwaited") {
    return {wf::command("AskOperator",
                        {{"ask", "card_pin"}, {"pin_index", get(d, "card_pin.current", "0")}})};
  }
  if (n == "OperatorPinAwaited") return {wf::command("AskOperator", {{"ask", "operator_pin"}})};
  if (n == "WriteRequested") {
    Fields f{{"token_serial", get(d, "token_serial")}, {"reader", get(d, "reader")}};
    wf::copy_prefixed(d, "cert.", f, "cert.");
    wf::copy_prefixed(d, "write.", f, "object.");
    wf::copy_prefixed(d, "remove.", f, "remove.");
    wf::copy_prefixed(d, "card_pin.", f, "card_pin.");
    f.erase("card_pin.current");
    if (has(d, "operator_pin_ref")) f["operator_pin_ref"] = get(d, "operator_pin_ref");
    return {wf::command("WriteKeysAndCertificates", std::move(f))};
  }
  if (n == "CaCertsReplaceRequested") {
    Fields f{{"token_serial", get(d, "token_serial")}};
    wf::copy_prefixed(d, "ca_cert.", f, "ca_cert.");
    wf::copy_prefixed(d, "card_pin.", f, "card_pin.");
    f.erase("card_pin.current");
    if (has(d, "operator_pin_ref")) f["operator_pin_ref"] = get(d, "operator_pin_ref");
    return {wf::command("ReplaceCaCertificates", std::move(f))};
  }
  return wf::common_pending(s);
}

// ----- Handlers -----

Transition refuse(const State& from, const std::string& reason) {
  State to = from;
  to.data["refusal"] = reason;
  return Transition{std::move(to), {wf::command("NotifyOperator", {{"reason", reason}})}};
}

Result<Transition> on_card_inserted(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(std::string id, wf::need(e, "workflow_id"));
  PF_ASSIGN_OR_RETURN(std::string serial, wf::need(e, "token_serial"));
  State to{"ContentsReadRequested", from.data};
  to.data["workflow_id"] = id;
  to.data["token_serial"] = serial;
  to.data["reader"] = get(e.fields, "reader");
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_contents_read(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(std::string serial, wf::need(e, "token_serial"));
  if (serial != get(from.data, "token_serial")) {
    return wf::invalid("CardContentsRead is for card " + serial + ", not the workflow's card " +
                       get(from.data, "token_serial"));
  }
  State to{"ContentsConfirmed", from.data};
  wf::copy_prefixed(e.fields, "key.", to.data, "key.");
  wf::copy_prefixed(e.fields, "tc.", to.data, "tc.");
  to.data["tc.present"] = wf::is_yes(e.fields, "tc.present") ? "yes" : "no";
  to.data["card_pin.count"] = get(e.fields, "pin_count", "1");
  if (entries(to) == 0) return wf::invalid("CardContentsRead lists no key (key.0.id)");
  if (tc_present(to)) {
    PF_ASSIGN_OR_RETURN(int k, wf::need_int(e, "tc.key", 0, entries(to) - 1));
    PF_RETURN_IF_ERROR(wf::need(e, "tc.serial").status());
    // The TC is the certificate of that key.
    to.data[item("key", k, "cert_serial")] = get(e.fields, "tc.serial");
  }
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_procedure_chosen(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(std::string procedure, wf::need(e, "procedure"));
  PF_ASSIGN_OR_RETURN(std::string op_pin,
                      wf::need_one_of(e, "operator_pin", {"none", "required"}, "none"));
  if (tc_present(from) && wf::list_size(e.fields, "tc_trusted_issuer") == 0) {
    return refuse(from, "procedure " + procedure + " has no transport-certificate controls " +
                            "(trusted TC issuers): choose one that verifies the card's TC");
  }
  State to{"ProcedureConfirmed", from.data};
  to.data.erase("refusal");
  to.data["procedure"] = procedure;
  to.data["operator_pin"] = op_pin;
  to.data["replace_ca"] = get(e.fields, "replace_ca", "no");
  wf::erase_prefixed(to.data, "tc_trusted_issuer.");
  wf::copy_prefixed(e.fields, "tc_trusted_issuer.", to.data, "tc_trusted_issuer.");
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_actions_chosen(const State& from, const Event& e) {
  const int n = entries(from);
  PF_RETURN_IF_ERROR(wf::check_entries(e, "key", n));
  if (!wf::any_prefixed(e.fields, "subject.")) {
    return refuse(from, "enter the subject fields (subject.*) of the certificate");
  }
  State to{"", from.data};
  to.data.erase("refusal");
  wf::erase_prefixed(to.data, "subject.");
  wf::copy_prefixed(e.fields, "subject.", to.data, "subject.");
  const int tc_key = tc_present(from) ? wf::get_int(from.data, "tc.key", -1) : -1;
  int work = 0;
  for (int i = 0; i < n; ++i) {
    const std::string a = get(e.fields, item("key", i, "action"), "blank");
    const std::string entry = "key " + std::to_string(i);
    if (a != "blank" && a != "issue" && a != "redo" && a != "add") {
      return wf::invalid("ActionsChosen: key." + std::to_string(i) +
                         ".action must be blank, issue, redo or add, not '" + a + "'");
    }
    if (a != "blank" && get(from.data, item("key", i, "id")).empty()) {
      return refuse(from, entry + " holds no key: update acts on the card's keys");
    }
    if (a == "add" && tc_key >= 0) {
      return refuse(from, entry + ": add is refused on a card holding a transport certificate; " +
                              "it would keep the TC on the card. Use redo on key " +
                              std::to_string(tc_key));
    }
    if (a == "redo" && get(from.data, item("key", i, "cert_serial")).empty()) {
      return refuse(from, entry + " holds no certificate to redo: use issue or add");
    }
    if (i == tc_key && a != "redo") {
      return refuse(from, entry + " holds the transport certificate: its action must be redo");
    }
    to.data[item("key", i, "action")] = a;
    if (a != "blank") ++work;
  }
  if (work == 0) return refuse(from, "nothing to update: choose issue, redo or add for a key");
  if (tc_key >= 0) {
    // Checked before anything is written: an issuer the procedure does not trust ends here.
    const std::string issuer = get(from.data, "tc.issuer");
    bool trusted = false;
    for (const std::string& t : wf::values(from.data, "tc_trusted_issuer")) trusted |= t == issuer;
    if (!trusted) {
      return wf::fail(kKit, to,
                      "the transport certificate's issuer '" + issuer + "' is not trusted by " +
                          "procedure " + get(from.data, "procedure") + ": nothing was written");
    }
    to.name = "TcValidationRequested";
    return wf::enter(kKit, std::move(to));
  }
  to.name = "SignaturePinAwaited";
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_tc_validated(const State& from, const Event&) {
  State to{"SignaturePinAwaited", from.data};
  to.data["tc.validated"] = "yes";
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_tc_rejected(const State& from, const Event& e) {
  PF_CHECK(wf::list_size(from.data, "object") == 0, "TC validated before any write");
  return wf::fail(kKit, from,
                  "the transport certificate is not authentic: " +
                      get(e.fields, "reason", "its signature does not verify") +
                      "; nothing was written");
}

Result<Transition> on_officer_signed(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(std::string ref, wf::need(e, "signer_ref"));
  State to{"SubmittedToCm", from.data};
  to.data["officer.signer_ref"] = ref;
  to.data.erase("officer.tries_left");
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_certificates_issued(const State& from, const Event& e) {
  const int n = wf::list_size(e.fields, "cert");
  if (n == 0) return wf::invalid("CertificatesIssued lists no certificate (cert.0.serial)");
  State to{"", from.data};
  wf::erase_prefixed(to.data, "cert.");
  wf::erase_prefixed(to.data, "ca_cert.");
  wf::copy_prefixed(e.fields, "cert.", to.data, "cert.");
  wf::copy_prefixed(e.fields, "ca_cert.", to.data, "ca_cert.");
  bool write = false;
  for (int k = 0; k < n; ++k) {
    Event one{e.type,
              {{"serial", get(e.fields, item("cert", k, "serial"))},
               {"entry", get(e.fields, item("cert", k, "entry"))}}};
    PF_ASSIGN_OR_RETURN(std::string serial, wf::need(one, "serial"));
    PF_ASSIGN_OR_RETURN(int i, wf::need_int(one, "entry", 0, entries(from) - 1));
    wf::append_unique(to.data, "issued", serial);
    const std::string a = action(from, i);
    if (a == "blank") {
      return wf::invalid("CertificatesIssued: certificate " + serial + " for key " +
                         std::to_string(i) + ", which was not updated");
    }
    if (a == "issue") continue;  // not stored on the card
    write = true;
    wf::append_unique(to.data, "write", "cert:" + serial);
    if (a == "redo") {
      wf::append_unique(to.data, "remove", "cert:" + get(from.data, item("key", i, "cert_serial")));
    }
  }
  if (has(e.fields, "operator_pin_ref")) {
    to.data["operator_pin_ref"] = get(e.fields, "operator_pin_ref");
  }
  const bool ca = wf::is_yes(to.data, "replace_ca") && wf::list_size(to.data, "ca_cert") > 0;
  if (!write && !ca) {
    to.name = std::string(wf::kDone);  // only certificates that are not stored on the card
    return Transition{std::move(to), {}};
  }
  to.name = "CardPinAwaited";
  to.data["card_pin.current"] = "0";
  return wf::enter(kKit, std::move(to));
}

Transition to_write(State to) {
  for (const std::string& obj : wf::values(to.data, "write")) {
    wf::append_unique(to.data, "object", obj);
  }
  if (wf::is_yes(to.data, "replace_ca")) {
    for (int m = 0; m < wf::list_size(to.data, "ca_cert"); ++m) {
      wf::append_unique(to.data, "object", "cacert:" + get(to.data, item("ca_cert", m, "ref")));
    }
  }
  // Only certificates kept off the card (issue): the CA certificates are all there is to write.
  to.name = wf::list_size(to.data, "write") == 0 ? "CaCertsReplaceRequested" : "WriteRequested";
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_card_pin_entered(const State& from, const Event& e) {
  const int current = wf::get_int(from.data, "card_pin.current", 0);
  PF_ASSIGN_OR_RETURN(int i, wf::need_int(e, "pin_index", 0, 1));
  if (i != current) {
    return wf::invalid("CardPinEntered for PIN " + std::to_string(i) + " while PIN " +
                       std::to_string(current) + " is asked");
  }
  PF_ASSIGN_OR_RETURN(std::string ref, wf::need(e, "pin_ref"));
  State to = from;
  to.data[item("card_pin", i, "ref")] = ref;
  if (i + 1 < wf::get_int(from.data, "card_pin.count", 1)) {
    to.data["card_pin.current"] = std::to_string(i + 1);
    return wf::enter(kKit, std::move(to));  // the card has two PINs
  }
  if (get(to.data, "operator_pin") == "required" && !has(to.data, "operator_pin_ref")) {
    to.name = "OperatorPinAwaited";
    return wf::enter(kKit, std::move(to));
  }
  return to_write(std::move(to));
}

Result<Transition> on_operator_pin_entered(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(std::string ref, wf::need(e, "pin_ref"));
  State to = from;
  to.data["operator_pin_ref"] = ref;
  return to_write(std::move(to));
}

Result<Transition> on_card_pin_rejected(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(int tries_left, wf::need_int(e, "tries_left", 0, 99));
  if (tries_left == 0) {
    return wf::fail(kKit, from,
                    "the card's PIN is blocked (wrong too often): unblock it with "
                    "the PUK and update again");
  }
  State to{"CardPinAwaited", from.data};
  // The card refused the login: nothing of this write reached it.
  wf::erase_prefixed(to.data, "object.");
  wf::erase_prefixed(to.data, "card_pin.0.");
  wf::erase_prefixed(to.data, "card_pin.1.");
  to.data["card_pin.current"] = "0";
  to.data["card_pin.tries_left"] = std::to_string(tries_left);
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_card_written(const State& from, const Event&) {
  State to = from;
  to.data["written"] = "yes";
  if (wf::is_yes(to.data, "replace_ca") && wf::list_size(to.data, "ca_cert") > 0) {
    to.name = "CaCertsReplaceRequested";
    return wf::enter(kKit, std::move(to));
  }
  to.name = std::string(wf::kDone);
  return Transition{std::move(to), {}};
}

Result<Transition> on_card_full(const State& from, const Event& e) {
  return wf::fail(kKit, from,
                  "the card is full" +
                      (has(e.fields, "reason") ? ": " + get(e.fields, "reason") : std::string()) +
                      "; remove certificates or use redo instead of add");
}

using Common = wf::Bound<kKit>;

// ----- The table -----

constexpr std::string_view kSuspCard = wf::kSuspendedAwaitingCard;
constexpr std::string_view kSuspRetry = wf::kSuspendedAwaitingRetry;
constexpr std::string_view kRollback = wf::kRollbackRequested;

constexpr Row kBaseRows[] = {
    {"Idle", "CardInserted", "ContentsReadRequested", on_card_inserted, "ReadCardContents"},
    {"ContentsReadRequested", "CardContentsRead", "ContentsConfirmed", on_contents_read,
     "keys, certificates, TC"},
    {"ContentsConfirmed", "ProcedureChosen", "ProcedureConfirmed", on_procedure_chosen},
    {"ContentsConfirmed", "ProcedureChosen", "ContentsConfirmed", on_procedure_chosen,
     "refused: TC card, no TC controls"},
    {"ProcedureConfirmed", "ActionsChosen", "TcValidationRequested", on_actions_chosen,
     "TC issuer trusted / ValidateTransportCertificate"},
    {"ProcedureConfirmed", "ActionsChosen", "SignaturePinAwaited", on_actions_chosen, "no TC"},
    {"ProcedureConfirmed", "ActionsChosen", "Failed", on_actions_chosen,
     "TC issuer not trusted, nothing written"},
    {"ProcedureConfirmed", "ActionsChosen", "ProcedureConfirmed", on_actions_chosen,
     "refused: add on TC card, redo without cert, ..."},
    {"TcValidationRequested", "TcValidated", "SignaturePinAwaited", on_tc_validated},
    {"TcValidationRequested", "TcRejected", "Failed", on_tc_rejected, "nothing written"},
    {"SignaturePinAwaited", "OfficerPinEntered", "SignatureRequested", Common::officer_pin_entered,
     "SignWithOfficer"},
    {"SignatureRequested", "OfficerSigned", "SubmittedToCm", on_officer_signed, "SubmitToCm"},
    {"SignatureRequested", "OfficerPinRejected", "SignaturePinAwaited",
     Common::officer_pin_rejected,
     "tries left"},
    {"SignatureRequested", "OfficerPinRejected", "Failed", Common::officer_pin_rejected, "blocked"},
    {"SubmittedToCm", "CertificatesIssued", "CardPinAwaited", on_certificates_issued,
     "something to write"},
    {"SubmittedToCm", "CertificatesIssued", "Done", on_certificates_issued,
     "issue only: not stored on card"},
    {"SubmittedToCm", "CmRefused", "Failed", Common::cm_refused},
    {"SubmittedToCm", "CmUnreachable", kSuspRetry, Common::cm_unreachable},
    {"CardPinAwaited", "CardPinEntered", "CardPinAwaited", on_card_pin_entered, "second PIN"},
    {"CardPinAwaited", "CardPinEntered", "OperatorPinAwaited", on_card_pin_entered,
     "operator PIN required, not in CM"},
    {"CardPinAwaited", "CardPinEntered", "WriteRequested", on_card_pin_entered,
     "WriteKeysAndCertificates"},
    {"CardPinAwaited", "CardPinEntered", "CaCertsReplaceRequested", on_card_pin_entered,
     "only CA certificates to write"},
    {"OperatorPinAwaited", "OperatorPinEntered", "WriteRequested", on_operator_pin_entered},
    {"OperatorPinAwaited", "OperatorPinEntered", "CaCertsReplaceRequested",
     on_operator_pin_entered, "only CA certificates to write"},
    {"WriteRequested", "CardPinRejected", "CardPinAwaited", on_card_pin_rejected, "tries left"},
    {"WriteRequested", "CardPinRejected", kRollback, on_card_pin_rejected, "blocked"},
    {"WriteRequested", "CardWritten", "CaCertsReplaceRequested", on_card_written,
     "replace CA certificates"},
    {"WriteRequested", "CardWritten", "Done", on_card_written},
    {"WriteRequested", "CardFull", kRollback, on_card_full},
    {"CaCertsReplaceRequested", "CaCertificatesReplaced", "Done", nullptr},
    {kSuspRetry, "RetryRequested", "SubmittedToCm", Common::retry_requested, "same transactionID"},
    {kRollback, "RollbackConfirmed", "Cancelled", Common::rollback_confirmed},
    {kRollback, "RollbackConfirmed", "Failed", Common::rollback_confirmed},
    {"Done", "CardRemoved", "Done", nullptr, "terminal absorbs"},
    {"Cancelled", "CardRemoved", "Cancelled", nullptr, "terminal absorbs"},
    {"Failed", "CardRemoved", "Failed", nullptr, "terminal absorbs"},
};

constexpr std::string_view kCardStates[] = {
    "ContentsReadRequested", "ContentsConfirmed",       "ProcedureConfirmed",
    "TcValidationRequested", "SignaturePinAwaited",     "SignatureRequested",
    "SubmittedToCm",         "CardPinAwaited",          "OperatorPinAwaited",
    "WriteRequested",        "CaCertsReplaceRequested", kRollback,
};
// Nothing is on the card before the write is requested.
constexpr std::string_view kCancelBefore[] = {"ContentsReadRequested", "ContentsConfirmed",
                                              "ProcedureConfirmed",    "TcValidationRequested",
                                              "SignaturePinAwaited",   "SignatureRequested",
                                              "SubmittedToCm",         "CardPinAwaited",
                                              "OperatorPinAwaited",    kSuspRetry};
constexpr std::string_view kCancelAfter[] = {"WriteRequested", "CaCertsReplaceRequested"};

constexpr std::size_t kRowCount = std::size(kBaseRows) + 2 * std::size(kCardStates) + 3 +
                                  std::size(kCancelBefore) + std::size(kCancelAfter) + 2;

constexpr std::array<Row, kRowCount> kRows = [] {
  std::array<Row, kRowCount> rows{};
  std::size_t n = 0;
  for (const Row& r : kBaseRows) rows[n++] = r;
  for (std::string_view s : kCardStates) {
    rows[n++] = Row{s, "CardRemoved", kSuspCard, Common::card_removed, "resume_state recorded"};
  }
  rows[n++] = Row{kSuspRetry, "CardRemoved", kSuspCard, Common::card_removed, "resume_state kept"};
  for (std::string_view s : kCardStates) {
    rows[n++] = Row{kSuspCard, "CardInserted", s, Common::card_reinserted, "same card, resume"};
  }
  rows[n++] = Row{kSuspCard, "CardInserted", kSuspCard,
                  Common::card_reinserted, "other card, RefuseCard"};
  rows[n++] = Row{kSuspCard, "CancelRequested", "Cancelled",
                  Common::cancel_requested, "nothing on card"};
  for (std::string_view s : kCancelBefore) {
    rows[n++] = Row{s, "CancelRequested", "Cancelled", Common::cancel_requested};
  }
  for (std::string_view s : kCancelAfter) {
    rows[n++] = Row{s, "CancelRequested", kRollback, Common::cancel_requested, "RollbackCard"};
  }
  rows[n++] = Row{kSuspCard, "CancelRequested", kSuspCard, Common::cancel_requested,
                  "rollback once the card is back"};
  rows[n++] = Row{kRollback, "CancelRequested", kRollback, nullptr, "already rolling back"};
  if (n != kRowCount) throw "row count";
  return rows;
}();

constexpr std::string_view kTerminal[] = {"Done", "Cancelled", "Failed"};

constexpr MachineDef kUpdateCard{
    "update-card",
    "new certificates for the keys of a personalised card: issue, redo (replaces a TC), add",
    "Idle", kTerminal, kRows};

}  // namespace

const MachineDef& update_card_machine() { return kUpdateCard; }

PF_REGISTER_MACHINE(update_card, kUpdateCard);

}  // namespace persoflow::machines
