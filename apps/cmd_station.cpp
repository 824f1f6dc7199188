// `persoflow station run --config FILE --queue FILE`: issues certificates on the cards of a queue
// (JSON Lines, one request per card) through the workflow runtime. Unfinished workflows of the
// journal are resumed first, so running the same command again after a crash finishes the batch;
// a request whose workflow is already in the journal is not started twice. Exit 0 when every
// workflow ended Done, 1 otherwise, 2 for bad usage.
#include <boost/program_options.hpp>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

#include "command_registry.hpp"
#include "persoflow/actors/live_station.hpp"
#include "station_batch.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;

constexpr const char* kUsage =
    "Usage: persoflow station run --config FILE [--queue FILE] [--json]\n"
    "       persoflow station run --config FILE --live --queue FILE [--keep-running]\n\n"
    "Runs the issue-card workflow for every card request of the queue (JSON Lines:\n"
    "{\"workflow_id\": \"card-01-issue\", \"token_label\": \"card-01\", \"subject\": {\"CN\": \"Alice\"}})\n"
    "after resuming the journal's unfinished workflows. Without --queue it only resumes.\n"
    "With --live the cards are the ones inserted into the PC/SC readers (pcscd): each card is\n"
    "recognised by the token serial its ATR carries and personalised while it is in its reader;\n"
    "a request names \"token_serial\" (or \"next\" for the next card without a request of its\n"
    "own). A card pulled out suspends its workflow until it is back; another card in that reader\n"
    "is refused. Progress is printed per reader; it ends when every request has ended, or runs\n"
    "on with --keep-running.\n\n";

// `--live`: the station over the PC/SC readers (actors/live_station.hpp).
int run_live(const std::string& config_path, std::vector<actors::CardRequest> requests,
             bool keep_running, bool trace_commands) {
  auto config = actors::load_station_config(config_path);
  if (!config) {
    std::cerr << "persoflow station run: " << config.status().message() << "\n";
    return 1;
  }
  auto station = actors::Station::open(*config);
  if (!station) {
    std::cerr << "persoflow station run: " << station.status().message() << "\n";
    return 1;
  }
  std::optional<Result<std::map<std::string, std::string>>> by_label;  // listed once, if needed
  for (auto& r : requests) {
    if (!r.token_serial.empty()) continue;
    if (!by_label) by_label = (*station)->token_serials();
    auto serial = *by_label ? (*station)->token_serial(r.token_label, **by_label)
                            : Result<std::string>(by_label->status());
    if (!serial) {
      std::cerr << "persoflow station run: request " << r.workflow_id << ": "
                << serial.status().message() << "\n";
      return 2;
    }
    r.token_serial = *serial;
  }
  std::mutex out_mu;
  auto print = [&out_mu](const std::string& line) {
    std::lock_guard lock(out_mu);
    std::cout << line << std::endl;
  };
  (*station)->set_pin_display([print](const std::string& wf, const std::string& serial,
                                      const std::string& what, const std::string& pin) {
    print(wf + ": " + what + " for card " + serial + " (shown once): " + pin);
  });
  auto results = actors::run_live_station(*station, std::move(requests),
                                          {.keep_running = keep_running,
                                           .print = print,
                                           .trace_commands = trace_commands,
                                           // A workflow suspended with its card in is retried
                                           // after the CM retry policy's longest wait.
                                           .retry_delay = config->cm_retry.max_delay});
  if (!results) {
    std::cerr << "persoflow station run: " << results.status().message() << "\n";
    return 1;
  }
  bool all_done = true;
  for (const auto& r : *results) {
    print(r.workflow_id + "  card " + r.token_serial + "  " + r.outcome + "  " + r.state +
          (r.reason.empty() ? "" : "  (" + r.reason + ")"));
    all_done = all_done && r.outcome == "done";
  }
  return all_done ? 0 : 1;
}

