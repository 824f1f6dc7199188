// What the RA workflow machines (issue-card, update-card, issue-soft-token, reissue) share: the
// field conventions of their states, events and commands, the derived idempotency ids, and the
// handlers every workflow has (card removed / reinserted, CM unreachable / retry, cancel with
// rollback, the PIN sub-flow). Pure: standard library only, no I/O, no clock, no randomness.
//
// Field conventions (all values are strings):
// - Lists are indexed: "<list>.<i>.<attr>", i = 0, 1, 2, ... contiguous from 0 (the first index
//   with no field ends the list). E.g. "key.0.action" = "add", "key.1.action" = "blank".
// - Flags are "yes" / "no"; numbers are decimal.
// - Secrets never appear: a PIN is carried as a reference to the station's secret store
//   ("pin_ref", "key_ref") or a digest, never its value. Field names must not suggest a clear
//   value (no field named "pin", "puk", "password"); the machine tests check this.
// - Every workflow's first event carries "workflow_id"; CM idempotency keys (CMP transactionID)
//   and on-card key ids (CKA_ID) are derived from it, so a resumed or replayed workflow asks for
//   the same things again and the CM host / the card recognise them.
//
// Common states (same name in every machine that has them):
//   SuspendedAwaitingCard  the card was removed; "resume_state" is where the workflow goes back
//                          to when the same card (token_serial) is inserted; another card is
//                          refused with RefuseCard and nothing is written to it.
//   SuspendedAwaitingRetry the CM host stayed unreachable after the engine's retries;
//                          RetryRequested goes back to "resume_state", re-issuing its commands
//                          (same transactionID, so the CM host returns a stored answer).
//   RollbackRequested      RollbackCard / RemoveFiles issued for every object the workflow may
//                          have written ("object.<n>"); "outcome" says where it ends.
//   Done, Cancelled, Failed (terminal; Failed and Cancelled carry "reason").
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "persoflow/machines/machine.hpp"

