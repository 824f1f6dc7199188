// The shared parts of the RA workflow machines (workflow_support.hpp): field helpers, derived
// idempotency ids, and the handlers common to every workflow. Pure: no I/O, clock or randomness;
// every handler's result is a function of (state, event) only.
#include "persoflow/machines/workflow_support.hpp"

#include <cctype>
#include <cstdint>

namespace persoflow::machines::wf {

// ----- Field access -----

std::string get(const Fields& fields, std::string_view key, std::string_view fallback) {
  auto it = fields.find(std::string(key));
  return it == fields.end() ? std::string(fallback) : it->second;
}

bool has(const Fields& fields, std::string_view key) {
  return fields.find(std::string(key)) != fields.end();
}

bool is_yes(const Fields& fields, std::string_view key) { return get(fields, key) == "yes"; }

namespace {
bool parse_int(const std::string& text, int& out) {
  if (text.empty() || text.size() > 9) return false;
  int v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return true;
}
}  // namespace

int get_int(const Fields& fields, std::string_view key, int fallback) {
  int v = 0;
  return parse_int(get(fields, key), v) ? v : fallback;
}

Result<std::string> need(const Event& event, std::string_view key) {
  std::string v = get(event.fields, key);
  if (v.empty()) {
    return invalid(event.type + " needs a non-empty field '" + std::string(key) + "'");
  }
  return v;
}

Result<int> need_int(const Event& event, std::string_view key, int min, int max) {
  PF_ASSIGN_OR_RETURN(std::string text, need(event, key));
  int v = 0;
  if (!parse_int(text, v) || v < min || v > max) {
    return invalid(event.type + ": field '" + std::string(key) + "' must be a number from " +
                   std::to_string(min) + " to " + std::to_string(max) + ", not '" + text + "'");
  }
  return v;
}

Result<std::string> need_one_of(const Event& event, std::string_view key,
                                std::initializer_list<std::string_view> allowed,
                                std::string_view fallback) {
  std::string v = get(event.fields, key, fallback);
  std::string list;
  for (std::string_view a : allowed) {
    if (v == a) return v;
    list += list.empty() ? "" : ", ";
    list += a;
  }
  return invalid(event.type + ": field '" + std::string(key) + "' must be one of " + list +
                 (v.empty() ? " (missing)" : ", not '" + v + "'"));
}

// ----- Indexed lists -----

std::string item(std::string_view list, int index, std::string_view attr) {
  return std::string(list) + "." + std::to_string(index) + "." + std::string(attr);
}

std::string item(std::string_view list, int index) {
  return std::string(list) + "." + std::to_string(index);
}

int list_size(const Fields& fields, std::string_view list) {
  // "key.1" < "key.1." < "key.10" ('.' sorts before digits), so the first field not below
  // "key.1" is "key.1" or "key.1.<attr>" exactly when item 1 exists.
  int n = 0;
  for (;; ++n) {
    const std::string exact = item(list, n);
    auto it = fields.lower_bound(exact);
    if (it == fields.end()) break;
    const std::string& k = it->first;
    bool match = k == exact || (k.size() > exact.size() && k.compare(0, exact.size(), exact) == 0 &&
                                k[exact.size()] == '.');
    if (!match) break;
  }
  return n;
}

void copy_prefixed(const Fields& from, std::string_view prefix, Fields& to,
                   std::string_view new_prefix) {
  for (auto it = from.lower_bound(std::string(prefix)); it != from.end(); ++it) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    to[std::string(new_prefix) + it->first.substr(prefix.size())] = it->second;
  }
}

void erase_prefixed(Fields& fields, std::string_view prefix) {
  auto it = fields.lower_bound(std::string(prefix));
  while (it != fields.end() && it->first.compare(0, prefix.size(), prefix) == 0) {
    it = fields.erase(it);
  }
}

