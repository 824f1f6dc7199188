// persoflow-crashtest: proves that the station loses nothing and issues nothing twice whatever
// fails. For each scenario (scenario.hpp) it runs the work once to count its operations, then for
// every numbered fault point (common/fault_points.hpp) and N = 1, 2, ... injects the fault at the
// N-th operation, and kills the station with SIGKILL at each crash point (each journal commit
// boundary, before and after each command); then restarts the station until it finishes and
// checks the invariants. Prints a matrix of fault point x outcome and a verdict line; exit 1 on
// any violation. docs/faults.md.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "persoflow/common/fault_points.hpp"
#include "persoflow/sim/fault_proxy.hpp"
#include "process.hpp"
#include "scenario.hpp"

namespace persoflow::crashtest {
namespace {

namespace po = boost::program_options;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kMaxRestarts = 3;
constexpr auto kRunTimeout = seconds(150);

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// One trial: a fault at the nth operation of a point, or a SIGKILL at the kth time a crash point
// is reached, or nothing (the counting run).
struct TrialSpec {
  enum class Kind { kBaseline, kFault, kKill } kind = Kind::kBaseline;
  FaultPoint point = FaultPoint::kProcessKilled;
  long nth = 0;
  std::string crash_point;  // kKill: a crash point, or kTimed (SIGKILL from outside, nth ms in)
  static constexpr const char* kTimed = "timed";
  bool timed() const { return kind == Kind::kKill && crash_point == kTimed; }
  // A fault only a person mends (a blocked PIN, a full card): the workflow is to wait for the
  // operator (refused) or fail with what it wrote rolled back, not to finish by restarting.
  bool needs_operator() const {
    return kind == Kind::kFault &&
           (point == FaultPoint::kCardPinBlocked || point == FaultPoint::kCardFull);
  }

  std::string text() const {
    switch (kind) {
      case Kind::kBaseline:
        return "baseline";
      case Kind::kFault:
        return std::to_string(fault_number(point)) + ":" + std::to_string(nth);
      case Kind::kKill:
        return "kill:" + crash_point + ":" + std::to_string(nth);
    }
    return "";
  }
  // The matrix rows' order: baseline, the points by number, the SIGKILL points by name.
  std::pair<int, std::string> row_order() const {
    if (kind == Kind::kBaseline) return {0, ""};
    if (kind == Kind::kKill) return {fault_number(FaultPoint::kProcessKilled), crash_point};
    return {fault_number(point), ""};
  }
  // The matrix row.
  std::string row() const {
    if (kind == Kind::kBaseline) return "-  baseline (no fault)";
    if (kind == Kind::kKill && timed()) return "13 SIGKILL at a random moment";
    if (kind == Kind::kKill) return "13 SIGKILL at " + crash_point;
    std::ostringstream s;
    s << std::left << std::setw(3) << fault_number(point) << fault_point_info(point).name;
    return s.str();
  }
};

std::optional<TrialSpec> parse_trial_spec(const std::string& text) {
  TrialSpec t;
  if (text.rfind("kill:", 0) == 0) {
    const auto colon = text.rfind(':');
    if (colon <= 5) return std::nullopt;
    t.kind = TrialSpec::Kind::kKill;
    t.crash_point = text.substr(5, colon - 5);
    t.nth = std::atol(text.c_str() + colon + 1);
    return t.nth > 0 ? std::optional(t) : std::nullopt;
  }
  auto spec = parse_fault_spec(text);
  if (!spec) return std::nullopt;
  t.kind = TrialSpec::Kind::kFault;
  t.point = spec->point;
  t.nth = spec->nth;
  return t;
}

bool is_cm_link(FaultPoint p) {
  const int n = fault_number(p);
  return n >= fault_number(FaultPoint::kCmRefused) && n <= fault_number(FaultPoint::kCmLateAnswer);
}

// "name count" or "number name count" lines.
std::map<std::string, long> read_counts(const fs::path& path) {
  std::map<std::string, long> out;
  std::istringstream in(read_text(path));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::vector<std::string> words;
    for (std::string w; l >> w;) words.push_back(w);
    if (words.size() >= 2) out[words[words.size() - 2]] = std::atol(words.back().c_str());
  }
  return out;
}

struct TrialResult {
  TrialSpec spec;
  std::string scenario;
  std::string id;
  bool fired = false;
  std::string first_run;  // done | interrupted | killed | hang
  int restarts = 0;
  bool recovered = false;
  int tears = 0;        // SoftHSM2 tears of any kind (counted apart)
  int torn_tokens = 0;  // of which cards gone: what fails on such a card is not persoflow's
  int last_exit = -1;  // the exit status of the last run
  std::vector<std::string> violations;
  bool violating() const { return !violations.empty() && torn_tokens == 0; }
  double seconds = 0;
};

class Harness {
 public:
  Harness(RunContext& context, sim::FaultProxy& proxy, fs::path run_dir)
      : ctx_(context), proxy_(proxy), run_dir_(std::move(run_dir)) {}

