// The workflow runtime and its workflow actors (see runtime.hpp for the guarantees).
//
// A WorkflowActor owns its workflow's state, its queue of events waiting to be appended and its
// outstanding commands. Everything it does runs on its strand: executor completions, timer
// expiries and journal acknowledgements are posted to it. At most one append per workflow is in
// flight, so its steps are journaled in order; the commands of a committed step run concurrently.
#include <utility>  // before Asio (GCC 12 + Boost 1.74)

#include "persoflow/actors/runtime.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <condition_variable>
#include <deque>
#include <exception>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "persoflow/actors/replay.hpp"
#include "persoflow/common/crash_point.hpp"
#include "persoflow/machines/engine.hpp"

namespace persoflow::actors {

namespace asio = boost::asio;
using machines::Command;
using machines::Event;
using machines::MachineDef;
using machines::State;
using storage::AppendRequest;
using storage::WorkflowStatus;

std::string refusal_reason(const std::string& message, const std::string& command) {
  return std::string(kRefusalPrefix) + message + " [" + command + "]";
}

bool is_refusal_reason(std::string_view suspension_reason) {
  return suspension_reason.substr(0, kRefusalPrefix.size()) == kRefusalPrefix;
}

bool is_retries_exhausted(std::string_view suspension_reason) {
  return suspension_reason.rfind("command ", 0) == 0 &&
         suspension_reason.find(kRetriesExhausted) != std::string_view::npos;
}

const char* to_string(Outcome outcome) {
  switch (outcome) {
    case Outcome::kDone: return "done";
    case Outcome::kSuspended: return "suspended";
    case Outcome::kCancelled: return "cancelled";
    case Outcome::kFailed: return "failed";
  }
  return "?";
}

class WorkflowActor;

// An event from outside the workflow and whom to tell once it is journaled (or why it is not).
struct OutsideEvent {
  Event event;
  std::function<void(Status)> committed;  // may be empty
};

// One command's timer (its attempt's timeout, then the backoff before the next attempt) on the
// runtime's Clock; the handler runs on the actor's strand. Re-arming or destroying it cancels the
// previous wait, whose handler then never runs.
class AttemptTimer {
 public:
  using Strand = asio::strand<asio::io_context::executor_type>;
  AttemptTimer(Clock& clock, Strand strand) : clock_(clock), strand_(std::move(strand)) {}
  AttemptTimer(const AttemptTimer&) = delete;
  AttemptTimer& operator=(const AttemptTimer&) = delete;
  ~AttemptTimer() { cancel(); }

  template <typename Rep, typename Period>
  void arm(std::chrono::duration<Rep, Period> delay, std::function<void()> handler) {
    cancel();
    id_ = clock_.schedule_after(delay, [strand = strand_, handler = std::move(handler)]() mutable {
      asio::post(strand, std::move(handler));
    });
  }
  void cancel() {
    if (id_ != 0) clock_.cancel(std::exchange(id_, 0));
  }

 private:
  Clock& clock_;
  Strand strand_;
  Clock::TimerId id_ = 0;
};

struct Runtime::Impl {
  RuntimeOptions options;  // first: its clock outlives every timer of the members below
  ExecutorRegistry executors;
  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::unique_ptr<asio::thread_pool> pool;
  std::unique_ptr<storage::GroupCommitWriter> writer;

  // The facade's bookkeeping (not actor state): guarded by `mutex`.
  std::mutex mutex;
  std::condition_variable idle;
  std::unique_ptr<storage::Journal> reader;
  std::map<std::string, std::shared_ptr<WorkflowActor>> active;
  std::vector<WorkflowOutcome> outcomes;
  // Outside events between two actors (posted to one that may have ended, or taken from an
  // ended one to resume the workflow): wait() does not return while any is in transit.
  int in_transit = 0;

  void transit_begin() {
    std::lock_guard lock(mutex);
    ++in_transit;
  }
  void transit_end() {
    std::lock_guard lock(mutex);
    --in_transit;
    idle.notify_all();
  }

  const MachineDef* resolve(std::string_view name) const {
    return options.find_machine ? options.find_machine(name) : machines::find_machine(name);
  }

