// The live station (live_station.hpp): a station thread that owns the readers and the mapping
// reader -> card -> workflow, fed by the reader watcher and by the runtime's step notices.
#include "persoflow/actors/live_station.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <variant>

#include "persoflow/actors/replay.hpp"
#include "persoflow/actors/runtime.hpp"
#include "persoflow/devices/card_atr.hpp"
#include "persoflow/devices/readers.hpp"
#include "persoflow/storage/journal.hpp"

namespace persoflow::actors {
namespace {

using machines::Command;
using machines::Event;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string field(const Command& c, const char* name) {
  auto it = c.fields.find(name);
  return it == c.fields.end() ? std::string() : it->second;
}

// PERSOFLOW_LIVE_COMMAND_DELAY=Type:ms holds each command of that type for ms before it runs, so
// a test can pull the card while the command is in progress (like PERSOFLOW_CRASH_AT, a hook for
// tests; unset in normal use).
std::optional<std::pair<std::string, std::chrono::milliseconds>> command_delay() {
  const char* env = std::getenv("PERSOFLOW_LIVE_COMMAND_DELAY");
  if (env == nullptr) return std::nullopt;
  std::string s(env);
  auto colon = s.find(':');
  if (colon == std::string::npos) return std::nullopt;
  return std::make_pair(s.substr(0, colon),
                        std::chrono::milliseconds(std::atol(s.c_str() + colon + 1)));
}

Executor acknowledging(std::function<void(const Command&, const CommandContext&)> show) {
  return blocking_executor(
      [show](const Command& c, const CommandContext& ctx) -> Result<Event> {
        show(c, ctx);
        return command_acknowledged();
      },
      RetryPolicy{1});
}

}  // namespace

ReaderActor::ReaderActor(std::string reader) : reader_(std::move(reader)) {
  thread_ = std::thread([this] {
    while (true) {
      std::function<void()> job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  });
}

ReaderActor::~ReaderActor() { stop(); }

bool ReaderActor::post(std::function<void()> job) {
  std::lock_guard lock(mu_);
  if (stopping_) return false;
  jobs_.push_back(std::move(job));
  cv_.notify_one();
  return true;
}

void ReaderActor::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

ExecutorRegistry live_station_executors(std::shared_ptr<Station> station, ReaderOfCard reader_of,
                                        std::function<void(const std::string&)> print,
                                        bool trace_commands) {
  ExecutorRegistry base;
  install_issue_card_executors(base, station);
  ExecutorRegistry out;
  const auto delay = command_delay();
  for (const auto& type : base.command_types()) {
    Executor e = *base.find(type);
    if (type == "NotifyOperator" || type == "RefuseCard") {
      // Shown on the station's output too (the base executor acknowledges it).
      auto inner = e.run;
      e.run = [inner, print](const Command& c, const CommandContext& ctx, Completion done) {
        print(ctx.workflow_id + ": " + field(c, "reason"));
        inner(c, ctx, std::move(done));
      };
    } else if (type == "AskOperator") {
      auto inner = e.run;
      e.run = [inner, print](const Command& c, const CommandContext& ctx, Completion done) {
        if (field(c, "ask") != "reinsert_card") return inner(c, ctx, std::move(done));
        print(ctx.workflow_id + ": insert card " + field(c, "token_serial") + " again (" +
              field(c, "reason") + ")");
        done(command_acknowledged());
      };
    } else if (e.blocking) {
      // A command on a card runs on the actor of the reader the card is in, after the commands
      // already queued there: one at a time per card, the readers side by side. Without a card
      // in a reader it fails (and is retried with its executor's backoff).
      auto inner = e.run;
      e.run = [inner, reader_of, delay, type, print, trace_commands](
                  const Command& c, const CommandContext& ctx, Completion done) {
        const std::string serial = field(c, "token_serial");
        if (serial.empty()) return inner(c, ctx, std::move(done));  // not a card command
        auto not_in_reader = [serial] {
          return make_status(Errc::kUnavailable, "card " + serial + " is not in a reader");
        };
        std::shared_ptr<ReaderActor> actor = reader_of(serial);
        if (!actor) return done(not_in_reader());
        auto job = [=]() {
          const std::string tag = actor->reader() + "  card " + lower(serial) + "  ";
          if (trace_commands) print(tag + "begin " + type + " " + ctx.idempotency_key);
          if (delay && delay->first == type) std::this_thread::sleep_for(delay->second);
          // Pulled while the command waited: nothing touches a card that is not there.
          if (reader_of(serial) != actor) {
            done(not_in_reader());
          } else {
            inner(c, ctx, done);  // a blocking executor: returns once it has answered
          }
          if (trace_commands) print(tag + "end " + type + " " + ctx.idempotency_key);
        };
        if (!actor->post(job)) done(make_status(Errc::kUnavailable, "the station is stopping"));
      };
      e.blocking = false;
    }
    out.add(type, std::move(e));
  }
  // Commands without a natural result that the issue-card executors may not carry.
  if (out.find("NotifyOperator") == nullptr) {
    out.add("NotifyOperator", acknowledging([print](const Command& c, const CommandContext& ctx) {
              print(ctx.workflow_id + ": " + field(c, "reason"));
            }));
  }
  if (out.find("RefuseCard") == nullptr) {
    out.add("RefuseCard", acknowledging([print](const Command& c, const CommandContext& ctx) {
              print(field(c, "reader") + ": card refused by " + ctx.workflow_id + ": " +
                    field(c, "reason"));
            }));
  }
  return out;
}

namespace {

struct ReaderSlot {
  std::string serial;    // the card in the reader, empty when none
  std::string workflow;  // the workflow of the card last in this reader (waiting when removed)
};

struct WorkflowInfo {
  std::string serial;
  std::string reader;
  std::string state;
  std::string outcome;  // empty while it may still go on
  std::string reason;
  bool waiting_for_card = false;
  unsigned station_retries = 0;  // resumed by the station with its card still in
  bool retry_due = false;        // a station retry is scheduled
};

// Messages to the station thread.
struct EndNotice {
  WorkflowOutcome outcome;
};
struct RetryNotice {
  std::string workflow_id;
};
using Message = std::variant<devices::ReaderEvent, StepNotice, EndNotice, RetryNotice>;

class LiveStation {
 public:
  LiveStation(std::shared_ptr<Station> station, std::vector<CardRequest> requests,
              LiveStationOptions options)
      : station_(std::move(station)), requests_(std::move(requests)), options_(std::move(options)) {
    if (!options_.print) options_.print = [](const std::string&) {};
  }

  Result<std::vector<LiveResult>> run() {
    const StationConfig& config = station_->config();
    // Requests already in the journal are not started again; unfinished ones resume with their
    // card.
    {
      PF_ASSIGN_OR_RETURN(auto journal, storage::Journal::open(config.journal, {}));
      PF_ASSIGN_OR_RETURN(auto all, journal->workflows());
      for (const auto& w : all) {
        auto saved = station_->load_request(w.workflow_id);
        if (!saved) continue;
        WorkflowInfo info;
        info.serial = lower(saved->token_serial);
        info.state = w.state_name;
        if (w.status == storage::WorkflowStatus::kDone) info.outcome = "done";
        if (w.status == storage::WorkflowStatus::kCancelled) info.outcome = "cancelled";
        by_serial_[info.serial] = w.workflow_id;
        workflows_[w.workflow_id] = info;
      }
    }
    for (auto& r : requests_) {
      if (workflows_.count(r.workflow_id)) continue;
      if (r.token_serial == "next") {
        next_.push_back(r);
      } else {
        explicit_[lower(r.token_serial)] = r;
      }
    }

    RuntimeOptions ro;
    ro.blocking_threads = station_blocking_threads(requests_.size() + workflows_.size());
    ro.on_step = [this](const StepNotice& n) { push(n); };
    ro.on_workflow_end = [this](const WorkflowOutcome& o) { push(EndNotice{o}); };
    auto registry = live_station_executors(
        station_, [this](const std::string& serial) { return reader_of(serial); }, options_.print,
        options_.trace_commands);
    PF_ASSIGN_OR_RETURN(runtime_, Runtime::open(config.journal, std::move(registry), ro));
    auto watcher = devices::watch_readers([this](const devices::ReaderEvent& e) { push(e); });

    while (true) {
      Message m = pop();
      if (auto* e = std::get_if<devices::ReaderEvent>(&m)) on_reader(*e);
      if (auto* n = std::get_if<StepNotice>(&m)) on_step(*n);
      if (auto* n = std::get_if<EndNotice>(&m)) on_end(n->outcome);
      if (auto* n = std::get_if<RetryNotice>(&m)) retry(n->workflow_id);
      if (!options_.keep_running && all_ended()) break;
    }
    watcher->stop();
    stop_reader_actors();
    runtime_.reset();

    std::vector<LiveResult> out;
    for (const auto& r : requests_) {
      LiveResult row{r.workflow_id, r.token_serial, {}, {}, "not started", {}};
      if (auto it = workflows_.find(r.workflow_id); it != workflows_.end()) {
        row.token_serial = it->second.serial;
        row.reader = it->second.reader;
        row.state = it->second.state;
        row.outcome = it->second.outcome.empty() ? "suspended" : it->second.outcome;
        row.reason = it->second.reason;
      }
      out.push_back(std::move(row));
    }
    return out;
  }

 private:
  void push(Message m) {
    std::lock_guard lock(mu_);
    inbox_.push_back(std::move(m));
    cv_.notify_one();
  }
  // The next message; a station retry that falls due first is a RetryNotice.
  Message pop() {
    std::unique_lock lock(mu_);
    while (inbox_.empty()) {
      if (retries_.empty()) {
        cv_.wait(lock);
        continue;
      }
      auto first = retries_.begin();
      if (std::chrono::steady_clock::now() >= first->first) {
        RetryNotice due{first->second};
        retries_.erase(first);
        return due;
      }
      cv_.wait_until(lock, first->first);
    }
    Message m = std::move(inbox_.front());
    inbox_.pop_front();
    return m;
  }
  // The actor of the reader the card is in; null when it is in none.
  std::shared_ptr<ReaderActor> reader_of(const std::string& serial) {
    std::lock_guard lock(mu_);
    auto it = card_reader_.find(lower(serial));
    return it == card_reader_.end() ? nullptr : it->second;
  }
  std::shared_ptr<ReaderActor> actor_of(const std::string& reader) {
    std::lock_guard lock(mu_);
    auto& actor = reader_actors_[reader];
    if (!actor) actor = std::make_shared<ReaderActor>(reader);
    return actor;
  }
  void set_present(const std::string& serial, const std::string& reader) {
    auto actor = reader.empty() ? nullptr : actor_of(reader);
    std::lock_guard lock(mu_);
    if (actor) {
      card_reader_[serial] = actor;
    } else {
      card_reader_.erase(serial);
    }
  }
  // Lets each reader's actor finish the commands it holds (their answers reach the runtime,
  // still open); commands posted afterwards fail at once.
  void stop_reader_actors() {
    std::map<std::string, std::shared_ptr<ReaderActor>> actors;
    {
      std::lock_guard lock(mu_);
      actors = reader_actors_;
    }
    for (auto& [name, actor] : actors) actor->stop();
  }

  bool all_ended() const {
    for (const auto& r : requests_) {
      auto it = workflows_.find(r.workflow_id);
      if (it == workflows_.end() || it->second.outcome.empty()) return false;
    }
    return true;
  }

  void say(const std::string& reader, const std::string& text) {
    options_.print((reader.empty() ? std::string("station") : reader) + "  " + text);
  }

  void on_reader(const devices::ReaderEvent& e) {
    using K = devices::ReaderEvent::Kind;
    switch (e.kind) {
      case K::kReaderAdded:
        readers_[e.reader];
        actor_of(e.reader);
        say(e.reader, "reader ready");
        break;
      case K::kReaderRemoved: card_removed(e.reader); readers_.erase(e.reader); break;
      case K::kCardInserted: card_inserted(e.reader, e.atr_hex); break;
      case K::kCardRemoved: card_removed(e.reader); break;
      case K::kServiceLost: say("", "pcscd lost: " + e.detail); break;
      case K::kServiceRestored: say("", "pcscd back"); break;
    }
  }

  Event inserted_event(const std::string& workflow, const std::string& serial,
                       const std::string& reader) {
    return Event{"CardInserted",
                 {{"workflow_id", workflow}, {"token_serial", serial}, {"reader", reader}}};
  }

  void card_inserted(const std::string& reader, const std::string& atr) {
    ReaderSlot& slot = readers_[reader];
    auto serial_opt = devices::token_serial_from_atr(atr);
    if (!serial_opt) {
      say(reader, "a card that names no token (ATR " + atr + "): left alone");
      return;
    }
    const std::string serial = lower(*serial_opt);
    slot.serial = serial;
    set_present(serial, reader);
    say(reader, "card " + serial + " inserted");

    // A workflow waiting in this reader for another card: offered to it, which refuses it.
    if (!slot.workflow.empty()) {
      auto& w = workflows_[slot.workflow];
      if (w.waiting_for_card && w.outcome.empty() && w.serial != serial) {
        post(slot.workflow, inserted_event(slot.workflow, serial, reader));
        return;
      }
    }
    if (auto it = by_serial_.find(serial); it != by_serial_.end()) {
      const std::string id = it->second;
      auto& w = workflows_[id];
      slot.workflow = id;
      w.reader = reader;
      if (!w.outcome.empty() && w.outcome != "suspended") {
        say(reader, id + " is " + w.outcome + " on this card");
        return;
      }
      (void)station_->prepare_card(serial);
      Status s = runtime_->post_event(id, inserted_event(id, serial, reader));
      if (s.code() == make_error_code(Errc::kRejected)) {
        // Not waiting for its card (a crash left it running): resume it as it was.
        s = runtime_->resume(id);
        if (s.code() == make_error_code(Errc::kAlreadyExists)) s = Status::ok();
      }
      if (!s.is_ok()) say(reader, id + ": " + s.message());
      w.waiting_for_card = false;
      return;
    }
    std::optional<CardRequest> request;
    if (auto it = explicit_.find(serial); it != explicit_.end()) {
      request = it->second;
      explicit_.erase(it);
    } else if (!next_.empty()) {
      request = next_.front();
      next_.pop_front();
    }
    if (!request) {
      say(reader, "card " + serial + ": no request in the queue for it");
      return;
    }
    request->token_serial = serial;
    if (Status s = station_->save_request(*request); !s.is_ok()) {
      say(reader, request->workflow_id + ": " + s.message());
      return;
    }
    (void)station_->prepare_card(serial);
    WorkflowInfo info;
    info.serial = serial;
    info.reader = reader;
    workflows_[request->workflow_id] = info;
    by_serial_[serial] = request->workflow_id;
    slot.workflow = request->workflow_id;
    Status s = runtime_->start(request->workflow_id, request->machine(),
                               inserted_event(request->workflow_id, serial, reader));
    if (!s.is_ok()) say(reader, request->workflow_id + ": " + s.message());
  }

  void card_removed(const std::string& reader) {
    auto it = readers_.find(reader);
    if (it == readers_.end() || it->second.serial.empty()) return;
    ReaderSlot& slot = it->second;
    const std::string serial = std::exchange(slot.serial, {});
    set_present(serial, {});
    say(reader, "card " + serial + " removed");
    auto w = by_serial_.find(serial);
    if (w == by_serial_.end()) return;
    auto& info = workflows_[w->second];
    if (!info.outcome.empty() && info.outcome != "suspended") return;
    info.waiting_for_card = true;
    slot.workflow = w->second;
    post(w->second, Event{"CardRemoved", {{"reader", reader}}});
  }

  void post(const std::string& id, Event e) {
    const std::string type = e.type;
    Status s = runtime_->post_event(id, std::move(e));
    if (!s.is_ok()) say(workflows_[id].reader, id + ": " + type + " not delivered: " + s.message());
  }

  void on_step(const StepNotice& n) {
    auto& w = workflows_[n.workflow_id];
    w.state = n.state_name;
    if (n.status == storage::WorkflowStatus::kDone) w.outcome = "done";
    if (n.status == storage::WorkflowStatus::kCancelled) w.outcome = "cancelled";
    if (n.status != storage::WorkflowStatus::kSuspended) w.reason.clear();
    say(w.reader, n.workflow_id + "  " + n.event_type + " -> " + n.state_name +
                      (n.status == storage::WorkflowStatus::kRunning
                           ? std::string()
                           : std::string("  [") + storage::to_string(n.status) + "]"));
  }

  void on_end(const WorkflowOutcome& o) {
    auto& w = workflows_[o.workflow_id];
    w.state = o.state_name;
    w.reason = o.outcome == Outcome::kFailed ? o.error.message() : o.reason;
    switch (o.outcome) {
      case Outcome::kDone: w.outcome = "done"; break;
      case Outcome::kCancelled: w.outcome = "cancelled"; break;
      case Outcome::kFailed: w.outcome = "failed"; break;
      case Outcome::kSuspended: w.outcome = "suspended"; break;
    }
    if (o.outcome == Outcome::kSuspended && w.waiting_for_card) {
      say(w.reader, o.workflow_id + "  waiting for its card");
      w.outcome.clear();  // the card back (an outside event) resumes it
      return;
    }
    if (o.outcome != Outcome::kDone) {
      say(w.reader, o.workflow_id + "  " + w.outcome + ": " + w.reason);
    }
    if (o.outcome == Outcome::kSuspended && is_refusal_reason(o.reason)) {
      say(w.reader, o.workflow_id + "  waiting for the operator (a corrected request and "
                                    "`persoflow workflows resume`, or `persoflow workflows "
                                    "cancel`)");
    } else if (o.outcome == Outcome::kSuspended && is_retries_exhausted(o.reason) &&
               reader_of(w.serial) &&
               w.station_retries < options_.station_retries) {
      // Its card is still in: the station tries again itself, the same commands under the same
      // keys (the CMP request resent as saved).
      ++w.station_retries;
      w.retry_due = true;
      w.outcome.clear();
      say(w.reader, o.workflow_id + "  station retry " + std::to_string(w.station_retries) + "/" +
                        std::to_string(options_.station_retries) + " in " +
                        std::to_string(options_.retry_delay.count()) + " ms");
      std::lock_guard lock(mu_);
      retries_.emplace(std::chrono::steady_clock::now() + options_.retry_delay, o.workflow_id);
    }
  }

  void retry(const std::string& id) {
    auto& w = workflows_[id];
    if (!w.retry_due) return;
    w.retry_due = false;
    if (w.waiting_for_card) return;  // pulled meanwhile: its reinsertion resumes it
    if (!reader_of(w.serial)) {
      w.outcome = "suspended";
      return;
    }
    Status s = runtime_->resume(id);
    if (s.code() == make_error_code(Errc::kAlreadyExists)) return;  // resumed meanwhile
    if (!s.is_ok()) {
      say(w.reader, id + ": station retry: " + s.message());
      w.outcome = "suspended";
    }
  }

  std::shared_ptr<Station> station_;
  std::vector<CardRequest> requests_;
  LiveStationOptions options_;
  std::unique_ptr<Runtime> runtime_;

  // Station thread only.
  std::map<std::string, ReaderSlot> readers_;
  std::map<std::string, WorkflowInfo> workflows_;
  std::map<std::string, std::string> by_serial_;  // token serial -> workflow id
  std::map<std::string, CardRequest> explicit_;   // token serial -> request not started yet
  std::deque<CardRequest> next_;                  // "next card" requests not started yet

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Message> inbox_;
  std::multimap<std::chrono::steady_clock::time_point, std::string> retries_;  // due -> workflow
  // Read by executors: token serial -> the actor of the reader the card is in; reader -> actor.
  std::map<std::string, std::shared_ptr<ReaderActor>> card_reader_;
  std::map<std::string, std::shared_ptr<ReaderActor>> reader_actors_;
};

}  // namespace

Result<std::vector<LiveResult>> run_live_station(std::shared_ptr<Station> station,
                                                 std::vector<CardRequest> requests,
                                                 LiveStationOptions options) {
  LiveStation live(std::move(station), std::move(requests), std::move(options));
  return live.run();
}

}  // namespace persoflow::actors