  TrialResult run_trial(Scenario& scenario, const TrialSpec& spec, int index) {
    const auto t0 = std::chrono::steady_clock::now();
    TrialResult res;
    res.spec = spec;
    res.scenario = scenario.name();
    std::ostringstream id;
    id << "t" << std::setw(4) << std::setfill('0') << index;
    res.id = id.str();
    Trial trial{res.id, run_dir_ / res.id, &ctx_};
    fs::remove_all(trial.dir);
    if (Status s = scenario.prepare(trial); !s) {
      res.violations.push_back("setup: " + s.message());
      return res;
    }
    std::vector<std::string> env = {"PERSOFLOW_FAULT_COUNT=" + (trial.dir / "faults.count").string(),
                                    "PERSOFLOW_CRASH_COUNT=" + (trial.dir / "crash.count").string()};
    if (spec.kind == TrialSpec::Kind::kFault && !is_cm_link(spec.point)) {
      env.push_back("PERSOFLOW_FAULT=" + spec.text());
    }
    if (spec.kind == TrialSpec::Kind::kKill && !spec.timed()) {
      env.push_back("PERSOFLOW_CRASH_AT=" + spec.crash_point + ":" + std::to_string(spec.nth));
    }
    proxy_.arm(spec.kind == TrialSpec::Kind::kFault && is_cm_link(spec.point)
                   ? std::optional(FaultSpec{spec.point, spec.nth})
                   : std::nullopt);
    const auto command = scenario.station_command(trial);
    const auto first_started = std::chrono::steady_clock::now();
    ProcessResult r = run_program(command, env, (trial.dir / "run1.out").string(),
                                  (trial.dir / "run1.err").string(),
                                  spec.timed() ? milliseconds(spec.nth) : kRunTimeout);
    if (spec.timed() && r.timed_out) {  // the harness's SIGKILL, not a hang
      r.timed_out = false;
      r.exit_code = 128 + SIGKILL;
    }
    const long cm_connections = proxy_.connections();
    proxy_.arm(std::nullopt);
    switch (spec.kind) {
      case TrialSpec::Kind::kBaseline:
        res.fired = true;
        baseline_cm_connections_ = cm_connections;
        baseline_run_ms_ = std::chrono::duration_cast<milliseconds>(
                               std::chrono::steady_clock::now() - first_started)
                               .count();
        break;
      case TrialSpec::Kind::kFault:
        res.fired = is_cm_link(spec.point)
                        ? cm_connections >= spec.nth
                        : read_counts(trial.dir / "faults.count")[fault_point_info(spec.point).name] >=
                              spec.nth;
        break;
      case TrialSpec::Kind::kKill:
        res.fired = r.killed_by_sigkill();
        break;
    }
    res.first_run = r.timed_out            ? "hang"
                    : r.exit_code == 0     ? "done"
                    : r.killed_by_sigkill() ? "killed"
                                           : "interrupted";
    if (r.timed_out) {
      res.violations.push_back("the station did not end within " +
                               std::to_string(kRunTimeout.count()) + " s (killed)");
    }
    if (spec.kind == TrialSpec::Kind::kBaseline) {
      std::error_code ec;  // a point never reached leaves no count file
      fs::copy_file(trial.dir / "faults.count", run_dir_ / (scenario.name() + ".faults.count"),
                    fs::copy_options::overwrite_existing, ec);
      fs::copy_file(trial.dir / "crash.count", run_dir_ / (scenario.name() + ".crash.count"),
                    fs::copy_options::overwrite_existing, ec);
    }
    // A command that says its workflow ended cancelled has ended cleanly: not run again (the
    // checks hold it to what the journal says).
    const auto ended = [&](const ProcessResult& p) {
      return p.exit_code == 0 || (!p.timed_out && scenario.cancelled_exit_code() &&
                                  p.exit_code == *scenario.cancelled_exit_code());
    };
    while (!ended(r) && res.restarts < kMaxRestarts) {
      ++res.restarts;
      r = run_program(scenario.restart_command(trial), {},
                      (trial.dir / ("run" + std::to_string(1 + res.restarts) + ".out")).string(),
                      (trial.dir / ("run" + std::to_string(1 + res.restarts) + ".err")).string(),
                      kRunTimeout);
      if (r.timed_out) {
        res.violations.push_back("restart " + std::to_string(res.restarts) +
                                 " did not end within " + std::to_string(kRunTimeout.count()) +
                                 " s (killed)");
      }
    }
    res.last_exit = r.exit_code;
    if (!ended(r) && !spec.needs_operator()) {
      res.violations.push_back("the station still fails after " + std::to_string(kMaxRestarts) +
                               " restarts (exit " + std::to_string(r.exit_code) + "; see " +
                               (trial.dir / ("run" + std::to_string(1 + res.restarts) + ".err"))
                                   .string() +
                               ")");
    }
    res.torn_tokens = scenario.torn_cards(trial);
    res.tears = check(scenario, trial, spec, res) + res.torn_tokens;
    res.recovered = res.violations.empty();
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return res;
  }

