// What the station's integration tests share: the address of the demo's CM host in its
// station.conf (for tests/support/cm_server.hpp) and counting a subject's certificates in the CM
// database.
#pragma once

#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cm_server.hpp"
#include "test_support.hpp"

namespace persoflow::testing {

// The CM host's address in a station.conf: "cm_url": "https://127.0.0.1:PORT" -> 127.0.0.1:PORT.
inline std::string cm_address(const std::filesystem::path& station_conf) {
  std::ifstream in(station_conf);
  std::stringstream text;
  text << in.rdbuf();
  const std::string s = text.str();
  const auto at = s.find("127.0.0.1:");
  if (at == std::string::npos) return {};
  auto end = at + 10;
  while (end < s.size() && std::isdigit(static_cast<unsigned char>(s[end]))) ++end;
  return s.substr(at, end - at);
}

// Certificates in the CM database of DIR/cm whose subject holds "CN=<cn>".
inline int certificates_for(const std::filesystem::path& dir, const std::string& cn) {
  auto listed =
      run({persoflow_binary(), "cm", "certs", "list", "--dir", (dir / "cm").string(), "--json"});
  int n = 0;
  for (const auto& c : nlohmann::json::parse(listed.out)) {
    if (c.value("subject", "").find("CN=" + cn) != std::string::npos) ++n;
  }
  return n;
}

}  // namespace persoflow::testing
