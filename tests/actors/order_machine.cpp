// The engine tests' order machine and its effect-recording executors (see order_machine.hpp).
#include "order_machine.hpp"

#include <sqlite3.h>

#include <optional>
#include <stdexcept>

#include "persoflow/actors/replay.hpp"
#include "persoflow/machines/engine.hpp"

namespace persoflow::actors::test {

using machines::Command;
using machines::Event;
using machines::Row;
using machines::State;
using machines::Transition;

namespace {

Result<std::string> field(const Event& e, const char* name) {
  auto it = e.fields.find(name);
  if (it == e.fields.end() || it->second.empty()) {
    return make_status(Errc::kInvalidArgument, e.type + " needs '" + name + "'");
  }
  return it->second;
}

Result<Transition> on_placed(const State& from, const Event& e) {
  PF_ASSIGN_OR_RETURN(auto item, field(e, "item"));
  State to{"Reserving", from.data};
  to.data["item"] = item;
  return Transition{to, {Command{"Reserve", {{"item", item}}}, Command{"Quote", {{"item", item}}}}};
}

template <bool kAltered>
Result<Transition> reserving_answer(const State& from, const Event& e) {
  State to{"Reserving", from.data};
  if (e.type == "Reserved") {
    PF_ASSIGN_OR_RETURN(to.data["reservation"], field(e, "reservation"));
  } else {
    PF_ASSIGN_OR_RETURN(to.data["price"], field(e, "price"));
  }
  if (!to.data.count("reservation") || !to.data.count("price")) return Transition{to, {}};
  to.name = "Charging";
  Command charge{"Charge", {{"amount", to.data["price"]}, {"reservation", to.data["reservation"]}}};
  if (kAltered) charge.fields["currency"] = "EUR";
  return Transition{to, {charge}};
}

Result<Transition> on_charged(const State& from, const Event& e) {
  State to{"Shipping", from.data};
  PF_ASSIGN_OR_RETURN(to.data["receipt"], field(e, "receipt"));
  return Transition{
      to, {Command{"Ship", {{"receipt", to.data["receipt"]}, {"reservation", to.data["reservation"]}}}}};
}

Result<Transition> on_shipped(const State& from, const Event& e) {
  State to{"Delivered", from.data};
  PF_ASSIGN_OR_RETURN(to.data["tracking"], field(e, "tracking"));
  return Transition{to, {}};
}

// Outside events: a hold drops the Reserve/Quote still outstanding, a release asks again for what
// is missing; a withdrawal ends the order with a NotifyOperator (answered by CommandAcknowledged);
// a changed address keeps the state, so Ship stays outstanding.
Result<Transition> on_held(const State& from, const Event&) {
  return Transition{State{"OnHold", from.data}, {}};
}

Result<Transition> on_released(const State& from, const Event&) {
  State to{"Reserving", from.data};
  std::vector<Command> again;
  const std::string& item = from.data.at("item");
  if (!from.data.count("reservation")) again.push_back(Command{"Reserve", {{"item", item}}});
  if (!from.data.count("price")) again.push_back(Command{"Quote", {{"item", item}}});
  return Transition{to, again};
}

Result<Transition> on_withdrawn(const State& from, const Event& e) {
  State to{"Withdrawn", from.data};
  PF_ASSIGN_OR_RETURN(to.data["reason"], field(e, "reason"));
  return Transition{to, {Command{"NotifyOperator", {{"reason", to.data["reason"]}}}}};
}

Result<Transition> on_address_changed(const State& from, const Event& e) {
  State to{"Shipping", from.data};
  PF_ASSIGN_OR_RETURN(to.data["address"], field(e, "address"));
  return Transition{to, {}};
}

constexpr std::string_view kTerminal[] = {"Delivered", "Withdrawn"};

template <bool kAltered>
constexpr Row kRows[] = {
    {"Idle", "OrderPlaced", "Reserving", on_placed, "records item / Reserve, Quote"},
    {"Reserving", "Reserved", "Reserving", reserving_answer<kAltered>, "no price yet"},
    {"Reserving", "Reserved", "Charging", reserving_answer<kAltered>, "price known / Charge"},
    {"Reserving", "Quoted", "Reserving", reserving_answer<kAltered>, "no reservation yet"},
    {"Reserving", "Quoted", "Charging", reserving_answer<kAltered>, "reserved / Charge"},
    {"Charging", "Charged", "Shipping", on_charged, "records receipt / Ship"},
    {"Shipping", "Shipped", "Delivered", on_shipped, "records tracking"},
    {"Reserving", "OrderHeld", "OnHold", on_held, "outside: Reserve / Quote dropped"},
    {"OnHold", "OrderReleased", "Reserving", on_released, "Reserve / Quote what is missing"},
    {"Charging", "OrderWithdrawn", "Withdrawn", on_withdrawn, "Charge dropped / NotifyOperator"},
    {"Shipping", "AddressChanged", "Shipping", on_address_changed, "Ship kept"},
};

constexpr machines::MachineDef kOrder{kOrderMachine, "engine test: reserve, quote, charge, ship",
                                      "Idle", kTerminal, kRows<false>};
constexpr machines::MachineDef kAlteredOrder{kOrderMachine, "engine test: Charge changed", "Idle",
                                             kTerminal, kRows<true>};
PF_REGISTER_MACHINE(actors_test_order, kOrder);

Status sqlite_error(sqlite3* db, const std::string& what) {
  return make_status(Errc::kUnavailable, what + ": " + sqlite3_errmsg(db));
}

}  // namespace

const machines::MachineDef& order_machine() { return kOrder; }
const machines::MachineDef& altered_order_machine() { return kAlteredOrder; }

std::unique_ptr<EffectsDb> EffectsDb::open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    throw std::runtime_error("opening effects db " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db, 5000);
  // WAL survives a SIGKILL of the process with synchronous=NORMAL; only a power cut could lose
  // the last transactions, which the crash test does not simulate.
  const char* schema =
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
      "CREATE TABLE IF NOT EXISTS effects(key TEXT PRIMARY KEY, type TEXT NOT NULL,"
      " result TEXT NOT NULL, executions INTEGER NOT NULL, repeats INTEGER NOT NULL DEFAULT 0);";
  char* err = nullptr;
  if (sqlite3_exec(db, schema, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "?";
    sqlite3_free(err);
    sqlite3_close(db);
    throw std::runtime_error("creating effects table: " + msg);
  }
  return std::unique_ptr<EffectsDb>(new EffectsDb(db));
}

EffectsDb::~EffectsDb() { sqlite3_close(db_); }

Result<std::string> EffectsDb::apply(const std::string& key, const std::string& type,
                                     const std::string& result) {
  std::lock_guard lock(mutex_);
  if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return sqlite_error(db_, "begin");
  }
  auto rollback = [&](Status s) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return s;
  };
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db_, "SELECT result FROM effects WHERE key = ?1", -1, &st, nullptr);
  sqlite3_bind_text(st, 1, key.c_str(), -1, SQLITE_TRANSIENT);
  std::optional<std::string> stored;
  if (sqlite3_step(st) == SQLITE_ROW) {
    stored = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
  }
  sqlite3_finalize(st);
  const char* sql = stored ? "UPDATE effects SET repeats = repeats + 1 WHERE key = ?1"
                           : "INSERT INTO effects(key, type, result, executions) VALUES(?1, ?2, ?3, 1)";
  sqlite3_prepare_v2(db_, sql, -1, &st, nullptr);
  sqlite3_bind_text(st, 1, key.c_str(), -1, SQLITE_TRANSIENT);
  if (!stored) {
    sqlite3_bind_text(st, 2, type.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, result.c_str(), -1, SQLITE_TRANSIENT);
  }
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) return rollback(sqlite_error(db_, "recording effect"));
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return rollback(sqlite_error(db_, "commit"));
  }
  return stored ? *stored : result;
}