  // Called once by each actor as it ends.
  void finished(WorkflowOutcome outcome) {
    {
      std::lock_guard lock(mutex);
      active.erase(outcome.workflow_id);
      outcomes.push_back(outcome);
    }
    // Outside the lock and no longer active: the callback may start or resume a workflow.
    if (options.on_workflow_end) options.on_workflow_end(outcome);
    std::lock_guard lock(mutex);
    idle.notify_all();
  }

  // Delivers an outside event to the workflow's actor, resuming the workflow first when no actor
  // runs it. The status says whether it was queued; `event.committed` says whether it was
  // journaled. Defined after WorkflowActor.
  Status deliver(const std::string& workflow_id, OutsideEvent event);
  // Resumes a workflow from its records, with an outside event to append first when given.
  Status resume_with(const std::string& workflow_id, std::optional<OutsideEvent> outside);
  // Every journal append goes through here, so run_ready() knows when none is in flight.
  void append(AppendRequest request, storage::GroupCommitWriter::Done done) {
    {
      std::lock_guard lock(appends_mutex);
      ++appends_in_flight;
    }
    writer->append(std::move(request), [this, done = std::move(done)](Status s) {
      done(std::move(s));  // posts the acknowledgement before the append stops counting
      std::lock_guard lock(appends_mutex);
      --appends_in_flight;
      appends_done.notify_all();
    });
  }
  void wait_for_appends() {
    std::unique_lock lock(appends_mutex);
    appends_done.wait(lock, [this] { return appends_in_flight == 0; });
  }
  std::mutex appends_mutex;
  std::condition_variable appends_done;
  std::size_t appends_in_flight = 0;

  // Appends outside any actor and waits for the commit.
  Status append_and_wait(AppendRequest request) {
    std::promise<Status> committed;
    auto future = committed.get_future();
    append(std::move(request), [&committed](Status s) { committed.set_value(std::move(s)); });
    return future.get();
  }
};

class WorkflowActor : public std::enable_shared_from_this<WorkflowActor> {
 public:
  WorkflowActor(Runtime::Impl& rt, const MachineDef& machine, std::string id)
      : rt_(rt), machine_(machine), id_(std::move(id)), strand_(asio::make_strand(rt.io)),
        state_(machines::initial_state(machine)) {}

  void post_start(Event first) {
    asio::post(strand_, [self = shared_from_this(), first = std::move(first)]() mutable {
      self->queue_.push_back(Work{std::move(first), {}, false, WorkflowStatus::kRunning, {}});
      self->pump();
    });
  }

  // Continues from a replayed journal; a suspended workflow first records its resumption. With
  // an outside event, the outstanding commands wait until that event is journaled: if it moves
  // the machine on, they are dropped without having been issued again.
  void post_resume(Replay replay, std::optional<OutsideEvent> outside) {
    asio::post(strand_, [self = shared_from_this(), replay = std::move(replay),
                         outside = std::move(outside)]() mutable {
      self->state_ = std::move(replay.state);
      self->next_step_ = replay.next_step;
      self->status_ = replay.status;
      for (auto& c : replay.outstanding) {
        self->pending_.emplace(c.idempotency_key, Pending(*self->rt_.options.clock, self->strand_, std::move(c.command)));
      }
      if (self->status_ == WorkflowStatus::kSuspended) {
        self->queue_.push_back(self->engine_work(kWorkflowResumed,
                                                 "resumed after: " + replay.suspension_reason,
                                                 WorkflowStatus::kRunning));
      }
      if (outside) {
        self->deferred_issue_ = true;
        self->queue_.push_back(outside_work(std::move(*outside)));
      }
      if (self->queue_.empty()) return self->issue_all();
      self->pump();
    });
  }

  // Queues an outside event; when this actor has already ended, the runtime delivers it again
  // (resuming the workflow from the journal).
  // The caller has called rt_.transit_begin(); this ends the transit once the event is queued
  // here or handed on.
  void post_outside(OutsideEvent outside) {
    asio::post(strand_, [self = shared_from_this(), outside = std::move(outside)]() mutable {
      if (self->finished_) {
        self->redeliver(std::move(outside));
      } else {
        self->queue_.push_back(outside_work(std::move(outside)));
        self->pump();
      }
      self->rt_.transit_end();
    });
  }

