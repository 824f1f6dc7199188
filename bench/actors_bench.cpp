// persoflow-bench actors: end-to-end throughput of the workflow runtime on a real journal
// (WAL, synchronous=FULL, group commit): N workflows of a three-step machine whose one command per
// step is answered at once by a non-blocking executor, so the figure is the engine's own cost
// (step, encode, append, commit, acknowledge, issue) rather than any device's.
#include <chrono>
#include <cstdlib>
#include <string>

#include "bench_registry.hpp"
#include "persoflow/actors/runtime.hpp"
#include "persoflow/machines/engine.hpp"
#include "test_support.hpp"

namespace persoflow::bench {
namespace {

using machines::Command;
using machines::Event;
using machines::State;
using machines::Transition;

Result<Transition> next(const State& from, const Event& e) {
  static const char* const kOrder[] = {"A", "B", "C", "Done"};
  int i = 0;
  while (from.name != kOrder[i]) ++i;
  State to{kOrder[i + 1], from.data};
  to.data["last"] = e.type;
  if (to.name == "Done") return Transition{to, {}};
  return Transition{to, {Command{"Work", {{"step", to.name}}}}};
}

constexpr std::string_view kTerminal[] = {"Done"};
constexpr machines::Row kRows[] = {
    {"Idle", "Started", "A", [](const State& from, const Event&) -> Result<Transition> {
       return Transition{State{"A", from.data}, {Command{"Work", {{"step", "A"}}}}};
     }},
    {"A", "Worked", "B", next},
    {"B", "Worked", "C", next},
    {"C", "Worked", "Done", next},
};
constexpr machines::MachineDef kBenchMachine{"bench-three-steps", "three commands", "Idle", kTerminal,
                                             kRows};

int run_actors(int argc, char** argv) {
  int workflows = argc > 1 ? std::atoi(argv[1]) : 2000;
  testing::TempDir dir("persoflow-bench-actors");
  actors::ExecutorRegistry executors;
  actors::Executor work;
  work.policy.timeout = std::chrono::seconds(10);
  work.run = [](const Command&, const actors::CommandContext&, actors::Completion done) {
    done(Event{"Worked", {}});
  };
  executors.add("Work", work);
  actors::RuntimeOptions options;
  options.find_machine = [](std::string_view) { return &kBenchMachine; };
  auto runtime = actors::Runtime::open(dir.file("journal.db"), std::move(executors), options);
  if (!runtime.is_ok()) {
    std::fprintf(stderr, "persoflow-bench actors: %s\n", runtime.status().to_string().c_str());
    return 1;
  }
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < workflows; ++i) {
    auto s = (*runtime)->start("wf-" + std::to_string(i), kBenchMachine.name, Event{"Started", {}});
    if (!s.is_ok()) {
      std::fprintf(stderr, "persoflow-bench actors: %s\n", s.to_string().c_str());
      return 1;
    }
  }
  auto outcomes = (*runtime)->wait();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const auto& o : outcomes) {
    if (o.outcome != actors::Outcome::kDone) {
      std::fprintf(stderr, "persoflow-bench actors: %s ended %s\n", o.workflow_id.c_str(),
                   actors::to_string(o.outcome));
      return 1;
    }
  }
  report("actors.workflows", workflows, "workflows");
  report("actors.workflows_per_s", workflows / seconds, "workflows/s");
  report("actors.steps_per_s", workflows * 4 / seconds, "appends/s");
  return 0;
}

}  // namespace
}  // namespace persoflow::bench

PF_REGISTER_BENCH_SUITE(actors, "actors",
                        "workflow runtime end to end: workflows/s and journaled steps/s [N]",
                        persoflow::bench::run_actors);