bool any_prefixed(const Fields& fields, std::string_view prefix) {
  auto it = fields.lower_bound(std::string(prefix));
  return it != fields.end() && it->first.compare(0, prefix.size(), prefix) == 0;
}

void append_unique(Fields& fields, std::string_view list, const std::string& value) {
  int n = list_size(fields, list);
  for (int i = 0; i < n; ++i) {
    if (get(fields, item(list, i)) == value) return;
  }
  fields[item(list, n)] = value;
}

std::vector<std::string> values(const Fields& fields, std::string_view list) {
  std::vector<std::string> out;
  int n = list_size(fields, list);
  for (int i = 0; i < n; ++i) out.push_back(get(fields, item(list, i)));
  return out;
}

Status check_entries(const Event& event, std::string_view list, int size) {
  const std::string prefix = std::string(list) + ".";
  for (auto it = event.fields.lower_bound(prefix); it != event.fields.end(); ++it) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    std::string rest = it->first.substr(prefix.size());
    std::string index = rest.substr(0, rest.find('.'));
    int i = 0;
    bool number = !index.empty() && index.size() < 6;
    for (char c : index) {
      number = number && c >= '0' && c <= '9';
      if (number) i = i * 10 + (c - '0');
    }
    if (!number || i >= size) {
      return invalid(event.type + ": field '" + it->first + "' names " + std::string(list) + " " +
                     index + ", but there are " + std::to_string(size) + " (0 to " +
                     std::to_string(size - 1) + ")");
    }
  }
  return Status::ok();
}

// ----- Derived ids -----

namespace {
std::uint64_t fnv1a64(std::string_view data, std::uint64_t offset) {
  std::uint64_t h = offset;
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

std::string hex64(std::uint64_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i) {
    out[static_cast<std::size_t>(i)] = kDigits[v & 0xf];
    v >>= 4;
  }
  return out;
}
}  // namespace

std::string derive_id(std::string_view workflow_id, std::string_view purpose) {
  // Length-prefixed so ("ab", "c") and ("a", "bc") differ.
  std::string input = std::to_string(workflow_id.size()) + ":" + std::string(workflow_id) + "|" +
                      std::string(purpose);
  return hex64(fnv1a64(input, 14695981039346656037ULL)) +
         hex64(fnv1a64(input, 0x84222325cbf29ce4ULL));
}

std::string transaction_id(std::string_view workflow_id, std::string_view step) {
  return derive_id(workflow_id, "cmp/" + std::string(step));
}

std::string card_key_id(std::string_view workflow_id, std::string_view entry) {
  return derive_id(workflow_id, "card-key/" + std::string(entry));
}

// ----- Search criteria -----

Status check_search(std::string_view search, bool allow_auto) {
  auto starts = [search](std::string_view p) { return search.substr(0, p.size()) == p; };
  if (search == "auto") {
    if (allow_auto) return Status::ok();
    return invalid("a search by serial:<hex>, id:<decimal> or subject:<text> is needed here");
  }
  if (starts("serial:")) {
    std::string_view v = search.substr(7);
    if (v.empty()) return invalid("search serial: the serial number is empty");
    for (char c : v) {
      if (!std::isxdigit(static_cast<unsigned char>(c))) {
        return invalid("search serial:" + std::string(v) +
                       ": a certificate serial number is hexadecimal (0-9, a-f)");
      }
    }
    return Status::ok();
  }
  if (starts("id:")) {
    std::string_view v = search.substr(3);
    if (v.empty()) return invalid("search id: the certificate ID is empty");
    for (char c : v) {
      if (c < '0' || c > '9') {
        return invalid("search id:" + std::string(v) + ": a certificate ID is decimal (0-9)");
      }
    }
    return Status::ok();
  }
  if (starts("subject:")) {
    if (search.size() == 8) return invalid("search subject: the subject is empty");
    return Status::ok();
  }
  return invalid("search '" + std::string(search) + "': expected serial:<hex>, id:<decimal>, " +
                 "subject:<text>" + (allow_auto ? " or auto" : ""));
}

