// `persoflow station run --live` with a real pcscd (private, tests/support/pcscd_fixture), vpcd's
// two readers, emulated cards whose ATR names a SoftHSM2 token, and the demo's CM host: a card
// pulled out during key generation suspends its workflow; another card put into that reader is
// refused and nothing is written to it (pkcs11-tool); the first card back resumes and completes;
// the other card then goes through the "next card" request in the second reader. A card pulled
// during the write resumes with one certificate on it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "pcscd_fixture.hpp"
#include "persoflow/devices/card_atr.hpp"
#include "persoflow/sim/card_emulator.hpp"
#include "station_fixture.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using persoflow::testing::persoflow_binary;
using persoflow::testing::run;
using persoflow::testing::TempDir;

constexpr const char* kModule = "/usr/lib/softhsm/libsofthsm2.so";

// A child process whose stdout is collected line by line, so the test can wait for a line.
class Watched {
 public:
  explicit Watched(const std::vector<std::string>& argv) {
    int fds[2];
    if (::pipe(fds) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      ::dup2(fds[1], 2);
      ::close(fds[0]);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    reader_ = std::thread([this, fd = fds[0]] {
      char buf[4096];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof buf)) > 0) {
        std::lock_guard lock(mu_);
        out_.append(buf, static_cast<std::size_t>(n));
        cv_.notify_all();
      }
      ::close(fd);
      std::lock_guard lock(mu_);
      eof_ = true;
      cv_.notify_all();
    });
  }
  ~Watched() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (reader_.joinable()) reader_.join();
  }
  // True once the output (from `from` on) holds `text`; sets `from` past it.
  bool wait_for(const std::string& text, std::size_t& from,
                std::chrono::seconds timeout = 60s) {
    std::unique_lock lock(mu_);
    bool seen = cv_.wait_for(lock, timeout, [&] {
      return out_.find(text, from) != std::string::npos || eof_;
    });
    auto at = out_.find(text, from);
    if (!seen || at == std::string::npos) return false;
    from = at + text.size();
    return true;
  }
  int wait_exit() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    exited_ = true;
    if (reader_.joinable()) reader_.join();
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  std::string out() {
    std::lock_guard lock(mu_);
    return out_;
  }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string out_;
  bool eof_ = false;
};

// label -> serial of the tokens in the SoftHSM2 store of `softhsm_env` ("SOFTHSM2_CONF=...").
std::map<std::string, std::string> token_serials(const std::string& softhsm_env) {
  auto shown = run({"/usr/bin/env", softhsm_env, "softhsm2-util", "--show-slots"});
  std::map<std::string, std::string> out;
  std::istringstream in(shown.out);
  std::string line, serial;
  auto value = [](const std::string& l) {
    auto colon = l.find(':');
    std::string v = l.substr(colon + 1);
    v.erase(0, v.find_first_not_of(' '));
    v.erase(v.find_last_not_of(' ') + 1);
    return v;
  };
  while (std::getline(in, line)) {
    if (line.find("Serial number:") != std::string::npos) serial = value(line);
    if (line.find("Label:") != std::string::npos) out[value(line)] = serial;
  }
  return out;
}

// The card's objects; with `pin`, its private ones too.
persoflow::testing::RunResult card_objects(const std::string& softhsm_env,
                                           const std::string& label, const std::string& pin = {}) {
  std::vector<std::string> argv = {"/usr/bin/env", softhsm_env, "pkcs11-tool", "--module", kModule,
                                   "--token-label", label, "--list-objects"};
  if (!pin.empty()) argv.insert(argv.end(), {"--login", "--pin", pin});
  return run(argv);
}

