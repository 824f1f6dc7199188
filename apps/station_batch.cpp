// A batch of issue-card and update-card workflows through the runtime (station_batch.hpp).
#include "station_batch.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "persoflow/actors/replay.hpp"
#include "persoflow/actors/runtime.hpp"
#include "persoflow/machines/engine.hpp"
#include "persoflow/machines/workflow_support.hpp"
#include "persoflow/storage/journal.hpp"

namespace persoflow::apps {
namespace {
namespace ac = persoflow::actors;
namespace st = persoflow::storage;
namespace m = persoflow::machines;

// Whether a queue line asks for what the saved request of its workflow holds (where the line
// sits in the file aside).
bool same_request(ac::CardRequest saved, ac::CardRequest queued) {
  saved.source.clear();
  queued.source.clear();
  return ac::card_request_to_json(saved) == ac::card_request_to_json(queued);
}

// The reason of the workflow's last suspension, empty when it was resumed since.
Result<std::string> suspension_reason(st::Journal& journal, const std::string& workflow_id) {
  PF_ASSIGN_OR_RETURN(auto records, journal.records(workflow_id));
  if (records.empty() || records.back().body.event_type != ac::kWorkflowSuspended) {
    return std::string();
  }
  auto event = m::decode_event(records.back().body.event);
  return event.is_ok() ? m::wf::get(event->fields, "reason") : std::string();
}

// Runs fn(0) .. fn(n - 1) on a few threads at once. Preparing a card (saving its request with
// fsync, logging in: SoftHSM2 rewrites the token's file) is mostly waiting for the disk, which
// overlaps across cards; one after the other, a full station waits for each in turn.
void for_each_concurrently(std::size_t n, const std::function<void(std::size_t)>& fn) {
  constexpr std::size_t kThreads = 8;
  std::atomic<std::size_t> next{0};
  auto work = [&] {
    for (std::size_t i = next++; i < n; i = next++) fn(i);
  };
  std::vector<std::thread> threads;
  for (std::size_t t = 1; t < std::min(n, kThreads); ++t) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
}

}  // namespace

Result<std::vector<ac::CardRequest>> read_queue(const std::string& path) {
  std::ifstream in(path);
  if (!in) return make_status(Errc::kNotFound, "cannot read the queue file " + path);
  std::vector<ac::CardRequest> out;
  std::set<std::string> ids;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto r = ac::card_request_from_json(line);
    if (!r) return make_status(Errc::kInvalidArgument, path + ":" + std::to_string(n) + ": " +
                                                           r.status().message());
    r->source = path + ":" + std::to_string(n);
    if (!ids.insert(r->workflow_id).second) {
      return make_status(Errc::kInvalidArgument, path + ":" + std::to_string(n) +
                                                     ": workflow_id " + r->workflow_id +
                                                     " appears twice");
    }
    out.push_back(std::move(*r));
  }
  return out;
}