// ----- Building transitions -----

Command command(std::string type, Fields fields) {
  return Command{std::move(type), std::move(fields)};
}

Status invalid(const std::string& message) { return make_status(Errc::kInvalidArgument, message); }

Transition enter(const Kit& kit, State state) {
  std::vector<Command> cmds = kit.pending(state);
  return Transition{std::move(state), std::move(cmds)};
}

namespace {
void set_reason(Fields& data, const std::string& reason) { data["reason"] = reason; }
}  // namespace

Transition fail(const Kit& kit, const State& from, const std::string& reason) {
  State to{"", from.data};
  set_reason(to.data, reason);
  erase_prefixed(to.data, "resume_state");
  if (list_size(from.data, "object") > 0) {
    to.name = std::string(kRollbackRequested);
    to.data["outcome"] = "failed";
    return enter(kit, std::move(to));
  }
  to.name = std::string(kFailed);
  return Transition{std::move(to), {command("NotifyOperator", {{"reason", reason}})}};
}

Result<Transition> on_card_removed(const Kit& kit, const State& from, const Event& event) {
  State to{std::string(kSuspendedAwaitingCard), from.data};
  if (from.name != kSuspendedAwaitingRetry) to.data["resume_state"] = from.name;
  to.data["suspend_reason"] =
      "card removed" +
      (has(event.fields, "reader") ? " from reader " + get(event.fields, "reader") : std::string());
  return enter(kit, std::move(to));
}

Result<Transition> on_card_reinserted(const Kit& kit, const State& from, const Event& event) {
  PF_ASSIGN_OR_RETURN(std::string serial, need(event, "token_serial"));
  const std::string expected = get(from.data, "token_serial");
  if (serial != expected) {
    State to = from;
    to.data["refused_cards"] = std::to_string(get_int(from.data, "refused_cards", 0) + 1);
    Fields f{{"token_serial", serial},
             {"expected_token_serial", expected},
             {"reason", "card " + serial + " is not the card of this workflow (" + expected +
                            "): nothing is written to it; insert card " + expected}};
    if (has(event.fields, "reader")) f["reader"] = get(event.fields, "reader");
    return Transition{std::move(to), {command("RefuseCard", std::move(f))}};
  }
  State to{get(from.data, "resume_state"), from.data};
  to.data.erase("resume_state");
  to.data.erase("suspend_reason");
  if (has(event.fields, "reader")) to.data["reader"] = get(event.fields, "reader");
  PF_CHECK(!to.name.empty(), "SuspendedAwaitingCard without resume_state");
  return enter(kit, std::move(to));
}

Result<Transition> on_cm_unreachable(const Kit& kit, const State& from, const Event& event) {
  State to{std::string(kSuspendedAwaitingRetry), from.data};
  to.data["resume_state"] = from.name;
  to.data["suspend_reason"] =
      "CM host unreachable: " + get(event.fields, "reason", "no answer after the retries");
  return enter(kit, std::move(to));
}

Result<Transition> on_retry_requested(const Kit& kit, const State& from, const Event&) {
  State to{get(from.data, "resume_state"), from.data};
  PF_CHECK(!to.name.empty(), "SuspendedAwaitingRetry without resume_state");
  to.data.erase("resume_state");
  to.data.erase("suspend_reason");
  return enter(kit, std::move(to));
}