  // Records a replay failure (when `record` is set) and ends the workflow as failed.
  void post_fail(Status error, std::optional<AppendRequest> record) {
    asio::post(strand_, [self = shared_from_this(), error = std::move(error),
                         record = std::move(record)]() mutable {
      if (!record) return self->finish(Outcome::kFailed, {}, std::move(error));
      self->appending_ = true;
      self->rt_.append(std::move(*record), [self, error](Status s) {
        asio::post(self->strand_, [self, error, s = std::move(s)] {
          self->appending_ = false;
          self->finish(Outcome::kFailed, {}, s.is_ok() ? error : s.with_context(error.message()));
        });
      });
    });
  }

  void post_cancel(std::string reason, std::function<void(Status)> done) {
    asio::post(strand_, [self = shared_from_this(), reason = std::move(reason),
                         done = std::move(done)]() mutable {
      if (self->finished_) {
        return done(make_status(Errc::kRejected, "workflow " + self->id_ + " has already ended"));
      }
      self->stopping_ = true;
      Work w = self->engine_work(kWorkflowCancelled, std::move(reason), WorkflowStatus::kCancelled);
      w.on_committed = std::move(done);
      self->queue_.push_back(std::move(w));
      self->pump();
    });
  }

  // With every thread of the runtime stopped: drop timers so their handlers release the actor.
  void abandon() {
    for (auto& [key, p] : pending_) p.timer->cancel();
    pending_.clear();
  }

 private:
  struct Work {
    Event event;
    std::string result_of;  // the idempotency key this event answers, or empty
    bool engine = false;    // an engine event: the machine does not see it
    WorkflowStatus engine_status = WorkflowStatus::kRunning;
    std::function<void(Status)> on_committed;
    bool outside = false;  // delivered by Runtime::post_event
  };

  static Work outside_work(OutsideEvent outside) {
    Work w{std::move(outside.event), {}, false, WorkflowStatus::kRunning,
           std::move(outside.committed)};
    w.outside = true;
    return w;
  }

  // Runs on this strand after the actor ended: Impl::deliver takes the facade's lock and reads
  // the journal, which no actor code does while it runs.
  void redeliver(OutsideEvent outside) {
    auto committed = outside.committed;
    Status s = rt_.deliver(id_, std::move(outside));
    if (!s.is_ok() && committed) committed(s);
  }

  struct Pending {
    Pending(Clock& clock, asio::strand<asio::io_context::executor_type> strand, Command c)
        : command(std::move(c)), timer(std::make_unique<AttemptTimer>(clock, std::move(strand))) {}
    Command command;
    std::uint32_t attempts = 0;
    std::uint64_t generation = 0;  // an attempt's completion counts only while this matches
    bool answered = false;         // its result is queued or appended; nothing more to run
    std::unique_ptr<AttemptTimer> timer;  // the attempt's timeout, then the backoff
  };

  Work engine_work(std::string_view type, std::string reason, WorkflowStatus status) {
    return Work{Event{std::string(type), {{"reason", std::move(reason)}}}, {}, true, status, {}};
  }

  void suspend(std::string reason) {
    if (stopping_) return;
    stopping_ = true;
    queue_.push_back(engine_work(kWorkflowSuspended, std::move(reason), WorkflowStatus::kSuspended));
    pump();
  }

  // Appends the next queued event, unless an append is in flight.
  void pump() {
    bool skipped = false;
    while (!appending_ && !finished_ && !queue_.empty()) {
      Work work = std::move(queue_.front());
      queue_.pop_front();
      // The answer of a command an outside event dropped: ignored, never journaled.
      if (!work.result_of.empty() && !pending_.count(work.result_of)) {
        skipped = true;
        continue;
      }
      if (append(std::move(work))) return;
    }
    if (skipped && !appending_ && !finished_ && !stopping_ && pending_.empty()) {
      issue_all();  // only the dropped answers were left: wait for an outside event
    }
  }

