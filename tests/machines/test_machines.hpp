// Machines defined only for the engine's tests: `ticket`, a small well-formed machine with
// handlers, commands, a guarded choice and an absorbing terminal state; and `broken`, a table
// with every defect the validator must find. Never registered for users.
#pragma once

#include <string>
#include <string_view>

#include "persoflow/machines/machine.hpp"

namespace persoflow::machines::test {

// Idle --Opened--> Open --Assigned--> Assigned --Resolved[fixed]--> Done
//                   ^                     |--Resolved[not fixed]--> Open
//   Open/Assigned --Cancelled--> Cancelled;  Done --Cancelled--> Done (absorbs)
inline Result<Transition> on_opened(const State& from, const Event& event) {
  auto title = event.fields.find("title");
  if (title == event.fields.end() || title->second.empty()) {
    return make_status(Errc::kInvalidArgument, "Opened needs a non-empty 'title'");
  }
  State to{"Open", from.data};
  to.data["title"] = title->second;
  return Transition{to, {Command{"NotifyOwner", {{"title", title->second}}}}};
}

inline Result<Transition> on_assigned(const State& from, const Event& event) {
  auto who = event.fields.find("assignee");
  if (who == event.fields.end()) {
    return make_status(Errc::kInvalidArgument, "Assigned needs an 'assignee'");
  }
  State to{"Assigned", from.data};
  to.data["assignee"] = who->second;
  auto count = from.data.find("assignments");
  int n = count == from.data.end() ? 0 : std::stoi(count->second);
  to.data["assignments"] = std::to_string(n + 1);
  return Transition{to, {Command{"NotifyAssignee", {{"assignee", who->second}}}}};
}

inline Result<Transition> on_resolved(const State& from, const Event& event) {
  auto outcome = event.fields.find("outcome");
  if (outcome != event.fields.end() && outcome->second == "fixed") {
    State to{"Done", from.data};
    return Transition{to, {Command{"CloseTicket", {{"title", from.data.at("title")}}}}};
  }
  State to{"Open", from.data};
  to.data.erase("assignee");
  return Transition{to, {}};
}

inline constexpr std::string_view kTicketTerminal[] = {"Done", "Cancelled"};
inline constexpr Row kTicketRows[] = {
    {"Idle", "Opened", "Open", on_opened, "records title / NotifyOwner"},
    {"Open", "Assigned", "Assigned", on_assigned, "counts assignments / NotifyAssignee"},
    {"Open", "Cancelled", "Cancelled"},
    {"Assigned", "Resolved", "Done", on_resolved, "outcome = fixed / CloseTicket"},
    {"Assigned", "Resolved", "Open", on_resolved, "outcome != fixed"},
    {"Assigned", "Cancelled", "Cancelled"},
    {"Done", "Cancelled", "Done", nullptr, "terminal absorbs"},
};
inline constexpr MachineDef kTicket{"ticket", "a test ticket: open, assign, resolve", "Idle",
                                    kTicketTerminal, kTicketRows};

// Start --Go--> Middle --Finish--> End
// Orphan --Go--> End          (Orphan unreachable)
// Middle --Stall--> Trap      (Trap: dead end, accepts nothing)
// Middle --Spin--> Loop, Loop --Spin--> Loop2, Loop2 --Spin--> Loop  (cannot reach End)
// Start --Go--> Middle twice  (duplicate row)
inline constexpr std::string_view kBrokenTerminal[] = {"End"};
inline constexpr Row kBrokenRows[] = {
    {"Start", "Go", "Middle"},   {"Middle", "Finish", "End"}, {"Orphan", "Go", "End"},
    {"Middle", "Stall", "Trap"}, {"Middle", "Spin", "Loop"},  {"Loop", "Spin", "Loop2"},
    {"Loop2", "Spin", "Loop"},   {"Start", "Go", "Middle"},
};
inline constexpr MachineDef kBroken{"broken", "a table with every defect", "Start", kBrokenTerminal,
                                    kBrokenRows};

}  // namespace persoflow::machines::test