Result<Transition> on_cancel_requested(const Kit& kit, const State& from, const Event& event) {
  const std::string reason = "cancelled: " + get(event.fields, "reason", "by the operator");
  std::vector<Command> extra;
  std::vector<std::string> issued = values(from.data, "issued");
  if (!issued.empty()) {
    // Certificates the CM host issued for a workflow that will not deliver them are revoked.
    Fields f{{"reason", "cessationOfOperation"},
             {"transaction_id", transaction_id(get(from.data, "workflow_id"), "cancel-revoke")}};
    for (std::size_t i = 0; i < issued.size(); ++i) {
      f[item("serial", static_cast<int>(i))] = issued[i];
    }
    extra.push_back(command("RevokeIssuedCertificates", std::move(f)));
  }
  State to{"", from.data};
  set_reason(to.data, reason);
  if (list_size(from.data, "object") > 0) {
    to.data["outcome"] = "cancelled";
    if (from.name == kSuspendedAwaitingCard) {
      // The rollback needs the card: it runs once the same card is back.
      to.name = from.name;
      to.data["resume_state"] = std::string(kRollbackRequested);
      return Transition{std::move(to), std::move(extra)};
    }
    to.name = std::string(kRollbackRequested);
    to.data.erase("resume_state");
    to.data.erase("suspend_reason");
    Transition t = enter(kit, std::move(to));
    t.commands.insert(t.commands.begin(), extra.begin(), extra.end());
    return t;
  }
  to.name = std::string(kCancelled);
  return Transition{std::move(to), std::move(extra)};
}

Result<Transition> on_rollback_confirmed(const Kit&, const State& from, const Event&) {
  State to{get(from.data, "outcome") == "failed" ? std::string(kFailed) : std::string(kCancelled),
           from.data};
  to.data["rolled_back"] = "yes";
  return Transition{std::move(to),
                    {command("NotifyOperator", {{"reason", get(from.data, "reason")}})}};
}

Result<Transition> on_cm_refused(const Kit& kit, const State& from, const Event& event) {
  return fail(kit, from,
              "the CM host refused the request: " + get(event.fields, "reason", "no reason given"));
}

Result<Transition> on_officer_pin_entered(const Kit& kit, const State& from, const Event& event) {
  PF_ASSIGN_OR_RETURN(std::string ref, need(event, "pin_ref"));
  State to{"SignatureRequested", from.data};
  to.data["officer.pin_ref"] = ref;
  to.data["officer.attempt"] = std::to_string(get_int(from.data, "officer.attempt", 0) + 1);
  return enter(kit, std::move(to));
}

Result<Transition> on_officer_pin_rejected(const Kit& kit, const State& from, const Event& event) {
  PF_ASSIGN_OR_RETURN(int tries_left, need_int(event, "tries_left", 0, 99));
  if (tries_left == 0) {
    // The executor may say why (a PKCS#12 password file has no tries to count).
    return fail(kit, from,
                get(event.fields, "reason",
                    "the officer's token is blocked: Signature PIN wrong too often; unblock it "
                    "and start again"));
  }
  State to{"SignaturePinAwaited", from.data};
  to.data.erase("officer.pin_ref");
  to.data["officer.tries_left"] = std::to_string(tries_left);
  return enter(kit, std::move(to));
}

// ----- PIN sub-flow -----

Transition pin_begin(const Kit& kit, State state, int index) {
  state.data["pin.current"] = std::to_string(index);
  const std::string mode = get(state.data, "pin.delivery");
  if (mode == "entered") {
    state.name = "PinEntryAwaited";
  } else if (mode == "generated") {
    state.name = "PinGenerationRequested";
    state.data[item("pin", index, "source")] = "generated";
  } else if (mode == "mailer") {
    state.name = has(state.data, "pin.mailer_address") ? "PinGenerationRequested"
                                                       : "PinMailerAddressAwaited";
    state.data[item("pin", index, "source")] = "generated";
  } else {
    PF_CHECK(mode == "letter", "pin.delivery validated when the procedure was chosen");
    state.name = "PinLetterIdAwaited";
  }
  return enter(kit, std::move(state));
}