  // Starts the append of one event; false when it was refused without an append.
  bool append(Work work) {
    AppendRequest request;
    request.workflow_id = id_;
    request.machine = std::string(machine_.name);
    request.step = next_step_;
    request.event_type = work.event.type;
    request.event = machines::encode(work.event);
    request.result_of = work.result_of;
    State next = state_;
    std::vector<Command> commands;
    const bool acknowledgement = !work.engine && work.event.type == kCommandAcknowledged;
    if (work.engine) {
      request.status = work.engine_status;
    } else if (acknowledgement && work.result_of.empty()) {
      refuse_outside(work, make_status(Errc::kInvalidArgument,
                                       std::string(kCommandAcknowledged) + " answers a command"));
      return false;
    } else if (!acknowledgement) {
      auto transition = machines::step(machine_, state_, work.event);
      if (!transition.is_ok()) {
        if (next_step_ == 0) {
          // Nothing is journaled yet: the workflow never started.
          finish(Outcome::kFailed, {}, transition.status().with_context("first event"));
          return true;
        }
        if (work.result_of.empty()) {
          refuse_outside(work, transition.status());
          return false;
        }
        // An executor answered with an event the machine rejects: not recorded, so on resume the
        // command is outstanding again.
        suspend("the answer " + work.event.type + " to command " + work.result_of +
                " is rejected by the machine: " + transition.status().message());
        return true;
      }
      next = std::move(transition->state);
      commands = std::move(transition->commands);
    }
    request.state_name = next.name;
    request.state = machines::encode(next);
    const bool drops = !work.engine && drops_outstanding(request, state_.name);
    if (!work.engine) {
      std::size_t outstanding = drops ? 0 : pending_.size() - (work.result_of.empty() ? 0 : 1);
      outstanding += commands.size();
      request.status = machines::is_terminal(machine_, next.name) && outstanding == 0
                           ? WorkflowStatus::kDone
                           : WorkflowStatus::kRunning;
    }
    for (std::uint32_t i = 0; i < commands.size(); ++i) {
      request.commands.push_back({i, idempotency_key(id_, next_step_, i), commands[i].type,
                                  machines::encode(commands[i])});
    }
    WorkflowStatus status = request.status;
    appending_ = true;
    rt_.append(std::move(request), [self = shared_from_this(), work = std::move(work),
                                            next = std::move(next), commands = std::move(commands),
                                            status, drops](Status s) mutable {
      asio::post(self->strand_, [self, work = std::move(work), next = std::move(next),
                                 commands = std::move(commands), status, drops,
                                 s = std::move(s)]() mutable {
        self->committed(std::move(s), std::move(work), std::move(next), std::move(commands), status,
                        drops);
      });
    });
    return true;
  }

  // An outside event the state does not take: not journaled; the caller hears why, and the
  // workflow goes on as it was.
  void refuse_outside(Work& work, Status why) {
    if (work.on_committed) {
      work.on_committed(make_status(Errc::kRejected, "workflow " + id_ + ": " + why.message()));
    }
    if (work.outside && deferred_issue_) {
      deferred_issue_ = false;
      issue_all();  // the replayed commands it held back
    } else if (pending_.empty() && queue_.empty()) {
      issue_all();  // nothing left to do but wait: suspended as waiting for an outside event
    }
  }

  void committed(Status s, Work work, State next, std::vector<Command> commands,
                 WorkflowStatus status, bool drops) {
    appending_ = false;
    if (work.on_committed) work.on_committed(s);
    if (!s.is_ok()) {
      return finish(Outcome::kFailed, {},
                    s.with_context("appending step " + std::to_string(next_step_) + " of workflow " + id_));
    }
    const std::uint64_t step = next_step_++;
    state_ = std::move(next);
    status_ = status;
    if (rt_.options.on_step) {
      rt_.options.on_step(StepNotice{id_, step, work.event.type, state_.name, status_});
    }
    if (drops) {
      // The machine left the state these commands belonged to (replay drops them alike).
      for (auto& [key, p] : pending_) p.timer->cancel();
      pending_.clear();
    }
    if (!work.result_of.empty()) pending_.erase(work.result_of);
    if (work.outside && deferred_issue_) {
      // A resumed workflow's outstanding commands waited for this event; it kept them.
      deferred_issue_ = false;
      if (!stopping_) {
        for (auto& [key, p] : pending_) {
          if (!p.answered) issue(key);
        }
      }
    }
    for (std::uint32_t i = 0; i < commands.size(); ++i) {
      auto key = idempotency_key(id_, step, i);
      pending_.emplace(key, Pending(*rt_.options.clock, strand_, std::move(commands[i])));
      if (!stopping_) issue(key);
    }
    if (work.engine) {
      const std::string& reason = work.event.fields["reason"];
      if (status == WorkflowStatus::kSuspended) return finish(Outcome::kSuspended, reason, {});
      if (status == WorkflowStatus::kCancelled) return finish(Outcome::kCancelled, reason, {});
      if (!deferred_issue_) issue_all();  // resumed
    }
    if (status_ == WorkflowStatus::kDone) return finish(Outcome::kDone, {}, {});
    if (pending_.empty() && queue_.empty() && !stopping_) {
      // Nothing outstanding and not terminal: only an event from outside could move it on.
      return suspend("state " + state_.name +
                     " is not terminal and no command is outstanding: waiting for an outside event");
    }
    pump();
  }

