// Running, checking and drawing machines defined by machine.hpp, and the canonical encoding of
// their values for the journal. All pure: no I/O, no clock, no randomness.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "persoflow/machines/machine.hpp"

namespace persoflow::machines {

// The state a new workflow of this machine starts in (empty data).
State initial_state(const MachineDef& machine);
bool is_terminal(const MachineDef& machine, std::string_view state_name);

// One step. An event the state does not accept is Errc::kRejected naming the state, the event
// and the events the state accepts; a handler returning a state that is not a target of its
// (from, event) rows is a bug in the machine and aborts.
Result<Transition> step(const MachineDef& machine, const State& state, const Event& event);

// Folds events through step from the initial state; fails at the first rejected event.
Result<State> fold(const MachineDef& machine, const std::vector<Event>& events);

struct ValidationReport {
  bool ok = true;
  std::vector<std::string> problems;  // one sentence each: unreachable state, dead end, ...
};
// Every state reachable from the initial state; every non-terminal state can reach a terminal
// one; terminal states declared and present; no duplicate (from, event, to) row.
ValidationReport validate(const MachineDef& machine);

// All states named in the table (initial first, then in order of first appearance).
std::vector<std::string> states_of(const MachineDef& machine);
// The event types a state accepts, sorted.
std::vector<std::string> accepted_events(const MachineDef& machine, std::string_view state_name);

std::string render_dot(const MachineDef& machine);
std::string render_mermaid(const MachineDef& machine);
// A plain-text table for people: header (name, description, initial, terminal states), then one
// aligned line per row: from, event, to, note.
std::string render_table(const MachineDef& machine);

// Canonical bytes: a unique encoding for equal values (fields sorted, lengths explicit), so
// replay can compare byte for byte and the journal can hash. decode_* reject anything that
// encode_* cannot have produced with Errc::kCorrupt.
std::string encode(const State& state);
std::string encode(const Event& event);
std::string encode(const Command& command);
Result<State> decode_state(std::string_view bytes);
Result<Event> decode_event(std::string_view bytes);
Result<Command> decode_command(std::string_view bytes);

// The machines this build knows, for `persoflow machines list|show` and for resuming workflows
// by the machine name recorded in the journal. A machine registers itself from its own file
// with PF_REGISTER_MACHINE(ident, def); names are unique.
std::vector<const MachineDef*> all_machines();
const MachineDef* find_machine(std::string_view name);

struct MachineRegistrar {
  explicit MachineRegistrar(const MachineDef* def);
};

}  // namespace persoflow::machines

#define PF_REGISTER_MACHINE(ident, def) \
  static const ::persoflow::machines::MachineRegistrar pf_machine_##ident(&(def))
