// Helpers shared by the tests: temporary directories removed at the end of a test, running a
// program and capturing what it prints, and where the built programs are.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace persoflow::testing {

// A fresh directory under $TMPDIR, removed (recursively) when the object goes away.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "persoflow-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

struct RunResult {
  int exit_code = -1;  // the exit status, or 128 + signal
  std::string out;
  std::string err;
};

// Runs argv[0] with the arguments (no shell), with optional standard input, and waits for it.
RunResult run(const std::vector<std::string>& argv, const std::string& stdin_text = {});

// build/bin/persoflow and the folder the programs are built into.
std::string persoflow_binary();
std::string binary_dir();
std::string source_dir();

}  // namespace persoflow::testing
