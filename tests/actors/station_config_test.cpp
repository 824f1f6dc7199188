// The station's configuration and request ids, without a CM host or cards: the CM retry policy of
// station.conf ("cm_retry": its default, its values kept through save and load, each bad value
// refused with a one-line error naming it), and workflow ids that stay unique when many are made
// within one millisecond; the blocking threads of a station's runtime.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <string>

#include "persoflow/actors/station.hpp"
#include "test_support.hpp"

namespace persoflow::actors {
namespace {

using namespace std::chrono_literals;

// A station.conf with every required setting and `extra` (",\n  \"key\": value ...") appended.
std::string write_conf(testing::TempDir& dir, const std::string& extra) {
  const std::string path = dir.file("station.conf");
  std::ofstream(path) << "{\"cm_url\": \"https://127.0.0.1:4443\", \"cm_ca\": \"ca.pem\",\n"
                         " \"officer_p12\": \"officer.p12\", \"officer_password_file\": \"pw\",\n"
                         " \"card_pin_file\": \"pin\", \"journal\": \"journal.db\",\n"
                         " \"state_dir\": \"state\""
                      << extra << "}\n";
  return path;
}

// What is wrong with loading `extra` (empty when it loads and gives `want`).
std::string cm_retry_problem(const std::string& extra, const RetryPolicy& want) {
  testing::TempDir dir("persoflow-station-conf");
  auto config = load_station_config(write_conf(dir, extra));
  if (!config) return config.status().message();
  const RetryPolicy& got = config->cm_retry;
  if (got.attempts != want.attempts || got.initial_delay != want.initial_delay ||
      got.max_delay != want.max_delay) {
    return "cm_retry is " + std::to_string(got.attempts) + "/" +
           std::to_string(got.initial_delay.count()) + "/" + std::to_string(got.max_delay.count());
  }
  return "";
}

// The error loading `extra` gives, or "loaded" when it loads.
std::string cm_retry_error(const std::string& extra) {
  testing::TempDir dir("persoflow-station-conf");
  auto config = load_station_config(write_conf(dir, extra));
  return config ? "loaded" : config.status().message();
}

TEST(StationConfig, CmRetryHasADocumentedDefaultAndTakesEachSetting) {
  const RetryPolicy defaults{6, 30s, 200ms, 5s};  // docs/station.md, "station.conf"
  EXPECT_EQ(cm_retry_problem("", defaults), "");
  EXPECT_EQ(cm_retry_problem(",\"cm_retry\": {\"attempts\": 2, \"initial_delay_ms\": 50, "
                             "\"max_delay_ms\": 400}",
                             RetryPolicy{2, 30s, 50ms, 400ms}),
            "");
  // A setting left out keeps its default.
  EXPECT_EQ(cm_retry_problem(",\"cm_retry\": {\"attempts\": 1}", RetryPolicy{1, 30s, 200ms, 5s}),
            "");
}

TEST(StationConfig, CmRetryIsKeptBySaveAndLoad) {
  testing::TempDir dir("persoflow-station-conf");
  auto config = load_station_config(write_conf(dir, ""));
  ASSERT_TRUE(config.is_ok()) << config.status().message();
  config->cm_retry = RetryPolicy{9, 30s, 10ms, 20ms};
  ASSERT_TRUE(save_station_config(*config, dir.file("saved.conf")).is_ok());
  auto loaded = load_station_config(dir.file("saved.conf"));
  ASSERT_TRUE(loaded.is_ok()) << loaded.status().message();
  EXPECT_EQ(loaded->cm_retry.attempts, 9u);
  EXPECT_EQ(loaded->cm_retry.initial_delay, 10ms);
  EXPECT_EQ(loaded->cm_retry.max_delay, 20ms);
}

TEST(StationConfig, ABadCmRetryIsRefusedWithOneLineNamingIt) {
  struct Case {
    const char* extra;
    const char* message;
  };
  const Case cases[] = {
      {",\"cm_retry\": 3", "cm_retry must be {\"attempts\": N"},
      {",\"cm_retry\": {\"attempts\": 0}", "cm_retry.attempts must be a whole number in 1..100, not 0"},
      {",\"cm_retry\": {\"attempts\": \"6\"}", "cm_retry.attempts must be a whole number"},
      {",\"cm_retry\": {\"initial_delay_ms\": -1}", "cm_retry.initial_delay_ms must be"},
      {",\"cm_retry\": {\"initial_delay_ms\": 900, \"max_delay_ms\": 800}",
       "cm_retry.max_delay_ms (800) is below initial_delay_ms (900)"},
      {",\"cm_retry\": {\"tries\": 3}", "cm_retry has no setting 'tries'"},
  };
  for (const Case& c : cases) {
    const std::string error = cm_retry_error(c.extra);
    EXPECT_NE(error.find(c.message), std::string::npos) << c.extra << ": " << error;
    EXPECT_NE(error.find("station.conf: "), std::string::npos) << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  }
}

// A card command holds its blocking thread while the card works: a thread per card of the
// batch, never fewer than 4 nor more than 64.
TEST(StationThreads, OneBlockingThreadPerCardWithinBounds) {
  EXPECT_EQ(station_blocking_threads(0), 4u);
  EXPECT_EQ(station_blocking_threads(3), 4u);
  EXPECT_EQ(station_blocking_threads(17), 17u);
  EXPECT_EQ(station_blocking_threads(64), 64u);
  EXPECT_EQ(station_blocking_threads(1000), 64u);
}

TEST(WorkflowIds, TwoMadeInTheSameMillisecondDiffer) {
  // "<label>-<kind>-YYYYMMDDTHHMMSS.mmmZ-<6 hex>": ids that share their millisecond differ by
  // the random suffix.
  std::set<std::string> ids;
  std::set<std::string> stamps;
  int same_millisecond = 0;
  std::string previous_stamp;
  for (int i = 0; i < 2000; ++i) {
    const std::string id = new_workflow_id("card-01", "issue");
    ASSERT_EQ(id.rfind("card-01-issue-", 0), 0u) << id;
    ASSERT_EQ(id.size(), std::string("card-01-issue-20261203T072444.123Z-3fa9c1").size()) << id;
    const std::string stamp = id.substr(14, 20);
    if (stamp == previous_stamp) ++same_millisecond;
    previous_stamp = stamp;
    EXPECT_TRUE(ids.insert(id).second) << "made twice: " << id;
  }
  EXPECT_EQ(ids.size(), 2000u);
  EXPECT_GT(same_millisecond, 0) << "no two ids were made within one millisecond";
  // A label that is no safe file name is made one.
  const std::string odd = new_workflow_id("card 7/x", "update");
  EXPECT_EQ(odd.rfind("card_7_x-update-", 0), 0u) << odd;
}

}  // namespace
}  // namespace persoflow::actors
