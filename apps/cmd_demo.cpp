// `persoflow demo [--dir DIR] [--cards N] [--force]`: the first end-to-end path in one command.
//
// It makes N SoftHSM2 tokens as pre-personalised cards (one SoftHSM2 store, DIR/tokens), a CM
// host (`persoflow cm init` + `persoflow cm serve --listen 127.0.0.1:0` as child processes, so
// the CM host is the real server on loopback), a station configuration, gives cards 2, 5, 8, ...
// a transport certificate (`persoflow prepersonalise card`), and personalises every card at
// once through the workflow runtime (journal DIR/station/journal.db): issue-card on the blank
// cards, update-card with redo on the TC cards. Then it runs a second batch in a child `persoflow station run` that
// is killed with SIGKILL among its first commands (PERSOFLOW_CRASH_AT), restarts it, and shows
// the resumed workflows finishing; `persoflow journal verify` ends it. The CM host is stopped at
// the end whatever happened.
#include <fcntl.h>
#include <openssl/rand.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "command_registry.hpp"
#include "station_batch.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;
namespace fs = std::filesystem;
namespace ac = persoflow::actors;

constexpr const char* kSoftHsmModule = "/usr/lib/softhsm/libsofthsm2.so";
constexpr const char* kCardPin = "123456";
constexpr const char* kCardSoPin = "12345678";

std::string self_exe() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("persoflow") : p.string();
}

// Starts a program (no shell) with extra environment variables. stdout_fd >= 0: its stdout.
pid_t spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env,
            int stdout_fd = -1, int stderr_fd = -1) {
  std::cout.flush();
  pid_t pid = ::fork();
  if (pid == 0) {
    for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    if (stdout_fd >= 0) ::dup2(stdout_fd, 1);
    if (stderr_fd >= 0) ::dup2(stderr_fd, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::fprintf(stderr, "cannot run %s\n", args[0]);
    ::_exit(127);
  }
  return pid;
}

// Exit code, or 128 + signal.
int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Runs a program to its end with its output appended to `log` (a file).
int run_logged(const std::vector<std::string>& argv, const std::vector<std::string>& env,
               const std::string& log) {
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  pid_t pid = spawn(argv, env, fd, fd);
  if (fd >= 0) ::close(fd);
  return wait_for(pid);
}

std::string random_password() {
  unsigned char b[18];
  RAND_bytes(b, sizeof b);
  static const char* kAlphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  std::string out;
  for (unsigned char c : b) out += kAlphabet[c % 57];
  return out;
}

bool write_file(const std::string& path, const std::string& text, mode_t mode = 0644) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  return ::close(fd) == 0 && ok;
}

// The CM host server as a child process; its output goes to DIR/cm/serve.log.
class CmServer {
 public:
  ~CmServer() { stop(); }

  // Starts `cm serve` and waits (bounded) for its "listening on HOST:PORT" line.
  Result<std::string> start(const std::string& cm_dir) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return make_status(Errc::kInternal, "pipe failed");
    pid_ = spawn({self_exe(), "cm", "serve", "--dir", cm_dir, "--listen", "127.0.0.1:0"}, {},
                 fds[1], fds[1]);
    ::close(fds[1]);
    log_.open(cm_dir + "/serve.log", std::ios::app);
    reader_ = std::thread([this, fd = fds[0]] {
      std::string buf;
      char chunk[512];
      ssize_t n;
      while ((n = ::read(fd, chunk, sizeof chunk)) > 0) {
        std::lock_guard lock(mu_);
        log_.write(chunk, n);
        log_.flush();
        buf.append(chunk, static_cast<std::size_t>(n));
        auto at = buf.find("listening on ");
        if (!address_ && at != std::string::npos) {
          auto end = buf.find('\n', at);
          if (end != std::string::npos) {
            address_ = buf.substr(at + 13, end - at - 13);
            cv_.notify_all();
          }
        }
      }
      ::close(fd);
      std::lock_guard lock(mu_);
      ended_ = true;
      cv_.notify_all();
    });
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(30), [&] { return address_ || ended_; });
    if (!address_) {
      return make_status(Errc::kUnavailable,
                         "the CM host did not start; see " + cm_dir + "/serve.log");
    }
    return *address_;
  }

  pid_t pid() const { return pid_; }

  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      wait_for(pid_);
      pid_ = -1;
    }
    if (reader_.joinable()) reader_.join();
  }

 private:
  pid_t pid_ = -1;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<std::string> address_;
  bool ended_ = false;
  std::ofstream log_;
};

