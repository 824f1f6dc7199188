// The state-machine contract (DESIGN.md, "The state-machine contract").
//
// A machine is a pure function step(state, event) -> Transition{state, commands}. Everything
// nondeterministic (time, generated PINs, key handles, CM answers, card contents) enters as an
// Event. States, events and commands are plain values: a name and a sorted map of string fields,
// so the journal can store them byte for byte and replay can rebuild them.
//
// The transition table is data (a constexpr array of Rows) so it can be validated, drawn and
// covered by tests. A Row's handler computes the next state's data and the commands; the state it
// returns must be the `to` of one of the rows for that (from, event), so the table never lies.
// Several rows with the same (from, event) and different `to` are a guarded choice made by the
// handler.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "persoflow/common/status.hpp"

namespace persoflow::machines {

// Sorted by key, so the canonical encoding of a value is unique.
using Fields = std::map<std::string, std::string>;

struct State {
  std::string name;
  Fields data;
  friend bool operator==(const State&, const State&) = default;
};

// Past tense: CardInserted, CertificateIssued. `fields` carries what happened.
struct Event {
  std::string type;
  Fields fields;
  friend bool operator==(const Event&, const Event&) = default;
};

// Imperative: GenerateKeyOnCard, SubmitToCm. Executed by the actors after the journal commit.
struct Command {
  std::string type;
  Fields fields;
  friend bool operator==(const Command&, const Command&) = default;
};

struct Transition {
  State state;
  std::vector<Command> commands;
  friend bool operator==(const Transition&, const Transition&) = default;
};

// A handler: pure, deterministic, no I/O. Returns the next state (one of the row's targets for
// this (from, event)) and the commands to run, or a Status for an event whose payload is invalid.
using Handler = Result<Transition> (*)(const State& from, const Event& event);

struct Row {
  std::string_view from;
  std::string_view event;
  std::string_view to;
  // nullptr: move to `to` keeping the state's data, no commands.
  Handler handler = nullptr;
  // Shown on the drawing; the guard or action in words.
  std::string_view note = {};
};

struct MachineDef {
  std::string_view name;         // kebab-case: "issue-card"
  std::string_view description;  // one line for `persoflow machines list`
  std::string_view initial;      // the state a new workflow starts in
  std::span<const std::string_view> terminal;  // states that end the workflow
  std::span<const Row> rows;
};

}  // namespace persoflow::machines
