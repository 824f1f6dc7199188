// The numbered fault points: the table's numbers are stable (position + 1, never reused), names
// are unique, and PERSOFLOW_FAULT specs parse or are refused with a reason.
#include "persoflow/common/fault_points.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace persoflow {
namespace {

TEST(FaultPoints, NumbersAreTheTablePositionsAndNamesAreUnique) {
  std::set<std::string> names;
  int expected = 1;
  for (const auto& p : fault_points()) {
    EXPECT_EQ(fault_number(p.point), expected++);
    EXPECT_TRUE(names.insert(p.name).second) << p.name;
    EXPECT_EQ(&fault_point_info(p.point), &p);
  }
  // These numbers are in docs/faults.md and in crash-test reports: they must never move.
  EXPECT_EQ(fault_number(FaultPoint::kSqliteIoerrOnCommit), 7);
  EXPECT_STREQ(fault_point_info(FaultPoint::kCmDropAfterRequest).name, "cm.drop_after_request");
  EXPECT_EQ(fault_number(FaultPoint::kProcessKilled), 13);
}

TEST(FaultPoints, SpecsParseByNumberOrName) {
  auto by_number = parse_fault_spec("7:3");
  ASSERT_TRUE(by_number.has_value());
  EXPECT_EQ(by_number->point, FaultPoint::kSqliteIoerrOnCommit);
  EXPECT_EQ(by_number->nth, 3);
  auto by_name = parse_fault_spec("card.pulled_after_write:1");
  ASSERT_TRUE(by_name.has_value());
  EXPECT_EQ(by_name->point, FaultPoint::kCardPulledAfterWrite);
}

TEST(FaultPoints, BadSpecsAreRefusedWithAReason) {
  for (const char* bad : {"99:1", "0:1", "7:0", "7:-2", "7:x", "7", "nope:1", ""}) {
    std::string why;
    EXPECT_FALSE(parse_fault_spec(bad, &why).has_value()) << bad;
    EXPECT_FALSE(why.empty()) << bad;
  }
}

TEST(FaultPoints, OffWithoutTheEnvironment) {
  // The test runs without PERSOFLOW_FAULT: no point fires, however often it is reached.
  if (std::getenv("PERSOFLOW_FAULT") || std::getenv("PERSOFLOW_FAULT_COUNT")) GTEST_SKIP();
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(fault_fires(FaultPoint::kCardDeviceError));
  EXPECT_FALSE(fault_has_fired(FaultPoint::kCardDeviceError));
}

}  // namespace
}  // namespace persoflow
