// The CM-link fault proxy (fault_proxy.hpp): blocking sockets and poll(), a thread per
// connection, 100 ms poll ticks so the destructor's stop is seen promptly.
#include "persoflow/sim/fault_proxy.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace persoflow::sim {
namespace {

using Clock = std::chrono::steady_clock;

constexpr unsigned char kTlsApplicationData = 0x17;

// Closes with a TCP reset rather than a FIN: the peer sees "connection reset".
void reset_and_close(int fd) {
  if (fd < 0) return;
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

bool send_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

int connect_upstream(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// Follows the TLS record headers of one direction: has an application-data record begun?
class TlsRecordWatcher {
 public:
  void feed(const unsigned char* data, std::size_t n) {
    while (n > 0 && !app_data_) {
      if (body_left_ > 0) {
        const std::size_t skip = std::min(body_left_, n);
        body_left_ -= skip;
        data += skip;
        n -= skip;
        continue;
      }
      header_[header_len_++] = *data++;
      --n;
      if (header_len_ == 5) {
        if (header_[0] == kTlsApplicationData) app_data_ = true;
        body_left_ = (static_cast<std::size_t>(header_[3]) << 8) | header_[4];
        header_len_ = 0;
      }
    }
  }
  bool application_data_seen() const { return app_data_; }

 private:
  unsigned char header_[5] = {};
  std::size_t header_len_ = 0;
  std::size_t body_left_ = 0;
  bool app_data_ = false;
};

}  // namespace

Result<std::unique_ptr<FaultProxy>> FaultProxy::start(FaultProxyOptions options) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_status(Errc::kUnavailable, "fault proxy: socket: " + std::string(std::strerror(errno)));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 64) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    return make_status(Errc::kUnavailable, "fault proxy: cannot listen on 127.0.0.1: " + why);
  }
  std::unique_ptr<FaultProxy> proxy(new FaultProxy(options, fd, ntohs(a.sin_port)));
  proxy->acceptor_ = std::thread([p = proxy.get()] { p->accept_loop(); });
  return proxy;
}

FaultProxy::FaultProxy(FaultProxyOptions options, int listen_fd, std::uint16_t port)
    : options_(options), listen_fd_(listen_fd), port_(port) {}

FaultProxy::~FaultProxy() {
  stopping_ = true;
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
  ::close(listen_fd_);
}

void FaultProxy::arm(std::optional<FaultSpec> fault) {
  std::lock_guard lock(mu_);
  fault_ = fault;
  connections_ = 0;
  fired_ = false;
}

void FaultProxy::accept_loop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    int one = 1;
    ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::optional<FaultPoint> fault;
    std::lock_guard lock(mu_);
    const long n = ++connections_;
    if (fault_ && fault_->nth == n) {
      const int number = fault_number(fault_->point);
      if (number >= fault_number(FaultPoint::kCmRefused) &&
          number <= fault_number(FaultPoint::kCmLateAnswer)) {
        fault = fault_->point;
        fired_ = true;
      }
    }
    threads_.emplace_back([this, client, fault] { serve(client, fault); });
  }
}

void FaultProxy::serve(int client, std::optional<FaultPoint> fault) {
  if (fault == FaultPoint::kCmRefused) {
    reset_and_close(client);
    return;
  }
  char buf[16384];
  if (fault == FaultPoint::kCmTimeout) {
    // Swallow whatever the station sends; never answer, never connect the CM host.
    while (!stopping_) {
      pollfd p{client, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      ssize_t n = ::recv(client, buf, sizeof buf, 0);
      if (n <= 0) break;
    }
    ::close(client);
    return;
  }
  int upstream = connect_upstream(options_.upstream_port);
  if (upstream < 0) {
    reset_and_close(client);
    return;
  }
  TlsRecordWatcher request;
  std::string held;  // the CM host's answer, held back
  std::optional<Clock::time_point> held_since;
  bool client_open = true, upstream_open = true;
  const bool holding = fault == FaultPoint::kCmDropAfterRequest || fault == FaultPoint::kCmLateAnswer;
  bool released = false;
  while (!stopping_ && (client_open || upstream_open)) {
    if (held_since) {
      const auto waited = Clock::now() - *held_since;
      if (fault == FaultPoint::kCmDropAfterRequest && waited >= options_.drop_settle) {
        reset_and_close(client);
        reset_and_close(upstream);
        return;
      }
      if (fault == FaultPoint::kCmLateAnswer && waited >= options_.late_delay) {
        if (!send_all(client, held.data(), held.size())) break;
        held.clear();
        held_since.reset();
        released = true;
        if (!upstream_open) ::shutdown(client, SHUT_WR);
      }
    }
    pollfd p[2] = {{client_open ? client : -1, POLLIN, 0}, {upstream_open ? upstream : -1, POLLIN, 0}};
    if (::poll(p, 2, 50) < 0 && errno != EINTR) break;
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::recv(client, buf, sizeof buf, 0);
      if (n <= 0) {
        client_open = false;
        ::shutdown(upstream, SHUT_WR);
      } else {
        request.feed(reinterpret_cast<unsigned char*>(buf), static_cast<std::size_t>(n));
        if (!send_all(upstream, buf, static_cast<std::size_t>(n))) break;
      }
    }
    if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::recv(upstream, buf, sizeof buf, 0);
      if (n <= 0) {
        upstream_open = false;
        if (held.empty()) ::shutdown(client, SHUT_WR);
      } else if (holding && !released && request.application_data_seen()) {
        held.append(buf, static_cast<std::size_t>(n));
        if (!held_since) held_since = Clock::now();
      } else if (!send_all(client, buf, static_cast<std::size_t>(n))) {
        break;
      }
    }
  }
  ::close(client);
  ::close(upstream);
}

}  // namespace persoflow::sim
