// RowCoverage (coverage.hpp): which rows of a machine's table a test suite has taken.
#include "persoflow/machines/coverage.hpp"

namespace persoflow::machines {

Result<Transition> RowCoverage::step(const State& state, const Event& event) {
  auto t = machines::step(machine_, state, event);
  if (t.is_ok()) record(state.name, event.type, t.value().state.name);
  return t;
}

void RowCoverage::record(std::string_view from, std::string_view event, std::string_view to) {
  taken_.emplace(std::string(from), std::string(event), std::string(to));
}

std::vector<std::string> RowCoverage::uncovered() const {
  std::vector<std::string> out;
  for (const Row& row : machine_.rows) {
    if (!taken_.count({std::string(row.from), std::string(row.event), std::string(row.to)})) {
      out.push_back(std::string(row.from) + " --" + std::string(row.event) + "--> " +
                    std::string(row.to));
    }
  }
  return out;
}

}  // namespace persoflow::machines
