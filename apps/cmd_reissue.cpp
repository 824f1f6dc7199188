// `persoflow reissue`: a new certificate with a new key pair for a previous one (the reissue
// machine, docs/reissue.md), through the station of --config: the previous certificate found by
// hexadecimal serial or decimal certificate ID, the key from a CSR (a file, or PEM on stdin) or
// generated on a card, the request signed by the officer and sent to the CM host, e-mail
// verification waited for when the procedure asks for it, the previous certificate revoked.
// Every step is journaled; an interrupted reissue is finished by `persoflow reissue
// --resume ID` or `persoflow workflows resume` (with PERSOFLOW_STATION_CONFIG).
#include <fcntl.h>

#include <boost/program_options.hpp>
#include <iostream>
#include <iterator>

#include "command_registry.hpp"
#include "station_batch.hpp"
#include "persoflow/actors/reissue.hpp"
#include "persoflow/actors/runtime.hpp"
#include "persoflow/actors/state_files.hpp"
#include "persoflow/machines/engine.hpp"
#include "persoflow/machines/workflow_support.hpp"
#include "persoflow/storage/journal.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;
namespace ac = persoflow::actors;

constexpr const char* kUsage =
    "Usage: persoflow reissue --config FILE (--serial HEX | --id DEC)\n"
    "           (--csr FILE | --csr-pem - | --card-token LABEL --key-alg ALG)\n"
    "           [--procedure P] [--no-revoke] [--workflow-id ID] [--ask-fd N]\n"
    "       persoflow reissue --config FILE --resume ID [--ask-fd N]\n\n"
    "Reissues a certificate with a new key pair: the key from a CSR (validated: it parses, its\n"
    "signature verifies, its key is allowed, its subject is the previous certificate's) or\n"
    "generated on the card; the previous certificate is revoked (reason superseded) unless\n"
    "--no-revoke. Where the procedure verifies the subject's e-mail address (the default\n"
    "procedure reissue-verified does) the command waits, polling the CM host, until the code\n"
    "mailed to the subject is confirmed with `persoflow cm verify`. A refused CSR asks for a\n"
    "corrected one on descriptor N (--ask-fd; a file name per line, empty: cancel); without\n"
    "--ask-fd the refusal ends the reissue.\n\n";

// Runs (or resumes) the workflow and prints how it ended. Exit 0 when Done.
int run_workflow(const std::shared_ptr<ac::ReissueStation>& station, const std::string& wf,
                 std::optional<machines::Event> first) {
  const auto& config = station->config();
  ac::ExecutorRegistry registry;
  // Running it again is the operator's retry: a workflow suspended while the CM host was
  // unreachable is retried on --resume.
  ac::install_reissue_executors(registry, station, /*retry_when_asked=*/!first.has_value());
  auto runtime = ac::Runtime::open(config.journal, std::move(registry));
  if (!runtime) {
    std::cerr << "persoflow reissue: " << runtime.status().message() << "\n";
    return 1;
  }
  Status started = first ? (*runtime)->start(wf, "reissue", std::move(*first))
                         : (*runtime)->resume(wf);
  // Resuming a workflow that already ended (a run killed after its last step was journaled):
  // nothing runs, and its end is reported from the journal below.
  const bool ended = !first && !started && started.code() == make_error_code(Errc::kRejected) &&
                     started.message().find("; there is nothing to resume") != std::string::npos;
  if (!started && !ended) {
    std::cerr << "persoflow reissue: " << started.message() << "\n";
    return 1;
  }
  std::cout << "reissue " << wf << ": running (journal " << config.journal << ")" << std::endl;
  auto outcomes = (*runtime)->wait();
  runtime->reset();  // closes the journal's writer before it is read
  auto journal = storage::Journal::open(config.journal, {.create_if_missing = false,
                                                         .read_only = true});
  machines::Fields data;
  std::string state_name;
  if (journal) {
    auto records = (*journal)->records(wf);
    if (records && !records->empty()) {
      auto state = machines::decode_state(records->back().body.state);
      if (state) {
        data = state->data;
        state_name = state->name;
      }
    }
  }
  std::string reason;
  for (const auto& o : outcomes) {
    if (o.workflow_id != wf) continue;
    reason = o.outcome == ac::Outcome::kFailed ? o.error.message() : o.reason;
    if (state_name.empty()) state_name = o.state_name;
  }
  using machines::wf::get;
  if (state_name == "Done") {
    const std::string serial = get(data, "cert.serial");
    std::cout << "reissue " << wf << ": Done; new certificate " << serial << " ("
              << station->certificate_path(serial) << ")";
    if (get(data, "previous.revoked") == "yes") {
      std::cout << "; previous certificate " << get(data, "previous.serial")
                << " revoked (superseded)";
    }
    std::cout << "\n";
    return 0;
  }
  if (reason.empty()) reason = get(data, "reason");
  std::cerr << "persoflow reissue: " << wf << " ended in " << state_name
            << (reason.empty() ? "" : ": " + reason) << "\n";
  return 1;
}

