// `persoflow keys search --serial HEX | --subject S | --id DEC [--json]`: the certificates the
// CM host issued (and whether a key is archived for each), asked over CMP
// (persoflowCertificateSearch) by the officer of the station in --config; what an officer looks
// up before a reissue or a key recovery.
#include <boost/program_options.hpp>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "command_registry.hpp"
#include "persoflow/actors/reissue.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;
using nlohmann::json;

constexpr const char* kUsage =
    "Usage: persoflow keys search --config FILE (--serial HEX | --subject S | --id DEC)\n"
    "           [--substring] [--json]\n\n"
    "Finds certificates at the CM host by hexadecimal serial number, subject (exact RFC 2253,\n"
    "e.g. \"CN=Alice,O=Example\", or a part of it with --substring) or decimal certificate ID,\n"
    "with their status and the number of keys archived for them.\n\n";

std::string date_text(std::int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  char buffer[16];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%d", std::gmtime(&tt));
  return buffer;
}

int search(int argc, char** argv) {
  po::options_description opts("Options");
  opts.add_options()("help,h", "show this help")(
      "config", po::value<std::string>(), "the station configuration (station.conf)")(
      "serial", po::value<std::string>(), "serial number, hexadecimal")(
      "subject", po::value<std::string>(), "subject, RFC 2253")(
      "substring", "--subject matches a part of the subject")(
      "id", po::value<std::string>(), "certificate ID, decimal")(
      "json", "print the CM host's answer as JSON");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "persoflow keys search: " << e.what() << " (see --help)\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << kUsage << opts;
    return 0;
  }
  auto usage_error = [](const std::string& m) {
    std::cerr << "persoflow keys search: " << m << " (see --help)\n";
    return 2;
  };
  if (!vm.count("config")) return usage_error("--config FILE is required");
  if (vm.count("serial") + vm.count("subject") + vm.count("id") != 1) {
    return usage_error("give exactly one of --serial HEX, --subject S and --id DEC");
  }
  if (vm.count("substring") && !vm.count("subject")) {
    return usage_error("--substring goes with --subject");
  }
  json query;
  if (vm.count("serial")) {
    const std::string serial = vm["serial"].as<std::string>();
    if (serial.empty() || serial.find_first_not_of("0123456789abcdefABCDEF:") != std::string::npos) {
      return usage_error("--serial '" + serial + "' is not hexadecimal");
    }
    query["serial"] = serial;
  } else if (vm.count("id")) {
    const std::string id = vm["id"].as<std::string>();
    if (id.empty() || id.size() > 18 || id.find_first_not_of("0123456789") != std::string::npos ||
        std::stoll(id) <= 0) {
      return usage_error("--id '" + id + "' is not a positive decimal number");
    }
    query["cert_id"] = std::stoll(id);
  } else {
    query["subject"] = vm["subject"].as<std::string>();
    if (vm.count("substring")) query["substring"] = true;
  }
  auto config = actors::load_station_config(vm["config"].as<std::string>());
  if (!config) {
    std::cerr << "persoflow keys search: " << config.status().message() << "\n";
    return 1;
  }
  auto station = actors::ReissueStation::open(*config);
  if (!station) {
    std::cerr << "persoflow keys search: " << station.status().message() << "\n";
    return 1;
  }
  auto answer = (*station)->search_certificates(query.dump());
  if (!answer) {
    std::cerr << "persoflow keys search: " << answer.status().message() << "\n";
    return 1;
  }
  json found = json::parse(*answer).value("certificates", json::array());
  if (vm.count("json")) {
    std::cout << found.dump(2) << "\n";
    return 0;
  }
  if (found.empty()) {
    std::cout << "no certificate found\n";
    return 0;
  }
  std::cout << std::left << std::setw(6) << "ID" << std::setw(34) << "SERIAL" << std::setw(9)
            << "STATUS" << std::setw(6) << "KEYS" << std::setw(12) << "NOT AFTER"
            << "SUBJECT (PROCEDURE)\n";
  for (const auto& c : found) {
    std::cout << std::left << std::setw(6) << c.value("cert_id", 0) << std::setw(34)
              << c.value("serial", "") << std::setw(9) << c.value("status", "") << std::setw(6)
              << c.value("archived_keys", 0) << std::setw(12)
              << date_text(c.value("not_after", std::int64_t{0})) << c.value("subject", "")
              << " (" << c.value("procedure", "") << ")\n";
  }
  return 0;
}

int run(int argc, char** argv) {
  if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    std::cout << kUsage;
    return 0;
  }
  if (argc < 2 || std::string(argv[1]) != "search") {
    std::cerr << "persoflow keys: expected 'search' (see 'persoflow keys --help')\n";
    return 2;
  }
  std::string name = "persoflow keys search";
  argv[1] = name.data();
  return search(argc - 1, argv + 1);
}

}  // namespace

PF_REGISTER_COMMAND_GROUP(keys, "keys",
                          "search certificates and archived keys at the CM host (keys search)",
                          run);

}  // namespace persoflow::apps