  void issue_all() {
    if (pending_.empty() && queue_.empty() && machines::is_terminal(machine_, state_.name)) {
      // Records never leave a terminal state with nothing outstanding "running": the journal
      // and the machine disagree about which states are terminal.
      return finish(Outcome::kFailed, {},
                    make_status(Errc::kCorrupt, "workflow " + id_ + " is running in terminal state " +
                                                    state_.name + " with no command outstanding"));
    }
    if (pending_.empty() && queue_.empty()) {
      return suspend("state " + state_.name +
                     " is not terminal and no command is outstanding: waiting for an outside event");
    }
    for (auto& [key, p] : pending_) {
      if (!p.answered) issue(key);
    }
  }

  // Runs one attempt of an outstanding command.
  void issue(const std::string& key) {
    auto it = pending_.find(key);
    if (stopping_ || finished_ || it == pending_.end()) return;
    Pending& p = it->second;
    const Executor* executor = rt_.executors.find(p.command.type);
    if (executor == nullptr) {
      return suspend("no executor is registered for command " + p.command.type + " (" + key + ")");
    }
    if (p.attempts == 0) crash_point("actors.before_command");
    ++p.attempts;
    const std::uint64_t generation = ++p.generation;
    auto self = shared_from_this();
    if (executor->policy.timeout.count() > 0) {
      p.timer->arm(executor->policy.timeout,
                   [self, key, generation, timeout = executor->policy.timeout] {
                     self->attempt_failed(
                         key, generation,
                         make_status(Errc::kTimeout,
                                     "no answer within " + std::to_string(timeout.count()) + " ms"));
                   });
    }
    Completion done = [self, key, generation](Result<Event> result) {
      asio::post(self->strand_, [self, key, generation, result = std::move(result)]() mutable {
        self->on_result(key, generation, std::move(result));
      });
    };
    CommandContext context{id_, key, p.attempts};
    auto job = [executor, command = p.command, context = std::move(context), done]() {
      try {
        executor->run(command, context, done);
      } catch (const std::exception& e) {
        done(make_status(Errc::kInternal, std::string("executor threw: ") + e.what()));
      } catch (...) {
        done(make_status(Errc::kInternal, "executor threw"));
      }
    };
    if (executor->blocking) {
      asio::post(*rt_.pool, std::move(job));
    } else {
      asio::post(rt_.io, std::move(job));
    }
  }

  void on_result(const std::string& key, std::uint64_t generation, Result<Event> result) {
    auto it = pending_.find(key);
    if (finished_ || stopping_ || it == pending_.end()) return;
    Pending& p = it->second;
    if (p.generation != generation || p.answered) return;  // a late or repeated completion
    if (!result.is_ok()) return attempt_failed(key, generation, result.status());
    p.timer->cancel();
    crash_point("actors.after_command");
    p.answered = true;
    queue_.push_back(Work{std::move(result).value(), key, false, WorkflowStatus::kRunning, {}});
    pump();
  }

