// Test harness for the RA workflow machines: a Driver that steps a machine through a scenario
// and logs every step taken; generic checks run over the log of all scenarios of a machine:
// one test per transition row (the row was taken, and re-stepping its recorded input gives the
// same transition byte for byte), the common rows (card removed / reinserted, cancel) from every
// state that has them, replay by fold, field names that could hold a clear PIN, and the diagram
// in the header and in tests/golden/machines/ against render_mermaid.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "persoflow/machines/coverage.hpp"
#include "persoflow/machines/engine.hpp"
#include "persoflow/machines/workflow_support.hpp"
#include "test_support.hpp"

namespace persoflow::machines {

// Readable failure messages for the values machines exchange.
inline void print_fields(const Fields& f, std::ostream* os) {
  *os << "{";
  bool first = true;
  for (const auto& [k, v] : f) {
    *os << (first ? "" : ", ") << k << "=" << v;
    first = false;
  }
  *os << "}";
}
inline void PrintTo(const State& s, std::ostream* os) {
  *os << s.name;
  print_fields(s.data, os);
}
inline void PrintTo(const Command& c, std::ostream* os) {
  *os << c.type;
  print_fields(c.fields, os);
}
inline void PrintTo(const Transition& t, std::ostream* os) {
  PrintTo(t.state, os);
  for (const Command& c : t.commands) {
    *os << " / ";
    PrintTo(c, os);
  }
}

}  // namespace persoflow::machines

namespace persoflow::machines::harness {

struct Taken {
  State from;
  Event event;
  Transition to;
};

using Log = std::vector<Taken>;

inline Event ev(std::string type, Fields fields = {}) {
  return Event{std::move(type), std::move(fields)};
}

inline std::string describe(const std::vector<Command>& cmds) {
  std::string out;
  for (const Command& c : cmds) out += (out.empty() ? "" : ", ") + c.type;
  return out.empty() ? "(none)" : out;
}

class Driver {
 public:
  Driver(const MachineDef& machine, Log* log = nullptr)
      : machine_(machine), log_(log), state_(initial_state(machine)) {}

  // Steps with an event the state must accept; records it.
  const std::vector<Command>& on(const std::string& type, Fields fields = {}) {
    Event e = ev(type, std::move(fields));
    auto t = step(machine_, state_, e);
    if (!t.is_ok()) {
      ADD_FAILURE() << machine_.name << ": " << state_.name << " --" << type
                    << "--> failed: " << t.status().message();
      last_.clear();
      return last_;
    }
    if (log_) log_->push_back(Taken{state_, e, t.value()});
    events_.push_back(e);
    state_ = t.value().state;
    last_ = t.value().commands;
    return last_;
  }

  // Steps with an event that must be refused (rejected or invalid); the state stays.
  std::string refused(const std::string& type, Fields fields = {}) {
    auto t = step(machine_, state_, ev(type, std::move(fields)));
    if (t.is_ok()) {
      ADD_FAILURE() << machine_.name << ": " << state_.name << " accepted " << type
                    << " and went to " << t.value().state.name;
      return {};
    }
    return t.status().message();
  }

  const State& state() const { return state_; }
  const std::string& at() const { return state_.name; }
  std::string data(const std::string& key) const { return wf::get(state_.data, key); }
  const std::vector<Command>& last() const { return last_; }
  const std::vector<Event>& events() const { return events_; }

  bool issued(const std::string& type) const {
    for (const Command& c : last_) {
      if (c.type == type) return true;
    }
    return false;
  }
  int count(const std::string& type) const {
    int n = 0;
    for (const Command& c : last_) n += c.type == type;
    return n;
  }
  // The first command of that type in the last transition (a failure when there is none).
  Command command(const std::string& type) const {
    for (const Command& c : last_) {
      if (c.type == type) return c;
    }
    ADD_FAILURE() << "no command " << type << " after reaching " << state_.name << "; got "
                  << describe(last_);
    return {};
  }
  std::string arg(const std::string& type, const std::string& field) const {
    return wf::get(command(type).fields, field);
  }

  // Replay: folding the recorded events gives the same state.
  void expect_replays() const {
    auto folded = fold(machine_, events_);
    ASSERT_TRUE(folded.is_ok()) << folded.status().message();
    EXPECT_EQ(folded.value(), state_);
  }

