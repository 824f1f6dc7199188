// `persoflow issue card --config FILE --token LABEL --field CN=... [--procedure P]`: one card's
// issue-card workflow through the station (the same executors and journal as `station run`).
// The workflow id defaults to "<label>-issue-<UTC time>"; giving --workflow-id again after an
// interruption resumes that workflow instead of starting another. Exit 0 when it ended Done.
#include <boost/program_options.hpp>
#include <iostream>

#include "command_registry.hpp"
#include "station_batch.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;

constexpr const char* kUsage =
    "Usage: persoflow issue card --config FILE --token LABEL --field NAME=VALUE... "
    "[--procedure P] [--workflow-id ID]\n\n"
    "Issues a certificate on one pre-personalised card: key generated on the card, request\n"
    "signed by the officer and sent to the CM host over CMP, certificate written to the card,\n"
    "a new card PIN generated and shown once.\n\n";

int run(int argc, char** argv) {
  po::options_description opts("Options");
  opts.add_options()("help,h", "show this help")(
      "config", po::value<std::string>(), "the station configuration (station.conf)")(
      "token", po::value<std::string>(), "the card's token label")(
      "procedure", po::value<std::string>(), "CM certificate procedure (default: the station's)")(
      "field", po::value<std::vector<std::string>>(), "subject field NAME=VALUE (repeatable)")(
      "workflow-id", po::value<std::string>(), "workflow id (to resume an interrupted one)");
  po::variables_map vm;
  if (int rc = parse_card_command("issue", kUsage, opts, {"config", "token", "field"}, argc, argv,
                                  vm);
      rc >= 0) {
    return rc;
  }
  actors::CardRequest r;
  r.token_label = vm["token"].as<std::string>();
  if (vm.count("procedure")) r.procedure = vm["procedure"].as<std::string>();
  for (const auto& f : vm["field"].as<std::vector<std::string>>()) {
    auto field = split_assignment(f, "--field");
    if (!field) {
      std::cerr << "persoflow issue card: " << field.status().message() << "\n";
      return 2;
    }
    r.subject[field->first] = field->second;
  }
  r.workflow_id = vm.count("workflow-id") ? vm["workflow-id"].as<std::string>()
                                          : default_workflow_id(r.token_label, "issue");
  // The same checks as a queue line.
  auto checked = actors::card_request_from_json(actors::card_request_to_json(r));
  if (!checked) {
    std::cerr << "persoflow issue card: " << checked.status().message() << "\n";
    return 2;
  }
  auto report = run_station_batch(vm["config"].as<std::string>(), {*checked}, std::cout, true);
  if (!report) {
    std::cerr << "persoflow issue card: " << report.status().message() << "\n";
    return 1;
  }
  print_batch_table(*report, std::cout, false);
  return report->done(checked->workflow_id) ? 0 : 1;
}

}  // namespace

PF_REGISTER_COMMAND_GROUP(issue, "issue", "issue certificates on one card (issue card)", run);

}  // namespace persoflow::apps
