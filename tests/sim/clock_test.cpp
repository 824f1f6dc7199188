// The clocks: the real steady clock's timers and the virtual clock's order.
#include "persoflow/common/clock.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <string>
#include <vector>

#include "persoflow/sim/virtual_clock.hpp"

namespace persoflow::sim {
namespace {

using namespace std::chrono_literals;

TEST(SteadyClock, FiresAfterTheDelayAndNotWhenCancelled) {
  auto clock = make_steady_clock();
  std::promise<Clock::TimePoint> fired;
  std::atomic<bool> cancelled_ran{false};
  const auto start = clock->now();
  const auto cancelled = clock->schedule_after(20ms, [&] { cancelled_ran = true; });
  clock->schedule_after(50ms, [&] { fired.set_value(clock->now()); });
  EXPECT_TRUE(clock->cancel(cancelled));
  EXPECT_FALSE(clock->cancel(cancelled));
  const auto at = fired.get_future().get();
  EXPECT_GE(at - start, 50ms);
  EXPECT_FALSE(cancelled_ran.load());
}

TEST(SteadyClock, DropsPendingTimersWhenDestroyed) {
  std::atomic<bool> ran{false};
  {
    auto clock = make_steady_clock();
    clock->schedule_after(std::chrono::hours(1), [&] { ran = true; });
  }
  EXPECT_FALSE(ran.load());
}

TEST(VirtualClock, TimeMovesOnlyWhenTimersFireInDeadlineThenSchedulingOrder) {
  VirtualClock clock;
  std::vector<std::string> order;
  clock.schedule_after(30ms, [&] { order.push_back("c"); });
  clock.schedule_after(10ms, [&] { order.push_back("a"); });
  clock.schedule_after(10ms, [&] {
    order.push_back("b");
    clock.schedule_after(0ms, [&] { order.push_back("b2"); });  // same instant, after its peers
  });
  const auto dropped = clock.schedule_after(20ms, [&] { order.push_back("x"); });
  EXPECT_EQ(clock.elapsed(), 0ms);
  EXPECT_TRUE(clock.cancel(dropped));
  while (clock.run_next()) {
  }
  EXPECT_EQ(order, (std::vector<std::string>{"a", "b", "b2", "c"}));
  EXPECT_EQ(clock.elapsed(), 30ms);
  EXPECT_EQ(clock.wall_clock_ms(), VirtualClock::kEpochMs + 30);
}

TEST(VirtualClock, RunDueFiresOnlyWhatIsDueAndAdvanceMovesTime) {
  VirtualClock clock;
  int fired = 0;
  clock.schedule_after(5ms, [&] { ++fired; });
  clock.schedule_after(15ms, [&] { ++fired; });
  EXPECT_EQ(clock.run_due(), 0u);
  clock.advance(10ms);
  EXPECT_EQ(clock.run_due(), 1u);
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(clock.pending(), 1u);
  clock.clear();
  EXPECT_EQ(clock.pending(), 0u);
  EXPECT_FALSE(clock.run_next());
  EXPECT_EQ(fired, 1);
}

}  // namespace
}  // namespace persoflow::sim
