// Child processes for the crash test: run a program with extra environment variables, its output
// in files, killed with SIGKILL when it outlives a deadline (a hang is a finding, not a wait).
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace persoflow::crashtest {

struct ProcessResult {
  int exit_code = -1;  // exit status, or 128 + signal
  bool timed_out = false;
  bool killed_by_sigkill() const { return exit_code == 128 + 9; }
};

// Runs argv[0] (a path) with `env` ("NAME=value") added to this process's environment; stdout
// and stderr appended to the files (empty: /dev/null). Waits at most `timeout`.
ProcessResult run_program(const std::vector<std::string>& argv,
                          const std::vector<std::string>& env, const std::string& out_path,
                          const std::string& err_path, std::chrono::milliseconds timeout);

// Same, stdout captured into *out (stderr to /dev/null).
ProcessResult run_capture(const std::vector<std::string>& argv,
                          const std::vector<std::string>& env, std::string* out,
                          std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Starts argv in the background (stdout and stderr to the file); returns its pid or -1.
int spawn_background(const std::vector<std::string>& argv, const std::string& log_path);

}  // namespace persoflow::crashtest