int run(int argc, char** argv) {
  po::options_description opts("Options");
  opts.add_options()("help,h", "show this help")(
      "config", po::value<std::string>(), "the station configuration (station.conf)")(
      "serial", po::value<std::string>(), "the previous certificate's serial number (hexadecimal)")(
      "id", po::value<std::string>(), "the previous certificate's ID at the CM host (decimal)")(
      "csr", po::value<std::string>(), "the new key's CSR (PEM or DER file)")(
      "csr-pem", po::value<std::string>(), "'-': read the CSR (PEM) from standard input")(
      "card-token", po::value<std::string>(), "generate the key on the card with this label")(
      "key-alg", po::value<std::string>(), "the card key's algorithm, e.g. EC:secp256r1, RSA:3072")(
      "procedure", po::value<std::string>()->default_value("reissue-verified"),
      "CM certificate procedure of the new certificate")(
      "no-revoke", "keep the previous certificate valid")(
      "workflow-id", po::value<std::string>(), "workflow id (default: reissue-<time>-<random>)")(
      "resume", po::value<std::string>(), "finish the interrupted reissue with this workflow id")(
      "ask-fd", po::value<int>(), "read the operator's answers (a corrected CSR's file) from N");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "persoflow reissue: " << e.what() << " (see --help)\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << kUsage << opts;
    return 0;
  }
  auto usage_error = [](const std::string& m) {
    std::cerr << "persoflow reissue: " << m << " (see --help)\n";
    return 2;
  };
  if (!vm.count("config")) return usage_error("--config FILE is required");
  const int ask_fd = vm.count("ask-fd") ? vm["ask-fd"].as<int>() : -1;
  if (vm.count("ask-fd") && (ask_fd < 0 || ::fcntl(ask_fd, F_GETFD) == -1)) {
    return usage_error("--ask-fd " + std::to_string(ask_fd) + " is not an open descriptor");
  }
  if (ask_fd == 0 && vm.count("csr-pem")) {
    return usage_error("--ask-fd 0 and --csr-pem - both want standard input");
  }
  auto config = ac::load_station_config(vm["config"].as<std::string>());
  if (!config) {
    std::cerr << "persoflow reissue: " << config.status().message() << "\n";
    return 1;
  }
  if (vm.count("resume")) {
    auto station = ac::ReissueStation::open(*config);
    if (!station) {
      std::cerr << "persoflow reissue: " << station.status().message() << "\n";
      return 1;
    }
    (*station)->set_operator_input(ask_fd);
    return run_workflow(*station, vm["resume"].as<std::string>(), std::nullopt);
  }
  if (vm.count("serial") + vm.count("id") != 1) {
    return usage_error("give exactly one of --serial HEX and --id DEC");
  }
  const int methods = static_cast<int>(vm.count("csr") + vm.count("csr-pem") +
                                       vm.count("card-token"));
  if (methods != 1) return usage_error("give exactly one of --csr, --csr-pem and --card-token");
  ac::ReissueRequest request;
  request.workflow_id =
      vm.count("workflow-id") ? vm["workflow-id"].as<std::string>()
                              : default_workflow_id("reissue", vm.count("serial") ? "serial" : "id");
  request.search = vm.count("serial") ? "serial:" + vm["serial"].as<std::string>()
                                      : "id:" + vm["id"].as<std::string>();
  if (Status s = machines::wf::check_search(request.search, false); !s) {
    return usage_error(vm.count("serial") ? "--serial must be hexadecimal"
                                          : "--id must be a decimal number");
  }
  request.procedure = vm["procedure"].as<std::string>();
  request.revoke_previous = !vm.count("no-revoke");
  if (vm.count("card-token")) {
    if (!vm.count("key-alg")) return usage_error("--card-token needs --key-alg ALG");
    request.method = "card";
    request.token_label = vm["card-token"].as<std::string>();
    request.key_algorithm = vm["key-alg"].as<std::string>();
  } else {
    if (vm.count("key-alg")) return usage_error("--key-alg goes with --card-token only");
    request.method = "csr";
    if (vm.count("csr")) {
      auto bytes = ac::read_file(vm["csr"].as<std::string>());
      if (!bytes) {
        std::cerr << "persoflow reissue: " << bytes.status().message() << "\n";
        return 1;
      }
      request.csr_pem = std::move(bytes).value();
    } else {
      if (vm["csr-pem"].as<std::string>() != "-") return usage_error("--csr-pem takes '-' only");
      request.csr_pem.assign(std::istreambuf_iterator<char>(std::cin),
                             std::istreambuf_iterator<char>());
    }
    if (request.csr_pem.empty()) return usage_error("the CSR is empty");
  }
  auto station = ac::ReissueStation::open(*config);
  if (!station) {
    std::cerr << "persoflow reissue: " << station.status().message() << "\n";
    return 1;
  }
  (*station)->set_operator_input(ask_fd);
  if (Status s = (*station)->save_request(request); !s) {
    std::cerr << "persoflow reissue: " << s.message() << "\n";
    return s.code() == make_error_code(Errc::kInvalidArgument) ? 2 : 1;
  }
  auto first = (*station)->start_event(request);
  if (!first) {
    std::cerr << "persoflow reissue: " << first.status().message() << "\n";
    return first.status().code() == make_error_code(Errc::kInvalidArgument) ? 2 : 1;
  }
  return run_workflow(*station, request.workflow_id, std::move(first).value());
}

}  // namespace

PF_REGISTER_COMMAND_GROUP(reissue, "reissue",
                          "reissue a certificate with a new key (CSR or card), revoke the previous",
                          run);

}  // namespace persoflow::apps