int run(int argc, char** argv) {
  po::options_description opts("Options");
  opts.add_options()("help,h", "show this help")(
      "config", po::value<std::string>(), "the station configuration (station.conf, JSON)")(
      "queue", po::value<std::string>(), "JSON Lines file, one card request per line")(
      "json", "print the result as JSON")(
      "live", "personalise the cards as they are inserted into the readers")(
      "keep-running", "with --live: keep watching the readers after the queue is done")(
      "trace-commands", "with --live: a line as each card command begins and ends on its reader");
  po::variables_map vm;
  std::vector<std::string> rest;
  try {
    auto parsed = po::command_line_parser(argc, argv).options(opts).allow_unregistered().run();
    po::store(parsed, vm);
    rest = po::collect_unrecognized(parsed.options, po::include_positional);
  } catch (const std::exception& e) {
    std::cerr << "persoflow station: " << e.what() << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << kUsage << opts;
    return 0;
  }
  if (rest.empty() || rest[0] != "run" || rest.size() > 1) {
    std::cerr << "persoflow station: expected 'run' (see --help)\n";
    return 2;
  }
  if (!vm.count("config")) {
    std::cerr << "persoflow station run: --config FILE is required (the demo writes "
                 "persoflow-demo/station/station.conf)\n";
    return 2;
  }
  std::vector<actors::CardRequest> requests;
  if (vm.count("queue")) {
    auto q = read_queue(vm["queue"].as<std::string>());
    if (!q) {
      std::cerr << "persoflow station run: " << q.status().message() << "\n";
      return 2;
    }
    requests = std::move(*q);
    // The PINs of 'entered' lines, from the station's entered_pins (never from the queue).
    auto config = actors::load_station_config(vm["config"].as<std::string>());
    Status taken = config ? actors::take_entered_pins(*config, requests) : config.status();
    if (!taken) {
      std::cerr << "persoflow station run: " << taken.message() << "\n";
      return 2;
    }
  }
  for (const char* live_only : {"keep-running", "trace-commands"}) {
    if (vm.count(live_only) && !vm.count("live")) {
      std::cerr << "persoflow station run: --" << live_only << " needs --live\n";
      return 2;
    }
  }
  if (vm.count("live")) {
    if (!vm.count("queue")) {
      std::cerr << "persoflow station run: --live needs --queue FILE (the cards' requests)\n";
      return 2;
    }
    return run_live(vm["config"].as<std::string>(), std::move(requests),
                    vm.count("keep-running") > 0, vm.count("trace-commands") > 0);
  }
  const bool json_out = vm.count("json") > 0;
  auto report = run_station_batch(vm["config"].as<std::string>(), std::move(requests),
                                  json_out ? std::cerr : std::cout, !json_out);
  if (!report) {
    std::cerr << "persoflow station run: " << report.status().message() << "\n";
    return 1;
  }
  if (json_out) {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& r : report->rows) {
      rows.push_back({{"workflow_id", r.workflow_id}, {"machine", r.machine},
                      {"card", r.token_label},
                      {"token_serial", r.token_serial}, {"state", r.state},
                      {"status", r.status}, {"steps", r.steps},
                      {"certificate_serial", r.cert_serial}, {"seconds", r.seconds},
                      {"resumed", r.resumed}, {"reason", r.reason}});
    }
    std::cout << nlohmann::json{{"all_done", report->all_done}, {"workflows", rows}}.dump(2)
              << "\n";
  } else {
    print_batch_table(*report, std::cout, false);
    std::cout << report->rows.size() << " workflow(s) in " << report->seconds << " s"
              << (report->all_done ? ", all done" : ", NOT all done") << "\n";
  }
  return report->all_done ? 0 : 1;
}

}  // namespace

PF_REGISTER_COMMAND_GROUP(station, "station", "run a station over a queue of cards or its readers (--live)",
                          run);

}  // namespace persoflow::apps
