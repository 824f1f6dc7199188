// The issue-card machine (issue_card.hpp): issuing certificates on a pre-personalised smart card.
// Pure: the table is constexpr data, the handlers are functions of (state, event) only.
#include "persoflow/machines/issue_card.hpp"

#include <array>

#include "persoflow/machines/engine.hpp"
#include "persoflow/machines/workflow_support.hpp"

namespace persoflow::machines {
namespace {

using wf::get;
using wf::has;
using wf::item;

std::vector<Command> pending(const State& s);
Result<Transition> after_pin_obtained(const State& s);
constexpr wf::Kit kKit{pending, after_pin_obtained, true};

std::string wf_id(const State& s) { return get(s.data, "workflow_id"); }
int entries(const State& s) { return wf::list_size(s.data, "key"); }
std::string op(const State& s, int i) { return get(s.data, item("key", i, "op")); }

Fields subject_of(const State& s) {
  Fields f;
  wf::copy_prefixed(s.data, "subject.", f, "subject.");
  return f;
}

// ----- Commands of each state (on entry and on resume) -----

std::vector<Command> keys_pending(const State& s) {
  std::vector<Command> out;
  for (int i = 0; i < entries(s); ++i) {
    if (get(s.data, item("key", i, "status")) != "requested") continue;
    const std::string kind = op(s, i);
    const std::string entry = std::to_string(i);
    if (kind == "generate") {
      out.push_back(wf::command("GenerateKeyOnCard",
                                {{"token_serial", get(s.data, "token_serial")},
                                 {"entry", entry},
                                 {"key_id", get(s.data, item("key", i, "id"))},
                                 {"algorithm", get(s.data, item("key", i, "algorithm"))}}));
    } else if (kind == "archive") {
      Fields f = subject_of(s);
      f["entry"] = entry;
      f["procedure"] = get(s.data, "procedure");
      f["algorithm"] = get(s.data, item("key", i, "algorithm"));
      f["transaction_id"] = wf::transaction_id(wf_id(s), "archive/" + entry);
      out.push_back(wf::command("RequestServerKeygenAndArchive", std::move(f)));
    } else if (kind == "recover") {
      const std::string search = get(s.data, item("key", i, "search"));
      Fields f;
      if (search == "auto") f = subject_of(s);  // the CM host searches by the subject fields
      const int r = wf::get_int(s.data, item("key", i, "recovery"), 0);
      f["entry"] = entry;
      f["procedure"] = get(s.data, "procedure");
      f["search"] = search;
      f["scope"] = get(s.data, item("recovery", r, "scope"), "last");
      f["reuse_certificate"] = get(s.data, item("recovery", r, "reuse_certificate"), "no");
      f["recovery"] = std::to_string(r);
      f["transaction_id"] = wf::transaction_id(wf_id(s), "recover/" + entry);
      out.push_back(wf::command("RequestKeyRecovery", std::move(f)));
    }
  }
  return out;
}

Command submit_command(const State& s) {
  Fields f = subject_of(s);
  f["transaction_id"] = wf::transaction_id(wf_id(s), "submit");
  f["procedure"] = get(s.data, "procedure");
  f["message"] = "ir";
  f["signer_ref"] = get(s.data, "officer.signer_ref");
  f["token_serial"] = get(s.data, "token_serial");
  int n = 0;
  for (int i = 0; i < entries(s); ++i) {
    const std::string kind = op(s, i);
    if (kind.empty() || kind == "none") continue;
    f[item("request", n, "entry")] = std::to_string(i);
    f[item("request", n, "kind")] = kind;
    if (kind == "generate" || kind == "certify") {
      f[item("request", n, "key_id")] = get(s.data, item("key", i, "id"));
    } else if (kind == "archive") {
      f[item("request", n, "key_ref")] = get(s.data, item("key", i, "key_ref"));
    } else {
      wf::copy_prefixed(s.data, item("key", i, "recovered") + ".", f,
                        item("request", n, "recovered") + ".");
    }
    ++n;
  }
  return wf::command("SubmitToCm", std::move(f));
}

Command write_command(const State& s) {
  Fields f{{"token_serial", get(s.data, "token_serial")}, {"reader", get(s.data, "reader")}};
  wf::copy_prefixed(s.data, "cert.", f, "cert.");
  wf::copy_prefixed(s.data, "write.", f, "object.");
  for (int i = 0; i < entries(s); ++i) {
    if (op(s, i) == "archive") {
      f[item("key", i, "key_ref")] = get(s.data, item("key", i, "key_ref"));
      f[item("key", i, "key_id")] = get(s.data, item("key", i, "id"));
    }
    if (op(s, i) == "recover") {
      wf::copy_prefixed(s.data, item("key", i, "recovered") + ".", f,
                        item("key", i, "recovered") + ".");
    }
  }
  if (has(s.data, "operator_pin_ref")) f["operator_pin_ref"] = get(s.data, "operator_pin_ref");
  return wf::command("WriteKeysAndCertificates", std::move(f));
}

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
    for (int i = 0; i < entries(s); ++i) {
      if (wf::is_yes(d, item("key", i, "archive"))) f[item("key", i, "mark")] = "generate-archive";
      if (wf::is_yes(d, item("key", i, "recoverable"))) f[item("key", i, "search")] = "available";
    }
    return {wf::command("AskOperator", std::move(f))};
  }
  if (n == "KeysRequested") return keys_pending(s);
  if (n == "SubmittedToCm") return {submit_command(s)};
  if (n == "OperatorPinAwaited") return {wf::command("AskOperator", {{"ask", "operator_pin"}})};
  if (n == "WriteRequested") return {write_command(s)};
  if (n == "CaCertsReplaceRequested") {
    Fields f{{"token_serial", get(d, "token_serial")}};
    wf::copy_prefixed(d, "ca_cert.", f, "ca_cert.");
    if (has(d, "operator_pin_ref")) f["operator_pin_ref"] = get(d, "operator_pin_ref");
    return {wf::command("ReplaceCaCertificates", std::move(f))};
  }
  if (n == "PinSetRequested") {
    const int i = wf::get_int(d, "pin.current", 0);
    return {wf::command("SetCardPin", {{"token_serial", get(d, "token_serial")},
                                       {"pin_index", std::to_string(i)},
                                       {"pin_ref", get(d, item("pin", i, "ref"))}})};
  }
  if (n == "PinDeliveryRequested") {
    return {wf::pin_delivery_command(s, wf::get_int(d, "pin.current", 0))};
  }
  std::vector<Command> pin = wf::pin_pending(kKit, s);
  if (!pin.empty()) return pin;
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
  State to{"", from.data};
  wf::copy_prefixed(e.fields, "key.", to.data, "key.");
  wf::copy_prefixed(e.fields, "tc.", to.data, "tc.");
  to.data["pin.count"] = get(e.fields, "pin_count", "1");
  if (wf::is_yes(e.fields, "tc.present")) {
    to.name = "RedirectedToUpdate";
    const std::string reason =
        "the card holds a transport certificate (" + get(e.fields, "tc.subject") +
        "): issuing on it is an update; run update-card with action redo on its key";
    to.data["reason"] = reason;
    return Transition{std::move(to), {wf::command("NotifyOperator", {{"reason", reason}})}};
  }
  if (entries(to) == 0) {
    return wf::invalid(
        "CardContentsRead lists no key entry (key.0.*): the card is not "
        "pre-personalised");
  }
  to.name = "ContentsConfirmed";
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_procedure_chosen(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(std::string procedure, wf::need(e, "procedure"));
  PF_ASSIGN_OR_RETURN(
      std::string delivery,
      wf::need_one_of(e, "pin_delivery", {"entered", "generated", "mailer", "letter"}));
  PF_ASSIGN_OR_RETURN(std::string op_pin,
                      wf::need_one_of(e, "operator_pin", {"none", "required"}, "none"));
  State to{"ProcedureConfirmed", from.data};
  to.data["procedure"] = procedure;
  to.data["pin.delivery"] = delivery;
  to.data["operator_pin"] = op_pin;
  to.data["replace_ca"] = get(e.fields, "replace_ca", "no");
  to.data["key_archiving"] = get(e.fields, "key_archiving", "no");
  to.data["key_algorithm"] = get(e.fields, "key_algorithm", "RSA:2048");
  wf::copy_prefixed(e.fields, "recovery.", to.data, "recovery.");
  const int recoveries = wf::list_size(e.fields, "recovery");
  for (int r = 0; r < recoveries; ++r) {
    Event check{e.type, {{"scope", get(e.fields, item("recovery", r, "scope"), "last")}}};
    PF_RETURN_IF_ERROR(wf::need_one_of(check, "scope", {"last", "all"}).status());
  }
  // Entries without a key can take a key from the CM host: marked 'generate & archive' when the
  // procedure archives, and offered for recovery when it recovers.
  for (int i = 0; i < entries(to); ++i) {
    const bool free = get(to.data, item("key", i, "id")).empty();
    to.data[item("key", i, "archive")] =
        free && wf::is_yes(to.data, "key_archiving") ? "yes" : "no";
    to.data[item("key", i, "recoverable")] = free && recoveries > 0 ? "yes" : "no";
  }
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_actions_chosen(const State& from, const Event& e) {
  const int card_entries = entries(from);
  PF_RETURN_IF_ERROR(wf::check_entries(e, "key", card_entries));
  State to{"", from.data};
  to.data.erase("refusal");
  wf::erase_prefixed(to.data, "subject.");
  wf::copy_prefixed(e.fields, "subject.", to.data, "subject.");
  const bool has_subject = wf::any_prefixed(e.fields, "subject.");
  const int recoveries = wf::list_size(from.data, "recovery");
  const std::string id = wf_id(from);
  int work = 0;
  bool keys_phase = false;
  for (int i = 0; i < card_entries; ++i) {
    const std::string action = get(e.fields, item("key", i, "action"), "blank");
    const std::string existing = get(from.data, item("key", i, "id"));
    const std::string entry = "entry " + std::to_string(i);
    const std::string algorithm =
        get(e.fields, item("key", i, "algorithm"), get(from.data, "key_algorithm"));
    std::string kind = "none";
    if (action == "blank") {
    } else if (action == "add") {
      if (!existing.empty()) {
        kind = "certify";  // another certificate on the key the card holds
      } else if (wf::is_yes(from.data, item("key", i, "archive"))) {
        kind = "archive";
      } else {
        kind = "generate";
        to.data[item("key", i, "id")] = wf::card_key_id(id, "entry/" + std::to_string(i));
      }
    } else if (action == "recover") {
      if (!wf::is_yes(from.data, item("key", i, "recoverable"))) {
        return refuse(from, entry + ": recover needs a procedure with key recovery and an " +
                                "entry without a key");
      }
      const std::string search = get(e.fields, item("key", i, "search"), "auto");
      Status ok = wf::check_search(search, true);
      if (!ok) return refuse(from, entry + ": " + ok.message());
      if (search == "auto" && !has_subject) {
        return refuse(from, entry + ": automatic recovery searches by the subject fields; " +
                                "enter them (subject.*) or search by serial, subject or id");
      }
      const std::string request = get(e.fields, item("key", i, "request"), "default");
      if (request != "default" && request != "yes" && request != "no") {
        return wf::invalid("ActionsChosen: key." + std::to_string(i) +
                           ".request must be default, yes or no, not '" + request + "'");
      }
      const int r = wf::get_int(e.fields, item("key", i, "recovery"), 0);
      if (r >= recoveries) {
        return wf::invalid("ActionsChosen: key." + std::to_string(i) + ".recovery " +
                           std::to_string(r) + " is not a recovery procedure of " +
                           get(from.data, "procedure"));
      }
      // By default a recovery request is sent; with several recovery procedures, only where a
      // key to recover was selected or the request flag was set by hand.
      bool send =
          request == "yes" || (request == "default" && (recoveries == 1 || search != "auto"));
      to.data[item("key", i, "search")] = search;
      to.data[item("key", i, "recovery")] = std::to_string(r);
      to.data[item("key", i, "request")] = send ? "yes" : "no";
      if (send) kind = "recover";
    } else {
      return wf::invalid("ActionsChosen: key." + std::to_string(i) + ".action must be blank, " +
                         "add or recover, not '" + action + "'");
    }
    to.data[item("key", i, "action")] = action;
    to.data[item("key", i, "op")] = kind;
    to.data[item("key", i, "algorithm")] = algorithm;
    if (kind != "none") ++work;
    if (kind == "generate" || kind == "archive" || kind == "recover") {
      keys_phase = true;
      to.data[item("key", i, "status")] = "requested";
    }
    if (kind == "generate")
      wf::append_unique(to.data, "object", "key:" + get(to.data, item("key", i, "id")));
  }
  if (work == 0) {
    return refuse(from, "nothing to issue: choose add or recover (with a request) for an entry");
  }
  if (!has_subject) return refuse(from, "enter the subject fields (subject.*) of the certificate");
  to.name = keys_phase ? "KeysRequested" : "SignaturePinAwaited";
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_key_confirmed(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(int i, wf::need_int(e, "entry", 0, entries(from) - 1));
  const std::string kind = op(from, i);
  const std::string expected = e.type == "KeyGenerated"        ? "generate"
                               : e.type == "ServerKeyArchived" ? "archive"
                                                               : "recover";
  if (kind != expected) {
    return wf::invalid(e.type + " for entry " + std::to_string(i) + ", whose key operation is '" +
                       kind + "'");
  }
  State to{"KeysRequested", from.data};
  if (e.type == "KeyGenerated") {
    PF_ASSIGN_OR_RETURN(std::string key_id, wf::need(e, "key_id"));
    if (key_id != get(from.data, item("key", i, "id"))) {
      return wf::invalid("KeyGenerated: the card reports key id " + key_id + " for entry " +
                         std::to_string(i) + ", expected " + get(from.data, item("key", i, "id")));
    }
  } else if (e.type == "ServerKeyArchived") {
    PF_ASSIGN_OR_RETURN(std::string ref, wf::need(e, "key_ref"));
    to.data[item("key", i, "key_ref")] = ref;
    to.data[item("key", i, "id")] = wf::card_key_id(wf_id(from), "entry/" + std::to_string(i));
  } else {
    const int n = wf::list_size(e.fields, "recovered");
    if (n == 0) return wf::invalid("KeyRecovered lists no recovered key (recovered.0.key_ref)");
    const std::string scope = get(
        from.data, item("recovery", wf::get_int(from.data, item("key", i, "recovery"), 0), "scope"),
        "last");
    if (scope == "last" && n > 1) {
      return wf::invalid("KeyRecovered returned " + std::to_string(n) +
                         " keys for a recovery of the last key only");
    }
    const std::string prefix = item("key", i, "recovered") + ".";
    wf::erase_prefixed(to.data, prefix);
    for (int j = 0; j < n; ++j) {
      Event one{e.type, {{"key_ref", get(e.fields, item("recovered", j, "key_ref"))}}};
      PF_RETURN_IF_ERROR(wf::need(one, "key_ref").status());
      to.data[prefix + std::to_string(j) + ".key_ref"] = one.fields["key_ref"];
      to.data[prefix + std::to_string(j) + ".key_id"] = wf::card_key_id(
          wf_id(from), "entry/" + std::to_string(i) + "/recovered/" + std::to_string(j));
      const std::string reused = get(e.fields, item("recovered", j, "cert_serial"));
      if (!reused.empty()) to.data[prefix + std::to_string(j) + ".cert_serial"] = reused;
    }
  }
  to.data[item("key", i, "status")] = "confirmed";
  for (int k = 0; k < entries(to); ++k) {
    if (get(to.data, item("key", k, "status")) == "requested") {
      return Transition{std::move(to), {}};  // other keys still in flight
    }
  }
  to.name = "SignaturePinAwaited";
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_card_full(const State& from, const Event& e) {
  return wf::fail(kKit, from,
                  "the card is full" +
                      (has(e.fields, "reason") ? ": " + get(e.fields, "reason") : std::string()) +
                      "; use a card with free space or fewer keys");
}

Result<Transition> on_algorithm_unsupported(const State& from, const Event& e) {
  return wf::fail(kKit, from,
                  "the card does not support the key algorithm " +
                      get(e.fields, "algorithm", "requested") + " (entry " +
                      get(e.fields, "entry", "?") + "); choose a procedure or card that does");
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
  wf::erase_prefixed(to.data, "write.");
  wf::copy_prefixed(e.fields, "cert.", to.data, "cert.");
  wf::copy_prefixed(e.fields, "ca_cert.", to.data, "ca_cert.");
  for (int k = 0; k < n; ++k) {
    Event one{e.type,
              {{"serial", get(e.fields, item("cert", k, "serial"))},
               {"ref", get(e.fields, item("cert", k, "ref"))}}};
    PF_RETURN_IF_ERROR(wf::need(one, "serial").status());
    PF_RETURN_IF_ERROR(wf::need(one, "ref").status());
    wf::append_unique(to.data, "issued", one.fields["serial"]);
    wf::append_unique(to.data, "write", "cert:" + one.fields["serial"]);
  }
  for (int i = 0; i < entries(to); ++i) {
    if (op(to, i) == "archive") {
      wf::append_unique(to.data, "write", "key:" + get(to.data, item("key", i, "id")));
    }
    if (op(to, i) == "recover") {
      const std::string prefix = item("key", i, "recovered");
      for (int j = 0; j < wf::list_size(to.data, prefix); ++j) {
        wf::append_unique(to.data, "write", "key:" + get(to.data, item(prefix, j, "key_id")));
      }
    }
  }
  for (const std::string& obj : wf::values(to.data, "write")) {
    wf::append_unique(to.data, "object", obj);
  }
  if (has(e.fields, "operator_pin_ref")) {
    to.data["operator_pin_ref"] = get(e.fields, "operator_pin_ref");
  }
  const bool ask = get(to.data, "operator_pin") == "required" && !has(to.data, "operator_pin_ref");
  to.name = ask ? "OperatorPinAwaited" : "WriteRequested";
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_operator_pin_entered(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(std::string ref, wf::need(e, "pin_ref"));
  State to{"WriteRequested", from.data};
  to.data["operator_pin_ref"] = ref;
  return wf::enter(kKit, std::move(to));
}

Result<Transition> on_card_written(const State& from, const Event&) {
  State to = from;
  to.data["written"] = "yes";
  if (wf::is_yes(to.data, "replace_ca") && wf::list_size(to.data, "ca_cert") > 0) {
    to.name = "CaCertsReplaceRequested";
    for (int m = 0; m < wf::list_size(to.data, "ca_cert"); ++m) {
      wf::append_unique(to.data, "object", "cacert:" + get(to.data, item("ca_cert", m, "ref")));
    }
    return wf::enter(kKit, std::move(to));
  }
  return wf::pin_begin(kKit, std::move(to), 0);
}

Result<Transition> on_ca_replaced(const State& from, const Event&) {
  return wf::pin_begin(kKit, from, 0);
}

Result<Transition> after_pin_obtained(const State& s) {
  State to{"PinSetRequested", s.data};
  return wf::enter(kKit, std::move(to));
}

Result<Transition> next_pin_or_done(State s, int index) {
  if (index + 1 < wf::get_int(s.data, "pin.count", 1)) {
    if (has(s.data, item("pin", index + 1, "ref"))) {
      // The PUK came with the PIN (a PIN/PUK letter): set it straight away.
      s.data["pin.current"] = std::to_string(index + 1);
      return after_pin_obtained(s);
    }
    return wf::pin_begin(kKit, std::move(s), index + 1);
  }
  s.name = std::string(wf::kDone);
  return Transition{std::move(s), {}};
}

Result<int> current_pin(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(int i, wf::need_int(e, "pin_index", 0, 1));
  if (i != wf::get_int(from.data, "pin.current", 0)) {
    return wf::invalid(e.type + " for PIN " + std::to_string(i) + " while PIN " +
                       get(from.data, "pin.current") + " is being set");
  }
  return i;
}

Result<Transition> on_card_pin_set(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(int i, current_pin(from, e));
  State to = from;
  to.data[item("pin", i, "set")] = "yes";
  // The PIN mailer puts both PINs of a card with two in one letter: the first waits for the
  // second (pin_delivery_command sends them together).
  if (get(to.data, "pin.delivery") == "mailer" && i + 1 < wf::get_int(to.data, "pin.count", 1)) {
    to.data[item("pin", i, "in_next_letter")] = "yes";
    return next_pin_or_done(std::move(to), i);
  }
  if (wf::pin_needs_delivery(to, i)) {
    to.name = "PinDeliveryRequested";
    return wf::enter(kKit, std::move(to));
  }
  return next_pin_or_done(std::move(to), i);
}

Result<Transition> on_pin_delivered(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(int i, current_pin(from, e));
  State to = from;
  to.data[item("pin", i, "delivered")] = "yes";
  return next_pin_or_done(std::move(to), i);
}

// The common handlers bound to this machine's kit (workflow_support.hpp: one function each, so
// the rows of a guarded choice share one handler).
using Common = wf::Bound<kKit>;

// ----- The table -----

constexpr std::string_view kSuspCard = wf::kSuspendedAwaitingCard;
constexpr std::string_view kSuspRetry = wf::kSuspendedAwaitingRetry;
constexpr std::string_view kRollback = wf::kRollbackRequested;

constexpr Row kBaseRows[] = {
    // from                          event                      to
    {"Idle", "CardInserted", "ContentsReadRequested", on_card_inserted, "ReadCardContents"},
    {"ContentsReadRequested", "CardContentsRead", "ContentsConfirmed", on_contents_read, "no TC"},
    {"ContentsReadRequested", "CardContentsRead", "RedirectedToUpdate", on_contents_read,
     "TC present: issue is an update"},
    {"ContentsConfirmed", "ProcedureChosen", "ProcedureConfirmed", on_procedure_chosen,
     "entries marked generate-archive / recover"},
    {"ProcedureConfirmed", "ActionsChosen", "KeysRequested", on_actions_chosen,
     "GenerateKeyOnCard / RequestServerKeygenAndArchive / RequestKeyRecovery"},
    {"ProcedureConfirmed", "ActionsChosen", "SignaturePinAwaited", on_actions_chosen,
     "only keys the card holds"},
    {"ProcedureConfirmed", "ActionsChosen", "ProcedureConfirmed", on_actions_chosen,
     "refused with reason"},
    {"KeysRequested", "KeyGenerated", "KeysRequested", on_key_confirmed, "others pending"},
    {"KeysRequested", "KeyGenerated", "SignaturePinAwaited", on_key_confirmed, "all keys there"},
    {"KeysRequested", "ServerKeyArchived", "KeysRequested", on_key_confirmed, "others pending"},
    {"KeysRequested", "ServerKeyArchived", "SignaturePinAwaited", on_key_confirmed,
     "all keys there"},
    {"KeysRequested", "KeyRecovered", "KeysRequested", on_key_confirmed, "others pending"},
    {"KeysRequested", "KeyRecovered", "SignaturePinAwaited", on_key_confirmed, "all keys there"},
    {"KeysRequested", "CardFull", kRollback, on_card_full},
    {"KeysRequested", "AlgorithmUnsupported", kRollback, on_algorithm_unsupported},
    {"KeysRequested", "CmRefused", kRollback, Common::cm_refused, "keys on card"},
    {"KeysRequested", "CmRefused", "Failed", Common::cm_refused, "nothing on card"},
    {"KeysRequested", "CmUnreachable", kSuspRetry, Common::cm_unreachable},
    {"SignaturePinAwaited", "OfficerPinEntered", "SignatureRequested", Common::officer_pin_entered,
     "SignWithOfficer"},
    {"SignatureRequested", "OfficerSigned", "SubmittedToCm", on_officer_signed, "SubmitToCm"},
    {"SignatureRequested", "OfficerPinRejected", "SignaturePinAwaited",
     Common::officer_pin_rejected,
     "tries left"},
    {"SignatureRequested", "OfficerPinRejected", kRollback, Common::officer_pin_rejected,
     "blocked, keys on card"},
    {"SignatureRequested", "OfficerPinRejected", "Failed", Common::officer_pin_rejected,
     "blocked, nothing on card"},
    {"SubmittedToCm", "CertificatesIssued", "WriteRequested", on_certificates_issued,
     "WriteKeysAndCertificates"},
    {"SubmittedToCm", "CertificatesIssued", "OperatorPinAwaited", on_certificates_issued,
     "operator PIN required, not in CM"},
    {"SubmittedToCm", "CmRefused", kRollback, Common::cm_refused, "keys on card"},
    {"SubmittedToCm", "CmRefused", "Failed", Common::cm_refused, "nothing on card"},
    {"SubmittedToCm", "CmUnreachable", kSuspRetry, Common::cm_unreachable},
    {"OperatorPinAwaited", "OperatorPinEntered", "WriteRequested", on_operator_pin_entered},
    {"WriteRequested", "CardWritten", "CaCertsReplaceRequested", on_card_written,
     "replace CA certificates"},
    {"WriteRequested", "CardWritten", "PinEntryAwaited", on_card_written, "PIN entered at RA"},
    {"WriteRequested", "CardWritten", "PinGenerationRequested", on_card_written, "PIN generated"},
    {"WriteRequested", "CardWritten", "PinMailerAddressAwaited", on_card_written, "PIN mailer"},
    {"WriteRequested", "CardWritten", "PinLetterIdAwaited", on_card_written, "PIN letter"},
    {"WriteRequested", "CardFull", kRollback, on_card_full},
    {"CaCertsReplaceRequested", "CaCertificatesReplaced", "PinEntryAwaited", on_ca_replaced},
    {"CaCertsReplaceRequested", "CaCertificatesReplaced", "PinGenerationRequested", on_ca_replaced},
    {"CaCertsReplaceRequested", "CaCertificatesReplaced", "PinMailerAddressAwaited",
     on_ca_replaced},
    {"CaCertsReplaceRequested", "CaCertificatesReplaced", "PinLetterIdAwaited", on_ca_replaced},
    {"PinEntryAwaited", "PinEntered", "PinSetRequested", Common::pin_event, "pin_ref only"},
    {"PinEntryAwaited", "PinEntryCancelled", "PinGenerationRequested", Common::pin_event,
     "generated PIN shown instead"},
    {"PinGenerationRequested", "PinGenerated", "PinSetRequested", Common::pin_event},
    {"PinMailerAddressAwaited", "PinMailerAddressEntered", "PinGenerationRequested",
     Common::pin_event},
    {"PinLetterIdAwaited", "PinLetterIdEntered", "PinLetterResolutionRequested", Common::pin_event},
    {"PinLetterResolutionRequested", "PinLetterResolved", "PinSetRequested", Common::pin_event},
    {"PinLetterResolutionRequested", "PinLetterRefused", "PinLetterIdAwaited", Common::pin_event,
     "another letter asked for"},
    {"PinSetRequested", "CardPinSet", "PinDeliveryRequested", on_card_pin_set,
     "ShowPinOnce / QueuePinLetter"},
    {"PinSetRequested", "CardPinSet", "PinEntryAwaited", on_card_pin_set, "second PIN"},
    {"PinSetRequested", "CardPinSet", "PinLetterIdAwaited", on_card_pin_set, "second PIN"},
    {"PinSetRequested", "CardPinSet", "PinSetRequested", on_card_pin_set,
     "PUK of the same PIN/PUK letter"},
    {"PinSetRequested", "CardPinSet", "PinGenerationRequested", on_card_pin_set,
     "second PIN, one letter for both"},
    {"PinSetRequested", "CardPinSet", "Done", on_card_pin_set},
    {"PinDeliveryRequested", "PinDelivered", "PinEntryAwaited", on_pin_delivered, "second PIN"},
    {"PinDeliveryRequested", "PinDelivered", "PinGenerationRequested", on_pin_delivered,
     "second PIN"},
    {"PinDeliveryRequested", "PinDelivered", "Done", on_pin_delivered},
    {kSuspRetry, "RetryRequested", "KeysRequested", Common::retry_requested, "same transactionID"},
    {kSuspRetry, "RetryRequested", "SubmittedToCm", Common::retry_requested, "same transactionID"},
    {kRollback, "RollbackConfirmed", "Cancelled", Common::rollback_confirmed},
    {kRollback, "RollbackConfirmed", "Failed", Common::rollback_confirmed},
    {"Done", "CardRemoved", "Done", nullptr, "terminal absorbs"},
    {"Cancelled", "CardRemoved", "Cancelled", nullptr, "terminal absorbs"},
    {"Failed", "CardRemoved", "Failed", nullptr, "terminal absorbs"},
    {"RedirectedToUpdate", "CardRemoved", "RedirectedToUpdate", nullptr, "terminal absorbs"},
};

// States in which the card is part of the workflow: a removal suspends, the same card resumes.
constexpr std::string_view kCardStates[] = {
    "ContentsReadRequested",   "ContentsConfirmed",    "ProcedureConfirmed",
    "KeysRequested",           "SignaturePinAwaited",  "SignatureRequested",
    "SubmittedToCm",           "OperatorPinAwaited",   "WriteRequested",
    "CaCertsReplaceRequested", "PinEntryAwaited",      "PinGenerationRequested",
    "PinMailerAddressAwaited", "PinLetterIdAwaited",   "PinLetterResolutionRequested",
    "PinSetRequested",         "PinDeliveryRequested", kRollback,
};
// Cancel before anything may be on the card: straight to Cancelled.
constexpr std::string_view kCancelBefore[] = {"ContentsReadRequested", "ContentsConfirmed",
                                              "ProcedureConfirmed"};
// Cancel where keys may or may not be on the card yet.
constexpr std::string_view kCancelMaybe[] = {"KeysRequested", "SignaturePinAwaited",
                                             "SignatureRequested", "SubmittedToCm", kSuspRetry};
// Cancel once the write was requested: always a rollback.
constexpr std::string_view kCancelAfter[] = {
    "OperatorPinAwaited",      "WriteRequested",
    "CaCertsReplaceRequested", "PinEntryAwaited",
    "PinGenerationRequested",  "PinMailerAddressAwaited",
    "PinLetterIdAwaited",      "PinLetterResolutionRequested",
    "PinSetRequested",         "PinDeliveryRequested"};

constexpr std::size_t kRowCount = std::size(kBaseRows) + 2 * std::size(kCardStates) + 3 +
                                  std::size(kCancelBefore) + 2 * std::size(kCancelMaybe) +
                                  std::size(kCancelAfter) + 2;

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
  for (std::string_view s : kCancelMaybe) {
    rows[n++] = Row{s, "CancelRequested", "Cancelled", Common::cancel_requested, "nothing on card"};
    rows[n++] = Row{s, "CancelRequested", kRollback, Common::cancel_requested, "RollbackCard"};
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

constexpr std::string_view kTerminal[] = {"Done", "Cancelled", "Failed", "RedirectedToUpdate"};

constexpr MachineDef kIssueCard{
    "issue-card",
    "issue certificates on a pre-personalised smart card (keys on card, archived or recovered)",
    "Idle", kTerminal, kRows};

}  // namespace

const MachineDef& issue_card_machine() { return kIssueCard; }

PF_REGISTER_MACHINE(issue_card, kIssueCard);

}  // namespace persoflow::machines
