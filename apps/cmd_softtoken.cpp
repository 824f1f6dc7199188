// `persoflow softtoken issue`: one PKCS#12 software token through the issue-soft-token workflow
// (journaled; the same executors as `persoflow workflows resume` with
// PERSOFLOW_SOFTTOKEN_CONFIG). Giving --workflow-id again after an interruption resumes that
// workflow instead of starting another. Exit 0 when the token was written, 1 when it was refused
// or failed, 2 for bad usage, 3 when the workflow ended (or was found) cancelled: a clean end,
// nothing half-issued, but no token either.
#include <fcntl.h>

#include <boost/program_options.hpp>
#include <filesystem>
#include <iostream>

#include "command_registry.hpp"
#include "station_batch.hpp"
#include "persoflow/actors/operator_input.hpp"
#include "persoflow/actors/runtime.hpp"
#include "persoflow/actors/softtoken.hpp"
#include "persoflow/devices/keygen_list.hpp"
#include "persoflow/machines/engine.hpp"
#include "persoflow/machines/workflow_support.hpp"
#include "persoflow/storage/journal.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;
namespace fs = std::filesystem;
namespace ac = persoflow::actors;

constexpr const char* kUsage =
    "Usage: persoflow softtoken issue --config FILE --procedure P --field NAME=VALUE...\n"
    "         [--out DIR] [--name BASENAME] [--format p12|pem|der] [--algorithm ALG]\n"
    "         [--key-search K=CRITERION]... [--pin-fd N] [--mail-to ADDRESS]\n"
    "         [--pin-letter-id ID] [--workflow-id ID] [--ask-fd N]\n\n"
    "Issues a PKCS#12 software token under the CM host's token procedure P: keys the RA\n"
    "generates itself (ALG from client.ra-key-generation, its '*' entry the default) or that\n"
    "the CM host generates and archives or recovers; the request signed by the officer; the\n"
    "PKCS#12 (with the chain) and the certificate file (DER, or PEM with --format pem) written to\n"
    "DIR; the PIN (the PKCS#12 password) delivered as the procedure says. CRITERION for a\n"
    "recovery key procedure K (0, 1, ...): auto, serial:HEX, id:DECIMAL or subject:TEXT.\n"
    "The configuration is the station's (station.conf), with optional \"officer_card\" (token\n"
    "label: entropy for key generation) and \"pkcs12_iterations\".\n"
    "A refused request (an algorithm not in the list, no subject, ...) asks again on\n"
    "descriptor N (--ask-fd): corrections one per line, an empty line sends them.\n\n"
    "Exit status: 0 the token was written (also when a run killed after the last step is run\n"
    "again); 1 refused, failed or suspended (run again with --workflow-id to resume); 2 bad\n"
    "usage; 3 the workflow is cancelled (now or by an earlier run or `persoflow workflows\n"
    "cancel`): it ended cleanly without a token, and running it again changes nothing.\n\n";

// A workflow that ended Cancelled is a clean end, told apart from a failure.
constexpr int kExitCancelled = 3;

std::string safe_base(const std::string& text) {
  std::string out;
  for (char c : text) {
    out += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '-';
  }
  return out.empty() ? std::string("softtoken") : out;
}

// The reason recorded in the last record of a finished workflow (Failed, Cancelled).
std::string recorded_reason(const std::string& journal_path, const std::string& workflow_id) {
  auto journal = storage::Journal::open(journal_path, {.create_if_missing = false,
                                                       .read_only = true});
  if (!journal) return {};
  auto records = (*journal)->records(workflow_id);
  if (!records || records->empty()) return {};
  auto state = machines::decode_state(records->back().body.state);
  const std::string reason = state ? machines::wf::get(state->data, "reason") : std::string();
  if (!reason.empty()) return reason;
  // An operator's `workflows cancel` records its reason in the event only.
  auto event = machines::decode_event(records->back().body.event);
  return event && event->fields.count("reason") ? event->fields.at("reason") : std::string();
}

int fail(const std::string& message, int code) {
  std::cerr << "persoflow softtoken issue: " << message << "\n";
  return code;
}

