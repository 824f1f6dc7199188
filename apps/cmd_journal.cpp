// `persoflow journal verify|show`: the auditor's view of a station journal. Both open the journal
// read-only: they never create, migrate or write it, so they are safe on a live station's
// journal and on a read-only copy.
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "command_registry.hpp"
#include "persoflow/machines/engine.hpp"
#include "persoflow/storage/journal.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;
namespace st = persoflow::storage;
namespace m = persoflow::machines;

constexpr const char* kDefaultJournal = "station/journal.db";

constexpr const char* kUsage =
    "Usage: persoflow journal verify [--journal FILE] [--json]\n"
    "       persoflow journal show [--journal FILE] [--workflow ID] [--from SEQ] [--limit N] "
    "[--json]\n\n"
    "  verify  recompute the hash chain, check sequence and step numbers, command rows and\n"
    "          workflow summaries; print 'journal intact: N records' (exit 0) or name the first\n"
    "          bad record (exit 1)\n"
    "  show    list the records: seq, time, workflow, step, event, state, commands\n\n"
    "The journal is FILE, else $PERSOFLOW_JOURNAL, else ./station/journal.db. Both commands\n"
    "open it read-only and never write to it.\n";

std::string default_journal() {
  const char* env = std::getenv("PERSOFLOW_JOURNAL");
  return env && *env ? env : kDefaultJournal;
}

// Printable ASCII as is; anything else as \xNN, so a record prints on a terminal and in JSON
// exactly, whatever bytes it holds.
std::string printable(std::string_view s) {
  std::string out;
  static const char* kHex = "0123456789abcdef";
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else if (c == '\\') {
      out += "\\\\";
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out;
}

std::string fields_text(const m::Fields& fields) {
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : fields) {
    if (!first) out += ", ";
    first = false;
    out += printable(k) + "=" + printable(v);
  }
  return out + "}";
}

nlohmann::json fields_json(const m::Fields& fields) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [k, v] : fields) out[printable(k)] = printable(v);
  return out;
}