std::vector<Command> pin_pending(const Kit& kit, const State& state) {
  const std::string index = get(state.data, "pin.current", "0");
  if (state.name == "PinEntryAwaited") {
    Fields f{{"ask", "pin"}, {"pin_index", index}};
    if (kit.card_pin) f["warning"] = std::string(kPinPolicyWarning);
    return {command("AskOperator", std::move(f))};
  }
  if (state.name == "PinGenerationRequested") {
    return {command("GeneratePin",
                    {{"pin_index", index},
                     {"procedure", get(state.data, "procedure")},
                     {"show_once", get(state.data, "pin.delivery") == "mailer" ? "no" : "yes"}})};
  }
  if (state.name == "PinMailerAddressAwaited") {
    return {command("AskOperator", {{"ask", "pin_mailer_address"}})};
  }
  if (state.name == "PinLetterIdAwaited") {
    Fields f{{"ask", "pin_letter_id"}, {"pin_index", index}};
    // Asked again after the CM host refused the letter: the operator is told which and why.
    const std::string refused = item("pin", std::stoi(index), "refused_letter_id");
    if (has(state.data, refused)) {
      f["refused_letter_id"] = get(state.data, refused);
      f["reason"] = get(state.data, item("pin", std::stoi(index), "refusal"));
    }
    return {command("AskOperator", std::move(f))};
  }
  if (state.name == "PinLetterResolutionRequested") {
    Fields f{{"pin_index", index},
             {"letter_id", get(state.data, item("pin", std::stoi(index), "letter_id"))}};
    // A card with two PINs takes its PIN and its PUK from one PIN/PUK letter.
    if (std::stoi(index) + 1 < get_int(state.data, "pin.count", 1)) {
      f["pin_count"] = get(state.data, "pin.count");
    }
    return {command("ResolvePinLetter", std::move(f))};
  }
  return {};
}

namespace {
Result<int> check_pin_index(const State& from, const Event& event) {
  const int current = get_int(from.data, "pin.current", 0);
  if (!has(event.fields, "pin_index")) return current;
  PF_ASSIGN_OR_RETURN(int index, need_int(event, "pin_index", 0, 1));
  if (index != current) {
    return invalid(event.type + " is for PIN " + std::to_string(index) + " but PIN " +
                   std::to_string(current) + " is being set");
  }
  return index;
}
}  // namespace

Result<Transition> on_pin_event(const Kit& kit, const State& from, const Event& event) {
  PF_ASSIGN_OR_RETURN(int index, check_pin_index(from, event));
  State to{"", from.data};
  const std::string& type = event.type;
  if (type == "PinEntered" || type == "PinGenerated" || type == "PinLetterResolved") {
    PF_ASSIGN_OR_RETURN(std::string ref, need(event, "pin_ref"));
    to.data[item("pin", index, "ref")] = ref;
    if (type == "PinEntered") to.data[item("pin", index, "source")] = "entered";
    if (type == "PinLetterResolved") {
      to.data[item("pin", index, "source")] = "letter";
      if (has(event.fields, "puk_ref")) {
        // A PIN/PUK letter: the next PIN (the card's PUK) comes from the same letter.
        if (index + 1 >= get_int(from.data, "pin.count", 1)) {
          return invalid("PinLetterResolved carries a PUK for a token with one PIN");
        }
        to.data[item("pin", index + 1, "ref")] = get(event.fields, "puk_ref");
        to.data[item("pin", index + 1, "source")] = "letter";
        to.data[item("pin", index + 1, "letter_id")] = get(from.data, item("pin", index, "letter_id"));
      }
    }
    to.name = from.name;
    return kit.after_pin_obtained(to);
  }
  if (type == "PinEntryCancelled") {
    // The manual's rule: a cancelled entry falls back to a generated PIN, shown once.
    to.name = "PinGenerationRequested";
    to.data[item("pin", index, "source")] = "generated";
    to.data[item("pin", index, "entry_cancelled")] = "yes";
    return enter(kit, std::move(to));
  }
  if (type == "PinMailerAddressEntered") {
    PF_ASSIGN_OR_RETURN(std::string address, need(event, "address"));
    auto at = address.find('@');
    if (at == std::string::npos || at == 0 || at + 1 == address.size()) {
      return invalid("PinMailerAddressEntered: '" + address + "' is not an e-mail address");
    }
    to.name = "PinGenerationRequested";
    to.data["pin.mailer_address"] = address;
    return enter(kit, std::move(to));
  }
  if (type == "PinLetterIdEntered") {
    PF_ASSIGN_OR_RETURN(std::string letter, need(event, "letter_id"));
    to.name = "PinLetterResolutionRequested";
    to.data[item("pin", index, "letter_id")] = letter;
    to.data.erase(item("pin", index, "refused_letter_id"));
    to.data.erase(item("pin", index, "refusal"));
    return enter(kit, std::move(to));
  }
  if (type == "PinLetterRefused") {
    // The CM host will not bind that letter (unknown, bound already, no PUK for a card with
    // two PINs): the operator names another; asking the CM host again would not help.
    PF_ASSIGN_OR_RETURN(std::string reason, need(event, "reason"));
    to.name = "PinLetterIdAwaited";
    to.data[item("pin", index, "refused_letter_id")] = get(from.data, item("pin", index, "letter_id"));
    to.data[item("pin", index, "refusal")] = reason;
    to.data.erase(item("pin", index, "letter_id"));
    return enter(kit, std::move(to));
  }
  return invalid("not a PIN event: " + type);
}

