// What the station's integration tests share: the demo's CM host served by `persoflow cm serve`
// on the address of its station.conf, and counting a subject's certificates in the CM database.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace persoflow::testing {

// `persoflow cm serve --dir CM --listen ADDRESS` as a child process, with extra environment
// variables (e.g. PERSOFLOW_CRASH_AT); stopped (SIGTERM) by the destructor.
class CmServe {
 public:
  CmServe(const std::filesystem::path& cm_dir, const std::string& address,
          std::vector<std::string> env = {}) {
    int fds[2];
    if (::pipe(fds) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      for (auto& e : env) ::putenv(e.data());
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      ::execl(persoflow_binary().c_str(), "persoflow", "cm", "serve", "--dir", cm_dir.c_str(),
              "--listen", address.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    // Blocks until the server says it listens (or exits: EOF).
    std::string seen;
    char c;
    while (seen.find("listening on") == std::string::npos && ::read(fds[0], &c, 1) == 1) seen += c;
    listening_ = seen.find("listening on") != std::string::npos;
    fd_ = fds[0];
  }
  ~CmServe() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) ::close(fd_);
  }
  CmServe(const CmServe&) = delete;
  CmServe& operator=(const CmServe&) = delete;

  bool listening() const { return listening_; }
  // Waits (at most `seconds`) for the server to end by itself: its exit code, 128 + signal, or
  // -1 when it was still running (it is stopped then).
  int wait_exit(int seconds = 60) {
    for (int tenths = 0; pid_ > 0 && tenths < seconds * 10; ++tenths) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
      }
      ::usleep(100'000);
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  bool listening_ = false;
};

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
