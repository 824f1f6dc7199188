// `persoflow issue card --config FILE --token LABEL --field CN=... [--procedure P]`: one card's
// issue-card workflow through the station (the same executors and journal as `station run`).
// The workflow id defaults to "<label>-issue-<UTC time>-<random hex>"; giving --workflow-id
// again after an interruption resumes that workflow instead of starting another. Exit 0 when it
// ended Done.
#include <boost/program_options.hpp>
#include <filesystem>
#include <iostream>
#include <map>
#include <utility>

#include "command_registry.hpp"
#include "persoflow/actors/state_files.hpp"
#include "persoflow/devices/pin_delivery.hpp"
#include "persoflow/machines/workflow_support.hpp"
#include "station_batch.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;

constexpr const char* kUsage =
    "Usage: persoflow issue card --config FILE --token LABEL --field NAME=VALUE...\n"
    "       [--procedure P] [--token-procedure T] [--action ENTRY=ACTION]...\n"
    "       [--search ENTRY=SEARCH]... [--request ENTRY=FLAG]... [--workflow-id ID]\n\n"
    "Issues certificates on one pre-personalised card: keys generated on the card (or by the\n"
    "CM host and archived, or recovered from its archive), the request signed by the officer\n"
    "and sent to the CM host over CMP, keys and certificates written to the card, a new card\n"
    "PIN generated and shown once.\n\n"
    "ENTRY is a key entry of the card (0, 1, ...; default: 0=add); ACTION is one of\n"
    "  add      a key for the entry: generated on the card, or 'generate & archive' by the CM\n"
    "           host when the token procedure archives keys\n"
    "  recover  an archived key recovered by the CM host onto the entry (token procedure with\n"
    "           key recovery); SEARCH is serial:<hex>, subject:<text> or id:<decimal>\n"
    "           (default auto: the subject entered); last or all keys as the procedure says\n"
    "  blank    leave the entry alone\n"
    "FLAG (default, yes, no) is a recover entry's request flag: by default a recovery request\n"
    "is sent, but where the token procedure holds several recovery procedures none is sent\n"
    "unless a key was selected (--search) or the flag is yes.\n\n"
    "PIN modes (--pin): generated (default; shown once), entered (asked twice without echo on\n"
    "the terminal, or two lines from --pin-fd N, e.g. 0 for stdin; never on the command line;\n"
    "not checked against the card's PIN policy; an empty entry generates one instead), mailer\n"
    "(generated and queued by the CM host as a PIN letter to --mail-to), letter (the PIN of\n"
    "the pre-printed PIN/PUK letter --pin-letter-id PL-...). Where the station's cards have\n"
    "two PINs (card_pin_count 2) the PUK follows the PIN in each mode: entered, the PIN's two\n"
    "lines and then the PUK's; generated, both shown once.\n\n";

int run(int argc, char** argv) {
  po::options_description opts("Options");
  opts.add_options()("help,h", "show this help")(
      "config", po::value<std::string>(), "the station configuration (station.conf)")(
      "token", po::value<std::string>(), "the card's token label")(
      "procedure", po::value<std::string>(), "CM certificate procedure (default: the station's)")(
      "token-procedure", po::value<std::string>(),
      "CM token procedure (its key procedures: archive, recovery)")(
      "action", po::value<std::vector<std::string>>(), "ENTRY=add|recover|blank (repeatable)")(
      "search", po::value<std::vector<std::string>>(), "ENTRY=SEARCH of a recover entry")(
      "request", po::value<std::vector<std::string>>(),
      "ENTRY=default|yes|no: a recover entry's request flag")(
      "field", po::value<std::vector<std::string>>(), "subject field NAME=VALUE (repeatable)")(
      "pin", po::value<std::string>(), "card PIN mode: generated|entered|mailer|letter")(
      "pin-fd", po::value<int>(), "entered: read the PIN (twice) from this descriptor")(
      "mail-to", po::value<std::string>(), "mailer: the holder's address")(
      "pin-letter-id", po::value<std::string>(), "letter: the PIN/PUK letter's ID")(
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
  if (vm.count("token-procedure")) r.token_procedure = vm["token-procedure"].as<std::string>();
  const std::pair<const char*, std::map<std::string, std::string>*> per_entry[] = {
      {"action", &r.actions}, {"search", &r.searches}, {"request", &r.request_flags}};
  for (const auto& [option, into] : per_entry) {
    if (!vm.count(option)) continue;
    for (const auto& a : vm[option].as<std::vector<std::string>>()) {
      auto value = split_assignment(a, std::string("--") + option);
      if (!value) {
        std::cerr << "persoflow issue card: " << value.status().message() << "\n";
        return 2;
      }
      (*into)[value->first] = value->second;
    }
  }
  r.workflow_id = vm.count("workflow-id") ? vm["workflow-id"].as<std::string>()
                                          : default_workflow_id(r.token_label, "issue");
  if (vm.count("pin")) r.pin_delivery = vm["pin"].as<std::string>();
  if (vm.count("mail-to")) r.mail_to = vm["mail-to"].as<std::string>();
  if (vm.count("pin-letter-id")) r.pin_letter_id = vm["pin-letter-id"].as<std::string>();
  std::vector<std::string> entered_pin_files;
  if (r.pin_delivery == "entered") {
    // The PIN goes to the station's secrets folder (0600); the request names it by reference.
    // A card with two PINs gets its PUK the same way, asked after the PIN.
    auto config = actors::load_station_config(vm["config"].as<std::string>());
    if (!config) {
      std::cerr << "persoflow issue card: " << config.status().message() << "\n";
      return 1;
    }
    std::cerr << "warning: " << machines::wf::kPinPolicyWarning << "\n";
    const int fd = vm.count("pin-fd") ? vm["pin-fd"].as<int>() : -1;
    const std::pair<std::string*, const char*> pins[] = {{&r.pin_ref, "PIN"},
                                                         {&r.puk_ref, "PUK"}};
    for (int i = 0; i < config->card_pin_count; ++i) {
      const std::string what = pins[i].second;
      auto pin = devices::read_pin_twice(fd, "New card " + what + ": ");
      if (!pin) {
        std::cerr << "persoflow issue card: " << what << ": " << pin.status().message() << "\n";
        return 2;
      }
      if (!*pin) break;  // cancelled: generated and shown instead
      *pins[i].first = std::string(i == 0 ? "entered-" : "entered-puk-") + r.workflow_id;
      entered_pin_files.push_back(config->state_dir + "/secrets/" + *pins[i].first);
      std::error_code ec;
      std::filesystem::create_directories(config->state_dir + "/secrets", ec);
      Status saved = actors::write_durably(entered_pin_files.back(),
                                           std::string((*pin)->view()) + "\n", 0600);
      if (!saved) {
        std::cerr << "persoflow issue card: " << saved.message() << "\n";
        return 1;
      }
    }
  }
  // The same checks as a queue line.
  auto checked = actors::card_request_from_json(actors::card_request_to_json(r));
  if (!checked) {
    std::cerr << "persoflow issue card: " << checked.status().message() << "\n";
    return 2;
  }
  auto report = run_station_batch(vm["config"].as<std::string>(), {*checked}, std::cout, true);
  if (report && report->done(checked->workflow_id)) {
    std::error_code ec;
    // Set on the card: the RA keeps no copy.
    for (const auto& file : entered_pin_files) std::filesystem::remove(file, ec);
  }
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
