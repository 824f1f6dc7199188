// A virtual clock for simulated runs: time stands still until the simulation
// moves it, and timers fire one at a time in (deadline, order of scheduling)
// order, so a run driven by it and by a seeded Rng is the same run every time
// (FoundationDB's simulation; LevelDB's Env).
//
// Thread safety: every method may be called from any thread; callbacks run on
// the thread that calls run_next(), outside the clock's lock.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>

#include "persoflow/common/clock.hpp"

namespace persoflow::sim {

class VirtualClock final : public Clock {
 public:
  // The virtual epoch is fixed, so journal stamps (wall_clock_ms) are
  // reproducible too.
  static constexpr std::int64_t kEpochMs = 1'800'000'000'000;  // 2027-01-15T08:00:00Z

  VirtualClock() = default;

  TimePoint now() const override;
  TimerId schedule_after(Duration delay, std::function<void()> fn) override;
  bool cancel(TimerId id) override;

  // Moves now to the earliest pending deadline (never backwards) and fires that
  // timer. Returns false when no timer is pending.
  bool run_next();
  // Fires every timer whose deadline is not after now, in order; returns how
  // many fired.
  std::size_t run_due();
  // Moves now forward without firing anything (time a simulated station spends
  // working).
  void advance(Duration d);

  // Drops every pending timer uncalled (before the owners of their callbacks go
  // away).
  void clear();
  std::size_t pending() const;
  Duration elapsed() const;            // since the clock was made
  std::int64_t wall_clock_ms() const;  // kEpochMs + elapsed, for the journal's stamps

 private:
  struct Key {
    Duration deadline;
    TimerId id;
    bool operator<(const Key& other) const {
      return deadline != other.deadline ? deadline < other.deadline : id < other.id;
    }
  };

  mutable std::mutex mutex_;
  Duration now_{0};
  TimerId last_id_ = 0;
  std::map<Key, std::function<void()>> timers_;
  std::unordered_map<TimerId, Duration> deadlines_;
};

}  // namespace persoflow::sim
