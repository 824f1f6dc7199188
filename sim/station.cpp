// The simulated station (station.hpp): issue-card on simulated devices, the
// real runtime and journal, a virtual clock.
#include "persoflow/sim/station.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <utility>  // before Asio (GCC 12 + Boost 1.74)

#include "persoflow/actors/runtime.hpp"
#include "persoflow/devices/card.hpp"
#include "persoflow/machines/workflow_support.hpp"
#include "persoflow/sim/devices.hpp"
#include "persoflow/sim/virtual_clock.hpp"
#include "persoflow/storage/journal.hpp"

namespace persoflow::sim {
namespace {

namespace dv = devices;
using actors::CommandContext;
using actors::Completion;
using actors::Outcome;
using actors::WorkflowOutcome;
using machines::Command;
using machines::Event;
using machines::Fields;

constexpr const char* kInitialPin = "123456";
constexpr const char* kMachine = "issue-card";

double seconds(Duration d) { return std::chrono::duration<double>(d).count(); }

double cpu_seconds_now() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return s(usage.ru_utime) + s(usage.ru_stime);
}

std::string field(const Command& c, const std::string& name) {
  auto it = c.fields.find(name);
  return it == c.fields.end() ? std::string() : it->second;
}

// The engine's retry policies of the real station (actors/station.cpp).
const actors::RetryPolicy kCardPolicy{3, std::chrono::milliseconds(60'000),
                                      std::chrono::milliseconds(200),
                                      std::chrono::milliseconds(2'000)};
const actors::RetryPolicy kCmPolicy{6, std::chrono::milliseconds(30'000),
                                    std::chrono::milliseconds(200),
                                    std::chrono::milliseconds(5'000)};
const actors::RetryPolicy kQuickPolicy{3, std::chrono::milliseconds(10'000),
                                       std::chrono::milliseconds(100),
                                       std::chrono::milliseconds(1'000)};

struct CardRun {
  SimCard* card = nullptr;
  std::size_t reader = 0;
  std::string workflow_id;
  bool rsa = false;
  Duration cycle_start{0};
  Duration device{0};
  bool pulled = false;         // out of its reader by the simulated operator
  Duration back_at{0};         // when a pulled card goes back in
  bool awaiting_card = false;  // suspended while pulled: resume when it is back
  bool ended = false;
  int resumes = 0;
  int pull_at_card_command = -1;  // the card is pulled during its n-th card command (-1: never)
  int card_commands = 0;
  actors::Completion reinserted;  // an AskOperator reinsert_card waiting for the card
};

// A workflow suspended this often is not coming back by itself: a broken run,
// reported.
constexpr int kMaxResumesPerCard = 8;

class Simulation {
 public:
  explicit Simulation(const SimStationOptions& options)
      : o_(options),
        rng_(options.seed),
        feeder_(options.resume ? options.readers : options.cards, kInitialPin) {
    for (std::size_t r = 0; r < o_.readers; ++r) {
      char name[48];
      std::snprintf(name, sizeof name, "Sim Reader %04zu", r);
      readers_.emplace_back(name);
    }
  }

  Result<SimReport> run();

 private:
  // --- trace ---
  void trace(const std::string& what) {
    const long long ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(clock_->elapsed()).count();
    std::string line = std::to_string(ms) + " " + what;
    for (unsigned char ch : line) {
      digest_ ^= ch;
      digest_ *= 0x100000001b3ULL;
    }
    digest_ ^= '\n';
    digest_ *= 0x100000001b3ULL;
    if (o_.keep_trace) report_.trace.push_back(std::move(line));
  }

  CardRun& run_of(const std::string& workflow_id) { return runs_.at(workflow_id); }

  // The per-card key algorithm: a function of the seed and the card, not of the
  // order of events.
  bool card_gets_rsa(std::size_t card_index) const {
    Rng pick(o_.seed * 0x9e3779b97f4a7c15ULL + card_index);
    return pick.chance(o_.rsa_share);
  }

  // --- the feeder and the readers ---
  void feed(std::size_t reader) {
    SimCard* card = feeder_.next();
    if (card == nullptr) return;
    const std::size_t index = fed_++;
    const std::string id = "card-" + card->token().serial;
    CardRun& run = runs_[id];
    run.card = card;
    run.reader = reader;
    run.workflow_id = id;
    run.rsa = card_gets_rsa(index);
    run.cycle_start = clock_->elapsed();
    const Duration latency = o_.latency.feed.sample(rng_);
    run.device += latency;
    trace("feed " + readers_[reader].name() + " " + card->token().serial);
    clock_->schedule_after(latency, [this, id] { card_fed(id); });
  }

  void card_fed(const std::string& id) {
    CardRun& run = run_of(id);
    readers_[run.reader].insert(run.card);
    trace("insert " + id);
    Status s = runtime_->start(id, kMachine,
                               Event{"CardInserted",
                                     {{"workflow_id", id},
                                      {"token_serial", run.card->token().serial},
                                      {"reader", readers_[run.reader].name()}}});
    if (!s) problem("starting " + id + ": " + s.message());
    if (o_.removal_share > 0 && rng_.chance(o_.removal_share)) {
      run.pull_at_card_command = static_cast<int>(rng_.below(4));
    }
  }

  void pull(const std::string& id, Duration out_for) {
    CardRun& run = run_of(id);
    if (run.ended) return;
    readers_[run.reader].remove();
    run.pulled = true;
    run.back_at = clock_->elapsed() + out_for;
    trace("pull " + id);
    ++report_.card_removals;
    // The reader reports it, as the PC/SC watcher does: the machine suspends awaiting the card
    // and asks the operator to put it back (AskOperator reinsert_card).
    if (Status s = runtime_->post_event(
            id, Event{"CardRemoved", {{"reader", readers_[run.reader].name()}}});
        !s) {
      problem("CardRemoved for " + id + ": " + s.message());
    }
    clock_->schedule_after(out_for, [this, id] { put_back(id); });
  }

  void put_back(const std::string& id) {
    CardRun& run = run_of(id);
    readers_[run.reader].insert(run.card);
    run.pulled = false;
    trace("put-back " + id);
    if (run.reinserted) {  // the operator's answer to reinsert_card
      auto done = std::exchange(run.reinserted, nullptr);
      done(reinserted_event(run));
    }
    if (run.awaiting_card) {
      run.awaiting_card = false;
      resume(id);
    }
  }

  void resume(const std::string& id) {
    trace("resume " + id);
    ++report_.resumes;
    if (Status s = runtime_->resume(id); !s) problem("resuming " + id + ": " + s.message());
  }

  // Runs from the runtime's handler (on this thread); acts on the clock, after
  // the handler.
  void workflow_ended(const WorkflowOutcome& outcome) {
    clock_->schedule_after(Duration::zero(), [this, outcome] { handle_end(outcome); });
  }

  void handle_end(const WorkflowOutcome& outcome) {
    CardRun& run = run_of(outcome.workflow_id);
    trace("end " + outcome.workflow_id + " " + actors::to_string(outcome.outcome) + " " +
          outcome.state_name);
    if (outcome.outcome == Outcome::kSuspended && ++run.resumes <= kMaxResumesPerCard) {
      ++report_.suspensions;
      if (run.pulled) {
        run.awaiting_card = true;  // put_back resumes it
      } else {
        resume(outcome.workflow_id);  // the operator saw the card back in and resumes
      }
      return;
    }
    run.ended = true;
    if (outcome.outcome == Outcome::kDone) {
      ++report_.cards_done;
    } else {
      ++report_.cards_not_done;
      problem(outcome.workflow_id + " ended " + actors::to_string(outcome.outcome) + " in " +
              outcome.state_name + ": " + outcome.reason + outcome.error.message());
    }
    if (!run.pulled) readers_[run.reader].remove();
    report_.cycle_seconds += seconds(clock_->elapsed() - run.cycle_start);
    report_.device_seconds += seconds(run.device);
    last_out_ = clock_->elapsed();
    ++ended_;
    feed(run.reader);
  }

  void problem(std::string what) {
    trace("problem " + what);
    report_.problems.push_back(std::move(what));
  }

  // --- executors ---
  // A command's latency, drawn when it starts; the effect happens when the
  // latency has passed.
  Duration latency_of(const Command& c) {
    const LatencyModel& m = o_.latency;
    if (c.type == "ReadCardContents") {
      return m.card_command.sample(rng_) + m.card_command.sample(rng_) +
             m.card_command.sample(rng_);
    }
    if (c.type == "GenerateKeyOnCard") {
      const bool rsa = field(c, "algorithm").rfind("RSA", 0) == 0;
      return (rsa ? m.rsa2048_keygen : m.ec_keygen).sample(rng_) + m.card_command.sample(rng_);
    }
    if (c.type == "WriteKeysAndCertificates") {
      return m.card_command.sample(rng_) + m.card_command.sample(rng_);
    }
    if (c.type == "SetCardPin" || c.type == "SignWithOfficer") return m.card_command.sample(rng_);
    if (c.type == "SubmitToCm") return m.cm_round_trip.sample(rng_);
    return Duration::zero();  // answered by the station itself (AskOperator,
                              // GeneratePin, ...)
  }

  void install(actors::ExecutorRegistry& registry) {
    auto add = [&](const char* type, actors::RetryPolicy policy) {
      registry.add(type, actors::Executor{
                             [this](const Command& c, const CommandContext& ctx, Completion done) {
                               start_command(c, ctx, std::move(done));
                             },
                             false, policy});
    };
    add("ReadCardContents", kCardPolicy);
    add("AskOperator", kQuickPolicy);
    add("GenerateKeyOnCard", kCardPolicy);
    add("SignWithOfficer", kQuickPolicy);
    add("SubmitToCm", kCmPolicy);
    add("WriteKeysAndCertificates", kCardPolicy);
    add("GeneratePin", kQuickPolicy);
    add("SetCardPin", kCardPolicy);
    add("ShowPinOnce", kQuickPolicy);
  }

  void start_command(const Command& c, const CommandContext& ctx, Completion done) {
    ++report_.commands_run;
    Duration latency = latency_of(c);  // a late CM answer (cm_fault) makes it longer
    CardRun& run = run_of(ctx.workflow_id);
    run.device += latency;
    trace("run " + ctx.idempotency_key + " " + c.type + " #" + std::to_string(ctx.attempt) + " " +
          std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(latency).count()) +
          "us");
    if (o_.resume && back_.insert(ctx.workflow_id).second && back_.size() == report_.resumed) {
      report_.resume_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - opened_at_).count();
    }
    if (c.type == "GenerateKeyOnCard" && in_keygen_.insert(ctx.workflow_id).second &&
        in_keygen_.size() == o_.readers && o_.on_every_reader_in_keygen) {
      o_.on_every_reader_in_keygen();
    }
    if (c.type == "AskOperator" && field(c, "ask") == "reinsert_card") {
      // Answered when the card is back in its reader (at once when it already is).
      if (run.pulled) {
        run.reinserted = std::move(done);
      } else {
        clock_->schedule_after(Duration::zero(), [this, &run, done = std::move(done)] {
          done(reinserted_event(run));
        });
      }
      return;
    }
    if (is_card_command(c.type) && run.card_commands++ == run.pull_at_card_command) {
      // Pulled while the card works on this command, out for 1 to 6 s.
      const auto latency_ms = std::chrono::duration_cast<std::chrono::milliseconds>(latency);
      const Duration pull_at = std::chrono::milliseconds(rng_.below(latency_ms.count() + 1));
      const Duration out_for = std::chrono::milliseconds(1'000 + rng_.below(5'000));
      clock_->schedule_after(pull_at, [this, id = ctx.workflow_id, out_for] { pull(id, out_for); });
    }
    if (c.type == "SubmitToCm" && o_.cm_fault_share > 0 && rng_.chance(o_.cm_fault_share) &&
        cm_fault(c, ctx, latency, done)) {
      return;
    }
    clock_->schedule_after(latency, [this, c, ctx, done = std::move(done)] {
      Result<Event> result = carry_out(c, ctx);
      if (!result) trace("fail " + ctx.idempotency_key + " " + result.status().message());
      done(std::move(result));
    });
  }

  // One simulated CM link fault for this submission attempt. Returns false for a late answer
  // (the caller carries the command out after `latency`, made longer here).
  bool cm_fault(const Command& c, const CommandContext& ctx, Duration& latency, Completion& done) {
    auto fail_after = [&](Duration after, Status status, bool reached_cm) {
      trace("cm-fault " + ctx.idempotency_key + " " + status.message());
      clock_->schedule_after(after, [this, c, ctx, reached_cm, status = std::move(status),
                                     done = std::move(done)] {
        if (reached_cm) (void)carry_out(c, ctx);  // the CM acted; its answer is lost
        done(status);
      });
      return true;
    };
    switch (rng_.below(4)) {
      case 0:
        ++report_.cm_refused;
        return fail_after(Duration::zero(),
                          make_status(Errc::kUnavailable, "simulated CM host refused"), false);
      case 1:
        ++report_.cm_timeouts;
        return fail_after(kSimCmTimeout,
                          make_status(Errc::kTimeout, "simulated CM host timed out"), false);
      case 2:
        ++report_.cm_dropped;
        return fail_after(latency,
                          make_status(Errc::kUnavailable,
                                      "simulated CM link dropped after the request"),
                          true);
      default:
        ++report_.cm_late;
        trace("cm-late " + ctx.idempotency_key);
        latency += kSimCmLateBy;
        return false;
    }
  }

  Event reinserted_event(const CardRun& run) {
    return Event{
        "CardInserted",
        {{"token_serial", run.card->token().serial}, {"reader", readers_[run.reader].name()}}};
  }

  static bool is_card_command(const std::string& type) {
    return type == "ReadCardContents" || type == "GenerateKeyOnCard" ||
           type == "WriteKeysAndCertificates" || type == "SetCardPin";
  }

  Result<SimCard*> card_for(const Command& c, const CommandContext& ctx) {
    CardRun& run = run_of(ctx.workflow_id);
    if (field(c, "token_serial") != run.card->token().serial) {
      return make_status(Errc::kRejected, "command for card " + field(c, "token_serial") +
                                              " in the workflow of " + run.card->token().serial);
    }
    return run.card;
  }

  Result<Event> carry_out(const Command& c, const CommandContext& ctx) {
    CardRun& run = run_of(ctx.workflow_id);
    if (c.type == "AskOperator") return ask_operator(c, run);
    if (c.type == "SignWithOfficer") return Event{"OfficerSigned", {{"signer_ref", "sim-officer"}}};
    if (c.type == "GeneratePin") {
      const std::string ref = "pin-" + machines::wf::derive_id(ctx.idempotency_key, "card-pin");
      if (!secrets_.count(ref)) {
        std::string pin;
        for (int i = 0; i < 8; ++i) pin += static_cast<char>('0' + rng_.below(10));
        secrets_[ref] = pin;
      }
      return Event{"PinGenerated", {{"pin_index", field(c, "pin_index")}, {"pin_ref", ref}}};
    }
    if (c.type == "ShowPinOnce") {
      secrets_.erase(field(c, "pin_ref"));  // shown once; a repeat has nothing left to show
      return Event{"PinDelivered", {{"pin_index", field(c, "pin_index")}}};
    }
    if (c.type == "SubmitToCm") return submit(c);
    PF_ASSIGN_OR_RETURN(SimCard * card, card_for(c, ctx));
    if (c.type == "ReadCardContents") return read_contents(*card);
    if (c.type == "GenerateKeyOnCard") return generate_key(*card, c, ctx);
    if (c.type == "WriteKeysAndCertificates") return write(*card, c);
    if (c.type == "SetCardPin") {
      auto pin = secrets_.find(field(c, "pin_ref"));
      if (pin == secrets_.end()) return make_status(Errc::kNotFound, "no PIN under that reference");
      if (card->user_pin() != pin->second) {
        PF_RETURN_IF_ERROR(card->change_user_pin(card->user_pin(), pin->second));
      } else {
        PF_RETURN_IF_ERROR(card->pin_state().status());  // already set; still needs the card
      }
      return Event{"CardPinSet", {{"pin_index", field(c, "pin_index")}}};
    }
    return make_status(Errc::kUnsupported, "the simulated station has no executor for " + c.type);
  }

  Result<Event> ask_operator(const Command& c, const CardRun& run) {
    const std::string ask = field(c, "ask");
    if (ask == "procedure") {
      return Event{"ProcedureChosen",
                   {{"procedure", "smartcard-auth"},
                    {"pin_delivery", "generated"},
                    {"key_algorithm", run.rsa ? "RSA:2048" : "EC:secp256r1"},
                    {"key_archiving", "no"},
                    {"replace_ca", "no"},
                    {"operator_pin", "none"}}};
    }
    if (ask == "key_actions") {
      return Event{"ActionsChosen",
                   {{"key.0.action", "add"},
                    {"subject.CN", "Holder " + run.card->token().serial},
                    {"subject.O", "Simulation"}}};
    }
    if (ask == "signature_pin") return Event{"OfficerPinEntered", {{"pin_ref", "sim-officer-pin"}}};
    return make_status(Errc::kUnsupported, "no simulated answer to '" + ask + "'");
  }

  Result<Event> read_contents(SimCard& card) {
    if (Status s = card.login(dv::UserType::kUser, card.user_pin()); !s) return s;
    PF_ASSIGN_OR_RETURN(dv::CardContents contents,
                        card.read_contents(dv::TransportCertificateRule::defaults()));
    Fields f{{"token_serial", card.token().serial}, {"pin_count", "1"}, {"tc.present", "no"}};
    int i = 0;
    for (const dv::KeyInfo& k : contents.keys) {
      f[machines::wf::item("key", i, "id")] = k.id_hex;
      for (const dv::CertificateInfo& cert : contents.certificates) {
        if (cert.id_hex == k.id_hex)
          f[machines::wf::item("key", i, "cert_serial")] = cert.serial_hex;
      }
      ++i;
    }
    for (; i < card.key_entries(); ++i) f[machines::wf::item("key", i, "id")] = "";
    return Event{"CardContentsRead", std::move(f)};
  }

  Result<Event> generate_key(SimCard& card, const Command& c, const CommandContext& ctx) {
    PF_ASSIGN_OR_RETURN(dv::KeyAlgorithm alg, dv::parse_key_algorithm(field(c, "algorithm")));
    // A restarted station's card session is new: log in again (the card keeps
    // its PIN).
    PF_RETURN_IF_ERROR(card.login(dv::UserType::kUser, card.user_pin()));
    PF_RETURN_IF_ERROR(
        card.generate_key(alg, field(c, "key_id"), "sim " + ctx.workflow_id).status());
    return Event{"KeyGenerated", {{"entry", field(c, "entry")}, {"key_id", field(c, "key_id")}}};
  }

  Result<Event> submit(const Command& c) {
    std::string subject;
    for (const auto& [k, v] : c.fields) {
      if (k.rfind("subject.", 0) == 0)
        subject += (subject.empty() ? "" : ",") + k.substr(8) + "=" + v;
    }
    const std::string kind = field(c, "request.0.kind");
    if (kind != "generate") return make_status(Errc::kUnsupported, "request kind " + kind);
    const auto cka = dv::derive_key_id(field(c, "request.0.key_id"));
    SimCmLink::Issued issued = cm_.enroll(field(c, "transaction_id"), subject);
    issued_text_[issued.serial_hex] = issued.certificate;
    return Event{"CertificatesIssued",
                 {{"cert.0.serial", issued.serial_hex},
                  {"cert.0.ref", issued.serial_hex + "@" + dv::to_hex(cka)},
                  {"cert.0.entry", field(c, "request.0.entry")}}};
  }

  Result<Event> write(SimCard& card, const Command& c) {
    PF_ASSIGN_OR_RETURN(dv::CardContents contents,
                        card.read_contents(dv::TransportCertificateRule::defaults()));
    for (int k = 0; c.fields.count(machines::wf::item("cert", k, "ref")); ++k) {
      const std::string ref = field(c, machines::wf::item("cert", k, "ref"));
      const auto at = ref.find('@');
      const std::string serial = ref.substr(0, at);
      bool present = false;
      for (const auto& cert : contents.certificates) present |= cert.serial_hex == serial;
      if (present) continue;
      auto text = issued_text_.find(serial);
      if (text == issued_text_.end()) {
        return make_status(Errc::kNotFound, "certificate " + serial + " was not issued here");
      }
      PF_ASSIGN_OR_RETURN(auto id, dv::from_hex(ref.substr(at + 1)));
      PF_RETURN_IF_ERROR(card.store_certificate(text->second, id, "sim certificate"));
    }
    return Event{"CardWritten", {}};
  }

  void check_invariants();

  const SimStationOptions& o_;
  Rng rng_;
  SimFeeder feeder_;
  std::vector<SimReader> readers_;
  SimCmLink cm_;
  std::shared_ptr<VirtualClock> clock_ = std::make_shared<VirtualClock>();
  std::unique_ptr<actors::Runtime> runtime_;
  std::map<std::string, CardRun> runs_;
  std::map<std::string, std::string> secrets_;      // PIN reference -> PIN (never journaled)
  std::map<std::string, std::string> issued_text_;  // certificate serial -> its text
  std::set<std::string> in_keygen_;
  std::set<std::string> back_;  // resume mode: workflows whose commands run again
  std::chrono::steady_clock::time_point opened_at_;
  std::size_t fed_ = 0;
  std::size_t ended_ = 0;
  Duration last_out_{0};
  std::uint64_t digest_ = 0xcbf29ce484222325ULL;
  SimReport report_;
};

void Simulation::check_invariants() {
  report_.certificates_issued = cm_.certificates_issued();
  report_.cm_repeats = cm_.repeats_answered();
  std::size_t expected = 0;
  for (const auto& [id, run] : runs_) {
    if (!run.ended) problem(id + " never finished");
    ++expected;
    if (run.card->certificate_count() != 1 || run.card->key_count() != 1) {
      problem(id + ": the card holds " + std::to_string(run.card->key_count()) + " key(s) and " +
              std::to_string(run.card->certificate_count()) + " certificate(s), not 1 and 1");
    }
  }
  if (!o_.resume && cm_.certificates_issued() != expected) {
    problem("the CM issued " + std::to_string(cm_.certificates_issued()) + " certificates for " +
            std::to_string(expected) + " cards");
  }
  if (!secrets_.empty()) problem(std::to_string(secrets_.size()) + " PIN(s) never shown");
}

Result<SimReport> Simulation::run() {
  if (o_.readers == 0) return make_status(Errc::kInvalidArgument, "readers must be at least 1");
  if (o_.journal.empty()) return make_status(Errc::kInvalidArgument, "no journal path");
  actors::ExecutorRegistry registry;
  install(registry);
  actors::RuntimeOptions options;
  options.clock = clock_;
  options.journal_wall_clock_ms = [clock = clock_] { return clock->wall_clock_ms(); };
  options.caller_driven = true;
  options.on_workflow_end = [this](const WorkflowOutcome& outcome) { workflow_ended(outcome); };

  const double cpu0 = cpu_seconds_now();
  const auto wall0 = std::chrono::steady_clock::now();
  opened_at_ = wall0;
  PF_ASSIGN_OR_RETURN(runtime_, actors::Runtime::open(o_.journal, std::move(registry), options));

  if (o_.resume) {
    for (std::size_t r = 0; r < o_.readers; ++r) {
      SimCard* card = feeder_.next();
      const std::string id = "card-" + card->token().serial;
      CardRun& run = runs_[id];
      run.card = card;
      run.reader = r;
      run.workflow_id = id;
      run.rsa = card_gets_rsa(fed_++);
      readers_[r].insert(card);
    }
    PF_ASSIGN_OR_RETURN(auto resumed, runtime_->resume_all());
    report_.resumed = resumed.size();
    for (const auto& [id, run] : runs_) {
      if (std::find(resumed.begin(), resumed.end(), id) == resumed.end()) {
        problem(id + " was not in flight in the journal");
      }
    }
  } else {
    for (std::size_t r = 0; r < o_.readers; ++r) feed(r);
  }

  const std::size_t cards = o_.resume ? o_.readers : o_.cards;
  for (;;) {
    if (o_.charge_processing_time) {
      const auto t0 = std::chrono::steady_clock::now();
      runtime_->run_ready(false);
      clock_->advance(std::chrono::steady_clock::now() - t0);
    } else {
      runtime_->run_ready(true);
    }
    if (ended_ == cards) break;
    if (o_.charge_processing_time && clock_->run_due() > 0) continue;
    if (!clock_->run_next()) break;  // nothing scheduled: stuck (reported below)
  }
  clock_->clear();  // completions still scheduled hold workflow actors: drop
                    // them first
  runtime_.reset();
  report_.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  report_.cpu_seconds = cpu_seconds_now() - cpu0;
  report_.virtual_seconds = seconds(last_out_);

  check_invariants();
  PF_ASSIGN_OR_RETURN(auto journal, storage::Journal::open(o_.journal, {.create_if_missing = false,
                                                                        .read_only = true}));
  PF_ASSIGN_OR_RETURN(storage::VerifyReport verified, journal->verify());
  if (!verified.intact) problem("journal verify: " + verified.reason);
  report_.journal_head_hash = verified.head_hash;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(digest_));
  report_.trace_digest = hex;
  return std::move(report_);
}

}  // namespace

Result<SimReport> run_simulated_station(const SimStationOptions& options) {
  Simulation simulation(options);
  return simulation.run();
}

}  // namespace persoflow::sim