  long baseline_cm_connections() const { return baseline_cm_connections_; }
  long baseline_run_ms() const { return baseline_run_ms_; }

 private:
  // The generic invariants, then the scenario's; returns the SoftHSM2 tears the scenario saw.
  int check(Scenario& scenario, const Trial& trial, const TrialSpec& spec, TrialResult& res) {
    const std::string journal = scenario.journal(trial).string();
    std::map<std::string, WorkflowEnd> ends;
    for (const auto& wf : scenario.workflow_ids(trial)) {
      std::string text;
      auto r = run_capture({ctx_.persoflow.string(), "workflows", "show", wf, "--journal", journal,
                            "--json"},
                           {}, &text);
      WorkflowEnd end;
      end.status = "missing";
      if (r.exit_code == 0) {
        try {
          const json j = json::parse(text);
          end.status = j.value("status", "");
          end.state = j.value("state", "");
          if (!j["history"].empty() && j["history"].back()["state_data"].is_object()) {
            end.data = j["history"].back()["state_data"].get<std::map<std::string, std::string>>();
          }
        } catch (const std::exception& e) {
          res.violations.push_back(wf + ": workflows show --json: " + e.what());
        }
      }
      // Waiting for the operator (suspended) or Failed with its writes rolled back: what a
      // blocked PIN or a full card is to end in. The scenario's checks are for the others.
      if (spec.needs_operator() &&
          (end.status == "suspended" || (end.status == "done" && end.state == "Failed"))) {
        continue;
      }
      if (end.status != "done" && end.status != "cancelled") {
        res.violations.push_back(wf + ": " + end.status + (end.state.empty() ? "" : " in ") +
                                 end.state + " (want done or cleanly cancelled)");
      }
      ends[wf] = end;
    }
    check_cancelled_exit(scenario, ends, res);
    std::string verify;
    if (run_capture({ctx_.persoflow.string(), "journal", "verify", "--journal", journal}, {},
                    &verify)
            .exit_code != 0) {
      res.violations.push_back("persoflow journal verify fails: " + verify.substr(0, 200));
    }
    auto pins = shown_pins(trial);
    check_no_pin_in_clear(trial, pins, res, /*display_allowed=*/true);
    const auto given = scenario.given_pins(trial);
    check_no_pin_in_clear(trial, given, res, /*display_allowed=*/false);
    pins.insert(given.begin(), given.end());
    CheckResult out;
    scenario.check(trial, ends, pins, out);
    res.violations.insert(res.violations.end(), out.violations.begin(), out.violations.end());
    return out.tears;
  }

  // A command with an exit status of its own for a cancelled workflow must give it exactly when
  // the journal says cancelled.
  void check_cancelled_exit(const Scenario& scenario, const std::map<std::string, WorkflowEnd>& ends,
                            TrialResult& res) {
    const auto code = scenario.cancelled_exit_code();
    if (!code) return;
    for (const auto& [wf, end] : ends) {
      if (res.last_exit == *code && end.status != "cancelled") {
        res.violations.push_back(wf + ": the last run exited " + std::to_string(*code) +
                                 " (cancelled), yet the journal says " + end.status);
      }
      if (end.status == "cancelled" && res.last_exit != *code) {
        res.violations.push_back(wf + ": cancelled, yet the last run exited " +
                                 std::to_string(res.last_exit) + " (want " +
                                 std::to_string(*code) + ")");
      }
    }
  }

