// SoftHSM2 tokens for tests: a private token directory and softhsm2.conf in a TempDir, selected
// through SOFTHSM2_CONF for this process and every child it starts (pkcs11-tool, p11tool).
//
// A PKCS#11 module reads SOFTHSM2_CONF when it is initialised, so create the SoftHsm before the
// first Card or token listing of a test and drop every Card before the SoftHsm goes away (the
// module is finalised with its last Card and reads the next test's configuration afresh).
// Not thread-safe (setenv): create it on the test's main thread.
#pragma once

#include <string>
#include <vector>

#include "test_support.hpp"

namespace persoflow::testing {

class SoftHsm {
 public:
  static constexpr const char* kModule = "/usr/lib/softhsm/libsofthsm2.so";

  struct Token {
    std::string label;
    std::string serial;
    std::string user_pin;
    std::string so_pin;
  };

  SoftHsm();
  ~SoftHsm();  // restores the SOFTHSM2_CONF the process had
  SoftHsm(const SoftHsm&) = delete;
  SoftHsm& operator=(const SoftHsm&) = delete;

  // softhsm2-util --init-token --free; throws std::runtime_error when it fails.
  Token create_token(const std::string& label, const std::string& user_pin = "1234",
                     const std::string& so_pin = "12345678");

  const std::string& conf_path() const { return conf_; }
  const TempDir& dir() const { return dir_; }
  // "SOFTHSM2_CONF=<conf>": for a child started with another environment.
  std::string env_entry() const { return "SOFTHSM2_CONF=" + conf_; }

 private:
  TempDir dir_;
  std::string conf_;
  bool had_previous_ = false;
  std::string previous_;
};

}  // namespace persoflow::testing
