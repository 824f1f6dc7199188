// Clock: where the engine reads the time and sets its timers (attempt timeouts,
// retry backoff).
//
// The production clock is the real steady clock with a timer thread of its own
// (make_steady_clock). A simulated run gives the runtime a virtual clock
// instead (sim/virtual_clock.hpp): time stands still until the simulation
// advances it, and timers fire in a fixed order, so a run is a function of its
// seed (LevelDB's Env, FoundationDB's simulation).
//
// Thread safety: every method may be called from any thread. A timer's callback
// runs at most once, on a thread of the clock's choosing (the steady clock's
// timer thread; the thread that advances a virtual clock), never while the
// clock's own lock is held, so it may schedule or cancel timers. Callbacks must
// not block: they post to their owner's strand.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

namespace persoflow {

class Clock {
 public:
  using Duration = std::chrono::nanoseconds;
  using TimePoint = std::chrono::steady_clock::time_point;
  using TimerId = std::uint64_t;  // 0 is never a timer

  virtual ~Clock() = default;

  virtual TimePoint now() const = 0;

  // Calls `fn` once, no earlier than `delay` from now, unless cancelled first.
  virtual TimerId schedule_after(Duration delay, std::function<void()> fn) = 0;

  // Cancels a timer that has not fired: its callback is destroyed without being
  // called. When the callback is running on another thread, waits for it to
  // return (so after cancel() nothing of the callback runs any more). Returns
  // false when the timer had already fired or is unknown.
  virtual bool cancel(TimerId id) = 0;
};

// The real steady clock. Owns one timer thread, joined by the destructor
// (timers still pending are dropped uncalled).
std::shared_ptr<Clock> make_steady_clock();

}  // namespace persoflow