Result<BatchReport> run_station_batch(const std::string& config_path,
                                      std::vector<ac::CardRequest> requests, std::ostream& out,
                                      bool show_pins) {
  const auto t0 = std::chrono::steady_clock::now();
  PF_ASSIGN_OR_RETURN(ac::StationConfig config, ac::load_station_config(config_path));
  PF_ASSIGN_OR_RETURN(auto station, ac::Station::open(config));

  std::mutex pins_mu;
  std::map<std::string, std::string> pins;  // workflow id -> PIN shown in this run
  station->set_pin_display([&](const std::string& wf, const std::string& serial,
                               const std::string& what, const std::string& pin) {
    std::lock_guard lock(pins_mu);
    if (what == "PIN") pins[wf] = pin;
    // Flushed before ShowPinOnce deletes the secret: a kill after the deletion must not take the
    // only copy of the PIN down with an unflushed buffer.
    if (show_pins) {
      out << what << " for card " << serial << " (" << wf << ", shown once): " << pin
          << std::endl;
    }
  });

  // Every request names its card by serial before it is saved: the workflow must never write to
  // another card. A request saved by an earlier run keeps the card it named then; a card that
  // cannot be found now (pulled, unreadable) leaves its request unstarted, not the whole batch.
  std::map<std::string, std::string> not_started;  // workflow id -> why
  std::vector<ac::CardRequest> startable;
  // Workflows whose saved request this queue changes: a refused one is retried with it.
  std::set<std::string> corrected;
  std::optional<Result<std::map<std::string, std::string>>> by_label;  // listed once, if needed
  for (auto& r : requests) {
    auto saved = station->load_request(r.workflow_id);
    if (r.token_serial.empty() && saved) r.token_serial = saved->token_serial;
    if (saved && !same_request(*saved, r)) corrected.insert(r.workflow_id);
    if (r.token_serial.empty()) {
      if (!by_label) by_label = station->token_serials();
      auto serial = *by_label ? station->token_serial(r.token_label, **by_label)
                              : Result<std::string>(by_label->status());
      if (!serial) {
        not_started[r.workflow_id] = serial.status().message();
        continue;
      }
      r.token_serial = *serial;
    }
    startable.push_back(std::move(r));
  }
  requests = std::move(startable);
  std::vector<Status> saved(requests.size(), Status::ok());
  for_each_concurrently(requests.size(), [&](std::size_t i) {
    saved[i] = station->save_request(requests[i]);
  });
  for (const Status& s : saved) PF_RETURN_IF_ERROR(s);

  // Log in to every card before the runtime starts (see Station::prepare_card). A workflow
  // suspended on a refusal waits for the operator: it is resumed only with a corrected request
  // (or by `workflows resume`), not asked the same question again at every run.
  std::vector<std::string> to_resume;
  std::map<std::string, std::string> waiting;  // refused workflow id -> its refusal
  {
    PF_ASSIGN_OR_RETURN(auto journal, st::Journal::open(config.journal, {}));
    PF_ASSIGN_OR_RETURN(auto unfinished, journal->unfinished());
    std::set<std::string> serials;
    for (const auto& r : requests) serials.insert(r.token_serial);
    for (const auto& w : unfinished) {
      if (w.status == st::WorkflowStatus::kSuspended && !corrected.count(w.workflow_id)) {
        PF_ASSIGN_OR_RETURN(std::string why, suspension_reason(*journal, w.workflow_id));
        if (ac::is_refusal_reason(why)) {
          waiting[w.workflow_id] = why;
          continue;
        }
      }
      to_resume.push_back(w.workflow_id);
      if (auto saved = station->load_request(w.workflow_id)) serials.insert(saved->token_serial);
    }
    const std::vector<std::string> cards(serials.begin(), serials.end());
    for_each_concurrently(cards.size(), [&](std::size_t i) {
      (void)station->prepare_card(cards[i]);
    });
  }

  ac::ExecutorRegistry registry;
  ac::install_issue_card_executors(registry, station);
  ac::RuntimeOptions options;
  options.blocking_threads = ac::station_blocking_threads(requests.size() + to_resume.size());
  PF_ASSIGN_OR_RETURN(auto runtime, ac::Runtime::open(config.journal, std::move(registry), options));
  std::vector<std::string> resumed;
  for (const std::string& id : to_resume) {
    Status s = runtime->resume(id);
    if (s.code() == make_error_code(Errc::kAlreadyExists)) continue;
    PF_RETURN_IF_ERROR(s);
    resumed.push_back(id);
  }
  if (!resumed.empty()) {
    out << "resuming " << resumed.size() << " unfinished workflow(s) from " << config.journal
        << "\n";
  }
  std::vector<std::string> ids = resumed;
  std::set<std::string> seen(ids.begin(), ids.end());
  for (const auto& [id, why] : waiting) {
    if (seen.insert(id).second) ids.push_back(id);
  }
  for (const auto& r : requests) {
    m::Event first{"CardInserted",
                   {{"workflow_id", r.workflow_id},
                    {"token_serial", r.token_serial},
                    {"reader", r.token_label.empty() ? r.token_serial : r.token_label}}};
    Status s = runtime->start(r.workflow_id, r.machine(), std::move(first));
    if (!s && s.code() != make_error_code(Errc::kAlreadyExists)) return s;
    if (seen.insert(r.workflow_id).second) ids.push_back(r.workflow_id);
  }
  std::vector<ac::WorkflowOutcome> outcomes = runtime->wait();
  runtime.reset();  // closes the journal's writer before we read it

  std::map<std::string, ac::WorkflowOutcome> by_id;
  for (auto& o : outcomes) by_id[o.workflow_id] = o;
  std::map<std::string, const ac::CardRequest*> req_by_id;
  for (const auto& r : requests) req_by_id[r.workflow_id] = &r;

  PF_ASSIGN_OR_RETURN(auto journal,
                      st::Journal::open(config.journal, {.create_if_missing = false,
                                                         .read_only = true}));
  BatchReport report;
  for (const auto& [id, why] : not_started) {
    if (seen.insert(id).second) ids.push_back(id);
  }
  std::set<std::string> resumed_set(resumed.begin(), resumed.end());
  for (const auto& id : ids) {
    BatchRow row;
    row.workflow_id = id;
    row.resumed = resumed_set.count(id) > 0;
    PF_ASSIGN_OR_RETURN(auto summary, journal->workflow(id));
    if (summary) {
      row.machine = summary->machine;
      row.state = summary->state_name;
      row.status = st::to_string(summary->status);
      row.steps = summary->steps;
      row.seconds = static_cast<double>(summary->updated_at_ms - summary->created_at_ms) / 1000.0;
    }
    PF_ASSIGN_OR_RETURN(auto records, journal->records(id));
    if (!records.empty()) {
      auto state = m::decode_state(records.back().body.state);
      if (state) {
        row.cert_serial = m::wf::get(state->data, "issued.0");
        row.token_serial = m::wf::get(state->data, "token_serial");
        row.token_label = m::wf::get(state->data, "reader");
        if (state->name != "Done") row.reason = m::wf::get(state->data, "reason");
      }
    }
    if (auto it = not_started.find(id); it != not_started.end()) {
      row.reason = "not started: " + it->second;
    }
    if (auto it = waiting.find(id); it != waiting.end()) row.reason = it->second;
    if (auto it = by_id.find(id); it != by_id.end() && !it->second.reason.empty()) {
      row.reason = it->second.reason;
      if (it->second.outcome == ac::Outcome::kFailed) row.reason = it->second.error.message();
    }
    if (!records.empty() && row.state != "Done") {
      // A policy refusal waits for the operator: say what was refused, not only that it waits.
      auto state = m::decode_state(records.back().body.state);
      if (state && m::wf::has(state->data, "refusal")) {
        row.reason = "refused: " + m::wf::get(state->data, "refusal") +
                     " (waiting for an operator: persoflow workflows cancel " + id + ")";
      }
    }
    if (auto it = pins.find(id); it != pins.end()) row.pin_shown = it->second;
    if (row.state != "Done") report.all_done = false;
    report.rows.push_back(std::move(row));
  }
  report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

bool BatchReport::done(const std::string& workflow_id) const {
  for (const auto& row : rows) {
    if (row.workflow_id == workflow_id) return row.state == "Done";
  }
  return false;
}

Result<std::string> cancel_with_rollback(const std::string& config_path,
                                         const std::string& workflow_id,
                                         const std::string& reason, std::ostream& out) {
  PF_ASSIGN_OR_RETURN(ac::StationConfig config, ac::load_station_config(config_path));
  PF_ASSIGN_OR_RETURN(auto station, ac::Station::open(config));
  PF_ASSIGN_OR_RETURN(ac::CardRequest request, station->load_request(workflow_id));
  (void)station->prepare_card(request.token_serial);  // see Station::prepare_card
  ac::ExecutorRegistry registry;
  ac::install_issue_card_executors(registry, station);
  PF_ASSIGN_OR_RETURN(auto runtime, ac::Runtime::open(config.journal, std::move(registry)));
  PF_RETURN_IF_ERROR(runtime->post_event_and_wait(
      workflow_id, m::Event{"CancelRequested", {{"reason", reason}}}));
  std::vector<ac::WorkflowOutcome> outcomes = runtime->wait();
  runtime.reset();  // closes the journal's writer before we read it
  PF_ASSIGN_OR_RETURN(auto journal,
                      st::Journal::open(config.journal, {.create_if_missing = false,
                                                         .read_only = true}));
  PF_ASSIGN_OR_RETURN(auto records, journal->records(workflow_id));
  if (records.empty()) return make_status(Errc::kNotFound, "no workflow " + workflow_id);
  PF_ASSIGN_OR_RETURN(m::State state, m::decode_state(records.back().body.state));
  out << "workflow " << workflow_id << " (" << request.workflow << " on card "
      << request.token_serial << "): " << state.name;
  if (m::wf::is_yes(state.data, "rolled_back")) {
    out << "; removed from the card:";
    for (const std::string& object : m::wf::values(state.data, "object")) out << " " << object;
  }
  if (m::wf::list_size(state.data, "issued") > 0) {
    out << "; revoked (cessationOfOperation):";
    for (const std::string& serial : m::wf::values(state.data, "issued")) out << " " << serial;
  }
  out << "\n";
  for (const auto& o : outcomes) {
    if (o.workflow_id == workflow_id && o.outcome == ac::Outcome::kSuspended) {
      out << "  suspended: " << o.reason << "\n";
    }
  }
  return state.name;
}

int parse_card_command(const std::string& group, const char* usage,
                       const boost::program_options::options_description& options,
                       const std::vector<std::string>& required, int argc, char** argv,
                       boost::program_options::variables_map& vm) {
  namespace po = boost::program_options;
  std::vector<std::string> rest;
  try {
    auto parsed = po::command_line_parser(argc, argv).options(options).allow_unregistered().run();
    po::store(parsed, vm);
    rest = po::collect_unrecognized(parsed.options, po::include_positional);
  } catch (const std::exception& e) {
    std::cerr << "persoflow " << group << ": " << e.what() << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << usage << options;
    return 0;
  }
  if (rest.size() != 1 || rest[0] != "card") {
    std::cerr << "persoflow " << group << ": expected 'card' (see --help)\n";
    return 2;
  }
  for (const std::string& option : required) {
    if (!vm.count(option)) {
      std::cerr << "persoflow " << group << " card: --" << option
                << " is required (see --help)\n";
      return 2;
    }
  }
  return -1;
}

Result<std::pair<std::string, std::string>> split_assignment(const std::string& text,
                                                             const std::string& option) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) {
    return make_status(Errc::kInvalidArgument,
                       option + " wants NAME=VALUE, not '" + text + "'");
  }
  return std::make_pair(text.substr(0, eq), text.substr(eq + 1));
}

