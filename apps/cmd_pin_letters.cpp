// `persoflow cm pin-letters list | print ID | preprint`: the CM host's PIN mailer
// (cmhost/pin_letters.hpp). A letter is printed once: the second print is refused.
#include <boost/program_options.hpp>
#include <cstdlib>
#include <filesystem>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cm_subcommands.hpp"
#include "persoflow/cmhost/cm_host.hpp"
#include "persoflow/cmhost/pin_letters.hpp"
#include "persoflow/devices/pkcs12.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;

constexpr const char* kUsage =
    "Usage: persoflow cm pin-letters list [--json] [--dir DIR]\n"
    "       persoflow cm pin-letters print ID [--format pdf|text] [--out FILE] [--dir DIR]\n"
    "       persoflow cm pin-letters preprint --count N [--length L] [--puk-length P] [--dir DIR]\n\n"
    "PIN letters for the secure printer: those the RAs queued for the PIN mailer and the\n"
    "pre-printed PIN/PUK letters an RA binds to a token by ID. A pre-printed letter carries a\n"
    "PIN; with --puk-length also a PUK, for cards with two PINs (a card with two PINs takes only\n"
    "a PIN/PUK letter, a token with one only a PIN letter). Each letter is printed once; print\n"
    "writes the letter (PDF by default) to FILE, or to stdout for text.\n\n";

int fail(const std::string& message, int code = 1) {
  std::cerr << "persoflow cm pin-letters: " << message << "\n";
  return code;
}

std::string time_text(std::int64_t t) {
  if (t == 0) return "-";
  std::time_t tt = static_cast<std::time_t>(t);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&tt));
  return buf;
}

int cmd_pin_letters(int argc, char** argv) {
  po::options_description opts("Options");
  opts.add_options()("help,h", "show this help")(
      "dir", po::value<std::string>(), "CM directory (default: $PERSOFLOW_CM_DIR)")(
      "json", "list as JSON")("format", po::value<std::string>()->default_value("pdf"),
                              "print: pdf or text")(
      "out", po::value<std::string>(), "print: the file to write (mode 0600)")(
      "count", po::value<int>(), "preprint: how many letters")(
      "length", po::value<int>()->default_value(8), "preprint: digits of each PIN")(
      "puk-length", po::value<int>()->default_value(0),
      "preprint: digits of each letter's PUK (0: PIN letters without a PUK)");
  po::variables_map vm;
  std::vector<std::string> rest;
  try {
    auto parsed = po::command_line_parser(argc, argv).options(opts).allow_unregistered().run();
    po::store(parsed, vm);
    rest = po::collect_unrecognized(parsed.options, po::include_positional);
  } catch (const std::exception& e) {
    return fail(e.what(), 2);
  }
  if (vm.count("help")) {
    std::cout << kUsage << opts;
    return 0;
  }
  if (rest.empty() || (rest[0] != "list" && rest[0] != "print" && rest[0] != "preprint")) {
    return fail("expected list, print ID or preprint (see --help)", 2);
  }
  const std::string verb = rest[0];
  if (verb == "print" && rest.size() != 2) return fail("print needs the letter ID", 2);
  if (verb != "print" && rest.size() != 1) return fail("unexpected '" + rest.back() + "'", 2);
  const std::string format = vm["format"].as<std::string>();
  if (format != "pdf" && format != "text") {
    return fail("--format must be pdf or text, not '" + format + "'", 2);
  }
  if (verb == "print" && format == "pdf" && !vm.count("out")) {
    return fail("a PDF letter needs --out FILE", 2);
  }
  if (verb == "preprint" && !vm.count("count")) return fail("preprint needs --count N", 2);
  const int puk_length = vm["puk-length"].as<int>();
  if (puk_length != 0 && (puk_length < 4 || puk_length > 64)) {
    return fail("--puk-length must be 4..64 (or 0: no PUK), not " + std::to_string(puk_length), 2);
  }
  std::string dir;
  if (vm.count("dir")) {
    dir = vm["dir"].as<std::string>();
  } else if (const char* env = std::getenv("PERSOFLOW_CM_DIR"); env && *env) {
    dir = env;
  } else {
    return fail("--dir DIR is required (or set PERSOFLOW_CM_DIR)", 2);
  }
  auto host = cmhost::CmHost::open(dir);
  if (!host) return fail(host.status().message());
  auto letters = cmhost::PinLetters::open(**host);
  if (!letters) return fail(letters.status().message());

  if (verb == "list") {
    auto list = (*letters)->list();
    if (!list) return fail(list.status().message());
    if (vm.count("json")) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& l : *list) {
        out.push_back({{"letter_id", l.letter_id}, {"kind", l.kind}, {"state", l.state},
                       {"holder", l.holder}, {"address", l.address}, {"token", l.token},
                       {"secrets", l.has_puk ? "PIN/PUK" : "PIN"},
                       {"created_at", l.created_at}, {"printed_at", l.printed_at}});
      }
      std::cout << out.dump(2) << "\n";
      return 0;
    }
    for (const auto& l : *list) {
      std::cout << l.letter_id << "  " << l.kind << "  " << (l.has_puk ? "PIN/PUK" : "PIN")
                << "  " << l.state << "  "
                << time_text(l.created_at) << "  printed " << time_text(l.printed_at) << "  "
                << (l.holder.empty() ? "-" : l.holder) << "  "
                << (l.address.empty() ? "-" : l.address) << "\n";
    }
    return 0;
  }
  if (verb == "preprint") {
    auto ids = (*letters)->preprint(vm["count"].as<int>(), vm["length"].as<int>(), puk_length,
                                    "cli");
    if (!ids) return fail(ids.status().message());
    for (const auto& id : *ids) std::cout << id << "\n";
    return 0;
  }
  if (vm.count("out") && std::filesystem::exists(vm["out"].as<std::string>())) {
    // Checked before the letter is marked printed: it is printed only once.
    return fail(vm["out"].as<std::string>() + " exists already", 1);
  }
  auto rendered = (*letters)->print(rest[1], format, "cli");
  if (!rendered) return fail(rendered.status().message());
  if (vm.count("out")) {
    if (Status s = devices::write_file_atomic(vm["out"].as<std::string>(), *rendered, false); !s) {
      return fail(s.message());
    }
    std::cout << "PIN letter " << rest[1] << " written to " << vm["out"].as<std::string>()
              << "\n";
  } else {
    std::cout << *rendered;
  }
  return 0;
}

}  // namespace

PF_REGISTER_CM_SUBCOMMAND(pin_letters, "pin-letters",
                          "list, print (once) or pre-print PIN letters for the secure printer",
                          cmd_pin_letters);

}  // namespace persoflow::apps
