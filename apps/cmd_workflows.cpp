// `persoflow workflows list|show|resume|cancel`: the workflows of a station journal, for the
// people who recover after failures and for auditors.
//
// list and show only read (the journal is opened read-only). resume runs the workflow runtime
// until the chosen workflows are done, suspended or failed; it needs the executors of their
// machines linked into this program and refuses, before writing anything, when they are not.
// cancel records a WorkflowCancelled event. Every failure is one line on stderr and a non-zero
// exit: 1 for a failure, 2 for bad usage.
#include <boost/program_options.hpp>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "command_registry.hpp"
#include "persoflow/actors/executor.hpp"
#include "persoflow/actors/replay.hpp"
#include "persoflow/actors/runtime.hpp"
#include "persoflow/machines/engine.hpp"
#include "persoflow/storage/journal.hpp"
#include "station_batch.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;
namespace m = persoflow::machines;
namespace st = persoflow::storage;
namespace ac = persoflow::actors;
using nlohmann::json;

constexpr const char* kUsage =
    "Usage: persoflow workflows list [--journal FILE] [--json]\n"
    "       persoflow workflows show ID [--journal FILE] [--json]\n"
    "       persoflow workflows resume [ID] [--journal FILE] [--json]\n"
    "       persoflow workflows cancel ID [--reason TEXT] [--journal FILE | --config FILE]\n\n"
    "  list    every workflow of the journal: id, machine, state, status, steps, last update\n"
    "  show    one workflow's history: each event, the state it led to, the commands it\n"
    "          produced and their results; the suspension reason; a replay check\n"
    "  resume  runs the given (or every unfinished) workflow until it is done or suspended;\n"
    "          needs the executors of its machine in this program\n"
    "  cancel  records a cancellation (a done workflow cannot be cancelled); with --config\n"
    "          (a station.conf) the cancellation goes through the workflow's machine: what it\n"
    "          wrote to its card is removed and its certificates revoked, all journaled\n\n"
    "The journal is --journal FILE, else $PERSOFLOW_JOURNAL, else ./station/journal.db.\n";

std::string default_journal() {
  const char* env = std::getenv("PERSOFLOW_JOURNAL");
  return env && *env ? env : "station/journal.db";
}

struct Common {
  std::string journal;
  bool json = false;
  std::string id;
  std::string reason;
  std::string config;  // cancel: the station's configuration
};

// Parses the options shared by the subcommands; returns -1 to go on, else the exit code.
int parse(const char* sub, int argc, char** argv, Common& c, bool takes_id, bool takes_reason,
          bool takes_json = true) {
  po::options_description opts(std::string("persoflow workflows ") + sub + " options");
  opts.add_options()("help,h", "show this help")(
      "journal", po::value(&c.journal)->default_value(default_journal()), "the station journal");
  if (takes_json) opts.add_options()("json", po::bool_switch(&c.json), "print JSON");
  if (takes_reason) {
    opts.add_options()("reason", po::value(&c.reason)->default_value("cancelled by an operator"),
                       "why, recorded in the journal")(
        "config", po::value(&c.config),
        "station.conf: cancel through the machine, rolling back what is on the card");
  }
  po::options_description hidden;
  hidden.add_options()("id", po::value(&c.id));
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  if (takes_id) pos.add("id", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << kUsage << "\n" << opts;
    return 0;
  }
  po::notify(vm);
  return -1;
}

int fail(const char* sub, const std::string& message) {
  std::cerr << "persoflow workflows " << sub << ": " << message << "\n";
  return 1;
}

// A journal that must exist; read-only for list and show, so they never write.
Result<std::unique_ptr<st::Journal>> open_journal(const std::string& path, bool read_only) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return make_status(Errc::kNotFound, "journal " + path + " does not exist");
  }
  auto journal = st::Journal::open(path, {.create_if_missing = false, .read_only = read_only});
  if (!journal.is_ok()) return journal.status().with_context("opening journal " + path);
  return journal;
}

