// The engine tests' machine, `actors-test-order`, and executors that record every execution in a
// separate SQLite "effects" file, keyed by idempotency key.
//
//   Idle --OrderPlaced--> Reserving            / Reserve, Quote (run concurrently)
//   Reserving --Reserved|Quoted--> Reserving   (the other answer still missing)
//   Reserving --Reserved|Quoted--> Charging    (both in) / Charge{amount, reservation}
//   Charging --Charged--> Shipping             / Ship{reservation, receipt}
//   Shipping --Shipped--> Delivered            (terminal)
// and outside events (Runtime::post_event):
//   Reserving --OrderHeld--> OnHold            (Reserve / Quote still outstanding are dropped)
//   OnHold --OrderReleased--> Reserving        / Reserve and / or Quote, whichever is missing
//   Charging --OrderWithdrawn--> Withdrawn     (terminal) / NotifyOperator, acknowledged
//   Shipping --AddressChanged--> Shipping      (same state: Ship stays outstanding)
//
// The executors check-then-act in one SQLite transaction: a command seen before (same key) is
// not executed again but answered from the stored result and counted as a detected repeat, so
// the crash test can tell "repeat detected" from "executed twice" (executions > 1).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "persoflow/actors/executor.hpp"
#include "persoflow/common/status.hpp"
#include "persoflow/machines/machine.hpp"

struct sqlite3;

namespace persoflow::actors::test {

inline constexpr std::string_view kOrderMachine = "actors-test-order";
const machines::MachineDef& order_machine();
// Same name, but Charge carries an extra field: replaying a journal of order_machine() with it
// must stop as nondeterminism.
const machines::MachineDef& altered_order_machine();

struct EffectRow {
  std::string key;
  std::string type;
  std::string result;
  int executions = 0;  // times the effect itself ran (must stay 1)
  int repeats = 0;     // times a repeat was detected and answered from the stored result
};

class EffectsDb {
 public:
  static std::unique_ptr<EffectsDb> open(const std::string& path);
  ~EffectsDb();
  // In one IMMEDIATE transaction: a stored key counts a repeat and returns the stored result;
  // otherwise the effect "runs" (its result is stored with executions = 1).
  Result<std::string> apply(const std::string& key, const std::string& type,
                            const std::string& result);
  std::vector<EffectRow> rows();

 private:
  explicit EffectsDb(sqlite3* db) : db_(db) {}
  std::mutex mutex_;  // one connection shared by the executors' threads
  sqlite3* db_;
};

// Faults the unit tests inject, per command type (thread-safe).
struct Faults {
  std::mutex mutex;
  std::map<std::string, int> fail_first;  // the first N attempts of each key fail (kUnavailable)
  std::map<std::string, int> hang_first;  // the first N attempts of each key never answer
  // Then the next N attempts of each key are refused (refusal(): a person must correct them).
  std::map<std::string, int> refuse_first;
  // After the hangs and failures: the next N attempts run the effect, then never answer (an
  // answer lost before it was journaled).
  std::map<std::string, int> lose_answer_first;
  // Called (on the executor's thread) when an attempt hangs or loses its answer, so a test can
  // await that moment instead of sleeping.
  std::function<void(const std::string& key)> on_hang;
  // A blocking command of this type runs its effect, calls on_hang, then waits for the future
  // before answering: a late answer, delivered when the test says.
  std::map<std::string, std::shared_future<void>> gates;
  std::map<std::string, std::vector<std::chrono::steady_clock::time_point>> attempts;  // by key
  std::map<std::string, int> seen;  // attempts by key
};

struct OrderEnv {
  std::unique_ptr<EffectsDb> effects;
  Faults faults;
  RetryPolicy policy;
  std::atomic<int> executions{0};
};

// Reserve, Charge, Ship and NotifyOperator are blocking executors; Quote is non-blocking.
ExecutorRegistry order_executors(std::shared_ptr<OrderEnv> env);

}  // namespace persoflow::actors::test