int occurrences(const std::string& text, const std::string& what) {
  int n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The demo's CM host (served again from its folder), two fresh SoftHSM2 tokens card-60 and card-61
// and a queue of two requests: live-a for card-60, live-b for the next card.
struct LiveSetup {
  TempDir tmp{"persoflow-live"};
  fs::path dir = tmp.path() / "demo";
  std::string conf, softhsm, first, second, queue;
  std::unique_ptr<Watched> cm;

  void start() {
    auto demo = run({persoflow_binary(), "demo", "--dir", dir.string(), "--cards", "1"});
    ASSERT_EQ(demo.exit_code, 0) << demo.out << demo.err;
    conf = (dir / "station" / "station.conf").string();
    std::ifstream in(conf);
    std::stringstream text;
    text << in.rdbuf();
    const std::string s = text.str();
    const auto at = s.find("127.0.0.1:");
    ASSERT_NE(at, std::string::npos) << s;
    auto end = at + 10;
    while (end < s.size() && std::isdigit(static_cast<unsigned char>(s[end]))) ++end;
    cm = std::make_unique<Watched>(std::vector<std::string>{
        persoflow_binary(), "cm", "serve", "--dir", (dir / "cm").string(), "--listen",
        s.substr(at, end - at)});
    std::size_t cm_from = 0;
    ASSERT_TRUE(cm->wait_for("listening on", cm_from)) << cm->out();

    softhsm = "SOFTHSM2_CONF=" + (dir / "tokens" / "softhsm2.conf").string();
    for (const char* label : {"card-60", "card-61"}) {
      ASSERT_EQ(run({"/usr/bin/env", softhsm, "softhsm2-util", "--init-token", "--free",
                     "--label", label, "--pin", "123456", "--so-pin", "12345678"})
                    .exit_code,
                0);
    }
    auto serials = token_serials(softhsm);
    first = serials["card-60"];
    second = serials["card-61"];
    ASSERT_EQ(first.size(), 16u);
    ASSERT_EQ(second.size(), 16u);
    queue = tmp.file("queue.jsonl");
    write_queue("", "");
  }

  // The queue's two lines, each with more JSON fields (`"name": value, ` each) when given.
  void write_queue(const std::string& more_a, const std::string& more_b) const {
    std::ofstream(queue) << "{\"workflow_id\": \"live-a\", \"token_serial\": \"" << first
                         << "\", " << more_a << "\"subject\": {\"CN\": \"Live A\"}}\n"
                         << "{\"workflow_id\": \"live-b\", \"token_serial\": \"next\", "
                         << more_b << "\"subject\": {\"CN\": \"Live B\"}}\n";
  }

  // station.conf changed by `change`.
  void change_conf(const std::function<void(nlohmann::json&)>& change) const {
    std::ifstream in(conf);
    nlohmann::json j = nlohmann::json::parse(in);
    change(j);
    std::ofstream(conf) << j.dump(2) << "\n";
  }

  // `station run --live` over the queue through pcscd's private socket, once both readers are
  // ready; `command_delay` ("Type:ms") holds each command of that type before it runs,
  // `trace_commands` prints each card command's begin and end.
  std::unique_ptr<Watched> live_station(const std::string& command_delay = {},
                                        bool trace_commands = false) const {
    std::vector<std::string> argv = {
        "/usr/bin/env",
        "PCSCLITE_CSOCK_NAME=" + persoflow::testing::PcscdFixture::use_private_socket()};
    if (!command_delay.empty()) argv.push_back("PERSOFLOW_LIVE_COMMAND_DELAY=" + command_delay);
    argv.insert(argv.end(), {persoflow_binary(), "station", "run", "--config", conf, "--live",
                             "--queue", queue});
    if (trace_commands) argv.push_back("--trace-commands");
    auto station = std::make_unique<Watched>(argv);
    std::size_t from = 0;
    const std::string reader1 = persoflow::testing::PcscdFixture::reader_name(1);
    EXPECT_TRUE(station->wait_for(reader1 + "  reader ready", from)) << station->out();
    return station;
  }
};

TEST(LiveStation, PulledCardSuspendsAnotherCardIsRefusedTheSameCardCompletes) {
  LiveSetup setup;
  ASSERT_NO_FATAL_FAILURE(setup.start());
  const fs::path& dir = setup.dir;
  const std::string &conf = setup.conf, &softhsm = setup.softhsm;
  const std::string &first = setup.first, &second = setup.second;

  persoflow::testing::PcscdFixture pcscd;
  pcscd.start();
  // Key generation held for 2 s, so the card can be pulled while it is in progress.
  Watched station({"/usr/bin/env", "PCSCLITE_CSOCK_NAME=" +
                                       persoflow::testing::PcscdFixture::use_private_socket(),
                   "PERSOFLOW_LIVE_COMMAND_DELAY=GenerateKeyOnCard:2000", persoflow_binary(),
                   "station", "run", "--config", conf, "--live", "--queue", setup.queue});
  std::size_t from = 0;
  const std::string reader0 = persoflow::testing::PcscdFixture::reader_name(0);
  const std::string reader1 = persoflow::testing::PcscdFixture::reader_name(1);
  ASSERT_TRUE(station.wait_for(reader1 + "  reader ready", from)) << station.out();

  persoflow::sim::CardEmulator slot0({.port = pcscd.port()});
  persoflow::sim::CardEmulator slot1({.port = static_cast<std::uint16_t>(pcscd.port() + 1)});
  const std::string atr_first = *persoflow::devices::card_atr_for_token(first);
  const std::string atr_second = *persoflow::devices::card_atr_for_token(second);

  ASSERT_TRUE(slot0.insert(atr_first).is_ok());
  ASSERT_TRUE(station.wait_for("live-a  ActionsChosen -> KeysRequested", from)) << station.out();
  slot0.remove();  // during the key generation
  ASSERT_TRUE(station.wait_for("live-a  CardRemoved -> SuspendedAwaitingCard", from))
      << station.out();
  ASSERT_TRUE(station.wait_for("live-a  waiting for its card", from)) << station.out();

  ASSERT_TRUE(slot0.insert(atr_second).is_ok());
  ASSERT_TRUE(station.wait_for("card refused by live-a", from)) << station.out();
  // Logged in with the card's PIN, which nothing changed: no object at all on it.
  auto untouched = card_objects(softhsm, "card-61", "123456");
  EXPECT_EQ(untouched.exit_code, 0) << untouched.err;
  EXPECT_EQ(untouched.out, "") << untouched.out;
  slot0.remove();
  // pcscd polls vpcd every 400 ms: a swap within one poll would not be seen as a removal.
  ASSERT_TRUE(station.wait_for("card " + second + " removed", from)) << station.out();

  ASSERT_TRUE(slot0.insert(atr_first).is_ok());
  ASSERT_TRUE(station.wait_for("live-a  CardInserted -> KeysRequested", from)) << station.out();
  ASSERT_TRUE(station.wait_for("[done]", from, 120s)) << station.out();

  ASSERT_TRUE(slot1.insert(atr_second).is_ok());
  EXPECT_EQ(station.wait_exit(), 0) << station.out();
  const std::string out = station.out();
  EXPECT_NE(out.find(reader1 + "  live-b  CardInserted -> ContentsReadRequested"), std::string::npos)
      << out;
  EXPECT_NE(out.find("live-a  card " + first + "  done  Done"), std::string::npos) << out;
  EXPECT_NE(out.find("live-b  card " + second + "  done  Done"), std::string::npos) << out;
  EXPECT_NE(card_objects(softhsm, "card-60").out.find("CN=Live A"), std::string::npos);
  EXPECT_NE(card_objects(softhsm, "card-61").out.find("CN=Live B"), std::string::npos);

  auto verify = run({persoflow_binary(), "journal", "verify", "--journal",
                     (dir / "station" / "journal.db").string()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
}

// The card pulled while its WriteKeysAndCertificates is in flight (held 3 s before it touches
// the card) and put back at once: the held write may still run on it, and the resumed state
// issues the write again; the write re-reads the card first, so the card ends with one
// certificate, the one the CM database holds for it (pkcs11-tool, openssl verify).
TEST(LiveStation, CardPulledDuringTheWriteResumesWithOneCertificate) {
  LiveSetup setup;
  ASSERT_NO_FATAL_FAILURE(setup.start());
  persoflow::testing::PcscdFixture pcscd;
  pcscd.start();
  auto watched = setup.live_station("WriteKeysAndCertificates:3000", true);
  Watched& station = *watched;
  std::size_t from = 0;
  persoflow::sim::CardEmulator slot0({.port = pcscd.port()});
  persoflow::sim::CardEmulator slot1({.port = static_cast<std::uint16_t>(pcscd.port() + 1)});
  const std::string atr_first = *persoflow::devices::card_atr_for_token(setup.first);

  ASSERT_TRUE(slot0.insert(atr_first).is_ok());
  ASSERT_TRUE(station.wait_for("begin WriteKeysAndCertificates live-a", from)) << station.out();
  slot0.remove();
  ASSERT_TRUE(station.wait_for("live-a  CardRemoved -> SuspendedAwaitingCard", from))
      << station.out();
  ASSERT_TRUE(slot0.insert(atr_first).is_ok());
  ASSERT_TRUE(station.wait_for("live-a  CardInserted -> WriteRequested", from)) << station.out();
  ASSERT_TRUE(slot1.insert(*persoflow::devices::card_atr_for_token(setup.second)).is_ok());
  EXPECT_EQ(station.wait_exit(), 0) << station.out();
  const std::string out = station.out();
  EXPECT_NE(out.find("live-a  card " + setup.first + "  done  Done"), std::string::npos) << out;

  const std::string held = card_objects(setup.softhsm, "card-60").out;
  EXPECT_EQ(occurrences(held, "label:      persoflow certificate"), 1) << held;
  EXPECT_EQ(occurrences(held, "Public Key Object"), 1) << held;
  std::string on_card;
  EXPECT_EQ(persoflow::testing::card_certificate_problems(setup.softhsm, "card-60", setup.dir,
                                                          setup.tmp, &on_card),
            "");
  EXPECT_EQ(persoflow::testing::serials_for(setup.dir, "Live A"), std::vector<std::string>{on_card});
  auto verify = run({persoflow_binary(), "journal", "verify", "--journal",
                     (setup.dir / "station" / "journal.db").string()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
}

TEST(LiveStation, ARefusalWaitsForTheOperatorAndACardLeftInIsRetriedByTheStation) {
  LiveSetup setup;
  ASSERT_NO_FATAL_FAILURE(setup.start());
  // One attempt per submission, and the station's retry 1.5 s after a suspension.
  setup.change_conf([](nlohmann::json& conf) {
    conf["cm_retry"] = {{"attempts", 1}, {"initial_delay_ms", 50}, {"max_delay_ms", 1500}};
  });
  setup.write_queue("\"token_procedure\": \"no-such-procedure\", ", "");
  persoflow::testing::PcscdFixture pcscd;
  pcscd.start();
  auto watched = setup.live_station();
  Watched& station = *watched;
  std::size_t from = 0;
  persoflow::sim::CardEmulator slot0({.port = pcscd.port()});
  persoflow::sim::CardEmulator slot1({.port = static_cast<std::uint16_t>(pcscd.port() + 1)});

  // Refused once, named by its queue line; it waits for the operator, the station goes on.
  ASSERT_TRUE(slot0.insert(*persoflow::devices::card_atr_for_token(setup.first)).is_ok());
  ASSERT_TRUE(station.wait_for("live-a  waiting for the operator", from)) << station.out();
  EXPECT_NE(station.out().find(setup.queue + ":1 (request live-a): the CM host has no token "
                               "procedure 'no-such-procedure'"),
            std::string::npos)
      << station.out();

  // The CM host goes down while card B is personalised: its submission is suspended, the card
  // stays in, and the station retries it once the CM host is back.
  setup.cm.reset();
  ASSERT_TRUE(slot1.insert(*persoflow::devices::card_atr_for_token(setup.second)).is_ok());
  ASSERT_TRUE(station.wait_for("live-b  station retry 1/3", from)) << station.out();
  setup.cm = std::make_unique<Watched>(std::vector<std::string>{
      persoflow_binary(), "cm", "serve", "--dir", (setup.dir / "cm").string(), "--listen",
      persoflow::testing::cm_address(setup.conf)});
  std::size_t cm_from = 0;
  ASSERT_TRUE(setup.cm->wait_for("listening on", cm_from)) << setup.cm->out();
  EXPECT_EQ(station.wait_exit(), 1) << station.out();  // live-a still waits for the operator
  const std::string out = station.out();
  EXPECT_NE(out.find("live-b  card " + setup.second + "  done  Done"), std::string::npos) << out;
  EXPECT_NE(out.find("live-a  card " + setup.first + "  suspended"), std::string::npos) << out;
  EXPECT_EQ(out.find("live-b  CardRemoved"), std::string::npos) << out;
  EXPECT_NE(card_objects(setup.softhsm, "card-61").out.find("CN=Live B"), std::string::npos);
  // Nothing was written to the refused request's card; the operator cancels it.
  EXPECT_EQ(card_objects(setup.softhsm, "card-60", "123456").out, "");
  auto cancel = run({persoflow_binary(), "workflows", "cancel", "live-a", "--config", setup.conf});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.out << cancel.err;
  EXPECT_NE(cancel.out.find("Cancelled"), std::string::npos) << cancel.out;
  auto verify = run({persoflow_binary(), "journal", "verify", "--journal",
                     (setup.dir / "station" / "journal.db").string()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
}

// Queue lines whose PINs are entered (station.conf entered_pins, a line per PIN in queue order)
// on cards with two PINs, through the live station's readers: each card, found by its ATR, gets
// its line's PIN and PUK, checked from outside with pkcs11-tool (user and SO logins); neither is
// in the demo folder or in what the station printed.
TEST(LiveStation, EnteredPinsOfQueueLinesSetOnTheCardsInTheReaders) {
  LiveSetup setup;
  ASSERT_NO_FATAL_FAILURE(setup.start());
  const std::string entered = setup.tmp.file("entered-pins.txt");
  std::ofstream(entered) << "11335577\n22446688\n33557799\n44668800\n";
  setup.change_conf([&](nlohmann::json& conf) {
    conf["card_pin_count"] = 2;
    conf["card_puk_file"] = "card.puk";  // the PUK (SO PIN) the cards come with
    conf["entered_pins"] = entered;
  });
  std::ofstream(setup.dir / "station" / "card.puk") << "12345678\n";
  setup.write_queue("\"pin_delivery\": \"entered\", ", "\"pin_delivery\": \"entered\", ");
  persoflow::testing::PcscdFixture pcscd;
  pcscd.start();
  auto watched = setup.live_station();
  Watched& station = *watched;
  persoflow::sim::CardEmulator slot0({.port = pcscd.port()});
  persoflow::sim::CardEmulator slot1({.port = static_cast<std::uint16_t>(pcscd.port() + 1)});
  ASSERT_TRUE(slot0.insert(*persoflow::devices::card_atr_for_token(setup.first)).is_ok());
  ASSERT_TRUE(slot1.insert(*persoflow::devices::card_atr_for_token(setup.second)).is_ok());
  EXPECT_EQ(station.wait_exit(), 0) << station.out();
  const std::string out = station.out();
  EXPECT_NE(out.find("live-a  card " + setup.first + "  done  Done"), std::string::npos) << out;
  EXPECT_NE(out.find("live-b  card " + setup.second + "  done  Done"), std::string::npos) << out;
  EXPECT_EQ(persoflow::testing::two_pin_problems(setup.dir, "card-60", "11335577", "22446688",
                                                 out, false),
            "");
  EXPECT_EQ(persoflow::testing::two_pin_problems(setup.dir, "card-61", "33557799", "44668800",
                                                 out, false),
            "");
}

// "<reader>  card <serial>  begin|end <Type> <key>" lines of --trace-commands, in output order.
struct TracedCommand {
  std::string reader, serial, what, key;
};
std::vector<TracedCommand> traced_commands(const std::string& out) {
  std::vector<TracedCommand> lines;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    const auto card = line.find("  card ");
    if (card == std::string::npos) continue;
    std::istringstream rest(line.substr(card + 7));
    TracedCommand t;
    std::string type;
    rest >> t.serial >> t.what >> type >> t.key;
    if (t.what != "begin" && t.what != "end") continue;
    t.reader = line.substr(0, card);
    t.key = type + " " + t.key;
    lines.push_back(t);
  }
  return lines;
}

TEST(LiveStation, TwoReadersProgressTogetherACardsCommandsNeverOverlap) {
  LiveSetup setup;
  ASSERT_NO_FATAL_FAILURE(setup.start());
  persoflow::testing::PcscdFixture pcscd;
  pcscd.start();
  // Key generation held for 2.5 s: long enough for the two cards' to overlap, and for card A to
  // be pulled and put back while its first one is still held (a dropped command still running
  // when the resumed state issues its own: the reader's actor runs them one after the other).
  auto watched = setup.live_station("GenerateKeyOnCard:2500", true);
  Watched& station = *watched;
  std::size_t from = 0;
  const std::string reader0 = persoflow::testing::PcscdFixture::reader_name(0);
  const std::string reader1 = persoflow::testing::PcscdFixture::reader_name(1);

  persoflow::sim::CardEmulator slot0({.port = pcscd.port()});
  persoflow::sim::CardEmulator slot1({.port = static_cast<std::uint16_t>(pcscd.port() + 1)});
  const std::string atr_first = *persoflow::devices::card_atr_for_token(setup.first);
  ASSERT_TRUE(slot0.insert(atr_first).is_ok());
  ASSERT_TRUE(slot1.insert(*persoflow::devices::card_atr_for_token(setup.second)).is_ok());
  ASSERT_TRUE(station.wait_for("begin GenerateKeyOnCard live-a", from)) << station.out();
  slot0.remove();
  ASSERT_TRUE(station.wait_for("live-a  CardRemoved -> SuspendedAwaitingCard", from))
      << station.out();
  ASSERT_TRUE(slot0.insert(atr_first).is_ok());
  EXPECT_EQ(station.wait_exit(), 0) << station.out();
  const std::string out = station.out();
  ASSERT_NE(out.find("live-a  CardInserted -> KeysRequested"), std::string::npos) << out;
  EXPECT_NE(out.find("live-a  card " + setup.first + "  done  Done"), std::string::npos) << out;
  EXPECT_NE(out.find("live-b  card " + setup.second + "  done  Done"), std::string::npos) << out;

  // Per card: begin and end alternate with the same command, always on the card's reader.
  const std::vector<TracedCommand> traced = traced_commands(out);
  std::map<std::string, std::string> running;  // serial -> command begun and not yet ended
  std::map<std::string, int> generations;      // serial -> GenerateKeyOnCard begun
  bool readers_overlapped = false;
  for (const auto& t : traced) {
    if (t.what == "begin") {
      EXPECT_EQ(running[t.serial], "") << "card " << t.serial << ": " << t.key
                                       << " began while " << running[t.serial] << " ran\n"
                                       << out;
      for (const auto& [serial, key] : running) {
        if (serial != t.serial && !key.empty()) readers_overlapped = true;
      }
      running[t.serial] = t.key;
      if (t.key.rfind("GenerateKeyOnCard", 0) == 0) ++generations[t.serial];
    } else {
      EXPECT_EQ(running[t.serial], t.key) << out;
      running[t.serial].clear();
    }
    EXPECT_EQ(t.reader, t.serial == setup.first ? reader0 : reader1) << out;
  }
  EXPECT_GE(traced.size(), 20u) << out;
  EXPECT_TRUE(readers_overlapped) << "the two readers never worked at the same time\n" << out;
  // Card A's first key generation (dropped) and the resumed state's both ran, one after the other.
  EXPECT_EQ(generations[setup.first], 2) << out;
  EXPECT_NE(card_objects(setup.softhsm, "card-60").out.find("CN=Live A"), std::string::npos);
  EXPECT_NE(card_objects(setup.softhsm, "card-61").out.find("CN=Live B"), std::string::npos);
}

}  // namespace
