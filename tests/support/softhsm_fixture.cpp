#include "softhsm_fixture.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace persoflow::testing {

SoftHsm::SoftHsm() : dir_("persoflow-softhsm") {
  std::filesystem::create_directories(dir_.path() / "tokens");
  conf_ = dir_.file("softhsm2.conf");
  std::ofstream conf(conf_);
  conf << "directories.tokendir = " << (dir_.path() / "tokens").string() << "\n"
       << "objectstore.backend = file\n"
       << "log.level = ERROR\n"
       << "slots.removable = false\n";
  conf.close();
  if (const char* prev = std::getenv("SOFTHSM2_CONF")) {
    had_previous_ = true;
    previous_ = prev;
  }
  ::setenv("SOFTHSM2_CONF", conf_.c_str(), 1);
}

SoftHsm::~SoftHsm() {
  if (had_previous_) {
    ::setenv("SOFTHSM2_CONF", previous_.c_str(), 1);
  } else {
    ::unsetenv("SOFTHSM2_CONF");
  }
}

SoftHsm::Token SoftHsm::create_token(const std::string& label, const std::string& user_pin,
                                     const std::string& so_pin) {
  RunResult r = run({"softhsm2-util", "--init-token", "--free", "--label", label, "--pin", user_pin,
                     "--so-pin", so_pin});
  if (r.exit_code != 0) {
    throw std::runtime_error("softhsm2-util --init-token failed: " + r.out + r.err);
  }
  // The serial: from --show-slots, the block whose label is ours.
  RunResult slots = run({"softhsm2-util", "--show-slots"});
  std::istringstream in(slots.out);
  std::string line, serial;
  auto value = [](const std::string& l) {
    std::string v = l.substr(l.find(':') + 1);
    v.erase(0, v.find_first_not_of(' '));
    v.erase(v.find_last_not_of(' ') + 1);
    return v;
  };
  while (std::getline(in, line)) {
    if (line.find("Serial number:") != std::string::npos) serial = value(line);
    if (line.find("Label:") != std::string::npos && value(line) == label) {
      return Token{label, serial, user_pin, so_pin};
    }
  }
  throw std::runtime_error("token '" + label + "' not in softhsm2-util --show-slots:\n" +
                           slots.out);
}

}  // namespace persoflow::testing
