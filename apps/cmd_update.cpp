// `persoflow update card --config FILE --token LABEL|--reader R --field N=V --action KEY=ACTION`:
// one card's update-card workflow through the station (the same executors and journal as
// `station run`). Giving --workflow-id again after an interruption resumes that workflow instead
// of starting another. Exit 0 when it ended Done; 1 when it was refused, failed or suspended
// (the reason is printed); 2 for a bad command line.
#include <boost/program_options.hpp>
#include <cstdlib>
#include <iostream>

#include "command_registry.hpp"
#include "persoflow/devices/card.hpp"
#include "station_batch.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;

constexpr const char* kUsage =
    "Usage: persoflow update card --config FILE (--token LABEL | --reader R)\n"
    "       --field NAME=VALUE... --action KEY=ACTION... [--procedure P] [--token-procedure T]\n"
    "       [--workflow-id ID]\n\n"
    "New certificates for the keys a personalised card holds. KEY is the key's entry number on\n"
    "the card (0, 1, ...), its CKA_ID in hex, its label, or 'tc' (the key holding the transport\n"
    "certificate); ACTION is one of\n"
    "  blank  leave the key alone (keys not named are left blank)\n"
    "  issue  a certificate for the key that is not stored on the card\n"
    "  redo   replace the key's certificate (how a transport certificate is replaced)\n"
    "  add    another certificate on the same key (refused when the card holds a TC)\n"
    "A card's transport certificate is validated by the CM host against the token procedure's\n"
    "trusted TC issuers before anything is written.\n\n";

int usage_error(const std::string& message) {
  std::cerr << "persoflow update card: " << message << "\n";
  return 2;
}

int run(int argc, char** argv) {
  po::options_description opts("Options");
  opts.add_options()("help,h", "show this help")("config", po::value<std::string>(),
                                                 "the station configuration (station.conf)")(
      "token", po::value<std::string>(), "the card's token label")(
      "reader", po::value<std::string>(), "the card's reader (PKCS#11 slot description)")(
      "procedure", po::value<std::string>(), "CM certificate procedure (default: the station's)")(
      "token-procedure", po::value<std::string>(),
      "CM token procedure whose trusted TC issuers apply (default: the station's)")(
      "field", po::value<std::vector<std::string>>(), "subject field NAME=VALUE (repeatable)")(
      "action", po::value<std::vector<std::string>>(), "KEY=ACTION (repeatable)")(
      "workflow-id", po::value<std::string>(), "workflow id (to resume an interrupted one)");
  po::variables_map vm;
  if (int rc =
          parse_card_command("update", kUsage, opts, {"config", "field", "action"}, argc, argv, vm);
      rc >= 0) {
    return rc;
  }
  if (vm.count("token") == vm.count("reader")) {
    return usage_error("give the card by --token LABEL or by --reader R (one of them)");
  }
  actors::CardRequest r;
  r.workflow = "update";
  if (vm.count("procedure")) r.procedure = vm["procedure"].as<std::string>();
  if (vm.count("token-procedure")) r.token_procedure = vm["token-procedure"].as<std::string>();
  for (const auto& f : vm["field"].as<std::vector<std::string>>()) {
    auto field = split_assignment(f, "--field");
    if (!field) return usage_error(field.status().message());
    r.subject[field->first] = field->second;
  }
  for (const auto& a : vm["action"].as<std::vector<std::string>>()) {
    auto action = split_assignment(a, "--action");
    if (!action) return usage_error(action.status().message());
    r.actions[action->first] = action->second;
  }
  const std::string config_path = vm["config"].as<std::string>();
  if (vm.count("token")) {
    r.token_label = vm["token"].as<std::string>();
  } else {
    // The token in the reader, named by its serial so the workflow never writes another card.
    auto config = actors::load_station_config(config_path);
    if (!config) {
      std::cerr << "persoflow update card: " << config.status().message() << "\n";
      return 1;
    }
    if (!config->softhsm2_conf.empty()) ::setenv("SOFTHSM2_CONF", config->softhsm2_conf.c_str(), 1);
    auto tokens = devices::list_tokens(config->pkcs11_module);
    if (!tokens) {
      std::cerr << "persoflow update card: " << tokens.status().message() << "\n";
      return 1;
    }
    const std::string reader = vm["reader"].as<std::string>();
    for (const auto& t : *tokens) {
      if (t.slot_description == reader) {
        r.token_label = t.label;
        r.token_serial = t.serial;
      }
    }
    if (r.token_serial.empty()) {
      std::cerr << "persoflow update card: no card in reader '" << reader << "'\n";
      return 1;
    }
  }
  r.workflow_id = vm.count("workflow-id") ? vm["workflow-id"].as<std::string>()
                                          : default_workflow_id(r.token_label, "update");
  // The same checks as a queue line.
  auto checked = actors::card_request_from_json(actors::card_request_to_json(r));
  if (!checked) return usage_error(checked.status().message());
  auto report = run_station_batch(config_path, {*checked}, std::cout, true);
  if (!report) {
    std::cerr << "persoflow update card: " << report.status().message() << "\n";
    return 1;
  }
  print_batch_table(*report, std::cout, false);
  return report->done(checked->workflow_id) ? 0 : 1;
}

}  // namespace

PF_REGISTER_COMMAND_GROUP(update, "update", "new certificates for a card's keys (update card)",
                          run);

}  // namespace persoflow::apps
