#include "cm_server.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_support.hpp"

namespace persoflow::testing {

CmServer::CmServer(const std::filesystem::path& cm_dir, const std::string& address,
                   std::vector<std::string> env) {
  int fds[2];
  if (::pipe(fds) != 0) return;
  pid_ = ::fork();
  if (pid_ == 0) {
    for (auto& e : env) ::putenv(e.data());
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    const std::string binary = persoflow_binary();
    ::execl(binary.c_str(), "persoflow", "cm", "serve", "--dir", cm_dir.c_str(), "--listen",
            address.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  // Blocks until the server says it listens (or exits: EOF).
  std::string seen;
  char c;
  while (seen.find("listening on") == std::string::npos && ::read(fds[0], &c, 1) == 1) seen += c;
  listening_ = seen.find("listening on") != std::string::npos;
  // The rest of the line: " ADDRESS:PORT".
  while (listening_ && ::read(fds[0], &c, 1) == 1 && c != '\n') seen += c;
  if (const auto colon = seen.rfind(':'); listening_ && colon != std::string::npos) {
    port_ = seen.substr(colon + 1);
  }
  fd_ = fds[0];
}

int CmServer::wait_exit(int seconds) {
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

CmServer::~CmServer() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace persoflow::testing
