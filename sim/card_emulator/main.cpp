// persoflow-card-emulator: a card for the vpcd virtual reader, controlled by lines on stdin.
//
//   persoflow-card-emulator [--port 35963] [--atr 3B8A... | --token-serial S] [--serial HEX]
//                           [--inserted]
// --token-serial presents the ATR that names a PKCS#11 token (devices/card_atr.hpp), so a live
// station maps the reader to that token.
//   stdin:  insert [ATR]   connect to vpcd: pcscd sees a card insertion
//           remove         disconnect: pcscd sees a removal
//           status         prints "inserted <ATR>" or "removed"
//           quit           (or end of input) removes the card and exits
// Each command's outcome is one line on stdout ("inserted <ATR>", "removed", "error: ...").
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>

#include "persoflow/devices/card_atr.hpp"
#include "persoflow/sim/card_emulator.hpp"

namespace po = boost::program_options;
using persoflow::sim::CardEmulator;
using persoflow::sim::CardEmulatorOptions;

int main(int argc, char** argv) {
  CardEmulatorOptions options;
  unsigned port = options.port;
  po::options_description desc(
      "Usage: persoflow-card-emulator [options]\n\n"
      "A smart card for the vpcd virtual reader (pcscd + vsmartcard-vpcd), speaking vpcd's\n"
      "socket protocol on 127.0.0.1. Commands on stdin, one per line: 'insert [ATR]',\n"
      "'remove', 'status', 'quit'.\n\nOptions");
  desc.add_options()("help,h", "show this help")(
      "port,p", po::value<unsigned>(&port)->default_value(port),
      "vpcd's TCP port (35963 is reader 'Virtual PCD 00 00', 35964 '00 01')")(
      "atr", po::value<std::string>(&options.atr_hex)->default_value(options.atr_hex),
      "the card's ATR in hex")(
      "token-serial", po::value<std::string>(),
      "present the ATR that names this PKCS#11 token serial (instead of --atr)")(
      "serial", po::value<std::string>(&options.serial_hex)->default_value(options.serial_hex),
      "the card serial answered to GET DATA 9F7F, in hex")("inserted", "insert the card at start");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "persoflow-card-emulator: " << e.what() << " (see --help)\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (port == 0 || port > 65535) {
    std::cerr << "persoflow-card-emulator: --port must be 1..65535, not " << port << "\n";
    return 2;
  }
  options.port = static_cast<std::uint16_t>(port);
  if (vm.count("token-serial")) {
    if (!vm["atr"].defaulted()) {
      std::cerr << "persoflow-card-emulator: give --atr or --token-serial, not both\n";
      return 2;
    }
    auto atr = persoflow::devices::card_atr_for_token(vm["token-serial"].as<std::string>());
    if (!atr.is_ok()) {
      std::cerr << "persoflow-card-emulator: --token-serial: " << atr.status().message() << "\n";
      return 2;
    }
    options.atr_hex = *atr;
  }
  for (const std::string* hex : {&options.atr_hex, &options.serial_hex}) {
    auto parsed = persoflow::sim::parse_hex(*hex);
    if (!parsed.is_ok() || (hex == &options.atr_hex && (parsed->empty() || parsed->size() > 33))) {
      std::cerr << "persoflow-card-emulator: " << (hex == &options.atr_hex ? "--atr" : "--serial")
                << " is not valid: "
                << (parsed.is_ok() ? "an ATR has 1 to 33 bytes" : parsed.status().message())
                << "\n";
      return 2;
    }
  }

  CardEmulator card(options);
  std::string current_atr = options.atr_hex;
  auto insert = [&](const std::string& atr) {
    if (auto status = card.insert(atr); !status.is_ok()) {
      std::cout << "error: " << status.message() << std::endl;
      return false;
    }
    if (!atr.empty()) current_atr = atr;
    std::cout << "inserted " << current_atr << std::endl;
    return true;
  };
  if (vm.count("inserted") && !insert({})) return 1;

  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream words(line);
    std::string command, argument;
    words >> command >> argument;
    if (command.empty()) continue;
    if (command == "insert") {
      insert(argument);
    } else if (command == "remove") {
      card.remove();
      std::cout << "removed" << std::endl;
    } else if (command == "status") {
      std::cout << (card.inserted() ? "inserted " + current_atr : std::string("removed"))
                << std::endl;
    } else if (command == "quit") {
      break;
    } else {
      std::cout << "error: unknown command '" << command << "' (insert [ATR], remove, status, quit)"
                << std::endl;
    }
  }
  card.remove();
  return 0;
}
