// The private pcscd (see pcscd_fixture.hpp). The child process makes its own mount namespace
// (unshare(CLONE_NEWNS), mounts made private so nothing leaks back), bind-mounts the fixture's
// socket directory over /run/pcscd (pcscd's socket path is compiled in) and executes pcscd. The
// socket file is the same inode seen from outside, under the temporary directory's own path.
#include "pcscd_fixture.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <vector>

namespace persoflow::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kReadyLine = "daemon ready";
constexpr auto kStartTimeout = 10s;
constexpr int kStopTimeoutMs = 10000;

std::mutex g_running_mutex;
bool g_running = false;  // one private pcscd per process (one socket path per process)

struct SocketDir {
  TempDir dir{"persoflow-pcscd"};
  std::string socket_path = dir.file("pcscd.comm");
};

SocketDir& socket_dir() {
  static SocketDir instance;  // removed at process exit
  return instance;
}

bool port_free(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// Waits for the child to end, up to timeout_ms; true when reaped.
bool wait_child(int pid, int timeout_ms) {
  // glibc 2.36's sys/pidfd.h lacks extern "C": call the system call directly.
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    int rc;
    while ((rc = ::poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
    }
    ::close(pidfd);
    if (rc == 0) return false;
  }
  int status = 0;
  while (true) {
    pid_t r = ::waitpid(pid, &status, pidfd >= 0 ? 0 : WNOHANG);
    if (r == pid) return true;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return true;  // not our child any more
    // No pidfd (old kernel): poll the child.
    if (timeout_ms <= 0) return false;
    ::usleep(10000);
    timeout_ms -= 10;
  }
}

// Whether pcscd accepts a connection on its socket (the probe is closed at once).
bool socket_accepts(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// pcscd 1.9.9 logs "daemon ready" before it creates its socket: wait for the socket file to be
// created (inotify, set up before pcscd started) and to accept connections.
bool wait_for_socket(int inotify_fd, const std::string& path,
                     std::chrono::steady_clock::time_point deadline) {
  while (std::chrono::steady_clock::now() < deadline) {
    if (socket_accepts(path)) return true;
    if (::access(path.c_str(), F_OK) == 0) {
      ::usleep(2000);  // created, not listening yet: the gap between bind() and listen()
      continue;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{inotify_fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::max<long>(left.count(), 1))) > 0) {
      char events[4096];
      (void)!::read(inotify_fd, events, sizeof events);
    }
  }
  return socket_accepts(path);
}

}  // namespace

std::uint16_t free_port_pair() {
  for (int attempt = 0; attempt < 100; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) break;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = 0;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ::close(fd);
      break;
    }
    ::close(fd);
    const unsigned port = ntohs(addr.sin_port);
    if (port >= 65535) continue;
    if (port_free(static_cast<std::uint16_t>(port)) &&
        port_free(static_cast<std::uint16_t>(port + 1))) {
      return static_cast<std::uint16_t>(port);
    }
  }
  throw std::runtime_error("no pair of free TCP ports found for vpcd");
}

const std::string& PcscdFixture::use_private_socket() {
  static const std::string path = [] {
    const std::string& p = socket_dir().socket_path;
    ::setenv("PCSCLITE_CSOCK_NAME", p.c_str(), 1);
    return p;
  }();
  return path;
}

std::string PcscdFixture::reader_name(int index) {
  return "Virtual PCD 00 0" + std::to_string(index);
}

PcscdFixture::PcscdFixture() {
  use_private_socket();
  config_dir_ = std::make_unique<TempDir>("persoflow-pcscd-conf");
  port_ = free_port_pair();
  std::ofstream conf(config_dir_->file("vpcd"));
  // vpcd's DEVICENAME "/dev/null:<port>": reader 00 00 listens on port, 00 01 on port + 1.
  conf << "FRIENDLYNAME \"Virtual PCD\"\n"
       << "DEVICENAME   /dev/null:" << port_ << "\n"
       << "LIBPATH      /usr/lib/pcsc/drivers/serial/libifdvpcd.so\n"
       << "CHANNELID    " << port_ << "\n";
  if (!conf) throw std::runtime_error("cannot write the vpcd configuration");
}

PcscdFixture::~PcscdFixture() { stop(); }