  // The PIN display lines of every run: "PIN for card S (WF, shown once): PIN" and "PIN of the
  // soft token WF (shown once): PIN".
  static std::map<std::string, std::string> shown_pins(const Trial& trial) {
    std::map<std::string, std::string> pins;
    for (int n = 1; n <= 1 + kMaxRestarts; ++n) {
      std::istringstream in(read_text(trial.dir / ("run" + std::to_string(n) + ".out")));
      std::string line;
      constexpr std::string_view kSoftToken = "PIN of the soft token ";
      constexpr std::string_view kSoftTokenEnd = " (shown once): ";
      while (std::getline(in, line)) {
        if (line.rfind(kSoftToken, 0) == 0) {
          const auto close = line.find(kSoftTokenEnd);
          if (close == std::string::npos) continue;
          pins[line.substr(kSoftToken.size(), close - kSoftToken.size())] =
              line.substr(close + kSoftTokenEnd.size());
          continue;
        }
        const auto open = line.find(" (");
        const auto close = line.find(", shown once): ");
        if (line.rfind("PIN for card ", 0) != 0 || open == std::string::npos ||
            close == std::string::npos) {
          continue;
        }
        pins[line.substr(open + 2, close - open - 2)] = line.substr(close + 15);
      }
    }
    return pins;
  }

  // A shown PIN may appear on the display (run*.out) only: not in the journal, the station's
  // files and logs, the CM host's database or log. A PIN the trial gave the station may appear
  // nowhere (display_allowed false).
  void check_no_pin_in_clear(const Trial& trial, const std::map<std::string, std::string>& pins,
                             TrialResult& res, bool display_allowed) {
    if (pins.empty()) return;
    std::vector<fs::path> files;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(trial.dir, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
      const fs::path& p = it->path();
      if (p.filename() == "tokens") {  // SoftHSM2's own store
        it.disable_recursion_pending();
        continue;
      }
      const std::string name = p.filename().string();
      const bool display = name.rfind("run", 0) == 0 && p.extension() == ".out";
      if (it->is_regular_file(ec) && !(display && display_allowed)) {
        files.push_back(p);
      }
    }
    for (const auto& p : fs::directory_iterator(ctx_.cm_dir, ec)) {
      if (p.is_regular_file(ec)) files.push_back(p.path());
    }
    files.push_back(run_dir_ / "cm-serve.log");
    for (const auto& f : files) {
      const std::string text = read_text(f);
      for (const auto& [wf, pin] : pins) {
        if (pin.size() >= 6 && text.find(pin) != std::string::npos) {
          res.violations.push_back(wf + ": its PIN is in clear in " + f.string());
        }
      }
    }
  }

  RunContext& ctx_;
  sim::FaultProxy& proxy_;
  fs::path run_dir_;
  long baseline_cm_connections_ = 0;
  long baseline_run_ms_ = 0;
};

// ----- The CM host -----

class CmHost {
 public:
  ~CmHost() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Result<std::uint16_t> start(const fs::path& persoflow, const fs::path& dir,
                              const fs::path& password) {
    std::ofstream(password) << "crashtest-officer-password\n";
    fs::permissions(password, fs::perms::owner_read | fs::perms::owner_write);
    auto r = run_program({persoflow.string(), "cm", "init", "--dir", (dir / "cm").string(),
                          "--officer", "officer", "--password-file", password.string(),
                          "--archive-key-alg", "EC:secp256r1"},
                         {}, (dir / "cm-init.log").string(), (dir / "cm-init.log").string(),
                         seconds(120));
    if (r.exit_code != 0) {
      return make_status(Errc::kUnavailable,
                         "persoflow cm init failed; see " + (dir / "cm-init.log").string());
    }
    const fs::path log = dir / "cm-serve.log";
    pid_ = spawn_background({persoflow.string(), "cm", "serve", "--dir", (dir / "cm").string(),
                             "--listen", "127.0.0.1:0"},
                            log.string());
    for (int i = 0; i < 600; ++i) {
      const std::string text = read_text(log);
      const auto at = text.find("listening on ");
      if (at != std::string::npos && text.find('\n', at) != std::string::npos) {
        const std::string address = text.substr(at + 13, text.find('\n', at) - at - 13);
        return static_cast<std::uint16_t>(std::atoi(address.substr(address.rfind(':') + 1).c_str()));
      }
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(milliseconds(50));
    }
    return make_status(Errc::kUnavailable, "the CM host did not start; see " + log.string());
  }