std::string default_workflow_id(const std::string& label, const std::string& kind) {
  return ac::new_workflow_id(label, kind);
}

void print_batch_table(const BatchReport& report, std::ostream& out, bool with_pins) {
  // Columns as wide as their longest entry (workflow ids carry a time and a random suffix).
  std::size_t card = 5, id = 12;
  for (const auto& r : report.rows) {
    card = std::max(card, r.token_label.size() + 1);
    id = std::max(id, r.workflow_id.size() + 2);  // room for the resumed mark
  }
  out << std::left << std::setw(static_cast<int>(card)) << "card" << std::setw(13) << "workflow"
      << std::setw(static_cast<int>(id)) << "workflow id" << std::setw(29) << "state"
      << std::setw(7) << "steps" << std::setw(34) << "certificate serial" << std::setw(8)
      << "time";
  if (with_pins) out << "PIN (shown once)";
  out << "\n";
  for (const auto& r : report.rows) {
    std::ostringstream t;
    t << std::fixed << std::setprecision(2) << r.seconds << "s";
    out << std::left << std::setw(static_cast<int>(card)) << r.token_label << std::setw(13)
        << r.machine << std::setw(static_cast<int>(id)) << (r.workflow_id + (r.resumed ? "*" : ""))
        << std::setw(29) << r.state << std::setw(7) << r.steps << std::setw(34)
        << (r.cert_serial.empty() ? "-" : r.cert_serial) << std::setw(8) << t.str();
    if (with_pins) out << (r.pin_shown.empty() ? "-" : r.pin_shown);
    out << "\n";
    if (!r.reason.empty() && r.state != "Done") out << "    " << r.reason << "\n";
  }
  bool any_resumed = false;
  for (const auto& r : report.rows) any_resumed |= r.resumed;
  if (any_resumed) out << "(* resumed from the journal after the interruption)\n";
}

}  // namespace persoflow::apps