void PcscdFixture::start() {
  if (pid_ > 0) return;
  {
    std::lock_guard lock(g_running_mutex);
    if (g_running) throw std::runtime_error("another PcscdFixture runs in this process");
    g_running = true;
  }
  const std::filesystem::path run_dir = socket_dir().dir.path();
  // A pcscd killed with SIGKILL leaves these behind, and the next one refuses to start.
  std::error_code ignored;
  std::filesystem::remove(run_dir / "pcscd.comm", ignored);
  std::filesystem::remove(run_dir / "pcscd.pid", ignored);
  ::mkdir("/run/pcscd", 0755);  // the mount point; left empty outside our namespaces

  const std::string pcscd = ::access("/usr/sbin/pcscd", X_OK) == 0 ? "/usr/sbin/pcscd" : "pcscd";
  const std::string config = config_dir_->path().string();
  const std::string run = run_dir.string();
  std::vector<std::string> argv = {pcscd, "--foreground", "--info", "--config", config};
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);

  int inotify_fd = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (inotify_fd >= 0) ::inotify_add_watch(inotify_fd, run.c_str(), IN_CREATE | IN_MOVED_TO);
  struct InotifyCloser {
    int fd;
    ~InotifyCloser() {
      if (fd >= 0) ::close(fd);
    }
  } inotify_closer{inotify_fd};

  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    std::lock_guard lock(g_running_mutex);
    g_running = false;
    throw std::runtime_error("pipe failed");
  }
  {
    std::lock_guard lock(mutex_);
    log_.clear();
    ready_ = false;
    output_closed_ = false;
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(out[0]);
    ::close(out[1]);
    std::lock_guard lock(g_running_mutex);
    g_running = false;
    throw std::runtime_error("fork failed");
  }
  if (pid == 0) {
    // The child: async-signal-safe calls only (the parent may have threads).
    ::dup2(out[1], 1);
    ::dup2(out[1], 2);
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, 0);
    auto fail = [](const char* what) {
      const char* err = std::strerror(errno);
      (void)!::write(2, what, std::strlen(what));
      (void)!::write(2, ": ", 2);
      (void)!::write(2, err, std::strlen(err));
      (void)!::write(2, "\n", 1);
      ::_exit(127);
    };
    if (::unshare(CLONE_NEWNS) != 0) fail("unshare(CLONE_NEWNS)");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
      fail("mount --make-rprivate /");
    if (::mount(run.c_str(), "/run/pcscd", nullptr, MS_BIND, nullptr) != 0)
      fail("bind mount over /run/pcscd");
    ::execv(args[0], args.data());
    fail("exec pcscd");
  }
  ::close(out[1]);
  pid_ = pid;
  drain_thread_ = std::thread([this, fd = out[0]] { drain(fd); });

  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  std::unique_lock lock(mutex_);
  bool ok = cv_.wait_until(lock, deadline, [this] { return ready_ || output_closed_; });
  std::string failure;
  if (!ok)
    failure = "pcscd not ready within 10 s";
  else if (!ready_)
    failure = "pcscd exited";
  lock.unlock();
  if (failure.empty() && !wait_for_socket(inotify_fd, socket_dir().socket_path, deadline)) {
    failure = "pcscd's socket did not accept connections within 10 s";
  }
  if (!failure.empty()) {
    stop();
    throw std::runtime_error(failure + "; its output:\n" + log());
  }
}

void PcscdFixture::drain(int fd) {
  char buffer[4096];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::lock_guard lock(mutex_);
    log_.append(buffer, static_cast<std::size_t>(n));
    if (!ready_ && log_.find(kReadyLine) != std::string::npos) {
      ready_ = true;
      cv_.notify_all();
    }
  }
  ::close(fd);
  std::lock_guard lock(mutex_);
  output_closed_ = true;
  cv_.notify_all();
}

void PcscdFixture::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  if (!wait_child(pid_, kStopTimeoutMs)) {
    ::kill(pid_, SIGKILL);
    wait_child(pid_, kStopTimeoutMs);
  }
  pid_ = 0;
  if (drain_thread_.joinable()) drain_thread_.join();
  std::lock_guard lock(g_running_mutex);
  g_running = false;
}

void PcscdFixture::kill_hard() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  stop();  // reaps it (SIGTERM to a dead process is harmless)
}

std::string PcscdFixture::log() const {
  std::lock_guard lock(mutex_);
  return log_;
}

}  // namespace persoflow::testing