 private:
  pid_t pid_ = -1;
};

// ----- The matrix -----

struct Row {
  long trials = 0, fired = 0, done = 0, interrupted = 0, killed = 0, hang = 0, recovered = 0,
       tears = 0, violations = 0;
};

void print_matrix(const std::vector<TrialResult>& results, std::ostream& out) {
  // scenario -> (order, row name) -> counts
  std::map<std::string, std::map<std::pair<std::pair<int, std::string>, std::string>, Row>> rows;
  for (const auto& r : results) {
    Row& row = rows[r.scenario][{r.spec.row_order(), r.spec.row()}];
    ++row.trials;
    row.fired += r.fired;
    row.done += r.first_run == "done";
    row.interrupted += r.first_run == "interrupted";
    row.killed += r.first_run == "killed";
    row.hang += r.first_run == "hang";
    row.recovered += r.recovered;
    row.tears += r.tears > 0;
    row.violations += r.violating();
  }
  for (const auto& [scenario, table] : rows) {
    out << "\nscenario " << scenario << "\n"
        << std::left << std::setw(44) << "fault point" << std::right << std::setw(7) << "trials"
        << std::setw(7) << "fired" << std::setw(7) << "done" << std::setw(7) << "intr"
        << std::setw(8) << "killed" << std::setw(6) << "hang" << std::setw(7) << "recov"
        << std::setw(7) << "tears" << std::setw(7) << "VIOL" << "\n";
    for (const auto& [key, row] : table) {
      out << std::left << std::setw(44) << key.second << std::right << std::setw(7) << row.trials
          << std::setw(7) << row.fired << std::setw(7) << row.done << std::setw(7)
          << row.interrupted << std::setw(8) << row.killed << std::setw(6) << row.hang
          << std::setw(7) << row.recovered << std::setw(7) << row.tears << std::setw(7)
          << row.violations << "\n";
    }
  }
  out << "(first run: done = finished despite the fault, intr = ended with workflows suspended or "
         "failed, killed = SIGKILL; recov = every invariant held after the restarts; tears = a "
         "SoftHSM2 card destroyed by its own in-place rewrite, counted apart)\n";
}

constexpr const char* kUsage =
    "Usage: persoflow-crashtest [options]\n\n"
    "Runs each scenario once to count its operations, then injects every numbered fault point at\n"
    "its N-th operation (N = 1, 2, ...) and kills the station with SIGKILL at each crash point,\n"
    "restarts it until it finishes, and checks: every workflow done or cleanly cancelled, one\n"
    "certificate per intended issuance in the CM database, the cards' contents equal to their\n"
    "workflows' final state, no PIN in clear anywhere, `persoflow journal verify`. Prints a matrix\n"
    "of fault point x outcome and a verdict; exit 1 on any violation. See docs/faults.md.\n\n";

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; std::getline(in, w, ',');) {
    if (!w.empty()) out.push_back(w);
  }
  return out;
}

int usage_error(const std::string& message) {
  std::cerr << "persoflow-crashtest: " << message << " (see --help)\n";
  return 2;
}

fs::path self_dir() {
  std::error_code ec;
  return fs::read_symlink("/proc/self/exe", ec).parent_path();
}