int cancelled(const std::string& workflow_id, const std::string& reason) {
  std::cout << workflow_id << ": Cancelled" << (reason.empty() ? "" : ": " + reason) << "\n";
  return fail("workflow " + workflow_id + " was cancelled" +
                  (reason.empty() ? "" : " (" + reason + ")") + "; no token was written",
              kExitCancelled);
}

// The workflow's last outcome says the machine refused the request (the operator may correct it).
bool refused(const std::vector<ac::WorkflowOutcome>& outcomes, const std::string& workflow_id) {
  const ac::WorkflowOutcome* last = nullptr;
  for (const auto& o : outcomes) {
    if (o.workflow_id == workflow_id) last = &o;
  }
  return last && last->outcome == ac::Outcome::kSuspended &&
         last->reason.find("refused: ") != std::string::npos;
}

// Corrections of a refused request, one per line from `fd`: algorithm=ALG, or NAME=VALUE for a
// subject field (NAME= removes it); an empty line sends them. false: the end of the input or
// "cancel" (nothing is changed).
Result<bool> corrections(int fd, ac::SoftTokenRequest& request) {
  ac::SoftTokenRequest changed = request;
  std::string question =
      "correct the request: algorithm=ALG or NAME=VALUE (a subject field; NAME= removes it), "
      "one per line; an empty line sends it, 'cancel' stops:";
  for (int lines = 0;; ++lines) {
    PF_ASSIGN_OR_RETURN(auto line, ac::ask_operator_line(fd, question));
    question.clear();
    if (!line || *line == "cancel") return false;
    if (line->empty()) {
      if (lines == 0) continue;  // nothing corrected yet: an empty line sends nothing
      request = std::move(changed);
      return true;
    }
    const auto eq = line->find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "'" << *line << "' is not NAME=VALUE; ignored\n";
      continue;
    }
    const std::string name = line->substr(0, eq);
    const std::string value = line->substr(eq + 1);
    if (name == "algorithm") {
      changed.algorithm = value;
    } else if (value.empty()) {
      changed.subject.erase(name);
    } else {
      changed.subject[name] = value;
    }
  }
}