namespace persoflow::machines::wf {

inline constexpr std::string_view kSuspendedAwaitingCard = "SuspendedAwaitingCard";
inline constexpr std::string_view kSuspendedAwaitingRetry = "SuspendedAwaitingRetry";
inline constexpr std::string_view kRollbackRequested = "RollbackRequested";
inline constexpr std::string_view kDone = "Done";
inline constexpr std::string_view kCancelled = "Cancelled";
inline constexpr std::string_view kFailed = "Failed";

// The warning shown with a PIN entered at the RA for a card.
inline constexpr std::string_view kPinPolicyWarning =
    "the PIN entered is not checked against the card's PIN policy; a PIN that violates it may "
    "leave the card unusable";

// ----- Field access -----

// The value, or `fallback` when absent.
std::string get(const Fields& fields, std::string_view key, std::string_view fallback = {});
bool has(const Fields& fields, std::string_view key);
bool is_yes(const Fields& fields, std::string_view key);
// Decimal value of a field, or `fallback` when absent or not a number.
int get_int(const Fields& fields, std::string_view key, int fallback);

// The non-empty value of an event field, or kInvalidArgument naming the event and the field.
Result<std::string> need(const Event& event, std::string_view key);
// A decimal field in [min, max].
Result<int> need_int(const Event& event, std::string_view key, int min, int max);
// A field whose value is one of `allowed` (or absent: `fallback`, when fallback is non-empty).
Result<std::string> need_one_of(const Event& event, std::string_view key,
                                std::initializer_list<std::string_view> allowed,
                                std::string_view fallback = {});

// ----- Indexed lists -----

std::string item(std::string_view list, int index, std::string_view attr);
std::string item(std::string_view list, int index);  // "<list>.<i>"
// Number of items: the first i for which no field starts with "<list>.<i>." or equals "<list>.<i>".
int list_size(const Fields& fields, std::string_view list);
// Copies every field "<prefix>..." of `from` into `to` as "<new_prefix>...".
void copy_prefixed(const Fields& from, std::string_view prefix, Fields& to,
                   std::string_view new_prefix);
void erase_prefixed(Fields& fields, std::string_view prefix);
bool any_prefixed(const Fields& fields, std::string_view prefix);
// Appends `value` as the next "<list>.<n>" item unless already present.
void append_unique(Fields& fields, std::string_view list, const std::string& value);
std::vector<std::string> values(const Fields& fields, std::string_view list);
// Every "<list>.<i>..." field of the event has i < size (an entry the card has).
Status check_entries(const Event& event, std::string_view list, int size);

// ----- Derived ids -----

// 32 lowercase hex digits, a deterministic function of (workflow_id, purpose): two FNV-1a 64
// hashes with different offsets. Not cryptographic: an idempotency key, unique per workflow step.
std::string derive_id(std::string_view workflow_id, std::string_view purpose);
// The CMP transactionID of a workflow step (e.g. "submit", "archive/2", "revoke").
std::string transaction_id(std::string_view workflow_id, std::string_view step);
// The CKA_ID (hex) of the key a workflow generates on a card for an entry.
std::string card_key_id(std::string_view workflow_id, std::string_view entry);

// ----- Search criteria for archived keys and certificates -----

// "serial:<hex>", "id:<decimal>", "subject:<text>" (and "auto" where `allow_auto`); returns an
// error naming what is wrong.
Status check_search(std::string_view search, bool allow_auto);

// ----- Building transitions -----

Command command(std::string type, Fields fields = {});
Status invalid(const std::string& message);

// What a machine tells the common handlers: how to re-derive the commands a state issues when it
// is entered or resumed (so a resumed workflow re-issues exactly its outstanding intents), and
// the state the PIN sub-flow continues to once a PIN reference is known.
struct Kit {
  std::vector<Command> (*pending)(const State& state);
  // Called with the state data after "pin.<i>.ref" was recorded.
  Result<Transition> (*after_pin_obtained)(const State& state);
  bool card_pin;  // PIN for a card (warn about the card's PIN policy) rather than a soft token
};

// Transition into `state`, issuing its pending commands.
Transition enter(const Kit& kit, State state);
// Moves to Failed with `reason`, rolling back first when objects may have been written.
Transition fail(const Kit& kit, const State& from, const std::string& reason);

// Common handlers (see the states above). Each needs the event fields documented in
// docs/workflows.md.
Result<Transition> on_card_removed(const Kit& kit, const State& from, const Event& event);
Result<Transition> on_card_reinserted(const Kit& kit, const State& from, const Event& event);
Result<Transition> on_cm_unreachable(const Kit& kit, const State& from, const Event& event);
Result<Transition> on_retry_requested(const Kit& kit, const State& from, const Event& event);
Result<Transition> on_cancel_requested(const Kit& kit, const State& from, const Event& event);
Result<Transition> on_rollback_confirmed(const Kit& kit, const State& from, const Event& event);
Result<Transition> on_cm_refused(const Kit& kit, const State& from, const Event& event);
// Officer Signature PIN: SignaturePinAwaited --OfficerPinEntered--> SignatureRequested;
// SignatureRequested --OfficerPinRejected--> SignaturePinAwaited (tries left) or Failed.
Result<Transition> on_officer_pin_entered(const Kit& kit, const State& from, const Event& event);
Result<Transition> on_officer_pin_rejected(const Kit& kit, const State& from, const Event& event);

// ----- PIN sub-flow -----
// Data: "pin.delivery" (entered|generated|mailer|letter), "pin.count" (1|2), "pin.current",
// "pin.<i>.ref", "pin.<i>.source" (entered|generated|letter), "pin.mailer_address",
// "pin.<i>.in_next_letter" (yes: mailed with the next PIN, as issue-card's PIN and PUK),
// "pin.<i>.letter_id", "pin.<i>.refused_letter_id" and "pin.<i>.refusal" (the CM host refused
// the letter: asked again with the reason). A PIN/PUK letter (PinLetterResolved with puk_ref)
// fills "pin.<i+1>.*" too: the next PIN needs no letter of its own.
// States: PinEntryAwaited, PinGenerationRequested, PinMailerAddressAwaited, PinLetterIdAwaited,
// PinLetterResolutionRequested; then kit.after_pin_obtained.

// Starts obtaining PIN number `index`.
Transition pin_begin(const Kit& kit, State state, int index);
// The commands of the PIN sub-flow states (empty for other states).
std::vector<Command> pin_pending(const Kit& kit, const State& state);
Result<Transition> on_pin_event(const Kit& kit, const State& from, const Event& event);

// The common handlers bound to one machine's kit, as plain functions for its transition table
// (one instantiation per kit, so the rows of a guarded choice share one handler):
// `using Common = wf::Bound<kKit>;` then `Common::card_removed` in the rows.
template <const Kit& kKit>
struct Bound {
  static Result<Transition> card_removed(const State& s, const Event& e) {
    return on_card_removed(kKit, s, e);
  }
  static Result<Transition> card_reinserted(const State& s, const Event& e) {
    return on_card_reinserted(kKit, s, e);
  }
  static Result<Transition> cm_unreachable(const State& s, const Event& e) {
    return on_cm_unreachable(kKit, s, e);
  }
  static Result<Transition> retry_requested(const State& s, const Event& e) {
    return on_retry_requested(kKit, s, e);
  }
  static Result<Transition> cancel_requested(const State& s, const Event& e) {
    return on_cancel_requested(kKit, s, e);
  }
  static Result<Transition> rollback_confirmed(const State& s, const Event& e) {
    return on_rollback_confirmed(kKit, s, e);
  }
  static Result<Transition> cm_refused(const State& s, const Event& e) {
    return on_cm_refused(kKit, s, e);
  }
  static Result<Transition> officer_pin_entered(const State& s, const Event& e) {
    return on_officer_pin_entered(kKit, s, e);
  }
  static Result<Transition> officer_pin_rejected(const State& s, const Event& e) {
    return on_officer_pin_rejected(kKit, s, e);
  }
  static Result<Transition> pin_event(const State& s, const Event& e) {
    return on_pin_event(kKit, s, e);
  }
};
// For a card: whether PIN `index` must be delivered (shown once or mailed) after it is set, and
// the command that does it.
bool pin_needs_delivery(const State& state, int index);
Command pin_delivery_command(const State& state, int index);

// Commands the suspension and rollback states issue when entered or resumed.
std::vector<Command> common_pending(const State& state);

}  // namespace persoflow::machines::wf
