// Canonical encoding of machine values: round trips, uniqueness, rejection of every malformed
// input (truncation at every length, garbage, wrong kind, trailing bytes, unsorted keys), and a
// seeded property test that folding the accepted events reproduces the live state.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "persoflow/machines/engine.hpp"
#include "test_machines.hpp"

namespace persoflow::machines {
namespace {

State sample_state() {
  return State{"KeygenRequested",
               {{"alg", "EC:secp256r1"}, {"bin", std::string("\0\xff\x01", 3)}, {"empty", ""}}};
}

TEST(Codec, RoundTripsEachKind) {
  State s = sample_state();
  Event e{"CardInserted", {{"reader", "Virtual PCD 00 00"}, {"atr", "3B:8F"}}};
  Command c{"GenerateKeyOnCard", {{"slot", "1"}}};
  auto s2 = decode_state(encode(s));
  auto e2 = decode_event(encode(e));
  auto c2 = decode_command(encode(c));
  ASSERT_TRUE(s2.is_ok() && e2.is_ok() && c2.is_ok());
  EXPECT_EQ(*s2, s);
  EXPECT_EQ(*e2, e);
  EXPECT_EQ(*c2, c);
  EXPECT_TRUE(decode_state(encode(State{})).is_ok());
}

TEST(Codec, LayoutIsAsDocumented) {
  std::string bytes = encode(Event{"Ab", {{"k", "vv"}}});
  EXPECT_EQ(bytes, std::string("E\x01\0\0\0\x02"
                               "Ab\0\0\0\x01\0\0\0\x01k\0\0\0\x02vv",
                               23));
}

TEST(Codec, KindsAreNotInterchangeable) {
  std::string bytes = encode(Event{"X", {}});
  auto s = decode_state(bytes);
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.status().code(), Errc::kCorrupt);
  EXPECT_FALSE(decode_command(bytes).is_ok());
}

TEST(Codec, EveryTruncationIsRejected) {
  std::string bytes = encode(sample_state());
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    auto r = decode_state(std::string_view(bytes).substr(0, n));
    ASSERT_FALSE(r.is_ok()) << "prefix of " << n << " bytes decoded";
    EXPECT_EQ(r.status().code(), Errc::kCorrupt);
  }
}

TEST(Codec, TrailingBytesAreRejected) {
  auto r = decode_state(encode(sample_state()) + "x");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("trailing bytes"), std::string::npos);
}

TEST(Codec, UnsortedOrDuplicateKeysAreRejected) {
  // Two fields "b" then "a": a valid layout that encode never produces.
  std::string unsorted(
      "S\x01\0\0\0\0\0\0\0\x02\0\0\0\x01"
      "b\0\0\0\0\0\0\0\x01"
      "a\0\0\0\0",
      28);
  auto r = decode_state(unsorted);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("not strictly increasing"), std::string::npos);
  std::string dup = unsorted;
  dup[23] = 'b';
  EXPECT_FALSE(decode_state(dup).is_ok());
  std::string sorted = unsorted;
  sorted[14] = 'a';
  sorted[23] = 'b';
  EXPECT_TRUE(decode_state(sorted).is_ok());
}

TEST(Codec, HugeLengthsAndVersionAreRejected) {
  std::string huge("E\x01\xff\xff\xff\xff", 6);
  EXPECT_FALSE(decode_event(huge).is_ok());
  std::string count("E\x01\0\0\0\0\x7f\xff\xff\xff", 10);
  EXPECT_FALSE(decode_event(count).is_ok());
  std::string bytes = encode(Event{"X", {}});
  bytes[1] = 2;
  EXPECT_FALSE(decode_event(bytes).is_ok());
}

unsigned base_seed() {
  if (const char* s = std::getenv("PERSOFLOW_SEED"); s && *s) return std::strtoul(s, nullptr, 10);
  return 20261122;
}

TEST(Codec, RandomGarbageNeverDecodesToSomethingThatReencodesDifferently) {
  unsigned seed = base_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) +
               " (rerun with PERSOFLOW_SEED=" + std::to_string(seed) + ")");
  std::mt19937 rng(seed);
  int decoded = 0;
  for (int i = 0; i < 5000; ++i) {
    std::string bytes = encode(sample_state());
    // Flip 1-3 random bytes; most results must fail, any that decode must be canonical.
    int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    auto r = decode_state(bytes);
    if (r.is_ok()) {
      ++decoded;
      ASSERT_EQ(encode(*r), bytes) << "a non-canonical input decoded, iteration " << i;
    } else {
      ASSERT_EQ(r.status().code(), Errc::kCorrupt);
    }
  }
  EXPECT_LT(decoded, 5000);
}

// Random event sequences over the ticket machine: the live state (stepping event by event,
// skipping rejected events as a runner would) equals the fold of the accepted events, and the
// state survives the codec.
TEST(Property, FoldOfAcceptedEventsEqualsLiveState) {
  unsigned seed = base_seed();
  const char* types[] = {"Opened", "Assigned", "Resolved", "Cancelled", "Bogus"};
  const std::string values[] = {"", "ada", "fixed", "wontfix", "x\ny", std::string("\0", 1)};
  for (int run = 0; run < 300; ++run) {
    unsigned run_seed = seed + static_cast<unsigned>(run);
    SCOPED_TRACE("seed " + std::to_string(run_seed) +
                 " (rerun with PERSOFLOW_SEED=" + std::to_string(run_seed) + ")");
    std::mt19937 rng(run_seed);
    State live = initial_state(test::kTicket);
    std::vector<Event> accepted;
    std::vector<Command> live_commands;
    int length = static_cast<int>(rng() % 40);
    for (int i = 0; i < length; ++i) {
      Event e{types[rng() % std::size(types)], {}};
      int nfields = static_cast<int>(rng() % 3);
      for (int f = 0; f < nfields; ++f) {
        const char* keys[] = {"title", "assignee", "outcome", "noise"};
        e.fields[keys[rng() % std::size(keys)]] = values[rng() % std::size(values)];
      }
      auto t = step(test::kTicket, live, e);
      if (!t.is_ok()) {
        ASSERT_TRUE(t.status().code() == Errc::kRejected ||
                    t.status().code() == Errc::kInvalidArgument)
            << t.status().message();
        continue;
      }
      auto back = decode_event(encode(e));
      ASSERT_TRUE(back.is_ok());
      accepted.push_back(*back);
      live = t->state;
      live_commands.insert(live_commands.end(), t->commands.begin(), t->commands.end());
    }
    auto folded = fold(test::kTicket, accepted);
    ASSERT_TRUE(folded.is_ok()) << folded.status().message();
    EXPECT_EQ(encode(*folded), encode(live));
    auto decoded = decode_state(encode(live));
    ASSERT_TRUE(decoded.is_ok());
    EXPECT_EQ(*decoded, live);
    // Replaying regenerates the same commands, in order.
    State replay = initial_state(test::kTicket);
    std::vector<Command> replay_commands;
    for (const Event& e : accepted) {
      auto t = step(test::kTicket, replay, e);
      ASSERT_TRUE(t.is_ok());
      replay = t->state;
      replay_commands.insert(replay_commands.end(), t->commands.begin(), t->commands.end());
    }
    EXPECT_EQ(replay_commands, live_commands);
  }
}

}  // namespace
}  // namespace persoflow::machines