int issue(const po::variables_map& vm) {
  for (const char* required : {"config", "procedure", "field"}) {
    if (!vm.count(required)) {
      return fail(std::string("--") + required + " is required (see --help)", 2);
    }
  }
  ac::SoftTokenRequest r;
  r.token_procedure = vm["procedure"].as<std::string>();
  for (const auto& f : vm["field"].as<std::vector<std::string>>()) {
    auto eq = f.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == f.size()) {
      return fail("--field wants NAME=VALUE, not '" + f + "'", 2);
    }
    r.subject[f.substr(0, eq)] = f.substr(eq + 1);
  }
  const std::string format = vm["format"].as<std::string>();
  if (format != "p12" && format != "der" && format != "pem") {
    return fail("--format must be p12, pem or der, not '" + format + "'", 2);
  }
  if (vm.count("algorithm")) {
    r.algorithm = vm["algorithm"].as<std::string>();
    if (auto alg = devices::parse_key_algorithm(r.algorithm); !alg) {
      return fail("--algorithm " + r.algorithm + ": " + alg.status().message(), 2);
    }
  }
  if (vm.count("pin-fd")) {
    r.pin_fd = vm["pin-fd"].as<int>();
    if (r.pin_fd < 0) return fail("--pin-fd must be a descriptor number >= 0", 2);
  }
  const int ask_fd = vm.count("ask-fd") ? vm["ask-fd"].as<int>() : -1;
  if (vm.count("ask-fd") && (ask_fd < 0 || ::fcntl(ask_fd, F_GETFD) == -1)) {
    return fail("--ask-fd " + std::to_string(ask_fd) + " is not an open descriptor", 2);
  }
  if (vm.count("mail-to")) r.mail_to = vm["mail-to"].as<std::string>();
  if (vm.count("pin-letter-id")) r.pin_letter_id = vm["pin-letter-id"].as<std::string>();
  std::map<int, std::string> searches;
  if (vm.count("key-search")) {
    for (const auto& s : vm["key-search"].as<std::vector<std::string>>()) {
      auto eq = s.find('=');
      int k = -1;
      try {
        k = eq == std::string::npos ? -1 : std::stoi(s.substr(0, eq));
      } catch (const std::exception&) {
      }
      if (k < 0 || k > 15) return fail("--key-search wants K=CRITERION, not '" + s + "'", 2);
      if (Status ok = machines::wf::check_search(s.substr(eq + 1), true); !ok) {
        return fail("--key-search " + s + ": " + ok.message(), 2);
      }
      searches[k] = s.substr(eq + 1);
    }
  }
  const std::string cn = r.subject.count("CN") ? r.subject.at("CN") : r.subject.begin()->second;
  if (vm.count("workflow-id")) {
    r.workflow_id = vm["workflow-id"].as<std::string>();
  } else {
    r.workflow_id = default_workflow_id("softtoken", safe_base(cn));
  }
  const fs::path out = vm.count("out") ? fs::path(vm["out"].as<std::string>()) : fs::current_path();
  const std::string base = vm.count("name") ? vm["name"].as<std::string>() : safe_base(cn);
  r.p12_file = fs::absolute(out / (base + ".p12")).string();
  r.cert_file = fs::absolute(out / (base + (format == "pem" ? ".pem" : ".der"))).string();

  auto config = ac::load_softtoken_config(vm["config"].as<std::string>());
  if (!config) return fail(config.status().message(), 1);
  auto ra = ac::SoftTokenRa::open(*config);
  if (!ra) return fail(ra.status().message(), 1);

  ac::ExecutorRegistry executors;
  ac::install_softtoken_executors(executors, *ra);
  auto runtime = ac::Runtime::open(config->journal, std::move(executors));
  if (!runtime) return fail(runtime.status().message(), 1);

  bool resuming = vm.count("workflow-id") && (*ra)->load_request(r.workflow_id).is_ok();
  if (resuming) {
    auto saved = (*ra)->load_request(r.workflow_id);
    Status s = (*runtime)->resume(saved->workflow_id);
    // A request saved by a run that stopped before its workflow's first step reached the
    // journal: this run starts it (found by persoflow-crashtest, SQLITE_FULL on that commit).
    resuming = s || s.code() != make_error_code(Errc::kNotFound);
    if (resuming) {
      r = *saved;
      // Killed after the workflow's last step was journaled: it is done, say so (exit 0).
      if (!s && s.message().find(" is done; ") != std::string::npos) {
        std::cout << r.workflow_id << ": Done\n"
                  << "PKCS#12: " << r.p12_file << "\n"
                  << "certificate: " << r.cert_file << "\n";
        return 0;
      }
      if (!s && s.message().find(" is cancelled; ") != std::string::npos) {
        return cancelled(r.workflow_id, recorded_reason(config->journal, r.workflow_id));
      }
      if (!s) return fail(s.message(), 1);
    }
  }
  if (!resuming) {
    if (!fs::is_directory(out)) return fail("--out " + out.string() + " is not a folder", 2);
    for (const std::string& f : {r.p12_file, r.cert_file}) {
      if (fs::exists(f)) return fail(f + " exists already; choose another --name or --out", 1);
    }
    auto first = (*ra)->procedure_chosen(r);
    if (!first) return fail(first.status().message(), 1);
    for (const auto& [k, criterion] : searches) {
      if (k >= static_cast<int>(r.key_searches.size())) {
        return fail("--key-search " + std::to_string(k) + ": the procedure has " +
                        std::to_string(r.key_searches.size()) + " key procedure(s)",
                    2);
      }
      r.key_searches[k] = criterion;
    }
    if (Status s = (*ra)->save_request(r); !s) return fail(s.message(), 1);
    if (Status s = (*runtime)->start(r.workflow_id, "issue-soft-token", *first); !s) {
      return fail(s.message(), 1);
    }
  }
  auto outcomes = (*runtime)->wait();
  // A refused request asks again: the operator's corrections go to the same workflow.
  while (ask_fd >= 0 && refused(outcomes, r.workflow_id)) {
    auto corrected = corrections(ask_fd, r);
    if (!corrected) return fail(corrected.status().message(), 1);
    if (!*corrected) break;  // nobody answers: the workflow stays as it is, resumable
    if (Status s = (*ra)->save_request(r); !s) return fail(s.message(), 1);
    Status posted = (*runtime)->post_event_and_wait(r.workflow_id, ac::request_entered_event(r));
    if (!posted) return fail(posted.message(), 1);
    outcomes = (*runtime)->wait();
  }
  runtime->reset();
  for (const auto& o : outcomes) {
    if (o.workflow_id != r.workflow_id) continue;
    if (o.outcome == ac::Outcome::kDone && o.state_name == "Done") {
      std::cout << r.workflow_id << ": Done\n"
                << "PKCS#12: " << r.p12_file << "\n"
                << "certificate: " << r.cert_file << "\n";
      return 0;
    }
    if (o.outcome == ac::Outcome::kSuspended) {
      std::cout << r.workflow_id << ": suspended: " << o.reason << "\n";
      return fail("not finished: " + o.reason +
                      (o.reason.find("refused: ") != std::string::npos
                           ? ""
                           : " (resume with --workflow-id " + r.workflow_id + ")"),
                  1);
    }
    const std::string why = o.outcome == ac::Outcome::kFailed
                                ? o.error.message()
                                : recorded_reason(config->journal, r.workflow_id);
    if (o.outcome == ac::Outcome::kCancelled || o.state_name == "Cancelled") {
      return cancelled(r.workflow_id, why);
    }
    std::cout << r.workflow_id << ": " << o.state_name << ": " << why << "\n";
    return fail(o.state_name + ": " + why, 1);
  }
  return fail("workflow " + r.workflow_id + " did not run", 1);
}

