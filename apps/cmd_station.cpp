// `persoflow station run --config FILE --queue FILE`: issues certificates on the cards of a queue
// (JSON Lines, one request per card) through the workflow runtime. Unfinished workflows of the
// journal are resumed first, so running the same command again after a crash finishes the batch;
// a request whose workflow is already in the journal is not started twice. Exit 0 when every
// workflow ended Done, 1 otherwise, 2 for bad usage.
#include <boost/program_options.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "command_registry.hpp"
#include "station_batch.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;

constexpr const char* kUsage =
    "Usage: persoflow station run --config FILE [--queue FILE] [--json]\n\n"
    "Runs the issue-card workflow for every card request of the queue (JSON Lines:\n"
    "{\"workflow_id\": \"card-01-issue\", \"token_label\": \"card-01\", \"subject\": {\"CN\": \"Alice\"}})\n"
    "after resuming the journal's unfinished workflows. Without --queue it only resumes.\n\n";

int run(int argc, char** argv) {
  po::options_description opts("Options");
  opts.add_options()("help,h", "show this help")(
      "config", po::value<std::string>(), "the station configuration (station.conf, JSON)")(
      "queue", po::value<std::string>(), "JSON Lines file, one card request per line")(
      "json", "print the result as JSON");
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

PF_REGISTER_COMMAND_GROUP(station, "station", "run a station: issue certificates on a queue of cards",
                          run);

}  // namespace persoflow::apps