  void attempt_failed(const std::string& key, std::uint64_t generation, Status why) {
    auto it = pending_.find(key);
    if (finished_ || stopping_ || it == pending_.end()) return;
    Pending& p = it->second;
    if (p.generation != generation || p.answered) return;
    const std::uint64_t next_generation = ++p.generation;  // the failed attempt's answer is void
    const Executor* executor = rt_.executors.find(p.command.type);
    if (is_refusal(why)) {
      // Asking again cannot help: the workflow waits for a person, its command still outstanding
      // (a corrected request and a resume answer it; `workflows cancel` ends it).
      return suspend(refusal_reason(why.message(), p.command.type + " (" + key + ")"));
    }
    if (p.attempts >= executor->policy.attempts) {
      return suspend("command " + p.command.type + " (" + key + ")" +
                     std::string(kRetriesExhausted) + std::to_string(p.attempts) +
                     " attempt(s): " + why.message());
    }
    p.timer->arm(executor->policy.backoff(p.attempts + 1),
                 [self = shared_from_this(), key, next_generation] {
                   auto it = self->pending_.find(key);
                   if (it == self->pending_.end() || it->second.generation != next_generation) return;
                   self->issue(key);
                 });
  }

  void finish(Outcome outcome, std::string reason, Status error) {
    if (finished_) return;
    finished_ = true;
    for (auto& [key, p] : pending_) p.timer->cancel();
    std::vector<OutsideEvent> undelivered;
    for (auto& w : queue_) {
      if (w.outside && outcome == Outcome::kSuspended) {
        // Queued behind a suspension: it resumes the workflow once this actor is gone.
        undelivered.push_back(OutsideEvent{std::move(w.event), std::move(w.on_committed)});
      } else if (w.on_committed) {
        w.on_committed(make_status(Errc::kRejected, "workflow " + id_ + " ended (" +
                                                        to_string(outcome) + ") first"));
      }
    }
    queue_.clear();
    if (!undelivered.empty()) rt_.transit_begin();
    rt_.finished(WorkflowOutcome{id_, std::string(machine_.name), state_.name, outcome,
                                 std::move(reason), std::move(error)});
    for (auto& o : undelivered) redeliver(std::move(o));
    if (!undelivered.empty()) rt_.transit_end();
  }

  Runtime::Impl& rt_;
  const MachineDef& machine_;
  const std::string id_;
  asio::strand<asio::io_context::executor_type> strand_;
  State state_;
  std::uint64_t next_step_ = 0;
  WorkflowStatus status_ = WorkflowStatus::kRunning;
  std::map<std::string, Pending> pending_;  // journaled commands without an appended result
  std::deque<Work> queue_;                  // events waiting for their append
  bool appending_ = false;
  bool stopping_ = false;  // a suspension or cancellation is queued: run nothing more
  bool finished_ = false;
  // Resumed with an outside event: the replayed outstanding commands are issued only once that
  // event is journaled and kept them.
  bool deferred_issue_ = false;
};

Runtime::Runtime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Runtime>> Runtime::open(const std::string& journal_path,
                                               ExecutorRegistry executors, RuntimeOptions options) {
  storage::OpenOptions journal_options;
  journal_options.wall_clock_ms = options.journal_wall_clock_ms;
  journal_options.summary_every = options.journal_summary_every;
  PF_ASSIGN_OR_RETURN(auto journal, storage::Journal::open(journal_path, journal_options));
  PF_ASSIGN_OR_RETURN(auto reader,
                      storage::Journal::open(journal_path, {.create_if_missing = false, .read_only = true}));
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  if (!impl->options.clock) impl->options.clock = make_steady_clock();
  impl->executors = std::move(executors);
  impl->reader = std::move(reader);
  impl->writer = storage::GroupCommitWriter::start(std::move(journal), impl->options.max_batch);
  impl->pool = std::make_unique<asio::thread_pool>(std::max(1u, impl->options.blocking_threads));
  impl->work.emplace(impl->io.get_executor());
  unsigned threads = impl->options.io_threads;
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  if (impl->options.caller_driven) threads = 0;
  for (unsigned i = 0; i < threads; ++i) {
    impl->threads.emplace_back([io = &impl->io] { io->run(); });
  }
  return std::unique_ptr<Runtime>(new Runtime(std::move(impl)));
}

Runtime::~Runtime() {
  impl_->work.reset();
  impl_->io.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->pool->stop();
  impl_->pool->join();
  impl_->writer->stop();
  std::lock_guard lock(impl_->mutex);
  for (auto& [id, actor] : impl_->active) actor->abandon();
  impl_->active.clear();
}

Status Runtime::start(const std::string& workflow_id, std::string_view machine_name,
                      machines::Event first) {
  const MachineDef* machine = impl_->resolve(machine_name);
  if (machine == nullptr) {
    return make_status(Errc::kNotFound, "unknown machine '" + std::string(machine_name) + "'");
  }
  if (workflow_id.empty()) return make_status(Errc::kInvalidArgument, "empty workflow id");
  std::shared_ptr<WorkflowActor> actor;
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->active.count(workflow_id)) {
      return make_status(Errc::kAlreadyExists, "workflow " + workflow_id + " is already running");
    }
    PF_ASSIGN_OR_RETURN(auto existing, impl_->reader->workflow(workflow_id));
    if (existing) {
      return make_status(Errc::kAlreadyExists, "workflow " + workflow_id + " is already in journal " +
                                                   impl_->reader->path());
    }
    actor = std::make_shared<WorkflowActor>(*impl_, *machine, workflow_id);
    impl_->active.emplace(workflow_id, actor);
  }
  actor->post_start(std::move(first));
  return Status::ok();
}

