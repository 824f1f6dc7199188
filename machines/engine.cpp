// Running, checking and drawing machines (engine.hpp). Pure: standard library only, no I/O, no
// clock, no randomness, so step() and fold() give the same answer on every run and replay.
#include "persoflow/machines/engine.hpp"

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

namespace persoflow::machines {
namespace {

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

std::vector<const Row*> rows_for(const MachineDef& machine, std::string_view from,
                                 std::string_view event) {
  std::vector<const Row*> out;
  for (const Row& row : machine.rows) {
    if (row.from == from && row.event == event) out.push_back(&row);
  }
  return out;
}

}  // namespace

State initial_state(const MachineDef& machine) { return State{std::string(machine.initial), {}}; }

bool is_terminal(const MachineDef& machine, std::string_view state_name) {
  return std::find(machine.terminal.begin(), machine.terminal.end(), state_name) !=
         machine.terminal.end();
}

std::vector<std::string> states_of(const MachineDef& machine) {
  std::vector<std::string> out;
  auto add = [&out](std::string_view s) {
    if (s.empty()) return;
    if (std::find(out.begin(), out.end(), s) == out.end()) out.emplace_back(s);
  };
  add(machine.initial);
  for (const Row& row : machine.rows) {
    add(row.from);
    add(row.to);
  }
  return out;
}

std::vector<std::string> accepted_events(const MachineDef& machine, std::string_view state_name) {
  std::set<std::string> events;
  for (const Row& row : machine.rows) {
    if (row.from == state_name) events.emplace(row.event);
  }
  return {events.begin(), events.end()};
}

Result<Transition> step(const MachineDef& machine, const State& state, const Event& event) {
  std::vector<const Row*> rows = rows_for(machine, state.name, event.type);
  if (rows.empty()) {
    std::vector<std::string> accepted = accepted_events(machine, state.name);
    std::string accepts = accepted.empty() ? "none" : join(accepted, ", ");
    return make_status(Errc::kRejected, "machine '" + std::string(machine.name) + "': state '" +
                                            state.name + "' does not accept event '" + event.type +
                                            "' (accepts: " + accepts + ")");
  }
  const Row* with_handler = nullptr;
  for (const Row* row : rows) {
    if (row->handler) {
      with_handler = row;
      break;
    }
  }
  if (!with_handler) return Transition{State{std::string(rows.front()->to), state.data}, {}};

  PF_ASSIGN_OR_RETURN(Transition t, with_handler->handler(state, event));
  bool target_ok = std::any_of(rows.begin(), rows.end(),
                               [&t](const Row* row) { return row->to == t.state.name; });
  if (!target_ok) {
    std::string msg = "machine '" + std::string(machine.name) + "': handler of " + state.name +
                      " --" + event.type + "--> returned state '" + t.state.name +
                      "', which is not a target of its rows";
    check_failed("handler target in table", __FILE__, __LINE__, msg.c_str());
  }
  return t;
}

Result<State> fold(const MachineDef& machine, const std::vector<Event>& events) {
  State state = initial_state(machine);
  for (std::size_t i = 0; i < events.size(); ++i) {
    auto t = step(machine, state, events[i]);
    if (!t.is_ok()) return t.status().with_context("event " + std::to_string(i));
    state = std::move(t.value().state);
  }
  return state;
}

ValidationReport validate(const MachineDef& machine) {
  ValidationReport report;
  auto problem = [&report](std::string text) {
    report.ok = false;
    report.problems.push_back(std::move(text));
  };
  const std::string name(machine.name);
  if (machine.name.empty()) problem("the machine has no name");
  if (machine.initial.empty()) problem("machine '" + name + "' declares no initial state");
  if (machine.rows.empty()) problem("machine '" + name + "' has no transitions");
  if (machine.terminal.empty()) problem("machine '" + name + "' declares no terminal state");

  std::vector<std::string> states = states_of(machine);
  auto known = [&states](std::string_view s) {
    return std::find(states.begin(), states.end(), s) != states.end();
  };
  std::set<std::string_view> seen_terminal;
  for (std::string_view t : machine.terminal) {
    if (!seen_terminal.insert(t).second) {
      problem("terminal state '" + std::string(t) + "' is declared twice");
    }
    bool in_table = std::any_of(machine.rows.begin(), machine.rows.end(),
                                [t](const Row& r) { return r.from == t || r.to == t; });
    if (!in_table) problem("terminal state '" + std::string(t) + "' appears in no transition");
  }

  std::set<std::tuple<std::string_view, std::string_view, std::string_view>> triples;
  std::map<std::pair<std::string_view, std::string_view>, std::vector<const Row*>> groups;
  for (const Row& row : machine.rows) {
    if (row.from.empty() || row.event.empty() || row.to.empty()) {
      problem("a transition has an empty state or event name");
      continue;
    }
    if (!triples.emplace(row.from, row.event, row.to).second) {
      problem("duplicate transition " + std::string(row.from) + " --" + std::string(row.event) +
              "--> " + std::string(row.to));
    }
    groups[{row.from, row.event}].push_back(&row);
  }
  for (const auto& [key, rows] : groups) {
    std::set<std::string_view> targets;
    for (const Row* r : rows) targets.insert(r->to);
    if (targets.size() < 2) continue;  // a plain duplicate is reported above
    std::string where = std::string(key.first) + " --" + std::string(key.second) + "-->";
    Handler h = rows.front()->handler;
    bool same =
        std::all_of(rows.begin(), rows.end(), [h](const Row* r) { return r->handler == h; });
    if (!h) {
      problem("choice " + where + " has several targets but no handler to choose among them");
    } else if (!same) {
      problem("choice " + where + " has rows with different handlers");
    }
  }

  // Forward reachability from the initial state.
  std::set<std::string> reachable;
  if (!machine.initial.empty()) {
    std::deque<std::string> todo{std::string(machine.initial)};
    reachable.insert(std::string(machine.initial));
    while (!todo.empty()) {
      std::string s = todo.front();
      todo.pop_front();
      for (const Row& row : machine.rows) {
        if (row.from == s && reachable.emplace(row.to).second) todo.emplace_back(row.to);
      }
    }
  }
  // Backward reachability from the terminal states.
  std::set<std::string> can_finish;
  std::deque<std::string> todo;
  for (std::string_view t : machine.terminal) {
    if (known(t) && can_finish.emplace(t).second) todo.emplace_back(t);
  }
  while (!todo.empty()) {
    std::string s = todo.front();
    todo.pop_front();
    for (const Row& row : machine.rows) {
      if (row.to == s && can_finish.emplace(row.from).second) todo.emplace_back(row.from);
    }
  }
  for (const std::string& s : states) {
    if (!reachable.count(s)) {
      problem("state '" + s + "' is unreachable from the initial state '" +
              std::string(machine.initial) + "'");
    }
    if (is_terminal(machine, s)) continue;
    if (accepted_events(machine, s).empty()) {
      problem("state '" + s + "' is a dead end: not terminal and accepts no event");
    } else if (!can_finish.count(s)) {
      problem("state '" + s + "' cannot reach any terminal state");
    }
  }
  return report;
}

// ----- Drawing -----

namespace {

std::string dot_quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

// Mermaid takes the rest of the line as the label; keep it on one line and free of the
// characters that end a statement.
std::string mermaid_label(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\n' || c == '\r' || c == ';') c = ' ';
    if (c == ':') c = '-';
    out += c;
  }
  return out;
}

std::string edge_label(const Row& row) {
  std::string label(row.event);
  if (!row.note.empty()) label += " [" + std::string(row.note) + "]";
  return label;
}

}  // namespace

