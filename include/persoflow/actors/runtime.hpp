// The workflow runtime: one io_context with a thread per core, a separate pool for blocking
// executors, the journal's group-commit writer, and one workflow actor per running workflow.
//
// An actor lives on its own strand and is reached only by messages posted to it (no locks in
// actor code). It appends each event, the state it led to and the commands it produced through
// the GroupCommitWriter, and runs those commands only once the append is committed
// (crash_point "actors.before_command" sits between the two). Each command's outcome comes back
// as an event (crash_point "actors.after_command" sits between the effect and its append) and is
// appended before the commands it produces run. A command that fails or times out is retried with
// its executor's backoff; when its attempts are exhausted the workflow is suspended, recorded as a
// WorkflowSuspended event with the reason. A refusal (executor.hpp) is never retried.
//
// Resuming folds the workflow's records (replay.hpp); a replay that differs from the journal is
// recorded as WorkflowNondeterministic and stops that workflow; commands without a result are
// issued again with the same idempotency key.
//
// Runtime's own methods are thread-safe and may block the caller; they must not be called from
// an executor or a completion.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "persoflow/actors/executor.hpp"
#include "persoflow/common/clock.hpp"
#include "persoflow/common/status.hpp"
#include "persoflow/machines/machine.hpp"
#include "persoflow/storage/journal.hpp"

namespace persoflow::actors {

struct WorkflowOutcome;

// One journaled step of a workflow (RuntimeOptions::on_step).
struct StepNotice {
  std::string workflow_id;
  std::uint64_t step = 0;
  std::string event_type;
  std::string state_name;
  storage::WorkflowStatus status = storage::WorkflowStatus::kRunning;
};

struct RuntimeOptions {
  unsigned io_threads = 0;        // 0: one per core
  unsigned blocking_threads = 4;  // the pool of blocking executors
  // Appends per group commit.
  std::size_t max_batch = storage::GroupCommitWriter::kDefaultMaxBatch;
  // Records between writes of the journal's workflows table (storage::OpenOptions::
  // summary_every; 0: the journal's default). The crash test makes it small.
  std::uint32_t journal_summary_every = 0;
  // Resolves a journaled machine name; default machines::find_machine. Tests use it to run a
  // changed machine under the same name.
  std::function<const machines::MachineDef*(std::string_view)> find_machine;

  // --- Simulation (sim/): a deterministic run on a virtual clock. ---
  // The clock of attempt timeouts and retry backoff; default: the real steady clock.
  std::shared_ptr<Clock> clock;
  // The wall clock stamped on journal records (storage::OpenOptions::wall_clock_ms).
  std::function<std::int64_t()> journal_wall_clock_ms;
  // No io thread is started: the caller runs the actors with run_ready(). Executors should then be
  // non-blocking (blocking ones still run on the pool, and their timing is not reproducible).
  bool caller_driven = false;
  // Called once as each workflow ends, outside the runtime's lock, on the thread that ran the
  // ending handler. It may call start() and resume() but not wait() or cancel().
  std::function<void(const WorkflowOutcome&)> on_workflow_end;

  // --- Live progress (a station's display). ---
  // Called after each journaled step on the workflow's strand; must return at once (post to its
  // owner) and must not call the Runtime.
  std::function<void(const StepNotice&)> on_step;
};

// A command that fails with a refusal (a request a person must correct) is not retried: the
// workflow is suspended at once with a reason that starts with kRefusalPrefix, its command still
// outstanding, and waits for the operator (a corrected request and a resume, or a cancellation).
inline constexpr std::string_view kRefusalPrefix = "refused: ";
std::string refusal_reason(const std::string& message, const std::string& command);
bool is_refusal_reason(std::string_view suspension_reason);
// A suspension because a command's attempts were exhausted ("command T (key) failed after N
// attempt(s): ..."): the same command may succeed later.
inline constexpr std::string_view kRetriesExhausted = " failed after ";
bool is_retries_exhausted(std::string_view suspension_reason);

enum class Outcome {
  kDone,       // reached a terminal state, every command answered
  kSuspended,  // waiting for `resume` (reason recorded in the journal)
  kCancelled,
  kFailed,     // nondeterminism, corrupt records, or a journal that failed: see `error`
};
const char* to_string(Outcome outcome);

struct WorkflowOutcome {
  std::string workflow_id;
  std::string machine;
  std::string state_name;
  Outcome outcome = Outcome::kDone;
  std::string reason;  // suspension or cancellation reason
  Status error;        // for kFailed
};

class Runtime {
 public:
  // Opens the journal (created when missing), starts the writer and the threads.
  static Result<std::unique_ptr<Runtime>> open(const std::string& journal_path,
                                               ExecutorRegistry executors,
                                               RuntimeOptions options = {});
  // Stops the threads, the blocking pool and the writer; workflows still active stop where they
  // are and resume from the journal next time.
  ~Runtime();

  // Starts a new workflow of `machine` with its first event (step 0). kAlreadyExists when the id
  // is in the journal; kNotFound for an unknown machine.
  Status start(const std::string& workflow_id, std::string_view machine, machines::Event first);

  // Resumes one unfinished workflow of the journal (a suspended one gets a WorkflowResumed
  // record). kNotFound for an unknown id; kRejected for a finished workflow. A workflow whose
  // replay fails is not an error of this call: it ends as Outcome::kFailed.
  Status resume(const std::string& workflow_id);
  // Resumes every unfinished workflow; suspended ones too when `include_suspended`.
  // Returns their ids.
  Result<std::vector<std::string>> resume_all(bool include_suspended = true);

  // Cancels a workflow: an active one through its actor, otherwise directly.
  Status cancel(const std::string& workflow_id, std::string reason);

  // ----- Outside events (a card removed or inserted, an operator's decision) -----
  // Delivers an event that no command produced to a workflow: journaled like any event (no
  // result_of), in order with the workflow's other events. A workflow that is not active but
  // unfinished (suspended, or left by a crash) is resumed first. When the event moves the
  // machine to another state, the commands still outstanding from the previous state are
  // dropped: their late answers are ignored and never journaled; replay drops them at the same
  // record, so a resume never issues them again.
  // post_event returns once the event is queued: kNotFound for an unknown workflow, kRejected for
  // a done or cancelled one, kInvalidArgument for an engine event type. An event the machine
  // rejects is not journaled and leaves the workflow as it was.
  Status post_event(const std::string& workflow_id, machines::Event event);
  // The same, returning once the event is journaled (OK), or why not: kRejected (with the
  // machine's reason) when the state does not accept it or the workflow ended first.
  Status post_event_and_wait(const std::string& workflow_id, machines::Event event);

  // Blocks until no workflow is active; returns the outcome of every workflow that ended since
  // the runtime opened (or since the last wait), in order of ending. A workflow suspended to wait
  // for an outside event and resumed by one ends twice: its last outcome is the one that counts.
  std::vector<WorkflowOutcome> wait();

  // With RuntimeOptions::caller_driven: runs every ready handler on the calling thread until none
  // is ready and no journal append is in flight; returns how many ran. With
  // `one_append_at_a_time`, each handler's appends are committed before the next handler runs,
  // so the order of everything is a function of the order of the inputs (a reproducible run);
  // otherwise appends of many handlers share group commits.
  std::size_t run_ready(bool one_append_at_a_time = true);
  // Workflows started or resumed that have not ended yet.
  std::size_t active_workflows() const;

  struct Impl;

 private:
  explicit Runtime(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace persoflow::actors