int run(int argc, char** argv) {
  po::options_description opts("Options");
  opts.add_options()("help,h", "show this help")(
      "list", "list the scenarios and the numbered fault points, and exit")(
      "quick", "a short run: 1 card, N = 1 and the last operation per fault point, 8 SIGKILLs")(
      "scenario", po::value<std::string>(), "scenarios to run, comma-separated: issue-card, update-tc, softtoken, reissue (= "
      "reissue-csr,reissue-card), interleaved (issue-card and update-tc at once) or all (the "
      "default)")(
      "faults", po::value<std::string>(),
      "fault points to inject, numbers or names, comma-separated (default: all; 13 = SIGKILL)")(
      "kills", po::value<long>(), "SIGKILL trials per scenario, sampled by --seed (default: all)")(
      "seed", po::value<unsigned>()->default_value(1), "seed of the SIGKILL sampling")(
      "timed-kills", po::value<long>(),
      "SIGKILLs from outside at seeded random moments of the first run, per scenario "
      "(default 0; --quick 1)")(
      "cards", po::value<int>(),
      "cards per trial (default 2; --quick 1); the interleaved scenario uses twice as many")(
      "max-per-point", po::value<long>(),
      "at most this many N per fault point, spread over its operations (default: all)")(
      "only", po::value<std::string>(),
      "run one trial: NUMBER:N or kill:CRASHPOINT:K (as printed for a failure)")(
      "dir", po::value<std::string>(), "where trials go (default: a new folder in /tmp)")(
      "keep", "keep the folder even when the run passes");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    return usage_error(e.what());
  }
  if (vm.count("help")) {
    std::cout << kUsage << opts;
    return 0;
  }
  auto scenarios = make_scenarios();
  if (vm.count("list")) {
    std::cout << "scenarios:\n";
    for (const auto& s : scenarios) std::cout << "  " << s->name() << "  " << s->summary() << "\n";
    std::cout << "fault points (never renumbered):\n";
    for (const auto& p : fault_points()) {
      std::cout << "  " << std::left << std::setw(3) << fault_number(p.point) << std::setw(27)
                << p.name << std::setw(9) << p.layer << p.effect << "\n";
    }
    return 0;
  }
  const bool quick = vm.count("quick") > 0;
  RunContext ctx;
  ctx.cards = vm.count("cards") ? vm["cards"].as<int>() : (quick ? 1 : 2);
  if (ctx.cards < 1 || ctx.cards > 32) return usage_error("--cards must be 1..32");
  const long all_kills = vm.count("kills") ? vm["kills"].as<long>() : (quick ? 8 : -1);
  if (vm.count("kills") && all_kills < 0) return usage_error("--kills must be >= 0");
  const long timed_kills = vm.count("timed-kills") ? vm["timed-kills"].as<long>() : (quick ? 1 : 0);
  if (timed_kills < 0) return usage_error("--timed-kills must be >= 0");
  const long all_max_per_point =
      vm.count("max-per-point") ? vm["max-per-point"].as<long>() : (quick ? 2 : 0);
  if (vm.count("max-per-point") && all_max_per_point < 1) {
    return usage_error("--max-per-point must be >= 1");
  }
  std::set<int> faults;
  if (vm.count("faults")) {
    for (const auto& f : split(vm["faults"].as<std::string>())) {
      auto p = find_fault_point(f);
      if (!p) return usage_error("no fault point '" + f + "' (see --list)");
      faults.insert(fault_number(*p));
    }
  } else {
    for (const auto& p : fault_points()) faults.insert(fault_number(p.point));
  }
  if (vm.count("scenario")) {
    std::vector<std::unique_ptr<Scenario>> chosen;
    for (const auto& name : split(vm["scenario"].as<std::string>())) {
      // "all", a scenario's name, or a family: "reissue" is reissue-csr and reissue-card.
      bool any = false;
      for (auto& s : scenarios) {
        if (name == "all" || (s && (s->name() == name || s->name().rfind(name + "-", 0) == 0))) {
          any = any || s != nullptr || name == "all";
          if (s) chosen.push_back(std::move(s));
        }
      }
      if (!any) return usage_error("no scenario '" + name + "' (see --list)");
    }
    scenarios = std::move(chosen);
  }
  std::optional<TrialSpec> only;
  if (vm.count("only")) {
    only = parse_trial_spec(vm["only"].as<std::string>());
    if (!only) return usage_error("--only wants NUMBER:N or kill:CRASHPOINT:K");
  }
  ctx.persoflow = self_dir() / "persoflow";
  if (::access(ctx.persoflow.c_str(), X_OK) != 0) {
    std::cerr << "persoflow-crashtest: " << ctx.persoflow.string() << " is missing (build it)\n";
    return 1;
  }
  fs::path dir;
  if (vm.count("dir")) {
    dir = fs::absolute(vm["dir"].as<std::string>());
    std::error_code ec;
    if (fs::exists(dir) && !fs::is_empty(dir, ec)) {
      return usage_error(dir.string() + " is not empty; choose another --dir");
    }
    fs::create_directories(dir, ec);
    if (ec) return usage_error("cannot create " + dir.string() + ": " + ec.message());
  } else {
    char tmpl[] = "/tmp/persoflow-crashtest-XXXXXX";
    if (!::mkdtemp(tmpl)) return usage_error("cannot create a folder in /tmp");
    dir = tmpl;
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::cout << "persoflow-crashtest: " << ctx.cards << " card(s) per trial, seed "
            << vm["seed"].as<unsigned>() << ", in " << dir.string() << std::endl;

  ctx.recovery_cert = dir / "recovery.pem";
  ctx.recovery_key = dir / "recovery.key";
  if (run_program({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                   "/CN=persoflow crashtest key recovery", "-days", "2", "-keyout",
                   ctx.recovery_key.string(), "-out", ctx.recovery_cert.string()},
                  {}, "", (dir / "recovery.err").string(), seconds(60))
          .exit_code != 0) {
    std::cerr << "persoflow-crashtest: openssl req failed; see " << (dir / "recovery.err").string()
              << "\n";
    return 1;
  }
  CmHost cm;
  ctx.cm_dir = dir / "cm";
  ctx.officer_password = dir / "officer.password";
  auto cm_port = cm.start(ctx.persoflow, dir, ctx.officer_password);
  if (!cm_port) {
    std::cerr << "persoflow-crashtest: " << cm_port.status().message() << "\n";
    return 1;
  }
  sim::FaultProxyOptions proxy_options;
  proxy_options.upstream_port = *cm_port;
  auto proxy = sim::FaultProxy::start(proxy_options);
  if (!proxy) {
    std::cerr << "persoflow-crashtest: " << proxy.status().message() << "\n";
    return 1;
  }
  ctx.cm_url = "https://127.0.0.1:" + std::to_string((*proxy)->port());
  Harness harness(ctx, **proxy, dir);

  std::vector<TrialResult> results;
  int index = 0;
  auto report = [&](const TrialResult& r) {
    const bool tear = r.torn_tokens > 0;
    std::cout << "  " << r.id << " " << std::left << std::setw(44) << r.spec.text() << " "
              << std::setw(11) << r.first_run << " restarts " << r.restarts << "  "
              << (r.violations.empty() ? (r.tears > 0 ? "ok, SoftHSM2 tear" : "ok")
                  : tear                 ? "TEAR (SoftHSM2)"
                                         : "VIOLATION")
              << " "
              << std::fixed << std::setprecision(1) << r.seconds << "s" << std::endl;
    for (const auto& v : r.violations) std::cout << "      " << v << "\n";
    results.push_back(r);
  };
  const std::set<int> all_faults = faults;
  for (auto& scenario : scenarios) {
    std::cout << "\nscenario " << scenario->name() << ": " << scenario->summary() << std::endl;
    // --quick: the first scenario as above; each other one a few trials (a card pulled, an
    // unknown commit outcome, a lost CM answer, 3 SIGKILLs), so the short run stays short.
    const bool light = quick && scenario != scenarios.front();
    const std::set<int> faults =
        light ? std::set<int>{1, 7, 11, fault_number(FaultPoint::kProcessKilled)} : all_faults;
    const long max_per_point = light ? 1 : all_max_per_point;
    const long kills = light ? 3 : all_kills;
    if (only) {
      report(harness.run_trial(*scenario, *only, ++index));
      continue;
    }
    // 1. Count the operations of every point in an uninterrupted run (also checked).
    TrialResult base = harness.run_trial(*scenario, TrialSpec{}, index++);
    report(base);
    if (!base.violations.empty()) {
      std::cout << "  the uninterrupted run fails its checks: no fault trials for this scenario\n";
      continue;
    }
    auto fault_counts = read_counts(dir / (scenario->name() + ".faults.count"));
    auto crash_counts = read_counts(dir / (scenario->name() + ".crash.count"));
    std::cout << "  operations counted:";
    for (const auto& p : fault_points()) {
      if (p.point == FaultPoint::kProcessKilled) continue;
      const long ops = is_cm_link(p.point) ? harness.baseline_cm_connections()
                                           : fault_counts[p.name];
      std::cout << " " << fault_number(p.point) << "=" << ops;
    }
    std::cout << std::endl;
    // 2. Every fault point at N = 1, 2, ... (spread when capped).
    for (const auto& p : fault_points()) {
      const int number = fault_number(p.point);
      if (p.point == FaultPoint::kProcessKilled || !faults.count(number)) continue;
      const long ops =
          is_cm_link(p.point) ? harness.baseline_cm_connections() : fault_counts[p.name];
      std::set<long> ns;
      if (max_per_point <= 0 || ops <= max_per_point) {
        for (long n = 1; n <= ops; ++n) ns.insert(n);
      } else if (max_per_point == 1) {
        ns.insert(1);
      } else {
        for (long i = 0; i < max_per_point; ++i) ns.insert(1 + i * (ops - 1) / (max_per_point - 1));
      }
      for (long n : ns) {
        TrialSpec spec;
        spec.kind = TrialSpec::Kind::kFault;
        spec.point = p.point;
        spec.nth = n;
        report(harness.run_trial(*scenario, spec, index++));
      }
    }
    // 3. SIGKILL at every crash point (each journal commit boundary, before and after each
    //    command), or a seeded sample of them.
    if (faults.count(fault_number(FaultPoint::kProcessKilled))) {
      std::vector<TrialSpec> points;
      for (const auto& [name, count] : crash_counts) {
        for (long k = 1; k <= count; ++k) {
          TrialSpec spec;
          spec.kind = TrialSpec::Kind::kKill;
          spec.crash_point = name;
          spec.nth = k;
          points.push_back(spec);
        }
      }
      if (kills >= 0 && static_cast<long>(points.size()) > kills) {
        std::mt19937 rng(vm["seed"].as<unsigned>());
        std::shuffle(points.begin(), points.end(), rng);
        points.resize(static_cast<std::size_t>(kills));
        std::sort(points.begin(), points.end(), [](const TrialSpec& a, const TrialSpec& b) {
          return std::tie(a.crash_point, a.nth) < std::tie(b.crash_point, b.nth);
        });
      }
      for (const auto& spec : points) report(harness.run_trial(*scenario, spec, index++));
    }
    // 4. SIGKILL from outside at seeded random moments of the first run (between the commit
    //    boundaries too: inside a card write, a CMP exchange, a PKCS#12 write).
    if (timed_kills > 0 && faults.count(fault_number(FaultPoint::kProcessKilled))) {
      std::mt19937 rng(vm["seed"].as<unsigned>() * 7919u + static_cast<unsigned>(index));
      const long span = std::max<long>(harness.baseline_run_ms(), 200);
      std::uniform_int_distribution<long> moment(20, span);
      std::set<long> moments;
      while (static_cast<long>(moments.size()) < std::min(timed_kills, span - 19)) {
        moments.insert(moment(rng));
      }
      for (long ms : moments) {
        TrialSpec spec;
        spec.kind = TrialSpec::Kind::kKill;
        spec.crash_point = TrialSpec::kTimed;
        spec.nth = ms;
        report(harness.run_trial(*scenario, spec, index++));
      }
    }
  }

  print_matrix(results, std::cout);
  long fault_trials = 0, kill_trials = 0, violations = 0, tears = 0;
  // A SIGKILL trial whose station had already finished (a crash point not reached, a timed
  // moment after the end) proves nothing: only the kills that hit a running station count.
  long real_kills = 0;
  std::map<std::string, std::pair<long, long>> real_kills_by_scenario;  // -> (crash point, timed)
  for (const auto& r : results) {
    fault_trials += r.spec.kind == TrialSpec::Kind::kFault;
    kill_trials += r.spec.kind == TrialSpec::Kind::kKill;
    tears += r.tears > 0;
    violations += r.violating();
    if (r.spec.kind == TrialSpec::Kind::kKill && r.fired) {
      ++real_kills;
      auto& [at_points, timed] = real_kills_by_scenario[r.scenario];
      ++(r.spec.timed() ? timed : at_points);
    }
  }
  std::cout << "\nreal kills (SIGKILL while the station ran):";
  for (const auto& [scenario, kills] : real_kills_by_scenario) {
    std::cout << " " << scenario << " " << kills.first + kills.second << " (" << kills.first
              << " at crash points, " << kills.second << " timed);";
  }
  std::cout << " total " << real_kills << std::endl;
  bool failed = violations > 0;
  if (failed) {
    std::cout << "\nfailures (reproduce with persoflow-crashtest --scenario S --only SPEC --cards "
              << ctx.cards << " --keep):\n";
    for (const auto& r : results) {
      if (!r.violating()) continue;
      std::cout << "  " << r.scenario << " " << r.spec.text() << "  (" << (dir / r.id).string()
                << ")\n";
    }
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "\ncrashtest: " << (failed ? "FAIL" : "PASS") << " - " << scenarios.size()
            << " scenario(s), " << fault_trials << " fault trials, " << kill_trials
            << " SIGKILL trials (" << real_kills << " real kills), " << violations
            << " violating trials, " << tears
            << " SoftHSM2 tears, " << std::fixed << std::setprecision(1) << total << " s"
            << std::endl;
  proxy->reset();
  if (!failed && !vm.count("keep")) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  } else {
    std::cout << "trials kept in " << dir.string() << "\n";
  }
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace persoflow::crashtest

int main(int argc, char** argv) { return persoflow::crashtest::run(argc, argv); }