std::string render_dot(const MachineDef& machine) {
  std::ostringstream out;
  out << "digraph " << dot_quote(machine.name) << " {\n";
  out << "  rankdir=LR;\n";
  out << "  node [shape=box, style=rounded];\n";
  out << "  \"[*]\" [shape=point, label=\"\"];\n";
  for (const std::string& s : states_of(machine)) {
    out << "  " << dot_quote(s);
    if (is_terminal(machine, s)) out << " [peripheries=2]";
    out << ";\n";
  }
  out << "  \"[*]\" -> " << dot_quote(machine.initial) << ";\n";
  for (const Row& row : machine.rows) {
    out << "  " << dot_quote(row.from) << " -> " << dot_quote(row.to)
        << " [label=" << dot_quote(edge_label(row)) << "];\n";
  }
  out << "}\n";
  return out.str();
}

std::string render_mermaid(const MachineDef& machine) {
  std::ostringstream out;
  out << "stateDiagram-v2\n";
  out << "    [*] --> " << machine.initial << "\n";
  for (const Row& row : machine.rows) {
    out << "    " << row.from << " --> " << row.to << " : " << mermaid_label(edge_label(row))
        << "\n";
  }
  for (std::string_view t : machine.terminal) out << "    " << t << " --> [*]\n";
  return out.str();
}

std::string render_table(const MachineDef& machine) {
  std::size_t w_from = 4, w_event = 5, w_to = 2;
  for (const Row& row : machine.rows) {
    w_from = std::max(w_from, row.from.size());
    w_event = std::max(w_event, row.event.size());
    w_to = std::max(w_to, row.to.size());
  }
  auto pad = [](std::string_view s, std::size_t w) {
    std::string out(s);
    out.resize(std::max(w, s.size()), ' ');
    return out;
  };
  std::ostringstream out;
  out << "machine " << machine.name << ": " << machine.description << "\n";
  out << "initial: " << machine.initial << "\n";
  std::vector<std::string> terminal(machine.terminal.begin(), machine.terminal.end());
  out << "terminal: " << join(terminal, ", ") << "\n\n";
  out << pad("from", w_from) << "  " << pad("event", w_event) << "  " << pad("to", w_to)
      << "  note\n";
  for (const Row& row : machine.rows) {
    std::string line = pad(row.from, w_from) + "  " + pad(row.event, w_event) + "  " +
                       pad(row.to, w_to) + "  " + std::string(row.note);
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << "\n";
  }
  return out.str();
}

// ----- Registry -----

namespace {
std::vector<const MachineDef*>& registry() {
  static std::vector<const MachineDef*> machines;
  return machines;
}
}  // namespace

MachineRegistrar::MachineRegistrar(const MachineDef* def) {
  PF_CHECK(def != nullptr, "registering a null machine");
  PF_CHECK(find_machine(def->name) == nullptr, "two machines registered under one name");
  registry().push_back(def);
}

std::vector<const MachineDef*> all_machines() {
  std::vector<const MachineDef*> out = registry();
  std::sort(out.begin(), out.end(),
            [](const MachineDef* a, const MachineDef* b) { return a->name < b->name; });
  return out;
}

const MachineDef* find_machine(std::string_view name) {
  for (const MachineDef* def : registry()) {
    if (def->name == name) return def;
  }
  return nullptr;
}

}  // namespace persoflow::machines
