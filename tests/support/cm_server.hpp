// `persoflow cm serve --dir DIR --listen 127.0.0.1:0` as a child process for tests and benches:
// started by the constructor (which returns once the server says where it listens), stopped by
// the destructor (SIGTERM, then waited for).
#pragma once

#include <sys/types.h>

#include <string>

namespace persoflow::testing {

class CmServer {
 public:
  explicit CmServer(const std::string& cm_dir);
  ~CmServer();
  CmServer(const CmServer&) = delete;
  CmServer& operator=(const CmServer&) = delete;

  // The port on 127.0.0.1; empty when the server did not start.
  const std::string& port() const { return port_; }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string port_;
};

}  // namespace persoflow::testing
