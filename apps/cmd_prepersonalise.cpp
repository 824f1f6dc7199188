// `persoflow prepersonalise card --config FILE --token LABEL --field CN=...`: what a card bureau
// does before a card reaches the RA — a key on the card and its transport certificate (TC) from
// the CM host's transport procedure (actors::write_transport_certificate). The demo makes its TC
// cards this way; a user can make more against the demo's CM host. Exit 0 with the TC's serial.
#include <boost/program_options.hpp>
#include <iostream>

#include "command_registry.hpp"
#include "persoflow/actors/station.hpp"
#include "station_batch.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;

constexpr const char* kUsage =
    "Usage: persoflow prepersonalise card --config FILE --token LABEL --field NAME=VALUE...\n"
    "       [--procedure transport]\n\n"
    "Pre-personalises a card as a card bureau does: generates a key on the card and stores the\n"
    "transport certificate (TC) the CM host issues for it under a transport procedure, labelled\n"
    "'Transport certificate'. A card that already holds a TC is left as it is.\n\n";

int fail(int code, const std::string& message) {
  std::cerr << "persoflow prepersonalise card: " << message << "\n";
  return code;
}

int run(int argc, char** argv) {
  po::options_description opts("Options");
  opts.add_options()("help,h", "show this help")("config", po::value<std::string>(),
                                                 "the station configuration (station.conf)")(
      "token", po::value<std::string>(), "the card's token label")(
      "field", po::value<std::vector<std::string>>(), "TC subject field NAME=VALUE (repeatable)")(
      "procedure", po::value<std::string>()->default_value("transport"),
      "the CM host's transport certificate procedure");
  po::variables_map vm;
  if (int rc = parse_card_command("prepersonalise", kUsage, opts, {"config", "token", "field"},
                                  argc, argv, vm);
      rc >= 0) {
    return rc;
  }
  std::string subject;
  for (const auto& f : vm["field"].as<std::vector<std::string>>()) {
    auto field = split_assignment(f, "--field");
    if (!field) return fail(2, field.status().message());
    subject += "/" + field->first + "=" + field->second;
  }
  auto config = actors::load_station_config(vm["config"].as<std::string>());
  if (!config) return fail(1, config.status().message());
  auto station = actors::Station::open(*config);
  if (!station) return fail(1, station.status().message());
  auto serial = (*station)->token_serial(vm["token"].as<std::string>());
  if (!serial) return fail(1, serial.status().message());
  auto tc = actors::write_transport_certificate(**station, *serial, subject,
                                                vm["procedure"].as<std::string>());
  if (!tc) return fail(1, tc.status().message());
  std::cout << "card " << vm["token"].as<std::string>() << " (" << *serial
            << "): transport certificate " << *tc << "\n";
  return 0;
}

}  // namespace

PF_REGISTER_COMMAND_GROUP(prepersonalise, "prepersonalise",
                          "a key and transport certificate on a card, as a card bureau does", run);

}  // namespace persoflow::apps