bool pin_needs_delivery(const State& state, int index) {
  return get(state.data, item("pin", index, "source")) == "generated";
}

Command pin_delivery_command(const State& state, int index) {
  const std::string ref = get(state.data, item("pin", index, "ref"));
  if (get(state.data, "pin.delivery") == "mailer" &&
      !is_yes(state.data, item("pin", index, "entry_cancelled"))) {
    // A card with two PINs: one letter for both, the PIN and then the PUK.
    if (index > 0 && is_yes(state.data, item("pin", index - 1, "in_next_letter"))) {
      return command("QueuePinLetter", {{"address", get(state.data, "pin.mailer_address")},
                                        {"pin_index", std::to_string(index)},
                                        {"pin_ref", get(state.data, item("pin", index - 1, "ref"))},
                                        {"puk_ref", ref}});
    }
    return command("QueuePinLetter", {{"address", get(state.data, "pin.mailer_address")},
                                      {"pin_index", std::to_string(index)},
                                      {"pin_ref", ref}});
  }
  return command("ShowPinOnce", {{"pin_index", std::to_string(index)}, {"pin_ref", ref}});
}

std::vector<Command> common_pending(const State& state) {
  const Fields& d = state.data;
  if (state.name == kSuspendedAwaitingCard) {
    return {command("AskOperator", {{"ask", "reinsert_card"},
                                    {"token_serial", get(d, "token_serial")},
                                    {"reason", get(d, "suspend_reason")}})};
  }
  if (state.name == kSuspendedAwaitingRetry) {
    return {command("AskOperator", {{"ask", "retry"}, {"reason", get(d, "suspend_reason")}})};
  }
  if (state.name == kRollbackRequested) {
    Fields f;
    copy_prefixed(d, "object.", f, "object.");
    if (has(d, "token_serial")) {
      f["token_serial"] = get(d, "token_serial");
      return {command("RollbackCard", std::move(f))};
    }
    return {command("RemoveFiles", std::move(f))};
  }
  if (state.name == "SignaturePinAwaited") {
    Fields f{{"ask", "signature_pin"}};
    if (has(d, "officer.tries_left")) f["tries_left"] = get(d, "officer.tries_left");
    return {command("AskOperator", std::move(f))};
  }
  if (state.name == "SignatureRequested") {
    return {command("SignWithOfficer",
                    {{"pin_ref", get(d, "officer.pin_ref")},
                     {"attempt", get(d, "officer.attempt")},
                     {"transaction_id", transaction_id(get(d, "workflow_id"), "submit")}})};
  }
  return {};
}

}  // namespace persoflow::machines::wf
