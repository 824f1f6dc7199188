// crash_child: the process the crash test kills. Resumes every unfinished workflow of the journal,
// starts those of order-000 .. order-<N-1> that are not in it yet, and runs them all to the end.
//
//   crash_child --journal FILE --effects FILE --workflows N [--batch B] [--outside]
//
// With --outside each new order is held (an outside event that drops its Reserve and Quote) as
// soon as it starts, and every order is then released (resuming the held ones).
//
// Exit 0 when every workflow is done; 1 when one ends otherwise (printed); 2 on bad usage. The
// crash test sets PERSOFLOW_CRASH_AT / PERSOFLOW_CRASH_COUNT in its environment.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "order_machine.hpp"
#include "persoflow/actors/runtime.hpp"

namespace pa = persoflow::actors;

int main(int argc, char** argv) {
  std::string journal, effects;
  int workflows = 0, batch = 0;
  bool outside = false;
  for (int i = 1; i < argc; i += 2) {
    if (!std::strcmp(argv[i], "--outside")) {
      outside = true;
      --i;
      continue;
    }
    if (i + 1 >= argc) break;
    if (!std::strcmp(argv[i], "--journal")) journal = argv[i + 1];
    else if (!std::strcmp(argv[i], "--effects")) effects = argv[i + 1];
    else if (!std::strcmp(argv[i], "--workflows")) workflows = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
  }
  if (journal.empty() || effects.empty() || workflows <= 0) {
    std::fprintf(stderr, "usage: crash_child --journal FILE --effects FILE --workflows N [--batch B]\n");
    return 2;
  }
  auto env = std::make_shared<pa::test::OrderEnv>();
  env->effects = pa::test::EffectsDb::open(effects);
  env->policy.timeout = std::chrono::seconds(10);
  env->policy.initial_delay = std::chrono::milliseconds(5);
  pa::RuntimeOptions options;
  options.io_threads = 2;
  options.blocking_threads = 2;
  // The journal's workflows table is written every 16 records, so that kills also fall on the
  // transactions that write it and resumes read summaries from the table and the records after.
  options.journal_summary_every = 16;
  if (batch > 0) options.max_batch = static_cast<std::size_t>(batch);
  auto runtime = pa::Runtime::open(journal, pa::test::order_executors(env), options);
  if (!runtime.is_ok()) {
    std::fprintf(stderr, "crash_child: %s\n", runtime.status().to_string().c_str());
    return 1;
  }
  auto resumed = (*runtime)->resume_all();
  if (!resumed.is_ok()) {
    std::fprintf(stderr, "crash_child: resume: %s\n", resumed.status().to_string().c_str());
    return 1;
  }
  for (int i = 0; i < workflows; ++i) {
    char id[32];
    std::snprintf(id, sizeof id, "order-%03d", i);
    persoflow::machines::Event placed{"OrderPlaced", {{"item", "item-" + std::string(i % 7 + 1, 'x')}}};
    auto s = (*runtime)->start(id, pa::test::kOrderMachine, placed);
    if (!s.is_ok() && s.code() != make_error_code(persoflow::Errc::kAlreadyExists)) {
      std::fprintf(stderr, "crash_child: start %s: %s\n", id, s.to_string().c_str());
      return 1;
    }
    if (outside && s.is_ok()) {
      s = (*runtime)->post_event_and_wait(id, {"OrderHeld", {}});
      if (!s.is_ok()) {
        std::fprintf(stderr, "crash_child: hold %s: %s\n", id, s.to_string().c_str());
        return 1;
      }
    }
  }
  for (int i = 0; outside && i < workflows; ++i) {
    char id[32];
    std::snprintf(id, sizeof id, "order-%03d", i);
    // Refused (kRejected) for an order that is not on hold: already released, or done.
    auto s = (*runtime)->post_event_and_wait(id, {"OrderReleased", {}});
    if (!s.is_ok() && s.code() != make_error_code(persoflow::Errc::kRejected)) {
      std::fprintf(stderr, "crash_child: release %s: %s\n", id, s.to_string().c_str());
      return 1;
    }
    if (!s.is_ok()) std::printf("release %s refused: %s\n", id, s.message().c_str());
  }
  // The last outcome of each workflow counts (a held order is suspended, then resumed).
  std::map<std::string, pa::WorkflowOutcome> last;
  for (auto& o : (*runtime)->wait()) last[o.workflow_id] = o;
  int failures = 0;
  for (const auto& [id, o] : last) {
    if (o.outcome != pa::Outcome::kDone) {
      std::fprintf(stderr, "crash_child: %s ended %s in %s: %s %s\n", o.workflow_id.c_str(),
                   pa::to_string(o.outcome), o.state_name.c_str(), o.reason.c_str(),
                   o.error.message().c_str());
      ++failures;
    }
  }
  std::printf("resumed %zu, executions %d\n", resumed->size(), env->executions.load());
  return failures ? 1 : 0;
}