// CPU seconds (user + system) spent so far by this process, all its threads, not its children.
double own_cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return seconds(u.ru_utime) + seconds(u.ru_stime);
}

// CPU seconds (user + system) spent so far by the process `pid` (utime and stime of
// /proc/PID/stat); -1 when it cannot be read.
double process_cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');  // the command name may hold spaces
  if (paren == std::string::npos) return -1;
  std::istringstream fields(text.substr(paren + 2));
  std::string f;
  double utime = -1, stime = -1;
  for (int n = 3; fields >> f; ++n) {  // field 3 is the state; 14 utime, 15 stime
    if (n == 14) utime = std::atof(f.c_str());
    if (n == 15) stime = std::atof(f.c_str());
  }
  if (utime < 0 || stime < 0) return -1;
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// Busy and total CPU time of the whole machine so far (/proc/stat, in clock ticks).
std::pair<double, double> machine_cpu_ticks() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  in >> cpu;
  double total = 0, idle = 0, v;
  for (int n = 0; n < 10 && in >> v; ++n) {
    total += v;
    if (n == 3 || n == 4) idle += v;  // idle, iowait
  }
  return {total - idle, total};
}

std::string card_label(int i) {
  std::ostringstream s;
  s << "card-" << std::setw(2) << std::setfill('0') << i;
  return s.str();
}

// Cards 2, 5, 8, ... come from the card bureau with a transport certificate.
bool has_transport_certificate(int i) { return i % 3 == 2; }

// Issue on a blank card; update with redo (the TC replaced) on a TC card.
ac::CardRequest request_for(int i, const std::string& batch) {
  ac::CardRequest r;
  r.token_label = card_label(i);
  if (has_transport_certificate(i)) {
    r.workflow = "update";
    r.actions = {{"tc", "redo"}};
  }
  r.workflow_id = r.token_label + "-" + r.workflow + "-" + batch;
  r.subject = {{"CN", "Demo Cardholder " + std::to_string(i)}, {"O", "persoflow demo"}};
  return r;
}

int fail(const std::string& message) {
  std::cerr << "persoflow demo: " << message << "\n";
  return 1;
}

constexpr const char* kUsage =
    "Usage: persoflow demo [--dir DIR] [--cards N] [--force]\n\n"
    "Starts a CM host on 127.0.0.1, makes N SoftHSM2 cards (cards 2, 5, 8, ... with a transport\n"
    "certificate) and personalises them all at once through the station's workflows: issue on\n"
    "the blank cards, update with redo on the TC cards. Then it kills a second batch with\n"
    "SIGKILL, restarts it and shows the resumed workflows finishing. Everything stays in DIR\n"
    "(default ./persoflow-demo).\n\n";

