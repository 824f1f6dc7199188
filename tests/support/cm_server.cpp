// The CM host as a child process (cm_server.hpp).
#include "cm_server.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_support.hpp"

namespace persoflow::testing {

CmServer::CmServer(const std::string& cm_dir) {
  int fds[2];
  if (::pipe(fds) != 0) return;
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::execl(persoflow_binary().c_str(), "persoflow", "cm", "serve", "--dir", cm_dir.c_str(),
            "--listen", "127.0.0.1:0", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  // Blocks until "listening on 127.0.0.1:PORT" (or the server's end: EOF).
  std::string seen;
  char c;
  while (::read(fds[0], &c, 1) == 1 && c != '\n') seen += c;
  const auto at = seen.find("127.0.0.1:");
  if (at != std::string::npos) port_ = seen.substr(at + 10);
  fd_ = fds[0];
}

CmServer::~CmServer() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace persoflow::testing
