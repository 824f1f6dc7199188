// VirtualClock (virtual_clock.hpp).
#include "persoflow/sim/virtual_clock.hpp"

#include <utility>

namespace persoflow::sim {

Clock::TimePoint VirtualClock::now() const {
  std::lock_guard lock(mutex_);
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(now_));
}

Clock::TimerId VirtualClock::schedule_after(Duration delay, std::function<void()> fn) {
  std::lock_guard lock(mutex_);
  const TimerId id = ++last_id_;
  const Duration deadline = now_ + std::max(delay, Duration::zero());
  timers_.emplace(Key{deadline, id}, std::move(fn));
  deadlines_.emplace(id, deadline);
  return id;
}

bool VirtualClock::cancel(TimerId id) {
  std::function<void()> dropped;  // destroyed outside the lock: its captures may cancel timers
  std::lock_guard lock(mutex_);
  auto d = deadlines_.find(id);
  if (d == deadlines_.end()) return false;
  auto it = timers_.find(Key{d->second, id});
  dropped = std::move(it->second);
  timers_.erase(it);
  deadlines_.erase(d);
  return true;
}

bool VirtualClock::run_next() {
  std::function<void()> fn;
  {
    std::lock_guard lock(mutex_);
    if (timers_.empty()) return false;
    auto first = timers_.begin();
    now_ = std::max(now_, first->first.deadline);
    deadlines_.erase(first->first.id);
    fn = std::move(first->second);
    timers_.erase(first);
  }
  fn();
  return true;
}

std::size_t VirtualClock::run_due() {
  std::size_t fired = 0;
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (timers_.empty() || timers_.begin()->first.deadline > now_) return fired;
    }
    run_next();
    ++fired;
  }
}

void VirtualClock::advance(Duration d) {
  std::lock_guard lock(mutex_);
  now_ += std::max(d, Duration::zero());
}

void VirtualClock::clear() {
  std::map<Key, std::function<void()>> dropped;  // destroyed outside the lock
  std::lock_guard lock(mutex_);
  dropped.swap(timers_);
  deadlines_.clear();
}

std::size_t VirtualClock::pending() const {
  std::lock_guard lock(mutex_);
  return timers_.size();
}

Clock::Duration VirtualClock::elapsed() const {
  std::lock_guard lock(mutex_);
  return now_;
}

std::int64_t VirtualClock::wall_clock_ms() const {
  return kEpochMs + std::chrono::duration_cast<std::chrono::milliseconds>(elapsed()).count();
}

}  // namespace persoflow::sim