int run(int argc, char** argv) {
  po::options_description opts("Options");
  opts.add_options()("help,h", "show this help")(
      "config", po::value<std::string>(), "the configuration (station.conf)")(
      "procedure", po::value<std::string>(), "the CM host's token procedure (softtoken-standard)")(
      "field", po::value<std::vector<std::string>>(), "subject field NAME=VALUE (repeatable)")(
      "out", po::value<std::string>(), "folder of the files (default: the current one)")(
      "name", po::value<std::string>(), "file name without extension (default: from the CN)")(
      "format", po::value<std::string>()->default_value("der"),
      "certificate file: der (also for p12) or pem")(
      "algorithm", po::value<std::string>(), "key algorithm of RA keys, e.g. EC:secp256r1")(
      "key-search", po::value<std::vector<std::string>>(),
      "K=CRITERION for recovery key procedure K")(
      "pin-fd", po::value<int>(), "read an entered PIN (twice) from this descriptor")(
      "ask-fd", po::value<int>(),
      "after a refusal, read corrections from this descriptor (algorithm=ALG, NAME=VALUE)")(
      "mail-to", po::value<std::string>(), "PIN mailer: the holder's e-mail address")(
      "pin-letter-id", po::value<std::string>(), "PIN letter: the pre-printed letter's ID")(
      "workflow-id", po::value<std::string>(), "workflow id (to resume an interrupted one)");
  po::variables_map vm;
  std::vector<std::string> rest;
  try {
    auto parsed = po::command_line_parser(argc, argv).options(opts).allow_unregistered().run();
    po::store(parsed, vm);
    rest = po::collect_unrecognized(parsed.options, po::include_positional);
  } catch (const std::exception& e) {
    std::cerr << "persoflow softtoken: " << e.what() << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << kUsage << opts;
    return 0;
  }
  if (rest.size() != 1 || rest[0] != "issue") {
    std::cerr << "persoflow softtoken: expected 'issue' (see --help)\n";
    return 2;
  }
  return issue(vm);
}

}  // namespace

PF_REGISTER_COMMAND_GROUP(softtoken, "softtoken", "issue PKCS#12 software tokens (softtoken issue)",
                          run);

}  // namespace persoflow::apps
