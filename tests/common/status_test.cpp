#include "persoflow/common/status.hpp"

#include <gtest/gtest.h>

namespace persoflow {
namespace {

Result<int> parse_positive(int v) {
  if (v <= 0) return make_status(Errc::kInvalidArgument, "value must be positive");
  return v;
}

Result<int> doubled(int v) {
  PF_ASSIGN_OR_RETURN(int x, parse_positive(v));
  return 2 * x;
}

TEST(Status, OkAndFailure) {
  EXPECT_TRUE(Status::ok().is_ok());
  Status s = make_status(Errc::kNotFound, "no such workflow 'w1'");
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), Errc::kNotFound);
  EXPECT_EQ(s.to_string(), "no such workflow 'w1'");
  EXPECT_EQ(s.with_context("show").message(), "show: no such workflow 'w1'");
}

TEST(Result, PropagatesFailure) {
  EXPECT_EQ(doubled(4).value(), 8);
  auto bad = doubled(-1);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), Errc::kInvalidArgument);
}

TEST(Result, ValueOfFailureAborts) {
  EXPECT_DEATH({ (void)parse_positive(0).value(); }, "value must be positive");
}

}  // namespace
}  // namespace persoflow
