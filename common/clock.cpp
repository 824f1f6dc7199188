// The real steady clock (clock.hpp): one timer thread sleeping until the
// earliest deadline.
#include "persoflow/common/clock.hpp"

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

namespace persoflow {
namespace {

class SteadyClock final : public Clock {
 public:
  SteadyClock() : thread_([this] { run(); }) {}

  ~SteadyClock() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }

  TimePoint now() const override { return std::chrono::steady_clock::now(); }

  TimerId schedule_after(Duration delay, std::function<void()> fn) override {
    std::lock_guard lock(mutex_);
    const TimerId id = ++last_id_;
    const TimePoint deadline = now() + delay;
    timers_.emplace(Key{deadline, id}, std::move(fn));
    deadlines_.emplace(id, deadline);
    changed_.notify_all();
    return id;
  }

  bool cancel(TimerId id) override {
    std::unique_lock lock(mutex_);
    if (auto d = deadlines_.find(id); d != deadlines_.end()) {
      auto it = timers_.find(Key{d->second, id});
      auto fn = std::move(it->second);
      timers_.erase(it);
      deadlines_.erase(d);
      lock.unlock();  // fn's captures may cancel other timers as they are
                      // destroyed
      return true;
    }
    if (firing_ == id && std::this_thread::get_id() != thread_.get_id()) {
      changed_.wait(lock, [&] { return firing_ != id; });
    }
    return false;
  }

 private:
  struct Key {
    TimePoint deadline;
    TimerId id;
    bool operator<(const Key& other) const {
      return deadline != other.deadline ? deadline < other.deadline : id < other.id;
    }
  };

  void run() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      if (timers_.empty()) {
        changed_.wait(lock);
        continue;
      }
      auto first = timers_.begin();
      if (const TimePoint deadline = first->first.deadline; deadline > now()) {
        // A copy: wait_until reads its argument after waking, when a cancel may have freed the
        // timer's node.
        changed_.wait_until(lock, deadline);
        continue;
      }
      firing_ = first->first.id;
      auto fn = std::move(first->second);
      deadlines_.erase(first->first.id);
      timers_.erase(first);
      lock.unlock();
      fn();
      fn = nullptr;
      lock.lock();
      firing_ = 0;
      changed_.notify_all();
    }
    auto dropped = std::move(timers_);
    lock.unlock();
  }

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<Key, std::function<void()>> timers_;
  std::unordered_map<TimerId, TimePoint> deadlines_;  // id -> its key in timers_
  TimerId last_id_ = 0;
  TimerId firing_ = 0;
  bool stopping_ = false;
  std::thread thread_;  // last: started once the members above exist
};

}  // namespace

std::shared_ptr<Clock> make_steady_clock() { return std::make_shared<SteadyClock>(); }

}  // namespace persoflow
