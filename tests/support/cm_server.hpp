// `persoflow cm serve --dir DIR --listen ADDRESS` as a child process for integration tests: the
// constructor returns once the server printed "listening on" (or exited); the destructor stops it
// (SIGTERM) and reaps it, also when a test fails.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>

namespace persoflow::testing {

class CmServer {
 public:
  CmServer(const std::filesystem::path& cm_dir, const std::string& address);
  ~CmServer();
  CmServer(const CmServer&) = delete;
  CmServer& operator=(const CmServer&) = delete;
  bool listening() const { return listening_; }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  bool listening_ = false;
};

}  // namespace persoflow::testing