Status Runtime::Impl::resume_with(const std::string& workflow_id,
                                  std::optional<OutsideEvent> outside) {
  std::shared_ptr<WorkflowActor> actor;
  Result<Replay> replayed = make_status(Errc::kInternal, "not replayed");
  std::optional<AppendRequest> nondeterminism_record;
  {
    std::lock_guard lock(mutex);
    if (active.count(workflow_id)) {
      return make_status(Errc::kAlreadyExists, "workflow " + workflow_id + " is already running");
    }
    PF_ASSIGN_OR_RETURN(auto records, reader->records(workflow_id));
    if (records.empty()) {
      return make_status(Errc::kNotFound, "no workflow '" + workflow_id + "' in journal " +
                                              reader->path());
    }
    const auto& last = records.back();
    if (last.body.status == WorkflowStatus::kDone || last.body.status == WorkflowStatus::kCancelled) {
      return make_status(Errc::kRejected, "workflow " + workflow_id + " is " +
                                              storage::to_string(last.body.status) +
                                              "; there is nothing to resume");
    }
    const MachineDef* machine = resolve(last.body.machine);
    if (machine == nullptr) {
      return make_status(Errc::kNotFound, "workflow " + workflow_id + " runs machine '" +
                                              last.body.machine + "', which this program does not have");
    }
    replayed = replay(*machine, records);
    if (replayed.is_ok() && outside) {
      // An event the state does not take leaves the workflow as it is, nothing journaled.
      auto accepted = machines::step(*machine, replayed->state, outside->event);
      if (!accepted.is_ok()) {
        return make_status(Errc::kRejected, "workflow " + workflow_id + ": " +
                                                accepted.status().message());
      }
    }
    if (!replayed.is_ok() && replayed.status().code() == make_error_code(Errc::kNondeterminism) &&
        last.body.event_type != kWorkflowNondeterministic) {
      nondeterminism_record = engine_record(last, kWorkflowNondeterministic,
                                            replayed.status().message(), WorkflowStatus::kSuspended);
    }
    actor = std::make_shared<WorkflowActor>(*this, *machine, workflow_id);
    active.emplace(workflow_id, actor);
  }
  if (!replayed.is_ok()) {
    if (outside && outside->committed) outside->committed(replayed.status());
    actor->post_fail(replayed.status(), std::move(nondeterminism_record));
  } else {
    actor->post_resume(std::move(replayed).value(), std::move(outside));
  }
  return Status::ok();
}

Status Runtime::resume(const std::string& workflow_id) {
  return impl_->resume_with(workflow_id, std::nullopt);
}

Status Runtime::Impl::deliver(const std::string& workflow_id, OutsideEvent outside) {
  // Each round either hands the event to a running actor or resumes the workflow with it; a
  // round loses only to a concurrent resume, whose actor the next round finds.
  for (int round = 0; round < 8; ++round) {
    std::shared_ptr<WorkflowActor> actor;
    {
      std::lock_guard lock(mutex);
      if (auto it = active.find(workflow_id); it != active.end()) actor = it->second;
    }
    if (actor) {
      transit_begin();
      actor->post_outside(std::move(outside));
      return Status::ok();
    }
    Status s = resume_with(workflow_id, outside);
    if (s.code() != make_error_code(Errc::kAlreadyExists)) return s;
  }
  return make_status(Errc::kUnavailable,
                     "workflow " + workflow_id + " keeps starting and ending; try again");
}

