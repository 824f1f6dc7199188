#include "cm_server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include "test_support.hpp"

namespace persoflow::testing {

CmServer::CmServer(const std::filesystem::path& cm_dir, const std::string& address,
                   std::vector<std::string> env) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return;
  pid_ = ::fork();
  if (pid_ == 0) {
    for (auto& e : env) ::putenv(e.data());
    ::dup2(fds[1], 1);
    const std::string binary = persoflow_binary();
    ::execl(binary.c_str(), "persoflow", "cm", "serve", "--dir", cm_dir.c_str(), "--listen",
            address.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  fd_ = fds[0];
  // Until the server says it listens, with the rest of that line (" ADDRESS:PORT"), or exits
  // (EOF); bounded, so a server that hangs fails the test instead of blocking it.
  std::string seen;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    const auto at = seen.find("listening on");
    if (at != std::string::npos && seen.find('\n', at) != std::string::npos) break;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) continue;
    char buf[256];
    const ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) break;
    seen.append(buf, static_cast<std::size_t>(n));
  }
  const auto at = seen.find("listening on");
  const auto end = at == std::string::npos ? at : seen.find('\n', at);
  listening_ = end != std::string::npos;
  if (listening_) {
    const std::string line = seen.substr(at, end - at);
    port_ = line.substr(line.rfind(':') + 1);
  }
}

std::uint16_t CmServer::port_number() const {
  return port_.empty() ? 0 : static_cast<std::uint16_t>(std::stoi(port_));
}

bool CmServer::reaped() {
  int status = 0;
  if (pid_ <= 0 || ::waitpid(pid_, &status, WNOHANG) != pid_) return pid_ <= 0;
  pid_ = -1;
  exit_ = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
  return true;
}

bool CmServer::alive() { return !reaped(); }

int CmServer::wait_exit(int seconds) {
  for (int tenths = 0; !reaped() && tenths < seconds * 10; ++tenths) ::usleep(100'000);
  return pid_ > 0 ? -1 : exit_;
}

int CmServer::stop() {
  if (pid_ <= 0) return exit_;
  ::kill(pid_, SIGTERM);
  if (wait_exit(10) < 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    exit_ = 128 + SIGKILL;
  }
  return exit_;
}

CmServer::~CmServer() {
  stop();
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace persoflow::testing