int run(int argc, char** argv) {
  po::options_description opts("Options");
  opts.add_options()("help,h", "show this help")(
      "dir", po::value<std::string>()->default_value("persoflow-demo"), "where everything goes")(
      "cards", po::value<int>()->default_value(8), "cards in the first batch (1..64)")(
      "force", "reuse DIR even when it is not empty (its contents are removed first)")(
      "crash-at", po::value<std::string>(),
      "where the second batch's station is killed: POINT:K (default actors.before_command:M/2, "
      "M the second batch's cards)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "persoflow demo: " << e.what() << " (see --help)\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << kUsage << opts;
    return 0;
  }
  const int cards = vm["cards"].as<int>();
  if (cards < 1 || cards > 64) {
    std::cerr << "persoflow demo: --cards must be between 1 and 64\n";
    return 2;
  }
  const int second = std::max(2, cards / 2);
  const fs::path dir = fs::absolute(vm["dir"].as<std::string>()).lexically_normal();
  std::error_code ec;
  if (fs::exists(dir) && !fs::is_empty(dir, ec)) {
    if (!vm.count("force")) {
      std::cerr << "persoflow demo: " << dir.string()
                << " is not empty; choose another --dir or add --force to wipe and reuse it\n";
      return 2;
    }
    for (const auto& e : fs::directory_iterator(dir)) fs::remove_all(e.path(), ec);
  }
  if (::access(kSoftHsmModule, R_OK) != 0) {
    return fail(std::string("SoftHSM2 is not installed (") + kSoftHsmModule +
                "); run scripts/setup");
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::string cm_dir = (dir / "cm").string();
  const std::string tokens = (dir / "tokens").string();
  const std::string station_dir = (dir / "station").string();
  fs::create_directories(dir / "tokens" / "store", ec);
  fs::create_directories(dir / "station", ec);
  if (ec) return fail("cannot create " + dir.string() + ": " + ec.message());
  const std::string log = station_dir + "/demo.log";

  // 1. The cards: one SoftHSM2 store for all of them.
  const std::string softhsm_conf = tokens + "/softhsm2.conf";
  write_file(softhsm_conf, "directories.tokendir = " + tokens + "/store\n"
                           "objectstore.backend = file\nlog.level = ERROR\n");
  const std::string conf_env = "SOFTHSM2_CONF=" + softhsm_conf;
  std::cout << "Making " << cards + second << " SoftHSM2 cards in " << tokens << " ...\n";
  for (int i = 1; i <= cards + second; ++i) {
    int rc = run_logged({"/usr/bin/softhsm2-util", "--init-token", "--free", "--label",
                         card_label(i), "--pin", kCardPin, "--so-pin", kCardSoPin},
                        {conf_env}, log);
    if (rc != 0) return fail("softhsm2-util --init-token failed for " + card_label(i) + "; see " + log);
  }
  write_file(station_dir + "/card.pin", std::string(kCardPin) + "\n", 0600);
  // The cards' operator PIN (SoftHSM2's SO PIN): token procedure smartcard-tc, which the TC cards
  // are updated under, needs it and the CM database does not hold it.
  write_file(station_dir + "/operator.pin", std::string(kCardSoPin) + "\n", 0600);

  // 2. The CM host and the officer credential.
  const std::string pw_file = station_dir + "/officer.password";
  write_file(pw_file, random_password() + "\n", 0600);
  std::cout << "Initialising the CM host in " << cm_dir << " ...\n";
  if (int rc = run_logged({self_exe(), "cm", "init", "--dir", cm_dir, "--officer", "officer",
                           "--password-file", pw_file, "--archive-key-alg", "EC:secp256r1"},
                          {}, log);
      rc != 0) {
    return fail("persoflow cm init failed; see " + log);
  }
  CmServer server;
  auto address = server.start(cm_dir);
  if (!address) return fail(address.status().message());
  std::cout << "CM host listening on " << *address << "\n";

  // 3. The station configuration.
  ac::StationConfig config;
  config.cm_url = "https://" + *address;
  config.cm_ca = cm_dir + "/ca/ca.pem";
  config.pkcs11_module = kSoftHsmModule;
  config.softhsm2_conf = softhsm_conf;
  config.officer_p12 = cm_dir + "/officers/officer.p12";
  config.officer_password_file = pw_file;
  config.card_pin_file = station_dir + "/card.pin";
  config.operator_pin_file = station_dir + "/operator.pin";
  config.journal = station_dir + "/journal.db";
  config.state_dir = station_dir;
  const std::string station_conf = station_dir + "/station.conf";
  if (Status s = ac::save_station_config(config, station_conf); !s) return fail(s.message());

  // 4. The card bureau's transport certificates, from the CM host's transport procedure.
  int tc_cards = 0;
  for (int i = 1; i <= cards + second; ++i) {
    if (!has_transport_certificate(i)) continue;
    if (int rc = run_logged({self_exe(), "prepersonalise", "card", "--config", station_conf,
                             "--token", card_label(i), "--field",
                             "CN=Transport " + card_label(i), "--field", "O=persoflow demo"},
                            {}, log);
        rc != 0) {
      return fail("pre-personalising " + card_label(i) + " failed; see " + log);
    }
    ++tc_cards;
  }
  std::cout << tc_cards << " of the cards (2, 5, 8, ...) carry a transport certificate (TC) "
            << "issued under the CM host's transport procedure\n";

  // 5. The first batch, in this process: every card at once.
  std::vector<ac::CardRequest> batch1;
  for (int i = 1; i <= cards; ++i) batch1.push_back(request_for(i, "1"));
  std::cout << "\nBatch 1: " << cards << " cards at once: issue-card on the blank cards, "
            << "update-card with redo (the TC replaced) on the TC cards\n";
  // The machine's CPU time over the batch (wall time x cores) and the shares of it spent in this
  // process (engine, journal, actors, executors: no child process) and in the CM host's.
  const double own_before = own_cpu_seconds();
  const double cm_before = process_cpu_seconds(server.pid());
  const auto machine_before = machine_cpu_ticks();
  const auto wall_before = std::chrono::steady_clock::now();
  auto report = run_station_batch(station_conf, batch1, std::cout, false);
  if (!report) return fail("batch 1: " + report.status().message());
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_before).count();
  const double own_cpu = own_cpu_seconds() - own_before;
  const double cm_cpu = process_cpu_seconds(server.pid()) - cm_before;
  const auto machine_after = machine_cpu_ticks();
  const long cores = std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));
  print_batch_table(*report, std::cout, true);
  std::cout << std::fixed << std::setprecision(2) << cards << " cards in " << report->seconds
            << " s\n";
  std::cout << std::setprecision(4) << "Batch 1 CPU: persoflow " << own_cpu << " s, CM host "
            << cm_cpu << " s, over " << wall << " s on " << cores
            << " core(s): engine_cpu_share " << own_cpu / (wall * cores) << ", cm_host_cpu_share "
            << cm_cpu / (wall * cores) << ", machine_busy_share "
            << (machine_after.first - machine_before.first) /
                   std::max(1.0, machine_after.second - machine_before.second)
            << std::setprecision(2) << "\n";
  bool ok = report->all_done;

  // 6. The second batch in a child station, killed with SIGKILL early, restarted.
  const std::string queue = station_dir + "/batch2.jsonl";
  {
    std::ofstream q(queue);
    for (int i = cards + 1; i <= cards + second; ++i) {
      q << ac::card_request_to_json(request_for(i, "2")) << "\n";
    }
  }
  // Early in the batch, among the first commands (the cards being read): SoftHSM2's file store
  // rewrites token.object in place (C_SetPIN), so a SIGKILL during a PIN change can leave an
  // emulated card unreadable — a fault of the emulation, not something a real card does. A count
  // of commands, not of journal commits: with every card worked on at once, a few group commits
  // already carry some cards to their PIN change.
  const int kill_before = std::max(1, second / 2);
  const std::string crash_at = vm.count("crash-at")
                                   ? vm["crash-at"].as<std::string>()
                                   : "actors.before_command:" + std::to_string(kill_before);
  std::cout << "\nBatch 2: " << second << " more cards in a child station (persoflow station run "
            << "--config " << station_conf << " --queue " << queue << "),\n"
            << "killed with SIGKILL at crash point " << crash_at << " ...\n";
  const std::vector<std::string> station_argv = {self_exe(), "station", "run", "--config",
                                                 station_conf, "--queue", queue};
  int rc = run_logged(station_argv,
                      {"PERSOFLOW_CRASH_AT=" + crash_at},
                      log);
  std::cout << "  the station " << (rc == 128 + SIGKILL ? "was killed (SIGKILL)"
                                                        : "ended with code " + std::to_string(rc))
            << "\nRestarting it: the unfinished workflows resume from the journal\n";
  rc = wait_for(spawn(station_argv, {}));
  ok = ok && rc == 0;

  // 7. The journal's hash chain.
  std::cout << "\n$ persoflow journal verify --journal " << config.journal << "\n";
  rc = wait_for(spawn({self_exe(), "journal", "verify", "--journal", config.journal}, {}));
  ok = ok && rc == 0;
  server.stop();

  const double total =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "\nWhere everything is:\n"
            << "  CM host (CA, database):   " << cm_dir << "   (persoflow cm certs list --dir "
            << cm_dir << ")\n"
            << "  station journal:          " << config.journal
            << "   (persoflow workflows list --journal " << config.journal << ")\n"
            << "  station configuration:    " << station_conf << "\n"
            << "  cards (SoftHSM2):         " << tokens << "   (SOFTHSM2_CONF=" << softhsm_conf
            << ")\n"
            << "  officer credential:       " << config.officer_p12 << " (password in "
            << pw_file << ")\n"
            << "  log of the child steps:   " << log << "\n"
            << "The CM host is stopped; `persoflow cm serve --dir " << cm_dir
            << " --listen " << *address << "` starts it again for station.conf.\n"
            << std::fixed << std::setprecision(1) << "Demo " << (ok ? "finished" : "FAILED")
            << " in " << total << " s\n";
  return ok ? 0 : 1;
}

}  // namespace

PF_REGISTER_COMMAND_GROUP(demo, "demo", "the demo station: issue and update (TC redo) on SoftHSM2 cards end to end", run);

}  // namespace persoflow::apps
