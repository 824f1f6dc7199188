// Rebuilding a workflow from its journal records, and the engine's own events.
//
// Replay folds the journaled events through the machine's step() from its initial state and
// checks, step by step, that it reproduces the journaled state and commands byte for byte
// (canonical encodings) with the idempotency keys "<workflow id>/<step>/<index>". Anything else
// stops the workflow loudly: Errc::kNondeterminism when the machine now behaves differently,
// Errc::kCorrupt when the records contradict themselves (a result for a command that is not
// outstanding, a finished workflow with commands that never got a result). Pure: no I/O.
//
// Engine events (suspension, resumption, cancellation, a recorded nondeterminism) are journaled
// like any event so their reasons survive restarts, but they never reach the machine: the engine
// handles them, the state stays as it was and they carry no commands. Machines must not use these
// event type names.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "persoflow/common/status.hpp"
#include "persoflow/machines/machine.hpp"
#include "persoflow/storage/journal.hpp"

namespace persoflow::actors {

// Engine event types; each carries a "reason" field.
inline constexpr std::string_view kWorkflowSuspended = "WorkflowSuspended";    // retries exhausted, ...
inline constexpr std::string_view kWorkflowResumed = "WorkflowResumed";        // resumed after a suspension
inline constexpr std::string_view kWorkflowCancelled = "WorkflowCancelled";    // an operator cancelled it
inline constexpr std::string_view kWorkflowNondeterministic = "WorkflowNondeterministic";  // replay differs

bool is_engine_event(std::string_view event_type);

// The answer to a command that has no natural result (NotifyOperator, an operator prompt): the
// command is answered and no longer outstanding, but the event never reaches the machine (the
// state stays, no commands). So a terminal state whose NotifyOperator is acknowledged is done.
// Machines must not use this name either.
inline constexpr std::string_view kCommandAcknowledged = "CommandAcknowledged";
machines::Event command_acknowledged();

// An outside event (no result_of) that moves the machine to a state of another name drops the
// commands still outstanding from the previous state; replay and the runtime share this rule.
bool drops_outstanding(const storage::AppendRequest& record, std::string_view previous_state_name);

// "<workflow id>/<step>/<index>".
std::string idempotency_key(std::string_view workflow_id, std::uint64_t step, std::uint32_t index);

struct OutstandingCommand {
  std::string idempotency_key;
  std::uint64_t step = 0;  // the step whose record journaled it
  std::uint32_t index = 0;
  machines::Command command;
};

struct Replay {
  machines::State state;
  std::uint64_t next_step = 0;  // the step number of the next record
  storage::WorkflowStatus status = storage::WorkflowStatus::kRunning;
  // Journaled commands without a result event, in (step, index) order.
  std::vector<OutstandingCommand> outstanding;
  std::string suspension_reason;  // reason of the last suspension while suspended
  std::vector<std::string> dropped;  // keys dropped by outside events (never issued again)
  std::string last_event_type;
};

// Folds `records` (one workflow's, in step order) through `machine`. Fails with kNondeterminism or
// kCorrupt naming the step, as described above.
Result<Replay> replay(const machines::MachineDef& machine,
                      const std::vector<storage::JournalRecord>& records);

// The record of an engine event for a workflow whose last record is `last`: the same state, the
// next step, no commands.
storage::AppendRequest engine_record(const storage::JournalRecord& last, std::string_view event_type,
                                     std::string reason, storage::WorkflowStatus status);

// The record that cancels a workflow, or a clear error: kNotFound for no records, kRejected for a
// workflow that is done or already cancelled.
Result<storage::AppendRequest> cancel_record(const std::vector<storage::JournalRecord>& records,
                                             std::string reason);

// Cancels a workflow that no runtime is running, appending directly to `journal`.
Status cancel_workflow(storage::Journal& journal, const std::string& workflow_id,
                       std::string reason);

}  // namespace persoflow::actors
