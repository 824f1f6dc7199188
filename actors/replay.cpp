// Replay of a workflow's journal records and the records of engine events (see replay.hpp).
#include "persoflow/actors/replay.hpp"

#include <algorithm>

#include "persoflow/machines/engine.hpp"

namespace persoflow::actors {

using storage::WorkflowStatus;

bool is_engine_event(std::string_view type) {
  return type == kWorkflowSuspended || type == kWorkflowResumed || type == kWorkflowCancelled ||
         type == kWorkflowNondeterministic;
}

machines::Event command_acknowledged() { return machines::Event{std::string(kCommandAcknowledged), {}}; }

bool drops_outstanding(const storage::AppendRequest& record, std::string_view previous_state_name) {
  return record.result_of.empty() && !is_engine_event(record.event_type) &&
         record.event_type != kCommandAcknowledged && record.state_name != previous_state_name;
}

std::string idempotency_key(std::string_view workflow_id, std::uint64_t step, std::uint32_t index) {
  return storage::idempotency_key_of(workflow_id, step, index);
}

namespace {

std::string at_step(const storage::JournalRecord& record) {
  return "workflow " + record.body.workflow_id + " step " + std::to_string(record.body.step) +
         " (record " + std::to_string(record.seq) + ")";
}

Status nondeterminism(const storage::JournalRecord& record, const std::string& what) {
  return make_status(Errc::kNondeterminism,
                     at_step(record) + ": replay differs from the journal: " + what);
}

Status corrupt(const storage::JournalRecord& record, const std::string& what) {
  return make_status(Errc::kCorrupt, at_step(record) + ": " + what);
}

}  // namespace

Result<Replay> replay(const machines::MachineDef& machine,
                      const std::vector<storage::JournalRecord>& records) {
  Replay r;
  r.state = machines::initial_state(machine);
  for (const auto& record : records) {
    const auto& body = record.body;
    if (body.step != r.next_step) {
      return corrupt(record, "expected step " + std::to_string(r.next_step));
    }
    if (body.machine != machine.name) {
      return corrupt(record, "recorded for machine '" + body.machine + "', replayed with '" +
                                 std::string(machine.name) + "'");
    }
    auto event = machines::decode_event(body.event);
    if (!event.is_ok()) return corrupt(record, "undecodable event: " + event.status().message());
    if (event->type != body.event_type) return corrupt(record, "event type column differs from its bytes");

    if (is_engine_event(event->type)) {
      if (body.step == 0) return corrupt(record, "a workflow cannot begin with an engine event");
      if (body.state != machines::encode(r.state) || !body.commands.empty() || !body.result_of.empty()) {
        return corrupt(record, "an engine event changed the state or carries commands");
      }
      auto reason = event->fields.find("reason");
      if (event->type == kWorkflowSuspended || event->type == kWorkflowNondeterministic) {
        r.suspension_reason = reason == event->fields.end() ? "" : reason->second;
      } else {
        r.suspension_reason.clear();
      }
    } else if (event->type == kCommandAcknowledged) {
      if (r.status != WorkflowStatus::kRunning) {
        return corrupt(record, "an acknowledgement was recorded while the workflow was " +
                                   std::string(storage::to_string(r.status)));
      }
      auto it = std::find_if(r.outstanding.begin(), r.outstanding.end(),
                             [&](const auto& c) { return c.idempotency_key == body.result_of; });
      if (body.result_of.empty() || it == r.outstanding.end()) {
        return corrupt(record, "an acknowledgement of command '" + body.result_of +
                                   "', which is not outstanding");
      }
      if (body.state != machines::encode(r.state) || !body.commands.empty()) {
        return corrupt(record, "an acknowledgement changed the state or carries commands");
      }
      r.outstanding.erase(it);
    } else {
      if (r.status != WorkflowStatus::kRunning) {
        return corrupt(record, "an event was recorded while the workflow was " +
                                   std::string(storage::to_string(r.status)));
      }
      if (!body.result_of.empty()) {
        auto it = std::find_if(r.outstanding.begin(), r.outstanding.end(),
                               [&](const auto& c) { return c.idempotency_key == body.result_of; });
        if (it == r.outstanding.end()) {
          return corrupt(record, "a result of command " + body.result_of + ", which is not outstanding");
        }
        r.outstanding.erase(it);
      }
      auto transition = machines::step(machine, r.state, *event);
      if (!transition.is_ok()) {
        return nondeterminism(record, "the machine now rejects the journaled event: " +
                                          transition.status().message());
      }
      std::string state_bytes = machines::encode(transition->state);
      if (state_bytes != body.state || transition->state.name != body.state_name) {
        return nondeterminism(record, "the journal holds state '" + body.state_name +
                                          "', replay produced state '" + transition->state.name +
                                          "' with other data");
      }
      if (drops_outstanding(body, r.state.name)) {
        for (auto& c : r.outstanding) r.dropped.push_back(std::move(c.idempotency_key));
        r.outstanding.clear();
      }
      const auto& commands = transition->commands;
      if (commands.size() != body.commands.size()) {
        return nondeterminism(record, "the journal holds " + std::to_string(body.commands.size()) +
                                          " commands, replay produced " +
                                          std::to_string(commands.size()));
      }
      for (std::uint32_t i = 0; i < commands.size(); ++i) {
        const auto& journaled = body.commands[i];
        if (journaled.index != i ||
            journaled.idempotency_key != idempotency_key(body.workflow_id, body.step, i)) {
          return corrupt(record, "command " + std::to_string(i) + " has index " +
                                     std::to_string(journaled.index) + " and key " +
                                     journaled.idempotency_key);
        }
        if (machines::encode(commands[i]) != journaled.payload || commands[i].type != journaled.type) {
          return nondeterminism(record, "command " + std::to_string(i) + ": the journal holds " +
                                            journaled.type + ", replay produced " + commands[i].type +
                                            " with other fields");
        }
        r.outstanding.push_back({journaled.idempotency_key, body.step, i, commands[i]});
      }
      r.state = transition->state;
    }
    r.status = body.status;
    r.last_event_type = event->type;
    ++r.next_step;
  }
  if (r.status == WorkflowStatus::kDone && !r.outstanding.empty()) {
    return corrupt(records.back(), "the workflow is done but command " +
                                       r.outstanding.front().idempotency_key + " never got a result");
  }
  if (r.status == WorkflowStatus::kDone && !machines::is_terminal(machine, r.state.name)) {
    return corrupt(records.back(), "the workflow is marked done in non-terminal state " + r.state.name);
  }
  return r;
}

storage::AppendRequest engine_record(const storage::JournalRecord& last, std::string_view event_type,
                                     std::string reason, WorkflowStatus status) {
  machines::Event event{std::string(event_type), {{"reason", std::move(reason)}}};
  storage::AppendRequest request;
  request.workflow_id = last.body.workflow_id;
  request.machine = last.body.machine;
  request.step = last.body.step + 1;
  request.event_type = event.type;
  request.event = machines::encode(event);
  request.state_name = last.body.state_name;
  request.state = last.body.state;
  request.status = status;
  return request;
}

Result<storage::AppendRequest> cancel_record(const std::vector<storage::JournalRecord>& records,
                                             std::string reason) {
  if (records.empty()) return make_status(Errc::kNotFound, "no such workflow");
  const auto& last = records.back();
  const std::string& id = last.body.workflow_id;
  if (last.body.status == WorkflowStatus::kDone) {
    return make_status(Errc::kRejected, "workflow " + id + " is done (state " +
                                            last.body.state_name + "); a done workflow cannot be cancelled");
  }
  if (last.body.status == WorkflowStatus::kCancelled) {
    return make_status(Errc::kRejected, "workflow " + id + " is already cancelled");
  }
  return engine_record(last, kWorkflowCancelled, std::move(reason), WorkflowStatus::kCancelled);
}

Status cancel_workflow(storage::Journal& journal, const std::string& workflow_id,
                       std::string reason) {
  PF_ASSIGN_OR_RETURN(auto records, journal.records(workflow_id));
  if (records.empty()) {
    return make_status(Errc::kNotFound, "no workflow '" + workflow_id + "' in journal " + journal.path());
  }
  PF_ASSIGN_OR_RETURN(auto request, cancel_record(records, std::move(reason)));
  return journal.append(request);
}

}  // namespace persoflow::actors
