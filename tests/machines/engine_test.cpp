// The machine engine: step per row of the test machine (with a coverage check that every row is
// exercised), rejections, the validator on a broken table, fold, drawing, and the golden Mermaid.
#include "persoflow/machines/engine.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "persoflow/machines/coverage.hpp"
#include "test_machines.hpp"
#include "test_support.hpp"

namespace persoflow::machines {
namespace {

using test::kBroken;
using test::kTicket;

State st(std::string name, Fields data = {}) { return State{std::move(name), std::move(data)}; }
Event ev(std::string type, Fields fields = {}) { return Event{std::move(type), std::move(fields)}; }

// One case per row of the ticket table: from which state, which event, the expected transition.
struct RowCase {
  const char* label;
  State from;
  Event event;
  Transition expected;
};

std::vector<RowCase> ticket_row_cases() {
  Fields open{{"title", "printer jam"}};
  Fields assigned{{"title", "printer jam"}, {"assignee", "ada"}, {"assignments", "1"}};
  return {
      {"IdleOpened",
       st("Idle"),
       ev("Opened", {{"title", "printer jam"}}),
       {st("Open", open), {Command{"NotifyOwner", {{"title", "printer jam"}}}}}},
      {"OpenAssigned",
       st("Open", open),
       ev("Assigned", {{"assignee", "ada"}}),
       {st("Assigned", assigned), {Command{"NotifyAssignee", {{"assignee", "ada"}}}}}},
      {"OpenCancelled", st("Open", open), ev("Cancelled"), {st("Cancelled", open), {}}},
      {"AssignedResolvedFixed",
       st("Assigned", assigned),
       ev("Resolved", {{"outcome", "fixed"}}),
       {st("Done", assigned), {Command{"CloseTicket", {{"title", "printer jam"}}}}}},
      {"AssignedResolvedNotFixed",
       st("Assigned", assigned),
       ev("Resolved", {{"outcome", "wontfix"}}),
       {st("Open", {{"title", "printer jam"}, {"assignments", "1"}}), {}}},
      {"AssignedCancelled",
       st("Assigned", assigned),
       ev("Cancelled"),
       {st("Cancelled", assigned), {}}},
      {"DoneCancelledAbsorbs", st("Done", assigned), ev("Cancelled"), {st("Done", assigned), {}}},
  };
}

class TicketRow : public ::testing::TestWithParam<RowCase> {};

TEST_P(TicketRow, StepGivesExpectedTransition) {
  const RowCase& c = GetParam();
  auto t = step(kTicket, c.from, c.event);
  ASSERT_TRUE(t.is_ok()) << t.status().message();
  EXPECT_EQ(t.value(), c.expected);
  // Deterministic: the same input gives the same bytes.
  auto again = step(kTicket, c.from, c.event);
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ(encode(again->state), encode(t->state));
}

INSTANTIATE_TEST_SUITE_P(Rows, TicketRow, ::testing::ValuesIn(ticket_row_cases()),
                         [](const auto& info) { return std::string(info.param.label); });

TEST(TicketCoverage, EveryRowIsExercisedByTheRowCases) {
  RowCoverage coverage(kTicket);
  for (const RowCase& c : ticket_row_cases()) ASSERT_TRUE(coverage.step(c.from, c.event).is_ok());
  EXPECT_EQ(coverage.uncovered(), std::vector<std::string>{});
  EXPECT_EQ(coverage.rows_taken(), std::size(test::kTicketRows));
}

TEST(RowCoverageHelper, ReportsRowsNeverTaken) {
  RowCoverage coverage(kTicket);
  ASSERT_TRUE(coverage.step(st("Idle"), ev("Opened", {{"title", "t"}})).is_ok());
  ASSERT_FALSE(coverage.step(st("Idle"), ev("Resolved")).is_ok());  // rejections record nothing
  auto missing = coverage.uncovered();
  EXPECT_EQ(missing.size(), std::size(test::kTicketRows) - 1);
  EXPECT_EQ(missing.front(), "Open --Assigned--> Assigned");
}

TEST(Step, RejectsAnEventTheStateDoesNotAccept) {
  auto t = step(kTicket, st("Open", {{"title", "x"}}), ev("Resolved", {{"outcome", "fixed"}}));
  ASSERT_FALSE(t.is_ok());
  EXPECT_EQ(t.status().code(), Errc::kRejected);
  EXPECT_EQ(t.status().message(),
            "machine 'ticket': state 'Open' does not accept event 'Resolved' "
            "(accepts: Assigned, Cancelled)");
}

TEST(Step, RejectsInAStateThatAcceptsNothing) {
  auto t = step(kTicket, st("Cancelled"), ev("Opened", {{"title", "x"}}));
  ASSERT_FALSE(t.is_ok());
  EXPECT_EQ(t.status().code(), Errc::kRejected);
  EXPECT_NE(t.status().message().find("(accepts: none)"), std::string::npos);
}

TEST(Step, UnknownStateIsRejectedNotUndefined) {
  auto t = step(kTicket, st("NoSuchState"), ev("Opened"));
  ASSERT_FALSE(t.is_ok());
  EXPECT_EQ(t.status().code(), Errc::kRejected);
}

TEST(Step, HandlerErrorIsReturned) {
  auto t = step(kTicket, st("Idle"), ev("Opened"));
  ASSERT_FALSE(t.is_ok());
  EXPECT_EQ(t.status().code(), Errc::kInvalidArgument);
}

Result<Transition> lying_handler(const State&, const Event&) {
  return Transition{State{"Elsewhere", {}}, {}};
}
constexpr std::string_view kLiarTerminal[] = {"B"};
constexpr Row kLiarRows[] = {{"A", "Go", "B", lying_handler}};
constexpr MachineDef kLiar{"liar", "handler leaves the table", "A", kLiarTerminal, kLiarRows};

TEST(StepDeathTest, HandlerReturningAStateOutsideItsRowsAborts) {
  EXPECT_DEATH((void)step(kLiar, st("A"), ev("Go")), "not a target of its rows");
}

TEST(Fold, ReproducesTheLiveState) {
  std::vector<Event> events = {ev("Opened", {{"title", "t"}}), ev("Assigned", {{"assignee", "a"}}),
                               ev("Resolved", {{"outcome", "no"}}),
                               ev("Assigned", {{"assignee", "b"}}),
                               ev("Resolved", {{"outcome", "fixed"}})};
  auto s = fold(kTicket, events);
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  EXPECT_EQ(s->name, "Done");
  EXPECT_EQ(s->data.at("assignments"), "2");
  EXPECT_EQ(s->data.at("assignee"), "b");
  EXPECT_TRUE(is_terminal(kTicket, s->name));
}

TEST(Fold, StopsAtTheFirstRejectedEventAndNamesIt) {
  auto s = fold(kTicket, {ev("Opened", {{"title", "t"}}), ev("Resolved")});
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.status().code(), Errc::kRejected);
  EXPECT_EQ(s.status().message().rfind("event 1: ", 0), 0u) << s.status().message();
}

TEST(Validate, WellFormedMachinePasses) {
  auto report = validate(kTicket);
  EXPECT_TRUE(report.ok);
  EXPECT_TRUE(report.problems.empty()) << report.problems.front();
}

bool has_problem(const ValidationReport& r, const std::string& text) {
  return std::any_of(r.problems.begin(), r.problems.end(),
                     [&](const std::string& p) { return p == text; });
}

TEST(Validate, FindsEveryDefectOfTheBrokenMachine) {
  auto report = validate(kBroken);
  EXPECT_FALSE(report.ok);
  EXPECT_TRUE(has_problem(report, "state 'Orphan' is unreachable from the initial state 'Start'"));
  EXPECT_TRUE(has_problem(report, "state 'Trap' is a dead end: not terminal and accepts no event"));
  EXPECT_TRUE(has_problem(report, "state 'Loop' cannot reach any terminal state"));
  EXPECT_TRUE(has_problem(report, "state 'Loop2' cannot reach any terminal state"));
  EXPECT_TRUE(has_problem(report, "duplicate transition Start --Go--> Middle"));
  std::string all;
  for (const auto& p : report.problems) all += p + "\n";
  EXPECT_EQ(report.problems.size(), 5u) << all;
}

constexpr std::string_view kNoTerminal[] = {"Z"};
constexpr Row kChoiceRows[] = {
    {"A", "Go", "B"}, {"A", "Go", "C"}, {"B", "Go", "Z"}, {"C", "Go", "Z"}};
constexpr MachineDef kChoiceWithoutHandler{"choice", "", "A", kNoTerminal, kChoiceRows};
constexpr std::string_view kMissingTerminal[] = {"Nowhere"};
constexpr Row kOneRow[] = {{"A", "Go", "B"}};
constexpr MachineDef kUndeclaredTerminal{"undeclared", "", "A", kMissingTerminal, kOneRow};

TEST(Validate, FindsChoiceWithoutHandlerAndTerminalOutsideTheTable) {
  auto choice = validate(kChoiceWithoutHandler);
  EXPECT_TRUE(has_problem(
      choice, "choice A --Go--> has several targets but no handler to choose among them"));
  auto undeclared = validate(kUndeclaredTerminal);
  EXPECT_TRUE(has_problem(undeclared, "terminal state 'Nowhere' appears in no transition"));
  EXPECT_TRUE(
      has_problem(undeclared, "state 'B' is a dead end: not terminal and accepts no event"));
}

TEST(Table, StatesAndAcceptedEvents) {
  EXPECT_EQ(states_of(kTicket),
            (std::vector<std::string>{"Idle", "Open", "Assigned", "Cancelled", "Done"}));
  EXPECT_EQ(accepted_events(kTicket, "Assigned"),
            (std::vector<std::string>{"Cancelled", "Resolved"}));
  EXPECT_TRUE(accepted_events(kTicket, "Cancelled").empty());
  EXPECT_EQ(initial_state(kTicket), st("Idle"));
}

TEST(Render, DotNamesEveryStateAndRow) {
  std::string dot = render_dot(kTicket);
  EXPECT_EQ(dot.rfind("digraph \"ticket\" {", 0), 0u);
  EXPECT_NE(dot.find("\"[*]\" -> \"Idle\";"), std::string::npos);
  EXPECT_NE(dot.find("\"Done\" [peripheries=2];"), std::string::npos);
  EXPECT_NE(dot.find("\"Assigned\" -> \"Open\" [label=\"Resolved [outcome != fixed]\"];"),
            std::string::npos);
  EXPECT_EQ(
      std::count(dot.begin(), dot.end(), '\n'),
      static_cast<long>(4 + states_of(kTicket).size() + 1 + std::size(test::kTicketRows) + 1));
}

TEST(Render, TableListsRowsAligned) {
  std::string table = render_table(kTicket);
  EXPECT_NE(table.find("initial: Idle\n"), std::string::npos);
  EXPECT_NE(table.find("terminal: Done, Cancelled\n"), std::string::npos);
  EXPECT_NE(table.find("Done      Cancelled  Done       terminal absorbs\n"), std::string::npos)
      << table;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A changed table shows in review as a changed golden file. PERSOFLOW_UPDATE_GOLDEN=1 rewrites it.
// Returns an explanation when the rendered diagram differs from the committed one, else "".
std::string golden_mermaid_mismatch(const MachineDef& machine) {
  std::string path =
      testing::source_dir() + "/tests/golden/machines/" + std::string(machine.name) + ".mmd";
  std::string rendered = render_mermaid(machine);
  if (const char* update = std::getenv("PERSOFLOW_UPDATE_GOLDEN"); update && *update == '1') {
    std::ofstream(path, std::ios::binary) << rendered;
  }
  if (rendered == read_file(path)) return "";
  return "the Mermaid of machine '" + std::string(machine.name) + "' differs from " + path +
         "; if the change is intended, rerun with PERSOFLOW_UPDATE_GOLDEN=1 and commit the file";
}

TEST(Golden, TicketMermaidMatchesCommittedDiagram) {
  EXPECT_EQ(golden_mermaid_mismatch(kTicket), "");
}

TEST(Golden, EveryRegisteredMachineIsValidAndMatchesItsDiagram) {
  for (const MachineDef* def : all_machines()) {
    SCOPED_TRACE(std::string(def->name));
    auto report = validate(*def);
    EXPECT_TRUE(report.ok) << (report.problems.empty() ? "" : report.problems.front());
    EXPECT_EQ(golden_mermaid_mismatch(*def), "");
  }
  EXPECT_EQ(find_machine("no-such-machine"), nullptr);
}

}  // namespace
}  // namespace persoflow::machines
