// cm.json's "smtp" relay: defaults, round trip, and each bad value refused with its own message.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "persoflow/cmhost/config.hpp"

namespace persoflow::cmhost {
namespace {

nlohmann::json default_json() { return nlohmann::json::parse(config_to_json(default_config())); }

TEST(SmtpConfig, DefaultAndRoundTrip) {
  auto j = default_json();
  EXPECT_EQ(j["smtp"]["host"], "127.0.0.1");
  EXPECT_EQ(j["smtp"]["port"], 25);
  j["smtp"] = {{"host", "mail.example.org"}, {"port", 2525}, {"from", "ra@example.org"}};
  auto c = config_from_json(j.dump());
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->smtp.host, "mail.example.org");
  EXPECT_EQ(c->smtp.port, 2525);
  EXPECT_EQ(c->smtp.from, "ra@example.org");
  EXPECT_EQ(c->smtp.timeout_seconds, 30);  // absent: the default
  j.erase("smtp");                          // a cm.json from before the relay existed
  ASSERT_TRUE(config_from_json(j.dump()).is_ok());
}

TEST(SmtpConfig, BadValuesRefused) {
  auto j = default_json();
  j["smtp"]["port"] = 70000;
  auto c = config_from_json(j.dump());
  ASSERT_FALSE(c.is_ok());
  EXPECT_EQ(c.status().message(), "configuration: smtp.port must be 1..65535");

  j = default_json();
  j["smtp"]["from"] = "ra";
  c = config_from_json(j.dump());
  ASSERT_FALSE(c.is_ok());
  EXPECT_EQ(c.status().message(), "configuration: smtp.from 'ra' is not an e-mail address");

  j = default_json();
  j["smtp"]["timeout_seconds"] = 0;
  c = config_from_json(j.dump());
  ASSERT_FALSE(c.is_ok());
  EXPECT_EQ(c.status().message(), "configuration: smtp.timeout_seconds must be positive");
}

}  // namespace
}  // namespace persoflow::cmhost
