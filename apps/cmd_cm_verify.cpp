// `persoflow cm verify --code CODE`: confirms the e-mail address of a certificate request that
// waits for it (procedures with email_verification, docs/reissue.md). The code is the one the CM
// host mailed to the subject; the request is then issued at the client's next status query.
// The code is read from --code or, with --code -, from standard input (so it need not appear on
// a command line).
#include <boost/program_options.hpp>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>

#include "cm_subcommands.hpp"
#include "persoflow/cmhost/cm_host.hpp"
#include "persoflow/cmhost/reissue_cm.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;

int cmd_cm_verify(int argc, char** argv) {
  std::string dir;
  std::string code;
  std::string transaction;
  po::options_description options(
      "persoflow cm verify --dir DIR --code CODE|- [--transaction HEX]");
  options.add_options()("help,h", "show this help")(
      "dir", po::value(&dir), "CM directory (or $PERSOFLOW_CM_DIR)")(
      "code", po::value(&code), "the code mailed to the subject; '-' reads it from stdin")(
      "transaction", po::value(&transaction),
      "only the request of this CMP transactionID (hex); wrong codes then count against it");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, options), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "persoflow cm verify: " << e.what() << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << "Confirms the e-mail address of a certificate request waiting for e-mail\n"
                 "verification, with the code the CM host mailed to the subject.\n\n"
              << options;
    return 0;
  }
  if (dir.empty()) {
    if (const char* env = std::getenv("PERSOFLOW_CM_DIR")) dir = env;
  }
  if (dir.empty()) {
    std::cerr << "persoflow cm verify: --dir DIR is required\n";
    return 2;
  }
  if (code.empty()) {
    std::cerr << "persoflow cm verify: --code CODE is required (or --code - to read it from "
                 "stdin)\n";
    return 2;
  }
  if (code == "-") {
    std::getline(std::cin, code);
    while (!code.empty() && (code.back() == '\r' || code.back() == ' ')) code.pop_back();
  }
  auto host = cmhost::CmHost::open(dir);
  if (!host.is_ok()) {
    std::cerr << "persoflow cm verify: " << host.status().message() << "\n";
    return 1;
  }
  std::optional<std::string> only;
  if (!transaction.empty()) only = transaction;
  auto confirmed = cmhost::confirm_email_code(**host, code, "cli", only);
  if (!confirmed.is_ok()) {
    std::cerr << "persoflow cm verify: " << confirmed.status().message() << "\n";
    return confirmed.status().code() == make_error_code(Errc::kInvalidArgument) ? 2 : 1;
  }
  std::cout << "verified " << cmhost::mask_email(confirmed->email) << " for transaction "
            << confirmed->transaction_id << " (procedure " << confirmed->procedure
            << "): the certificate is issued at the client's next poll\n";
  return 0;
}

}  // namespace

PF_REGISTER_CM_SUBCOMMAND(verify, "verify",
                          "confirm a request's e-mail address with the code mailed to it",
                          cmd_cm_verify);

}  // namespace persoflow::apps
