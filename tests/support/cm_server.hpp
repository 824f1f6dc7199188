// `persoflow cm serve --dir DIR --listen ADDRESS` as a child process for the tests and the bench,
// the one CM host launcher of the test suites: the constructor returns once the server printed
// "listening on" (or exited, or 30 s passed); the destructor stops it (SIGTERM, SIGKILL after
// 10 s) and reaps it, also when a test fails.
#pragma once

#include <sys/types.h>

#include <cstdint>
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
  // The port the server printed it listens on ("" / 0 when it did not start).
  const std::string& port() const { return port_; }
  std::uint16_t port_number() const;
  // The server's process id while it runs (-1 once reaped).
  pid_t pid() const { return pid_; }
  bool alive();
  // Waits (at most `seconds`) for the server to end by itself: its exit code, 128 + signal, or
  // -1 when it was still running (the destructor stops it then).
  int wait_exit(int seconds = 60);
  // SIGTERM, then waits (SIGKILL after 10 s): the exit code or 128 + signal, as wait_exit.
  int stop();

 private:
  // Reaps the server if it has ended (recording its exit); true when it is no longer running.
  bool reaped();

  pid_t pid_ = -1;
  int fd_ = -1;
  bool listening_ = false;
  std::string port_;
  int exit_ = -1;
};

}  // namespace persoflow::testing
