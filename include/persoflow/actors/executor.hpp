// Executors: what carries out a machine's commands, chosen by command type.
//
// An executor gets the Command, its idempotency key ("<workflow id>/<step>/<index>") and the
// workflow id, and completes exactly once with the Event that reports the outcome, or with a
// Status (a failure the runtime retries with backoff, then suspends the workflow on). The same
// command may be executed more than once with the same key (a retry after a timeout, a resume
// after a crash): an executor must be idempotent or detect the repeat by the key (DESIGN.md,
// "The persistence contract").
//
// A blocking executor (a PKCS#11 key generation, a SQLite write) runs on the runtime's separate
// blocking pool and may block; a non-blocking one is started on the io_context and must return at
// once, completing later from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "persoflow/common/status.hpp"
#include "persoflow/machines/machine.hpp"

namespace persoflow::actors {

// Per executor: how many attempts a command gets, how long each may take, and the backoff between
// attempts (initial_delay, doubled after each failure, capped at max_delay).
struct RetryPolicy {
  std::uint32_t attempts = 3;                    // >= 1; 1 = no retry
  std::chrono::milliseconds timeout{30'000};     // per attempt; 0 = none
  std::chrono::milliseconds initial_delay{100};  // before the 2nd attempt
  std::chrono::milliseconds max_delay{10'000};

  // The wait before attempt number `next_attempt` (2, 3, ...).
  std::chrono::milliseconds backoff(std::uint32_t next_attempt) const;
};

struct CommandContext {
  std::string workflow_id;
  std::string idempotency_key;
  std::uint32_t attempt = 1;  // 1 for the first attempt in this process, then 2, 3, ...
};

// Called exactly once per execution, from any thread. A call after the attempt timed out is
// ignored by the runtime.
using Completion = std::function<void(Result<machines::Event>)>;

struct Executor {
  std::function<void(const machines::Command&, const CommandContext&, Completion)> run;
  bool blocking = false;
  RetryPolicy policy;
};

// A refusal: a request a person must correct (an unknown procedure, a key action naming no key).
// The same request again cannot succeed, so the runtime does not retry it (runtime.hpp).
Status refusal(std::string message);
bool is_refusal(const Status& status);

// SignWithOfficer's answer when the officer's PKCS#12 refused the password in its file: a file
// has no retry counter and does not get better by asking again, so the workflow fails, saying so
// (OfficerPinRejected with no tries left and the reason).
machines::Event officer_password_refused(const Status& why);

// A blocking executor from a function that returns its outcome.
Executor blocking_executor(
    std::function<Result<machines::Event>(const machines::Command&, const CommandContext&)> fn,
    RetryPolicy policy = {});

// Command type -> executor. Filled before the runtime starts; read-only afterwards.
class ExecutorRegistry {
 public:
  // A second executor for the same command type is a bug and aborts.
  void add(std::string command_type, Executor executor);
  const Executor* find(std::string_view command_type) const;
  bool empty() const { return executors_.empty(); }
  std::vector<std::string> command_types() const;

 private:
  std::map<std::string, Executor, std::less<>> executors_;
};

// The executors this binary carries for a machine, so `persoflow workflows resume` can run the
// machines whose executors are linked in. Registered from the executors' own file with
// PF_REGISTER_EXECUTORS(ident, "machine-name", fn) where fn(ExecutorRegistry&) adds them.
using ExecutorInstaller = void (*)(ExecutorRegistry&);
struct ExecutorSetRegistrar {
  ExecutorSetRegistrar(const char* machine, ExecutorInstaller install);
};
// nullptr when no executors for the machine are registered in this binary.
ExecutorInstaller find_executor_set(std::string_view machine);
std::vector<std::string> machines_with_executors();

}  // namespace persoflow::actors

#define PF_REGISTER_EXECUTORS(ident, machine, fn) \
  static const ::persoflow::actors::ExecutorSetRegistrar pf_executors_##ident(machine, fn)
