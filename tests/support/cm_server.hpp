// `persoflow cm serve --dir DIR --listen ADDRESS` as a child process for integration tests: the
// constructor returns once the server printed "listening on" (or exited); the destructor stops it
// (SIGTERM) and reaps it, also when a test fails.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace persoflow::testing {

class CmServer {
 public:
  // address "127.0.0.1:0": a free port, see port(). `env`: extra environment variables of the
  // server (e.g. PERSOFLOW_CRASH_AT=...).
  CmServer(const std::filesystem::path& cm_dir, const std::string& address = "127.0.0.1:0",
           std::vector<std::string> env = {});
  ~CmServer();
  CmServer(const CmServer&) = delete;
  CmServer& operator=(const CmServer&) = delete;
  bool listening() const { return listening_; }
  // Waits (at most `seconds`) for the server to end by itself: its exit code, 128 + signal, or
  // -1 when it was still running (the destructor stops it then).
  int wait_exit(int seconds = 60);
  // The port the server printed it listens on ("" when it did not start).
  const std::string& port() const { return port_; }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  bool listening_ = false;
  std::string port_;
};

}  // namespace persoflow::testing
