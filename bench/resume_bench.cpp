// persoflow-bench resume: the simulated station (sim/station.hpp) at scale, and
// recovery after a SIGKILL.
//
//   sim1000     N simulated readers (default 1,000) issue K cards (default 2 N)
//   at the latencies
//               of sim/latency.hpp, with the real runtime and journal; the real
//               time the engine spends is charged to the virtual clock.
//               Figures: the throughput as a fraction of the device-bound limit
//               (sum of device time / sum of reader cycle time), CPU per card,
//               and the headroom (cards per CPU-second / the limit's cards per
//               second). Then the same run with the CM link faulted: a share
//               (--cm-fault-share, default 0.05) of the CM submissions refused,
//               timed out, dropped after the request or answered late
//               (SimStationOptions::cm_fault_share): the same figure as
//               station.sim1000.cm_faults.fraction_of_limit, the limit still
//               the devices' (a CM fault costs cycle time, no device time).
//   inflight64  a child process runs 64 workflows until all 64 are inside their
//   on-card RSA key
//               generation, and is killed with SIGKILL; then the journal is
//               reopened and the time until all 64 are back at their last
//               durable step (replayed, outstanding commands running again) is
//               measured; the run then finishes every card.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <type_traits>

#include "bench_registry.hpp"
#include "persoflow/sim/station.hpp"

namespace {

namespace fs = std::filesystem;
using persoflow::bench::report;
using persoflow::sim::SimReport;
using persoflow::sim::SimStationOptions;

struct Args {
  std::size_t readers = 1000;
  std::size_t cards = 0;  // 0: 2 * readers
  std::size_t inflight = 64;
  std::uint64_t seed = 1;
  double cm_fault_share = 0.05;  // of the faulted sim run; 0: no faulted run
  std::string only;
  std::string dir;
  std::string child_journal;  // internal: run as the in-flight child
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "Usage: persoflow-bench resume [--readers N] [--cards K] "
               "[--seed S] [--inflight M]\n"
               "                              [--only sim1000|inflight64] "
               "[--cm-fault-share F] [--dir DIR]\n\n"
               "sim1000: N simulated readers (default 1000) issue K cards "
               "(default 2N);\n"
               "then again with a share F (default 0.05, 0: not run) of the CM "
               "requests refused,\n"
               "timing out, dropped after the request or answered late "
               "(...cm_faults.* lines);\n"
               "inflight64: M workflows (default 64) killed in flight "
               "with SIGKILL, then resumed.\n"
               "DIR holds the journals (default: a new folder under "
               "/var/tmp, removed after).\n");
}

bool parse_number(const char* text, std::uint64_t& out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-') return false;
  out = v;
  return true;
}

// 0 = parsed, 1 = --help shown, 2 = bad input (message printed).
int parse(int argc, char** argv, Args& args) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 1;
    }
    auto value = [&](const char* what) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "persoflow-bench resume: %s needs a value\n", what);
        return nullptr;
      }
      return argv[++i];
    };
    auto number = [&](const char* what, auto& out, std::uint64_t min) -> bool {
      const char* v = value(what);
      std::uint64_t n = 0;
      if (v == nullptr) return false;
      if (!parse_number(v, n) || n < min) {
        std::fprintf(stderr,
                     "persoflow-bench resume: %s must be a whole number >= "
                     "%llu, not '%s'\n",
                     what, static_cast<unsigned long long>(min), v);
        return false;
      }
      out = static_cast<std::remove_reference_t<decltype(out)>>(n);
      return true;
    };
    if (a == "--readers") {
      if (!number("--readers", args.readers, 1)) return 2;
    } else if (a == "--cards") {
      if (!number("--cards", args.cards, 1)) return 2;
    } else if (a == "--inflight") {
      if (!number("--inflight", args.inflight, 1)) return 2;
    } else if (a == "--seed") {
      if (!number("--seed", args.seed, 0)) return 2;
    } else if (a == "--cm-fault-share") {
      const char* v = value("--cm-fault-share");
      if (v == nullptr) return 2;
      char* end = nullptr;
      errno = 0;
      const double share = std::strtod(v, &end);
      if (errno != 0 || end == v || *end != '\0' || !(share >= 0 && share <= 1)) {
        std::fprintf(stderr,
                     "persoflow-bench resume: --cm-fault-share must be a number from 0 to 1, "
                     "not '%s'\n",
                     v);
        return 2;
      }
      args.cm_fault_share = share;
    } else if (a == "--only") {
      const char* v = value("--only");
      if (v == nullptr) return 2;
      args.only = v;
      if (args.only != "sim1000" && args.only != "inflight64") {
        std::fprintf(stderr,
                     "persoflow-bench resume: --only takes sim1000 or "
                     "inflight64, not '%s'\n",
                     v);
        return 2;
      }
    } else if (a == "--dir") {
      const char* v = value("--dir");
      if (v == nullptr) return 2;
      args.dir = v;
    } else if (a == "--inflight-child") {
      const char* v = value("--inflight-child");
      if (v == nullptr) return 2;
      args.child_journal = v;
    } else {
      std::fprintf(stderr, "persoflow-bench resume: unknown option '%s'\n", a.c_str());
      return 2;
    }
  }
  if (args.cards == 0) args.cards = 2 * args.readers;
  return 0;
}

