// Transition coverage for machine tests: a test suite steps its machine through a RowCoverage,
// and at the end asserts that every row of the table was taken at least once, so a row that no
// test exercises fails the build's tests (STYLE.md, "Tests": transition coverage).
#pragma once

#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "persoflow/machines/engine.hpp"

namespace persoflow::machines {

// Not thread-safe; one per test suite (e.g. a static in the test file, checked in a last test
// or a test environment's TearDown). Holds a reference to the machine, which must outlive it.
class RowCoverage {
 public:
  explicit RowCoverage(const MachineDef& machine) : machine_(machine) {}

  // step(), recording the row (from, event, to) it took when it succeeds.
  Result<Transition> step(const State& state, const Event& event);
  // Records a row taken elsewhere (e.g. by a workflow actor whose steps a test observes).
  void record(std::string_view from, std::string_view event, std::string_view to);

  // The rows never taken, as "From --Event--> To", in table order.
  std::vector<std::string> uncovered() const;
  std::size_t rows_taken() const { return taken_.size(); }

 private:
  const MachineDef& machine_;
  std::set<std::tuple<std::string, std::string, std::string>> taken_;
};

}  // namespace persoflow::machines
