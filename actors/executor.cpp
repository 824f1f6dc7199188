// ExecutorRegistry, the backoff of RetryPolicy, and the per-machine executor sets of this binary.
#include "persoflow/actors/executor.hpp"

#include <algorithm>
#include <string>
#include <system_error>

namespace persoflow::actors {

std::chrono::milliseconds RetryPolicy::backoff(std::uint32_t next_attempt) const {
  // initial_delay before attempt 2, doubled for each later attempt, capped at max_delay.
  std::chrono::milliseconds delay = initial_delay;
  for (std::uint32_t a = 2; a < next_attempt && delay < max_delay; ++a) delay *= 2;
  return std::min(delay, max_delay);
}

namespace {

// Refusals have a category of their own, so no library code can be taken for one.
class RefusalCategory : public std::error_category {
 public:
  const char* name() const noexcept override { return "refusal"; }
  std::string message(int) const override { return "refused"; }
};

const std::error_category& refusal_category() {
  static const RefusalCategory category;
  return category;
}

}  // namespace

Status refusal(std::string message) {
  return Status(std::error_code(1, refusal_category()), std::move(message));
}

bool is_refusal(const Status& status) { return status.code().category() == refusal_category(); }

machines::Event officer_password_refused(const Status& why) {
  return machines::Event{"OfficerPinRejected",
                         {{"tries_left", "0"},
                          {"reason", "the officer's credential refused the password in its file (" +
                                         why.message() + "): correct the file and start again"}}};
}

Executor blocking_executor(
    std::function<Result<machines::Event>(const machines::Command&, const CommandContext&)> fn,
    RetryPolicy policy) {
  Executor e;
  e.blocking = true;
  e.policy = policy;
  e.run = [fn = std::move(fn)](const machines::Command& command, const CommandContext& context,
                               Completion done) { done(fn(command, context)); };
  return e;
}

void ExecutorRegistry::add(std::string command_type, Executor executor) {
  PF_CHECK(executor.run != nullptr, "an executor needs a run function");
  PF_CHECK(executor.policy.attempts >= 1, "a retry policy needs at least one attempt");
  bool inserted = executors_.emplace(std::move(command_type), std::move(executor)).second;
  PF_CHECK(inserted, "two executors registered for one command type");
}

const Executor* ExecutorRegistry::find(std::string_view command_type) const {
  auto it = executors_.find(command_type);
  return it == executors_.end() ? nullptr : &it->second;
}

std::vector<std::string> ExecutorRegistry::command_types() const {
  std::vector<std::string> types;
  for (const auto& [type, executor] : executors_) types.push_back(type);
  return types;
}

namespace {
std::map<std::string, ExecutorInstaller, std::less<>>& executor_sets() {
  static std::map<std::string, ExecutorInstaller, std::less<>> sets;
  return sets;
}
}  // namespace

ExecutorSetRegistrar::ExecutorSetRegistrar(const char* machine, ExecutorInstaller install) {
  bool inserted = executor_sets().emplace(machine, install).second;
  PF_CHECK(inserted, "two executor sets registered for one machine");
}

ExecutorInstaller find_executor_set(std::string_view machine) {
  auto it = executor_sets().find(machine);
  return it == executor_sets().end() ? nullptr : it->second;
}

std::vector<std::string> machines_with_executors() {
  std::vector<std::string> names;
  for (const auto& [name, install] : executor_sets()) names.push_back(name);
  return names;
}

}  // namespace persoflow::actors