namespace {

Status check_outside_event(const machines::Event& event) {
  if (event.type.empty()) return make_status(Errc::kInvalidArgument, "an event needs a type");
  if (is_engine_event(event.type) || event.type == kCommandAcknowledged) {
    return make_status(Errc::kInvalidArgument,
                       event.type + " is the engine's own event; it cannot be posted");
  }
  return Status::ok();
}

}  // namespace

Status Runtime::post_event(const std::string& workflow_id, machines::Event event) {
  PF_RETURN_IF_ERROR(check_outside_event(event));
  return impl_->deliver(workflow_id, OutsideEvent{std::move(event), {}});
}

Status Runtime::post_event_and_wait(const std::string& workflow_id, machines::Event event) {
  PF_RETURN_IF_ERROR(check_outside_event(event));
  auto journaled = std::make_shared<std::promise<Status>>();
  auto future = journaled->get_future();
  auto once = std::make_shared<std::once_flag>();
  PF_RETURN_IF_ERROR(impl_->deliver(
      workflow_id, OutsideEvent{std::move(event), [journaled, once](Status s) {
                                  std::call_once(*once, [&] { journaled->set_value(std::move(s)); });
                                }}));
  return future.get();
}

Result<std::vector<std::string>> Runtime::resume_all(bool include_suspended) {
  std::vector<storage::WorkflowSummary> unfinished;
  {
    std::lock_guard lock(impl_->mutex);
    PF_ASSIGN_OR_RETURN(unfinished, impl_->reader->unfinished());
  }
  std::vector<std::string> ids;
  for (const auto& w : unfinished) {
    if (w.status == WorkflowStatus::kSuspended && !include_suspended) continue;
    Status s = resume(w.workflow_id);
    if (s.code() == make_error_code(Errc::kAlreadyExists)) continue;
    PF_RETURN_IF_ERROR(s);
    ids.push_back(w.workflow_id);
  }
  return ids;
}

Status Runtime::cancel(const std::string& workflow_id, std::string reason) {
  std::shared_ptr<WorkflowActor> actor;
  std::vector<storage::JournalRecord> records;
  {
    std::lock_guard lock(impl_->mutex);
    if (auto it = impl_->active.find(workflow_id); it != impl_->active.end()) {
      actor = it->second;
    } else {
      PF_ASSIGN_OR_RETURN(records, impl_->reader->records(workflow_id));
      if (records.empty()) {
        return make_status(Errc::kNotFound, "no workflow '" + workflow_id + "' in journal " +
                                                impl_->reader->path());
      }
    }
  }
  if (actor) {
    std::promise<Status> cancelled;
    auto future = cancelled.get_future();
    actor->post_cancel(std::move(reason), [&cancelled](Status s) { cancelled.set_value(std::move(s)); });
    return future.get();
  }
  PF_ASSIGN_OR_RETURN(auto request, cancel_record(records, std::move(reason)));
  return impl_->append_and_wait(std::move(request));
}

std::size_t Runtime::run_ready(bool one_append_at_a_time) {
  std::size_t ran = 0;
  for (;;) {
    const std::size_t n = one_append_at_a_time ? impl_->io.poll_one() : impl_->io.poll();
    // The appends of what ran are committed and their acknowledgements posted before anything
    // else runs; nothing ready after a wait with nothing in flight means the runtime is idle.
    impl_->wait_for_appends();
    if (n == 0) return ran;
    ran += n;
  }
}

std::size_t Runtime::active_workflows() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->active.size();
}

std::vector<WorkflowOutcome> Runtime::wait() {
  std::unique_lock lock(impl_->mutex);
  impl_->idle.wait(lock, [this] { return impl_->active.empty() && impl_->in_transit == 0; });
  return std::exchange(impl_->outcomes, {});
}

}  // namespace persoflow::actors