 private:
  const MachineDef& machine_;
  Log* log_;
  State state_;
  std::vector<Command> last_;
  std::vector<Event> events_;
};

using Scenario = void (*)(Driver&);
struct NamedScenario {
  const char* name;
  Scenario run;
};

// ----- Generic checks over the log of all scenarios -----

// A state as entered from another state, with the commands it issued on entry.
struct Snapshot {
  State state;
  std::vector<Command> commands;
};

inline std::map<std::string, std::vector<Snapshot>> entry_snapshots(const Log& log) {
  std::map<std::string, std::vector<Snapshot>> out;
  std::set<std::pair<std::string, bool>> seen;
  for (const Taken& t : log) {
    const State& s = t.to.state;
    if (s.name == t.from.name) continue;
    bool objects = wf::list_size(s.data, "object") > 0;
    if (!seen.emplace(s.name, objects).second) continue;
    out[s.name].push_back(Snapshot{s, t.to.commands});
  }
  return out;
}

// Takes the common rows (CardRemoved into SuspendedAwaitingCard, CardInserted out of it,
// CancelRequested) from every snapshot of their `from` state, checking what each must do, and
// appends the steps to the log.
inline void exercise_common_rows(const MachineDef& machine, Log& log) {
  auto snaps = entry_snapshots(log);
  auto take = [&](const State& from, const Event& e) -> Result<Transition> {
    auto t = step(machine, from, e);
    if (t.is_ok()) log.push_back(Taken{from, e, t.value()});
    return t;
  };
  for (const Row& row : machine.rows) {
    const std::string from(row.from), to(row.to), event(row.event);
    if (event == "CardRemoved" && to == wf::kSuspendedAwaitingCard) {
      for (const Snapshot& s : snaps[from]) {
        auto t = take(s.state, ev("CardRemoved", {{"reader", "r0"}}));
        ASSERT_TRUE(t.is_ok()) << t.status().message();
        EXPECT_EQ(t->state.name, to);
        std::string expected =
            from == wf::kSuspendedAwaitingRetry ? wf::get(s.state.data, "resume_state") : from;
        EXPECT_EQ(wf::get(t->state.data, "resume_state"), expected) << from;
        ASSERT_EQ(t->commands.size(), 1u);
        EXPECT_EQ(wf::get(t->commands[0].fields, "ask"), "reinsert_card");
      }
    } else if (event == "CardInserted" && from == wf::kSuspendedAwaitingCard) {
      if (to == wf::kSuspendedAwaitingCard) {
        for (const Snapshot& s : snaps[from]) {
          auto t = take(s.state, ev("CardInserted", {{"token_serial", "OTHER-CARD"}}));
          ASSERT_TRUE(t.is_ok()) << t.status().message();
          EXPECT_EQ(t->state.name, from);
          ASSERT_EQ(t->commands.size(), 1u);
          EXPECT_EQ(t->commands[0].type, "RefuseCard");
        }
        continue;
      }
      // Resume: remove the card in `to`, insert the same card: the state comes back exactly,
      // issuing the commands it issued when first entered (its outstanding intents).
      for (const Snapshot& s : snaps[to]) {
        if (wf::get(s.state.data, "token_serial").empty()) continue;
        auto removed = take(s.state, ev("CardRemoved"));
        ASSERT_TRUE(removed.is_ok()) << to << ": " << removed.status().message();
        auto back =
            take(removed->state,
                 ev("CardInserted", {{"token_serial", wf::get(s.state.data, "token_serial")}}));
        ASSERT_TRUE(back.is_ok()) << back.status().message();
        const State& expected = s.state;
        EXPECT_EQ(back->state, expected) << "resume into " << to;
        // One-shot commands of the entering transition (notices, revocations) are not
        // outstanding intents of the state.
        std::vector<Command> intents;
        for (const Command& c : s.commands) {
          if (c.type != "NotifyOperator" && c.type != "RevokeIssuedCertificates") {
            intents.push_back(c);
          }
        }
        EXPECT_EQ(back->commands, intents) << "resume into " << to;
      }
    } else if (event == "CancelRequested") {
      for (const Snapshot& s : snaps[from]) {
        auto t = take(s.state, ev("CancelRequested", {{"reason", "operator"}}));
        ASSERT_TRUE(t.is_ok()) << t.status().message();
        const bool objects = wf::list_size(s.state.data, "object") > 0;
        if (from == wf::kRollbackRequested) {
          EXPECT_EQ(t->state.name, from);
        } else if (from == wf::kSuspendedAwaitingCard) {
          EXPECT_EQ(t->state.name, objects ? from : std::string(wf::kCancelled));
        } else {
          EXPECT_EQ(t->state.name,
                    objects ? std::string(wf::kRollbackRequested) : std::string(wf::kCancelled));
        }
        if (t->state.name == wf::kRollbackRequested && from != wf::kRollbackRequested) {
          bool rollback = false;
          for (const Command& c : t->commands) {
            rollback |= c.type == "RollbackCard" || c.type == "RemoveFiles";
          }
          EXPECT_TRUE(rollback) << "cancel from " << from << " without a rollback command";
        }
      }
    }
  }
}

// One test per row: the row was taken by some scenario, and re-stepping the recorded input
// reproduces the recorded transition exactly (deterministic, so replay holds).
inline void check_row(const MachineDef& machine, const Log& log, std::size_t index) {
  const Row& row = machine.rows[index];
  for (const Taken& t : log) {
    if (t.from.name == row.from && t.event.type == row.event && t.to.state.name == row.to) {
      auto again = step(machine, t.from, t.event);
      ASSERT_TRUE(again.is_ok());
      EXPECT_EQ(again.value(), t.to);
      EXPECT_EQ(encode(again.value().state), encode(t.to.state));
      return;
    }
  }
  ADD_FAILURE() << "row never exercised by a scenario: " << row.from << " --" << row.event << "--> "
                << row.to;
}

// Transition coverage with the engine's RowCoverage: every row of the table was taken by some
// scenario (or by exercise_common_rows). Returns the rows never taken, one per line.
inline std::string uncovered_rows(const MachineDef& machine, const Log& log) {
  RowCoverage coverage(machine);
  for (const Taken& t : log) coverage.record(t.from.name, t.event.type, t.to.state.name);
  std::string missing;
  for (const std::string& row : coverage.uncovered()) missing += "\n  " + row;
  return missing;
}

inline std::string row_test_name(const MachineDef& machine, std::size_t index) {
  const Row& row = machine.rows[index];
  std::string name = "r" + std::to_string(index) + "_" + std::string(row.from) + "_" +
                     std::string(row.event) + "_" + std::string(row.to);
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

// Field names that would carry a secret in clear. A PIN travels as "pin_ref" (a handle in the
// station's secret store) or a digest; counts, indices and modes are named as such.
inline bool suggests_clear_secret(const std::string& name) {
  std::string lower;
  for (char c : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  // The leaf names the value ("pin.0.ref": a reference); the components before it are
  // namespaces.
  const std::string part =
      lower.substr(lower.rfind('.') == std::string::npos ? 0 : lower.rfind('.') + 1);
  for (const char* secret :
       {"pin", "puk", "password", "passphrase", "secret", "pin_code", "pin_value", "private_key",
        "so_pin", "user_pin", "signature_pin", "card_pin", "new_pin", "old_pin"}) {
    if (part == secret) return true;
  }
  const bool mentions = part.find("pin") != std::string::npos ||
                        part.find("puk") != std::string::npos ||
                        part.find("password") != std::string::npos;
  if (!mentions) return false;
  static const char* kSafeEndings[] = {"_ref",      "_digest",    "_index", "_count",
                                       "_delivery", "tries_left", "_id"};
  for (const char* end : kSafeEndings) {
    std::string e(end);
    if (part.size() >= e.size() && part.compare(part.size() - e.size(), e.size(), e) == 0) {
      return false;
    }
  }
  // "operator_pin" names a setting (none|required); its values are checked by the caller.
  return part != "operator_pin";
}

// The field names (and operator_pin values) of every step that would carry a PIN in clear.
inline std::string clear_pin_fields(const Log& log) {
  std::set<std::string> bad;
  auto check = [&bad](const Fields& f) {
    for (const auto& [k, v] : f) {
      if (suggests_clear_secret(k)) bad.insert(k);
      if (k == "operator_pin" && v != "none" && v != "required") bad.insert(k + "=" + v);
    }
  };
  for (const Taken& t : log) {
    check(t.from.data);
    check(t.event.fields);
    check(t.to.state.data);
    for (const Command& c : t.to.commands) check(c.fields);
  }
  std::string list;
  for (const std::string& b : bad) list += " " + b;
  return list;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline bool update_golden() {
  const char* u = std::getenv("PERSOFLOW_UPDATE_GOLDEN");
  return u && *u == '1';
}

// tests/golden/machines/<name>.mmd equals render_mermaid (PERSOFLOW_UPDATE_GOLDEN=1 rewrites);
// returns what differs, or "".
inline std::string golden_mismatch(const MachineDef& machine) {
  const std::string path =
      testing::source_dir() + "/tests/golden/machines/" + std::string(machine.name) + ".mmd";
  const std::string rendered = render_mermaid(machine);
  if (update_golden()) std::ofstream(path, std::ios::binary) << rendered;
  if (rendered == read_file(path)) return "";
  return path + " differs from the table; if intended, rerun with PERSOFLOW_UPDATE_GOLDEN=1 and "
                "commit it";
}

// The header's "// BEGIN MERMAID" ... "// END MERMAID" block equals render_mermaid, each line
// prefixed with "// " (PERSOFLOW_UPDATE_GOLDEN=1 rewrites the block); returns what differs, or "".
inline std::string header_diagram_mismatch(const MachineDef& machine, const std::string& header) {
  const std::string path = testing::source_dir() + "/include/persoflow/machines/" + header;
  std::string text = read_file(path);
  const std::string begin = "// BEGIN MERMAID\n", end = "// END MERMAID\n";
  auto b = text.find(begin);
  auto e = text.find(end);
  if (b == std::string::npos || e == std::string::npos) return path + " has no MERMAID block";
  std::string block;
  std::stringstream lines(render_mermaid(machine));
  std::string line;
  while (std::getline(lines, line)) block += "// " + line + "\n";
  const std::string current = text.substr(b + begin.size(), e - b - begin.size());
  if (update_golden() && current != block) {
    text = text.substr(0, b + begin.size()) + block + text.substr(e);
    std::ofstream(path, std::ios::binary) << text;
    return "";
  }
  if (current == block) return "";
  return "the diagram in " + path + " differs from the table; rerun with PERSOFLOW_UPDATE_GOLDEN=1";
}

}  // namespace persoflow::machines::harness
