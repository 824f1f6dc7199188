// Child processes for the crash test (process.hpp): fork and exec with a prepared environment
// (nothing but async-signal-safe calls between fork and exec: the harness has threads).
#include "process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace persoflow::crashtest {
namespace {

// This process's environment with `extra` replacing variables of the same name.
std::vector<std::string> environment_with(const std::vector<std::string>& extra) {
  std::vector<std::string> out;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const auto& x : extra) replaced |= x.compare(0, name.size() + 1, name + "=") == 0;
    if (!replaced) out.push_back(entry);
  }
  out.insert(out.end(), extra.begin(), extra.end());
  return out;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> p;
  for (auto& s : strings) p.push_back(s.data());
  p.push_back(nullptr);
  return p;
}

int open_output(const std::string& path) {
  return ::open(path.empty() ? "/dev/null" : path.c_str(),
                O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

pid_t start(const std::vector<std::string>& argv, const std::vector<std::string>& env, int out_fd,
            int err_fd) {
  std::vector<std::string> args = argv;
  std::vector<std::string> envs = environment_with(env);
  auto argp = pointers(args);
  auto envp = pointers(envs);
  pid_t pid = ::fork();
  if (pid == 0) {
    // A crash test stopped with ^C must not leave a CM host or station running.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    // Its own process group: a deadline kills a station started through /bin/sh with it.
    ::setpgid(0, 0);
    int null_in = ::open("/dev/null", O_RDONLY);
    if (null_in >= 0) ::dup2(null_in, 0);
    if (out_fd >= 0) ::dup2(out_fd, 1);
    if (err_fd >= 0) ::dup2(err_fd, 2);
    ::execve(argp[0], argp.data(), envp.data());
    ::_exit(127);
  }
  return pid;
}

ProcessResult wait_with_deadline(pid_t pid, std::chrono::milliseconds timeout) {
  ProcessResult r;
  if (pid < 0) return r;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (true) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) return r;
    if (std::chrono::steady_clock::now() >= deadline) {
      r.timed_out = true;
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.exit_code = 128 + WTERMSIG(status);
  return r;
}

}  // namespace

ProcessResult run_program(const std::vector<std::string>& argv,
                          const std::vector<std::string>& env, const std::string& out_path,
                          const std::string& err_path, std::chrono::milliseconds timeout) {
  int out_fd = open_output(out_path);
  int err_fd = open_output(err_path);
  pid_t pid = start(argv, env, out_fd, err_fd);
  if (out_fd >= 0) ::close(out_fd);
  if (err_fd >= 0) ::close(err_fd);
  return wait_with_deadline(pid, timeout);
}

ProcessResult run_capture(const std::vector<std::string>& argv,
                          const std::vector<std::string>& env, std::string* out,
                          std::chrono::milliseconds timeout) {
  char path[] = "/tmp/persoflow-crashtest-out-XXXXXX";
  int fd = ::mkstemp(path);
  if (fd < 0) return {};
  ProcessResult r;
  {
    int err_fd = open_output("");
    pid_t pid = start(argv, env, fd, err_fd);
    if (err_fd >= 0) ::close(err_fd);
    r = wait_with_deadline(pid, timeout);
  }
  ::close(fd);
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  *out = s.str();
  ::unlink(path);
  return r;
}

int spawn_background(const std::vector<std::string>& argv, const std::string& log_path) {
  int fd = open_output(log_path);
  pid_t pid = start(argv, {}, fd, fd);
  if (fd >= 0) ::close(fd);
  return pid;
}

}  // namespace persoflow::crashtest