std::string format_time(std::int64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string fields_text(const m::Fields& fields) {
  std::string out = "{";
  for (const auto& [k, v] : fields) {
    if (out.size() > 1) out += ", ";
    out += k + "=" + v;
  }
  return out + "}";
}

int list(int argc, char** argv) {
  Common c;
  if (int rc = parse("list", argc, argv, c, false, false); rc >= 0) return rc;
  auto journal = open_journal(c.journal, true);
  if (!journal.is_ok()) return fail("list", journal.status().message());
  auto workflows = (*journal)->workflows();
  if (!workflows.is_ok()) return fail("list", workflows.status().message());
  if (c.json) {
    json out = json::array();
    for (const auto& w : *workflows) {
      out.push_back({{"id", w.workflow_id}, {"machine", w.machine}, {"state", w.state_name},
                     {"status", st::to_string(w.status)}, {"steps", w.steps},
                     {"created", format_time(w.created_at_ms)},
                     {"updated", format_time(w.updated_at_ms)}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (workflows->empty()) {
    std::cout << "no workflows in journal " << c.journal << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {{"ID", "MACHINE", "STATE", "STATUS", "STEPS", "UPDATED"}};
  for (const auto& w : *workflows) {
    rows.push_back({w.workflow_id, w.machine, w.state_name, st::to_string(w.status),
                    std::to_string(w.steps), format_time(w.updated_at_ms)});
  }
  std::vector<std::size_t> width(rows[0].size(), 0);
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  for (const auto& r : rows) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) {
      std::string cell = r[i];
      if (i + 1 < r.size()) cell.resize(width[i] + 2, ' ');
      line += cell;
    }
    std::cout << line << "\n";
  }
  return 0;
}

int show(int argc, char** argv) {
  Common c;
  if (int rc = parse("show", argc, argv, c, true, false); rc >= 0) return rc;
  if (c.id.empty()) {
    std::cerr << "persoflow workflows show: a workflow ID is required (see 'persoflow workflows list')\n";
    return 2;
  }
  auto journal = open_journal(c.journal, true);
  if (!journal.is_ok()) return fail("show", journal.status().message());
  auto records = (*journal)->records(c.id);
  if (!records.is_ok()) return fail("show", records.status().message());
  if (records->empty()) return fail("show", "no workflow '" + c.id + "' in journal " + c.journal);
  const auto& last = records->back().body;

  // Which step answered each command, and the engine's reasons.
  std::map<std::string, std::pair<std::uint64_t, std::string>> answered;  // key -> (step, event)
  std::string suspension, nondeterminism, cancellation;
  for (const auto& r : *records) {
    if (!r.body.result_of.empty()) answered[r.body.result_of] = {r.body.step, r.body.event_type};
    auto event = m::decode_event(r.body.event);
    std::string reason = event.is_ok() && event->fields.count("reason") ? event->fields.at("reason") : "";
    if (r.body.event_type == ac::kWorkflowSuspended) suspension = reason;
    if (r.body.event_type == ac::kWorkflowNondeterministic) nondeterminism = reason;
    if (r.body.event_type == ac::kWorkflowCancelled) cancellation = reason;
    if (r.body.event_type == ac::kWorkflowResumed) suspension.clear(), nondeterminism.clear();
  }
  // Replay check, when this program knows the machine: never writes.
  std::string replay_text;
  bool replay_ok = false;
  if (const m::MachineDef* def = m::find_machine(last.machine)) {
    auto replayed = ac::replay(*def, *records);
    replay_ok = replayed.is_ok();
    replay_text = replay_ok ? "matches the journal" : replayed.status().to_string();
  } else {
    replay_text = "not checked: machine '" + last.machine + "' is not in this program";
  }

  if (c.json) {
    json history = json::array();
    for (const auto& r : *records) {
      auto event = m::decode_event(r.body.event);
      auto state = m::decode_state(r.body.state);
      json commands = json::array();
      for (const auto& cmd : r.body.commands) {
        auto decoded = m::decode_command(cmd.payload);
        json j = {{"key", cmd.idempotency_key}, {"type", cmd.type},
                  {"fields", decoded.is_ok() ? json(decoded->fields) : json(nullptr)}};
        if (auto it = answered.find(cmd.idempotency_key); it != answered.end()) {
          j["result"] = {{"step", it->second.first}, {"event", it->second.second}};
        } else {
          j["result"] = nullptr;
        }
        commands.push_back(j);
      }
      history.push_back({{"seq", r.seq}, {"step", r.body.step}, {"at", format_time(r.recorded_at_ms)},
                         {"event", r.body.event_type},
                         {"event_fields", event.is_ok() ? json(event->fields) : json(nullptr)},
                         {"result_of", r.body.result_of.empty() ? json(nullptr) : json(r.body.result_of)},
                         {"state", r.body.state_name},
                         {"state_data", state.is_ok() ? json(state->data) : json(nullptr)},
                         {"status", st::to_string(r.body.status)}, {"commands", commands},
                         {"hash", r.hash}});
    }
    json out = {{"id", c.id}, {"machine", last.machine}, {"state", last.state_name},
                {"status", st::to_string(last.status)}, {"steps", records->size()},
                {"replay", {{"ok", replay_ok}, {"detail", replay_text}}}, {"history", history}};
    out["suspension_reason"] = suspension.empty() ? json(nullptr) : json(suspension);
    out["nondeterminism"] = nondeterminism.empty() ? json(nullptr) : json(nondeterminism);
    out["cancellation_reason"] = cancellation.empty() ? json(nullptr) : json(cancellation);
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << "workflow " << c.id << "  machine " << last.machine << "  state " << last.state_name
            << "  status " << st::to_string(last.status) << "  steps " << records->size() << "\n";
  if (last.status == st::WorkflowStatus::kSuspended && !suspension.empty()) {
    std::cout << "suspended: " << suspension << "\n";
  }
  if (!nondeterminism.empty()) std::cout << "NONDETERMINISM recorded: " << nondeterminism << "\n";
  if (last.status == st::WorkflowStatus::kCancelled) std::cout << "cancelled: " << cancellation << "\n";
  std::cout << "replay: " << replay_text << "\n\n";
  for (const auto& r : *records) {
    auto event = m::decode_event(r.body.event);
    auto state = m::decode_state(r.body.state);
    std::cout << "step " << r.body.step << "  " << format_time(r.recorded_at_ms) << "  "
              << r.body.event_type << " "
              << (event.is_ok() ? fields_text(event->fields) : "<undecodable>");
    if (!r.body.result_of.empty()) std::cout << "  (result of " << r.body.result_of << ")";
    std::cout << "\n    -> " << r.body.state_name << " "
              << (state.is_ok() ? fields_text(state->data) : "<undecodable>") << "  ["
              << st::to_string(r.body.status) << "]\n";
    for (const auto& cmd : r.body.commands) {
      auto decoded = m::decode_command(cmd.payload);
      std::cout << "    command " << cmd.idempotency_key << " " << cmd.type << " "
                << (decoded.is_ok() ? fields_text(decoded->fields) : "<undecodable>") << "  => ";
      if (auto it = answered.find(cmd.idempotency_key); it != answered.end()) {
        std::cout << it->second.second << " at step " << it->second.first << "\n";
      } else {
        std::cout << "no result yet\n";
      }
    }
  }
  return 0;
}

int resume(int argc, char** argv) {
  Common c;
  if (int rc = parse("resume", argc, argv, c, true, false); rc >= 0) return rc;
  std::vector<std::string> targets;
  std::set<std::string> machine_names;
  {
    auto journal = open_journal(c.journal, true);
    if (!journal.is_ok()) return fail("resume", journal.status().message());
    std::vector<st::WorkflowSummary> chosen;
    if (!c.id.empty()) {
      auto w = (*journal)->workflow(c.id);
      if (!w.is_ok()) return fail("resume", w.status().message());
      if (!*w) return fail("resume", "no workflow '" + c.id + "' in journal " + c.journal);
      if ((*w)->status == st::WorkflowStatus::kDone || (*w)->status == st::WorkflowStatus::kCancelled) {
        return fail("resume", "workflow " + c.id + " is " + st::to_string((*w)->status) +
                                  "; there is nothing to resume");
      }
      chosen.push_back(**w);
    } else {
      auto unfinished = (*journal)->unfinished();
      if (!unfinished.is_ok()) return fail("resume", unfinished.status().message());
      chosen = std::move(*unfinished);
    }
    for (const auto& w : chosen) {
      if (!m::find_machine(w.machine)) {
        return fail("resume", "workflow " + w.workflow_id + " runs machine '" + w.machine +
                                  "', which this program does not have; nothing was resumed");
      }
      if (!ac::find_executor_set(w.machine)) {
        return fail("resume", "no executors for machine '" + w.machine +
                                  "' are registered in this program, so workflow " +
                                  w.workflow_id + " cannot be resumed here; nothing was resumed");
      }
      machine_names.insert(w.machine);
      targets.push_back(w.workflow_id);
    }
  }
  if (targets.empty()) {
    if (c.json) std::cout << "[]\n";
    else std::cout << "no unfinished workflows in journal " << c.journal << "\n";
    return 0;
  }
  ac::ExecutorRegistry executors;
  for (const auto& name : machine_names) ac::find_executor_set(name)(executors);
  auto runtime = ac::Runtime::open(c.journal, std::move(executors));
  if (!runtime.is_ok()) return fail("resume", runtime.status().message());
  for (const auto& id : targets) {
    if (Status s = (*runtime)->resume(id); !s.is_ok()) return fail("resume", s.message());
  }
  auto outcomes = (*runtime)->wait();
  bool all_done = true;
  json out = json::array();
  for (const auto& o : outcomes) {
    all_done = all_done && (o.outcome == ac::Outcome::kDone || o.outcome == ac::Outcome::kCancelled);
    std::string detail = o.outcome == ac::Outcome::kFailed ? o.error.to_string() : o.reason;
    if (c.json) {
      out.push_back({{"id", o.workflow_id}, {"machine", o.machine}, {"state", o.state_name},
                     {"outcome", ac::to_string(o.outcome)}, {"detail", detail}});
    } else {
      std::cout << o.workflow_id << ": " << ac::to_string(o.outcome) << " in state " << o.state_name
                << (detail.empty() ? "" : ": " + detail) << "\n";
    }
  }
  if (c.json) std::cout << out.dump(2) << "\n";
  return all_done ? 0 : 1;
}

int cancel(int argc, char** argv) {
  Common c;
  if (int rc = parse("cancel", argc, argv, c, true, true, false); rc >= 0) return rc;
  if (c.id.empty()) {
    std::cerr << "persoflow workflows cancel: a workflow ID is required (see 'persoflow workflows list')\n";
    return 2;
  }
  if (!c.config.empty()) {
    auto state = cancel_with_rollback(c.config, c.id, c.reason, std::cout);
    if (!state.is_ok()) return fail("cancel", state.status().message());
    return *state == "Cancelled" ? 0 : 1;
  }
  auto journal = open_journal(c.journal, false);
  if (!journal.is_ok()) return fail("cancel", journal.status().message());
  if (Status s = ac::cancel_workflow(**journal, c.id, c.reason); !s.is_ok()) {
    return fail("cancel", s.message());
  }
  std::cout << "cancelled workflow " << c.id << ": " << c.reason << "\n";
  return 0;
}

int workflows_main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  std::string sub = argv[1];
  if (sub == "--help" || sub == "-h" || sub == "help") {
    std::cout << kUsage;
    return 0;
  }
  try {
    if (sub == "list") return list(argc - 1, argv + 1);
    if (sub == "show") return show(argc - 1, argv + 1);
    if (sub == "resume") return resume(argc - 1, argv + 1);
    if (sub == "cancel") return cancel(argc - 1, argv + 1);
  } catch (const po::error& e) {
    std::cerr << "persoflow workflows " << sub << ": " << e.what() << "\n";
    return 2;
  }
  std::cerr << "persoflow workflows: unknown subcommand '" << sub
            << "' (list, show, resume or cancel)\n";
  return 2;
}

}  // namespace
}  // namespace persoflow::apps

PF_REGISTER_COMMAND_GROUP(workflows, "workflows",
                          "list, show, resume and cancel the workflows of a journal",
                          persoflow::apps::workflows_main);