std::string iso_time(std::int64_t ms) {
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

Result<std::unique_ptr<st::Journal>> open_read_only(const std::string& path) {
  return st::Journal::open(path, {.create_if_missing = false, .read_only = true});
}

// Parses a group's options; returns an exit code when the command is already answered (help,
// bad usage), or -1 to go on.
int parse(int argc, char** argv, const po::options_description& opts, po::variables_map& vm,
          const char* sub) {
  try {
    po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
    if (vm.count("help")) {
      std::cout << kUsage << "\n" << opts;
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "persoflow journal " << sub << ": " << e.what() << "\n";
    return 2;
  }
  return -1;
}

int verify(int argc, char** argv) {
  std::string path;
  po::options_description opts("persoflow journal verify options");
  opts.add_options()("help,h", "show this help")(
      "journal", po::value(&path)->default_value(default_journal()), "the journal file")(
      "json", "print the report as JSON");
  po::variables_map vm;
  if (int rc = parse(argc, argv, opts, vm, "verify"); rc >= 0) return rc;

  auto journal = open_read_only(path);
  if (!journal.is_ok()) {
    std::cerr << "persoflow journal verify: " << journal.status().message() << "\n";
    return 1;
  }
  auto report = (*journal)->verify();
  if (!report.is_ok()) {
    std::cerr << "persoflow journal verify: " << report.status().message() << "\n";
    return 1;
  }
  const st::VerifyReport& r = *report;
  if (vm.count("json")) {
    nlohmann::json out = {{"journal", path},
                          {"intact", r.intact},
                          {"records_checked", r.records_checked},
                          {"head_hash", r.head_hash}};
    if (!r.intact) {
      out["first_bad_seq"] =
          r.first_bad_seq ? nlohmann::json(*r.first_bad_seq) : nlohmann::json(nullptr);
      out["reason"] = r.reason;
    }
    std::cout << out.dump(2) << "\n";
  } else if (r.intact) {
    std::cout << "journal intact: " << r.records_checked << " records (head " << r.head_hash
              << ")\n";
  } else if (r.first_bad_seq) {
    std::cout << "journal NOT intact: first bad record " << *r.first_bad_seq << ": " << r.reason
              << "\n";
  } else {
    std::cout << "journal NOT intact: " << r.reason << "\n";
  }
  return r.intact ? 0 : 1;
}

void print_record(const st::JournalRecord& r) {
  const st::AppendRequest& b = r.body;
  std::cout << "seq " << r.seq << "  " << iso_time(r.recorded_at_ms) << "  workflow "
            << printable(b.workflow_id) << "  step " << b.step << "  machine "
            << printable(b.machine) << "\n";
  auto event = m::decode_event(b.event);
  std::cout << "  event     " << printable(b.event_type) << " "
            << (event.is_ok() ? fields_text(event->fields) : "<undecodable>") << "\n";
  if (!b.result_of.empty()) std::cout << "  answers   " << printable(b.result_of) << "\n";
  auto state = m::decode_state(b.state);
  std::cout << "  state     " << printable(b.state_name) << " [" << st::to_string(b.status) << "] "
            << (state.is_ok() ? fields_text(state->data) : "<undecodable>") << "\n";
  for (const st::CommandEntry& c : b.commands) {
    auto cmd = m::decode_command(c.payload);
    std::cout << "  command " << c.index << " " << printable(c.type) << " key "
              << printable(c.idempotency_key) << " "
              << (cmd.is_ok() ? fields_text(cmd->fields) : "<undecodable>") << "\n";
  }
  std::cout << "  hash      " << r.hash << "\n";
}

nlohmann::json record_json(const st::JournalRecord& r) {
  const st::AppendRequest& b = r.body;
  auto event = m::decode_event(b.event);
  auto state = m::decode_state(b.state);
  nlohmann::json commands = nlohmann::json::array();
  for (const st::CommandEntry& c : b.commands) {
    auto cmd = m::decode_command(c.payload);
    commands.push_back({{"index", c.index},
                        {"type", printable(c.type)},
                        {"idempotency_key", printable(c.idempotency_key)},
                        {"fields", cmd.is_ok() ? fields_json(cmd->fields) : nullptr}});
  }
  return {{"seq", r.seq},
          {"recorded_at", iso_time(r.recorded_at_ms)},
          {"recorded_at_ms", r.recorded_at_ms},
          {"workflow_id", printable(b.workflow_id)},
          {"step", b.step},
          {"machine", printable(b.machine)},
          {"event",
           {{"type", printable(b.event_type)},
            {"fields", event.is_ok() ? fields_json(event->fields) : nullptr}}},
          {"result_of", printable(b.result_of)},
          {"state",
           {{"name", printable(b.state_name)},
            {"fields", state.is_ok() ? fields_json(state->data) : nullptr}}},
          {"status", st::to_string(b.status)},
          {"commands", commands},
          {"prev_hash", r.prev_hash},
          {"hash", r.hash}};
}

int show(int argc, char** argv) {
  std::string path, workflow;
  std::uint64_t from = 1;
  std::size_t limit = 0;
  po::options_description opts("persoflow journal show options");
  opts.add_options()("help,h", "show this help")(
      "journal", po::value(&path)->default_value(default_journal()), "the journal file")(
      "workflow", po::value(&workflow), "only the records of this workflow")(
      "from", po::value(&from)->default_value(1), "start at this sequence number")(
      "limit", po::value(&limit)->default_value(0), "at most this many records (0 = all)")(
      "json", "print a JSON array");
  po::variables_map vm;
  if (int rc = parse(argc, argv, opts, vm, "show"); rc >= 0) return rc;

  auto journal = open_read_only(path);
  if (!journal.is_ok()) {
    std::cerr << "persoflow journal show: " << journal.status().message() << "\n";
    return 1;
  }
  Result<std::vector<st::JournalRecord>> records = std::vector<st::JournalRecord>{};
  if (vm.count("workflow")) {
    auto summary = (*journal)->workflow(workflow);
    if (!summary.is_ok()) {
      std::cerr << "persoflow journal show: " << summary.status().message() << "\n";
      return 1;
    }
    if (!summary->has_value()) {
      std::cerr << "persoflow journal show: no workflow '" << workflow << "' in journal " << path
                << "\n";
      return 1;
    }
    records = (*journal)->records(workflow);
    if (records.is_ok()) {
      std::vector<st::JournalRecord> kept;
      for (auto& r : *records) {
        if (r.seq >= from && (limit == 0 || kept.size() < limit)) kept.push_back(std::move(r));
      }
      records = std::move(kept);
    }
  } else {
    records = (*journal)->all_records(from, limit);
  }
  if (!records.is_ok()) {
    std::cerr << "persoflow journal show: " << records.status().message() << "\n";
    return 1;
  }
  if (vm.count("json")) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : *records) out.push_back(record_json(r));
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (records->empty()) {
    std::cout << "no records\n";
    return 0;
  }
  for (const auto& r : *records) print_record(r);
  return 0;
}

int journal_main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  std::string sub = argv[1];
  if (sub == "--help" || sub == "-h" || sub == "help") {
    std::cout << kUsage;
    return 0;
  }
  if (sub == "verify") return verify(argc - 1, argv + 1);
  if (sub == "show") return show(argc - 1, argv + 1);
  std::cerr << "persoflow journal: unknown subcommand '" << sub << "' (verify or show)\n";
  return 2;
}

}  // namespace
}  // namespace persoflow::apps

PF_REGISTER_COMMAND_GROUP(journal, "journal",
                          "verify the station journal's hash chain; show records",
                          persoflow::apps::journal_main);