bool print_problems(const char* what, const SimReport& r) {
  for (const auto& p : r.problems) std::fprintf(stderr, "%s: %s\n", what, p.c_str());
  return r.problems.empty();
}

// Every in-flight workflow generates an RSA key long enough (20 s and more,
// virtual) that all of them are inside it at once when the child is killed.
SimStationOptions inflight_options(const Args& args, const std::string& journal) {
  SimStationOptions o;
  o.readers = args.inflight;
  o.cards = args.inflight;
  o.seed = args.seed;
  o.journal = journal;
  o.rsa_share = 1.0;
  o.latency.rsa2048_keygen = {std::chrono::seconds(20), std::chrono::seconds(4),
                              std::chrono::seconds(40)};
  return o;
}

int run_inflight_child(const Args& args) {
  SimStationOptions o = inflight_options(args, args.child_journal);
  o.on_every_reader_in_keygen = [] {
    std::printf("READY\n");
    std::fflush(stdout);
    for (;;) pause();  // killed here, with every workflow in flight
  };
  auto r = persoflow::sim::run_simulated_station(o);
  std::fprintf(stderr, "in-flight child: the run ended before every workflow was in flight%s\n",
               r ? "" : (": " + r.status().message()).c_str());
  return 1;
}

int bench_inflight(const Args& args, const std::string& dir) {
  const std::string journal = dir + "/inflight-seed" + std::to_string(args.seed) + ".db";
  int out[2];
  if (pipe(out) != 0) return std::perror("pipe"), 1;
  const pid_t child = fork();
  if (child < 0) return std::perror("fork"), 1;
  if (child == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    const std::string inflight = std::to_string(args.inflight);
    const std::string seed = std::to_string(args.seed);
    execl("/proc/self/exe", "persoflow-bench", "resume", "--inflight-child", journal.c_str(),
          "--inflight", inflight.c_str(), "--seed", seed.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  std::string got;
  char buf[64];
  ssize_t n;
  while (got.find("READY\n") == std::string::npos && (n = read(out[0], buf, sizeof buf)) > 0) {
    got.append(buf, static_cast<std::size_t>(n));
  }
  close(out[0]);
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  if (got.find("READY\n") == std::string::npos) {
    std::fprintf(stderr, "resume inflight: the child never had every workflow in flight\n");
    return 1;
  }
  SimStationOptions o = inflight_options(args, journal);
  o.resume = true;
  auto r = persoflow::sim::run_simulated_station(o);
  if (!r) {
    std::fprintf(stderr, "resume inflight: %s\n", r.status().message().c_str());
    return 1;
  }
  const std::string name = "resume.inflight" + std::to_string(args.inflight);
  report(name + ".seconds", r->resume_seconds, "s");
  report(name + ".resumed", static_cast<double>(r->resumed), "workflows");
  report(name + ".finished", static_cast<double>(r->cards_done), "workflows");
  const bool ok = print_problems("resume inflight", *r) && r->resumed == args.inflight &&
                  r->cards_done == args.inflight;
  return ok ? 0 : 1;
}

// One sim run; its figures are reported under `name` (station.sim1000, or with .cm_faults).
int bench_sim_run(const Args& args, const std::string& dir, double cm_fault_share,
                  const std::string& name) {
  SimStationOptions o;
  o.readers = args.readers;
  o.cards = args.cards;
  o.seed = args.seed;
  o.journal = dir + "/" + name + "-seed" + std::to_string(args.seed) + ".db";
  o.charge_processing_time = true;
  o.cm_fault_share = cm_fault_share;
  auto r = persoflow::sim::run_simulated_station(o);
  if (!r) {
    std::fprintf(stderr, "resume sim: %s\n", r.status().message().c_str());
    return 1;
  }
  const double cards = static_cast<double>(r->cards_done);
  const double fraction = r->cycle_seconds > 0 ? r->device_seconds / r->cycle_seconds : 0;
  const double cpu_ms_per_card = cards > 0 ? 1000 * r->cpu_seconds / cards : 0;
  // The device-bound limit: every reader busy with its devices all the time.
  const double limit_per_second =
      r->device_seconds > 0 ? static_cast<double>(args.readers) * cards / r->device_seconds : 0;
  const double capacity_per_second = cpu_ms_per_card > 0 ? 1000 / cpu_ms_per_card : 0;
  report(name + ".fraction_of_limit", fraction, "ratio");
  report(name + ".limit_cards_per_second", limit_per_second, "cards/s");
  report(name + ".cpu_ms_per_card", cpu_ms_per_card, "ms");
  report(name + ".headroom", limit_per_second > 0 ? capacity_per_second / limit_per_second : 0,
         "x");
  report(name + ".wall_seconds", r->wall_seconds, "s");
  if (cm_fault_share > 0) {
    report(name + ".share", cm_fault_share, "ratio");
    report(name + ".refused", static_cast<double>(r->cm_refused), "requests");
    report(name + ".timeouts", static_cast<double>(r->cm_timeouts), "requests");
    report(name + ".dropped", static_cast<double>(r->cm_dropped), "requests");
    report(name + ".late", static_cast<double>(r->cm_late), "requests");
    // Every card still issued once: the retries of dropped requests were answered from the
    // CM's store.
    report(name + ".certificates_issued", static_cast<double>(r->certificates_issued), "certs");
  }
  return print_problems("resume sim", *r) && r->cards_done == args.cards &&
                 r->certificates_issued == args.cards
             ? 0
             : 1;
}

int bench_sim(const Args& args, const std::string& dir) {
  const std::string name =
      args.readers == 1000 ? "station.sim1000" : "station.sim" + std::to_string(args.readers);
  int rc = bench_sim_run(args, dir, 0, name);
  if (args.cm_fault_share > 0) rc |= bench_sim_run(args, dir, args.cm_fault_share, name + ".cm_faults");
  return rc;
}

int run_resume(int argc, char** argv) {
  Args args;
  if (int rc = parse(argc, argv, args); rc != 0) return rc == 1 ? 0 : 2;
  if (!args.child_journal.empty()) return run_inflight_child(args);
  std::string dir = args.dir;
  bool remove_dir = false;
  if (dir.empty()) {
    char tmpl[] = "/var/tmp/persoflow-bench-resume-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return std::perror("mkdtemp"), 1;
    dir = tmpl;
    remove_dir = true;
  } else {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) {
      std::fprintf(stderr, "persoflow-bench resume: cannot create %s: %s\n", dir.c_str(),
                   ec.message().c_str());
      return 2;
    }
  }
  int rc = 0;
  if (args.only.empty() || args.only == "inflight64") rc |= bench_inflight(args, dir);
  if (args.only.empty() || args.only == "sim1000") rc |= bench_sim(args, dir);
  if (remove_dir) fs::remove_all(dir);
  return rc;
}

}  // namespace

PF_REGISTER_BENCH_SUITE(resume, "resume",
                        "simulated station at scale (1,000 readers) and resume after SIGKILL",
                        run_resume);