std::vector<EffectRow> EffectsDb::rows() {
  std::lock_guard lock(mutex_);
  std::vector<EffectRow> out;
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db_, "SELECT key, type, result, executions, repeats FROM effects ORDER BY key",
                     -1, &st, nullptr);
  while (sqlite3_step(st) == SQLITE_ROW) {
    auto text = [&](int i) { return std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, i))); };
    out.push_back({text(0), text(1), text(2), sqlite3_column_int(st, 3), sqlite3_column_int(st, 4)});
  }
  sqlite3_finalize(st);
  return out;
}

namespace {

enum class Plan { kRun, kFail, kHang, kRefuse, kLoseAnswer };

// Records the attempt and decides how it ends.
Plan plan(OrderEnv& env, const Command& command, const CommandContext& context) {
  std::lock_guard lock(env.faults.mutex);
  int n = ++env.faults.seen[context.idempotency_key];
  env.faults.attempts[context.idempotency_key].push_back(std::chrono::steady_clock::now());
  int hang = env.faults.hang_first[command.type];
  int fail = env.faults.fail_first[command.type];
  int lose = env.faults.lose_answer_first[command.type];
  int refuse = env.faults.refuse_first[command.type];
  if (n <= hang) return Plan::kHang;
  if (n <= hang + refuse) return Plan::kRefuse;
  if (n <= hang + refuse + fail) return Plan::kFail;
  if (n <= hang + refuse + fail + lose) return Plan::kLoseAnswer;
  return Plan::kRun;
}

void hung(OrderEnv& env, const std::string& key) {
  std::function<void(const std::string&)> hook;
  {
    std::lock_guard lock(env.faults.mutex);
    hook = env.faults.on_hang;
  }
  if (hook) hook(key);
}

// The result an execution produces: derived from the key and the command, so an uninterrupted
// run and a resumed one reach the same final state.
std::string result_of(const Command& c, const std::string& key) {
  if (c.type == "Reserve") return "RSV-" + key;
  if (c.type == "Quote") return std::to_string(100 + c.fields.at("item").size() * 7);
  if (c.type == "Charge") return "RCP-" + c.fields.at("amount") + "-" + key;
  if (c.type == "NotifyOperator") return "told";
  return "TRK-" + key;
}

Event answer(const Command& c, const std::string& value) {
  if (c.type == "Reserve") return Event{"Reserved", {{"reservation", value}}};
  if (c.type == "Quote") return Event{"Quoted", {{"price", value}}};
  if (c.type == "Charge") return Event{"Charged", {{"receipt", value}}};
  if (c.type == "NotifyOperator") return command_acknowledged();
  return Event{"Shipped", {{"tracking", value}}};
}

void execute(OrderEnv& env, const Command& command, const CommandContext& context,
             const Completion& done) {
  Plan p = plan(env, command, context);
  if (p == Plan::kHang) return hung(env, context.idempotency_key);  // the attempt times out
  if (p == Plan::kFail) {
    return done(make_status(Errc::kUnavailable, command.type + " backend unavailable"));
  }
  if (p == Plan::kRefuse) {
    return done(refusal(command.type + ": the card number is not accepted"));
  }
  ++env.executions;
  auto value = env.effects->apply(context.idempotency_key, command.type,
                                  result_of(command, context.idempotency_key));
  if (p == Plan::kLoseAnswer) return hung(env, context.idempotency_key);
  std::optional<std::shared_future<void>> gate;
  {
    std::lock_guard lock(env.faults.mutex);
    if (auto it = env.faults.gates.find(command.type); it != env.faults.gates.end()) {
      gate = it->second;
    }
  }
  if (gate) {
    hung(env, context.idempotency_key);
    gate->wait();
  }
  if (!value.is_ok()) return done(value.status());
  done(answer(command, *value));
}

}  // namespace

ExecutorRegistry order_executors(std::shared_ptr<OrderEnv> env) {
  ExecutorRegistry registry;
  for (const char* type : {"Reserve", "Quote", "Charge", "Ship", "NotifyOperator"}) {
    Executor e;
    e.blocking = std::string_view(type) != "Quote";
    e.policy = env->policy;
    e.run = [env](const Command& command, const CommandContext& context, Completion done) {
      execute(*env, command, context, done);
    };
    registry.add(type, std::move(e));
  }
  return registry;
}

}  // namespace persoflow::actors::test
